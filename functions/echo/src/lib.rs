//! A trivial handler for the stream triggers: answers each event with its own body (one
//! reply per event, as an HTTP batch needs) and, when config `sink` names a sink, writes the
//! events there. Config `spin` makes each invocation busy-wait that many iterations first,
//! so tests can build a handler that overruns its schedule.

use std::hint::black_box;

use sluice_sdk::prelude::*;

sluice_sdk::handler!(handle);

fn handle(batch: Batch) -> Result<Outcome> {
    let spin: u64 = config::parse_or("spin", 0)?;
    let mut counter = 0_u64;
    for _ in 0..spin {
        counter = black_box(counter.wrapping_add(1));
    }
    if let Some(sink) = config::get("sink") {
        batch.json()?.write(&sink)?;
    }
    let replies = (0..batch.len())
        .map(|index| Reply::new(200, "application/json", batch.body(index).unwrap_or_default()))
        .collect();
    Ok(Outcome::replies(replies))
}

//! A test guest that fails on request, so the end-to-end tests can check that each kind of
//! failure fails its batch only.
//!
//! Every event has an `action` field. The first action other than `ok` decides what happens:
//! `panic`, `loop` (until the timeout), `grow` (until the memory limit), `missing-column`,
//! `type-mismatch`, `unknown-sink` (host errors) or `error` (the handler's own error). A batch of
//! only `ok` events is written to the sink named by config `sink` and answered with its row count.

use std::hint::black_box;

use sluice_sdk::prelude::*;

sluice_sdk::handler!(handle);

fn handle(batch: Batch) -> Result<Outcome> {
    let events = batch.json()?;
    // An empty batch parses to a frame without columns, so there is no `action` to read.
    let actions = if events.num_rows() == 0 {
        Vec::new()
    } else {
        events.column("action")?
    };
    let requested = actions
        .iter()
        .filter_map(Scalar::as_str)
        .find(|action| *action != "ok");

    match requested {
        None => {
            events.write(&config::get_or("sink", "events"))?;
            Ok(Outcome::text(events.num_rows().to_string()))
        }
        Some("panic") => panic!("handler was asked to panic"),
        Some("loop") => spin_forever(),
        Some("grow") => grow_forever(),
        Some("missing-column") => {
            events.select([col("no_such_column")])?;
            Err(Error::msg("selecting a missing column succeeded"))
        }
        Some("type-mismatch") => {
            events.filter(col("action") + lit(1))?;
            Err(Error::msg("filtering on `utf8 + int` succeeded"))
        }
        Some("unknown-sink") => {
            events.write("no-such-sink")?;
            Err(Error::msg("writing to an undeclared sink succeeded"))
        }
        Some("error") => Err(Error::msg("handler was asked to fail")),
        Some(other) => Err(Error::new(
            ErrorCode::InvalidArgument,
            format!("unknown action {other:?}"),
        )),
    }
}

/// Runs until the host's timeout interrupts it; `black_box` keeps the optimizer from proving
/// the loop side-effect free and deleting it.
fn spin_forever() -> ! {
    let mut counter = 0_u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB at a time until the host's memory limit stops it.
fn grow_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(black_box(vec![1_u8; 1 << 20]));
        black_box(&blocks);
    }
}

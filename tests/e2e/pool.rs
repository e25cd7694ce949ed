//! Worker pools: a function with `min-instances` keeps warm instances ready, grows them to
//! the invocations that ran at once when its queue backs up (never past `max-instances`),
//! and shrinks back once idle — with every batch still answered by its own instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_e2e::{manifest, runtime};
use sluice_frame::ingest::BadLinePolicy;
use sluice_runtime::{Batch, EventMeta, Function, Message, PoolStats, TriggerKind, WARM_IDLE};

fn batch(id: usize) -> Arc<Batch> {
    let message = Message {
        body: format!("{{\"id\":{id}}}").into_bytes(),
        meta: EventMeta::Http { method: "POST".into(), path: "/".into(), headers: Vec::new() },
    };
    Arc::new(Batch::from_messages(TriggerKind::Http, vec![message], BadLinePolicy::Fail))
}

async fn stats_become(function: &Function, within: Duration, wanted: impl Fn(PoolStats) -> bool) -> PoolStats {
    let deadline = Instant::now() + within;
    loop {
        let stats = function.pool_stats();
        if wanted(stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pool_grows_under_load_up_to_max_and_shrinks_to_min_when_idle() {
    let mut manifest = manifest("echo");
    manifest.limits.min_instances = 1;
    manifest.limits.max_instances = 3;
    // Each invocation spins a little, so batches overlap.
    manifest.config.insert("spin".into(), "30000000".into());
    let data = tempfile::tempdir().unwrap();
    let function = Arc::new(runtime().load_function(&manifest, data.path()).unwrap());

    let idle = stats_become(&function, Duration::from_secs(10), |s| s.warm == 1).await;
    assert_eq!(idle, PoolStats { warm: 1, running: 0, target: 1 }, "min-instances warm before any batch");

    let mut running = tokio::task::JoinSet::new();
    for id in 0..9 {
        let function = function.clone();
        running.spawn(async move { (id, function.invoke(batch(id), &format!("b{id}")).await) });
    }
    let mut peak_running = 0;
    while !running.is_empty() {
        peak_running = peak_running.max(function.pool_stats().running);
        if let Some(done) = running.try_join_next() {
            let (id, invocation) = done.unwrap();
            let outcome = invocation.unwrap_or_else(|e| panic!("batch {id}: {e}")).outcome;
            let bodies: Vec<String> = outcome.replies.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
            assert_eq!(bodies, [format!("{{\"id\":{id}}}")], "batch {id} answered by its own instance");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(peak_running <= 3, "{peak_running} invocations at once; max-instances is 3");
    let grown = stats_become(&function, Duration::from_secs(10), |s| s.warm == 3).await;
    assert_eq!(grown, PoolStats { warm: 3, running: 0, target: 3 }, "grown to the load, capped at max-instances");

    let shrunk = stats_become(&function, WARM_IDLE * 4, |s| s.warm == 1).await;
    assert_eq!(shrunk, PoolStats { warm: 1, running: 0, target: 1 }, "back to min-instances once idle");
    let after = function.invoke(batch(99), "after-idle").await.unwrap();
    assert_eq!(after.outcome.replies[0].body, b"{\"id\":99}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_min_instances_nothing_is_prepared_ahead() {
    let manifest = manifest("echo");
    let data = tempfile::tempdir().unwrap();
    let function = runtime().load_function(&manifest, data.path()).unwrap();
    function.invoke(batch(1), "one").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(function.pool_stats(), PoolStats { warm: 0, running: 0, target: 0 });
}

//! The cron trigger in process: ticks fire on schedule, and an overrunning handler has its
//! missed ticks skipped and counted, never stacked.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::Int64Array;
use sluice_e2e::streams::function_dir;
use sluice_e2e::{read_parquet, runtime};
use sluice_manifest::Manifest;
use sluice_runtime::FunctionSlot;
use sluice_triggers::{CronSchedule, CronStats, RetryPolicy, ShutdownSignal, run_cron};

/// Runs the function at `dir` every `every_ms` for `run_for`; returns the stats and the
/// scheduled times its runs wrote.
async fn run_for(dir: &std::path::Path, every_ms: u64, run_for: Duration) -> (Arc<CronStats>, Vec<i64>) {
    let manifest = Manifest::load(dir).unwrap();
    let data = dir.join("data");
    let function = FunctionSlot::new(Arc::new(runtime().load_function(&manifest, &data).unwrap()));
    let schedule = CronSchedule::Every(Duration::from_millis(every_ms));
    let retry = RetryPolicy::from(&manifest.retry);
    let stats = Arc::new(CronStats::default());
    let (stop, shutdown) = ShutdownSignal::new();
    let cron = tokio::spawn(run_cron(function, schedule, retry, stats.clone(), shutdown));
    tokio::time::sleep(run_for).await;
    stop.stop();
    cron.await.unwrap();
    let mut scheduled: Vec<i64> = read_parquet(&data.join("ticks"))
        .iter()
        .flat_map(|b| b.column_by_name("scheduled_ms").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
        .collect();
    scheduled.sort();
    (stats, scheduled)
}

const MANIFEST: &str = "[sinks.ticks]\npath = \"ticks\"\n[limits]\ninstances = 4\ntimeout-ms = 20000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_fire_on_schedule() {
    let work = tempfile::tempdir().unwrap();
    let dir = function_dir(work.path(), "ticker", "echo", &format!("[config]\nsink = \"ticks\"\n{MANIFEST}"));
    let (stats, scheduled) = run_for(&dir, 100, Duration::from_millis(1050)).await;
    let runs = stats.runs.load(Ordering::Relaxed);
    assert!((8..=11).contains(&runs), "{runs} runs in 1.05 s at 100 ms");
    assert_eq!(scheduled.len() as u64, runs, "every run wrote its tick");
    assert!(scheduled.windows(2).all(|w| w[1] - w[0] == 100), "ticks 100 ms apart: {scheduled:?}");
    assert_eq!(stats.skipped.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_handler_skips_ticks_instead_of_stacking_runs() {
    let work = tempfile::tempdir().unwrap();
    let config = "[config]\nsink = \"ticks\"\nspin = \"300000000\"\n";
    let dir = function_dir(work.path(), "slow-ticker", "echo", &format!("{config}{MANIFEST}"));
    let (stats, scheduled) = run_for(&dir, 20, Duration::from_millis(1500)).await;
    let (runs, skipped) = (stats.runs.load(Ordering::Relaxed), stats.skipped.load(Ordering::Relaxed));
    assert!(skipped > 0, "no tick was skipped ({runs} runs)");
    assert!(runs + skipped >= 60, "{runs} runs + {skipped} skipped ticks in 1.5 s at 20 ms");
    assert_eq!(scheduled.len() as u64, runs);
    // With four instances free, stacked runs would start on every tick.
    assert!(runs < 30, "{runs} runs: ticks were stacked");
}

//! The cron trigger: fires on a cron expression or a fixed interval. Each run's batch holds
//! one event, `{"scheduled_ms": <the tick's time>}`. A tick that comes while the previous run
//! is still going is skipped and counted, never stacked.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_frame::ingest::BadLinePolicy;
use sluice_manifest::CronTrigger;
use sluice_runtime::{Batch, EventMeta, Function, FunctionSlot, Message, TriggerKind, WriteMode};

use crate::Shutdown;
use crate::delivery::{Delivered, RetryPolicy, deliver};

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("cron trigger: invalid schedule `{schedule}`: {message}")]
    Schedule { schedule: String, message: String },
    #[error("cron trigger: set exactly one of `schedule` and `every-ms`")]
    Unspecified,
}

/// When ticks fall.
#[derive(Debug, Clone)]
pub enum CronSchedule {
    Every(Duration),
    Expression(Box<cron::Schedule>),
}

impl TryFrom<&CronTrigger> for CronSchedule {
    type Error = CronError;

    fn try_from(spec: &CronTrigger) -> Result<Self, CronError> {
        match (&spec.schedule, spec.every_ms) {
            (None, Some(ms)) if ms > 0 => Ok(CronSchedule::Every(Duration::from_millis(ms))),
            (Some(schedule), None) => cron::Schedule::from_str(schedule)
                .map(|parsed| CronSchedule::Expression(Box::new(parsed)))
                .map_err(|e| CronError::Schedule { schedule: schedule.clone(), message: e.to_string() }),
            _ => Err(CronError::Unspecified),
        }
    }
}

impl CronSchedule {
    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            CronSchedule::Every(interval) => Some(after + *interval),
            CronSchedule::Expression(schedule) => schedule.after(&after).next(),
        }
    }
}

/// What a cron trigger did.
#[derive(Debug, Default)]
pub struct CronStats {
    /// Runs started (a run's retries count once).
    pub runs: AtomicU64,
    /// Ticks that came while a run was still going.
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// Fires `function` on `schedule` until `shutdown`, then waits for the run in progress.
pub async fn run_cron(
    function: Arc<FunctionSlot>,
    schedule: CronSchedule,
    retry: RetryPolicy,
    stats: Arc<CronStats>,
    shutdown: Shutdown,
) {
    let running = Arc::new(AtomicBool::new(false));
    let mut current: Option<tokio::task::JoinHandle<()>> = None;
    let mut last = Utc::now();
    tracing::info!(function = function.name(), ?schedule, "cron trigger started");
    while let Some(mut tick) = schedule.next_after(last) {
        let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.clone().stopped() => break,
        }
        // Ticks that passed while this loop waited for a busy executor were missed too.
        let now = Utc::now();
        while let Some(next) = schedule.next_after(tick).filter(|next| *next <= now) {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            tick = next;
        }
        last = tick;
        if running.swap(true, Ordering::AcqRel) {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(function = function.name(), tick = %tick, "cron tick skipped: the previous run is still going");
            continue;
        }
        stats.runs.fetch_add(1, Ordering::Relaxed);
        let (function, stats, running) = (function.current(), stats.clone(), running.clone());
        current = Some(tokio::spawn(async move {
            fire(&function, tick, &retry, &stats).await;
            running.store(false, Ordering::Release);
        }));
    }
    if let Some(run) = current {
        let _ = run.await;
    }
    tracing::info!(function = function.name(), runs = stats.runs.load(Ordering::Relaxed), skipped = stats.skipped.load(Ordering::Relaxed), "cron trigger stopped");
}

async fn fire(function: &Function, tick: DateTime<Utc>, retry: &RetryPolicy, stats: &CronStats) {
    let scheduled_ms = tick.timestamp_millis();
    let event = Message {
        body: serde_json::json!({ "scheduled_ms": scheduled_ms }).to_string().into_bytes(),
        meta: EventMeta::Cron { scheduled_ms },
    };
    let batch = Arc::new(Batch::from_messages(TriggerKind::Cron, vec![event], BadLinePolicy::Fail));
    match deliver(function, batch, &format!("cron-{scheduled_ms}"), retry, WriteMode::CommitFiles).await {
        Ok(Delivered::Committed { .. }) => {}
        Ok(Delivered::DeadLettered { .. }) => {
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::error!(function = function.name(), %error, "cron run lost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: Option<&str>, every_ms: Option<u64>) -> CronTrigger {
        CronTrigger { schedule: schedule.map(str::to_string), every_ms }
    }

    #[test]
    fn schedules_from_intervals_and_expressions() {
        let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00.500Z").unwrap().with_timezone(&Utc);
        let every = CronSchedule::try_from(&spec(None, Some(250))).unwrap();
        assert_eq!(every.next_after(start).unwrap().timestamp_millis() - start.timestamp_millis(), 250);
        let expression = CronSchedule::try_from(&spec(Some("*/2 * * * * *"), None)).unwrap();
        assert_eq!(expression.next_after(start).unwrap().to_rfc3339(), "2024-01-01T00:00:02+00:00");
    }

    #[test]
    fn names_a_bad_expression() {
        let err = CronSchedule::try_from(&spec(Some("every tuesday"), None)).unwrap_err().to_string();
        assert!(err.contains("every tuesday"), "{err}");
        assert!(matches!(CronSchedule::try_from(&spec(None, None)), Err(CronError::Unspecified)));
    }
}

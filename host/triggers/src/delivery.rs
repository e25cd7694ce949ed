//! Delivering one batch: invoke, retry with exponential backoff, then dead-letter.
//!
//! A batch is acknowledged (Kafka offset stored, cron run counted) only once this returns:
//! either its output is durable, or its events are durably in the dead-letter directory.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_manifest::Retry;
use sluice_runtime::{Function, InvokeError, Invocation, SharedBatch, WriteMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Invocations in all, the first included.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl From<&Retry> for RetryPolicy {
    fn from(retry: &Retry) -> Self {
        RetryPolicy {
            attempts: retry.attempts.max(1),
            backoff: Duration::from_millis(retry.backoff_ms),
            max_backoff: Duration::from_millis(retry.max_backoff_ms),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (2 for the first retry): doubling, capped.
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(31);
        self.backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// How a batch was settled.
#[derive(Debug)]
pub enum Delivered {
    /// The handler returned ok and its output is durable.
    Committed { invocation: Invocation, attempts: u32 },
    /// Every attempt failed; the events and the last error are in the dead-letter file.
    DeadLettered { error: InvokeError, path: PathBuf },
}

/// A batch that can be neither committed nor dead-lettered: it must not be acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("batch {key} failed ({error}) and its dead-letter file could not be written: {io}")]
pub struct DeliveryError {
    pub key: String,
    pub error: InvokeError,
    pub io: std::io::Error,
}

/// Invokes `function` on `batch` (its writes going where `mode` says) until it succeeds or
/// `policy.attempts` are spent, then dead-letters the events. A commit that clashes with files of another run of the same
/// key (a replay whose handler wrote different bytes) is retried under a key of its own,
/// so nothing durable is overwritten and nothing is lost.
pub async fn deliver(
    function: &Function,
    batch: SharedBatch,
    key: &str,
    policy: &RetryPolicy,
    mode: WriteMode,
) -> Result<Delivered, DeliveryError> {
    let mut attempt_key = key.to_string();
    let mut attempt = 1;
    loop {
        match function.invoke_with(batch.clone(), &attempt_key, mode).await {
            Ok(invocation) => return Ok(Delivered::Committed { invocation, attempts: attempt }),
            Err(error) if attempt >= policy.attempts => {
                tracing::error!(function = function.name(), batch = key, attempts = attempt, %error, "batch dead-lettered");
                return dead_letter(function, &batch, key, error);
            }
            Err(error) => {
                if matches!(error, InvokeError::Commit(_)) {
                    attempt_key = format!("{key}-{}", process_unique_suffix());
                }
                attempt += 1;
                let wait = policy.backoff_before(attempt);
                tracing::warn!(function = function.name(), batch = key, attempt, ?wait, %error, "retrying batch");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn dead_letter(function: &Function, batch: &SharedBatch, key: &str, error: InvokeError) -> Result<Delivered, DeliveryError> {
    match function.sinks().dead_letter_batch(key, &error.to_string(), batch) {
        Ok(path) => Ok(Delivered::DeadLettered { error, path }),
        Err(io) => Err(DeliveryError { key: key.to_string(), error, io }),
    }
}

/// Distinguishes this process's files from any other run's: pid and start time.
pub(crate) fn process_unique_suffix() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("r{ms}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy { attempts: 6, backoff: Duration::from_millis(100), max_backoff: Duration::from_millis(350) };
        let waits: Vec<u128> = (2..=5).map(|a| policy.backoff_before(a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 350, 350]);
    }
}

//! Who a loaded function belongs to and what it shares with the rest of its tenant: the
//! labels of its metrics and logs, the tenant's cap on instances running at once, the
//! tenant's budget of sink bytes, and where its guest log lines go.
//!
//! A function loaded from a manifest on the command line gets [`Deployment::default`]: no
//! tenant, version 0, no shared caps, guest logs only through `tracing`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Label;
use sluice_frame::cuda::GpuBudget;
use tokio::sync::Semaphore;

use crate::error::InvokeError;
use crate::sinks::WrittenFile;

/// One line a guest logged (through the `log` interface, or on stdout/stderr).
#[derive(Debug, Clone)]
pub struct GuestLogLine {
    /// `trace`, `debug`, `info`, `warn`, `error`; `stdout` and `stderr` lines are `info` and `warn`.
    pub level: &'static str,
    pub invocation: u64,
    pub message: String,
}

/// Receives the guest log lines of one function (the control plane keeps them per function).
pub trait GuestLogSink: Send + Sync {
    fn line(&self, line: GuestLogLine);
    /// An invocation of the function failed (the error is also returned to the trigger).
    fn invocation_failed(&self, invocation: u64, error: &InvokeError);
}

/// Bytes a tenant's sinks may hold; every commit is checked and counted against it.
#[derive(Debug)]
pub struct SinkBudget {
    limit_bytes: AtomicU64,
    used_bytes: AtomicU64,
}

/// A commit that would take the tenant past its sink-bytes quota.
#[derive(Debug, thiserror::Error)]
#[error("the tenant's sink quota of {limit_bytes} bytes is used up ({used_bytes} used, this batch writes {batch_bytes} more)")]
pub struct SinkQuotaExceeded {
    pub limit_bytes: u64,
    pub used_bytes: u64,
    pub batch_bytes: u64,
}

impl SinkBudget {
    /// A budget of `limit_bytes`, of which `used_bytes` are already on disk.
    pub fn new(limit_bytes: u64, used_bytes: u64) -> Arc<SinkBudget> {
        Arc::new(SinkBudget { limit_bytes: AtomicU64::new(limit_bytes), used_bytes: AtomicU64::new(used_bytes) })
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes.load(Ordering::Relaxed)
    }

    /// Changes the limit; bytes already written stay counted.
    pub fn set_limit_bytes(&self, limit_bytes: u64) {
        self.limit_bytes.store(limit_bytes, Ordering::Relaxed);
    }

    /// Reserves `batch_bytes`, or refuses without reserving anything.
    pub fn reserve(&self, batch_bytes: u64) -> Result<(), SinkQuotaExceeded> {
        let limit_bytes = self.limit_bytes();
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(batch_bytes).filter(|total| *total <= limit_bytes)
            })
            .map(|_| ())
            .map_err(|used_bytes| SinkQuotaExceeded { limit_bytes, used_bytes, batch_bytes })
    }

    /// Gives back a reservation whose files were not made durable.
    pub fn release(&self, batch_bytes: u64) {
        self.used_bytes.fetch_sub(batch_bytes, Ordering::AcqRel);
    }
}

/// The identity and shared limits of one loaded function version.
#[derive(Clone, Default)]
pub struct Deployment {
    /// Empty for a function that belongs to no tenant.
    pub tenant: String,
    /// The version number the function store gave it; 0 outside the store.
    pub version: u64,
    /// Permits shared by every function of the tenant: invocations running at once.
    pub tenant_instances: Option<Arc<Semaphore>>,
    pub sink_budget: Option<Arc<SinkBudget>>,
    /// The tenant's GPU memory quota, shared by its functions' GPU budgets.
    pub gpu_budget: Option<Arc<GpuBudget>>,
    pub guest_log: Option<Arc<dyn GuestLogSink>>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment").field("tenant", &self.tenant).field("version", &self.version).finish()
    }
}

/// Prometheus-style metrics of one function version, labelled tenant/function/version.
#[derive(Debug)]
pub(crate) struct FunctionMetrics {
    labels: Vec<Label>,
}

impl FunctionMetrics {
    pub(crate) fn new(deployment: &Deployment, function: &str) -> FunctionMetrics {
        let labels = vec![
            Label::new("tenant", deployment.tenant.clone()),
            Label::new("function", function.to_string()),
            Label::new("version", deployment.version.to_string()),
        ];
        FunctionMetrics { labels }
    }

    /// GPU memory the function's frames hold now.
    pub(crate) fn gpu_memory(&self, bytes: u64) {
        metrics::gauge!("sluice_gpu_memory_bytes", self.labels.iter()).set(bytes as f64);
    }

    /// Counts one instance in use until the returned guard is dropped.
    pub(crate) fn instance_in_use(&self) -> InstanceInUse<'_> {
        metrics::gauge!("sluice_instances_in_use", self.labels.iter()).increment(1.0);
        InstanceInUse(self)
    }

    pub(crate) fn batch_handled(&self, events: usize, bytes_in: u64, elapsed: Duration, written: &[WrittenFile]) {
        metrics::counter!("sluice_batches_total", self.labels.iter()).increment(1);
        metrics::counter!("sluice_events_total", self.labels.iter()).increment(events as u64);
        metrics::counter!("sluice_bytes_in_total", self.labels.iter()).increment(bytes_in);
        metrics::histogram!("sluice_batch_duration_seconds", self.labels.iter()).record(elapsed.as_secs_f64());
        for file in written {
            let labels = self.with("sink", file.sink.clone());
            metrics::counter!("sluice_sink_rows_written_total", labels.iter()).increment(file.rows);
            metrics::counter!("sluice_sink_bytes_written_total", labels.iter()).increment(file.bytes);
        }
    }

    pub(crate) fn batch_failed(&self, cause: &'static str, elapsed: Duration) {
        metrics::counter!("sluice_errors_total", self.with("cause", cause.to_string())).increment(1);
        metrics::histogram!("sluice_batch_duration_seconds", self.labels.iter()).record(elapsed.as_secs_f64());
    }

    fn with(&self, key: &'static str, value: String) -> Vec<Label> {
        let mut labels = self.labels.clone();
        labels.push(Label::new(key, value));
        labels
    }
}

pub(crate) struct InstanceInUse<'a>(&'a FunctionMetrics);

impl Drop for InstanceInUse<'_> {
    fn drop(&mut self) {
        metrics::gauge!("sluice_instances_in_use", self.0.labels.iter()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_budget_refuses_what_does_not_fit_and_reserves_nothing_then() {
        let budget = SinkBudget::new(100, 40);
        budget.reserve(50).unwrap();
        let refused = budget.reserve(11).unwrap_err();
        assert_eq!((refused.used_bytes, refused.batch_bytes), (90, 11));
        assert!(refused.to_string().contains("100 bytes"), "{refused}");
        assert_eq!(budget.used_bytes(), 90);
        budget.release(50);
        budget.reserve(60).unwrap();
        assert_eq!(budget.used_bytes(), 100);
    }
}

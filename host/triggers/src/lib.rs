//! Event sources that feed sluice handlers in batches. Each trigger cuts its input into
//! batches, invokes the function, and acknowledges input only once the batch's output is
//! durable: files, Kafka (offsets), HTTP (the reply) and cron (the schedule).

pub mod batcher;
pub mod cron;
pub mod delivery;
pub mod file;
pub mod http;
pub mod kafka;

pub use batcher::{Accumulator, BatchLimits};
pub use cron::{CronError, CronSchedule, CronStats, run_cron};
pub use delivery::{Delivered, DeliveryError, RetryPolicy};
pub use file::{FileRun, FileRunError, FileTrigger, Progress, resolve_inputs};
pub use http::{HttpFunction, HttpStats, http_router};
pub use kafka::{DEAD_LETTER_HEADERS, KafkaError, KafkaSource, KafkaStats};

/// Tells long-running triggers to stop taking events and finish what they hold.
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownSignal(tokio::sync::watch::Sender<bool>);

impl ShutdownSignal {
    pub fn new() -> (ShutdownSignal, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ShutdownSignal(tx), Shutdown(rx))
    }

    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once stopping was requested (or the signal was dropped).
    pub async fn stopped(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

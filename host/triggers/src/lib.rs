//! Event sources that feed sluice handlers in batches. Each trigger cuts its input into
//! batches, invokes the function, and acknowledges input only once the batch's output is
//! durable. Files today; Kafka, HTTP and cron follow the same shape.

pub mod file;

pub use file::{FileRun, FileRunError, FileTrigger, Progress, resolve_inputs};

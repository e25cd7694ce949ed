//! sluice's wasm runtime: compiles handler components once (cached on disk by content
//! hash), runs each batch in a fresh sandboxed instance with a deadline and a memory limit,
//! and implements the host side of the WIT interfaces over `sluice-frame`.
//!
//! It knows nothing of triggers or HTTP: a trigger builds a [`Batch`] and calls
//! [`Function::invoke`].

mod batch;
mod bindings;
mod cache;
mod deployment;
mod engine;
mod error;
mod function;
mod gpu;
mod pool;
mod rolling;
mod host;
mod sinks;
mod slot;
mod state;

pub use batch::{Batch, EventMeta, FileSpan, MappedFile, Message, PartitionMessages, SharedBatch, TriggerKind};
pub use bindings::{Outcome, Reply};
pub use cache::{ComponentCache, content_hash};
pub use deployment::{Deployment, GuestLogLine, GuestLogSink, SinkBudget, SinkQuotaExceeded};
pub use engine::{Allocator, HandlerComponent, Runtime, RuntimeConfig};
pub use error::{InvokeError, LoadError};
pub use function::{Function, Invocation, WriteMode};
pub use gpu::FunctionGpu;
pub use pool::{PoolStats, WARM_IDLE};
pub use rolling::{BufferedWrite, Lane, RollBounds, RollRecordError};
pub use sinks::{DEAD_LETTER_DIR, Sinks, WrittenFile};
pub use slot::FunctionSlot;

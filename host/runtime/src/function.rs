//! One loaded function and its invocations: a fresh sandboxed instance per batch, a
//! deadline and memory limit per instance, and sink writes that become durable only when
//! the handler returned ok.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_frame::FrameError;
use sluice_manifest::Limits;
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::batch::SharedBatch;
use crate::deployment::{Deployment, FunctionMetrics, GuestLogLine};
use crate::bindings::{GuestError, Handler, HandlerPre, Outcome};
use crate::engine::{HandlerComponent, Runtime};
use crate::error::InvokeError;
use crate::pool::{InstancePool, PoolStats, Warm};
use crate::rolling::BufferedWrite;
use crate::sinks::{Sinks, WrittenFile};
use crate::state::{FunctionContext, InvocationState};

/// The result of a successful invocation.
#[derive(Debug)]
pub struct Invocation {
    /// What the handler returned: one reply per HTTP event.
    pub outcome: Outcome,
    /// Parquet files made durable for this batch.
    pub written: Vec<WrittenFile>,
    /// Malformed lines skipped (policy `skip`), and where they were dead-lettered.
    /// Rows the host parsed from the batch.
    pub rows_parsed: u64,
    pub skipped_lines: usize,
    pub dead_letter: Option<PathBuf>,
    pub elapsed: Duration,
    /// With [`WriteMode::BufferForLane`]: the rows written, for the trigger's lane to append.
    pub buffered: Vec<BufferedWrite>,
}

/// Where a successful invocation's writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Files of this batch alone, durable when the invocation returns.
    CommitFiles,
    /// Held in memory and returned, for a [`crate::Lane`] that rolls files across batches.
    BufferForLane,
}

/// A function ready to run: compiled, linked, with its sinks resolved.
pub struct Function {
    pre: HandlerPre<InvocationState>,
    context: Arc<FunctionContext>,
    limits: Limits,
    hash: String,
    next_invocation: AtomicU64,
    instances: Semaphore,
    /// Warm instances between min-instances and max-instances.
    pool: Arc<InstancePool>,
    metrics: FunctionMetrics,
}

impl Function {
    pub(crate) fn new(runtime: &Runtime, component: HandlerComponent, context: FunctionContext, limits: Limits) -> Self {
        let metrics = FunctionMetrics::new(&context.deployment, &context.name);
        let context = Arc::new(context);
        let memory_limit = usize::try_from(limits.memory_mb << 20).unwrap_or(usize::MAX);
        let pool = InstancePool::new(
            component.pre.clone(),
            runtime.engine().clone(),
            context.clone(),
            memory_limit,
            limits.min_instances as usize,
            limits.max_instances as usize,
        );
        let function = Function {
            metrics,
            pool,
            pre: component.pre,
            context,
            instances: Semaphore::new(limits.max_instances as usize),
            limits,
            hash: component.hash,
            next_invocation: AtomicU64::new(1),
        };
        function.report_gpu_memory();
        function
    }

    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// Hex SHA-256 of the running component.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn sinks(&self) -> &Sinks {
        &self.context.sinks
    }

    /// Sets the function's `sluice_gpu_memory_bytes` gauge to what its frames hold on the
    /// device now (0 on the CPU); device memory changes inside host calls, so the metrics
    /// endpoint calls this before it renders.
    pub fn report_gpu_memory(&self) {
        self.metrics.gpu_memory(self.context.gpu.as_ref().map_or(0, |gpu| gpu.used_bytes()));
    }

    /// The tenant and version this function was deployed as.
    pub fn deployment(&self) -> &Deployment {
        &self.context.deployment
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Warm and running instances (see [`crate::pool`] for what min- and max-instances mean).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Invocations running or waiting for the tenant's instance cap right now.
    pub fn instances_in_use(&self) -> usize {
        (self.limits.max_instances as usize).saturating_sub(self.instances.available_permits())
    }

    /// Runs the handler over one batch in a fresh instance. `batch_key` names the files the
    /// batch writes; it must be unique per batch (a replay of the same batch reuses it, and
    /// then refuses to overwrite what the first run made durable).
    pub async fn invoke(&self, batch: SharedBatch, batch_key: &str) -> Result<Invocation, InvokeError> {
        self.invoke_with(batch, batch_key, WriteMode::CommitFiles).await
    }

    /// [`Function::invoke`], with the batch's writes either committed as files of their own
    /// or held in [`Invocation::buffered`] for a stream lane.
    pub async fn invoke_with(&self, batch: SharedBatch, batch_key: &str, mode: WriteMode) -> Result<Invocation, InvokeError> {
        let (counted, bytes_in, started) = (batch.clone(), batch.bytes(), Instant::now());
        let result = self.run(batch, batch_key, mode).await;
        match &result {
            Ok(done) => {
                // A scan already counted a file's lines (rows parsed plus lines skipped); counting
                // them again would be one more single-threaded pass over the whole input.
                let scanned = done.rows_parsed as usize + done.skipped_lines;
                let events = counted.len_if_known().unwrap_or_else(|| if scanned > 0 { scanned } else { counted.len() });
                self.metrics.batch_handled(events, bytes_in, done.elapsed, &done.written)
            }
            Err(error) => self.metrics.batch_failed(error.cause(), started.elapsed()),
        }
        result
    }

    async fn run(&self, batch: SharedBatch, batch_key: &str, mode: WriteMode) -> Result<Invocation, InvokeError> {
        let _permit = self.instances.acquire().await.expect("the instance semaphore is never closed");
        let _tenant_permit = match &self.context.deployment.tenant_instances {
            Some(shared) => Some(shared.clone().acquire_owned().await.expect("the tenant semaphore is never closed")),
            None => None,
        };
        let _in_use = self.metrics.instance_in_use();
        let started = Instant::now();
        let id = self.next_invocation.fetch_add(1, Ordering::Relaxed);
        let _finished = PoolSlot(&self.pool);
        let (mut store, handler) = match self.pool.start() {
            Some(Warm { store, handler }) => (store, Some(handler)),
            None => (self.pool.new_store(), None),
        };
        let state = store.data_mut();
        state.batch_key = batch_key.to_string();
        state.invocation_id = id;
        state.buffered = (mode == WriteMode::BufferForLane).then(Vec::new);
        // Every epoch tick the guest yields to the executor, so a long handler shares the
        // async worker threads with the triggers' accept loops and with other guests; past
        // its timeout it is stopped.
        let deadline = started + Duration::from_millis(self.limits.timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { yield_to_others() })
        });

        let span = tracing::info_span!("invoke", function = %self.context.name, invocation = id, batch = batch_key);
        let _entered = span.enter();
        let result = self.call(&mut store, handler, batch).await;
        let state = store.data_mut();
        state.gather_scans();
        let staged = std::mem::take(&mut state.staged);
        match result {
            Ok(outcome) => {
                let committed = self.context.sinks.commit(&staged).map_err(|e| match e {
                    // The only limit a commit checks is the tenant's sink budget.
                    FrameError::Limit(quota) => InvokeError::SinkQuota(quota),
                    other => InvokeError::Commit(other.to_string()),
                });
                if let (Err(error), Some(sink)) = (&committed, &self.context.deployment.guest_log) {
                    sink.invocation_failed(id, error);
                }
                let written = committed?;
                let bad_lines = std::mem::take(&mut state.bad_lines);
                let dead_letter = if bad_lines.is_empty() {
                    None
                } else {
                    let path = self
                        .context
                        .sinks
                        .dead_letter_lines(batch_key, &bad_lines)
                        .map_err(|e| InvokeError::Commit(format!("dead-letter file: {e}")))?;
                    Some(path)
                };
                log_guest_output(state);
                let elapsed = started.elapsed();
                tracing::debug!(?elapsed, files = written.len(), "invocation committed");
                Ok(Invocation {
                    outcome,
                    written,
                    buffered: state.buffered.take().unwrap_or_default(),
                    rows_parsed: state.rows_parsed,
                    skipped_lines: bad_lines.len(),
                    dead_letter,
                    elapsed,
                })
            }
            Err(error) => {
                self.context.sinks.discard(&staged);
                log_guest_output(state);
                let error = classify(error, state, &self.limits);
                if let Some(sink) = &self.context.deployment.guest_log {
                    sink.invocation_failed(id, &error);
                }
                tracing::warn!(%error, "invocation failed");
                Err(error)
            }
        }
    }

    /// Calls the handler in `handler` (a warm instance) or in one instantiated now.
    async fn call(&self, store: &mut Store<InvocationState>, handler: Option<Handler>, batch: SharedBatch) -> Result<Outcome, CallError> {
        let handler = match handler {
            Some(handler) => handler,
            None => self.pre.instantiate_async(&mut *store).await.map_err(CallError::Instantiate)?,
        };
        let handle = store.data_mut().table.push(batch).map_err(|e| CallError::Instantiate(e.into()))?;
        let result = handler.call_handle(&mut *store, handle).await;
        match result {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(error)) => Err(CallError::Guest(error)),
            Err(trap) => Err(CallError::Trap(trap)),
        }
    }
}

/// Tells the pool that an invocation ended, however it ended.
struct PoolSlot<'a>(&'a Arc<InstancePool>);

impl Drop for PoolSlot<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Extends a guest's epoch deadline by one tick after tokio's own yield, which puts the task
/// behind the others that are ready: wasmtime's plain `Yield` wakes the task from inside its
/// poll, and tokio may poll such a task again at once (measured: a victim tenant beside six
/// busy-looping guests kept 1.7% of its throughput with it, 18% with tokio's yield).
pub(crate) fn yield_to_others() -> UpdateDeadline {
    UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
}

enum CallError {
    Instantiate(wasmtime::Error),
    Guest(GuestError),
    Trap(wasmtime::Error),
}

/// Names the cause of a failed call: the handler's own error, the memory limit, the
/// timeout, or a trap (with the tail of the guest's stderr, where a panic message lands).
fn classify(error: CallError, state: &InvocationState, limits: &Limits) -> InvokeError {
    match error {
        CallError::Guest(GuestError { code, message }) => InvokeError::Handler { code: code_name(code).into(), message },
        CallError::Trap(_) if state.failed_call.is_some() && !state.limiter.exceeded => {
            let GuestError { code, message } = state.failed_call.clone().expect("checked above");
            InvokeError::Handler { code: code_name(code).into(), message }
        }
        CallError::Instantiate(_) | CallError::Trap(_) if state.limiter.exceeded => {
            InvokeError::MemoryLimit { limit_mb: limits.memory_mb }
        }
        CallError::Instantiate(error) => InvokeError::Instantiate(format!("{error:#}")),
        CallError::Trap(error) => match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => InvokeError::Timeout { limit_ms: limits.timeout_ms },
            Some(trap) => InvokeError::Trap { message: trap.to_string(), stderr: output_tail(&state.stderr) },
            None => InvokeError::Trap { message: format!("{error:#}"), stderr: output_tail(&state.stderr) },
        },
    }
}

fn code_name(code: crate::bindings::GuestErrorCode) -> &'static str {
    use crate::bindings::GuestErrorCode as C;
    match code {
        C::InvalidArgument => "invalid-argument",
        C::ColumnNotFound => "column-not-found",
        C::TypeMismatch => "type-mismatch",
        C::Parse => "parse",
        C::Limit => "limit",
        C::Io => "io",
        C::Internal => "internal",
    }
}

/// The last lines the guest wrote to a stream, enough to hold a panic message.
fn output_tail(pipe: &wasmtime_wasi::p2::pipe::MemoryOutputPipe) -> String {
    const TAIL: usize = 2048;
    let bytes = pipe.contents();
    let start = bytes.len().saturating_sub(TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

fn log_guest_output(state: &InvocationState) {
    for (stream, level, pipe) in [("stdout", "info", &state.stdout), ("stderr", "warn", &state.stderr)] {
        let text = output_tail(pipe);
        if !text.is_empty() {
            tracing::debug!(target: "guest", stream, "{text}");
            if let Some(sink) = &state.function.deployment.guest_log {
                for line in text.lines() {
                    sink.line(GuestLogLine { level, invocation: state.invocation_id, message: line.to_string() });
                }
            }
        }
    }
}

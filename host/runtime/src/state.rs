//! What a store holds during one invocation: the guest's resources, its WASI context
//! (which grants nothing ambient), its memory limit and the writes it staged.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_frame::LazyFrame;
use sluice_frame::ingest::BadLine;
use sluice_frame::sink::StagedFile;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::sinks::Sinks;

/// Per-function settings shared by all of its invocations.
#[derive(Debug)]
pub struct FunctionContext {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub sinks: Sinks,
    /// Tenant, version and shared limits; labels the function's logs and metrics.
    pub deployment: crate::deployment::Deployment,
    /// The function's share of the GPU when the CUDA backend serves it.
    pub gpu: Option<crate::gpu::FunctionGpu>,
}

/// Refuses linear-memory growth past the function's limit and remembers that it did,
/// so the resulting trap can be reported as a memory-limit error.
#[derive(Debug)]
pub struct MemoryLimiter {
    pub limit_bytes: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} MiB exceeded (asked for {} MiB)", self.limit_bytes >> 20, desired >> 20);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Bytes of guest stdout/stderr kept for error reports and logs.
pub const GUEST_OUTPUT_CAPACITY: usize = 1 << 20;

/// The data of a store: one per invocation.
pub struct InvocationState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub limiter: MemoryLimiter,
    pub function: Arc<FunctionContext>,
    /// Names the files of this batch, so a replay cannot collide with or corrupt them.
    pub batch_key: String,
    pub invocation_id: u64,
    pub staged: Vec<(String, StagedFile)>,
    /// `Some` when the trigger appends this batch's rows to a stream lane: writes are held
    /// here instead of staged as files of their own.
    pub buffered: Option<Vec<crate::rolling::BufferedWrite>>,
    pub bad_lines: Vec<BadLine>,
    /// Rows the host parsed from the batch for this invocation.
    pub rows_parsed: u64,
    /// Every frame `to-frame` returned: their scans report rows and bad lines once executed.
    pub scans: Vec<LazyFrame>,
    /// The error of a host call that could only trap (a plan executed by `num-rows`); the
    /// invocation reports it instead of the trap.
    pub failed_call: Option<crate::bindings::GuestError>,
    pub stderr: MemoryOutputPipe,
    pub stdout: MemoryOutputPipe,
    /// This invocation's stream on the shared GPU, when the CUDA backend serves the function:
    /// its frames live in GPU memory until the invocation ends.
    pub gpu: Option<Arc<sluice_frame::cuda::CudaSession>>,
}

impl InvocationState {
    /// The state of a store not yet handed to an invocation: [`Function`](crate::Function)
    /// names the batch and the invocation when it takes the store.
    pub fn new(function: Arc<FunctionContext>, memory_limit_bytes: usize) -> Self {
        let stdout = MemoryOutputPipe::new(GUEST_OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(GUEST_OUTPUT_CAPACITY);
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let gpu = function.gpu.as_ref().and_then(|g| g.session());
        InvocationState {
            table: ResourceTable::new(),
            wasi,
            limiter: MemoryLimiter { limit_bytes: memory_limit_bytes, exceeded: false },
            function,
            batch_key: String::new(),
            invocation_id: 0,
            staged: Vec::new(),
            buffered: None,
            bad_lines: Vec::new(),
            rows_parsed: 0,
            scans: Vec::new(),
            failed_call: None,
            stderr,
            stdout,
            gpu,
        }
    }
}

impl InvocationState {
    /// Moves what the executed scans read into `rows_parsed` and `bad_lines`.
    pub fn gather_scans(&mut self) {
        for scan in std::mem::take(&mut self.scans) {
            if let Some(report) = scan.scan_report() {
                self.rows_parsed += report.rows;
                self.bad_lines.extend(report.bad_lines.iter().cloned());
            }
        }
        if !self.bad_lines.is_empty() {
            tracing::warn!(
                function = %self.function.name,
                skipped = self.bad_lines.len(),
                "skipped malformed lines; they go to the dead-letter file"
            );
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

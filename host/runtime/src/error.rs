//! Errors of loading a function and of invoking it; each names the input at fault.

use std::path::PathBuf;

/// Why a component or function could not be loaded. The running version, if any, is untouched.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: build the handler with `--target wasm32-wasip2` \
         (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error(
        "a component of another world: sluice needs world `sluice:function/handler` (export `handle`), \
         but this one {0}"
    )]
    WrongWorld(String),
    #[error("sink `{name}`: {why}")]
    Sink { name: String, why: String },
    #[error("function `{function}`: device `cuda` was requested, but {reason}; use `auto` or `cpu`")]
    DeviceUnavailable { function: String, reason: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// Why one invocation failed. Only that batch fails; the host and later batches carry on.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("handler returned an error ({code}): {message}")]
    Handler { code: String, message: String },
    #[error("handler trapped: {message}{}", stderr_suffix(.stderr))]
    Trap { message: String, stderr: String },
    #[error("handler exceeded its timeout of {limit_ms} ms and was stopped")]
    Timeout { limit_ms: u64 },
    #[error("handler exceeded its memory limit of {limit_mb} MiB and was stopped")]
    MemoryLimit { limit_mb: u64 },
    #[error("cannot instantiate the handler: {0}")]
    Instantiate(String),
    #[error("cannot make the batch's output durable: {0}")]
    Commit(String),
    /// The batch's files would take the tenant past its sink-bytes quota; nothing was written.
    #[error("{0}")]
    SinkQuota(String),
}

impl InvokeError {
    /// A short machine-readable cause, for metrics and dead-letter records.
    pub fn cause(&self) -> &'static str {
        match self {
            InvokeError::Handler { .. } => "handler-error",
            InvokeError::Trap { .. } => "trap",
            InvokeError::Timeout { .. } => "timeout",
            InvokeError::MemoryLimit { .. } => "memory-limit",
            InvokeError::Instantiate(_) => "instantiate",
            InvokeError::Commit(_) => "commit",
            InvokeError::SinkQuota(_) => "sink-quota",
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let tail = stderr.trim();
    if tail.is_empty() { String::new() } else { format!("; guest stderr: {tail}") }
}

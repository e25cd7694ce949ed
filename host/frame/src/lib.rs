//! sluice-frame: the dataframe engine behind sluice's WIT `dataframe` interface.
//!
//! - [`Expr`] and friends describe computations as data, apart from execution;
//! - a [`Backend`] executes them ([`CpuBackend`]: Arrow kernels and a parallel hash group-by);
//!   [`cuda`] keeps a frame's columns in GPU memory and runs its operations as CUDA kernels;
//! - [`Frame`] is an immutable table; [`LazyFrame`], what guests hold by handle, records a plan
//!   over a scan and executes it in one streaming pass at the first call that needs values;
//! - [`ingest`] parses JSON lines straight into Arrow columns, in parallel;
//! - [`sink`] writes Parquet with stage-then-commit semantics.
//!
//! The crate knows nothing of wasm: the runtime maps WIT resources onto these types.

mod backend;
mod cpu;
pub mod cuda;
mod error;
mod eval;
mod expr;
mod frame;
mod groupby;
pub mod ingest;
mod lazy;
pub mod sink;

pub use backend::{Backend, Device, SortKey};
pub use cpu::CpuBackend;
pub use error::{ErrorCode, FrameError};
pub use expr::{AggFn, BinaryOp, DType, Expr, Scalar};
pub use frame::Frame;
pub use lazy::{CHUNK_BYTES, LazyFrame, ScanInput, ScanReport};
pub use ingest::{BadLine, BadLinePolicy, Ingested, JsonSource, ReadOptions, read_json_lines};
pub use sink::{Compression, SinkConfig, StagedFile, StagedStream, commit_staged, discard_staged, write_staged};

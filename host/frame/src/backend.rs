//! Where frame operations execute.

use std::fmt::Debug;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;

use crate::error::FrameError;
use crate::expr::Expr;

/// The kind of device a [`Backend`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

/// One sort key: a column and its direction. Nulls always sort last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub column: String,
    pub descending: bool,
}

/// Executes the physical operations behind [`Frame`](crate::Frame).
///
/// A trait object so that a CUDA backend can sit beside [`CpuBackend`](crate::CpuBackend) and the
/// runtime can choose per function. Batches go in and out as Arrow `RecordBatch`es; a device
/// backend may keep its own copy and only materialize host memory when asked. Planning that does
/// not depend on the device (aggregate detection, `with_columns` rewriting, schema checks of
/// `concat`) happens in `Frame`, so every backend sees the same, already validated calls.
pub trait Backend: Send + Sync + Debug {
    fn device(&self) -> Device;

    /// Evaluates a row-wise (non-aggregate) expression to a column of `batch.num_rows()` values.
    fn evaluate(&self, batch: &RecordBatch, expr: &Expr) -> Result<ArrayRef, FrameError>;

    /// One output column per row-wise expression, named by [`Expr::output_name`] (names must be unique).
    fn project(&self, batch: &RecordBatch, exprs: &[Expr]) -> Result<RecordBatch, FrameError>;

    /// Rows where the boolean `predicate` is true; null counts as false.
    fn filter(&self, batch: &RecordBatch, predicate: &Expr) -> Result<RecordBatch, FrameError>;

    /// Key columns then one column per aggregation, one row per group in order of first appearance.
    fn group_by(&self, batch: &RecordBatch, keys: &[String], aggs: &[Expr]) -> Result<RecordBatch, FrameError>;

    /// Stable sort by `keys` (nulls last); with `limit`, only the first `limit` rows of the result.
    fn sort(&self, batch: &RecordBatch, keys: &[SortKey], limit: Option<usize>) -> Result<RecordBatch, FrameError>;

    /// Concatenates batches whose schemas the caller has checked to be equal (at least one).
    fn concat(&self, batches: &[&RecordBatch]) -> Result<RecordBatch, FrameError>;
}

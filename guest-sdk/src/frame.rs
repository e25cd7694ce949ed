use std::borrow::Borrow;

use crate::bindings::sluice::function::dataframe as wit;
use crate::error::Result;
use crate::expr::{Expr, Scalar};

pub use crate::bindings::sluice::function::dataframe::WriteStats;
pub use crate::bindings::sluice::function::types::Dtype as DType;

/// A dataframe held by the host; the guest holds only a handle.
///
/// Every operation returns a new frame and leaves this one as it was. Methods that take several
/// expressions accept anything iterable over `Expr` or `&Expr`, and column names as `&str` or
/// `String`.
///
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// # fn run(batch: Batch) -> Result<()> {
/// let events = batch.json()?;
/// let slow = events.filter(col("latency").gt(250.0))?;
/// let summary = slow.group_by(
///     ["company"],
///     [col("latency").max().alias("latency_max"), count().alias("n")],
/// )?;
/// summary.write("slow-requests")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Frame(pub(crate) wit::Frame);

impl Frame {
    /// Parses JSON lines the guest already holds (one object per line).
    pub fn from_json_lines(data: &[u8]) -> Result<Frame> {
        Ok(Frame(wit::Frame::from_json_lines(data)?))
    }

    /// Stacks frames with the same schema, in order.
    pub fn concat(frames: impl IntoIterator<Item = impl Borrow<Frame>>) -> Result<Frame> {
        let frames: Vec<_> = frames.into_iter().collect();
        let handles: Vec<&wit::Frame> = frames.iter().map(|frame| &frame.borrow().0).collect();
        Ok(Frame(wit::Frame::concat(&handles)?))
    }

    pub fn num_rows(&self) -> u64 {
        self.0.num_rows()
    }

    /// Column names and types, in column order.
    pub fn schema(&self) -> Vec<(String, DType)> {
        self.0.schema()
    }

    /// A frame of exactly these columns: `df.select([col("a"), (col("b") * 2).alias("b2")])`.
    pub fn select(&self, exprs: impl IntoIterator<Item = impl Borrow<Expr>>) -> Result<Frame> {
        with_handles(exprs, |handles| Ok(Frame(self.0.select(handles)?)))
    }

    /// This frame with columns added, or replaced where the names match.
    pub fn with_columns(
        &self,
        exprs: impl IntoIterator<Item = impl Borrow<Expr>>,
    ) -> Result<Frame> {
        with_handles(exprs, |handles| Ok(Frame(self.0.with_columns(handles)?)))
    }

    /// The rows where the boolean `predicate` is true.
    pub fn filter(&self, predicate: impl Borrow<Expr>) -> Result<Frame> {
        Ok(Frame(self.0.filter(predicate.borrow().handle())?))
    }

    /// One row per distinct combination of `keys`, with one column per aggregation.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// # fn run(df: Frame) -> Result<()> {
    /// let by_company = df.group_by(
    ///     ["company"],
    ///     [col("cpu").mean().alias("cpu_mean"), count().alias("n")],
    /// )?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_by(
        &self,
        keys: impl IntoIterator<Item = impl Into<String>>,
        aggs: impl IntoIterator<Item = impl Borrow<Expr>>,
    ) -> Result<Frame> {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        with_handles(aggs, |handles| Ok(Frame(self.0.group_by(&keys, handles)?)))
    }

    /// Rows ordered by the keys, the first key first: `df.sort([SortKey::desc("n"), "company".into()])`.
    pub fn sort(&self, by: impl IntoIterator<Item = impl Into<SortKey>>) -> Result<Frame> {
        let (columns, descending): (Vec<String>, Vec<bool>) = by
            .into_iter()
            .map(|key| {
                let key = key.into();
                (key.column, key.descending)
            })
            .unzip();
        Ok(Frame(self.0.sort(&columns, &descending)?))
    }

    /// The `k` rows with the largest values of `by`, largest first.
    pub fn top_k(&self, k: u32, by: &str) -> Result<Frame> {
        Ok(Frame(self.0.top_k(k, by, true)?))
    }

    /// The `k` rows with the smallest values of `by`, smallest first.
    pub fn bottom_k(&self, k: u32, by: &str) -> Result<Frame> {
        Ok(Frame(self.0.top_k(k, by, false)?))
    }

    /// At most `len` rows starting at row `offset`.
    pub fn slice(&self, offset: u64, len: u64) -> Frame {
        Frame(self.0.slice(offset, len))
    }

    /// Copies one column into the guest.
    pub fn column(&self, name: &str) -> Result<Vec<Scalar>> {
        Ok(self.0.column(name)?)
    }

    /// Copies the whole frame into the guest, one JSON object per line.
    pub fn to_json_lines(&self) -> Result<Vec<u8>> {
        Ok(self.0.to_json_lines()?)
    }

    /// Writes the frame to a sink named in the function's manifest.
    ///
    /// The written file becomes visible only when the handler returns `Ok`; if it fails or traps,
    /// the write is discarded with the rest of the batch.
    pub fn write(&self, sink: &str) -> Result<WriteStats> {
        Ok(self.0.write(sink)?)
    }
}

/// Lends the host handles of `exprs` to `call`, which the WIT signatures take as a borrowed list.
fn with_handles<T>(
    exprs: impl IntoIterator<Item = impl Borrow<Expr>>,
    call: impl FnOnce(&[&wit::Expr]) -> T,
) -> T {
    let exprs: Vec<_> = exprs.into_iter().collect();
    let handles: Vec<&wit::Expr> = exprs.iter().map(|expr| expr.borrow().handle()).collect();
    call(&handles)
}

/// One key of [`Frame::sort`]; a column name alone sorts ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SortKey {
    column: String,
    descending: bool,
}

impl SortKey {
    pub fn asc(column: impl Into<String>) -> Self {
        SortKey {
            column: column.into(),
            descending: false,
        }
    }

    pub fn desc(column: impl Into<String>) -> Self {
        SortKey {
            column: column.into(),
            descending: true,
        }
    }
}

impl From<&str> for SortKey {
    fn from(column: &str) -> Self {
        SortKey::asc(column)
    }
}

impl From<String> for SortKey {
    fn from(column: String) -> Self {
        SortKey::asc(column)
    }
}

//! [`Frame`]: an immutable table plus the backend that operates on it; its columns are in host
//! memory (Arrow) or, on the CUDA backend, in GPU memory until a copy-out asks for them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::backend::{Backend, SortKey};
use crate::cpu::CpuBackend;
use crate::cuda::DeviceFrame;
use crate::error::FrameError;
use crate::expr::{DType, Expr, Scalar};

/// An immutable table of columns with engine [`DType`]s, cheap to clone (Arc'd).
///
/// Every operation returns a new frame on the same backend.
#[derive(Clone, Debug)]
pub struct Frame {
    data: Data,
}

#[derive(Clone, Debug)]
enum Data {
    Host { batch: Arc<RecordBatch>, backend: Arc<dyn Backend> },
    /// Columns in GPU memory; operations run as CUDA kernels on the invocation's stream.
    Device(Arc<DeviceFrame>),
}

/// The engine dtype an Arrow type is converted to when a foreign batch enters the engine.
fn engine_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            DataType::Int64
        }
        DataType::Float16 | DataType::Float32 | DataType::Decimal128(..) | DataType::Decimal256(..) => DataType::Float64,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => DType::TimestampMs.to_arrow(),
        _ => DataType::Utf8,
    }
}

/// Casts columns of types the engine does not use to the nearest engine dtype, so that every
/// frame's schema is expressible in WIT `dtype`s. Columns that cannot be cast become nulls.
fn normalize(batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    if schema.fields().iter().all(|f| DType::from_arrow(f.data_type()).is_some()) {
        return batch;
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let column = if DType::from_arrow(f.data_type()).is_some() {
            c.clone()
        } else {
            let to = engine_type(f.data_type());
            cast(c, &to).unwrap_or_else(|e| {
                tracing::warn!(column = %f.name(), from = %f.data_type(), to = %to, error = %e, "column type not castable; replaced by nulls");
                new_null_array(&to, c.len())
            })
        };
        fields.push(Field::new(f.name(), column.data_type().clone(), true));
        columns.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
        .expect("same columns and row count, compatible types")
}

impl Frame {
    /// A frame on the CPU backend. Columns of Arrow types that are not engine dtypes are cast to
    /// the nearest one (int32 → int64, float32 → float64, other timestamps → timestamp-ms, ...).
    pub fn new(batch: RecordBatch) -> Frame {
        Frame::with_backend(batch, Arc::new(CpuBackend))
    }

    /// A frame whose operations run on `backend`; columns are normalized as in [`Frame::new`].
    pub fn with_backend(batch: RecordBatch, backend: Arc<dyn Backend>) -> Frame {
        Frame { data: Data::Host { batch: Arc::new(normalize(batch)), backend } }
    }

    /// A frame whose columns are in GPU memory.
    pub(crate) fn on_device(frame: Arc<DeviceFrame>) -> Frame {
        Frame { data: Data::Device(frame) }
    }

    pub fn is_on_device(&self) -> bool {
        matches!(self.data, Data::Device(_))
    }

    /// A result of `backend`, which stays on it.
    fn derive(backend: &Arc<dyn Backend>, result: RecordBatch) -> Frame {
        Frame { data: Data::Host { batch: Arc::new(result), backend: backend.clone() } }
    }

    /// The frame's columns in host memory; a device frame is copied out once, on first call.
    pub fn record_batch(&self) -> Result<&RecordBatch, FrameError> {
        match &self.data {
            Data::Host { batch, .. } => Ok(batch),
            Data::Device(d) => d.record_batch(),
        }
    }

    /// The same frame in host memory, on the CPU backend if it was on the GPU.
    pub fn to_host(&self) -> Result<Frame, FrameError> {
        match &self.data {
            Data::Host { .. } => Ok(self.clone()),
            Data::Device(d) => Ok(Frame::new(d.record_batch()?.clone())),
        }
    }

    pub fn num_rows(&self) -> usize {
        match &self.data {
            Data::Host { batch, .. } => batch.num_rows(),
            Data::Device(d) => d.num_rows(),
        }
    }

    /// Column names and dtypes, in column order.
    pub fn schema(&self) -> Vec<(String, DType)> {
        let batch = match &self.data {
            Data::Host { batch, .. } => batch,
            Data::Device(d) => return d.schema(),
        };
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), DType::from_arrow(f.data_type()).unwrap_or(DType::Utf8)))
            .collect()
    }

    /// Projection: one column per expression (`(col("a") + col("b")).alias("c")` computes).
    ///
    /// When every expression is an aggregation (`col("x").aggregate(Sum)`, `CountRows`), the
    /// result is one row aggregating the whole frame; mixing aggregations and row-wise
    /// expressions is an `InvalidArgument` error.
    pub fn select(&self, exprs: &[Expr]) -> Result<Frame, FrameError> {
        let aggregates = exprs.iter().filter(|e| e.contains_aggregate()).count();
        if aggregates > 0 {
            if aggregates != exprs.len() {
                return Err(FrameError::InvalidArgument(
                    "select mixes aggregations and row-wise expressions; use group_by for per-group values".into(),
                ));
            }
            return self.group_by(&[], exprs);
        }
        self.project(exprs)
    }

    fn project(&self, exprs: &[Expr]) -> Result<Frame, FrameError> {
        match &self.data {
            Data::Host { batch, backend } => Ok(Frame::derive(backend, backend.project(batch, exprs)?)),
            Data::Device(d) => d.project(exprs),
        }
    }

    /// Adds columns, or replaces (in place) those whose name equals an expression's output name.
    pub fn with_columns(&self, exprs: &[Expr]) -> Result<Frame, FrameError> {
        let mut plan: Vec<Expr> = self.schema().into_iter().map(|(name, _)| Expr::col(name)).collect();
        for e in exprs {
            let name = e.output_name();
            let e = e.clone().alias(name.clone());
            match plan.iter().position(|p| p.output_name() == name) {
                Some(i) => plan[i] = e,
                None => plan.push(e),
            }
        }
        self.project(&plan)
    }

    /// Rows where `predicate` is true. The predicate must be boolean (else `TypeMismatch`);
    /// rows where it is null are dropped.
    pub fn filter(&self, predicate: &Expr) -> Result<Frame, FrameError> {
        match &self.data {
            Data::Host { batch, backend } => Ok(Frame::derive(backend, backend.filter(batch, predicate)?)),
            Data::Device(d) => d.filter(predicate),
        }
    }

    /// Groups by `keys` (utf8, int64, boolean, timestamp or float64 columns; null keys form a
    /// group) and computes `aggs`, each an `Aggregate(..)` or `CountRows`, possibly aliased.
    /// Output: the keys, then the aggregations; groups in order of first appearance.
    pub fn group_by(&self, keys: &[String], aggs: &[Expr]) -> Result<Frame, FrameError> {
        match &self.data {
            Data::Host { batch, backend } => Ok(Frame::derive(backend, backend.group_by(batch, keys, aggs)?)),
            Data::Device(d) => d.group_by(keys, aggs),
        }
    }

    /// Stable sort by several columns; `descending[i]` applies to `by[i]`. Nulls sort last.
    pub fn sort(&self, by: &[String], descending: &[bool]) -> Result<Frame, FrameError> {
        if by.len() != descending.len() {
            return Err(FrameError::InvalidArgument(format!(
                "sort got {} columns but {} descending flags",
                by.len(),
                descending.len()
            )));
        }
        if by.is_empty() {
            return Ok(self.clone());
        }
        let keys: Vec<SortKey> = by.iter().zip(descending).map(|(c, d)| SortKey { column: c.clone(), descending: *d }).collect();
        self.sort_by(&keys, None)
    }

    fn sort_by(&self, keys: &[SortKey], limit: Option<usize>) -> Result<Frame, FrameError> {
        match &self.data {
            Data::Host { batch, backend } => Ok(Frame::derive(backend, backend.sort(batch, keys, limit)?)),
            Data::Device(d) => d.sort(keys, limit),
        }
    }

    /// The first `k` rows in order of `by` (ties keep frame order, nulls last).
    pub fn top_k(&self, k: usize, by: &str, descending: bool) -> Result<Frame, FrameError> {
        let keys = [SortKey { column: by.to_string(), descending }];
        self.sort_by(&keys, Some(k))
    }

    /// Rows `offset..offset + len`, clamped to the frame (zero-copy).
    pub fn slice(&self, offset: usize, len: usize) -> Frame {
        let offset = offset.min(self.num_rows());
        let len = len.min(self.num_rows() - offset);
        match &self.data {
            Data::Host { batch, backend } => Frame::derive(backend, batch.slice(offset, len)),
            Data::Device(d) => Frame::on_device(Arc::new(d.slice(offset, len))),
        }
    }

    /// Concatenates frames with identical column names and dtypes, on the first frame's backend
    /// (on the GPU when every frame is there).
    pub fn concat(frames: &[&Frame]) -> Result<Frame, FrameError> {
        let Some(first) = frames.first() else {
            return Err(FrameError::InvalidArgument("concat needs at least one frame".into()));
        };
        let expected = first.schema();
        for (i, f) in frames.iter().enumerate().skip(1) {
            let got = f.schema();
            if got != expected {
                let render = |s: &[(String, DType)]| s.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", ");
                let detail = match expected.iter().zip(&got).position(|(a, b)| a != b) {
                    Some(p) => format!("column {p} is `{}: {}` in frame 0 but `{}: {}` in frame {i}", expected[p].0, expected[p].1, got[p].0, got[p].1),
                    None => format!("frame 0 has {} columns, frame {i} has {}", expected.len(), got.len()),
                };
                return Err(FrameError::InvalidArgument(format!(
                    "concat needs equal schemas: {detail} (frame 0: [{}]; frame {i}: [{}])",
                    render(&expected),
                    render(&got)
                )));
            }
        }
        let on_device: Vec<&Arc<DeviceFrame>> = frames
            .iter()
            .filter_map(|f| match &f.data {
                Data::Device(d) => Some(d),
                Data::Host { .. } => None,
            })
            .collect();
        if on_device.len() == frames.len() {
            return DeviceFrame::concat(&on_device);
        }
        let batches: Vec<&RecordBatch> = frames.iter().map(|f| f.record_batch()).collect::<Result<_, _>>()?;
        let backend = match &first.data {
            Data::Host { backend, .. } => backend.clone(),
            Data::Device(_) => Arc::new(CpuBackend),
        };
        Ok(Frame::derive(&backend, backend.concat(&batches)?))
    }

    /// Copies one column out as scalars (timestamps as their epoch milliseconds).
    pub fn column(&self, name: &str) -> Result<Vec<Scalar>, FrameError> {
        let batch = self.record_batch()?;
        let schema = batch.schema();
        let idx = schema.index_of(name).map_err(|_| FrameError::column_not_found(name, &schema))?;
        let a = batch.column(idx);
        Ok((0..a.len()).map(|i| scalar_at(a, i)).collect())
    }

    /// One JSON object per row (newline-terminated); keys are column names, nulls are `null`,
    /// timestamps are epoch-millisecond integers, non-finite floats are `null`.
    pub fn to_json_lines(&self) -> Result<Vec<u8>, FrameError> {
        let batch = self.record_batch()?;
        let schema = batch.schema();
        let keys: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| serde_json::to_string(f.name()).expect("strings serialize"))
            .collect();
        let mut out = Vec::with_capacity(self.num_rows() * 16 * keys.len().max(1));
        let columns = batch.columns();
        for row in 0..self.num_rows() {
            out.push(b'{');
            for (i, (key, col)) in keys.iter().zip(columns).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key.as_bytes());
                out.push(b':');
                write_json_value(&mut out, col, row)?;
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(out)
    }
}

fn write_json_value(out: &mut Vec<u8>, a: &ArrayRef, i: usize) -> Result<(), FrameError> {
    if a.is_null(i) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let json = |e: serde_json::Error| FrameError::InvalidArgument(format!("cannot render JSON: {e}"));
    match a.data_type() {
        DataType::Boolean => out.extend_from_slice(if a.as_boolean().value(i) { b"true" } else { b"false" }),
        DataType::Int64 => out.extend_from_slice(a.as_primitive::<Int64Type>().value(i).to_string().as_bytes()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            out.extend_from_slice(a.as_primitive::<TimestampMillisecondType>().value(i).to_string().as_bytes())
        }
        DataType::Float64 => serde_json::to_writer(&mut *out, &a.as_primitive::<Float64Type>().value(i)).map_err(json)?,
        DataType::Utf8 => serde_json::to_writer(&mut *out, a.as_string::<i32>().value(i)).map_err(json)?,
        _ => out.extend_from_slice(b"null"),
    }
    Ok(())
}

fn scalar_at(a: &ArrayRef, i: usize) -> Scalar {
    if a.is_null(i) {
        return Scalar::Null;
    }
    match a.data_type() {
        DataType::Boolean => Scalar::Boolean(a.as_boolean().value(i)),
        DataType::Int64 => Scalar::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Scalar::Int(a.as_primitive::<TimestampMillisecondType>().value(i)),
        DataType::Float64 => Scalar::Float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Scalar::Text(a.as_string::<i32>().value(i).to_string()),
        _ => Scalar::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{AggFn, BinaryOp};
    use arrow::array::{BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};

    fn frame() -> Frame {
        Frame::new(
            RecordBatch::try_from_iter(vec![
                ("name", Arc::new(StringArray::from(vec![Some("a"), Some("b"), None, Some("d"), Some("e")])) as ArrayRef),
                ("x", Arc::new(Int64Array::from(vec![Some(3), None, Some(1), Some(3), Some(2)])) as ArrayRef),
                ("y", Arc::new(Float64Array::from(vec![Some(0.5), Some(1.5), Some(2.5), None, Some(f64::NAN)])) as ArrayRef),
                ("ok", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(true)])) as ArrayRef),
                ("ts", Arc::new(TimestampMillisecondArray::from(vec![1, 2, 3, 4, 5])) as ArrayRef),
            ])
            .unwrap(),
        )
    }

    fn col(n: &str) -> Expr {
        Expr::col(n)
    }

    #[test]
    fn schema_and_normalization() {
        let f = frame();
        assert_eq!(
            f.schema(),
            vec![
                ("name".into(), DType::Utf8),
                ("x".into(), DType::Int64),
                ("y".into(), DType::Float64),
                ("ok".into(), DType::Boolean),
                ("ts".into(), DType::TimestampMs)
            ]
        );
        let f = Frame::new(RecordBatch::try_from_iter(vec![("i", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)]).unwrap());
        assert_eq!(f.schema(), vec![("i".into(), DType::Int64)]);
        assert_eq!(f.column("i").unwrap(), vec![Scalar::Int(1), Scalar::Int(2)]);
    }

    #[test]
    fn select_computes_and_aliases() {
        let f = frame().select(&[col("name"), col("x").binary(BinaryOp::Add, col("y")).alias("z")]).unwrap();
        assert_eq!(f.schema(), vec![("name".into(), DType::Utf8), ("z".into(), DType::Float64)]);
        assert_eq!(f.column("z").unwrap()[0], Scalar::Float(3.5));
        assert_eq!(f.column("z").unwrap()[1], Scalar::Null);
        let err = frame().select(&[col("x"), col("x")]).unwrap_err();
        assert!(err.to_string().contains("duplicate output column `x`"), "{err}");
    }

    #[test]
    fn select_of_aggregates_is_one_row() {
        let f = frame().select(&[col("x").aggregate(AggFn::Sum), Expr::CountRows.alias("n")]).unwrap();
        assert_eq!(f.num_rows(), 1);
        assert_eq!(f.column("x_sum").unwrap(), vec![Scalar::Int(9)]);
        assert_eq!(f.column("n").unwrap(), vec![Scalar::Int(5)]);
        let err = frame().select(&[col("x"), col("x").aggregate(AggFn::Sum)]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
    }

    #[test]
    fn with_columns_adds_and_replaces_in_place() {
        let f = frame()
            .with_columns(&[col("x").binary(BinaryOp::Mul, Expr::lit(Scalar::Int(10))).alias("x"), col("x").is_null().alias("x_missing")])
            .unwrap();
        let names: Vec<_> = f.schema().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["name", "x", "y", "ok", "ts", "x_missing"]);
        assert_eq!(f.column("x").unwrap()[0], Scalar::Int(30));
        assert_eq!(f.column("x_missing").unwrap()[1], Scalar::Boolean(true));
    }

    #[test]
    fn filter_drops_nulls_and_requires_boolean() {
        let f = frame().filter(&col("ok")).unwrap();
        assert_eq!(f.column("name").unwrap(), vec![Scalar::Text("a".into()), Scalar::Text("d".into()), Scalar::Text("e".into())]);
        let f = frame().filter(&col("x").binary(BinaryOp::GtEq, Expr::lit(Scalar::Float(2.5)))).unwrap();
        assert_eq!(f.num_rows(), 2);
        let err = frame().filter(&col("x")).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::TypeMismatch);
        assert!(err.to_string().contains("must be boolean, found int64"), "{err}");
        let err = frame().filter(&col("missing")).unwrap_err();
        assert!(err.to_string().contains("available columns: [name, x, y, ok, ts]"), "{err}");
    }

    #[test]
    fn sort_is_stable_with_nulls_last() {
        let f = frame().sort(&["x".into()], &[true]).unwrap();
        let names = f.column("name").unwrap();
        assert_eq!(names, vec![Scalar::Text("a".into()), Scalar::Text("d".into()), Scalar::Text("e".into()), Scalar::Null, Scalar::Text("b".into())]);
        let f = frame().sort(&["x".into()], &[false]).unwrap();
        assert_eq!(f.column("x").unwrap(), vec![Scalar::Int(1), Scalar::Int(2), Scalar::Int(3), Scalar::Int(3), Scalar::Null]);
        assert_eq!(f.column("name").unwrap()[2..4], [Scalar::Text("a".into()), Scalar::Text("d".into())]);
        let f = frame().sort(&["ok".into(), "name".into()], &[false, true]).unwrap();
        assert_eq!(f.column("name").unwrap()[..2], [Scalar::Text("b".into()), Scalar::Text("e".into())]);
        assert!(frame().sort(&["x".into()], &[]).is_err());
        assert_eq!(frame().sort(&["nope".into()], &[true]).unwrap_err().code(), crate::ErrorCode::ColumnNotFound);
    }

    #[test]
    fn top_k_keeps_first_k_with_nulls_last() {
        let f = frame().top_k(2, "y", true).unwrap();
        // NaN is the largest float in Arrow's total order.
        assert_eq!(f.column("name").unwrap(), vec![Scalar::Text("e".into()), Scalar::Null]);
        let f = frame().top_k(10, "y", false).unwrap();
        assert_eq!(f.num_rows(), 5);
        assert_eq!(f.column("y").unwrap()[4], Scalar::Null);
    }

    #[test]
    fn slice_clamps() {
        assert_eq!(frame().slice(3, 100).num_rows(), 2);
        assert_eq!(frame().slice(100, 1).num_rows(), 0);
    }

    #[test]
    fn concat_checks_schemas() {
        let f = frame();
        let both = Frame::concat(&[&f, &f.slice(0, 2)]).unwrap();
        assert_eq!(both.num_rows(), 7);
        let other = f.select(&[col("name"), col("y").alias("x")]).unwrap();
        let err = Frame::concat(&[&f.select(&[col("name"), col("x")]).unwrap(), &other]).unwrap_err();
        assert!(err.to_string().contains("column 1 is `x: int64` in frame 0 but `x: float64` in frame 1"), "{err}");
        assert_eq!(Frame::concat(&[]).unwrap_err().code(), crate::ErrorCode::InvalidArgument);
    }

    #[test]
    fn json_lines_output() {
        let out = frame().slice(0, 2).to_json_lines().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"name\":\"a\",\"x\":3,\"y\":0.5,\"ok\":true,\"ts\":1}\n{\"name\":\"b\",\"x\":null,\"y\":1.5,\"ok\":false,\"ts\":2}\n"
        );
        let nan = frame().slice(4, 1).select(&[col("y")]).unwrap().to_json_lines().unwrap();
        assert_eq!(nan, b"{\"y\":null}\n");
    }
}

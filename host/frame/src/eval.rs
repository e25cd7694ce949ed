//! CPU evaluation of scalar (row-wise) expressions with Arrow kernels.
//!
//! Literals stay length-1 Arrow scalars (`Datum`) so that `col * 2` does not materialize a
//! column of twos. Type rules are the engine's, not Arrow's, and are checked here so errors
//! name the operation and the operands:
//! - `int op float` computes in float64; `int / int` is float64 division; integer `/` and `%`
//!   by zero give null (float division follows IEEE: inf or NaN).
//! - timestamps take part in arithmetic and comparisons as int64 milliseconds.
//! - a null literal adopts the type of the other operand.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, Scalar as ArrowScalar, StringArray, UInt32Array, new_null_array};
use arrow::compute::kernels::{boolean, cmp, numeric, zip::zip};
use arrow::compute::{CastOptions, cast, cast_with_options, is_not_null, is_null, nullif, take};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::error::FrameError;
use crate::expr::{BinaryOp, DType, Expr, Scalar};

/// A column or a length-1 value broadcast over all rows.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Value {
    fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    fn data_type(&self) -> &DataType {
        self.array().data_type()
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    fn map(&self, f: impl FnOnce(&ArrayRef) -> Result<ArrayRef, FrameError>) -> Result<Value, FrameError> {
        Ok(match self {
            Value::Array(a) => Value::Array(f(a)?),
            Value::Scalar(a) => Value::Scalar(f(a)?),
        })
    }

    fn datum(&self) -> Box<dyn arrow::array::Datum + '_> {
        match self {
            Value::Array(a) => Box::new(a),
            Value::Scalar(a) => Box::new(ArrowScalar::new(a)),
        }
    }

    /// The value as a column of `rows` values.
    pub(crate) fn into_array(self, rows: usize) -> Result<ArrayRef, FrameError> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(a) => {
                let idx = UInt32Array::from(vec![0u32; rows]);
                Ok(take(&a, &idx, None)?)
            }
        }
    }
}

/// Evaluates a non-aggregate expression to a column of `batch.num_rows()` values.
pub fn evaluate(batch: &RecordBatch, expr: &Expr) -> Result<ArrayRef, FrameError> {
    eval(batch, expr)?.into_array(batch.num_rows())
}

/// Builds the length-1 Arrow array holding `v`.
pub(crate) fn scalar_array(v: &Scalar) -> ArrayRef {
    match v {
        Scalar::Null => new_null_array(&DataType::Null, 1),
        Scalar::Boolean(b) => Arc::new(BooleanArray::from(vec![*b])),
        Scalar::Int(i) => Arc::new(Int64Array::from(vec![*i])),
        Scalar::Float(x) => Arc::new(arrow::array::Float64Array::from(vec![*x])),
        Scalar::Text(s) => Arc::new(StringArray::from(vec![s.as_str()])),
    }
}

pub(crate) fn type_name(dt: &DataType) -> String {
    match DType::from_arrow(dt) {
        Some(d) => d.name().to_string(),
        None if *dt == DataType::Null => "null".to_string(),
        None => dt.to_string(),
    }
}

/// "utf8 `company`", "float64 literal", "int64 expression `a + b`": how operands are named in errors.
fn describe(expr: &Expr, dt: &DataType) -> String {
    let ty = type_name(dt);
    match expr {
        Expr::Column(name) => format!("{ty} `{name}`"),
        Expr::Alias(inner, _) => describe(inner, dt),
        Expr::Literal(_) => format!("{ty} literal"),
        other => format!("{ty} expression `{other}`"),
    }
}

pub(crate) fn eval(batch: &RecordBatch, expr: &Expr) -> Result<Value, FrameError> {
    match expr {
        Expr::Column(name) => batch
            .schema()
            .index_of(name)
            .map(|i| Value::Array(batch.column(i).clone()))
            .map_err(|_| FrameError::column_not_found(name, &batch.schema())),
        Expr::Literal(v) => Ok(Value::Scalar(scalar_array(v))),
        Expr::Alias(inner, _) => eval(batch, inner),
        Expr::CountRows | Expr::Aggregate(..) => Err(FrameError::InvalidArgument(format!(
            "aggregate `{expr}` is only allowed as an aggregation of group_by or select"
        ))),
        Expr::Not(inner) => {
            let v = eval(batch, inner)?;
            let v = coerce_null(v, &DataType::Boolean)?;
            if v.data_type() != &DataType::Boolean {
                return Err(FrameError::TypeMismatch(format!(
                    "cannot apply `not` to {}",
                    describe(inner, v.data_type())
                )));
            }
            v.map(|a| Ok(Arc::new(boolean::not(a.as_any().downcast_ref::<BooleanArray>().expect("checked boolean"))?)))
        }
        Expr::IsNull(inner) => eval(batch, inner)?.map(|a| Ok(Arc::new(is_null(a)?))),
        Expr::FillNull(inner, fill) => fill_null(batch, inner, fill),
        Expr::Cast(inner, to) => {
            let v = eval(batch, inner)?;
            let target = to.to_arrow();
            let options = CastOptions { safe: false, ..Default::default() };
            v.map(|a| {
                cast_with_options(a, &target, &options).map_err(|e| {
                    FrameError::Conversion(format!("cannot cast {} to {to}: {e}", describe(inner, a.data_type())))
                })
            })
        }
        Expr::Binary { op, lhs, rhs } => {
            let l = eval(batch, lhs)?;
            let r = eval(batch, rhs)?;
            binary(*op, (lhs, l), (rhs, r))
        }
    }
}

/// Gives an all-null value (a `null` literal) the type `to`.
fn coerce_null(v: Value, to: &DataType) -> Result<Value, FrameError> {
    if v.data_type() == &DataType::Null { v.map(|a| Ok(cast(a, to)?)) } else { Ok(v) }
}

fn fill_null(batch: &RecordBatch, inner: &Expr, fill: &Scalar) -> Result<Value, FrameError> {
    let v = eval(batch, inner)?;
    if matches!(fill, Scalar::Null) {
        return Ok(v);
    }
    let fill_array = scalar_array(fill);
    let target = v.data_type().clone();
    if target == DataType::Null {
        return Ok(Value::Scalar(fill_array));
    }
    let compatible = fill_array.data_type() == &target
        || matches!(
            (fill_array.data_type(), &target),
            (DataType::Int64, DataType::Float64) | (DataType::Int64, DataType::Timestamp(..))
        );
    if !compatible {
        return Err(FrameError::TypeMismatch(format!(
            "cannot fill nulls of {} with {} literal",
            describe(inner, &target),
            type_name(fill_array.data_type())
        )));
    }
    let fill_array = cast(&fill_array, &target)?;
    let fill_value = ArrowScalar::new(fill_array.clone());
    match v {
        Value::Scalar(a) => Ok(Value::Scalar(if a.is_null(0) { fill_array } else { a })),
        Value::Array(a) => {
            if a.null_count() == 0 {
                return Ok(Value::Array(a));
            }
            let mask = is_not_null(&a)?;
            Ok(Value::Array(zip(&mask, &a, &fill_value)?))
        }
    }
}

fn is_numeric(dt: &DataType) -> bool {
    matches!(dt, DataType::Int64 | DataType::Float64 | DataType::Timestamp(..))
}

fn binary(op: BinaryOp, (lexpr, l): (&Expr, Value), (rexpr, r): (&Expr, Value)) -> Result<Value, FrameError> {
    let mismatch = |l: &Value, r: &Value| {
        FrameError::TypeMismatch(format!(
            "cannot apply `{}` to {} and {}",
            op.symbol(),
            describe(lexpr, l.data_type()),
            describe(rexpr, r.data_type())
        ))
    };
    // A null operand takes the other side's type; two nulls are treated as booleans/ints.
    let (l, r) = match (l.data_type() == &DataType::Null, r.data_type() == &DataType::Null) {
        (true, false) => (coerce_null(l, &r.data_type().clone())?, r),
        (false, true) => {
            let t = l.data_type().clone();
            (l, coerce_null(r, &t)?)
        }
        (true, true) => {
            let t = if matches!(op, BinaryOp::And | BinaryOp::Or) { DataType::Boolean } else { DataType::Int64 };
            (coerce_null(l, &t)?, coerce_null(r, &t)?)
        }
        (false, false) => (l, r),
    };
    let scalar = l.is_scalar() && r.is_scalar();
    let wrap = |a: ArrayRef| if scalar { Value::Scalar(a) } else { Value::Array(a) };

    if matches!(op, BinaryOp::And | BinaryOp::Or) {
        if l.data_type() != &DataType::Boolean || r.data_type() != &DataType::Boolean {
            return Err(mismatch(&l, &r));
        }
        let rows = l.array().len().max(r.array().len());
        let la = l.into_array(rows)?;
        let ra = r.into_array(rows)?;
        let lb = la.as_any().downcast_ref::<BooleanArray>().expect("checked boolean");
        let rb = ra.as_any().downcast_ref::<BooleanArray>().expect("checked boolean");
        let out = if op == BinaryOp::And { boolean::and_kleene(lb, rb)? } else { boolean::or_kleene(lb, rb)? };
        return Ok(wrap(Arc::new(out)));
    }

    if op.is_comparison() {
        let (l, r) = match (l.data_type().clone(), r.data_type().clone()) {
            (a, b) if a == b && matches!(a, DataType::Utf8 | DataType::Boolean | DataType::Int64 | DataType::Float64 | DataType::Timestamp(..)) => (l, r),
            (a, b) if is_numeric(&a) && is_numeric(&b) => numeric_common(l, r)?,
            _ => return Err(mismatch(&l, &r)),
        };
        let (ld, rd) = (l.datum(), r.datum());
        let out = match op {
            BinaryOp::Eq => cmp::eq(&*ld, &*rd)?,
            BinaryOp::NotEq => cmp::neq(&*ld, &*rd)?,
            BinaryOp::Lt => cmp::lt(&*ld, &*rd)?,
            BinaryOp::LtEq => cmp::lt_eq(&*ld, &*rd)?,
            BinaryOp::Gt => cmp::gt(&*ld, &*rd)?,
            _ => cmp::gt_eq(&*ld, &*rd)?,
        };
        return Ok(wrap(Arc::new(out)));
    }

    debug_assert!(op.is_arithmetic());
    if !is_numeric(l.data_type()) || !is_numeric(r.data_type()) {
        return Err(mismatch(&l, &r));
    }
    let (mut l, mut r) = numeric_common(l, r)?;
    let ints = l.data_type() == &DataType::Int64;
    if ints && matches!(op, BinaryOp::Div | BinaryOp::Rem) {
        // Integer division by zero is null rather than an error or a panic.
        r = null_where_zero(r)?;
        if op == BinaryOp::Div {
            l = l.map(|a| Ok(cast(a, &DataType::Float64)?))?;
            r = r.map(|a| Ok(cast(a, &DataType::Float64)?))?;
        }
    }
    let (ld, rd) = (l.datum(), r.datum());
    let out = match op {
        BinaryOp::Add => numeric::add(&*ld, &*rd),
        BinaryOp::Sub => numeric::sub(&*ld, &*rd),
        BinaryOp::Mul => numeric::mul(&*ld, &*rd),
        BinaryOp::Div => numeric::div(&*ld, &*rd),
        _ => numeric::rem(&*ld, &*rd),
    }
    .map_err(|e| FrameError::InvalidArgument(format!("`{lexpr} {} {rexpr}`: {e}", op.symbol())))?;
    Ok(wrap(out))
}

/// Brings two numeric operands to one type: int64 (timestamps as their milliseconds) or float64.
fn numeric_common(l: Value, r: Value) -> Result<(Value, Value), FrameError> {
    let float = l.data_type() == &DataType::Float64 || r.data_type() == &DataType::Float64;
    let target = if float { DataType::Float64 } else { DataType::Int64 };
    let to = |v: Value| -> Result<Value, FrameError> {
        if v.data_type() == &target { Ok(v) } else { v.map(|a| Ok(cast(a, &target)?)) }
    };
    Ok((to(l)?, to(r)?))
}

fn null_where_zero(v: Value) -> Result<Value, FrameError> {
    v.map(|a| {
        let zero = ArrowScalar::new(Int64Array::from(vec![0i64]));
        let mask = cmp::eq(a, &zero)?;
        if mask.true_count() == 0 { Ok(a.clone()) } else { Ok(nullif(a, &mask)?) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("t", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(7), Some(0), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-2.0)])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
                Arc::new(TimestampMillisecondArray::from(vec![1000, 2000, 3000])),
            ],
        )
        .unwrap()
    }

    fn col(n: &str) -> Expr {
        Expr::col(n)
    }
    fn int(i: i64) -> Expr {
        Expr::lit(Scalar::Int(i))
    }

    fn f64s(a: &ArrayRef) -> Vec<Option<f64>> {
        a.as_any().downcast_ref::<Float64Array>().unwrap().iter().collect()
    }
    fn i64s(a: &ArrayRef) -> Vec<Option<i64>> {
        a.as_any().downcast_ref::<Int64Array>().unwrap().iter().collect()
    }
    fn bools(a: &ArrayRef) -> Vec<Option<bool>> {
        a.as_any().downcast_ref::<BooleanArray>().unwrap().iter().collect()
    }

    #[test]
    fn int_plus_float_is_float() {
        let out = evaluate(&batch(), &col("i").binary(BinaryOp::Add, col("f"))).unwrap();
        assert_eq!(f64s(&out), vec![Some(8.5), None, None]);
    }

    #[test]
    fn int_division_is_float_and_zero_divisor_is_null() {
        let out = evaluate(&batch(), &int(14).binary(BinaryOp::Div, col("i"))).unwrap();
        assert_eq!(f64s(&out), vec![Some(2.0), None, None]);
        let out = evaluate(&batch(), &int(15).binary(BinaryOp::Rem, col("i"))).unwrap();
        assert_eq!(i64s(&out), vec![Some(1), None, None]);
        let out = evaluate(&batch(), &col("i").binary(BinaryOp::Rem, int(0))).unwrap();
        assert_eq!(i64s(&out), vec![None, None, None]);
    }

    #[test]
    fn scalar_only_expression_broadcasts() {
        let out = evaluate(&batch(), &int(2).binary(BinaryOp::Mul, int(3))).unwrap();
        assert_eq!(i64s(&out), vec![Some(6); 3]);
    }

    #[test]
    fn comparisons_coerce_numbers_and_compare_strings() {
        let out = evaluate(&batch(), &col("f").binary(BinaryOp::Gt, int(0))).unwrap();
        assert_eq!(bools(&out), vec![Some(true), None, Some(false)]);
        let out = evaluate(&batch(), &col("s").binary(BinaryOp::Eq, Expr::lit(Scalar::Text("y".into())))).unwrap();
        assert_eq!(bools(&out), vec![Some(false), Some(true), None]);
        let out = evaluate(&batch(), &col("t").binary(BinaryOp::GtEq, int(2000))).unwrap();
        assert_eq!(bools(&out), vec![Some(false), Some(true), Some(true)]);
    }

    #[test]
    fn boolean_logic_is_kleene() {
        let e = col("b").binary(BinaryOp::Or, Expr::lit(Scalar::Boolean(true)));
        assert_eq!(bools(&evaluate(&batch(), &e).unwrap()), vec![Some(true); 3]);
        let e = col("b").not();
        assert_eq!(bools(&evaluate(&batch(), &e).unwrap()), vec![Some(false), None, Some(true)]);
    }

    #[test]
    fn type_mismatch_names_operation_and_operands() {
        let err = evaluate(&batch(), &col("s").binary(BinaryOp::Add, Expr::lit(Scalar::Float(1.0)))).unwrap_err();
        assert_eq!(err.to_string(), "type mismatch: cannot apply `+` to utf8 `s` and float64 literal");
        let err = evaluate(&batch(), &col("i").binary(BinaryOp::And, col("b"))).unwrap_err();
        assert!(err.to_string().contains("`and` to int64 `i` and boolean `b`"), "{err}");
        let err = evaluate(&batch(), &col("s").not()).unwrap_err();
        assert!(err.to_string().contains("cannot apply `not` to utf8 `s`"), "{err}");
    }

    #[test]
    fn missing_column_lists_available() {
        let err = evaluate(&batch(), &col("nope")).unwrap_err();
        assert_eq!(err.to_string(), "column `nope` not found; available columns: [i, f, s, b, t]");
    }

    #[test]
    fn is_null_and_fill_null() {
        assert_eq!(bools(&evaluate(&batch(), &col("i").is_null()).unwrap()), vec![Some(false), Some(false), Some(true)]);
        assert_eq!(f64s(&evaluate(&batch(), &col("f").fill_null(Scalar::Int(9))).unwrap()), vec![Some(1.5), Some(9.0), Some(-2.0)]);
        let err = evaluate(&batch(), &col("s").fill_null(Scalar::Int(1))).unwrap_err();
        assert!(err.to_string().contains("cannot fill nulls of utf8 `s` with int64 literal"), "{err}");
    }

    #[test]
    fn casts_and_cast_failures() {
        let out = evaluate(&batch(), &col("i").cast(DType::Utf8)).unwrap();
        let s: Vec<_> = out.as_any().downcast_ref::<StringArray>().unwrap().iter().collect();
        assert_eq!(s, vec![Some("7"), Some("0"), None]);
        let err = evaluate(&batch(), &col("s").cast(DType::Int64)).unwrap_err();
        assert!(err.to_string().contains("cannot cast utf8 `s` to int64"), "{err}");
    }

    #[test]
    fn aggregates_are_rejected_in_row_context() {
        let err = evaluate(&batch(), &Expr::CountRows).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
    }
}

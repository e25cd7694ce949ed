//! The logical expression language: what a guest asks for, independent of where it runs.
//!
//! Expressions are plain data (like DataFusion's `Expr` or Polars' `Expr`); a [`Backend`]
//! evaluates them. Keeping them apart lets the CUDA backend compile the same tree to kernels.
//!
//! [`Backend`]: crate::Backend

use std::fmt;

use arrow::datatypes::{DataType, TimeUnit};

/// One cell value; mirrors the WIT `scalar` variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Null,
    Boolean(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Boolean(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x:?}"),
            Scalar::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// Column types the engine stores natively; mirrors the WIT `dtype` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Boolean,
    Int64,
    Float64,
    Utf8,
    /// Milliseconds since the Unix epoch, no time zone (Arrow `Timestamp(Millisecond, None)`).
    TimestampMs,
}

impl DType {
    /// The Arrow type a column of this dtype is stored as.
    pub fn to_arrow(self) -> DataType {
        match self {
            DType::Boolean => DataType::Boolean,
            DType::Int64 => DataType::Int64,
            DType::Float64 => DataType::Float64,
            DType::Utf8 => DataType::Utf8,
            DType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    /// The dtype stored as exactly `dt`, or `None` for Arrow types the engine does not use.
    pub fn from_arrow(dt: &DataType) -> Option<DType> {
        Some(match dt {
            DataType::Boolean => DType::Boolean,
            DataType::Int64 => DType::Int64,
            DataType::Float64 => DType::Float64,
            DataType::Utf8 => DType::Utf8,
            DataType::Timestamp(TimeUnit::Millisecond, None) => DType::TimestampMs,
            _ => return None,
        })
    }

    /// Lower-case name used in error messages, matching the WIT spelling.
    pub fn name(self) -> &'static str {
        match self {
            DType::Boolean => "boolean",
            DType::Int64 => "int64",
            DType::Float64 => "float64",
            DType::Utf8 => "utf8",
            DType::TimestampMs => "timestamp-ms",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Binary operators; mirrors the WIT `binary-op` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl BinaryOp {
    /// The operator's symbol, as used in error messages and generated column names.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Eq => "==",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    pub(crate) fn is_arithmetic(self) -> bool {
        matches!(self, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem)
    }

    pub(crate) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq
        )
    }
}

/// Aggregate functions; mirrors the WIT `agg` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    /// Number of non-null values.
    Count,
    /// Sum of non-null values (int64 stays int64); null for a group with no values.
    Sum,
    /// Arithmetic mean as float64; null for a group with no values.
    Mean,
    Min,
    Max,
    /// Value of the group's first row (may be null).
    First,
    /// Value of the group's last row (may be null).
    Last,
}

impl AggFn {
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Mean => "mean",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::First => "first",
            AggFn::Last => "last",
        }
    }
}

/// An expression over the columns of one frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(Scalar),
    /// Rows in the group (or frame); only meaningful as an aggregation.
    CountRows,
    Binary { op: BinaryOp, lhs: Box<Expr>, rhs: Box<Expr> },
    Not(Box<Expr>),
    IsNull(Box<Expr>),
    FillNull(Box<Expr>, Scalar),
    Cast(Box<Expr>, DType),
    Alias(Box<Expr>, String),
    Aggregate(Box<Expr>, AggFn),
}

impl Expr {
    pub fn col(name: impl Into<String>) -> Expr {
        Expr::Column(name.into())
    }

    pub fn lit(v: Scalar) -> Expr {
        Expr::Literal(v)
    }

    pub fn binary(self, op: BinaryOp, rhs: Expr) -> Expr {
        Expr::Binary { op, lhs: Box::new(self), rhs: Box::new(rhs) }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }

    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }

    pub fn fill_null(self, value: Scalar) -> Expr {
        Expr::FillNull(Box::new(self), value)
    }

    pub fn cast(self, to: DType) -> Expr {
        Expr::Cast(Box::new(self), to)
    }

    pub fn alias(self, name: impl Into<String>) -> Expr {
        Expr::Alias(Box::new(self), name.into())
    }

    pub fn aggregate(self, how: AggFn) -> Expr {
        Expr::Aggregate(Box::new(self), how)
    }

    /// The column name this expression produces in a result frame.
    ///
    /// An alias wins; a column keeps its name (also through `cast` and `fill_null`, as in
    /// Polars); an aggregate is `{input}_{fn}` (`cpu_mean` for `col("cpu").aggregate(Mean)`);
    /// `CountRows` is `count`; anything else is its rendering, e.g. `a + b`.
    pub fn output_name(&self) -> String {
        match self {
            Expr::Alias(_, name) => name.clone(),
            Expr::Column(name) => name.clone(),
            Expr::CountRows => "count".to_string(),
            Expr::Cast(inner, _) | Expr::FillNull(inner, _) => inner.output_name(),
            Expr::Aggregate(inner, how) => format!("{}_{}", inner.output_name(), how.name()),
            other => other.to_string(),
        }
    }

    /// Appends the names of the columns this expression reads to `out` (each once).
    pub(crate) fn columns_into(&self, out: &mut Vec<String>) {
        match self {
            Expr::Column(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Expr::Literal(_) | Expr::CountRows => {}
            Expr::Binary { lhs, rhs, .. } => {
                lhs.columns_into(out);
                rhs.columns_into(out);
            }
            Expr::Not(e) | Expr::IsNull(e) | Expr::FillNull(e, _) | Expr::Cast(e, _) | Expr::Alias(e, _) | Expr::Aggregate(e, _) => {
                e.columns_into(out)
            }
        }
    }

    /// True when the tree contains an aggregation (which only `group_by`/`select` may evaluate).
    pub(crate) fn contains_aggregate(&self) -> bool {
        match self {
            Expr::Aggregate(..) | Expr::CountRows => true,
            Expr::Column(_) | Expr::Literal(_) => false,
            Expr::Binary { lhs, rhs, .. } => lhs.contains_aggregate() || rhs.contains_aggregate(),
            Expr::Not(e) | Expr::IsNull(e) | Expr::FillNull(e, _) | Expr::Cast(e, _) | Expr::Alias(e, _) => {
                e.contains_aggregate()
            }
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(name) => f.write_str(name),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::CountRows => f.write_str("count()"),
            Expr::Binary { op, lhs, rhs } => {
                let wrap = |e: &Expr| matches!(e, Expr::Binary { .. });
                let l = if wrap(lhs) { format!("({lhs})") } else { lhs.to_string() };
                let r = if wrap(rhs) { format!("({rhs})") } else { rhs.to_string() };
                write!(f, "{l} {} {r}", op.symbol())
            }
            Expr::Not(e) => write!(f, "not({e})"),
            Expr::IsNull(e) => write!(f, "is_null({e})"),
            Expr::FillNull(e, v) => write!(f, "fill_null({e}, {v})"),
            Expr::Cast(e, to) => write!(f, "cast({e} as {to})"),
            Expr::Alias(e, name) => write!(f, "{e} as {name}"),
            Expr::Aggregate(e, how) => write!(f, "{}({e})", how.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        assert_eq!(Expr::col("cpu").aggregate(AggFn::Mean).output_name(), "cpu_mean");
        assert_eq!(Expr::col("cpu").aggregate(AggFn::Mean).alias("m").output_name(), "m");
        assert_eq!(Expr::col("latency").cast(DType::Int64).output_name(), "latency");
        assert_eq!(Expr::CountRows.output_name(), "count");
        let e = Expr::col("a").binary(BinaryOp::Add, Expr::col("b")).binary(BinaryOp::Mul, Expr::lit(Scalar::Int(2)));
        assert_eq!(e.output_name(), "(a + b) * 2");
        assert_eq!(Expr::col("s").binary(BinaryOp::Eq, Expr::lit(Scalar::Text("x".into()))).output_name(), "s == \"x\"");
    }

    #[test]
    fn dtype_round_trips_through_arrow() {
        for d in [DType::Boolean, DType::Int64, DType::Float64, DType::Utf8, DType::TimestampMs] {
            assert_eq!(DType::from_arrow(&d.to_arrow()), Some(d));
        }
        assert_eq!(DType::from_arrow(&DataType::Int32), None);
    }

    #[test]
    fn lists_read_columns_once() {
        let e = Expr::col("a").binary(BinaryOp::Add, Expr::col("b").cast(DType::Float64)).binary(BinaryOp::Mul, Expr::col("a"));
        let mut out = vec!["z".to_string()];
        e.aggregate(AggFn::Sum).alias("s").columns_into(&mut out);
        assert_eq!(out, ["z", "a", "b"]);
    }

    #[test]
    fn detects_aggregates() {
        assert!(Expr::col("a").aggregate(AggFn::Sum).alias("s").contains_aggregate());
        assert!(!Expr::col("a").is_null().contains_aggregate());
    }
}

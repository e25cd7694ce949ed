use std::ops;

use crate::bindings::sluice::function::dataframe::{self as wit, Agg, BinaryOp};
use crate::frame::DType;

pub use crate::bindings::sluice::function::types::Scalar;

/// A column expression, evaluated by the host's engine.
///
/// Build one with [`col`], [`lit`] or [`count`] and combine it like a Polars expression:
/// comparisons and logic with methods, arithmetic with `+ - * / %`, aggregations for
/// [`Frame::group_by`](crate::Frame::group_by). Plain values on the right-hand side are literals.
///
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// let busy = col("cpu_utilization").gt(90).and(col("company").neq("internal"));
/// let throughput_mb = (col("throughput") / 1_000_000.0).alias("throughput_mb");
/// let clean_latency = col("latency").fill_null(0.0).cast(DType::Float64);
/// let mean_cpu = col("cpu_utilization").mean().alias("cpu_mean");
/// ```
///
/// An `Expr` is a handle to a host resource: every node of the tree lives in the host, so building
/// an expression costs one host call per node and copies no data.
#[derive(Debug)]
#[must_use = "an expression does nothing until a frame method uses it"]
pub struct Expr(wit::Expr);

/// The column named `name`; nested JSON fields are reachable as `a.b`.
pub fn col(name: impl AsRef<str>) -> Expr {
    Expr(wit::Expr::col(name.as_ref()))
}

/// A constant: `lit(5)`, `lit(0.5)`, `lit(true)`, `lit("ok")`.
pub fn lit(value: impl Into<Scalar>) -> Expr {
    Expr(wit::Expr::lit(&value.into()))
}

/// The number of rows in the group; use it among the aggregations of
/// [`Frame::group_by`](crate::Frame::group_by).
pub fn count() -> Expr {
    Expr(wit::Expr::count_rows())
}

/// A value usable where an expression is expected: an [`Expr`], or a plain value taken as a
/// literal (so `col("x").gt(5)` compares with the number 5 and `col("x").eq("a")` with the
/// string "a").
pub trait IntoExpr {
    fn into_expr(self) -> Expr;
}

impl IntoExpr for Expr {
    fn into_expr(self) -> Expr {
        self
    }
}

impl<T: Into<Scalar>> IntoExpr for T {
    fn into_expr(self) -> Expr {
        lit(self)
    }
}

impl Expr {
    fn binary(&self, op: BinaryOp, rhs: impl IntoExpr) -> Expr {
        Expr(self.0.binary(op, &rhs.into_expr().0))
    }

    fn aggregate(&self, how: Agg) -> Expr {
        Expr(self.0.aggregate(how))
    }

    pub fn eq(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::Eq, rhs)
    }

    pub fn neq(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::Neq, rhs)
    }

    pub fn lt(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::Lt, rhs)
    }

    pub fn lt_eq(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::LtEq, rhs)
    }

    pub fn gt(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::Gt, rhs)
    }

    pub fn gt_eq(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::GtEq, rhs)
    }

    /// Logical and of two boolean expressions.
    pub fn and(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::And, rhs)
    }

    /// Logical or of two boolean expressions.
    pub fn or(&self, rhs: impl IntoExpr) -> Expr {
        self.binary(BinaryOp::Or, rhs)
    }

    /// Logical negation; `!expr` does the same.
    pub fn not(&self) -> Expr {
        Expr(self.0.not())
    }

    pub fn is_null(&self) -> Expr {
        Expr(self.0.is_null())
    }

    /// Replaces nulls with `value`.
    pub fn fill_null(&self, value: impl Into<Scalar>) -> Expr {
        Expr(self.0.fill_null(&value.into()))
    }

    pub fn cast(&self, to: DType) -> Expr {
        Expr(self.0.cast(to))
    }

    /// Names the resulting column.
    pub fn alias(&self, name: impl AsRef<str>) -> Expr {
        Expr(self.0.alias(name.as_ref()))
    }

    pub fn sum(&self) -> Expr {
        self.aggregate(Agg::Sum)
    }

    pub fn mean(&self) -> Expr {
        self.aggregate(Agg::Mean)
    }

    pub fn min(&self) -> Expr {
        self.aggregate(Agg::Min)
    }

    pub fn max(&self) -> Expr {
        self.aggregate(Agg::Max)
    }

    /// Number of non-null values; [`count()`] counts rows.
    pub fn count(&self) -> Expr {
        self.aggregate(Agg::Count)
    }

    pub fn first(&self) -> Expr {
        self.aggregate(Agg::First)
    }

    pub fn last(&self) -> Expr {
        self.aggregate(Agg::Last)
    }

    pub(crate) fn handle(&self) -> &wit::Expr {
        &self.0
    }
}

/// Arithmetic operators build binary expressions: `col("a") + col("b")`, `col("a") * 2.0`.
macro_rules! arithmetic {
    ($($trait:ident $method:ident $op:ident),* $(,)?) => {$(
        impl<R: IntoExpr> ops::$trait<R> for Expr {
            type Output = Expr;

            fn $method(self, rhs: R) -> Expr {
                self.binary(BinaryOp::$op, rhs)
            }
        }
    )*};
}

arithmetic!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div, Rem rem Rem);

impl ops::Not for Expr {
    type Output = Expr;

    fn not(self) -> Expr {
        Expr::not(&self)
    }
}

impl From<i64> for Scalar {
    fn from(value: i64) -> Self {
        Scalar::Int(value)
    }
}

impl From<i32> for Scalar {
    fn from(value: i32) -> Self {
        Scalar::Int(value.into())
    }
}

impl From<u32> for Scalar {
    fn from(value: u32) -> Self {
        Scalar::Int(value.into())
    }
}

impl From<f64> for Scalar {
    fn from(value: f64) -> Self {
        Scalar::Float(value)
    }
}

impl From<bool> for Scalar {
    fn from(value: bool) -> Self {
        Scalar::Boolean(value)
    }
}

impl From<&str> for Scalar {
    fn from(value: &str) -> Self {
        Scalar::Text(value.to_owned())
    }
}

impl From<String> for Scalar {
    fn from(value: String) -> Self {
        Scalar::Text(value)
    }
}

/// `None` is the null literal.
impl<T: Into<Scalar>> From<Option<T>> for Scalar {
    fn from(value: Option<T>) -> Self {
        value.map_or(Scalar::Null, Into::into)
    }
}

impl Scalar {
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Boolean(value) => Some(*value),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// The value as a float; integers convert too.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Float(value) => Some(*value),
            Scalar::Int(value) => Some(*value as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Text(value) => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_become_scalars() {
        assert_eq!(Scalar::from(5), Scalar::Int(5));
        assert_eq!(Scalar::from(5_i64), Scalar::Int(5));
        assert_eq!(Scalar::from(0.5), Scalar::Float(0.5));
        assert_eq!(Scalar::from(true), Scalar::Boolean(true));
        assert_eq!(Scalar::from("ok"), Scalar::Text("ok".to_owned()));
        assert_eq!(Scalar::from(None::<i64>), Scalar::Null);
    }

    #[test]
    fn accessors_return_only_their_own_kind() {
        assert_eq!(Scalar::Text("ok".to_owned()).as_str(), Some("ok"));
        assert_eq!(Scalar::Int(3).as_f64(), Some(3.0));
        assert_eq!(Scalar::Float(3.0).as_i64(), None);
        assert!(Scalar::Null.is_null());
    }
}

//! Compiles a row-wise [`Expr`] to the postfix program `eval_program` (kernels/expr.cu) runs,
//! applying the CPU backend's type rules (see `eval.rs`). Whatever the device program cannot
//! express exactly — string results, casts from or to utf8, string comparisons between two
//! columns, any expression the CPU would reject — is `None`: the caller runs that operation on
//! the CPU, which computes it or reports the error, so both backends answer alike.

use arrow::array::StringArray;

use crate::cuda::layout::dictionary_bounds;
use crate::expr::{BinaryOp, DType, Expr, Scalar};

/// Opcodes of kernels/expr.cu (`enum Op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Op {
    Load = 0,
    Const = 1,
    Null = 2,
    AddI = 3,
    SubI = 4,
    MulI = 5,
    DivI = 6,
    RemI = 7,
    AddF = 8,
    SubF = 9,
    MulF = 10,
    DivF = 11,
    RemF = 12,
    IntToFloat = 13,
    FloatToInt = 14,
    IntToBool = 15,
    FloatToBool = 16,
    CmpI = 17,
    CmpF = 18,
    And = 19,
    Or = 20,
    Not = 21,
    IsNull = 22,
    Fill = 23,
    Utf8Cmp = 24,
    Utf8Eq = 25,
    Utf8Ne = 26,
    BoolToFloat = 27,
}

/// Stack slots of the kernel (`STACK` in expr.cu).
const STACK: usize = 16;

/// What the compiler knows about a column of the frame.
pub(crate) trait Columns {
    fn dtype(&self, name: &str) -> Option<DType>;
    /// The sorted dictionary of a utf8 column.
    fn dictionary(&self, name: &str) -> Option<&StringArray>;
}

/// A compiled expression: instructions (opcode, argument, immediate), the columns `Load`
/// arguments index, and the result's dtype.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Program {
    pub code: Vec<i64>,
    pub columns: Vec<String>,
    pub dtype: DType,
}

/// The static type of a compiled sub-expression; `Null` is an untyped null literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    Float,
    Timestamp,
    /// Codes of the named column's dictionary (only as a bare column).
    Utf8,
    Null,
}

impl Ty {
    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Timestamp)
    }

    fn of(d: DType) -> Ty {
        match d {
            DType::Boolean => Ty::Bool,
            DType::Int64 => Ty::Int,
            DType::Float64 => Ty::Float,
            DType::TimestampMs => Ty::Timestamp,
            DType::Utf8 => Ty::Utf8,
        }
    }

    fn dtype(self) -> Option<DType> {
        Some(match self {
            Ty::Bool => DType::Boolean,
            Ty::Int => DType::Int64,
            Ty::Float => DType::Float64,
            Ty::Timestamp => DType::TimestampMs,
            Ty::Utf8 | Ty::Null => return None,
        })
    }
}

struct Compiler<'a> {
    frame: &'a dyn Columns,
    code: Vec<i64>,
    columns: Vec<String>,
    depth: usize,
    max_depth: usize,
}

/// Compiles `expr`; `None` when the device cannot evaluate it exactly as the CPU does.
pub(crate) fn compile(expr: &Expr, frame: &dyn Columns) -> Option<Program> {
    let mut c = Compiler { frame, code: Vec::new(), columns: Vec::new(), depth: 0, max_depth: 0 };
    let ty = c.expr(expr)?;
    let dtype = ty.dtype()?;
    (c.max_depth <= STACK).then_some(Program { code: c.code, columns: c.columns, dtype })
}

/// The column an expression is, looking through aliases (shared on the device, not copied).
pub(crate) fn bare_column(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(name) => Some(name),
        Expr::Alias(inner, _) => bare_column(inner),
        _ => None,
    }
}

fn comparison(op: BinaryOp) -> i64 {
    match op {
        BinaryOp::Eq => 0,
        BinaryOp::NotEq => 1,
        BinaryOp::Lt => 2,
        BinaryOp::LtEq => 3,
        BinaryOp::Gt => 4,
        _ => 5,
    }
}

/// `a op b` as `b op' a`.
fn mirrored(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::LtEq => BinaryOp::GtEq,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::GtEq => BinaryOp::LtEq,
        other => other,
    }
}

impl Compiler<'_> {
    fn emit(&mut self, op: Op, arg: i64, imm: i64, stack_change: isize) {
        self.code.extend([op as i64, arg, imm]);
        self.depth = self.depth.saturating_add_signed(stack_change);
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn load(&mut self, name: &str) -> Option<Ty> {
        let ty = Ty::of(self.frame.dtype(name)?);
        let index = match self.columns.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                self.columns.push(name.to_string());
                self.columns.len() - 1
            }
        };
        self.emit(Op::Load, index as i64, 0, 1);
        Some(ty)
    }

    fn literal(&mut self, v: &Scalar) -> Option<Ty> {
        match v {
            Scalar::Null => {
                self.emit(Op::Null, 0, 0, 1);
                Some(Ty::Null)
            }
            Scalar::Boolean(b) => {
                self.emit(Op::Const, 0, *b as i64, 1);
                Some(Ty::Bool)
            }
            Scalar::Int(i) => {
                self.emit(Op::Const, 0, *i, 1);
                Some(Ty::Int)
            }
            Scalar::Float(x) => {
                self.emit(Op::Const, 0, x.to_bits() as i64, 1);
                Some(Ty::Float)
            }
            Scalar::Text(_) => None,
        }
    }

    fn expr(&mut self, e: &Expr) -> Option<Ty> {
        match e {
            Expr::Column(name) => self.load(name),
            Expr::Literal(v) => self.literal(v),
            Expr::Alias(inner, _) => self.expr(inner),
            Expr::CountRows | Expr::Aggregate(..) => None,
            Expr::Not(inner) => {
                let ty = self.expr(inner)?;
                if !matches!(ty, Ty::Bool | Ty::Null) {
                    return None;
                }
                self.emit(Op::Not, 0, 0, 0);
                Some(Ty::Bool)
            }
            Expr::IsNull(inner) => {
                match &**inner {
                    Expr::Literal(Scalar::Text(_)) => self.emit(Op::Const, 0, 0, 1),
                    other => {
                        self.expr(other)?;
                        self.emit(Op::IsNull, 0, 0, 0);
                    }
                }
                Some(Ty::Bool)
            }
            Expr::FillNull(inner, fill) => self.fill_null(inner, fill),
            Expr::Cast(inner, to) => self.cast(inner, *to),
            Expr::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs),
        }
    }

    fn fill_null(&mut self, inner: &Expr, fill: &Scalar) -> Option<Ty> {
        let ty = self.expr(inner)?;
        let (word, fill_ty) = match fill {
            Scalar::Null => return Some(ty),
            Scalar::Boolean(b) => (*b as i64, Ty::Bool),
            Scalar::Int(i) => (*i, Ty::Int),
            Scalar::Float(x) => (x.to_bits() as i64, Ty::Float),
            Scalar::Text(_) => return None,
        };
        let word = match (fill_ty, ty) {
            (a, b) if a == b => word,
            (_, Ty::Null) => {
                // A null literal filled: the fill value itself.
                self.emit(Op::Fill, 0, word, 0);
                return Some(fill_ty);
            }
            (Ty::Int, Ty::Float) => (word as f64).to_bits() as i64,
            (Ty::Int, Ty::Timestamp) => word,
            _ => return None,
        };
        self.emit(Op::Fill, 0, word, 0);
        Some(ty)
    }

    fn cast(&mut self, inner: &Expr, to: DType) -> Option<Ty> {
        let from = self.expr(inner)?;
        let to = Ty::of(to);
        match (from, to) {
            (_, Ty::Utf8) | (Ty::Utf8, _) => return None,
            (a, b) if a == b => {}
            (Ty::Null, _) => {}
            (Ty::Int | Ty::Timestamp, Ty::Int | Ty::Timestamp) => {}
            (Ty::Int, Ty::Float) => self.emit(Op::IntToFloat, 0, 0, 0),
            (Ty::Float, Ty::Int) => self.emit(Op::FloatToInt, 0, 0, 0),
            (Ty::Int, Ty::Bool) => self.emit(Op::IntToBool, 0, 0, 0),
            (Ty::Float, Ty::Bool) => self.emit(Op::FloatToBool, 0, 0, 0),
            (Ty::Bool, Ty::Int) => {}
            (Ty::Bool, Ty::Float) => self.emit(Op::BoolToFloat, 0, 0, 0),
            _ => return None,
        }
        Some(to)
    }

    /// A utf8 column compared with a text literal, as an integer comparison of its codes.
    fn utf8_comparison(&mut self, op: BinaryOp, column: &str, literal: &str) -> Option<Ty> {
        let (lower, upper, code) = dictionary_bounds(self.frame.dictionary(column)?, literal);
        if self.load(column)? != Ty::Utf8 {
            return None;
        }
        let code = code.map_or(-1, |c| c as i64);
        match op {
            BinaryOp::Eq => self.emit(Op::Utf8Eq, 0, code, 0),
            BinaryOp::NotEq => self.emit(Op::Utf8Ne, 0, code, 0),
            BinaryOp::Lt => self.emit(Op::Utf8Cmp, comparison(BinaryOp::Lt), lower as i64, 0),
            BinaryOp::LtEq => self.emit(Op::Utf8Cmp, comparison(BinaryOp::Lt), upper as i64, 0),
            BinaryOp::Gt => self.emit(Op::Utf8Cmp, comparison(BinaryOp::GtEq), upper as i64, 0),
            _ => self.emit(Op::Utf8Cmp, comparison(BinaryOp::GtEq), lower as i64, 0),
        }
        Some(Ty::Bool)
    }

    fn binary(&mut self, op: BinaryOp, lhs: &Expr, rhs: &Expr) -> Option<Ty> {
        if op.is_comparison() {
            match (bare_column(lhs), rhs, lhs, bare_column(rhs)) {
                (Some(c), Expr::Literal(Scalar::Text(t)), _, _) if self.frame.dtype(c) == Some(DType::Utf8) => {
                    return self.utf8_comparison(op, c, t);
                }
                (_, _, Expr::Literal(Scalar::Text(t)), Some(c)) if self.frame.dtype(c) == Some(DType::Utf8) => {
                    return self.utf8_comparison(mirrored(op), c, t);
                }
                _ => {}
            }
        }
        let at_lhs = self.code.len();
        let l = self.expr(lhs)?;
        let lhs_end = self.code.len();
        let r = self.expr(rhs)?;
        if l == Ty::Utf8 || r == Ty::Utf8 {
            return None;
        }
        // A null literal takes the other side's type; two nulls count as booleans or ints.
        let (l, r) = match (l, r) {
            (Ty::Null, Ty::Null) => {
                let t = if matches!(op, BinaryOp::And | BinaryOp::Or) { Ty::Bool } else { Ty::Int };
                (t, t)
            }
            (Ty::Null, t) => (t, t),
            (t, Ty::Null) => (t, t),
            pair => pair,
        };
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            if l != Ty::Bool || r != Ty::Bool {
                return None;
            }
            self.emit(if op == BinaryOp::And { Op::And } else { Op::Or }, 0, 0, -1);
            return Some(Ty::Bool);
        }
        let float = l == Ty::Float || r == Ty::Float;
        if op.is_comparison() {
            let same = l == r;
            if !same && !(l.numeric() && r.numeric()) {
                return None;
            }
            if float {
                self.widen(at_lhs, lhs_end, l, r);
                self.emit(Op::CmpF, comparison(op), 0, -1);
            } else {
                self.emit(Op::CmpI, comparison(op), 0, -1);
            }
            return Some(Ty::Bool);
        }
        if !l.numeric() || !r.numeric() {
            return None;
        }
        if float {
            self.widen(at_lhs, lhs_end, l, r);
            let f = match op {
                BinaryOp::Add => Op::AddF,
                BinaryOp::Sub => Op::SubF,
                BinaryOp::Mul => Op::MulF,
                BinaryOp::Div => Op::DivF,
                _ => Op::RemF,
            };
            self.emit(f, 0, 0, -1);
            return Some(Ty::Float);
        }
        let (i, ty) = match op {
            BinaryOp::Add => (Op::AddI, Ty::Int),
            BinaryOp::Sub => (Op::SubI, Ty::Int),
            BinaryOp::Mul => (Op::MulI, Ty::Int),
            BinaryOp::Div => (Op::DivI, Ty::Float),
            _ => (Op::RemI, Ty::Int),
        };
        self.emit(i, 0, 0, -1);
        Some(ty)
    }

    /// Converts the int operand(s) of a mixed int/float operation to float: the rhs is on top of
    /// the stack; the lhs conversion is inserted right after the lhs code.
    fn widen(&mut self, _at_lhs: usize, lhs_end: usize, l: Ty, r: Ty) {
        if r != Ty::Float {
            self.emit(Op::IntToFloat, 0, 0, 0);
        }
        if l != Ty::Float {
            self.code.splice(lhs_end..lhs_end, [Op::IntToFloat as i64, 0, 0]);
        }
    }
}

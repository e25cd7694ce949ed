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
            if !(same || (l.numeric() && r.numeric())) {
                return None;
            }
            if float {
                self.widen(lhs_end, l, r);
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
            self.widen(lhs_end, l, r);
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
    fn widen(&mut self, lhs_end: usize, l: Ty, r: Ty) {
        if r != Ty::Float {
            self.emit(Op::IntToFloat, 0, 0, 0);
        }
        if l != Ty::Float {
            self.code.splice(lhs_end..lhs_end, [Op::IntToFloat as i64, 0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The compiler checked against the CPU backend: programs run on a line-by-line Rust
    //! mirror of `eval_program` (kernels/expr.cu) must give what `eval.rs` gives.

    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::cuda::layout::encode_utf8;
    use crate::eval::evaluate;

    /// A column as the device holds it: dtype, words, validity, dictionary.
    type HostColumn = (DType, Vec<u64>, Vec<bool>, Option<StringArray>);

    /// A frame as the device holds it.
    struct Words {
        columns: HashMap<String, HostColumn>,
        rows: usize,
    }

    impl Columns for Words {
        fn dtype(&self, name: &str) -> Option<DType> {
            self.columns.get(name).map(|c| c.0)
        }
        fn dictionary(&self, name: &str) -> Option<&StringArray> {
            self.columns.get(name).and_then(|c| c.3.as_ref())
        }
    }

    fn words(batch: &RecordBatch) -> Words {
        let mut columns = HashMap::new();
        for (field, a) in batch.schema().fields().iter().zip(batch.columns()) {
            let valid: Vec<bool> = (0..a.len()).map(|i| a.is_valid(i)).collect();
            let dtype = DType::from_arrow(field.data_type()).unwrap();
            let (w, dict): (Vec<u64>, _) = match dtype {
                DType::Int64 => (a.as_primitive::<Int64Type>().values().iter().map(|v| *v as u64).collect(), None),
                DType::TimestampMs => (a.as_primitive::<TimestampMillisecondType>().values().iter().map(|v| *v as u64).collect(), None),
                DType::Float64 => (a.as_primitive::<Float64Type>().values().iter().map(|v| v.to_bits()).collect(), None),
                DType::Boolean => (a.as_boolean().values().iter().map(u64::from).collect(), None),
                DType::Utf8 => {
                    let e = encode_utf8(a.as_string::<i32>());
                    (e.codes, Some(e.dictionary))
                }
            };
            columns.insert(field.name().clone(), (dtype, w, valid, dict));
        }
        Words { columns, rows: batch.num_rows() }
    }

    fn float_order(bits: u64) -> i64 {
        let s = bits as i64;
        s ^ (((s >> 63) as u64) >> 1) as i64
    }

    fn compare(how: i64, a: i64, b: i64) -> bool {
        match how {
            0 => a == b,
            1 => a != b,
            2 => a < b,
            3 => a <= b,
            4 => a > b,
            _ => a >= b,
        }
    }

    /// `eval_program` for one row: (value, valid, failed).
    fn run_row(p: &Program, frame: &Words, row: usize) -> (u64, bool, bool) {
        let mut v: Vec<u64> = Vec::new();
        let mut ok: Vec<bool> = Vec::new();
        let mut failed = false;
        for ins in p.code.chunks(3) {
            let (op, arg, imm) = (ins[0], ins[1], ins[2]);
            let t = v.len().wrapping_sub(1);
            match op {
                0 => {
                    let c = &frame.columns[&p.columns[arg as usize]];
                    v.push(c.1[row]);
                    ok.push(c.2[row]);
                }
                1 => {
                    v.push(imm as u64);
                    ok.push(true);
                }
                2 => {
                    v.push(0);
                    ok.push(false);
                }
                21 => v[t] = u64::from(v[t] == 0),
                22 => {
                    v[t] = u64::from(!ok[t]);
                    ok[t] = true;
                }
                23 => {
                    if !ok[t] {
                        v[t] = imm as u64;
                        ok[t] = true;
                    }
                }
                13 => v[t] = (v[t] as i64 as f64).to_bits(),
                27 => v[t] = if v[t] != 0 { 1.0f64 } else { 0.0 }.to_bits(),
                14 => {
                    if ok[t] {
                        let x = f64::from_bits(v[t]);
                        if !(-9223372036854775808.0..9223372036854775808.0).contains(&x) {
                            failed = true;
                            ok[t] = false;
                        } else {
                            v[t] = x as i64 as u64;
                        }
                    }
                }
                15 => v[t] = u64::from(v[t] != 0),
                16 => v[t] = u64::from(f64::from_bits(v[t]) != 0.0),
                24 => v[t] = u64::from(compare(arg, v[t] as i64, imm)),
                25 => v[t] = u64::from(imm >= 0 && v[t] as i64 == imm),
                26 => v[t] = u64::from(!(imm >= 0 && v[t] as i64 == imm)),
                _ => {
                    let (rb, rok) = (v.pop().unwrap(), ok.pop().unwrap());
                    let t = v.len() - 1;
                    let (lb, lok) = (v[t], ok[t]);
                    if op == 19 || op == 20 {
                        let dominant = op == 20;
                        let (l, r) = (lb != 0, rb != 0);
                        if (lok && l == dominant) || (rok && r == dominant) {
                            v[t] = u64::from(dominant);
                            ok[t] = true;
                        } else {
                            v[t] = u64::from(op == 19);
                            ok[t] = lok && rok;
                        }
                        continue;
                    }
                    let both = lok && rok;
                    ok[t] = both;
                    let (li, ri) = (lb as i64, rb as i64);
                    let (lf, rf) = (f64::from_bits(lb), f64::from_bits(rb));
                    v[t] = match op {
                        3 => {
                            let r = li.wrapping_add(ri);
                            failed |= both && ((li ^ r) & (ri ^ r)) < 0;
                            r as u64
                        }
                        4 => {
                            let r = li.wrapping_sub(ri);
                            failed |= both && ((li ^ ri) & (li ^ r)) < 0;
                            r as u64
                        }
                        5 => {
                            failed |= both && li.checked_mul(ri).is_none();
                            li.wrapping_mul(ri) as u64
                        }
                        6 => {
                            if ri == 0 {
                                ok[t] = false;
                                0
                            } else {
                                (li as f64 / ri as f64).to_bits()
                            }
                        }
                        7 => {
                            failed |= both && ri == -1 && li == i64::MIN;
                            if ri == 0 {
                                ok[t] = false;
                                0
                            } else if ri == -1 {
                                0
                            } else {
                                (li % ri) as u64
                            }
                        }
                        8 => (lf + rf).to_bits(),
                        9 => (lf - rf).to_bits(),
                        10 => (lf * rf).to_bits(),
                        11 => (lf / rf).to_bits(),
                        12 => (lf % rf).to_bits(),
                        17 => u64::from(compare(arg, li, ri)),
                        18 => u64::from(compare(arg, float_order(lb), float_order(rb))),
                        other => panic!("unknown opcode {other}"),
                    };
                }
            }
        }
        assert_eq!(v.len(), 1, "a program leaves one value");
        (v[0], ok[0], failed)
    }

    /// The program's result as an Arrow column, or `None` when a row failed (the CPU runs it).
    fn run(p: &Program, frame: &Words) -> Option<ArrayRef> {
        let mut values = Vec::new();
        let mut valid = Vec::new();
        for row in 0..frame.rows {
            let (w, ok, failed) = run_row(p, frame, row);
            if failed {
                return None;
            }
            values.push(w);
            valid.push(ok);
        }
        let opt = |f: &dyn Fn(u64) -> u64| values.iter().zip(&valid).map(|(w, ok)| ok.then(|| f(*w))).collect::<Vec<_>>();
        Some(match p.dtype {
            DType::Int64 => Arc::new(Int64Array::from(opt(&|w| w).into_iter().map(|o| o.map(|w| w as i64)).collect::<Vec<_>>())),
            DType::TimestampMs => Arc::new(TimestampMillisecondArray::from(opt(&|w| w).into_iter().map(|o| o.map(|w| w as i64)).collect::<Vec<_>>())),
            DType::Float64 => Arc::new(Float64Array::from(opt(&|w| w).into_iter().map(|o| o.map(f64::from_bits)).collect::<Vec<_>>())),
            DType::Boolean => Arc::new(BooleanArray::from(opt(&|w| w).into_iter().map(|o| o.map(|w| w != 0)).collect::<Vec<_>>())),
            DType::Utf8 => unreachable!("programs never produce utf8"),
        })
    }

    fn batch() -> RecordBatch {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let rows = 3000;
        let mut i = Vec::new();
        let mut f = Vec::new();
        let mut s = Vec::new();
        let mut b = Vec::new();
        let mut t = Vec::new();
        for _ in 0..rows {
            let r = next();
            i.push(match r % 40 {
                0 => None,
                1 => Some(0),
                2 => Some(-1),
                3 => Some(i64::MAX / 3),
                _ => Some((r % 201) as i64 - 100),
            });
            f.push(match (r >> 8) % 40 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(-0.0),
                3 => Some(f64::NEG_INFINITY),
                4 => Some(0.0),
                _ => Some(((r >> 16) % 20_000) as f64 / 100.0 - 100.0),
            });
            s.push(((r >> 30) % 13 != 0).then(|| format!("v{}", (r >> 32) % 20)));
            b.push(((r >> 40) % 9 != 0).then_some((r >> 44) % 2 == 0));
            t.push(((r >> 50) % 11 != 0).then_some(1_000 + (r % 5000) as i64));
        }
        RecordBatch::try_from_iter(vec![
            ("i", Arc::new(Int64Array::from(i)) as ArrayRef),
            ("f", Arc::new(Float64Array::from(f)) as ArrayRef),
            ("s", Arc::new(arrow::array::StringArray::from(s)) as ArrayRef),
            ("b", Arc::new(BooleanArray::from(b)) as ArrayRef),
            ("t", Arc::new(TimestampMillisecondArray::from(t)) as ArrayRef),
        ])
        .unwrap()
    }

    fn col(n: &str) -> Expr {
        Expr::col(n)
    }
    fn int(v: i64) -> Expr {
        Expr::lit(Scalar::Int(v))
    }
    fn float(v: f64) -> Expr {
        Expr::lit(Scalar::Float(v))
    }
    fn text(v: &str) -> Expr {
        Expr::lit(Scalar::Text(v.into()))
    }

    /// Values equal, floats bit for bit (NaN payloads aside).
    fn same(a: &ArrayRef, b: &ArrayRef) -> bool {
        let rows_equal = |eq: &dyn Fn(usize) -> bool| (0..a.len()).all(|i| a.is_null(i) == b.is_null(i) && (a.is_null(i) || eq(i)));
        a.data_type() == b.data_type()
            && a.len() == b.len()
            && match a.data_type() {
                DataType::Float64 => {
                    let (x, y) = (a.as_primitive::<Float64Type>(), b.as_primitive::<Float64Type>());
                    rows_equal(&|i| x.value(i).to_bits() == y.value(i).to_bits() || (x.value(i).is_nan() && y.value(i).is_nan()))
                }
                DataType::Int64 => rows_equal(&|i| a.as_primitive::<Int64Type>().value(i) == b.as_primitive::<Int64Type>().value(i)),
                DataType::Boolean => rows_equal(&|i| a.as_boolean().value(i) == b.as_boolean().value(i)),
                _ => rows_equal(&|i| {
                    a.as_primitive::<TimestampMillisecondType>().value(i) == b.as_primitive::<TimestampMillisecondType>().value(i)
                }),
            }
    }

    #[test]
    fn compiled_programs_compute_what_the_cpu_computes() {
        let batch = batch();
        let frame = words(&batch);
        let exprs = [
            col("i").binary(BinaryOp::Add, col("f")),
            col("i").binary(BinaryOp::Sub, int(7)).binary(BinaryOp::Mul, int(3)),
            col("i").binary(BinaryOp::Div, col("i").binary(BinaryOp::Rem, int(7))),
            col("i").binary(BinaryOp::Rem, int(-1)),
            int(100).binary(BinaryOp::Rem, col("i")),
            col("f").binary(BinaryOp::Rem, float(7.5)),
            col("f").binary(BinaryOp::Div, col("f")),
            col("t").binary(BinaryOp::Sub, col("i")),
            col("t").binary(BinaryOp::Add, col("f")),
            col("f").binary(BinaryOp::Gt, col("i")),
            col("f").binary(BinaryOp::Eq, float(-0.0)),
            col("f").binary(BinaryOp::Eq, float(f64::NAN)),
            col("f").binary(BinaryOp::Lt, float(f64::INFINITY)),
            col("t").binary(BinaryOp::GtEq, int(3000)),
            col("b").binary(BinaryOp::Lt, Expr::lit(Scalar::Boolean(true))),
            col("s").binary(BinaryOp::Eq, text("v3")),
            col("s").binary(BinaryOp::NotEq, text("absent")),
            col("s").binary(BinaryOp::Lt, text("v15")),
            col("s").binary(BinaryOp::LtEq, text("v15")),
            col("s").binary(BinaryOp::Gt, text("v15x")),
            text("v4").binary(BinaryOp::GtEq, col("s")),
            col("b").binary(BinaryOp::And, col("i").binary(BinaryOp::Gt, int(0))),
            col("b").binary(BinaryOp::Or, col("f").is_null()).not(),
            col("b").binary(BinaryOp::And, Expr::lit(Scalar::Null)),
            col("i").binary(BinaryOp::Add, Expr::lit(Scalar::Null)),
            Expr::lit(Scalar::Null).binary(BinaryOp::Lt, col("f")),
            col("s").is_null(),
            text("x").is_null(),
            col("f").fill_null(Scalar::Int(4)),
            col("i").fill_null(Scalar::Int(-9)),
            col("t").fill_null(Scalar::Int(1)),
            Expr::lit(Scalar::Null).fill_null(Scalar::Float(2.5)),
            col("i").cast(DType::Float64),
            col("i").cast(DType::Boolean),
            col("f").cast(DType::Boolean),
            col("b").cast(DType::Int64),
            col("b").cast(DType::Float64),
            col("t").cast(DType::Int64),
            col("i").cast(DType::TimestampMs),
            col("f").binary(BinaryOp::Mul, float(1e3)).fill_null(Scalar::Float(0.0)).binary(BinaryOp::Gt, float(10.0)).alias("x"),
            int(2).binary(BinaryOp::Mul, int(3)),
        ];
        for e in &exprs {
            let program = compile(e, &frame).unwrap_or_else(|| panic!("`{e}` should compile"));
            let cpu = evaluate(&batch, e).unwrap_or_else(|err| panic!("`{e}` on the CPU: {err}"));
            let device = run(&program, &frame).unwrap_or_else(|| panic!("`{e}` failed on the device"));
            assert!(same(&cpu, &device), "`{e}`:\nCPU    {cpu:?}\ndevice {device:?}");
        }
    }

    #[test]
    fn what_the_cpu_refuses_flags_or_does_not_compile() {
        let batch = batch();
        let frame = words(&batch);
        // Overflows and out-of-range casts: the program flags the row; the CPU reports the error.
        for e in [col("i").binary(BinaryOp::Mul, int(4)), col("i").binary(BinaryOp::Add, int(i64::MAX)), col("f").cast(DType::Int64)] {
            let program = compile(&e, &frame).unwrap();
            assert!(run(&program, &frame).is_none(), "`{e}` should flag a failure");
            assert!(evaluate(&batch, &e).is_err(), "`{e}` should fail on the CPU");
        }
        // Type errors, strings and aggregates are left to the CPU.
        for e in [
            col("s").binary(BinaryOp::Add, int(1)),
            col("i").binary(BinaryOp::And, col("b")),
            col("s").binary(BinaryOp::Eq, col("s")),
            col("s").cast(DType::Int64),
            col("i").cast(DType::Utf8),
            col("s").fill_null(Scalar::Text("x".into())),
            col("f").fill_null(Scalar::Boolean(true)),
            col("i").not(),
            col("missing"),
            Expr::lit(Scalar::Null),
            col("i").aggregate(crate::expr::AggFn::Sum),
        ] {
            assert_eq!(compile(&e, &frame), None, "`{e}` should not compile");
        }
        assert_eq!(bare_column(&col("a").alias("b")), Some("a"));
        assert_eq!(bare_column(&col("a").is_null()), None);
    }

    #[test]
    fn deep_expressions_beyond_the_stack_are_left_to_the_cpu() {
        let frame = words(&batch());
        let mut left_deep = col("i");
        let mut right_deep = col("i");
        for _ in 0..20 {
            left_deep = left_deep.binary(BinaryOp::Add, int(1));
            right_deep = int(1).binary(BinaryOp::Add, right_deep);
        }
        assert!(compile(&left_deep, &frame).is_some(), "left-deep nesting needs two stack slots");
        assert_eq!(compile(&right_deep, &frame), None, "21 slots do not fit the kernel's 16");
    }
}

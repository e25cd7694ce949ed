//! The `dataframe` interface: every call resolves guest handles to host frames and
//! expressions, runs the operation in `sluice-frame`, and hands back a new handle.

use sluice_frame::ingest::{ReadOptions, read_json_lines};
use sluice_frame::{AggFn, BinaryOp, Expr, Frame, FrameError};
use wasmtime::component::Resource;

use crate::bindings::sluice::function::dataframe::{self, Agg, WriteStats};
use crate::bindings::{Dtype, GuestError, GuestScalar};
use crate::state::InvocationState;

type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

impl dataframe::Host for InvocationState {}

impl InvocationState {
    fn expr(&self, handle: &Resource<Expr>) -> wasmtime::Result<Expr> {
        Ok(self.table.get(handle)?.clone())
    }

    fn exprs(&self, handles: &[Resource<Expr>]) -> wasmtime::Result<Vec<Expr>> {
        handles.iter().map(|h| self.expr(h)).collect()
    }

    fn frame(&self, handle: &Resource<Frame>) -> wasmtime::Result<Frame> {
        Ok(self.table.get(handle)?.clone())
    }

    fn push_expr(&mut self, expr: Expr) -> wasmtime::Result<Resource<Expr>> {
        Ok(self.table.push(expr)?)
    }

    /// Hands a frame result to the guest: a new handle on success, the error otherwise.
    pub(crate) fn push_frame(&mut self, result: Result<Frame, FrameError>) -> GuestResult<Resource<Frame>> {
        match result {
            Ok(frame) => Ok(Ok(self.table.push(frame)?)),
            Err(error) => Ok(Err(error.into())),
        }
    }
}

fn binary_op(op: dataframe::BinaryOp) -> BinaryOp {
    use dataframe::BinaryOp as W;
    match op {
        W::Add => BinaryOp::Add,
        W::Sub => BinaryOp::Sub,
        W::Mul => BinaryOp::Mul,
        W::Div => BinaryOp::Div,
        W::Rem => BinaryOp::Rem,
        W::Eq => BinaryOp::Eq,
        W::Neq => BinaryOp::NotEq,
        W::Lt => BinaryOp::Lt,
        W::LtEq => BinaryOp::LtEq,
        W::Gt => BinaryOp::Gt,
        W::GtEq => BinaryOp::GtEq,
        W::And => BinaryOp::And,
        W::Or => BinaryOp::Or,
    }
}

fn agg_fn(agg: Agg) -> AggFn {
    match agg {
        Agg::Count => AggFn::Count,
        Agg::Sum => AggFn::Sum,
        Agg::Mean => AggFn::Mean,
        Agg::Min => AggFn::Min,
        Agg::Max => AggFn::Max,
        Agg::First => AggFn::First,
        Agg::Last => AggFn::Last,
    }
}

impl dataframe::HostExpr for InvocationState {
    fn col(&mut self, name: String) -> wasmtime::Result<Resource<Expr>> {
        self.push_expr(Expr::col(name))
    }

    fn lit(&mut self, value: GuestScalar) -> wasmtime::Result<Resource<Expr>> {
        self.push_expr(Expr::lit(value.into()))
    }

    fn count_rows(&mut self) -> wasmtime::Result<Resource<Expr>> {
        self.push_expr(Expr::CountRows)
    }

    fn binary(
        &mut self,
        lhs: Resource<Expr>,
        op: dataframe::BinaryOp,
        rhs: Resource<Expr>,
    ) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&lhs)?.binary(binary_op(op), self.expr(&rhs)?);
        self.push_expr(expr)
    }

    fn not(&mut self, inner: Resource<Expr>) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&inner)?.not();
        self.push_expr(expr)
    }

    fn is_null(&mut self, inner: Resource<Expr>) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&inner)?.is_null();
        self.push_expr(expr)
    }

    fn fill_null(&mut self, inner: Resource<Expr>, value: GuestScalar) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&inner)?.fill_null(value.into());
        self.push_expr(expr)
    }

    fn cast(&mut self, inner: Resource<Expr>, to: Dtype) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&inner)?.cast(to.into());
        self.push_expr(expr)
    }

    fn alias(&mut self, inner: Resource<Expr>, name: String) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&inner)?.alias(name);
        self.push_expr(expr)
    }

    fn aggregate(&mut self, inner: Resource<Expr>, how: Agg) -> wasmtime::Result<Resource<Expr>> {
        let expr = self.expr(&inner)?.aggregate(agg_fn(how));
        self.push_expr(expr)
    }

    fn drop(&mut self, handle: Resource<Expr>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl dataframe::HostFrame for InvocationState {
    fn from_json_lines(&mut self, data: Vec<u8>) -> GuestResult<Resource<Frame>> {
        let source = sluice_frame::ingest::JsonSource { name: "guest bytes", data: &data, first_line: 1 };
        let result = read_json_lines(&[source], &ReadOptions::default()).map(|ingested| ingested.frame);
        self.push_frame(result)
    }

    fn concat(&mut self, frames: Vec<Resource<Frame>>) -> GuestResult<Resource<Frame>> {
        let frames = frames.iter().map(|f| self.frame(f)).collect::<wasmtime::Result<Vec<_>>>()?;
        let refs: Vec<&Frame> = frames.iter().collect();
        self.push_frame(Frame::concat(&refs))
    }

    fn num_rows(&mut self, frame: Resource<Frame>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&frame)?.num_rows() as u64)
    }

    fn schema(&mut self, frame: Resource<Frame>) -> wasmtime::Result<Vec<(String, Dtype)>> {
        let schema = self.table.get(&frame)?.schema();
        Ok(schema.into_iter().map(|(name, dtype)| (name, dtype.into())).collect())
    }

    fn select(&mut self, frame: Resource<Frame>, exprs: Vec<Resource<Expr>>) -> GuestResult<Resource<Frame>> {
        let (frame, exprs) = (self.frame(&frame)?, self.exprs(&exprs)?);
        self.push_frame(frame.select(&exprs))
    }

    fn with_columns(&mut self, frame: Resource<Frame>, exprs: Vec<Resource<Expr>>) -> GuestResult<Resource<Frame>> {
        let (frame, exprs) = (self.frame(&frame)?, self.exprs(&exprs)?);
        self.push_frame(frame.with_columns(&exprs))
    }

    fn filter(&mut self, frame: Resource<Frame>, predicate: Resource<Expr>) -> GuestResult<Resource<Frame>> {
        let (frame, predicate) = (self.frame(&frame)?, self.expr(&predicate)?);
        self.push_frame(frame.filter(&predicate))
    }

    fn group_by(
        &mut self,
        frame: Resource<Frame>,
        keys: Vec<String>,
        aggs: Vec<Resource<Expr>>,
    ) -> GuestResult<Resource<Frame>> {
        let (frame, aggs) = (self.frame(&frame)?, self.exprs(&aggs)?);
        self.push_frame(frame.group_by(&keys, &aggs))
    }

    fn sort(&mut self, frame: Resource<Frame>, by: Vec<String>, descending: Vec<bool>) -> GuestResult<Resource<Frame>> {
        let frame = self.frame(&frame)?;
        self.push_frame(frame.sort(&by, &descending))
    }

    fn top_k(&mut self, frame: Resource<Frame>, k: u32, by: String, descending: bool) -> GuestResult<Resource<Frame>> {
        let frame = self.frame(&frame)?;
        self.push_frame(frame.top_k(k as usize, &by, descending))
    }

    fn slice(&mut self, frame: Resource<Frame>, offset: u64, len: u64) -> wasmtime::Result<Resource<Frame>> {
        let sliced = self.frame(&frame)?.slice(offset as usize, len as usize);
        Ok(self.table.push(sliced)?)
    }

    fn column(&mut self, frame: Resource<Frame>, name: String) -> GuestResult<Vec<GuestScalar>> {
        Ok(self
            .table
            .get(&frame)?
            .column(&name)
            .map(|values| values.into_iter().map(GuestScalar::from).collect())
            .map_err(GuestError::from))
    }

    fn to_json_lines(&mut self, frame: Resource<Frame>) -> GuestResult<Vec<u8>> {
        Ok(self.table.get(&frame)?.to_json_lines().map_err(GuestError::from))
    }

    fn write(&mut self, frame: Resource<Frame>, sink: String) -> GuestResult<WriteStats> {
        let frame = self.frame(&frame)?;
        let stem = format!("{}-{}-w{}", self.function.name, self.batch_key, self.staged.len());
        let files = match self.function.sinks.stage(&sink, &frame, &stem) {
            Ok(files) => files,
            Err(error) => return Ok(Err(error.into())),
        };
        let stats = WriteStats {
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files: files.len() as u32,
        };
        tracing::debug!(function = %self.function.name, sink, rows = stats.rows, files = stats.files, "staged sink write");
        self.staged.extend(files.into_iter().map(|f| (sink.clone(), f)));
        Ok(Ok(stats))
    }

    fn drop(&mut self, handle: Resource<Frame>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

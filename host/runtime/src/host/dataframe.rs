//! The `dataframe` interface: every call resolves guest handles to host frames and
//! expressions, runs the operation in `sluice-frame`, and hands back a new handle.
//!
//! Frames are lazy: filter, select, with-columns and group-by on a frame read from the batch
//! extend its plan; any other call executes the plan (once) and works on the result. Calls
//! whose WIT signature has no error (`num-rows`, `schema`, `slice`) trap when that execution
//! fails, and the invocation fails with that error (its code and message).

use sluice_frame::ingest::{ReadOptions, read_json_lines};
use sluice_frame::{AggFn, BinaryOp, Expr, Frame, FrameError, LazyFrame};
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

    fn frame(&self, handle: &Resource<LazyFrame>) -> wasmtime::Result<LazyFrame> {
        Ok(self.table.get(handle)?.clone())
    }

    /// The materialized frame behind a handle; an execution error is the guest's error.
    fn collect(&self, handle: &Resource<LazyFrame>) -> wasmtime::Result<Result<Frame, GuestError>> {
        Ok(self.table.get(handle)?.collect().map_err(GuestError::from))
    }

    /// The materialized frame, for calls that cannot return an error: a failure traps, and the
    /// invocation fails with that error as if the handler had returned it.
    fn collect_or_trap(&mut self, handle: &Resource<LazyFrame>) -> wasmtime::Result<Frame> {
        match self.table.get(handle)?.collect() {
            Ok(frame) => Ok(frame),
            Err(error) => {
                let message = error.to_string();
                self.failed_call = Some(error.into());
                Err(wasmtime::Error::msg(message))
            }
        }
    }

    fn push_expr(&mut self, expr: Expr) -> wasmtime::Result<Resource<Expr>> {
        Ok(self.table.push(expr)?)
    }

    /// Hands a frame result to the guest: a new handle on success, the error otherwise.
    pub(crate) fn push_frame<F: Into<LazyFrame>>(&mut self, result: Result<F, FrameError>) -> GuestResult<Resource<LazyFrame>> {
        match result {
            Ok(frame) => Ok(Ok(self.table.push(frame.into())?)),
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
    fn from_json_lines(&mut self, data: Vec<u8>) -> GuestResult<Resource<LazyFrame>> {
        let source = sluice_frame::ingest::JsonSource { name: "guest bytes", data: &data, first_line: 1 };
        let result = read_json_lines(&[source], &ReadOptions::default()).map(|ingested| match &self.gpu {
            Some(gpu) => gpu.adopt(ingested.frame),
            None => ingested.frame,
        });
        self.push_frame(result)
    }

    fn concat(&mut self, frames: Vec<Resource<LazyFrame>>) -> GuestResult<Resource<LazyFrame>> {
        let mut collected = Vec::with_capacity(frames.len());
        for f in &frames {
            match self.collect(f)? {
                Ok(frame) => collected.push(frame),
                Err(error) => return Ok(Err(error)),
            }
        }
        let refs: Vec<&Frame> = collected.iter().collect();
        self.push_frame(Frame::concat(&refs))
    }

    fn num_rows(&mut self, frame: Resource<LazyFrame>) -> wasmtime::Result<u64> {
        Ok(self.collect_or_trap(&frame)?.num_rows() as u64)
    }

    fn schema(&mut self, frame: Resource<LazyFrame>) -> wasmtime::Result<Vec<(String, Dtype)>> {
        let schema = self.collect_or_trap(&frame)?.schema();
        Ok(schema.into_iter().map(|(name, dtype)| (name, dtype.into())).collect())
    }

    fn select(&mut self, frame: Resource<LazyFrame>, exprs: Vec<Resource<Expr>>) -> GuestResult<Resource<LazyFrame>> {
        let (frame, exprs) = (self.frame(&frame)?, self.exprs(&exprs)?);
        self.push_frame(frame.select(&exprs))
    }

    fn with_columns(&mut self, frame: Resource<LazyFrame>, exprs: Vec<Resource<Expr>>) -> GuestResult<Resource<LazyFrame>> {
        let (frame, exprs) = (self.frame(&frame)?, self.exprs(&exprs)?);
        self.push_frame(frame.with_columns(&exprs))
    }

    fn filter(&mut self, frame: Resource<LazyFrame>, predicate: Resource<Expr>) -> GuestResult<Resource<LazyFrame>> {
        let (frame, predicate) = (self.frame(&frame)?, self.expr(&predicate)?);
        self.push_frame(frame.filter(&predicate))
    }

    fn group_by(
        &mut self,
        frame: Resource<LazyFrame>,
        keys: Vec<String>,
        aggs: Vec<Resource<Expr>>,
    ) -> GuestResult<Resource<LazyFrame>> {
        let (frame, aggs) = (self.frame(&frame)?, self.exprs(&aggs)?);
        self.push_frame(frame.group_by(&keys, &aggs))
    }

    fn sort(&mut self, frame: Resource<LazyFrame>, by: Vec<String>, descending: Vec<bool>) -> GuestResult<Resource<LazyFrame>> {
        let result = self.table.get(&frame)?.collect().and_then(|f| f.sort(&by, &descending));
        self.push_frame(result)
    }

    fn top_k(&mut self, frame: Resource<LazyFrame>, k: u32, by: String, descending: bool) -> GuestResult<Resource<LazyFrame>> {
        let result = self.table.get(&frame)?.collect().and_then(|f| f.top_k(k as usize, &by, descending));
        self.push_frame(result)
    }

    fn slice(&mut self, frame: Resource<LazyFrame>, offset: u64, len: u64) -> wasmtime::Result<Resource<LazyFrame>> {
        let sliced = self.collect_or_trap(&frame)?.slice(offset as usize, len as usize);
        Ok(self.table.push(sliced.into())?)
    }

    fn column(&mut self, frame: Resource<LazyFrame>, name: String) -> GuestResult<Vec<GuestScalar>> {
        Ok(self.table.get(&frame)?.collect().and_then(|f| f.column(&name)).map(|values| values.into_iter().map(GuestScalar::from).collect()).map_err(GuestError::from))
    }

    fn to_json_lines(&mut self, frame: Resource<LazyFrame>) -> GuestResult<Vec<u8>> {
        Ok(self.table.get(&frame)?.collect().and_then(|f| f.to_json_lines()).map_err(GuestError::from))
    }

    /// A plan without group-by streams into the sink; anything else is materialized first.
    fn write(&mut self, frame: Resource<LazyFrame>, sink: String) -> GuestResult<WriteStats> {
        if self.buffered.is_some() {
            // Held writes outlive the invocation and its GPU stream: they are kept in host memory.
            let held = self
                .collect(&frame)?
                .and_then(|frame| frame.to_host().map_err(GuestError::from))
                .and_then(|frame| self.function.sinks.buffer(&sink, frame).map_err(GuestError::from));
            return Ok(held.map(|write| {
                let stats = WriteStats { rows: write.rows(), bytes: 0, files: 0 };
                self.buffered.get_or_insert_default().push(write);
                stats
            }));
        }
        let stem = format!("{}-{}-w{}", self.function.name, self.batch_key, self.staged.len());
        let lazy = self.frame(&frame)?;
        let streamed = match self.function.sinks.stage_stream(&sink, &lazy, &stem) {
            Ok(streamed) => streamed,
            Err(error) => return Ok(Err(error.into())),
        };
        let files = match streamed {
            Some(files) => files,
            None => {
                let frame = match self.collect(&frame)? {
                    Ok(frame) => frame,
                    Err(error) => return Ok(Err(error)),
                };
                match self.function.sinks.stage(&sink, &frame, &stem) {
                    Ok(files) => files,
                    Err(error) => return Ok(Err(error.into())),
                }
            }
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

    fn drop(&mut self, handle: Resource<LazyFrame>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

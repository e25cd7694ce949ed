//! Lazy frames: a plan over a scan of JSON lines, executed in one streaming pass.
//!
//! A [`LazyFrame`] over a batch's bytes records row-wise steps (filter, select, with-columns) and
//! at most one group-by; the first call that needs values ([`LazyFrame::collect`], and every
//! operation that is not one of those) executes the plan once and caches the frame:
//! - the scan parses only the columns the plan reads (projection pushdown) when the read options
//!   list no fields themselves;
//! - the input is cut at newline boundaries into chunks of [`CHUNK_BYTES`] (smaller ones when
//!   the input would not give every thread one), parsed and run
//!   through the steps in parallel, in waves of a few chunks per thread; a parsed chunk is
//!   released at once ([`ScanInput::consumed`]), so a memory-mapped input does not stay resident;
//! - a group-by keeps only per-chunk partial aggregates (sum and count for a mean), merged after
//!   every wave: memory is bounded by the number of groups, not by the input.
//!
//! Results equal an eager read followed by the same operations, except that errors of the plan
//! surface at the materializing call, and that a chunk's columns are typed from that chunk alone
//! (int64 and float64 chunks unify to float64; a true conflict re-reads the input in one pass for
//! the exact error line). Under [`BadLinePolicy::Skip`] without declared types for every field the
//! scan is read in one pass, because which line is bad then depends on the lines before it.
//! A frame that is already materialized runs every operation eagerly.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, new_null_array};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rayon::prelude::*;

use crate::cuda::CudaSession;
use crate::error::FrameError;
use crate::expr::{AggFn, DType, Expr};
use crate::frame::Frame;
use crate::groupby::parse_agg;
use crate::ingest::{BadLine, BadLinePolicy, JsonSource, ReadOptions, read_json_lines};

/// Bytes of input per chunk of a streaming scan.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Chunks per thread in one wave; partial results are merged after each wave.
const CHUNKS_PER_THREAD: usize = 4;

/// Where a streaming scan hands each wave of rows: the wave's batches, in row order.
pub type WaveSink<'a> = dyn FnMut(&[RecordBatch]) -> Result<(), FrameError> + 'a;

/// The bytes a lazy scan reads.
pub trait ScanInput: Send + Sync + std::fmt::Debug {
    /// The bytes to parse, in order, each named for error messages.
    fn sources(&self) -> Vec<JsonSource<'_>>;

    /// Bytes `range` of source `index` were parsed and this pass will not read them again; a
    /// memory-mapped input can drop those pages from the process's resident set.
    fn consumed(&self, index: usize, range: Range<usize>);
}

/// What the first execution of a scan read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanReport {
    /// Rows parsed (good lines).
    pub rows: u64,
    /// Lines left out under [`BadLinePolicy::Skip`].
    pub bad_lines: Vec<BadLine>,
}

#[derive(Debug)]
struct Scan {
    input: Arc<dyn ScanInput>,
    options: ReadOptions,
    report: OnceLock<ScanReport>,
    /// The GPU session the parsed rows move to, where the plan then runs.
    device: Option<Arc<CudaSession>>,
}

/// A row-wise operation, applied chunk by chunk.
#[derive(Clone, Debug)]
enum Step {
    Filter(Expr),
    Select(Vec<Expr>),
    WithColumns(Vec<Expr>),
}

impl Step {
    fn apply(&self, frame: &Frame) -> Result<Frame, FrameError> {
        match self {
            Step::Filter(predicate) => frame.filter(predicate),
            Step::Select(exprs) => frame.select(exprs),
            Step::WithColumns(exprs) => frame.with_columns(exprs),
        }
    }
}

#[derive(Clone, Debug)]
struct GroupBy {
    keys: Vec<String>,
    aggs: Vec<Expr>,
}

#[derive(Debug)]
struct Plan {
    scan: Arc<Scan>,
    steps: Vec<Step>,
    group_by: Option<GroupBy>,
    result: OnceLock<Frame>,
}

/// A frame that is either materialized or a plan over a scan, executed on first use.
#[derive(Clone, Debug)]
pub struct LazyFrame(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Ready(Frame),
    Planned(Arc<Plan>),
}

impl From<Frame> for LazyFrame {
    fn from(frame: Frame) -> LazyFrame {
        LazyFrame(Inner::Ready(frame))
    }
}

impl LazyFrame {
    /// A plan that reads `input` as JSON lines with `options`; nothing is parsed yet.
    pub fn scan(input: Arc<dyn ScanInput>, options: ReadOptions) -> LazyFrame {
        LazyFrame::scan_on(input, options, None)
    }

    /// A scan whose rows, once parsed on the CPU, move to `device` (when given), where the
    /// plan's steps and group-by run. Plans streamed into a sink stay on the CPU.
    pub fn scan_on(input: Arc<dyn ScanInput>, options: ReadOptions, device: Option<Arc<CudaSession>>) -> LazyFrame {
        let scan = Arc::new(Scan { input, options, report: OnceLock::new(), device });
        LazyFrame(Inner::Planned(Arc::new(Plan { scan, steps: Vec::new(), group_by: None, result: OnceLock::new() })))
    }

    /// What the scan under this frame read, once it was executed.
    pub fn scan_report(&self) -> Option<&ScanReport> {
        match &self.0 {
            Inner::Ready(_) => None,
            Inner::Planned(plan) => plan.scan.report.get(),
        }
    }

    /// The plan, while it has not been executed.
    fn pending(&self) -> Option<&Arc<Plan>> {
        match &self.0 {
            Inner::Planned(plan) if plan.result.get().is_none() => Some(plan),
            _ => None,
        }
    }

    fn with_step(&self, step: Step) -> Result<LazyFrame, FrameError> {
        if let Some(plan) = self.pending().filter(|p| p.group_by.is_none()) {
            let mut steps = plan.steps.clone();
            steps.push(step);
            return Ok(LazyFrame(Inner::Planned(Arc::new(Plan {
                scan: plan.scan.clone(),
                steps,
                group_by: None,
                result: OnceLock::new(),
            }))));
        }
        Ok(step.apply(&self.collect()?)?.into())
    }

    /// Rows where `predicate` is true (see [`Frame::filter`]).
    pub fn filter(&self, predicate: &Expr) -> Result<LazyFrame, FrameError> {
        self.with_step(Step::Filter(predicate.clone()))
    }

    /// Projection, or a one-row aggregation when every expression aggregates (see [`Frame::select`]).
    pub fn select(&self, exprs: &[Expr]) -> Result<LazyFrame, FrameError> {
        let aggregates = exprs.iter().filter(|e| e.contains_aggregate()).count();
        if aggregates > 0 && aggregates == exprs.len() {
            return self.group_by(&[], exprs);
        }
        if aggregates > 0 {
            return Err(FrameError::InvalidArgument(
                "select mixes aggregations and row-wise expressions; use group_by for per-group values".into(),
            ));
        }
        self.with_step(Step::Select(exprs.to_vec()))
    }

    /// Adds or replaces columns (see [`Frame::with_columns`]).
    pub fn with_columns(&self, exprs: &[Expr]) -> Result<LazyFrame, FrameError> {
        self.with_step(Step::WithColumns(exprs.to_vec()))
    }

    /// Groups and aggregates (see [`Frame::group_by`]); the aggregations are checked now.
    pub fn group_by(&self, keys: &[String], aggs: &[Expr]) -> Result<LazyFrame, FrameError> {
        let Some(plan) = self.pending().filter(|p| p.group_by.is_none()) else {
            return Ok(self.collect()?.group_by(keys, aggs)?.into());
        };
        let mut names: Vec<String> = keys.to_vec();
        for agg in aggs {
            let (_, _, name) = parse_agg(agg)?;
            names.push(name);
        }
        let fields: Vec<Field> = names.iter().map(|n| Field::new(n, DataType::Null, true)).collect();
        crate::cpu::check_unique_names(&fields)?;
        Ok(LazyFrame(Inner::Planned(Arc::new(Plan {
            scan: plan.scan.clone(),
            steps: plan.steps.clone(),
            group_by: Some(GroupBy { keys: keys.to_vec(), aggs: aggs.to_vec() }),
            result: OnceLock::new(),
        }))))
    }

    /// Streams the rows of a plan without group-by to `emit`, one wave of chunks at a time (the
    /// wave's batches in row order, not concatenated: a sink encodes them as they are) and all
    /// with one schema, without keeping them; nothing is cached. `Ok(false)` when the frame is not
    /// such a plan, or its chunks could not be streamed with one schema (then `emit` may have seen
    /// some rows: the caller drops them and uses [`LazyFrame::collect`]).
    pub fn stream_into(&self, emit: &mut WaveSink<'_>) -> Result<bool, FrameError> {
        let Some(plan) = self.pending().filter(|p| p.group_by.is_none()) else { return Ok(false) };
        let mut options = plan.scan.options.clone();
        if options.fields.is_none() {
            options.fields = required_columns(plan);
        }
        if options.bad_lines == BadLinePolicy::Skip {
            return Ok(false);
        }
        Ok(execute_streaming(plan, &options, false, Some(emit))?.is_some())
    }

    /// The materialized frame: executes the plan on the first call, then returns the cached result.
    pub fn collect(&self) -> Result<Frame, FrameError> {
        match &self.0 {
            Inner::Ready(frame) => Ok(frame.clone()),
            Inner::Planned(plan) => {
                if let Some(frame) = plan.result.get() {
                    return Ok(frame.clone());
                }
                let frame = execute(plan)?;
                Ok(plan.result.get_or_init(|| frame).clone())
            }
        }
    }
}

/// The columns the scan must produce for the plan, or `None` when every column may be needed.
fn required_columns(plan: &Plan) -> Option<Vec<String>> {
    let mut needed: Option<Vec<String>> = plan.group_by.as_ref().map(|g| {
        let mut cols = g.keys.clone();
        g.aggs.iter().for_each(|a| a.columns_into(&mut cols));
        cols
    });
    for step in plan.steps.iter().rev() {
        needed = match step {
            Step::Select(exprs) => {
                let mut cols = Vec::new();
                exprs.iter().for_each(|e| e.columns_into(&mut cols));
                Some(cols)
            }
            Step::Filter(predicate) => needed.map(|mut cols| {
                predicate.columns_into(&mut cols);
                cols
            }),
            Step::WithColumns(exprs) => needed.map(|cols| {
                let defined: Vec<String> = exprs.iter().map(Expr::output_name).collect();
                let mut out: Vec<String> = cols.into_iter().filter(|c| !defined.contains(c)).collect();
                exprs.iter().for_each(|e| e.columns_into(&mut out));
                out
            }),
        };
    }
    needed
}

/// One aggregation split into mergeable partials.
struct Split {
    /// Partial aggregations per chunk, named `__p{i}`.
    partial: Vec<Expr>,
    /// Aggregations of the partials that merge them, keeping the same names.
    merge: Vec<Expr>,
    /// Output name and how to finish each aggregation from the merged partials.
    finish: Vec<(String, Finish)>,
    /// The partial counting rows, which tells a chunk that had no rows.
    rows_partial: usize,
}

enum Finish {
    Column(usize),
    Mean { sum: usize, count: usize },
}

fn split_aggs(aggs: &[Expr]) -> Result<Split, FrameError> {
    let mut split = Split { partial: Vec::new(), merge: Vec::new(), finish: Vec::new(), rows_partial: 0 };
    let add = |split: &mut Split, partial: Expr, merge: AggFn| {
        let i = split.partial.len();
        let name = format!("__p{i}");
        split.partial.push(partial.alias(name.clone()));
        split.merge.push(Expr::col(name.clone()).aggregate(merge).alias(name));
        i
    };
    for agg in aggs {
        let (input, how, name) = parse_agg(agg)?;
        let finish = match (input, how) {
            (None, _) => Finish::Column(add(&mut split, Expr::CountRows, AggFn::Sum)),
            (Some(e), AggFn::Mean) => {
                let sum = add(&mut split, e.clone().cast(DType::Float64).aggregate(AggFn::Sum), AggFn::Sum);
                let count = add(&mut split, e.clone().aggregate(AggFn::Count), AggFn::Sum);
                Finish::Mean { sum, count }
            }
            (Some(e), AggFn::Count) => Finish::Column(add(&mut split, e.clone().aggregate(AggFn::Count), AggFn::Sum)),
            (Some(e), how) => Finish::Column(add(&mut split, e.clone().aggregate(how), how)),
        };
        split.finish.push((name, finish));
    }
    split.rows_partial = add(&mut split, Expr::CountRows, AggFn::Sum);
    Ok(split)
}

/// Without keys every chunk yields one row, even a chunk whose rows were all filtered out; such
/// rows would hold nulls for `first`/`last`, so they are left out of the merge (all but one when
/// no chunk had rows).
fn keep_nonempty_partials(batches: &mut Vec<RecordBatch>, rows_partial: usize) {
    let has_rows = |b: &RecordBatch| {
        let column = b.column(rows_partial);
        column.as_primitive::<Int64Type>().iter().any(|n| n.unwrap_or(0) > 0)
    };
    if batches.iter().any(has_rows) {
        batches.retain(has_rows);
    } else {
        batches.truncate(1);
    }
}

/// A newline-aligned run of one source's bytes.
#[derive(Clone, Debug)]
struct Piece {
    source: usize,
    range: Range<usize>,
}

/// The smallest chunk a scan is cut into: below it, a chunk's fixed costs (a parser, partial
/// aggregates to merge) outweigh spreading the bytes over threads.
const MIN_CHUNK_BYTES: usize = 256 << 10;

/// Bytes per chunk for `total` input bytes: [`CHUNK_BYTES`], or less for an input that would
/// not give every thread a chunk (a stream's batch of a few MB), down to [`MIN_CHUNK_BYTES`].
fn chunk_bytes(total: usize) -> usize {
    (total / rayon::current_num_threads().max(1)).clamp(MIN_CHUNK_BYTES, CHUNK_BYTES)
}

/// Cuts the sources into chunks of about [`chunk_bytes`]; a piece that does not start its source
/// is alone in its chunk, so its line numbers can be fixed up afterwards.
fn chunks(sources: &[JsonSource<'_>]) -> Vec<Vec<Piece>> {
    let target = chunk_bytes(sources.iter().map(|s| s.data.len()).sum());
    let mut out: Vec<Vec<Piece>> = Vec::new();
    let mut open: Vec<Piece> = Vec::new();
    let mut open_bytes = 0;
    for (i, s) in sources.iter().enumerate() {
        let mut start = 0;
        loop {
            let want = start + target;
            let end = if want >= s.data.len() {
                s.data.len()
            } else {
                memchr::memchr(b'\n', &s.data[want..]).map_or(s.data.len(), |k| want + k + 1)
            };
            let piece = Piece { source: i, range: start..end };
            if start > 0 {
                out.push(vec![piece]);
            } else {
                open_bytes += end;
                open.push(piece);
                if open_bytes >= target {
                    out.push(std::mem::take(&mut open));
                    open_bytes = 0;
                }
            }
            start = end;
            if start >= s.data.len() {
                break;
            }
        }
    }
    if !open.is_empty() || out.is_empty() {
        out.push(open);
    }
    out
}

/// The result of one chunk, with line numbers relative to the chunk when it starts mid-source.
struct ChunkOut {
    result: Result<Frame, FrameError>,
    rows: u64,
    bad_lines: Vec<BadLine>,
    /// The source of the chunk's first piece when that piece starts mid-source (then the
    /// chunk's only piece): its line numbers are relative to the piece.
    mid_source: Option<usize>,
    /// When the chunk's last piece stops before its source's end: that source, and the
    /// newlines of the piece, which the line numbers of the source's next pieces start after.
    carried: Option<(usize, u64)>,
}

fn run_chunk(
    input: &dyn ScanInput,
    sources: &[JsonSource<'_>],
    chunk: &[Piece],
    options: &ReadOptions,
    steps: &[Step],
    partial: Option<(&[String], &[Expr])>,
) -> ChunkOut {
    let mid_source = chunk.first().filter(|p| p.range.start > 0).map(|p| p.source);
    let pieces: Vec<JsonSource<'_>> = chunk
        .iter()
        .map(|p| {
            let s = &sources[p.source];
            let first_line = if p.range.start > 0 { 1 } else { s.first_line };
            JsonSource { name: s.name, data: &s.data[p.range.clone()], first_line }
        })
        .collect();
    let read = read_json_lines(&pieces, options);
    for p in chunk {
        input.consumed(p.source, p.range.clone());
    }
    let mut carried = None;
    let (result, rows, bad_lines) = match read {
        Ok(ingested) => {
            // A piece cut before its source's end ends at a newline, so a mid-source one (alone
            // in its chunk) has as many lines as newlines; a cut piece that starts its source
            // shares the chunk with whole sources before it, so its newlines are counted. A
            // chunk that failed needs no count: its error stops the scan.
            carried = chunk.last().filter(|p| p.range.end < sources[p.source].data.len()).map(|p| {
                let newlines = match mid_source {
                    Some(_) => ingested.lines,
                    None => memchr::memchr_iter(b'\n', &sources[p.source].data[p.range.clone()]).count() as u64,
                };
                (p.source, newlines)
            });
            let rows = ingested.frame.num_rows() as u64;
            let result = steps.iter().try_fold(ingested.frame, |f, step| step.apply(&f)).and_then(|f| match partial {
                Some((keys, aggs)) => f.group_by(keys, aggs),
                None => Ok(f),
            });
            (result, rows, ingested.bad_lines)
        }
        Err(e) => (Err(e), 0, Vec::new()),
    };
    ChunkOut { result, rows, bad_lines, mid_source, carried }
}

/// Executes a plan: a streaming pass over the scan when possible, else one eager read.
fn execute(plan: &Plan) -> Result<Frame, FrameError> {
    let scan = &plan.scan;
    let mut options = scan.options.clone();
    if options.fields.is_none() {
        options.fields = required_columns(plan);
    }
    let declared = |f: &String| options.schema.iter().any(|(n, _)| n == f);
    let fully_declared = options.fields.as_ref().is_some_and(|fields| fields.iter().all(declared));
    if let Some(device) = &scan.device {
        // JSON is parsed on the CPU (with the plan's projection); the plan runs on the device.
        let parse_only = Plan { scan: scan.clone(), steps: Vec::new(), group_by: None, result: OnceLock::new() };
        let frame = device.adopt(execute_on_cpu(&parse_only, &options, fully_declared)?);
        let frame = plan.steps.iter().try_fold(frame, |f, step| step.apply(&f))?;
        return match &plan.group_by {
            Some(g) => frame.group_by(&g.keys, &g.aggs),
            None => Ok(frame),
        };
    }
    execute_on_cpu(plan, &options, fully_declared)
}

/// Runs `plan` on the CPU: streaming, or in one eager pass where streaming cannot serve.
fn execute_on_cpu(plan: &Plan, options: &ReadOptions, fully_declared: bool) -> Result<Frame, FrameError> {
    if options.bad_lines == BadLinePolicy::Skip && !fully_declared {
        return execute_eagerly(plan, options);
    }
    match execute_streaming(plan, options, fully_declared, None)? {
        Some(frame) => Ok(frame),
        None => execute_eagerly(plan, options),
    }
}

/// Reads the whole scan in one pass, then runs the plan on it.
fn execute_eagerly(plan: &Plan, options: &ReadOptions) -> Result<Frame, FrameError> {
    let sources = plan.scan.input.sources();
    let ingested = read_json_lines(&sources, options)?;
    let report = ScanReport { rows: ingested.frame.num_rows() as u64, bad_lines: ingested.bad_lines };
    let _ = plan.scan.report.set(report);
    let frame = plan.steps.iter().try_fold(ingested.frame, |f, step| step.apply(&f))?;
    match &plan.group_by {
        Some(g) => frame.group_by(&g.keys, &g.aggs),
        None => Ok(frame),
    }
}

/// The streaming pass; `None` when chunks typed a column differently and the plan must be read
/// in one pass instead (for the exact error line, or the single-pass types).
///
/// With `emit`, the rows of a plan without group-by go to `emit` one wave at a time, all with the
/// first wave's schema, instead of being collected (the returned frame is then empty); `None`
/// also when a later wave's columns do not fit that schema.
fn execute_streaming(
    plan: &Plan,
    options: &ReadOptions,
    fully_declared: bool,
    mut emit: Option<&mut WaveSink<'_>>,
) -> Result<Option<Frame>, FrameError> {
    let input = plan.scan.input.as_ref();
    let sources = input.sources();
    let chunks = chunks(&sources);
    let split = plan.group_by.as_ref().map(|g| split_aggs(&g.aggs)).transpose()?;
    let partial = plan.group_by.as_ref().zip(split.as_ref()).map(|(g, s)| (g.keys.as_slice(), s.partial.as_slice()));
    let wave = rayon::current_num_threads().max(1) * CHUNKS_PER_THREAD;
    let mut lines_before = vec![0u64; sources.len()];
    let mut report = ScanReport::default();
    let mut acc: Option<RecordBatch> = None;
    let mut parts: Vec<RecordBatch> = Vec::new();
    tracing::debug!(chunks = chunks.len(), fields = ?options.fields, grouped = partial.is_some(), "streaming scan");
    for group in chunks.chunks(wave) {
        let outs: Vec<ChunkOut> =
            group.par_iter().map(|c| run_chunk(input, &sources, c, options, &plan.steps, partial)).collect();
        let mut batches = Vec::with_capacity(outs.len() + 1);
        batches.extend(acc.take());
        for out in outs {
            let offset = out.mid_source.map_or(0, |s| lines_before[s] + sources[s].first_line - 1);
            if let Some((s, newlines)) = out.carried {
                lines_before[s] += newlines;
            }
            let frame = match out.result {
                Ok(frame) => frame,
                Err(FrameError::Parse { .. }) if !fully_declared => return Ok(None),
                Err(FrameError::Parse { input, line, message }) => {
                    return Err(FrameError::Parse { input, line: line + offset, message });
                }
                Err(e) => return Err(e),
            };
            report.rows += out.rows;
            report.bad_lines.extend(out.bad_lines.into_iter().map(|b| BadLine { line: b.line + offset, ..b }));
            batches.push(frame.record_batch()?.clone());
        }
        match (&plan.group_by, &split) {
            (Some(g), Some(s)) => {
                if g.keys.is_empty() {
                    keep_nonempty_partials(&mut batches, s.rows_partial);
                }
                let Some(unified) = unify(&batches) else { return Ok(None) };
                acc = Some(crate::groupby::group_by(&concat(unified)?, &g.keys, &s.merge)?);
            }
            _ => match emit.as_mut() {
                Some(emit) => {
                    // The first wave fixes the schema: an empty batch of it leads every later wave.
                    batches.extend(parts.first().cloned());
                    batches.rotate_right(parts.len().min(1));
                    let Some(wave) = unify(&batches) else { return Ok(None) };
                    if let Some(first) = parts.first()
                        && first.schema() != wave[0].schema()
                    {
                        return Ok(None);
                    }
                    if parts.is_empty() {
                        parts.push(wave[0].slice(0, 0));
                    }
                    emit(&wave)?;
                }
                None => parts.extend(batches),
            },
        }
    }
    if emit.is_some() {
        let _ = plan.scan.report.set(report);
        return Ok(Some(Frame::new(RecordBatch::new_empty(parts[0].schema()))));
    }
    let batch = match (&plan.group_by, split) {
        (Some(g), Some(s)) => finish_group_by(acc.expect("at least one chunk"), g.keys.len(), &s)?,
        _ => match unify(&parts) {
            Some(unified) => concat(unified)?,
            None => return Ok(None),
        },
    };
    let _ = plan.scan.report.set(report);
    Ok(Some(Frame::new(batch)))
}

fn concat(batches: Vec<RecordBatch>) -> Result<RecordBatch, FrameError> {
    let schema = batches[0].schema();
    if schema.fields().is_empty() {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        return Ok(RecordBatch::try_new_with_options(schema, vec![], &options)?);
    }
    Ok(concat_batches(&schema, &batches)?)
}

/// Brings batches typed chunk by chunk to one schema: columns in order of first appearance,
/// missing ones null, all-null columns and int64 mixed with float64 cast; `None` on a conflict.
fn unify(batches: &[RecordBatch]) -> Option<Vec<RecordBatch>> {
    let mut columns: Vec<(String, DataType)> = Vec::new();
    for b in batches {
        for (f, a) in b.schema().fields().iter().zip(b.columns()) {
            let all_null = a.null_count() == a.len();
            match columns.iter_mut().find(|(n, _)| n == f.name()) {
                None => columns.push((f.name().clone(), f.data_type().clone())),
                Some((_, t)) if t == f.data_type() || all_null => {}
                Some((_, t)) => {
                    let t_null = batches.iter().all(|b| {
                        b.schema().index_of(f.name()).ok().is_none_or(|i| {
                            let c = b.column(i);
                            c.data_type() != t || c.null_count() == c.len()
                        })
                    });
                    *t = match (&*t, f.data_type()) {
                        _ if t_null => f.data_type().clone(),
                        (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64) => DataType::Float64,
                        _ => return None,
                    };
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(columns.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>()));
    batches
        .iter()
        .map(|b| {
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .map(|(name, t)| match b.schema().index_of(name) {
                    Err(_) => Some(new_null_array(t, b.num_rows())),
                    Ok(i) => {
                        let a = b.column(i);
                        if a.data_type() == t {
                            Some(a.clone())
                        } else if a.null_count() == a.len() {
                            Some(new_null_array(t, a.len()))
                        } else {
                            cast(a, t).ok()
                        }
                    }
                })
                .collect::<Option<_>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            RecordBatch::try_new_with_options(schema.clone(), arrays, &options).ok()
        })
        .collect()
}

/// Turns merged partials into the group-by's output: keys, then one column per aggregation.
fn finish_group_by(merged: RecordBatch, keys: usize, split: &Split) -> Result<RecordBatch, FrameError> {
    let mut fields: Vec<Field> = merged.schema().fields()[..keys].iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = merged.columns()[..keys].to_vec();
    let partial = |i: usize| merged.column(keys + i);
    for (name, finish) in &split.finish {
        let column = match finish {
            Finish::Column(i) => partial(*i).clone(),
            Finish::Mean { sum, count } => {
                let sums = partial(*sum).as_primitive::<Float64Type>();
                let counts = partial(*count).as_primitive::<Int64Type>();
                let means: Float64Array = sums
                    .iter()
                    .zip(counts.iter())
                    .map(|(s, c)| match (s, c) {
                        (Some(s), Some(c)) if c > 0 => Some(s / c as f64),
                        _ => None,
                    })
                    .collect();
                Arc::new(means)
            }
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(merged.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::expr::{BinaryOp, Scalar};

    /// An in-memory input that records which bytes were released.
    #[derive(Debug)]
    struct Bytes {
        data: Vec<u8>,
        released: Mutex<usize>,
    }

    impl ScanInput for Bytes {
        fn sources(&self) -> Vec<JsonSource<'_>> {
            vec![JsonSource { name: "in.jsonl", data: &self.data, first_line: 1 }]
        }

        fn consumed(&self, _index: usize, range: Range<usize>) {
            *self.released.lock().unwrap() += range.len();
        }
    }

    /// About 3.5 chunks of seed-like lines; `status` is an int, `v` is a float or null.
    fn data(bad_line: Option<usize>) -> Vec<u8> {
        let mut s = String::new();
        let mut i = 0;
        while s.len() < CHUNK_BYTES * 7 / 2 {
            if Some(i) == bad_line {
                s.push_str("{\"k\":\"oops\"\n");
            } else {
                let v = if i % 11 == 0 { "null".to_string() } else { format!("{}.5", i % 97) };
                s.push_str(&format!("{{\"k\":\"k{}\",\"status\":{},\"v\":{v},\"pad\":\"{}\"}}\n", i % 13, 200 + i % 400, "x".repeat(40)));
            }
            i += 1;
        }
        s.into_bytes()
    }

    fn scan(data: Vec<u8>, options: ReadOptions) -> (LazyFrame, Arc<Bytes>) {
        let input = Arc::new(Bytes { data, released: Mutex::new(0) });
        (LazyFrame::scan(input.clone(), options), input)
    }

    fn aggs() -> Vec<Expr> {
        vec![
            Expr::col("v").aggregate(AggFn::Mean),
            Expr::col("v").aggregate(AggFn::Min),
            Expr::col("status").aggregate(AggFn::Max),
            Expr::col("status").aggregate(AggFn::Sum),
            Expr::col("v").aggregate(AggFn::Count),
            Expr::col("status").aggregate(AggFn::First),
            Expr::col("status").aggregate(AggFn::Last),
            Expr::CountRows.alias("n"),
        ]
    }

    fn assert_close(a: &Frame, b: &Frame) {
        assert_eq!(a.schema(), b.schema());
        for (name, _) in a.schema() {
            for (x, y) in a.column(&name).unwrap().iter().zip(b.column(&name).unwrap()) {
                match (x, &y) {
                    (Scalar::Float(x), Scalar::Float(y)) => assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{name}: {x} vs {y}"),
                    _ => assert_eq!(x, &y, "{name}"),
                }
            }
        }
    }

    #[test]
    fn streaming_group_by_equals_eager_and_releases_the_input() {
        let bytes = data(None);
        let len = bytes.len();
        let eager = read_json_lines(&[JsonSource { name: "in.jsonl", data: &bytes, first_line: 1 }], &ReadOptions::default())
            .unwrap()
            .frame;
        let predicate = Expr::col("status").binary(BinaryOp::GtEq, Expr::lit(Scalar::Int(300)));
        let derive = [Expr::col("v").binary(BinaryOp::Div, Expr::lit(Scalar::Int(10))).alias("v")];
        let expected = eager.filter(&predicate).unwrap().with_columns(&derive).unwrap().group_by(&["k".into()], &aggs()).unwrap();

        let (lazy, input) = scan(bytes, ReadOptions::default());
        let grouped = lazy.filter(&predicate).unwrap().with_columns(&derive).unwrap().group_by(&["k".into()], &aggs()).unwrap();
        assert!(lazy.scan_report().is_none(), "nothing runs before a materializing call");
        let got = grouped.collect().unwrap();
        assert_close(&got, &expected);
        assert_eq!(*input.released.lock().unwrap(), len);
        assert_eq!(grouped.scan_report().unwrap().rows, eager.num_rows() as u64);

        let total = lazy.select(&[Expr::CountRows, Expr::col("status").aggregate(AggFn::First)]).unwrap().collect().unwrap();
        assert_eq!(total.column("count").unwrap(), vec![Scalar::Int(eager.num_rows() as i64)]);
        assert_eq!(total.column("status_first").unwrap(), vec![Scalar::Int(200)]);
    }

    #[test]
    fn streaming_materialization_equals_eager_read() {
        let bytes = data(None);
        let eager = read_json_lines(&[JsonSource { name: "in.jsonl", data: &bytes, first_line: 1 }], &ReadOptions::default())
            .unwrap()
            .frame;
        let (lazy, _) = scan(bytes, ReadOptions::default());
        assert_close(&lazy.collect().unwrap(), &eager);
        // Cached: a second call does not scan again.
        assert_eq!(lazy.collect().unwrap().num_rows(), eager.num_rows());
    }

    #[test]
    fn streaming_into_a_sink_sees_every_row_once_with_one_schema() {
        let bytes = data(None);
        let eager = read_json_lines(&[JsonSource { name: "in.jsonl", data: &bytes, first_line: 1 }], &ReadOptions::default())
            .unwrap()
            .frame;
        let (lazy, _) = scan(bytes, ReadOptions::default());
        let mut batches = Vec::new();
        assert!(lazy.stream_into(&mut |wave| Ok(batches.extend_from_slice(wave))).unwrap());
        assert!(!batches.is_empty() && batches.iter().all(|b| b.schema() == batches[0].schema()));
        let all = concat(batches).unwrap();
        assert_close(&Frame::new(all), &eager);
        assert_eq!(lazy.scan_report().unwrap().rows, eager.num_rows() as u64);
        let grouped = lazy.group_by(&["k".into()], &[Expr::CountRows]).unwrap();
        assert!(!grouped.stream_into(&mut |_| Ok(())).unwrap(), "a group-by is collected, not streamed");
    }

    #[test]
    fn errors_name_the_exact_line_in_the_last_chunk() {
        // Past the first chunks of any size: the lines of every chunk before it count.
        let data = data(None);
        let lines = data.iter().filter(|&&b| b == b'\n').count();
        let bad = lines - 5;
        let declared = ReadOptions {
            schema: vec![("k".into(), DType::Utf8), ("v".into(), DType::Float64), ("status".into(), DType::Int64)],
            ..Default::default()
        };
        let (lazy, _) = scan(self::data(Some(bad)), declared);
        let e = lazy.group_by(&["k".into()], &aggs()).unwrap().collect().unwrap_err();
        assert!(e.to_string().starts_with(&format!("in.jsonl line {}: ", bad + 1)), "{e}");
    }

    #[test]
    fn errors_name_the_exact_line_in_late_chunks() {
        let bad = 70_000;
        let declared = ReadOptions {
            schema: vec![("k".into(), DType::Utf8), ("v".into(), DType::Float64), ("status".into(), DType::Int64)],
            ..Default::default()
        };
        let (lazy, _) = scan(data(Some(bad)), declared.clone());
        let grouped = lazy.group_by(&["k".into()], &aggs()).unwrap();
        let e = grouped.collect().unwrap_err();
        assert!(e.to_string().starts_with(&format!("in.jsonl line {}: ", bad + 1)), "{e}");

        let (lazy, _) = scan(data(Some(bad)), ReadOptions { bad_lines: BadLinePolicy::Skip, ..declared });
        let grouped = lazy.group_by(&["k".into()], &aggs()).unwrap();
        grouped.collect().unwrap();
        let report = grouped.scan_report().unwrap();
        assert_eq!(report.bad_lines.iter().map(|b| b.line).collect::<Vec<_>>(), [bad as u64 + 1]);

        let (lazy, _) = scan(data(Some(bad)), ReadOptions::default());
        let e = lazy.group_by(&["k".into()], &aggs()).unwrap().collect().unwrap_err();
        assert!(e.to_string().starts_with(&format!("in.jsonl line {}: ", bad + 1)), "{e}");
    }

    #[test]
    fn projection_pushdown_follows_the_plan() {
        let plan = |lazy: &LazyFrame| match &lazy.0 {
            Inner::Planned(p) => required_columns(p),
            Inner::Ready(_) => unreachable!(),
        };
        let (lazy, _) = scan(Vec::new(), ReadOptions::default());
        assert_eq!(plan(&lazy), None);
        let derived = lazy
            .filter(&Expr::col("status").binary(BinaryOp::Gt, Expr::lit(Scalar::Int(1))))
            .unwrap()
            .with_columns(&[Expr::col("v").binary(BinaryOp::Mul, Expr::col("w")).alias("x")])
            .unwrap();
        assert_eq!(plan(&derived), None);
        let grouped = derived.group_by(&["k".into()], &[Expr::col("x").aggregate(AggFn::Max)]).unwrap();
        assert_eq!(plan(&grouped).unwrap(), ["k", "v", "w", "status"]);
        let err = derived.group_by(&["k".into()], &[Expr::col("x")]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
    }

    #[test]
    fn mixed_int_and_float_chunks_unify_to_float() {
        let mut s = String::new();
        while s.len() < CHUNK_BYTES + 1000 {
            s.push_str("{\"v\":1}\n");
        }
        s.push_str("{\"v\":2.5}\n");
        let (lazy, _) = scan(s.into_bytes(), ReadOptions::default());
        let sum = lazy.select(&[Expr::col("v").aggregate(AggFn::Max)]).unwrap().collect().unwrap();
        assert_eq!(sum.column("v_max").unwrap(), vec![Scalar::Float(2.5)]);
        assert_eq!(lazy.collect().unwrap().schema(), vec![("v".into(), DType::Float64)]);
    }
}

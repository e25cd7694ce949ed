//! JSON-lines ingest straight into Arrow columns.
//!
//! A hand-rolled byte-level parser appends each value to its column as it is read (no DOM per
//! row); large inputs are cut at newline boundaries into chunks parsed in parallel with rayon and
//! concatenated. Semantics, identical to one sequential pass:
//! - one JSON object per line; blank lines and a trailing `\r` are ignored; anything else is a bad line;
//! - nested objects flatten to `a.b` columns (recursively); arrays are stored as their JSON text (utf8);
//! - a column's type is that of its first non-null value; integers that fit i64 are int64 (else
//!   float64) and int64 widens to float64 when a float shows up; any other mix is an error
//!   ("field `x`: expected number, found string") for the line where it happens;
//! - `null` and missing fields are nulls; a field listed in `fields` or declared in `schema` that
//!   never appears is a column of nulls (utf8 unless declared);
//! - columns come in order of first appearance, or in the order of `fields` when it is given;
//!   declared columns that never appear come last.
//!
//! Values of fields outside `fields` are skipped with a lighter syntax check (brackets and strings
//! only), which is what makes projection pushdown cheap.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array, NullArray, StringArray,
    TimestampMillisecondArray, new_null_array,
};
use arrow::array::builder::NullBufferBuilder;
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use memchr::{memchr, memchr2};
use rayon::prelude::*;

use crate::error::FrameError;
use crate::expr::DType;
use crate::frame::Frame;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// A named run of JSON-lines bytes.
#[derive(Clone, Copy, Debug)]
pub struct JsonSource<'a> {
    /// File path or stream (e.g. `kafka:topic/3`), used in error messages.
    pub name: &'a str,
    pub data: &'a [u8],
    /// The number errors give the first line of `data`: 1-based within a file; for Kafka,
    /// the first message's offset (each message is one line).
    pub first_line: u64,
}

/// What to do with a line that cannot be parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadLinePolicy {
    /// Fail the whole read with a `Parse` error naming source and line.
    #[default]
    Fail,
    /// Leave the line out and report it in [`Ingested::bad_lines`].
    Skip,
}

/// How to read JSON lines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadOptions {
    /// Projection pushdown: materialize only these (flattened) fields, in this order.
    pub fields: Option<Vec<String>>,
    /// Declared types that override inference (e.g. an int64 epoch as `TimestampMs`).
    pub schema: Vec<(String, DType)>,
    pub bad_lines: BadLinePolicy,
}

/// A line left out under [`BadLinePolicy::Skip`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    pub source: String,
    /// 1-based line number within `source`.
    pub line: u64,
    pub error: String,
    /// The line's bytes, without the line terminator.
    pub text: Vec<u8>,
}

/// The result of [`read_json_lines`]: the good lines as a frame, and the skipped ones.
#[derive(Clone, Debug)]
pub struct Ingested {
    pub frame: Frame,
    pub bad_lines: Vec<BadLine>,
    /// Lines read, blank and bad ones included: the newlines in the sources, plus one for each
    /// source whose last line has no newline.
    pub lines: u64,
}

/// Parses JSON lines from `sources` (in order) into one frame on the CPU backend.
pub fn read_json_lines(sources: &[JsonSource<'_>], options: &ReadOptions) -> Result<Ingested, FrameError> {
    let plan = Plan::new(options);
    let segments = split(sources);
    let chunks = group_chunks(&segments);
    let mut results: Vec<Option<ChunkResult>> = chunks
        .par_iter()
        .map(|range| Some(parse_chunk(&segments[range.clone()], &plan, None)))
        .collect();

    let mut merged = Merged::default();
    let mut first_lines = vec![0u64; segments.len()];
    let mut bad_lines = Vec::new();
    for (k, range) in chunks.iter().enumerate() {
        let mut result = results[k].take().expect("each chunk merged once");
        if result.fatal.is_some() || !merged.compatible(&result) {
            // The chunk saw types differently than a sequential pass would have: parse it again
            // starting from the types the earlier chunks established.
            let hints = merged.hints();
            result = parse_chunk(&segments[range.clone()], &plan, Some(&hints));
        }
        for (offset, lines) in result.seg_lines.iter().enumerate() {
            let s = range.start + offset;
            first_lines[s] = if segments[s].start == 0 {
                sources[segments[s].source].first_line
            } else {
                first_lines[s - 1] + merged.seg_lines[s - 1]
            };
            merged.seg_lines.push(*lines);
        }
        let locate = |bad: &RawBad| {
            let seg = &segments[range.start + bad.seg];
            (sources[seg.source].name.to_string(), first_lines[range.start + bad.seg] + bad.line)
        };
        if let Some(fatal) = &result.fatal {
            let (source, line) = locate(fatal);
            return Err(FrameError::Parse { input: source, line, message: fatal.message.clone() });
        }
        for bad in result.bad.drain(..) {
            let (source, line) = locate(&bad);
            bad_lines.push(BadLine { source, line, error: bad.message, text: bad.text });
        }
        merged.add(result);
    }
    let lines = merged.seg_lines.iter().sum();
    let batch = merged.finish(&plan)?;
    tracing::debug!(rows = batch.num_rows(), columns = batch.num_columns(), bad = bad_lines.len(), "read json lines");
    Ok(Ingested { frame: Frame::new(batch), bad_lines, lines })
}

/// A newline-aligned piece of one source.
struct Segment<'a> {
    source: usize,
    /// Byte offset of `data` in its source (0 for a source's first segment).
    start: usize,
    data: &'a [u8],
}

fn target_chunk_bytes(total: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (total / (threads * 4)).clamp(1 << 20, 32 << 20)
}

fn split<'a>(sources: &[JsonSource<'a>]) -> Vec<Segment<'a>> {
    let target = target_chunk_bytes(sources.iter().map(|s| s.data.len()).sum());
    let mut out = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let mut start = 0;
        while start < s.data.len() {
            let want = start + target;
            let end = if want >= s.data.len() {
                s.data.len()
            } else {
                memchr(b'\n', &s.data[want..]).map_or(s.data.len(), |k| want + k + 1)
            };
            out.push(Segment { source: i, start, data: &s.data[start..end] });
            start = end;
        }
        if s.data.is_empty() {
            out.push(Segment { source: i, start: 0, data: s.data });
        }
    }
    out
}

/// Groups consecutive segments into chunks of about the target size (many small Kafka bodies
/// become one chunk; a big file becomes many).
fn group_chunks(segments: &[Segment<'_>]) -> Vec<Range<usize>> {
    let target = target_chunk_bytes(segments.iter().map(|s| s.data.len()).sum());
    let mut chunks = Vec::new();
    let mut begin = 0;
    let mut size = 0;
    for (i, s) in segments.iter().enumerate() {
        size += s.data.len();
        if size >= target {
            chunks.push(begin..i + 1);
            begin = i + 1;
            size = 0;
        }
    }
    if begin < segments.len() {
        chunks.push(begin..segments.len());
    }
    chunks
}

/// The options, prepared for lookups.
struct Plan {
    fields: Option<Vec<String>>,
    field_set: Option<HashSet<String>>,
    /// Every proper `a.b` prefix of a wanted field: objects worth descending into.
    wanted_prefixes: HashSet<String>,
    declared: HashMap<String, DType>,
    declared_order: Vec<String>,
    skip_bad: bool,
}

impl Plan {
    fn new(o: &ReadOptions) -> Plan {
        let mut wanted_prefixes = HashSet::new();
        for f in o.fields.iter().flatten() {
            for (i, _) in f.match_indices('.') {
                wanted_prefixes.insert(f[..i].to_string());
            }
        }
        Plan {
            fields: o.fields.clone(),
            field_set: o.fields.as_ref().map(|f| f.iter().cloned().collect()),
            wanted_prefixes,
            declared: o.schema.iter().cloned().collect(),
            declared_order: o.schema.iter().map(|(n, _)| n.clone()).collect(),
            skip_bad: o.bad_lines == BadLinePolicy::Skip,
        }
    }

    fn wants_leaf(&self, name: &str) -> bool {
        self.field_set.as_ref().is_none_or(|f| f.contains(name))
    }

    fn wants_object(&self, path: &str) -> bool {
        self.field_set.is_none() || self.wanted_prefixes.contains(path)
    }
}

/// A column's storage type while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    Ts,
}

impl Kind {
    fn from_dtype(d: DType) -> Kind {
        match d {
            DType::Boolean => Kind::Bool,
            DType::Int64 => Kind::Int,
            DType::Float64 => Kind::Float,
            DType::Utf8 => Kind::Str,
            DType::TimestampMs => Kind::Ts,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Null | Kind::Str => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Ts => DType::TimestampMs.to_arrow(),
        }
    }

    fn expected(self, fixed: bool) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "boolean",
            Kind::Int if fixed => "integer",
            Kind::Int | Kind::Float => "number",
            Kind::Str => "string",
            Kind::Ts => "integer (epoch milliseconds)",
        }
    }

    /// The kind of the merged column, or `None` when the two cannot share a column.
    fn unify(self, other: Kind) -> Option<Kind> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Kind::Null, k) | (k, Kind::Null) => Some(k),
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Some(Kind::Float),
            _ => None,
        }
    }
}

/// A column being built. Only the vectors of the current `kind` are used.
struct Col {
    name: String,
    kind: Kind,
    /// Kind it starts from and returns to when its only values are rolled back.
    initial: Kind,
    /// Declared: never changes kind (no int → float widening).
    fixed: bool,
    ints: Vec<i64>,
    floats: Vec<f64>,
    bools: BooleanBufferBuilder,
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    nulls: NullBufferBuilder,
    /// Rows so far: `nulls.len()`, kept here because every line asks each column for it.
    rows: usize,
    non_null: usize,
    /// False while the column exists only because of rolled-back lines.
    live: bool,
}

impl Col {
    fn new(name: String, initial: Kind, fixed: bool, row: usize) -> Col {
        let mut c = Col {
            name,
            kind: initial,
            initial,
            fixed,
            ints: Vec::new(),
            floats: Vec::new(),
            bools: BooleanBufferBuilder::new(0),
            offsets: vec![0],
            bytes: Vec::new(),
            nulls: NullBufferBuilder::new(0),
            rows: 0,
            non_null: 0,
            live: true,
        };
        c.push_nulls(row);
        c
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn push_nulls(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let len = self.len() + n;
        self.nulls.append_n_nulls(n);
        self.rows = len;
        match self.kind {
            Kind::Null => {}
            Kind::Bool => self.bools.append_n(n, false),
            Kind::Int | Kind::Ts => self.ints.resize(len, 0),
            Kind::Float => self.floats.resize(len, 0.0),
            Kind::Str => {
                let last = *self.offsets.last().expect("offsets start with 0");
                self.offsets.resize(len + 1, last);
            }
        }
    }

    /// Switches an all-null column to `kind`, keeping its length.
    fn become_kind(&mut self, kind: Kind) {
        let len = self.len();
        self.kind = kind;
        self.ints.clear();
        self.floats.clear();
        self.bools = BooleanBufferBuilder::new(len);
        self.offsets.clear();
        self.offsets.push(0);
        self.bytes.clear();
        match kind {
            Kind::Null => {}
            Kind::Bool => self.bools.append_n(len, false),
            Kind::Int | Kind::Ts => self.ints.resize(len, 0),
            Kind::Float => self.floats.resize(len, 0.0),
            Kind::Str => self.offsets.resize(len + 1, 0),
        }
    }

    fn mismatch(&self, found: &str) -> String {
        format!("field `{}`: expected {}, found {found}", self.name, self.kind.expected(self.fixed))
    }

    fn push_valid(&mut self) {
        self.nulls.append_non_null();
        self.rows += 1;
        self.non_null += 1;
    }

    fn push_int(&mut self, v: i64) -> Result<(), String> {
        match self.kind {
            Kind::Int | Kind::Ts => self.ints.push(v),
            Kind::Float => self.floats.push(v as f64),
            Kind::Null => {
                self.become_kind(Kind::Int);
                self.ints.push(v);
            }
            _ => return Err(self.mismatch("number")),
        }
        self.push_valid();
        Ok(())
    }

    fn push_float(&mut self, v: f64) -> Result<(), String> {
        match self.kind {
            Kind::Float => self.floats.push(v),
            Kind::Int if !self.fixed => {
                self.floats = self.ints.drain(..).map(|i| i as f64).collect();
                self.kind = Kind::Float;
                self.floats.push(v);
            }
            Kind::Null => {
                self.become_kind(Kind::Float);
                self.floats.push(v);
            }
            _ => return Err(self.mismatch(if matches!(self.kind, Kind::Int | Kind::Ts) { "float" } else { "number" })),
        }
        self.push_valid();
        Ok(())
    }

    fn push_bool(&mut self, v: bool) -> Result<(), String> {
        match self.kind {
            Kind::Bool => self.bools.append(v),
            Kind::Null => {
                self.become_kind(Kind::Bool);
                self.bools.append(v);
            }
            _ => return Err(self.mismatch("boolean")),
        }
        self.push_valid();
        Ok(())
    }

    /// Readies a string value; the caller appends its bytes to `self.bytes`, then calls `end_str`.
    fn begin_str(&mut self, found: &str) -> Result<(), String> {
        match self.kind {
            Kind::Str => Ok(()),
            Kind::Null => {
                self.become_kind(Kind::Str);
                Ok(())
            }
            _ => Err(self.mismatch(found)),
        }
    }

    fn end_str(&mut self) -> Result<(), String> {
        let end = i32::try_from(self.bytes.len())
            .map_err(|_| format!("field `{}`: more than 2 GiB of text in one chunk", self.name))?;
        self.offsets.push(end);
        self.push_valid();
        Ok(())
    }

    /// Drops the bytes of a string value that failed to parse or to fit; the line is rolled back,
    /// and the bytes would otherwise lead the column's next string.
    fn abandon_str(&mut self) {
        self.bytes.truncate(*self.offsets.last().expect("offsets start with 0") as usize);
    }

    /// Drops values from row `row` on (a bad line), restoring the initial kind if nothing is left.
    fn truncate(&mut self, row: usize, removed_non_null: usize) {
        if self.len() <= row {
            return;
        }
        self.nulls.truncate(row);
        self.rows = row;
        self.non_null -= removed_non_null;
        if self.non_null == 0 && self.kind != self.initial {
            self.become_kind(self.initial);
            return;
        }
        match self.kind {
            Kind::Null => {}
            Kind::Bool => self.bools.truncate(row),
            Kind::Int | Kind::Ts => self.ints.truncate(row),
            Kind::Float => self.floats.truncate(row),
            Kind::Str => {
                self.offsets.truncate(row + 1);
                self.bytes.truncate(*self.offsets.last().expect("offsets start with 0") as usize);
            }
        }
    }

    fn finish(mut self, rows: usize) -> Result<ArrayRef, FrameError> {
        let pad = rows - self.len();
        self.push_nulls(pad);
        let nulls = self.nulls.finish();
        Ok(match self.kind {
            Kind::Null => Arc::new(NullArray::new(rows)),
            Kind::Bool => Arc::new(BooleanArray::new(self.bools.finish(), nulls)),
            Kind::Int => Arc::new(Int64Array::new(ScalarBuffer::from(self.ints), nulls)),
            Kind::Ts => Arc::new(TimestampMillisecondArray::new(ScalarBuffer::from(self.ints), nulls)),
            Kind::Float => Arc::new(Float64Array::new(ScalarBuffer::from(self.floats), nulls)),
            Kind::Str => Arc::new(StringArray::try_new(
                OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
                self.bytes.into(),
                nulls,
            )?),
        })
    }
}

const ROOT: u32 = 0;
/// Marker for "this object is not wanted": its contents are skipped.
const SKIP: u32 = u32::MAX;

/// What a key's scalar values go to; resolved on the first scalar value, so that keys that only
/// ever hold objects do not become columns.
enum Leaf {
    Unresolved,
    Skip,
    Col(u32),
}

struct Entry {
    /// Flattened name (`a.b`).
    name: String,
    leaf: Leaf,
    /// Prefix id of the key's object values, or `SKIP`.
    child: u32,
}

struct Prefix {
    path: String,
    keys: FastMap<Box<[u8]>, u32>,
}

/// Remembers which entry the n-th key of the previous line resolved to: lines of one stream
/// usually repeat their keys in the same order, so most lookups are one byte comparison.
struct Slot {
    prefix: u32,
    key: Vec<u8>,
    entry: u32,
}

/// A bad line, located relative to its chunk.
struct RawBad {
    seg: usize,
    /// 0-based line index within the segment.
    line: u64,
    message: String,
    text: Vec<u8>,
}

/// A parsed column: name, storage kind, values.
type ParsedColumn = (String, Kind, ArrayRef);

struct ChunkResult {
    columns: Vec<ParsedColumn>,
    rows: usize,
    /// Lines in each segment of the chunk.
    seg_lines: Vec<u64>,
    bad: Vec<RawBad>,
    fatal: Option<RawBad>,
}

struct Parser<'p> {
    plan: &'p Plan,
    hints: Option<&'p HashMap<String, Kind>>,
    cols: Vec<Col>,
    by_name: FastMap<String, u32>,
    prefixes: Vec<Prefix>,
    entries: Vec<Entry>,
    slots: Vec<Slot>,
    slot: usize,
    row: usize,
    /// Columns given a value in the current line, and whether it was non-null.
    touched: Vec<(u32, bool)>,
    /// Number of columns before the current line.
    cols_before_line: usize,
}

fn err_at(what: &str, pos: usize) -> String {
    format!("{what} at column {}", pos + 1)
}

impl<'p> Parser<'p> {
    fn new(plan: &'p Plan, hints: Option<&'p HashMap<String, Kind>>) -> Self {
        Parser {
            plan,
            hints,
            cols: Vec::new(),
            by_name: FastMap::default(),
            prefixes: vec![Prefix { path: String::new(), keys: FastMap::default() }],
            entries: Vec::new(),
            slots: Vec::new(),
            slot: 0,
            row: 0,
            touched: Vec::new(),
            cols_before_line: 0,
        }
    }

    fn line(&mut self, b: &[u8]) -> Result<(), String> {
        self.slot = 0;
        self.cols_before_line = self.cols.len();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return Err(err_at("expected a JSON object", i));
        }
        i = self.object(b, i, ROOT)?;
        i = skip_ws(b, i);
        if i < b.len() {
            return Err(err_at("unexpected characters after the object", i));
        }
        Ok(())
    }

    /// Parses the object whose `{` is at `i`; returns the position after its `}`.
    fn object(&mut self, b: &[u8], mut i: usize, prefix: u32) -> Result<usize, String> {
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(err_at("expected '\"' to start an object key", i));
            }
            let key_start = i;
            let predicted = if prefix == SKIP { None } else { self.predicted_key(b, i, prefix) };
            let entry = match predicted {
                Some((entry, end)) => {
                    i = end;
                    Some(entry)
                }
                None => {
                    i = skip_string(b, i)?;
                    None
                }
            };
            let key_end = i;
            i = skip_ws(b, i);
            if b.get(i) != Some(&b':') {
                return Err(err_at("expected ':' after object key", i));
            }
            i = skip_ws(b, i + 1);
            let Some(&c) = b.get(i) else {
                return Err(err_at("expected a value", i));
            };
            if prefix == SKIP {
                i = skip_value(b, i)?;
            } else {
                let entry = match entry {
                    Some(entry) => entry,
                    None => self.entry(b, prefix, &b[key_start + 1..key_end - 1], key_start)?,
                };
                if c == b'{' {
                    let child = self.child(entry);
                    i = if child == SKIP { skip_value(b, i)? } else { self.object(b, i, child)? };
                } else {
                    match self.leaf(entry) {
                        None => i = skip_value(b, i)?,
                        Some(col) => i = self.value(b, i, col)?,
                    }
                }
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => return Ok(i + 1),
                _ => return Err(err_at("expected ',' or '}' after value", i)),
            }
        }
    }

    /// When the key whose `"` is at `i` is the one the previous line had in this position, its
    /// entry and the position after its closing quote: the key's bytes are compared once and
    /// never scanned for their end. (The previous line's key ended at that quote, so an equal
    /// prefix followed by `"` is the same complete key.)
    fn predicted_key(&mut self, b: &[u8], i: usize, prefix: u32) -> Option<(u32, usize)> {
        let s = self.slots.get(self.slot)?;
        let end = i + 1 + s.key.len();
        if s.prefix != prefix || b.get(end) != Some(&b'"') || !short_eq(&b[i + 1..end], &s.key) {
            return None;
        }
        self.slot += 1;
        Some((s.entry, end + 1))
    }

    fn entry(&mut self, b: &[u8], prefix: u32, key: &[u8], key_start: usize) -> Result<u32, String> {
        // Only called when [`Parser::predicted_key`] missed: this slot is relearned.
        let n = self.slot;
        self.slot += 1;
        let entry = match self.prefixes[prefix as usize].keys.get(key) {
            Some(&e) => e,
            None => {
                let mut decoded = Vec::with_capacity(key.len());
                parse_string(b, key_start, &mut decoded)?;
                let name = String::from_utf8(decoded).map_err(|_| err_at("invalid UTF-8 in key", key_start))?;
                let e = self.entries.len() as u32;
                let p = &mut self.prefixes[prefix as usize];
                let full = if p.path.is_empty() { name } else { format!("{}.{name}", p.path) };
                p.keys.insert(key.into(), e);
                let child = if self.plan.wants_object(&full) {
                    self.prefixes.push(Prefix { path: full.clone(), keys: FastMap::default() });
                    (self.prefixes.len() - 1) as u32
                } else {
                    SKIP
                };
                self.entries.push(Entry { name: full, leaf: Leaf::Unresolved, child });
                e
            }
        };
        let slot = Slot { prefix, key: key.to_vec(), entry };
        if n < self.slots.len() {
            self.slots[n] = slot;
        } else {
            self.slots.push(slot);
        }
        Ok(entry)
    }

    fn child(&self, e: u32) -> u32 {
        self.entries[e as usize].child
    }

    /// The column for the key's scalar values (created on first use), or `None` when not wanted.
    fn leaf(&mut self, e: u32) -> Option<u32> {
        let entry = &self.entries[e as usize];
        match entry.leaf {
            Leaf::Col(c) => return Some(c),
            Leaf::Skip => return None,
            Leaf::Unresolved => {}
        }
        let full = &entry.name;
        let leaf = if self.plan.wants_leaf(full) {
            let col = match self.by_name.get(full) {
                Some(&c) => c,
                None => {
                    let (initial, fixed) = match self.plan.declared.get(full) {
                        Some(d) => (Kind::from_dtype(*d), true),
                        None => (self.hints.and_then(|h| h.get(full)).copied().unwrap_or(Kind::Null), false),
                    };
                    let c = self.cols.len() as u32;
                    self.cols.push(Col::new(full.clone(), initial, fixed, self.row));
                    self.by_name.insert(full.clone(), c);
                    c
                }
            };
            Leaf::Col(col)
        } else {
            Leaf::Skip
        };
        self.entries[e as usize].leaf = leaf;
        self.leaf(e)
    }

    /// Parses the scalar (or array) at `i` into column `c`.
    fn value(&mut self, b: &[u8], i: usize, c: u32) -> Result<usize, String> {
        let row = self.row;
        let col = &mut self.cols[c as usize];
        let len = col.len();
        if len > row {
            return Err(err_at(&format!("duplicate field `{}`", col.name), i));
        }
        col.push_nulls(row - len);
        let (end, non_null) = match b[i] {
            b'"' => {
                col.begin_str("string").map_err(|m| err_at(&m, i))?;
                let end = parse_string(b, i, &mut col.bytes).and_then(|end| col.end_str().map(|()| end));
                let Ok(end) = end else {
                    col.abandon_str();
                    return end;
                };
                (end, true)
            }
            b'-' | b'0'..=b'9' => {
                let (num, end) = parse_number(b, i)?;
                match num {
                    Number::Int(v) => col.push_int(v),
                    Number::Float(v) => col.push_float(v),
                }
                .map_err(|m| err_at(&m, i))?;
                (end, true)
            }
            b't' if b[i..].starts_with(b"true") => {
                col.push_bool(true).map_err(|m| err_at(&m, i))?;
                (i + 4, true)
            }
            b'f' if b[i..].starts_with(b"false") => {
                col.push_bool(false).map_err(|m| err_at(&m, i))?;
                (i + 5, true)
            }
            b'n' if b[i..].starts_with(b"null") => {
                col.push_nulls(1);
                (i + 4, false)
            }
            b'[' => {
                col.begin_str("array").map_err(|m| err_at(&m, i))?;
                let end = skip_value(b, i)?;
                col.bytes.extend_from_slice(&b[i..end]);
                if let Err(m) = col.end_str() {
                    col.abandon_str();
                    return Err(m);
                }
                (end, true)
            }
            other => return Err(err_at(&format!("unexpected character `{}`", other.escape_ascii()), i)),
        };
        col.live = true;
        self.touched.push((c, non_null));
        Ok(end)
    }

    /// Undoes the current line's values.
    fn rollback(&mut self) {
        let row = self.row;
        let mut touched = std::mem::take(&mut self.touched);
        for &(c, non_null) in &touched {
            self.cols[c as usize].truncate(row, non_null as usize);
        }
        touched.clear();
        self.touched = touched;
        for c in &mut self.cols[self.cols_before_line..] {
            c.live = false;
        }
    }

    fn finish(self) -> Result<(Vec<ParsedColumn>, usize), FrameError> {
        let rows = self.row;
        let mut out = Vec::with_capacity(self.cols.len());
        for c in self.cols.into_iter().filter(|c| c.live) {
            let name = c.name.clone();
            let kind = c.kind;
            out.push((name, kind, c.finish(rows)?));
        }
        Ok((out, rows))
    }
}

fn parse_chunk(segments: &[Segment<'_>], plan: &Plan, hints: Option<&HashMap<String, Kind>>) -> ChunkResult {
    let mut p = Parser::new(plan, hints);
    let mut seg_lines = Vec::with_capacity(segments.len());
    let mut bad = Vec::new();
    let mut fatal = None;
    'segments: for (si, seg) in segments.iter().enumerate() {
        let data = seg.data;
        let mut start = 0;
        let mut line_no = 0u64;
        while start < data.len() {
            let end = memchr(b'\n', &data[start..]).map_or(data.len(), |k| start + k);
            let mut line = &data[start..end];
            start = end + 1;
            line_no += 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Each line is validated just before it is parsed, while it is in the cache from the
            // newline search: a pass over the whole segment first read it from memory once more.
            let result = match simdutf8::basic::from_utf8(line).is_ok() {
                true => p.line(line),
                false => {
                    let at = std::str::from_utf8(line).err().map_or(0, |e| e.valid_up_to());
                    Err(err_at("invalid UTF-8", at))
                }
            };
            match result {
                Ok(()) => {
                    p.row += 1;
                    p.touched.clear();
                }
                Err(message) => {
                    p.rollback();
                    let raw = RawBad { seg: si, line: line_no - 1, message, text: line.to_vec() };
                    if plan.skip_bad {
                        bad.push(raw);
                    } else {
                        fatal = Some(raw);
                        seg_lines.push(line_no);
                        break 'segments;
                    }
                }
            }
        }
        seg_lines.push(line_no);
    }
    match p.finish() {
        Ok((columns, rows)) => ChunkResult { columns, rows, seg_lines, bad, fatal },
        Err(e) => ChunkResult {
            columns: Vec::new(),
            rows: 0,
            seg_lines,
            bad,
            fatal: Some(RawBad { seg: 0, line: 0, message: e.to_string(), text: Vec::new() }),
        },
    }
}

/// Chunks merged so far, in order.
#[derive(Default)]
struct Merged {
    /// Column name, unified kind, and the column's array in each merged chunk (if it had one).
    columns: Vec<(String, Kind, Vec<Option<ArrayRef>>)>,
    index: HashMap<String, usize>,
    chunk_rows: Vec<usize>,
    seg_lines: Vec<u64>,
}

impl Merged {
    fn compatible(&self, r: &ChunkResult) -> bool {
        r.columns
            .iter()
            .all(|(name, kind, _)| self.index.get(name).is_none_or(|&i| self.columns[i].1.unify(*kind).is_some()))
    }

    fn hints(&self) -> HashMap<String, Kind> {
        self.columns.iter().filter(|c| c.1 != Kind::Null).map(|c| (c.0.clone(), c.1)).collect()
    }

    fn add(&mut self, r: ChunkResult) {
        let chunk = self.chunk_rows.len();
        self.chunk_rows.push(r.rows);
        for (name, kind, array) in r.columns {
            let i = *self.index.entry(name.clone()).or_insert_with(|| {
                self.columns.push((name, Kind::Null, Vec::new()));
                self.columns.len() - 1
            });
            let c = &mut self.columns[i];
            c.1 = c.1.unify(kind).expect("checked compatible before merging");
            c.2.resize(chunk, None);
            c.2.push(Some(array));
        }
    }

    fn finish(mut self, plan: &Plan) -> Result<RecordBatch, FrameError> {
        let rows: usize = self.chunk_rows.iter().sum();
        let chunks = self.chunk_rows.len();
        let mut built: HashMap<String, ArrayRef> = HashMap::new();
        let mut order = Vec::new();
        for (name, kind, mut pieces) in self.columns.drain(..) {
            pieces.resize(chunks, None);
            let dt = plan.declared.get(&name).map_or(kind.data_type(), |d| d.to_arrow());
            let parts = pieces
                .into_iter()
                .zip(&self.chunk_rows)
                .map(|(p, &n)| match p {
                    Some(a) if a.data_type() == &dt => Ok(a),
                    Some(a) if a.data_type() != &DataType::Null => Ok(cast(&a, &dt)?),
                    _ => Ok(new_null_array(&dt, n)),
                })
                .collect::<Result<Vec<ArrayRef>, FrameError>>()?;
            let array = match parts.as_slice() {
                [one] => one.clone(),
                _ => concat(&parts.iter().map(|a| a.as_ref()).collect::<Vec<&dyn Array>>())?,
            };
            order.push(name.clone());
            built.insert(name, array);
        }
        let names: Vec<String> = match &plan.fields {
            Some(fields) => fields.clone(),
            None => {
                let extra: Vec<String> = plan.declared_order.iter().filter(|d| !built.contains_key(*d)).cloned().collect();
                order.into_iter().chain(extra).collect()
            }
        };
        let mut fields = Vec::with_capacity(names.len());
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let array = built.remove(&name).unwrap_or_else(|| {
                let dt = plan.declared.get(&name).map_or(DataType::Utf8, |d| d.to_arrow());
                new_null_array(&dt, rows)
            });
            fields.push(Field::new(name, array.data_type().clone(), true));
            columns.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
    }
}

/// Equality of two equally long byte strings, compared 8 bytes at a time in registers: object
/// keys are short, and a library `memcmp` call per key costs more than the comparison.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let (mut words_a, mut words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("chunks of 8"));
    for (x, y) in (&mut words_a).zip(&mut words_b) {
        if word(x) != word(y) {
            return false;
        }
    }
    words_a.remainder().iter().zip(words_b.remainder()).all(|(x, y)| x == y)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Position after the string whose opening quote is at `i` (escapes are skipped, not checked).
fn skip_string(b: &[u8], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    loop {
        match memchr2(b'"', b'\\', &b[j.min(b.len())..]) {
            None => return Err(err_at("unterminated string starting", i)),
            Some(k) if b[j + k] == b'"' => return Ok(j + k + 1),
            Some(k) => j += k + 2,
        }
    }
}

/// Decodes the string whose opening quote is at `i` into `out`; returns the position after it.
fn parse_string(b: &[u8], i: usize, out: &mut Vec<u8>) -> Result<usize, String> {
    let mut j = i + 1;
    loop {
        let Some(k) = memchr2(b'"', b'\\', &b[j..]) else {
            return Err(err_at("unterminated string starting", i));
        };
        out.extend_from_slice(&b[j..j + k]);
        j += k;
        if b[j] == b'"' {
            return Ok(j + 1);
        }
        let esc = j;
        let Some(&c) = b.get(j + 1) else {
            return Err(err_at("unterminated string starting", i));
        };
        j += 2;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hi = hex4(b, j).ok_or_else(|| err_at("invalid \\u escape", esc))?;
                j += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    let lo = (b.get(j..j + 2) == Some(b"\\u")).then(|| hex4(b, j + 2)).flatten();
                    match lo {
                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                            j += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        }
                        _ => return Err(err_at("unpaired surrogate in \\u escape", esc)),
                    }
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err(err_at("unpaired surrogate in \\u escape", esc));
                } else {
                    hi
                };
                let ch = char::from_u32(cp).expect("valid scalar value");
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            other => return Err(err_at(&format!("invalid escape `\\{}`", other.escape_ascii()), esc)),
        };
        out.push(byte);
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i..i + 4)?;
    s.iter().try_fold(0u32, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)?))
}

/// Position after the value at `i`, checking only strings and bracket balance inside containers.
fn skip_value(b: &[u8], i: usize) -> Result<usize, String> {
    match b[i] {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(err_at(if b[i] == b'{' { "unterminated object starting" } else { "unterminated array starting" }, i))
        }
        b'-' | b'0'..=b'9' => parse_number(b, i).map(|(_, end)| end),
        b't' if b[i..].starts_with(b"true") => Ok(i + 4),
        b'f' if b[i..].starts_with(b"false") => Ok(i + 5),
        b'n' if b[i..].starts_with(b"null") => Ok(i + 4),
        other => Err(err_at(&format!("unexpected character `{}`", other.escape_ascii()), i)),
    }
}

#[derive(Debug, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

/// Powers of ten exactly representable as f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Parses a JSON number at `i`; returns it and the position after it.
///
/// Short decimals take the exact fast path (mantissa < 2^53 and |exponent| <= 22: one correctly
/// rounded multiplication or division); everything else goes through the standard library parser.
fn parse_number(b: &[u8], i: usize) -> Result<(Number, usize), String> {
    parse_short_number(b, i).map_or_else(|| parse_any_number(b, i), Ok)
}

/// Any JSON number, digit by digit; errors name what is wrong.
fn parse_any_number(b: &[u8], i: usize) -> Result<(Number, usize), String> {
    let mut j = i;
    let neg = b[j] == b'-';
    if neg {
        j += 1;
    }
    let int_start = j;
    let mut mant: u64 = 0;
    let mut digits = 0u32;
    while j < b.len() && b[j].is_ascii_digit() {
        if digits < 19 {
            mant = mant * 10 + (b[j] - b'0') as u64;
        }
        digits += 1;
        j += 1;
    }
    if j == int_start {
        return Err(err_at("invalid number", i));
    }
    if b[int_start] == b'0' && j - int_start > 1 {
        return Err(err_at("invalid number (leading zero)", i));
    }
    let mut float = false;
    let mut frac = 0i32;
    if b.get(j) == Some(&b'.') {
        float = true;
        j += 1;
        let frac_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            if digits < 19 {
                mant = mant * 10 + (b[j] - b'0') as u64;
                frac += 1;
            }
            digits += 1;
            j += 1;
        }
        if j == frac_start {
            return Err(err_at("invalid number (no digits after '.')", i));
        }
    }
    let mut exp = 0i32;
    if matches!(b.get(j), Some(b'e' | b'E')) {
        float = true;
        j += 1;
        let exp_neg = b.get(j) == Some(&b'-');
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            exp = exp.saturating_mul(10).saturating_add((b[j] - b'0') as i32);
            j += 1;
        }
        if j == exp_start {
            return Err(err_at("invalid number (no digits in exponent)", i));
        }
        if exp_neg {
            exp = -exp;
        }
    }
    let text = || std::str::from_utf8(&b[i..j]).expect("ASCII number");
    if !float {
        if digits <= 18 {
            let v = mant as i64;
            return Ok((Number::Int(if neg { -v } else { v }), j));
        }
        return Ok((text().parse::<i64>().map_or_else(|_| Number::Float(text().parse().expect("valid float")), Number::Int), j));
    }
    let e10 = exp.saturating_sub(frac);
    if digits <= 19 && mant < (1u64 << 53) && (-22..=22).contains(&e10) {
        let m = mant as f64;
        let v = if e10 < 0 { m / POW10[(-e10) as usize] } else { m * POW10[e10 as usize] };
        return Ok((Number::Float(if neg { -v } else { v }), j));
    }
    Ok((Number::Float(text().parse().map_err(|_| err_at("invalid number", i))?), j))
}

/// How many of the 8 bytes in `word` (little-endian: the first byte lowest) are ASCII digits
/// before the first one that is not.
fn leading_digits(word: u64) -> u32 {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Per byte: non-zero unless the high nibble is 3 and the low one at most 9 (adding 6
    // carries into the high nibble only above 9; a carry out of a byte that is not a digit
    // only disturbs the bytes after it, which are not counted).
    let not_digit = ((word & HIGH_NIBBLES) ^ ZEROS) | (((word.wrapping_add(0x0606_0606_0606_0606)) & HIGH_NIBBLES) ^ ZEROS);
    not_digit.trailing_zeros() / 8
}

/// The value of the first `n` (1..=8) ASCII digits of `word`, the first byte most significant.
fn digits_value(word: u64, n: u32) -> u64 {
    // Shifted so the digits fill the high bytes and the low ones read as leading zeros; then
    // adjacent digits, pairs and quadruples are combined, three multiplications in all.
    let mut v = (word.wrapping_sub(0x3030_3030_3030_3030)) << (8 * (8 - n));
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xFFFF_FFFF
}

/// Reads the 8 bytes at `at`, if there are that many.
fn word_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().expect("8 bytes")))
}

/// The common numbers, 8 digits at a time: an optional minus, 1 to 15 integer digits without
/// a leading zero, an optional fraction of 1 to 8 digits, no exponent, at most 15 digits in
/// all (so the mantissa is exact in an f64 and the quotient below correctly rounded). Anything
/// else, and numbers too close to the end of the input to read 8 bytes, gives `None` and is
/// left to the general parser, which also names the errors.
fn parse_short_number(b: &[u8], i: usize) -> Option<(Number, usize)> {
    let neg = b[i] == b'-';
    let start = i + neg as usize;
    let word = word_at(b, start)?;
    let mut int_digits = leading_digits(word);
    if int_digits == 0 || (b[start] == b'0' && int_digits > 1) {
        return None;
    }
    let mut int = digits_value(word, int_digits);
    if int_digits == 8 {
        let next = word_at(b, start + 8)?;
        let more = leading_digits(next);
        if more == 8 {
            return None;
        }
        if more > 0 {
            int = int * POW10_INT[more as usize] + digits_value(next, more);
        }
        int_digits += more;
    }
    let mut j = start + int_digits as usize;
    if b.get(j) != Some(&b'.') {
        if matches!(b.get(j), Some(b'e' | b'E')) {
            return None;
        }
        let v = int as i64;
        return Some((Number::Int(if neg { -v } else { v }), j));
    }
    let word = word_at(b, j + 1)?;
    let frac_digits = leading_digits(word);
    if frac_digits == 0 || frac_digits == 8 || int_digits + frac_digits > 15 {
        return None;
    }
    j += 1 + frac_digits as usize;
    if matches!(b.get(j), Some(b'e' | b'E')) {
        return None;
    }
    // Below 10^15, so the signed conversion (one instruction, unlike the unsigned one) is exact.
    let mantissa = (int * POW10_INT[frac_digits as usize] + digits_value(word, frac_digits)) as i64 as f64;
    let v = mantissa / POW10[frac_digits as usize];
    Some((Number::Float(if neg { -v } else { v }), j))
}

/// Powers of ten as integers, for joining the digit groups of [`parse_short_number`].
const POW10_INT: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{AggFn, Expr, Scalar};

    fn read(data: &str, options: &ReadOptions) -> Result<Ingested, FrameError> {
        read_json_lines(&[JsonSource { name: "data/x.jsonl", data: data.as_bytes(), first_line: 1 }], options)
    }

    fn frame(data: &str) -> Frame {
        read(data, &ReadOptions::default()).unwrap().frame
    }

    fn err(data: &str) -> String {
        read(data, &ReadOptions::default()).unwrap_err().to_string()
    }

    fn skip() -> ReadOptions {
        ReadOptions { bad_lines: BadLinePolicy::Skip, ..Default::default() }
    }

    #[test]
    fn infers_types_in_order_of_first_appearance() {
        let f = frame("{\"s\":\"a\",\"i\":1,\"b\":true}\n\n{\"f\":1.5,\"i\":-2,\"s\":null}\r\n   \n{\"b\":false,\"x\":null}");
        assert_eq!(
            f.schema(),
            vec![
                ("s".into(), DType::Utf8),
                ("i".into(), DType::Int64),
                ("b".into(), DType::Boolean),
                ("f".into(), DType::Float64),
                ("x".into(), DType::Utf8)
            ]
        );
        assert_eq!(f.column("i").unwrap(), vec![Scalar::Int(1), Scalar::Int(-2), Scalar::Null]);
        assert_eq!(f.column("s").unwrap(), vec![Scalar::Text("a".into()), Scalar::Null, Scalar::Null]);
        assert_eq!(f.column("f").unwrap(), vec![Scalar::Null, Scalar::Float(1.5), Scalar::Null]);
        assert_eq!(f.column("x").unwrap(), vec![Scalar::Null; 3]);
    }

    #[test]
    fn counts_every_line_read_blank_and_bad_ones_included() {
        let ingested = read("{\"a\":1}\n\n   \nnot json\n{\"a\":2}", &skip()).unwrap();
        assert_eq!(ingested.lines, 5);
        assert_eq!(ingested.frame.num_rows(), 2);
        assert_eq!(read("{\"a\":1}\n{\"a\":2}\n", &ReadOptions::default()).unwrap().lines, 2);
    }

    #[test]
    fn keys_that_extend_or_shorten_the_previous_lines_keys_are_told_apart() {
        // Each line's n-th key is first compared with the previous line's n-th key: a key that
        // is a prefix of that one, or extends it past an escaped quote, is a different key.
        let f = frame(
            "{\"ab\":1,\"q\\\"\":2}\n{\"a\":3,\"q\\\"x\":4}\n{\"ab\":5,\"q\\\"\":6}\n{\"q\\\"\":7,\"ab\":8}",
        );
        let names: Vec<_> = f.schema().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ab", "q\"", "a", "q\"x"]);
        assert_eq!(f.column("ab").unwrap(), vec![Scalar::Int(1), Scalar::Null, Scalar::Int(5), Scalar::Int(8)]);
        assert_eq!(f.column("q\"").unwrap(), vec![Scalar::Int(2), Scalar::Null, Scalar::Int(6), Scalar::Int(7)]);
        assert_eq!(f.column("a").unwrap(), vec![Scalar::Null, Scalar::Int(3), Scalar::Null, Scalar::Null]);
        assert_eq!(f.column("q\"x").unwrap(), vec![Scalar::Null, Scalar::Int(4), Scalar::Null, Scalar::Null]);
    }

    #[test]
    fn flattens_nested_objects_and_keeps_arrays_as_json_text() {
        let f = frame("{\"a\":{\"b\":1,\"c\":{\"d\":\"x\"}},\"arr\":[1, {\"z\":\"]\"}],\"e\":{}}\n{\"a\":{\"b\":2}}");
        let names: Vec<_> = f.schema().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.b", "a.c.d", "arr"]);
        assert_eq!(f.column("a.b").unwrap(), vec![Scalar::Int(1), Scalar::Int(2)]);
        assert_eq!(f.column("a.c.d").unwrap(), vec![Scalar::Text("x".into()), Scalar::Null]);
        assert_eq!(f.column("arr").unwrap()[0], Scalar::Text("[1, {\"z\":\"]\"}]".into()));
    }

    #[test]
    fn decodes_escapes_and_unicode() {
        let f = frame(r#"{"s":"a\"b\\c\/d\n\t\u00e9\u20ac\ud83d\ude00 ü","k\u0065y":1}"#);
        assert_eq!(f.column("s").unwrap(), vec![Scalar::Text("a\"b\\c/d\n\té€😀 ü".into())]);
        assert_eq!(f.column("key").unwrap(), vec![Scalar::Int(1)]);
        assert!(err(r#"{"s":"\ud83d"}"#).contains("unpaired surrogate"));
        assert!(err(r#"{"s":"\x"}"#).contains("invalid escape `\\x` at column 7"));
    }

    #[test]
    fn short_numbers_parse_as_the_general_parser_does() {
        let padded = |text: &str| format!("{text},\"pad\":0}}");
        let cases = [
            "0", "7", "-7", "42", "12345678", "123456789", "1704067200000", "999999999999999", "-999999999999999",
            "9999999999999999", "77.637", "-0.5", "0.00412", "1142.666", "0.1", "1.2345678", "1.23456789",
            "1234567.12345678", "12345678.1234567", "0.0", "-0.0", "3.", "01", "-", "1e5", "1.5E-3", "2.5e", "00.1",
        ];
        for text in cases {
            let input = padded(text);
            let b = input.as_bytes();
            let general = parse_any_number(b, 0);
            if let Some(short) = parse_short_number(b, 0) {
                assert_eq!(Ok(&short), general.as_ref(), "{text}");
                assert!(matches!(short.0, Number::Float(v) if v.is_sign_negative() == text.starts_with('-')) || matches!(short.0, Number::Int(_)), "{text}");
            }
            assert_eq!(parse_number(b, 0), general, "{text}");
        }
        assert!(parse_short_number(b"77.637,\"a\":1}", 0).is_some(), "the fast path takes the usual numbers");
        assert!(parse_short_number(b"1.5", 0).is_none(), "fewer than 8 bytes left: the general parser");
    }

    #[test]
    fn numbers_widen_and_parse_exactly() {
        let f = frame("{\"v\":1}\n{\"v\":2.5}\n{\"v\":-3}\n{\"v\":1e3}\n{\"v\":12345678901234567890}\n{\"v\":0.1}\n{\"v\":-0.000123}\n{\"v\":1.7976931348623157e308}");
        assert_eq!(
            f.column("v").unwrap(),
            [1.0, 2.5, -3.0, 1000.0, 12345678901234567890.0, 0.1, -0.000123, f64::MAX].map(Scalar::Float).to_vec()
        );
        let f = frame("{\"big\":9223372036854775807,\"neg\":-9223372036854775808}");
        assert_eq!(f.column("big").unwrap(), vec![Scalar::Int(i64::MAX)]);
        assert_eq!(f.column("neg").unwrap(), vec![Scalar::Int(i64::MIN)]);
        assert!(err("{\"v\":01}").contains("leading zero"));
        assert!(err("{\"v\":1.}").contains("no digits after '.'"));
    }

    #[test]
    fn fail_policy_names_source_line_and_problem() {
        assert_eq!(err("{\"a\":1}\n{\"a\":2}\n{\"a\" 3}"), "data/x.jsonl line 3: expected ':' after object key at column 6");
        assert_eq!(err("{\"x\":1}\n\n{\"x\":\"s\"}"), "data/x.jsonl line 3: field `x`: expected number, found string at column 6");
        assert_eq!(err("{\"x\":\"s\"}\n{\"x\":true}"), "data/x.jsonl line 2: field `x`: expected string, found boolean at column 6");
        assert_eq!(err("[1,2]"), "data/x.jsonl line 1: expected a JSON object at column 1");
        assert_eq!(err("{\"a\":1} x"), "data/x.jsonl line 1: unexpected characters after the object at column 9");
        assert_eq!(err("{\"a\":1,\"a\":2}"), "data/x.jsonl line 1: duplicate field `a` at column 12");
        assert!(err("{\"a\":\"open}").contains("unterminated string"));
        let e = read("{\"a\":1", &ReadOptions::default()).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Parse);
    }

    #[test]
    fn skip_policy_collects_bad_lines_and_keeps_good_ones() {
        let data = "{\"a\":1,\"b\":\"x\"}\nnot json\n{\"a\":\"oops\",\"b\":\"y\"}\n{\"a\":2,\"new\":tru}\n{\"a\":3}\n";
        let got = read(data, &skip()).unwrap();
        assert_eq!(got.frame.column("a").unwrap(), vec![Scalar::Int(1), Scalar::Int(3)]);
        assert_eq!(got.frame.column("b").unwrap(), vec![Scalar::Text("x".into()), Scalar::Null]);
        let lines: Vec<u64> = got.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert_eq!(got.bad_lines[0].text, b"not json");
        assert_eq!(got.bad_lines[0].source, "data/x.jsonl");
        assert!(got.bad_lines[1].error.contains("expected number, found string"), "{}", got.bad_lines[1].error);
        // A column that only a bad line introduced does not appear.
        assert!(got.frame.column("new").is_err());
    }

    #[test]
    fn rolled_back_line_does_not_fix_a_column_type() {
        let got = read("{\"a\":\"s\",\"b\":}\n{\"a\":1}", &skip()).unwrap();
        assert_eq!(got.frame.column("a").unwrap(), vec![Scalar::Int(1)]);
        assert_eq!(got.bad_lines.len(), 1);
    }

    #[test]
    fn a_string_that_fails_midway_leaves_no_bytes_behind() {
        // The bad escape comes after text was already decoded into the column's buffer.
        let got = read("{\"a\":\"x\"}\n{\"a\":\"abc\\q\"}\n{\"a\":\"y\"}\n{\"a\":\"unterminated", &skip()).unwrap();
        assert_eq!(got.frame.column("a").unwrap(), vec![Scalar::Text("x".into()), Scalar::Text("y".into())]);
        assert_eq!(got.bad_lines.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn projection_materializes_only_listed_fields() {
        let options = ReadOptions {
            fields: Some(vec!["n.y".into(), "a".into(), "missing".into()]),
            ..Default::default()
        };
        let got = read("{\"a\":1,\"skip\":{\"deep\":[1,{\"q\":\"}\"}]},\"n\":{\"x\":true,\"y\":\"v\"}}\n{\"a\":2,\"skip\":\"zz\"}", &options).unwrap();
        assert_eq!(
            got.frame.schema(),
            vec![("n.y".into(), DType::Utf8), ("a".into(), DType::Int64), ("missing".into(), DType::Utf8)]
        );
        assert_eq!(got.frame.column("n.y").unwrap(), vec![Scalar::Text("v".into()), Scalar::Null]);
        assert_eq!(got.frame.column("missing").unwrap(), vec![Scalar::Null, Scalar::Null]);
    }

    #[test]
    fn declared_schema_overrides_inference() {
        let options = ReadOptions {
            schema: vec![("ts".into(), DType::TimestampMs), ("v".into(), DType::Float64), ("absent".into(), DType::Int64)],
            ..Default::default()
        };
        let got = read("{\"ts\":1700000000000,\"v\":1}\n{\"ts\":1700000000001,\"v\":2}", &options).unwrap();
        assert_eq!(
            got.frame.schema(),
            vec![("ts".into(), DType::TimestampMs), ("v".into(), DType::Float64), ("absent".into(), DType::Int64)]
        );
        assert_eq!(got.frame.column("v").unwrap(), vec![Scalar::Float(1.0), Scalar::Float(2.0)]);
        let e = read("{\"ts\":1.5}", &options).unwrap_err();
        assert!(e.to_string().contains("field `ts`: expected integer (epoch milliseconds), found float"), "{e}");
    }

    #[test]
    fn empty_input_gives_empty_frame() {
        let got = read("", &ReadOptions::default()).unwrap();
        assert_eq!(got.frame.num_rows(), 0);
        assert!(got.frame.schema().is_empty());
        let got = read_json_lines(&[], &ReadOptions { schema: vec![("a".into(), DType::Int64)], ..Default::default() }).unwrap();
        assert_eq!(got.frame.schema(), vec![("a".into(), DType::Int64)]);
        assert_eq!(got.frame.num_rows(), 0);
    }

    #[test]
    fn several_sources_keep_their_names_and_line_numbers() {
        let sources = [
            JsonSource { name: "kafka t/0@5", data: b"{\"a\":1}", first_line: 1 },
            JsonSource { name: "kafka t/0@6", data: b"{\"a\":2}\n{\"a\":", first_line: 1 },
        ];
        let e = read_json_lines(&sources, &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with("kafka t/0@6 line 2: "), "{e}");
        let sources = [JsonSource { name: "f", data: b"{\"a\":1}\n{\"a\":x}", first_line: 41 }];
        let got = read_json_lines(&sources, &skip()).unwrap();
        assert_eq!(got.bad_lines[0].line, 42);
    }

    /// Seed-shaped lines; `every` > 0 puts a conflicting type at that interval.
    fn seed(rows: usize, conflict_every: usize) -> String {
        let mut s = String::with_capacity(rows * 260);
        for i in 0..rows {
            let cpu = if conflict_every > 0 && i % conflict_every == conflict_every - 1 {
                "\"n/a\"".to_string()
            } else if i % 10 == 3 {
                format!("{}", i % 100)
            } else {
                format!("{}.{}", i % 100, i % 7)
            };
            s.push_str(&format!(
                "{{\"company\":\"company_{:03}\",\"cpu_utilization\":{cpu},\"cpu_utilization_is_error\":false,\"latency\":{}.5,\"latency_is_error\":{},\"packet_loss\":0.01,\"packet_loss_is_error\":false,\"throughput\":830.1,\"throughput_is_error\":false,\"timestamp\":{}}}\n",
                i % 100,
                i % 50,
                i % 3 == 0,
                1_700_000_000_000u64 + i as u64
            ));
        }
        s
    }

    #[test]
    fn parallel_chunks_equal_sequential_semantics() {
        // ~10 MB: several chunks.
        let data = seed(40_000, 0);
        let got = read(&data, &ReadOptions::default()).unwrap().frame;
        assert_eq!(got.num_rows(), 40_000);
        assert_eq!(got.schema()[1], ("cpu_utilization".into(), DType::Float64));
        let cpu = got.column("cpu_utilization").unwrap();
        assert_eq!(cpu[3], Scalar::Float(3.0));
        assert_eq!(cpu[39_999], Scalar::Float(99.0 + 0.1 * (39_999 % 7) as f64));
        let ts = got.column("timestamp").unwrap();
        assert_eq!(ts[39_999], Scalar::Int(1_700_000_039_999));

        // The first conflicting value is reported at its exact line even in a late chunk.
        let e = read(&seed(40_000, 37_000), &ReadOptions::default()).unwrap_err();
        assert_eq!(e.to_string(), "data/x.jsonl line 37000: field `cpu_utilization`: expected number, found string at column 44");
        let got = read(&seed(40_000, 9_000), &skip()).unwrap();
        assert_eq!(got.bad_lines.iter().map(|b| b.line).collect::<Vec<_>>(), [9_000, 18_000, 27_000, 36_000]);
        assert_eq!(got.frame.num_rows(), 40_000 - 4);
    }

    #[test]
    fn conflicting_types_across_chunks_follow_the_first_chunk() {
        // The first ~half says string, a later chunk alone would infer number.
        let mut data = String::new();
        for i in 0..40_000 {
            if i < 20_000 {
                data.push_str(&format!("{{\"v\":\"s{i}\",\"pad\":\"{}\"}}\n", "p".repeat(200)));
            } else {
                data.push_str(&format!("{{\"v\":{i},\"pad\":\"{}\"}}\n", "p".repeat(200)));
            }
        }
        let e = read(&data, &ReadOptions::default()).unwrap_err();
        assert_eq!(e.to_string(), "data/x.jsonl line 20001: field `v`: expected string, found number at column 6");
        let got = read(&data, &skip()).unwrap();
        assert_eq!(got.bad_lines.len(), 20_000);
        assert_eq!(got.frame.num_rows(), 20_000);
    }

    /// Mutated seed lines and random bytes, declared and inferred: never a panic, and every
    /// failure is a parse error naming the input and a line inside it.
    #[test]
    fn mangled_input_gives_line_errors_never_panics() {
        let base = seed(200, 0).into_bytes();
        let mut x = 0x9E3779B97F4A7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let declared = ReadOptions {
            schema: vec![("cpu_utilization".into(), DType::Float64), ("timestamp".into(), DType::TimestampMs)],
            fields: Some(vec!["company".into(), "cpu_utilization".into(), "timestamp".into()]),
            ..Default::default()
        };
        let alphabet = b"{}[]\":,.-+eE0123456789 \n\tnultrfasx\\u\xc3\xa9\xff";
        for round in 0..400 {
            let mut data = if round % 4 == 3 {
                (0..(next() % 300)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
            } else {
                base.clone()
            };
            for _ in 0..1 + next() % 8 {
                let at = (next() % data.len().max(1) as u64) as usize;
                match next() % 3 {
                    0 if !data.is_empty() => data[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 if !data.is_empty() => {
                        data.remove(at);
                    }
                    _ => data.insert(at.min(data.len()), alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            for options in [ReadOptions::default(), declared.clone()] {
                if let Err(e) = read_json_lines(&[JsonSource { name: "fuzz", data: &data, first_line: 1 }], &options) {
                    match e {
                        FrameError::Parse { input, line, .. } => assert!(input == "fuzz" && (1..=lines).contains(&line), "{input} {line}"),
                        other => panic!("not a parse error: {other}"),
                    }
                }
            }
        }
    }

    /// Ingest and group-by throughput on seed-shaped data: `cargo test -p sluice-frame --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        let data = seed(1_000_000, 0);
        let mb = data.len() as f64 / 1e6;
        let options = ReadOptions { schema: vec![("timestamp".into(), DType::TimestampMs)], ..Default::default() };
        let mut best = f64::MAX;
        let mut frame = None;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            frame = Some(read(&data, &options).unwrap().frame);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let t = std::time::Instant::now();
        single.install(|| read(&data, &options).unwrap());
        let one = t.elapsed().as_secs_f64();
        println!("ingest: {mb:.0} MB, {:.0} MB/s ({} threads), {:.0} MB/s (1 thread)", mb / best, rayon::current_num_threads(), mb / one);

        let frame = frame.unwrap();
        let aggs = [
            Expr::col("cpu_utilization").aggregate(AggFn::Mean).alias("cpu_mean"),
            Expr::col("latency").aggregate(AggFn::Max),
            Expr::col("throughput").aggregate(AggFn::Sum),
            Expr::CountRows.alias("n"),
        ];
        let t = std::time::Instant::now();
        let g = frame.group_by(&["company".into()], &aggs).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(g.num_rows(), 100);
        println!("group_by: {} rows in {:.1} ms, {:.0} M rows/s", frame.num_rows(), secs * 1e3, frame.num_rows() as f64 / secs / 1e6);
    }
}

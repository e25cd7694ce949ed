//! Parquet sink with stage-then-commit semantics.
//!
//! A handler's writes must become visible only when it succeeds (and, for Kafka, before offsets
//! are committed), so writing is split in two: [`write_staged`] writes hidden, fsynced temp files;
//! [`commit_staged`] links them to their final names without ever overwriting and fsyncs the
//! directory; [`discard_staged`] drops them when the handler fails.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use std::sync::{Arc, mpsc};

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
use parquet::errors::ParquetError;
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;
use parquet::basic::{Compression as ParquetCompression, Encoding, PageType, ZstdLevel};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::schema::types::ColumnPath;
use parquet::file::properties::WriterProperties;

use crate::error::FrameError;
use crate::frame::Frame;

/// Column-chunk compression of written files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zstd at the given level (1..=22).
    Zstd(i32),
    Snappy,
    None,
}

/// How a sink lays out files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    pub compression: Compression,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Split a frame into several files of at most this many rows.
    pub max_rows_per_file: Option<usize>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { compression: Compression::Zstd(3), row_group_rows: 1 << 20, max_rows_per_file: None }
    }
}

/// A file written under a temporary name, waiting for [`commit_staged`] or [`discard_staged`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedFile {
    pub temp_path: PathBuf,
    pub final_path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

fn properties(config: &SinkConfig) -> Result<WriterProperties, FrameError> {
    let compression = match config.compression {
        Compression::Zstd(level) => ParquetCompression::ZSTD(
            ZstdLevel::try_new(level).map_err(|e| FrameError::InvalidArgument(format!("zstd level {level}: {e}")))?,
        ),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    if config.row_group_rows == 0 || config.max_rows_per_file == Some(0) {
        return Err(FrameError::InvalidArgument("sink row_group_rows and max_rows_per_file must be positive".into()));
    }
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .build())
}

/// The hidden name a file has while it is written: `.{name}.{pid}.tmp`. The writer's process
/// id lets a restart tell the staging files a killed process left behind from live ones.
pub fn staging_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// The process id in a name [`staging_path`] made for a Parquet or dead-letter (`.jsonl`)
/// file, if it is one.
fn staging_owner(file_name: &str) -> Option<u32> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, pid) = inner.rsplit_once('.')?;
    let stem = name.strip_suffix(".parquet").or_else(|| name.strip_suffix(".jsonl"))?;
    if stem.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Removes the staging files that processes no longer running on this machine left in
/// `dir` and its hive partition directories (`col=value`): a `kill -9` between staging and
/// commit leaves them behind. Nothing else is touched. Returns the files removed.
pub fn remove_stale_staging(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() && !name.starts_with('.') && name.contains('=') {
            removed.extend(remove_stale_staging(&entry.path())?);
        } else if kind.is_file()
            && let Some(pid) = staging_owner(&name)
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Writes `frame` as Parquet into `dir` (created if missing) under hidden temporary names
/// (see [`staging_path`]), each fsynced; the final names are `{file_stem}-{n:05}.parquet`.
///
/// With `max_rows_per_file` the frame is split into several files. The Arrow schema is embedded,
/// so engine dtypes round-trip (timestamp-ms is Parquet `TIMESTAMP(MILLIS)`). An empty frame
/// writes no file. The caller chooses a stem that is unique per batch (so a replay cannot clash).
pub fn write_staged(frame: &Frame, dir: &Path, file_stem: &str, config: &SinkConfig) -> Result<Vec<StagedFile>, FrameError> {
    let props = properties(config)?;
    std::fs::create_dir_all(dir).map_err(|e| FrameError::io("create directory", dir, e))?;
    let batch = frame.record_batch()?;
    let rows = batch.num_rows();
    let per_file = config.max_rows_per_file.unwrap_or(rows.max(1));
    let mut staged = Vec::new();
    for (n, offset) in (0..rows).step_by(per_file).enumerate() {
        let part = batch.slice(offset, per_file.min(rows - offset));
        let temp_path = staging_path(dir, &format!("{file_stem}-{n:05}.parquet"));
        let final_path = dir.join(format!("{file_stem}-{n:05}.parquet"));
        let file = File::create(&temp_path).map_err(|e| FrameError::io("create", &temp_path, e))?;
        let result = (|| {
            let file = write_parallel(file, &part, &props, config.row_group_rows)?;
            file.sync_all().map_err(|e| FrameError::io("fsync", &temp_path, e))?;
            let bytes = file.metadata().map_err(|e| FrameError::io("stat", &temp_path, e))?.len();
            Ok::<_, FrameError>(bytes)
        })();
        match result {
            Ok(bytes) => staged.push(StagedFile { temp_path, final_path, rows: part.num_rows() as u64, bytes }),
            Err(e) => {
                staged.push(StagedFile { temp_path, final_path, rows: 0, bytes: 0 });
                discard_staged(&staged);
                return Err(e);
            }
        }
    }
    tracing::debug!(dir = %dir.display(), files = staged.len(), rows, "staged parquet");
    Ok(staged)
}

/// Writes `batch` as one Parquet file, encoding the columns of each row group in parallel (the
/// encoding, zstd included, is most of a write's cost); the Arrow schema is embedded as
/// `ArrowWriter` does, so readers get the engine dtypes back.
fn write_parallel(file: File, batch: &RecordBatch, props: &WriterProperties, row_group_rows: usize) -> Result<File, FrameError> {
    let mut out = ParallelWriter::new(file, batch.schema(), props)?;
    out.write(std::slice::from_ref(batch), row_group_rows)?;
    out.into_file()
}

/// The column chunks of a batch's row groups, in order, or why encoding them failed.
type EncodedGroups = Result<Vec<Vec<ArrowColumnChunk>>, FrameError>;

/// A Parquet file writer that encodes the column chunks of a row group in parallel, on the
/// engine's rayon pool (so `--threads` bounds it too).
///
/// [`ParallelWriter::start`] returns while the batch is still being encoded, so the caller can
/// produce the next batch meanwhile: a streaming scan parses its next wave while this one is
/// encoded, and neither phase's serial tail (concatenating a wave, the largest column's
/// chunk) leaves a core idle. At most one batch is in flight; the next call waits for it.
///
/// A column whose dictionary outgrew its page limit in a row group (ids, timestamps, URLs: the
/// writer then falls back to plain pages) is written without dictionary from then on: hashing
/// every value into a dictionary that is abandoned costs time and makes the chunk larger.
struct ParallelWriter {
    writer: SerializedFileWriter<File>,
    /// The file's properties with the dictionary choices learned so far.
    props: WriterProperties,
    factory: ArrowRowGroupWriterFactory,
    schema: arrow::datatypes::SchemaRef,
    /// Row groups handed to the encoder so far, appended or in flight.
    row_groups: usize,
    in_flight: Option<mpsc::Receiver<EncodedGroups>>,
}

impl ParallelWriter {
    fn new(file: File, schema: arrow::datatypes::SchemaRef, props: &WriterProperties) -> Result<ParallelWriter, FrameError> {
        let mut props = props.clone();
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let parquet_schema = ArrowSchemaConverter::new().with_coerce_types(props.coerce_types()).convert(&schema)?;
        let writer = SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), Arc::new(props.clone()))?;
        let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
        Ok(ParallelWriter { writer, props, factory, schema, row_groups: 0, in_flight: None })
    }

    /// Appends the rows of `batches` (in order, of this file's schema) as row groups of at most
    /// `row_group_rows` rows, encoded before it returns.
    fn write(&mut self, batches: &[RecordBatch], row_group_rows: usize) -> Result<(), FrameError> {
        self.start(batches, row_group_rows)?;
        self.wait()
    }

    /// Starts encoding the rows of `batches` (in order, of this file's schema) as row groups of
    /// at most `row_group_rows` rows, after appending the rows still in flight; errors of these
    /// rows surface at the next call or [`Self::wait`]. A row group spanning several batches is
    /// encoded from each in turn, never concatenated.
    ///
    /// On a rayon worker (a caller already inside the pool) it encodes before returning, as
    /// waiting there for a task queued on the same pool could wait forever.
    fn start(&mut self, batches: &[RecordBatch], row_group_rows: usize) -> Result<(), FrameError> {
        self.wait()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let groups = rows.div_ceil(row_group_rows);
        let mut jobs = Vec::new();
        for n in 0..groups {
            let offset = n * row_group_rows;
            let writers = self.factory.create_column_writers(self.row_groups + n)?;
            let mut leaves: Vec<Vec<ArrowLeafColumn>> = writers.iter().map(|_| Vec::new()).collect();
            for part in slice_rows(batches, offset, row_group_rows.min(rows - offset)) {
                let mut leaf_index = 0;
                for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                    for leaf in compute_leaves(field, column)? {
                        leaves[leaf_index].push(leaf);
                        leaf_index += 1;
                    }
                }
            }
            jobs.extend(writers.into_iter().zip(leaves).map(|(writer, leaves)| (n, writer, leaves)));
        }
        self.row_groups += groups;
        if rayon::current_thread_index().is_some() {
            let encoded = encode_groups(jobs, groups);
            return self.append(encoded);
        }
        let (done, receiver) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            // The receiver is gone only when the writer was dropped (a discarded file).
            let _ = done.send(encode_groups(jobs, groups));
        });
        self.in_flight = Some(receiver);
        Ok(())
    }

    /// Waits for the batch in flight, if any, and appends its row groups to the file.
    fn wait(&mut self) -> Result<(), FrameError> {
        let Some(receiver) = self.in_flight.take() else { return Ok(()) };
        let encoded = receiver
            .recv()
            .unwrap_or_else(|_| Err(ParquetError::General("the Parquet encoding task ended without a result".into()).into()));
        self.append(encoded)
    }

    fn append(&mut self, encoded: EncodedGroups) -> Result<(), FrameError> {
        let mut fell_back = Vec::new();
        for chunks in encoded? {
            let mut row_group = self.writer.next_row_group()?;
            for chunk in chunks {
                let metadata = &chunk.close().metadata;
                if dictionary_fell_back(metadata) {
                    fell_back.push(metadata.column_path().clone());
                }
                chunk.append_to_row_group(&mut row_group)?;
            }
            row_group.close()?;
        }
        if !fell_back.is_empty() {
            self.disable_dictionary(fell_back)?;
        }
        Ok(())
    }

    /// Writes the columns `paths` without dictionary in the row groups still to come.
    ///
    /// The column writers take their properties from a file writer, so the new ones come from
    /// a writer over `io::sink()` that holds the updated properties; its chunks are appended
    /// to this file like any other (chunk properties live in each chunk's own metadata).
    fn disable_dictionary(&mut self, paths: Vec<ColumnPath>) -> Result<(), FrameError> {
        tracing::debug!(columns = ?paths, "dictionary fell back to plain; writing these columns without dictionary");
        let mut builder = self.props.clone().into_builder();
        for path in paths {
            builder = builder.set_column_dictionary_enabled(path, false);
        }
        self.props = builder.build();
        let template = SerializedFileWriter::new(std::io::sink(), self.writer.schema_descr().root_schema_ptr(), Arc::new(self.props.clone()))?;
        self.factory = ArrowRowGroupWriterFactory::new(&template, self.schema.clone());
        Ok(())
    }

    /// Appends what is in flight, writes the footer and hands back the file.
    fn into_file(mut self) -> Result<File, FrameError> {
        self.wait()?;
        Ok(self.writer.into_inner()?)
    }
}

/// Whether a chunk's dictionary outgrew its page limit, so that its later data pages were
/// written plain.
fn dictionary_fell_back(chunk: &ColumnChunkMetaData) -> bool {
    let is_dictionary = |encoding| matches!(encoding, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY);
    if chunk.dictionary_page_offset().is_none() {
        return false;
    }
    match (chunk.page_encoding_stats(), chunk.page_encoding_stats_mask()) {
        (Some(pages), _) => pages
            .iter()
            .any(|p| matches!(p.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2) && !is_dictionary(p.encoding)),
        (None, Some(mask)) => !(mask.is_only(Encoding::PLAIN_DICTIONARY) || mask.is_only(Encoding::RLE_DICTIONARY)),
        (None, None) => false,
    }
}

/// Encodes every (row group, column) pair in parallel, each column chunk from its leaves in
/// order; the chunks come back grouped by row group, each group's columns in schema order.
fn encode_groups(jobs: Vec<(usize, ArrowColumnWriter, Vec<ArrowLeafColumn>)>, groups: usize) -> EncodedGroups {
    let encoded: Vec<(usize, ArrowColumnChunk)> = jobs
        .into_par_iter()
        .map(|(group, mut writer, leaves)| {
            for leaf in &leaves {
                writer.write(leaf)?;
            }
            Ok((group, writer.close()?))
        })
        .collect::<Result<_, FrameError>>()?;
    let mut by_group: Vec<Vec<ArrowColumnChunk>> = (0..groups).map(|_| Vec::new()).collect();
    for (group, chunk) in encoded {
        by_group[group].push(chunk);
    }
    Ok(by_group)
}

/// Rows `offset..offset + len` of `batches` taken as one sequence, as zero-copy slices of the
/// batches they fall in (empty slices left out).
fn slice_rows(batches: &[RecordBatch], offset: usize, len: usize) -> Vec<RecordBatch> {
    let mut parts = Vec::new();
    let (mut skip, mut left) = (offset, len);
    for batch in batches {
        if left == 0 {
            break;
        }
        if skip >= batch.num_rows() {
            skip -= batch.num_rows();
            continue;
        }
        let take = left.min(batch.num_rows() - skip);
        parts.push(batch.slice(skip, take));
        left -= take;
        skip = 0;
    }
    parts
}

/// Writes batches that arrive one after another (a streaming plan's output) as staged Parquet
/// files, holding at most one batch besides the caller's: each batch becomes one or more row
/// groups, encoded while the caller produces the next one, and a new file starts at
/// `max_rows_per_file`. Files are named as by [`write_staged`].
pub struct StagedStream {
    dir: PathBuf,
    file_stem: String,
    config: SinkConfig,
    props: WriterProperties,
    open: Option<(ParallelWriter, StagedFile)>,
    staged: Vec<StagedFile>,
}

impl StagedStream {
    /// Prepares a stream into `dir` (created if missing); no file exists until rows arrive.
    pub fn new(dir: &Path, file_stem: &str, config: &SinkConfig) -> Result<StagedStream, FrameError> {
        let props = properties(config)?;
        std::fs::create_dir_all(dir).map_err(|e| FrameError::io("create directory", dir, e))?;
        Ok(StagedStream { dir: dir.to_path_buf(), file_stem: file_stem.to_string(), config: config.clone(), props, open: None, staged: Vec::new() })
    }

    /// Appends the rows of `batches` (in order; every batch of the schema of the first one),
    /// as row groups encoded while the caller produces the next batches.
    pub fn push(&mut self, batches: &[RecordBatch]) -> Result<(), FrameError> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut offset = 0;
        while offset < rows {
            if self.open.is_none() {
                let n = self.staged.len();
                let final_path = self.dir.join(format!("{}-{n:05}.parquet", self.file_stem));
                let temp_path = staging_path(&self.dir, &format!("{}-{n:05}.parquet", self.file_stem));
                let file = File::create(&temp_path).map_err(|e| FrameError::io("create", &temp_path, e))?;
                let staged = StagedFile { temp_path, final_path, rows: 0, bytes: 0 };
                self.open = Some((ParallelWriter::new(file, batches[0].schema(), &self.props)?, staged));
            }
            let (writer, staged) = self.open.as_mut().expect("opened above");
            let room = self.config.max_rows_per_file.map_or(usize::MAX, |max| max - staged.rows as usize);
            let take = room.min(rows - offset);
            writer.start(&slice_rows(batches, offset, take), self.config.row_group_rows)?;
            staged.rows += take as u64;
            offset += take;
            if Some(staged.rows as usize) == self.config.max_rows_per_file {
                self.close_open()?;
            }
        }
        Ok(())
    }

    /// Closes and fsyncs the open file; it joins the staged files even when that fails (the
    /// last rows' encoding, in flight until now, or the fsync), so that a discard removes it.
    fn close_open(&mut self) -> Result<(), FrameError> {
        let Some((writer, mut staged)) = self.open.take() else { return Ok(()) };
        let closed = writer.into_file().and_then(|file| {
            file.sync_all().map_err(|e| FrameError::io("fsync", &staged.temp_path, e))?;
            Ok(file.metadata().map_err(|e| FrameError::io("stat", &staged.temp_path, e))?.len())
        });
        staged.bytes = *closed.as_ref().unwrap_or(&0);
        self.staged.push(staged);
        closed.map(|_| ())
    }

    /// Closes and fsyncs the last file; the staged files wait for [`commit_staged`]. On an error
    /// every file of the stream is removed.
    pub fn finish(mut self) -> Result<Vec<StagedFile>, FrameError> {
        match self.close_open() {
            Ok(()) => Ok(std::mem::take(&mut self.staged)),
            Err(error) => {
                self.discard();
                Err(error)
            }
        }
    }

    /// Removes every file written so far.
    pub fn discard(mut self) {
        if let Some((_, staged)) = self.open.take() {
            self.staged.push(staged);
        }
        discard_staged(&self.staged);
    }
}

/// The directory name Hive gives a null partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Splits `batch` by the values of `columns`, Hive style: each part comes with its directory
/// `col=value/…` (relative) and without the partition columns, which readers rebuild from the
/// path. Values are percent-escaped except `[A-Za-z0-9_.-]`, so no value can name another
/// directory (`/`, `..` and `=` are escaped or harmless after `col=`).
pub fn split_by_partition(batch: &RecordBatch, columns: &[String]) -> Result<Vec<(PathBuf, RecordBatch)>, FrameError> {
    let schema = batch.schema();
    let available = || schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    let mut key_columns = Vec::with_capacity(columns.len());
    for name in columns {
        let index = schema.index_of(name).map_err(|_| FrameError::ColumnNotFound { name: name.clone(), available: available() })?;
        key_columns.push(index);
    }
    let kept: Vec<usize> = (0..schema.fields().len()).filter(|i| !key_columns.contains(i)).collect();
    if kept.is_empty() {
        return Err(FrameError::InvalidArgument(format!(
            "partition-by {columns:?} leaves no column to write; the frame has only [{}]",
            available().join(", ")
        )));
    }
    let options = arrow::util::display::FormatOptions::default();
    let formatters = key_columns
        .iter()
        .map(|&i| arrow::util::display::ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups: std::collections::BTreeMap<PathBuf, Vec<u32>> = std::collections::BTreeMap::new();
    for row in 0..batch.num_rows() {
        let mut dir = PathBuf::new();
        for (formatter, &index) in formatters.iter().zip(&key_columns) {
            let value = if batch.column(index).is_null(row) { NULL_PARTITION.to_string() } else { escape_partition_value(&formatter.value(row).to_string()) };
            dir.push(format!("{}={value}", schema.field(index).name()));
        }
        groups.entry(dir).or_default().push(row as u32);
    }
    let kept_schema = Arc::new(schema.project(&kept)?);
    groups
        .into_iter()
        .map(|(dir, rows)| {
            let rows = arrow::array::UInt32Array::from(rows);
            let columns = kept
                .iter()
                .map(|&i| arrow::compute::take(batch.column(i).as_ref(), &rows, None))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((dir, RecordBatch::try_new(kept_schema.clone(), columns)?))
        })
        .collect()
}

/// Percent-escapes every byte of `value` outside `[A-Za-z0-9_.-]`.
fn escape_partition_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// Creates the hive partition directory `dir/relative` and makes its new entries durable
/// (fsync of each parent that gained one), so a committed file's directory survives a crash.
pub fn create_partition_dir(dir: &Path, relative: &Path) -> Result<PathBuf, FrameError> {
    let mut current = dir.to_path_buf();
    for part in relative.components() {
        let parent = current.clone();
        current.push(part);
        match std::fs::create_dir(&current) {
            Ok(()) => File::open(&parent).and_then(|d| d.sync_all()).map_err(|e| FrameError::io("fsync directory", &parent, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FrameError::io("create directory", &current, e)),
        }
    }
    Ok(current)
}

/// Rows held in memory before they are encoded as a row group of a [`RollingFile`], at most.
const ROLLING_BUFFER_BYTES: usize = 64 << 20;

/// A Parquet file that stays open across batches: a stream's sink file between two rolls.
/// Appended rows wait in memory until they fill a row group (or [`ROLLING_BUFFER_BYTES`]), so
/// many small batches still make row groups of a useful size; nothing is durable until
/// [`RollingFile::finish`] fsyncs the file and it is committed like any staged file.
pub struct RollingFile {
    writer: ParallelWriter,
    temp_path: PathBuf,
    row_group_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    rows: u64,
}

impl RollingFile {
    /// Creates the staging file `.{name}.{pid}.tmp` in `dir` (created if missing) for rows of `schema`.
    pub fn create(dir: &Path, name: &str, schema: arrow::datatypes::SchemaRef, config: &SinkConfig) -> Result<RollingFile, FrameError> {
        let props = properties(config)?;
        std::fs::create_dir_all(dir).map_err(|e| FrameError::io("create directory", dir, e))?;
        let temp_path = staging_path(dir, name);
        let file = File::create(&temp_path).map_err(|e| FrameError::io("create", &temp_path, e))?;
        let writer = ParallelWriter::new(file, schema, &props)?;
        Ok(RollingFile {
            writer,
            temp_path,
            row_group_rows: config.row_group_rows,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            rows: 0,
        })
    }

    pub fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.writer.schema
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of the file so far: encoded row groups plus the in-memory size of rows not yet encoded.
    pub fn bytes(&self) -> u64 {
        (self.writer.writer.bytes_written() + self.pending_bytes) as u64
    }

    /// Appends rows of this file's schema.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), FrameError> {
        if batch.schema().fields() != self.writer.schema.fields() {
            return Err(FrameError::InvalidArgument(format!(
                "rows of schema {:?} appended to a file of schema {:?}",
                batch.schema().fields(),
                self.writer.schema.fields()
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.pending_rows += batch.num_rows();
        self.pending_bytes += batch.get_array_memory_size();
        self.pending.push(batch.clone());
        if self.pending_rows >= self.row_group_rows || self.pending_bytes >= ROLLING_BUFFER_BYTES {
            self.encode_pending()?;
        }
        Ok(())
    }

    fn encode_pending(&mut self) -> Result<(), FrameError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.writer.write(&pending, self.row_group_rows)
    }

    /// Encodes what is left, closes and fsyncs the file; it then waits for [`commit_staged`]
    /// under `final_path`.
    pub fn finish(mut self, final_path: PathBuf) -> Result<StagedFile, FrameError> {
        let encoded = self.encode_pending();
        let RollingFile { writer, temp_path, rows, .. } = self;
        let result = encoded.and_then(|()| {
            let file = writer.into_file()?;
            file.sync_all().map_err(|e| FrameError::io("fsync", &temp_path, e))?;
            Ok(file.metadata().map_err(|e| FrameError::io("stat", &temp_path, e))?.len())
        });
        let staged = StagedFile { temp_path, final_path, rows, bytes: 0 };
        match result {
            Ok(bytes) => Ok(StagedFile { bytes, ..staged }),
            Err(error) => {
                discard_staged(std::slice::from_ref(&staged));
                Err(error)
            }
        }
    }

    /// Removes the staging file.
    pub fn discard(self) {
        let staged = StagedFile { temp_path: self.temp_path, final_path: PathBuf::new(), rows: 0, bytes: 0 };
        discard_staged(&[staged]);
    }
}

/// Makes staged files visible under their final names, then fsyncs their directories.
///
/// A final name that already exists is an error: files are never overwritten (the link is
/// atomic, so a concurrent writer cannot slip in between check and rename). Files committed
/// before such an error stay committed.
pub fn commit_staged(files: &[StagedFile]) -> Result<(), FrameError> {
    let mut dirs = BTreeSet::new();
    for f in files {
        std::fs::hard_link(&f.temp_path, &f.final_path).map_err(|e| FrameError::io("commit (link) to", &f.final_path, e))?;
        std::fs::remove_file(&f.temp_path).map_err(|e| FrameError::io("remove", &f.temp_path, e))?;
        if let Some(dir) = f.final_path.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    for dir in dirs {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FrameError::io("fsync directory", &dir, e))?;
    }
    Ok(())
}

/// Removes staged temp files (the handler failed); failures are logged, not returned.
pub fn discard_staged(files: &[StagedFile]) {
    for f in files {
        match std::fs::remove_file(&f.temp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %f.temp_path.display(), error = %e, "cannot remove staged file"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    fn frame(rows: usize) -> Frame {
        Frame::new(
            RecordBatch::try_from_iter(vec![
                ("s", Arc::new(StringArray::from_iter((0..rows).map(|i| (i % 3 != 0).then(|| format!("v{i}"))))) as ArrayRef),
                ("i", Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef),
                ("f", Arc::new(Float64Array::from_iter((0..rows).map(|i| (i % 5 != 0).then_some(i as f64 / 4.0)))) as ArrayRef),
                ("t", Arc::new(TimestampMillisecondArray::from_iter_values((0..rows as i64).map(|i| 1_700_000_000_000 + i))) as ArrayRef),
            ])
            .unwrap(),
        )
    }

    fn read(path: &Path) -> RecordBatch {
        let file = File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn write_commit_read_back_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sink/nested");
        let f = frame(2500);
        let config = SinkConfig { row_group_rows: 1000, max_rows_per_file: Some(1000), ..Default::default() };
        let staged = write_staged(&f, &out, "batch-7", &config).unwrap();
        assert_eq!(staged.len(), 3);
        assert_eq!(staged.iter().map(|s| s.rows).sum::<u64>(), 2500);
        assert!(staged[0].temp_path.file_name().unwrap().to_str().unwrap().starts_with(".batch-7-00000"));
        assert!(!staged[0].final_path.exists());
        commit_staged(&staged).unwrap();
        let mut parts = Vec::new();
        for s in &staged {
            assert!(!s.temp_path.exists());
            assert_eq!(std::fs::metadata(&s.final_path).unwrap().len(), s.bytes);
            parts.push(read(&s.final_path));
        }
        assert_eq!(staged[2].final_path.file_name().unwrap(), "batch-7-00002.parquet");
        let back = arrow::compute::concat_batches(&parts[0].schema(), &parts).unwrap();
        assert_eq!(&back, f.record_batch().unwrap());
    }

    #[test]
    fn streamed_batches_roll_files_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = frame(2500);
        let config = SinkConfig { row_group_rows: 400, max_rows_per_file: Some(1000), ..Default::default() };
        let mut stream = StagedStream::new(dir.path(), "s", &config).unwrap();
        // Waves of several batches; row groups and files cut across batch boundaries.
        let rows = f.record_batch().unwrap();
        for wave in [vec![(0, 300), (300, 400)], vec![(700, 500), (1200, 600)], vec![(1800, 700)]] {
            let batches: Vec<RecordBatch> = wave.into_iter().map(|(offset, len)| rows.slice(offset, len)).collect();
            stream.push(&batches).unwrap();
        }
        let staged = stream.finish().unwrap();
        assert_eq!(staged.iter().map(|s| s.rows).collect::<Vec<_>>(), [1000, 1000, 500]);
        let parts: Vec<RecordBatch> = staged.iter().map(|s| read(&s.temp_path)).collect();
        let back = arrow::compute::concat_batches(&parts[0].schema(), &parts).unwrap();
        assert_eq!(&back, f.record_batch().unwrap());

        let mut stream = StagedStream::new(dir.path(), "d", &config).unwrap();
        stream.push(&[f.record_batch().unwrap().slice(0, 10)]).unwrap();
        let open = staging_path(dir.path(), "d-00000.parquet");
        assert!(open.exists());
        stream.discard();
        assert!(!open.exists());
        assert!(StagedStream::new(dir.path(), "e", &config).unwrap().finish().unwrap().is_empty());
    }

    #[test]
    fn a_rolling_file_gathers_batches_into_row_groups_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = frame(2500);
        let config = SinkConfig { row_group_rows: 1000, ..Default::default() };
        let mut file = RollingFile::create(dir.path(), "lane-open-0.parquet", f.record_batch().unwrap().schema(), &config).unwrap();
        for offset in (0..2500).step_by(100) {
            file.append(&f.record_batch().unwrap().slice(offset, 100)).unwrap();
        }
        assert_eq!(file.rows(), 2500);
        assert!(file.bytes() > 0);
        let other = frame(1).record_batch().unwrap().project(&[0]).unwrap();
        let err = file.append(&other).unwrap_err().to_string();
        assert!(err.contains("appended to a file of schema"), "{err}");
        let staged = file.finish(dir.path().join("lane-o0-9.parquet")).unwrap();
        assert_eq!(staged.rows, 2500);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&staged.temp_path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 3, "ten 100-row appends make one 1000-row group");
        commit_staged(std::slice::from_ref(&staged)).unwrap();
        assert_eq!(&read(&staged.final_path), f.record_batch().unwrap());

        let dropped = RollingFile::create(dir.path(), "gone.parquet", f.record_batch().unwrap().schema(), &config).unwrap();
        dropped.discard();
        assert!(!staging_path(dir.path(), "gone.parquet").exists());
    }

    #[test]
    fn a_column_whose_dictionary_falls_back_is_written_plain_in_later_row_groups() {
        let rows = 3000;
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("user-{i:06}")))) as ArrayRef),
            ("country", Arc::new(StringArray::from_iter_values((0..rows).map(|i| ["DE", "FR", "JP"][i % 3]))) as ArrayRef),
        ])
        .unwrap();
        // A 2 KiB dictionary holds the three countries but not a thousand ids.
        let props = WriterProperties::builder().set_dictionary_page_size_limit(2048).build();
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer = ParallelWriter::new(file.reopen().unwrap(), batch.schema(), &props).unwrap();
        for offset in (0..rows).step_by(1000) {
            writer.start(&[batch.slice(offset, 1000)], 1000).unwrap();
        }
        writer.into_file().unwrap();

        let reader = ParquetRecordBatchReaderBuilder::try_new(file.reopen().unwrap()).unwrap();
        let has_dictionary = |group: usize, column: usize| reader.metadata().row_group(group).column(column).dictionary_page_offset().is_some();
        assert!(dictionary_fell_back(reader.metadata().row_group(0).column(0)), "the first group tries a dictionary for the ids");
        assert!(!has_dictionary(1, 0) && !has_dictionary(2, 0), "later groups write the ids plain");
        assert!((0..3).all(|group| has_dictionary(group, 1) && !dictionary_fell_back(reader.metadata().row_group(group).column(1))));
        assert_eq!(read(file.path()), batch);
    }

    #[test]
    fn a_stream_pushed_from_inside_the_engine_pool_encodes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = frame(2500);
        let config = SinkConfig { row_group_rows: 400, ..Default::default() };
        // One worker: waiting there for an encoding task queued behind the caller would hang.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let staged = pool.install(|| {
            let mut stream = StagedStream::new(dir.path(), "p", &config).unwrap();
            for offset in (0..2500).step_by(500) {
                stream.push(&[f.record_batch().unwrap().slice(offset, 500)]).unwrap();
            }
            stream.finish().unwrap()
        });
        assert_eq!(&read(&staged[0].temp_path), f.record_batch().unwrap());
    }

    #[test]
    fn stale_staging_files_of_dead_processes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("day=1");
        std::fs::create_dir(&nested).unwrap();
        let dead_pid = u32::MAX - 7;
        let stale = [
            dir.path().join(format!(".k-00000.parquet.{dead_pid}.tmp")),
            nested.join(format!(".k-00001.parquet.{dead_pid}.tmp")),
            dir.path().join(format!(".run-1.failed.jsonl.{dead_pid}.tmp")),
        ];
        let kept = [
            staging_path(dir.path(), "live-00000.parquet"),
            dir.path().join("k-00000.parquet"),
            dir.path().join(format!(".notes.{dead_pid}.tmp")),
            dir.path().join(".parquet.1.tmp"),
            dir.path().join("plain/.x.parquet.1.tmp"),
        ];
        std::fs::create_dir(dir.path().join("plain")).unwrap();
        for path in stale.iter().chain(&kept) {
            std::fs::write(path, b"x").unwrap();
        }
        let mut removed = remove_stale_staging(dir.path()).unwrap();
        removed.sort();
        let mut expected = stale.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert!(kept.iter().all(|p| p.exists()));
        assert!(remove_stale_staging(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn partitions_split_rows_by_value_and_escape_them() {
        let batch = RecordBatch::try_from_iter(vec![
            ("day", Arc::new(StringArray::from(vec![Some("a/../../b"), Some("x"), None, Some("x")])) as ArrayRef),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef),
        ])
        .unwrap();
        let parts = split_by_partition(&batch, &["day".to_string()]).unwrap();
        let dirs: Vec<_> = parts.iter().map(|(d, b)| (d.to_str().unwrap().to_string(), b.num_rows())).collect();
        assert_eq!(
            dirs,
            [("day=__HIVE_DEFAULT_PARTITION__".to_string(), 1), ("day=a%2F..%2F..%2Fb".to_string(), 1), ("day=x".to_string(), 2)]
        );
        assert!(parts.iter().all(|(dir, _)| dir.components().count() == 1));
        assert_eq!(parts[2].1.schema().fields().len(), 1, "the partition column lives in the path");
        let err = split_by_partition(&batch, &["nope".to_string()]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::ColumnNotFound);
        let err = split_by_partition(&batch, &["day".to_string(), "n".to_string()]).unwrap_err().to_string();
        assert!(err.contains("leaves no column"), "{err}");

        let root = tempfile::tempdir().unwrap();
        let made = create_partition_dir(root.path(), Path::new("day=x/hour=1")).unwrap();
        assert!(made.is_dir() && made.starts_with(root.path()));
    }

    #[test]
    fn snappy_and_uncompressed_work() {
        let dir = tempfile::tempdir().unwrap();
        for (i, c) in [Compression::Snappy, Compression::None].into_iter().enumerate() {
            let config = SinkConfig { compression: c, ..Default::default() };
            let staged = write_staged(&frame(10), dir.path(), &format!("c{i}"), &config).unwrap();
            commit_staged(&staged).unwrap();
            assert_eq!(read(&staged[0].final_path).num_rows(), 10);
        }
    }

    #[test]
    fn discard_removes_temps() {
        let dir = tempfile::tempdir().unwrap();
        let staged = write_staged(&frame(10), dir.path(), "x", &SinkConfig::default()).unwrap();
        assert!(staged[0].temp_path.exists());
        discard_staged(&staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_staged(&frame(10), dir.path(), "x", &SinkConfig::default()).unwrap();
        commit_staged(&first).unwrap();
        let before = std::fs::read(&first[0].final_path).unwrap();
        let second = write_staged(&frame(20), dir.path(), "x", &SinkConfig::default()).unwrap();
        let err = commit_staged(&second).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Io);
        assert!(err.to_string().contains("x-00000.parquet"), "{err}");
        assert_eq!(std::fs::read(&first[0].final_path).unwrap(), before);
        discard_staged(&second);
    }

    #[test]
    fn bad_config_is_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let config = SinkConfig { compression: Compression::Zstd(99), ..Default::default() };
        assert_eq!(write_staged(&frame(1), dir.path(), "x", &config).unwrap_err().code(), crate::ErrorCode::InvalidArgument);
    }
}

//! Parquet sinks named in the manifest, resolved under the function's data root.
//!
//! A handler's writes are staged under temporary names during the invocation and become
//! visible only when the handler returned ok (fsync, rename, fsync of the directory). Stream
//! triggers may instead have the writes held in memory ([`Sinks::buffer`]) and appended to the
//! open files of a [`crate::Lane`] that rolls across batches.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_frame::ingest::BadLine;
use sluice_frame::sink::{
    Compression, SinkConfig, StagedFile, StagedStream, commit_staged, create_partition_dir, discard_staged, remove_stale_staging,
    split_by_partition, write_staged,
};
use sluice_frame::{Frame, FrameError, LazyFrame};
use sluice_manifest::{SinkCompression, SinkSpec, check_relative_path};

use crate::batch::Batch;
use crate::deployment::SinkBudget;
use crate::error::LoadError;
use crate::rolling::{BufferedWrite, DEFAULT_ROLL_AFTER, DEFAULT_ROLL_BYTES, RollBounds};

/// Directory (under the data root) that receives lines and events that could not be handled.
pub const DEAD_LETTER_DIR: &str = "_dead_letter";

#[derive(Debug)]
pub(crate) struct ResolvedSink {
    pub(crate) dir: PathBuf,
    pub(crate) config: SinkConfig,
    /// Hive-style partition columns: rows go to `<dir>/<col>=<value>/…`.
    pub(crate) partition_by: Vec<String>,
    /// When the files of a stream lane roll.
    pub(crate) roll: RollBounds,
}

/// The sinks of one function, with their directories created and checked.
#[derive(Debug)]
pub struct Sinks {
    root: PathBuf,
    sinks: BTreeMap<String, ResolvedSink>,
    /// The tenant's sink-bytes quota, checked at every commit.
    budget: Option<Arc<SinkBudget>>,
}

/// A file a sink made durable.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenFile {
    pub sink: String,
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

impl Sinks {
    /// Creates every sink directory under `root` and refuses any that resolves outside it
    /// (a `..`, an absolute path, or a symlink pointing out). Rolls that a killed process left
    /// half-linked are finished from their roll records; then staging files that killed
    /// processes left in the sink and dead-letter directories are removed (only names the
    /// host gives its own staging files, only of processes no longer running).
    pub fn resolve(root: &Path, specs: &BTreeMap<String, SinkSpec>) -> Result<Sinks, LoadError> {
        let refuse = |name: &str, why: String| LoadError::Sink { name: name.to_string(), why };
        std::fs::create_dir_all(root).map_err(|e| refuse("(data root)", format!("{}: {e}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(|e| refuse("(data root)", format!("{}: {e}", root.display())))?;
        // Before any staging file is removed: a roll record may name staged files to link.
        crate::rolling::finish_interrupted_rolls(&root);
        let mut sinks = BTreeMap::new();
        for (name, spec) in specs {
            check_relative_path(&spec.path).map_err(|why| refuse(name, why))?;
            let dir = root.join(&spec.path);
            std::fs::create_dir_all(&dir).map_err(|e| refuse(name, format!("{}: {e}", dir.display())))?;
            let dir = dir.canonicalize().map_err(|e| refuse(name, format!("{}: {e}", dir.display())))?;
            if !dir.starts_with(&root) {
                return Err(refuse(name, format!("`{}` resolves outside the data root", spec.path.display())));
            }
            remove_stale(&dir).map_err(|e| refuse(name, format!("removing stale staging files in {}: {e}", dir.display())))?;
            let roll = RollBounds {
                rows: spec.roll_rows,
                bytes: spec.roll_bytes.unwrap_or(DEFAULT_ROLL_BYTES),
                after: spec.roll_ms.map_or(DEFAULT_ROLL_AFTER, std::time::Duration::from_millis),
            };
            sinks.insert(name.clone(), ResolvedSink { dir, config: sink_config(spec), partition_by: spec.partition_by.clone(), roll });
        }
        let dead_letters = root.join(DEAD_LETTER_DIR);
        remove_stale(&dead_letters).map_err(|e| refuse(DEAD_LETTER_DIR, format!("removing stale staging files: {e}")))?;
        Ok(Sinks { root, sinks, budget: None })
    }

    /// Counts every commit against `budget`; a commit past it fails and writes nothing.
    pub fn with_budget(self, budget: Arc<SinkBudget>) -> Sinks {
        Sinks { budget: Some(budget), ..self }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn resolved(&self, name: &str) -> Result<&ResolvedSink, FrameError> {
        self.sinks.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
            FrameError::InvalidArgument(format!(
                "unknown sink `{name}`; the manifest declares: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })
    }

    /// Writes `frame` to the sink `name` under temporary names (one set of files per hive
    /// partition when the sink has `partition-by`).
    pub fn stage(&self, name: &str, frame: &Frame, stem: &str) -> Result<Vec<StagedFile>, FrameError> {
        let sink = self.resolved(name)?;
        if sink.partition_by.is_empty() {
            return write_staged(frame, &sink.dir, stem, &sink.config);
        }
        let mut staged = Vec::new();
        for (relative, part) in split_by_partition(frame.record_batch()?, &sink.partition_by)? {
            let written = create_partition_dir(&sink.dir, &relative)
                .and_then(|dir| write_staged(&Frame::new(part), &dir, stem, &sink.config));
            match written {
                Ok(files) => staged.extend(files),
                Err(error) => {
                    discard_staged(&staged);
                    return Err(error);
                }
            }
        }
        Ok(staged)
    }

    /// Holds `frame` for a stream lane instead of staging it; checks that the sink exists.
    pub fn buffer(&self, name: &str, frame: Frame) -> Result<BufferedWrite, FrameError> {
        self.resolved(name)?;
        Ok(BufferedWrite { sink: name.to_string(), frame })
    }

    /// Streams a lazy frame's rows into the sink `name` without materializing them; `Ok(None)`
    /// when the frame cannot be streamed (nothing stays behind; write it with [`Sinks::stage`]).
    pub fn stage_stream(&self, name: &str, frame: &LazyFrame, stem: &str) -> Result<Option<Vec<StagedFile>>, FrameError> {
        let sink = self.resolved(name)?;
        if !sink.partition_by.is_empty() {
            return Ok(None);
        }
        let mut stream = StagedStream::new(&sink.dir, stem, &sink.config)?;
        match frame.stream_into(&mut |wave| stream.push(wave)) {
            Ok(true) => Ok(Some(stream.finish()?)),
            Ok(false) => {
                stream.discard();
                Ok(None)
            }
            Err(error) => {
                stream.discard();
                Err(error)
            }
        }
    }

    /// Makes staged files visible, in order; returns what was written.
    ///
    /// A final name that already holds exactly the staged bytes is a replay of a batch made
    /// durable before (a crash lost its acknowledgement): the staged copy is dropped and the
    /// file counts as written. A final name holding other bytes is still an error.
    pub fn commit(&self, staged: &[(String, StagedFile)]) -> Result<Vec<WrittenFile>, FrameError> {
        self.commit_after(staged, || Ok(()))
    }

    /// [`Sinks::commit`], running `before_link` once the files passed the quota check and
    /// before any is linked (a lane writes its roll record there); its error commits nothing.
    pub fn commit_after(
        &self,
        staged: &[(String, StagedFile)],
        before_link: impl FnOnce() -> Result<(), FrameError>,
    ) -> Result<Vec<WrittenFile>, FrameError> {
        let (replayed, fresh): (Vec<StagedFile>, Vec<StagedFile>) = staged
            .iter()
            .map(|(_, f)| f.clone())
            .partition(already_durable);
        if !replayed.is_empty() {
            tracing::info!(files = replayed.len(), "replayed batch: identical files are already durable");
        }
        discard_staged(&replayed);
        let fresh_bytes: u64 = fresh.iter().map(|f| f.bytes).sum();
        if let Some(budget) = &self.budget {
            budget.reserve(fresh_bytes).map_err(|exceeded| FrameError::Limit(exceeded.to_string()))?;
        }
        if let Err(error) = before_link().and_then(|()| commit_staged(&fresh)) {
            if let Some(budget) = &self.budget {
                budget.release(fresh_bytes);
            }
            return Err(error);
        }
        Ok(staged
            .iter()
            .map(|(sink, f)| WrittenFile { sink: sink.clone(), path: f.final_path.clone(), rows: f.rows, bytes: f.bytes })
            .collect())
    }

    /// Removes staged files of a failed invocation.
    pub fn discard(&self, staged: &[(String, StagedFile)]) {
        let files: Vec<StagedFile> = staged.iter().map(|(_, f)| f.clone()).collect();
        discard_staged(&files);
    }

    /// Writes lines that could not be parsed to `_dead_letter/<key>.bad-lines.jsonl`, durably.
    pub fn dead_letter_lines(&self, key: &str, lines: &[BadLine]) -> std::io::Result<PathBuf> {
        let records = lines.iter().map(|l| {
            serde_json::json!({
                "source": l.source,
                "line": l.line,
                "error": l.error,
                "text": String::from_utf8_lossy(&l.text),
            })
        });
        self.write_dead_letter(&format!("{key}.bad-lines.jsonl"), records)
    }

    /// Writes the events of a failed batch, with the error, to `_dead_letter/<key>.failed.jsonl`.
    pub fn dead_letter_batch(&self, key: &str, error: &str, batch: &Batch) -> std::io::Result<PathBuf> {
        let records = (0..batch.len()).filter_map(|i| {
            let (source, line) = batch.meta(i)?.dead_letter_position();
            Some(serde_json::json!({
                "source": source,
                "line": line,
                "error": error,
                "text": String::from_utf8_lossy(batch.body(i)?),
            }))
        });
        self.write_dead_letter(&format!("{key}.failed.jsonl"), records)
    }

    fn write_dead_letter(
        &self,
        file_name: &str,
        records: impl Iterator<Item = serde_json::Value>,
    ) -> std::io::Result<PathBuf> {
        let dir = self.root.join(DEAD_LETTER_DIR);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file_name);
        let temp = sluice_frame::sink::staging_path(&dir, file_name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
        for record in records {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(path)
    }
}

/// Removes stale staging files under `dir`, logging what went.
fn remove_stale(dir: &Path) -> std::io::Result<()> {
    let removed = remove_stale_staging(dir)?;
    if !removed.is_empty() {
        tracing::info!(dir = %dir.display(), files = removed.len(), "removed staging files a stopped process left behind");
    }
    Ok(())
}

/// Whether `file`'s final name already holds the same bytes as its staged copy.
fn already_durable(file: &StagedFile) -> bool {
    match (std::fs::read(&file.final_path), std::fs::read(&file.temp_path)) {
        (Ok(existing), Ok(staged)) => existing == staged,
        _ => false,
    }
}

fn sink_config(spec: &SinkSpec) -> SinkConfig {
    let defaults = SinkConfig::default();
    SinkConfig {
        compression: match spec.compression {
            SinkCompression::Zstd => Compression::Zstd(spec.zstd_level.unwrap_or(3)),
            SinkCompression::Snappy => Compression::Snappy,
            SinkCompression::None => Compression::None,
        },
        row_group_rows: spec.row_group_rows.unwrap_or(defaults.row_group_rows),
        max_rows_per_file: spec.roll_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> BTreeMap<String, SinkSpec> {
        let text = format!("path = \"{path}\"");
        BTreeMap::from([("out".to_string(), toml::from_str(&text).unwrap())])
    }

    #[test]
    fn sinks_resolve_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let sinks = Sinks::resolve(root.path(), &spec("a/b")).unwrap();
        assert!(root.path().join("a/b").is_dir());
        assert!(sinks.root().ends_with(root.path().file_name().unwrap()));
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let err = Sinks::resolve(root.path(), &spec("escape")).unwrap_err().to_string();
        assert!(err.contains("outside the data root"), "{err}");
        let err = Sinks::resolve(root.path(), &spec("../x")).unwrap_err().to_string();
        assert!(err.contains(".."), "{err}");
    }

    #[test]
    fn unknown_sinks_name_the_declared_ones() {
        let root = tempfile::tempdir().unwrap();
        let sinks = Sinks::resolve(root.path(), &spec("a")).unwrap();
        let frame = sluice_frame::ingest::read_json_lines(&[], &Default::default()).unwrap().frame;
        let err = sinks.stage("nope", &frame, "x").unwrap_err().to_string();
        assert!(err.contains("unknown sink `nope`") && err.contains("out"), "{err}");
    }

    #[test]
    fn a_replayed_identical_file_counts_as_durable_and_a_different_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let sinks = Sinks::resolve(root.path(), &spec("a")).unwrap();
        let frame = |text: &str| {
            let source = sluice_frame::ingest::JsonSource { name: "t", data: text.as_bytes(), first_line: 1 };
            sluice_frame::ingest::read_json_lines(&[source], &Default::default()).unwrap().frame
        };
        let stage = |text: &str| -> Vec<(String, StagedFile)> {
            let staged = sinks.stage("out", &frame(text), "k").unwrap();
            staged.into_iter().map(|f| ("out".to_string(), f)).collect()
        };
        let first = sinks.commit(&stage("{\"x\":1}")).unwrap();
        let replay = sinks.commit(&stage("{\"x\":1}")).unwrap();
        assert_eq!(first, replay);
        let different = stage("{\"x\":2}");
        let err = sinks.commit(&different).unwrap_err().to_string();
        assert!(err.contains("k-00000.parquet"), "{err}");
        sinks.discard(&different);
        let names: Vec<_> = std::fs::read_dir(root.path().join("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k-00000.parquet")]);
    }

    #[test]
    fn a_partitioned_sink_stages_one_file_per_value_under_escaped_directories() {
        let root = tempfile::tempdir().unwrap();
        let spec: SinkSpec = toml::from_str("path = \"a\"\npartition-by = [\"day\"]").unwrap();
        let sinks = Sinks::resolve(root.path(), &BTreeMap::from([("out".to_string(), spec)])).unwrap();
        let text = "{\"x\":1,\"day\":\"../up\"}\n{\"x\":2,\"day\":\"mon\"}\n{\"x\":3,\"day\":\"mon\"}\n";
        let source = sluice_frame::ingest::JsonSource { name: "t", data: text.as_bytes(), first_line: 1 };
        let frame = sluice_frame::ingest::read_json_lines(&[source], &Default::default()).unwrap().frame;
        let staged: Vec<(String, StagedFile)> = sinks.stage("out", &frame, "k").unwrap().into_iter().map(|f| ("out".to_string(), f)).collect();
        let written = sinks.commit(&staged).unwrap();
        let mut layout: Vec<(String, u64)> = written
            .iter()
            .map(|w| (w.path.strip_prefix(root.path().canonicalize().unwrap()).unwrap().display().to_string(), w.rows))
            .collect();
        layout.sort();
        assert_eq!(layout, [("a/day=..%2Fup/k-00000.parquet".to_string(), 1), ("a/day=mon/k-00000.parquet".to_string(), 2)]);
        let err = sinks.stage("out", &sluice_frame::ingest::read_json_lines(&[], &Default::default()).unwrap().frame, "e");
        assert!(err.is_err(), "a frame without the partition column is refused");
    }

    #[test]
    fn dead_letters_are_json_lines() {
        let root = tempfile::tempdir().unwrap();
        let sinks = Sinks::resolve(root.path(), &BTreeMap::new()).unwrap();
        let bad = BadLine { source: "f.jsonl".into(), line: 7, error: "oops".into(), text: b"{nope".to_vec() };
        let path = sinks.dead_letter_lines("run-1", &[bad]).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(value["line"], 7);
        assert_eq!(value["text"], "{nope");
    }
}

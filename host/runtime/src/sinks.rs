//! Parquet sinks named in the manifest, resolved under the function's data root.
//!
//! A handler's writes are staged under temporary names during the invocation and become
//! visible only when the handler returned ok (fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sluice_frame::ingest::BadLine;
use sluice_frame::sink::{Compression, SinkConfig, StagedFile, StagedStream, commit_staged, discard_staged, write_staged};
use sluice_frame::{Frame, FrameError, LazyFrame};
use sluice_manifest::{SinkCompression, SinkSpec, check_relative_path};

use crate::batch::Batch;
use crate::error::LoadError;

/// Directory (under the data root) that receives lines and events that could not be handled.
pub const DEAD_LETTER_DIR: &str = "_dead_letter";

#[derive(Debug)]
struct ResolvedSink {
    dir: PathBuf,
    config: SinkConfig,
}

/// The sinks of one function, with their directories created and checked.
#[derive(Debug)]
pub struct Sinks {
    root: PathBuf,
    sinks: BTreeMap<String, ResolvedSink>,
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
    /// (a `..`, an absolute path, or a symlink pointing out).
    pub fn resolve(root: &Path, specs: &BTreeMap<String, SinkSpec>) -> Result<Sinks, LoadError> {
        let refuse = |name: &str, why: String| LoadError::Sink { name: name.to_string(), why };
        std::fs::create_dir_all(root).map_err(|e| refuse("(data root)", format!("{}: {e}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(|e| refuse("(data root)", format!("{}: {e}", root.display())))?;
        let mut sinks = BTreeMap::new();
        for (name, spec) in specs {
            check_relative_path(&spec.path).map_err(|why| refuse(name, why))?;
            let dir = root.join(&spec.path);
            std::fs::create_dir_all(&dir).map_err(|e| refuse(name, format!("{}: {e}", dir.display())))?;
            let dir = dir.canonicalize().map_err(|e| refuse(name, format!("{}: {e}", dir.display())))?;
            if !dir.starts_with(&root) {
                return Err(refuse(name, format!("`{}` resolves outside the data root", spec.path.display())));
            }
            sinks.insert(name.clone(), ResolvedSink { dir, config: sink_config(spec) });
        }
        Ok(Sinks { root, sinks })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn sink(&self, name: &str) -> Result<&ResolvedSink, FrameError> {
        self.sinks.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
            FrameError::InvalidArgument(format!(
                "unknown sink `{name}`; the manifest declares: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })
    }

    /// Writes `frame` to the sink `name` under temporary names.
    pub fn stage(&self, name: &str, frame: &Frame, stem: &str) -> Result<Vec<StagedFile>, FrameError> {
        let sink = self.sink(name)?;
        write_staged(frame, &sink.dir, stem, &sink.config)
    }

    /// Streams a lazy frame's rows into the sink `name` without materializing them; `Ok(None)`
    /// when the frame cannot be streamed (nothing stays behind; write it with [`Sinks::stage`]).
    pub fn stage_stream(&self, name: &str, frame: &LazyFrame, stem: &str) -> Result<Option<Vec<StagedFile>>, FrameError> {
        let sink = self.sink(name)?;
        let mut stream = StagedStream::new(&sink.dir, stem, &sink.config)?;
        match frame.stream_into(&mut |batch| stream.push(batch)) {
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
        let (replayed, fresh): (Vec<StagedFile>, Vec<StagedFile>) = staged
            .iter()
            .map(|(_, f)| f.clone())
            .partition(|f| already_durable(f));
        if !replayed.is_empty() {
            tracing::info!(files = replayed.len(), "replayed batch: identical files are already durable");
        }
        discard_staged(&replayed);
        commit_staged(&fresh)?;
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
        let temp = dir.join(format!(".{file_name}.tmp"));
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

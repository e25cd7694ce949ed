//! The file trigger: runs a function over local JSON-lines files.
//!
//! `whole` mode hands every file to one invocation (an aggregation sees all rows; the batch
//! maps the files, it does not read them into memory). `chunked` mode cuts the files by
//! `max-events` / `max-bytes` and invokes once per chunk, as a stream would deliver them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_frame::ingest::BadLinePolicy;
use sluice_manifest::{BadLines, Batching, FileMode};
use sluice_runtime::{Batch, FileSpan, Function, InvokeError, MappedFile, Reply, WrittenFile};

use crate::delivery::process_unique_suffix;

/// Why a file run could not start or was stopped.
#[derive(Debug, thiserror::Error)]
pub enum FileRunError {
    #[error("no input files match `{0}`")]
    NoInput(String),
    #[error("invalid input pattern `{pattern}`: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("cannot read input {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("stopped at {key} (bad-lines = \"fail\"); nothing of that batch was written: {error}")]
    Stopped { key: String, error: InvokeError },
}

/// How the file trigger batches and treats malformed lines.
#[derive(Debug, Clone)]
pub struct FileTrigger {
    pub mode: FileMode,
    pub bad_lines: BadLines,
    pub batching: Batching,
}

/// Told about each batch as it finishes, e.g. to drive a progress bar.
pub trait Progress {
    fn batch_done(&self, bytes: u64);
}

impl Progress for () {
    fn batch_done(&self, _bytes: u64) {}
}

/// A batch that failed, with where its events were dead-lettered.
#[derive(Debug)]
pub struct FailedBatch {
    pub key: String,
    pub error: InvokeError,
    pub dead_letter: Option<PathBuf>,
}

/// What a file run did.
#[derive(Debug, Default)]
pub struct FileRun {
    pub input_bytes: u64,
    pub input_files: usize,
    pub batches: usize,
    pub failed: Vec<FailedBatch>,
    pub written: Vec<WrittenFile>,
    pub rows_parsed: u64,
    pub skipped_lines: usize,
    pub dead_letters: Vec<PathBuf>,
    /// Replies of the last successful batch (the demo prints them).
    pub last_replies: Vec<Reply>,
    pub elapsed: Duration,
}

impl FileRun {
    /// Input megabytes (10^6 bytes) per second of wall time.
    pub fn mb_per_s(&self) -> f64 {
        self.input_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn rows_per_s(&self) -> f64 {
        self.rows_parsed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Expands a file, a directory (its `*.jsonl`/`*.json`/`*.ndjson` files) or a glob pattern,
/// sorted so runs are repeatable.
pub fn resolve_inputs(spec: &str) -> Result<Vec<PathBuf>, FileRunError> {
    let path = Path::new(spec);
    let mut files: Vec<PathBuf> = if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| FileRunError::Read { path: path.into(), source })?;
        entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("jsonl" | "json" | "ndjson"))
            })
            .collect()
    } else {
        let paths = glob::glob(spec).map_err(|e| FileRunError::BadPattern {
            pattern: spec.to_string(),
            message: e.to_string(),
        })?;
        paths.filter_map(Result::ok).filter(|p| p.is_file()).collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(FileRunError::NoInput(spec.to_string()));
    }
    Ok(files)
}

impl FileTrigger {
    /// Runs `function` over `inputs`. A failed batch is dead-lettered and the run goes on,
    /// except that with `bad-lines = "fail"` a malformed line stops the run.
    pub async fn run(
        &self,
        function: &Function,
        inputs: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<FileRun, FileRunError> {
        let started = Instant::now();
        let files = inputs
            .iter()
            .map(|path| {
                MappedFile::open(path)
                    .map(Arc::new)
                    .map_err(|source| FileRunError::Read { path: path.clone(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Distinguishes the files of this run from those of any earlier run of the same input.
        let run_id = process_unique_suffix();
        let batches: Vec<(String, Vec<FileSpan>)> = match self.mode {
            FileMode::Whole => vec![(format!("{run_id}-all"), files.iter().cloned().map(FileSpan::whole).collect())],
            FileMode::Chunked => self.chunks(&files, &run_id),
        };
        let policy = match self.bad_lines {
            BadLines::Fail => BadLinePolicy::Fail,
            BadLines::Skip => BadLinePolicy::Skip,
        };
        let mut run = FileRun { input_files: files.len(), ..FileRun::default() };
        for (key, spans) in batches {
            let batch = Arc::new(Batch::from_spans(spans, policy));
            let bytes = batch.bytes();
            run.batches += 1;
            match function.invoke(batch.clone(), &key).await {
                Ok(done) => {
                    run.written.extend(done.written);
                    run.rows_parsed += done.rows_parsed;
                    run.skipped_lines += done.skipped_lines;
                    run.dead_letters.extend(done.dead_letter);
                    run.last_replies = done.outcome.replies;
                }
                Err(error) if is_bad_line(&error) && self.bad_lines == BadLines::Fail => {
                    return Err(FileRunError::Stopped { key, error });
                }
                Err(error) => {
                    let dead_letter = dead_letter_batch(function, &key, &batch, &error);
                    run.dead_letters.extend(dead_letter.clone());
                    run.failed.push(FailedBatch { key, error, dead_letter });
                }
            }
            run.input_bytes += bytes;
            progress.batch_done(bytes);
        }
        run.elapsed = started.elapsed();
        Ok(run)
    }

    /// Cuts files at line boundaries into spans of at most `max-events` lines and
    /// `max-bytes` bytes (a single longer line still forms its own chunk).
    fn chunks(&self, files: &[Arc<MappedFile>], run_id: &str) -> Vec<(String, Vec<FileSpan>)> {
        let max_events = self.batching.max_events;
        let max_bytes = self.batching.max_bytes as usize;
        let mut batches = Vec::new();
        for (file_index, file) in files.iter().enumerate() {
            let bytes = file.bytes();
            let (mut start, mut line, mut chunk) = (0usize, 1u64, 0usize);
            while start < bytes.len() {
                let (mut end, mut events, mut next_line) = (start, 0u64, line);
                while end < bytes.len() && events < max_events {
                    let line_end = memchr::memchr(b'\n', &bytes[end..]).map_or(bytes.len(), |i| end + i + 1);
                    if events > 0 && line_end - start > max_bytes {
                        break;
                    }
                    if bytes[end..line_end].iter().any(|b| !b.is_ascii_whitespace()) {
                        events += 1;
                    }
                    end = line_end;
                    next_line += 1;
                }
                let span = FileSpan { file: file.clone(), range: start..end, first_line: line };
                batches.push((format!("{run_id}-f{file_index:03}-c{chunk:06}"), vec![span]));
                chunk += 1;
                start = end;
                line = next_line;
            }
        }
        batches
    }
}

fn is_bad_line(error: &InvokeError) -> bool {
    matches!(error, InvokeError::Handler { code, .. } if code == "parse")
}

/// Keeps the events of a failed batch, with the error, so nothing accepted is lost.
fn dead_letter_batch(function: &Function, key: &str, batch: &Batch, error: &InvokeError) -> Option<PathBuf> {
    match function.sinks().dead_letter_batch(key, &error.to_string(), batch) {
        Ok(path) => Some(path),
        Err(io) => {
            tracing::error!(batch = key, %io, "cannot write the dead-letter file of a failed batch");
            None
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(max_events: u64, max_bytes: u64) -> FileTrigger {
        FileTrigger {
            mode: FileMode::Chunked,
            bad_lines: BadLines::Fail,
            batching: Batching { max_events, max_bytes, max_wait_ms: 0 },
        }
    }

    fn mapped(text: &str) -> (tempfile::TempDir, Arc<MappedFile>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, text).unwrap();
        let file = Arc::new(MappedFile::open(&path).unwrap());
        (dir, file)
    }

    #[test]
    fn chunks_respect_max_events_and_keep_line_numbers() {
        let (_dir, file) = mapped("{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n{\"a\":4}\n");
        let chunks = trigger(2, 1 << 20).chunks(&[file], "r");
        let spans: Vec<(u64, &[u8])> = chunks.iter().map(|(_, s)| (s[0].first_line, s[0].bytes())).collect();
        assert_eq!(
            spans,
            vec![(1, &b"{\"a\":1}\n{\"a\":2}\n"[..]), (3, &b"\n{\"a\":3}\n{\"a\":4}\n"[..])]
        );
        assert_eq!(chunks[1].0, "r-f000-c000001");
    }

    #[test]
    fn chunks_respect_max_bytes_but_never_split_a_line() {
        let (_dir, file) = mapped("{\"a\":1}\n{\"a\":22}\n{\"a\":3}");
        let chunks = trigger(100, 4).chunks(&[file], "r");
        let lines: Vec<u64> = chunks.iter().map(|(_, s)| s[0].first_line).collect();
        assert_eq!(lines, vec![1, 2, 3]);
        assert_eq!(chunks[2].1[0].bytes(), b"{\"a\":3}");
    }

    #[test]
    fn inputs_resolve_from_files_dirs_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jsonl", "a.jsonl", "notes.txt"] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let from_dir = resolve_inputs(dir.path().to_str().unwrap()).unwrap();
        let names: Vec<_> = from_dir.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, vec!["a.jsonl", "b.jsonl"]);
        let pattern = format!("{}/b*", dir.path().display());
        assert_eq!(resolve_inputs(&pattern).unwrap().len(), 1);
        let missing = format!("{}/nothing*", dir.path().display());
        assert!(matches!(resolve_inputs(&missing), Err(FileRunError::NoInput(_))));
    }
}

//! Sink files that stay open across the batches of one ordered stream (a Kafka partition).
//!
//! Making every batch's output durable on its own costs an fsynced file per batch. A [`Lane`]
//! instead appends the rows of each successful invocation to one open staging file per sink
//! (and per hive partition), and rolls them all together when a sink's `roll-rows`,
//! `roll-bytes` or `roll-ms` is reached, or when the stream asks (shutdown, rebalance).
//!
//! A roll is the lane's commit point. Its files are fsynced under their staging names; then
//! the lane's roll record (see [`RollRecord`]) is written crash-safely — temp file, fsync,
//! rename, fsync of the directory — naming the position after the roll's last batch and each
//! file's staged and final name; only then are the files linked to their final names and
//! their directories fsynced. After a crash, [`Lane::recover`] finishes the links a crash
//! cut short and returns the recorded position: the stream resumes there, so nothing durable
//! is read twice. (The stream's own acknowledgement, a Kafka commit, follows the roll and may
//! be lost; the record is not.) [`Sinks::resolve`] finishes the rolls of stopped processes
//! before it removes their staging files.
//!
//! Rolled files are named `<function>-<lane>-o<first>-<last>-<n>.parquet` by the positions
//! (offsets) of the first and last batch they hold, so a replay (a lost or unusable record)
//! that cuts the same batches finds its identical files already durable, and one that cuts
//! them differently writes new names: duplicates, never a corrupted or overwritten file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_frame::sink::{RollingFile, StagedFile, create_partition_dir, discard_staged, split_by_partition};
use sluice_frame::{Frame, FrameError};

use crate::sinks::{Sinks, WrittenFile};

/// Directory under a function's data root that holds its lanes' roll records.
pub(crate) const ROLL_RECORD_DIR: &str = ".sluice-lanes";

/// When a lane's files roll unless the sink says otherwise.
pub const DEFAULT_ROLL_BYTES: u64 = 128 << 20;
pub const DEFAULT_ROLL_AFTER: Duration = Duration::from_millis(1_000);

/// The bounds of one sink's files in a lane: whichever is reached first rolls the lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollBounds {
    /// A file is closed at this many rows (the next rows start another file of the same roll).
    pub rows: Option<usize>,
    pub bytes: u64,
    /// Counted from the first rows the lane took after its last roll.
    pub after: Duration,
}

/// Rows one successful invocation wrote to a sink, held until a lane takes them.
#[derive(Debug)]
pub struct BufferedWrite {
    pub(crate) sink: String,
    pub(crate) frame: Frame,
}

impl BufferedWrite {
    pub fn sink(&self) -> &str {
        &self.sink
    }

    pub fn rows(&self) -> u64 {
        self.frame.num_rows() as u64
    }
}

struct OpenFile {
    file: RollingFile,
    dir: PathBuf,
    bounds: RollBounds,
}

/// A file closed before its roll (full, or its sink's schema changed): fsynced, not yet visible.
struct ClosedFile {
    sink: String,
    dir: PathBuf,
    staged: StagedFile,
}

/// The open files of one ordered stream.
pub struct Lane {
    function: String,
    name: String,
    /// Keyed by sink and hive partition directory (relative to the sink's).
    open: BTreeMap<(String, PathBuf), OpenFile>,
    closed: Vec<ClosedFile>,
    /// Positions of the first and last batch whose rows wait in the files.
    first: Option<i64>,
    last: i64,
    since: Option<Instant>,
    files_created: u64,
}

impl Lane {
    /// A lane named `name` (e.g. `<topic>-p<partition>`) for `function`'s sinks.
    pub fn new(function: &str, name: &str) -> Lane {
        Lane {
            function: function.to_string(),
            name: name.to_string(),
            open: BTreeMap::new(),
            closed: Vec::new(),
            first: None,
            last: 0,
            since: None,
            files_created: 0,
        }
    }

    /// Whether rows wait for a roll.
    pub fn holds_rows(&self) -> bool {
        !self.open.is_empty() || !self.closed.is_empty()
    }

    /// Rows waiting for a roll.
    pub fn rows(&self) -> u64 {
        self.open.values().map(|f| f.file.rows()).sum::<u64>() + self.closed.iter().map(|f| f.staged.rows).sum::<u64>()
    }

    /// Appends the rows of the batch at positions `first..=last`. On an error the lane is
    /// discarded (nothing of it becomes visible): the stream must not acknowledge past its last roll.
    pub fn append(&mut self, sinks: &Sinks, writes: Vec<BufferedWrite>, first: i64, last: i64) -> Result<(), FrameError> {
        if let Err(error) = self.append_rows(sinks, writes) {
            self.discard();
            return Err(error);
        }
        if self.holds_rows() {
            self.first.get_or_insert(first);
            self.last = last;
            self.since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn append_rows(&mut self, sinks: &Sinks, writes: Vec<BufferedWrite>) -> Result<(), FrameError> {
        for write in writes {
            let sink = sinks.resolved(&write.sink)?;
            let batch = write.frame.record_batch()?;
            let parts = if sink.partition_by.is_empty() {
                vec![(PathBuf::new(), batch.clone())]
            } else {
                split_by_partition(batch, &sink.partition_by)?
            };
            for (relative, part) in parts {
                let dir = if relative.as_os_str().is_empty() { sink.dir.clone() } else { create_partition_dir(&sink.dir, &relative)? };
                self.append_part(&write.sink, relative, dir, &part, sink.roll, &sink.config)?;
            }
        }
        Ok(())
    }

    fn append_part(
        &mut self,
        sink: &str,
        relative: PathBuf,
        dir: PathBuf,
        part: &arrow::record_batch::RecordBatch,
        bounds: RollBounds,
        config: &sluice_frame::sink::SinkConfig,
    ) -> Result<(), FrameError> {
        let key = (sink.to_string(), relative);
        if self.open.get(&key).is_some_and(|open| open.file.schema().fields() != part.schema().fields()) {
            self.close(&key)?;
        }
        let mut offset = 0;
        while offset < part.num_rows() {
            if !self.open.contains_key(&key) {
                let name = format!("{}-{}-f{}.parquet", self.function, self.name, self.files_created);
                self.files_created += 1;
                let file = RollingFile::create(&dir, &name, part.schema(), config)?;
                self.open.insert(key.clone(), OpenFile { file, dir: dir.clone(), bounds });
            }
            let open = self.open.get_mut(&key).expect("opened above");
            let room = bounds.rows.map_or(usize::MAX, |max| max - open.file.rows() as usize);
            let take = room.min(part.num_rows() - offset);
            open.file.append(&part.slice(offset, take))?;
            offset += take;
            if bounds.rows == Some(open.file.rows() as usize) {
                self.close(&key)?;
            }
        }
        Ok(())
    }

    /// Closes an open file before the roll; its final name is given when the lane rolls.
    fn close(&mut self, key: &(String, PathBuf)) -> Result<(), FrameError> {
        if let Some(open) = self.open.remove(key) {
            let staged = open.file.finish(PathBuf::new())?;
            self.closed.push(ClosedFile { sink: key.0.clone(), dir: open.dir, staged });
        }
        Ok(())
    }

    /// Whether a bound of some file is reached: the lane should roll now.
    pub fn is_due(&self, now: Instant) -> bool {
        if !self.closed.is_empty() {
            return true;
        }
        let oldest_allowed = self.open.values().map(|f| f.bounds.after).min();
        let timed_out = match (self.since, oldest_allowed) {
            (Some(since), Some(after)) => now.duration_since(since) >= after,
            _ => false,
        };
        timed_out || self.open.values().any(|f| f.file.bytes() >= f.bounds.bytes)
    }

    /// Makes every file of the lane durable and visible; returns them. A final name that
    /// already holds the same bytes is a replay (counted as written); one holding other bytes
    /// is left alone and the file gets a name of this process instead. On an error nothing of
    /// the lane stays staged (files already linked stay).
    pub fn roll(&mut self, sinks: &Sinks) -> Result<Vec<WrittenFile>, FrameError> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for key in &keys {
            if let Err(error) = self.close(key) {
                self.discard();
                return Err(error);
            }
        }
        let (first, last) = (self.first.unwrap_or_default(), self.last);
        let closed = std::mem::take(&mut self.closed);
        let staged: Vec<(String, StagedFile)> = closed
            .into_iter()
            .enumerate()
            .map(|(n, closed)| {
                let name = format!("{}-{}-o{first}-{last}-{n:05}", self.function, self.name);
                let final_path = free_final_name(&closed.dir, &name, &closed.staged.temp_path);
                (closed.sink, StagedFile { final_path, ..closed.staged })
            })
            .collect();
        self.reset();
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let record = RollRecord { next: last + 1, pid: std::process::id(), files: staged.iter().map(|(_, f)| f.clone()).collect() };
        let path = record_path(sinks.root(), &self.function, &self.name);
        let result = sinks.commit_after(&staged, || record.write(sinks.root(), &path));
        if result.is_err() {
            sinks.discard(&staged);
            // The record may name files that will never appear; without it the stream
            // resumes from its own acknowledgement instead (duplicates at worst, no loss).
            if let Err(error) = std::fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "cannot remove the roll record of a failed roll");
            }
        }
        result
    }

    /// Reads the roll record of `function`'s lane `lane` under `sinks`' data root, finishes
    /// every link of it that a crash cut short (fsyncing their directories) and returns the
    /// position after the last batch it made durable: where the stream resumes. `Ok(None)`
    /// when the lane never rolled a file here.
    ///
    /// A record that cannot be read, does not parse, or names a file that is neither staged
    /// nor final is an error naming the record; the caller should then resume from its own
    /// acknowledgement, which re-reads (duplicates) but never skips rows.
    pub fn recover(sinks: &Sinks, function: &str, lane: &str) -> Result<Option<i64>, RollRecordError> {
        let path = record_path(sinks.root(), function, lane);
        let Some(record) = RollRecord::read(sinks.root(), &path)? else { return Ok(None) };
        let linked = record.finish_links(&path)?;
        if linked > 0 {
            tracing::info!(function, lane, files = linked, next = record.next, "finished a roll that a crash interrupted");
        }
        Ok(Some(record.next))
    }

    /// Drops every staged row of the lane.
    pub fn discard(&mut self) {
        let open = std::mem::take(&mut self.open);
        for file in open.into_values() {
            file.file.discard();
        }
        let closed: Vec<StagedFile> = std::mem::take(&mut self.closed).into_iter().map(|c| c.staged).collect();
        discard_staged(&closed);
        self.reset();
    }

    fn reset(&mut self) {
        self.first = None;
        self.since = None;
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if self.holds_rows() {
            tracing::warn!(function = %self.function, lane = %self.name, rows = self.rows(), "lane dropped before its roll; its rows are read again");
            self.discard();
        }
    }
}

/// `<dir>/<name>.parquet`, unless that name holds other bytes than `staged` (a replay that
/// cut its batches differently, or a different handler version): then a name of this process.
fn free_final_name(dir: &Path, name: &str, staged: &Path) -> PathBuf {
    let path = dir.join(format!("{name}.parquet"));
    let clashes = path.exists() && std::fs::read(&path).ok() != std::fs::read(staged).ok();
    if !clashes {
        return path;
    }
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    dir.join(format!("{name}-r{ms}-{}.parquet", std::process::id()))
}

/// A roll record could not be used; it names the record file.
#[derive(Debug, thiserror::Error)]
pub enum RollRecordError {
    #[error("roll record {}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("roll record {}: corrupt: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("roll record {}: its file {} is neither staged nor final", path.display(), file.display())]
    Missing { path: PathBuf, file: PathBuf },
    #[error("roll record {}: cannot finish the link to {}: {source}", path.display(), file.display())]
    Finish { path: PathBuf, file: PathBuf, source: std::io::Error },
}

/// The durable record of a lane's last roll, at
/// `<data root>/.sluice-lanes/<function>/<lane>.roll` (names percent-escaped), one JSON object:
/// `{"next": <position after the roll's last batch>, "pid": <writer>, "files":
/// [{"staged": <path>, "final": <path>}, …]}`, paths relative to the data root. It is written
/// before the roll's files are linked and replaced by the next roll; positions before `next`
/// are durable once its files are linked (batches between rolls that wrote no rows are not
/// recorded; they are read again after a crash and write nothing). Staged files are fsynced
/// but their directory entries are not before the record: after a power loss (not a killed
/// process) a record may name a staged file that is gone, and is then refused as incomplete.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RollRecord {
    pub(crate) next: i64,
    /// The process that wrote it: a restart finishes the records of stopped processes only.
    pub(crate) pid: u32,
    pub(crate) files: Vec<StagedFile>,
}

impl RollRecord {
    /// Writes the record to `path` crash-safely: temp file, fsync, rename, fsync of the directory.
    fn write(&self, root: &Path, path: &Path) -> Result<(), FrameError> {
        let relative = |file: &Path| -> Result<String, FrameError> {
            file.strip_prefix(root)
                .ok()
                .and_then(Path::to_str)
                .map(str::to_string)
                .ok_or_else(|| FrameError::InvalidArgument(format!("sink file {} is not a UTF-8 path under {}", file.display(), root.display())))
        };
        let mut files = Vec::with_capacity(self.files.len());
        for file in &self.files {
            files.push(serde_json::json!({"staged": relative(&file.temp_path)?, "final": relative(&file.final_path)?}));
        }
        let text = serde_json::json!({"next": self.next, "pid": self.pid, "files": files}).to_string();
        let dir = path.parent().expect("a roll record lies in a directory");
        let existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(|e| io_error("create directory", dir, e))?;
        if !existed {
            // The new directories' entries must survive a crash too.
            for created in dir.ancestors().skip(1).take(2) {
                sync_dir(created)?;
            }
        }
        let temp = path.with_extension(format!("roll.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&temp).map_err(|e| io_error("create", &temp, e))?;
        file.write_all(text.as_bytes()).map_err(|e| io_error("write", &temp, e))?;
        file.sync_all().map_err(|e| io_error("fsync", &temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| io_error("rename to", path, e))?;
        sync_dir(dir)
    }

    /// The record at `path`, `None` if there is none.
    pub(crate) fn read(root: &Path, path: &Path) -> Result<Option<RollRecord>, RollRecordError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RollRecordError::Read { path: path.to_path_buf(), source }),
        };
        let corrupt = |why: String| RollRecordError::Corrupt { path: path.to_path_buf(), why };
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        let next = value["next"].as_i64().ok_or_else(|| corrupt("no integer `next`".into()))?;
        let pid = value["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).ok_or_else(|| corrupt("no process id `pid`".into()))?;
        let entries = value["files"].as_array().ok_or_else(|| corrupt("no `files` list".into()))?;
        let under_root = |entry: &serde_json::Value, key: &str| -> Result<PathBuf, RollRecordError> {
            let relative = entry[key].as_str().ok_or_else(|| corrupt(format!("a file without `{key}`")))?;
            sluice_manifest::check_relative_path(Path::new(relative)).map_err(|why| corrupt(format!("`{key}` {relative}: {why}")))?;
            Ok(root.join(relative))
        };
        let mut files = Vec::with_capacity(entries.len());
        for entry in entries {
            files.push(StagedFile { temp_path: under_root(entry, "staged")?, final_path: under_root(entry, "final")?, rows: 0, bytes: 0 });
        }
        Ok(Some(RollRecord { next, pid, files }))
    }

    /// Links every file still staged to its final name and fsyncs their directories; returns
    /// how many it linked. Checks every file before linking any. A staged copy left beside
    /// its final name (the crash came between link and removal) is removed.
    fn finish_links(&self, path: &Path) -> Result<usize, RollRecordError> {
        let finish = |file: &Path, source| RollRecordError::Finish { path: path.to_path_buf(), file: file.to_path_buf(), source };
        let mut unlinked = Vec::new();
        for file in &self.files {
            let staged = file.temp_path.symlink_metadata().is_ok();
            if file.final_path.symlink_metadata().is_ok() {
                if staged {
                    std::fs::remove_file(&file.temp_path).map_err(|e| finish(&file.temp_path, e))?;
                }
                continue;
            }
            if !staged {
                return Err(RollRecordError::Missing { path: path.to_path_buf(), file: file.final_path.clone() });
            }
            unlinked.push(file);
        }
        let mut dirs = BTreeSet::new();
        for file in &unlinked {
            match std::fs::hard_link(&file.temp_path, &file.final_path) {
                Ok(()) => {}
                // Another process finished it first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(finish(&file.final_path, e)),
            }
            match std::fs::remove_file(&file.temp_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(finish(&file.temp_path, e)),
                _ => {}
            }
            dirs.extend(file.final_path.parent().map(Path::to_path_buf));
        }
        for dir in dirs {
            std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| finish(&dir, e))?;
        }
        Ok(unlinked.len())
    }
}

/// Finishes the rolls that processes no longer running left half-linked under `root`, so that
/// removing their staging files afterwards cannot take a file a record names. A record that
/// cannot be finished is logged and left alone (its lane then resumes from its stream's own
/// acknowledgement). Returns how many files it linked.
pub(crate) fn finish_interrupted_rolls(root: &Path) -> usize {
    let Ok(functions) = std::fs::read_dir(root.join(ROLL_RECORD_DIR)) else { return 0 };
    let mut linked = 0;
    for path in functions.flatten().flat_map(|f| std::fs::read_dir(f.path()).into_iter().flatten().flatten()).map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "roll") {
            continue;
        }
        let finished = RollRecord::read(root, &path).and_then(|record| match record {
            Some(record) if !process_is_running(record.pid) => record.finish_links(&path),
            _ => Ok(0),
        });
        match finished {
            Ok(0) => {}
            Ok(files) => {
                tracing::info!(record = %path.display(), files, "finished a roll that a stopped process left half-linked");
                linked += files;
            }
            Err(error) => tracing::warn!(%error, "roll record left alone; its lane resumes from its acknowledged position"),
        }
    }
    linked
}

/// Whether `pid` is this process or another one running on this machine.
fn process_is_running(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// `<root>/.sluice-lanes/<function>/<lane>.roll`, names escaped so none can name another directory.
pub(crate) fn record_path(root: &Path, function: &str, lane: &str) -> PathBuf {
    root.join(ROLL_RECORD_DIR).join(escape_file_name(function)).join(format!("{}.roll", escape_file_name(lane)))
}

/// Percent-escapes every byte outside `[A-Za-z0-9_-]` (dots too: no name can be `..`).
fn escape_file_name(name: &str) -> String {
    name.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> FrameError {
    FrameError::Io { op, path: path.to_path_buf(), source }
}

fn sync_dir(dir: &Path) -> Result<(), FrameError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_manifest::SinkSpec;

    fn sinks(root: &Path, extra: &str) -> Sinks {
        let spec: SinkSpec = toml::from_str(&format!("path = \"out\"\nrow-group-rows = 64\n{extra}")).unwrap();
        Sinks::resolve(root, &BTreeMap::from([("out".to_string(), spec)])).unwrap()
    }

    fn write(text: &str) -> Vec<BufferedWrite> {
        let source = sluice_frame::ingest::JsonSource { name: "t", data: text.as_bytes(), first_line: 1 };
        let frame = sluice_frame::ingest::read_json_lines(&[source], &Default::default()).unwrap().frame;
        vec![BufferedWrite { sink: "out".into(), frame }]
    }

    fn lines(range: std::ops::Range<i64>) -> String {
        range.map(|i| format!("{{\"id\":{i},\"day\":\"d{}\"}}\n", i % 2)).collect()
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn batches_gather_in_one_file_until_a_bound_rolls_it() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "roll-rows = 250\nroll-ms = 60000");
        let mut lane = Lane::new("f", "t-p0");
        lane.append(&sinks, write(&lines(0..100)), 0, 99).unwrap();
        lane.append(&sinks, vec![], 100, 109).unwrap();
        lane.append(&sinks, write(&lines(110..210)), 110, 209).unwrap();
        assert!(!lane.is_due(Instant::now()), "200 rows, bound 250");
        assert!(visible(&root.path().join("out")).iter().all(|n| n.starts_with('.')), "nothing visible before the roll");
        lane.append(&sinks, write(&lines(210..310)), 210, 309).unwrap();
        assert!(lane.is_due(Instant::now()), "a 250-row file closed");
        let written = lane.roll(&sinks).unwrap();
        assert_eq!(written.iter().map(|w| w.rows).collect::<Vec<_>>(), [250, 50]);
        assert_eq!(visible(&root.path().join("out")), ["f-t-p0-o0-309-00000.parquet", "f-t-p0-o0-309-00001.parquet"]);
        assert!(!lane.holds_rows());
        lane.append(&sinks, vec![], 310, 320).unwrap();
        assert!(!lane.holds_rows() && lane.roll(&sinks).unwrap().is_empty());
    }

    #[test]
    fn time_and_bytes_bounds_make_a_lane_due() {
        let root = tempfile::tempdir().unwrap();
        let sinks_timed = sinks(root.path(), "roll-ms = 50");
        let mut lane = Lane::new("f", "t-p1");
        lane.append(&sinks_timed, write(&lines(0..5)), 0, 4).unwrap();
        assert!(!lane.is_due(Instant::now()));
        assert!(lane.is_due(Instant::now() + Duration::from_millis(60)));
        lane.discard();
        let sinks_small = sinks(root.path(), "roll-bytes = 100");
        lane.append(&sinks_small, write(&lines(0..50)), 0, 49).unwrap();
        assert!(lane.is_due(Instant::now()));
        lane.discard();
        assert!(visible(&root.path().join("out")).is_empty(), "discard leaves nothing");
    }

    #[test]
    fn a_replay_finds_identical_files_durable_and_never_overwrites_different_ones() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "");
        let mut lane = Lane::new("f", "t-p2");
        lane.append(&sinks, write(&lines(0..10)), 0, 9).unwrap();
        let first = lane.roll(&sinks).unwrap();
        lane.append(&sinks, write(&lines(0..10)), 0, 9).unwrap();
        assert_eq!(lane.roll(&sinks).unwrap(), first, "an identical replay");
        lane.append(&sinks, write(&lines(0..9)), 0, 9).unwrap();
        let other = lane.roll(&sinks).unwrap();
        assert_ne!(other[0].path, first[0].path);
        assert_eq!(visible(&root.path().join("out")).len(), 2);
        assert_eq!(sluice_frame::sink::remove_stale_staging(&root.path().join("out")).unwrap().len(), 0);
    }

    #[test]
    fn partitioned_sinks_roll_one_file_per_partition_and_schema_changes_start_a_file() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "partition-by = [\"day\"]");
        let mut lane = Lane::new("f", "t-p3");
        lane.append(&sinks, write(&lines(0..10)), 0, 9).unwrap();
        lane.append(&sinks, write("{\"id\":\"text\",\"day\":\"d0\"}\n"), 10, 10).unwrap();
        let written = lane.roll(&sinks).unwrap();
        let mut rows: Vec<(String, u64)> = written
            .iter()
            .map(|w| (w.path.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned(), w.rows))
            .collect();
        rows.sort();
        assert_eq!(rows, [("day=d0".to_string(), 1), ("day=d0".to_string(), 5), ("day=d1".to_string(), 5)]);
        let err = lane.append(&sinks, write("{\"id\":1}\n"), 11, 11).unwrap_err();
        assert_eq!(err.code(), sluice_frame::ErrorCode::ColumnNotFound);
        assert!(!lane.holds_rows());
    }

    /// The roll record of lane `t-p<n>` of function `f`.
    fn record_of(root: &Path, sinks: &Sinks, lane: &str) -> RollRecord {
        RollRecord::read(sinks.root(), &record_path(sinks.root(), "f", lane)).unwrap().unwrap_or_else(|| panic!("no record under {}", root.display()))
    }

    #[test]
    fn a_roll_records_its_next_position_and_files_and_recovery_returns_it() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "roll-rows = 6");
        assert_eq!(Lane::recover(&sinks, "f", "t-p4").unwrap(), None, "no record before the first roll");
        let mut lane = Lane::new("f", "t-p4");
        lane.append(&sinks, write(&lines(0..10)), 40, 49).unwrap();
        lane.append(&sinks, vec![], 50, 52).unwrap();
        let written = lane.roll(&sinks).unwrap();
        let record = record_of(root.path(), &sinks, "t-p4");
        assert_eq!(record.next, 53);
        assert_eq!(record.pid, std::process::id());
        assert_eq!(record.files.iter().map(|f| f.final_path.clone()).collect::<Vec<_>>(), written.iter().map(|w| w.path.clone()).collect::<Vec<_>>());
        assert_eq!(Lane::recover(&sinks, "f", "t-p4").unwrap(), Some(53));
        lane.append(&sinks, write(&lines(10..12)), 53, 60).unwrap();
        lane.roll(&sinks).unwrap();
        assert_eq!(Lane::recover(&sinks, "f", "t-p4").unwrap(), Some(61), "the next roll replaces the record");
    }

    #[test]
    fn the_record_is_written_before_any_file_is_linked() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "");
        // A file where the record directory belongs: writing the record fails.
        std::fs::write(root.path().join(ROLL_RECORD_DIR), b"in the way").unwrap();
        let mut lane = Lane::new("f", "t-p5");
        lane.append(&sinks, write(&lines(0..10)), 0, 9).unwrap();
        let err = lane.roll(&sinks).unwrap_err().to_string();
        assert!(err.contains(ROLL_RECORD_DIR), "{err}");
        assert!(visible(&root.path().join("out")).is_empty(), "a file became visible before its record: {:?}", visible(&root.path().join("out")));
    }

    /// Turns a rolled lane back into the state a crash between record and links leaves:
    /// every file of the record staged again, none final.
    fn unlink_roll(record: &RollRecord) {
        for file in &record.files {
            std::fs::rename(&file.final_path, &file.temp_path).unwrap();
        }
    }

    #[test]
    fn recovery_finishes_the_links_a_crash_cut_short() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "roll-rows = 4");
        let mut lane = Lane::new("f", "t-p6");
        lane.append(&sinks, write(&lines(0..10)), 0, 9).unwrap();
        let written = lane.roll(&sinks).unwrap();
        let record = record_of(root.path(), &sinks, "t-p6");
        unlink_roll(&record);
        // The crash came after the first link.
        std::fs::hard_link(&record.files[0].temp_path, &record.files[0].final_path).unwrap();
        assert_eq!(visible(&root.path().join("out")).iter().filter(|n| !n.starts_with('.')).count(), 1);
        assert_eq!(Lane::recover(&sinks, "f", "t-p6").unwrap(), Some(10));
        let names = visible(&root.path().join("out"));
        assert_eq!(names.len(), 3, "every file final, no staging file left: {names:?}");
        assert!(written.iter().all(|w| std::fs::metadata(&w.path).is_ok_and(|m| m.len() == w.bytes)), "the files the roll wrote");
        assert_eq!(Lane::recover(&sinks, "f", "t-p6").unwrap(), Some(10), "recovering twice changes nothing");
    }

    #[test]
    fn resolving_the_sinks_finishes_a_stopped_process_roll_before_removing_its_staging_files() {
        let root = tempfile::tempdir().unwrap();
        let sinks_before = sinks(root.path(), "");
        let mut lane = Lane::new("f", "t-p7");
        lane.append(&sinks_before, write(&lines(0..10)), 0, 9).unwrap();
        lane.roll(&sinks_before).unwrap();
        let mut record = record_of(root.path(), &sinks_before, "t-p7");
        unlink_roll(&record);
        // Written by a process that is gone: its staging name carries its process id.
        let dead_pid = 4_000_000_000u32;
        let staged = &mut record.files[0];
        let dead_name = staged.temp_path.to_string_lossy().replace(&format!(".{}.tmp", std::process::id()), &format!(".{dead_pid}.tmp"));
        std::fs::rename(&staged.temp_path, &dead_name).unwrap();
        staged.temp_path = PathBuf::from(dead_name);
        record.pid = dead_pid;
        record.write(sinks_before.root(), &record_path(sinks_before.root(), "f", "t-p7")).unwrap();

        let resolved = sinks(root.path(), "");
        assert_eq!(visible(&root.path().join("out")), ["f-t-p7-o0-9-00000.parquet"]);
        assert_eq!(Lane::recover(&resolved, "f", "t-p7").unwrap(), Some(10));
    }

    #[test]
    fn an_unusable_record_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let sinks = sinks(root.path(), "");
        let mut lane = Lane::new("f", "t-p8");
        lane.append(&sinks, write(&lines(0..10)), 0, 9).unwrap();
        let written = lane.roll(&sinks).unwrap();
        let path = record_path(sinks.root(), "f", "t-p8");
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = Lane::recover(&sinks, "f", "t-p8").unwrap_err();
        assert!(matches!(err, RollRecordError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");

        std::fs::write(&path, &text).unwrap();
        std::fs::remove_file(&written[0].path).unwrap();
        let err = Lane::recover(&sinks, "f", "t-p8").unwrap_err();
        assert!(matches!(err, RollRecordError::Missing { .. }), "{err}");
        assert!(err.to_string().contains(&written[0].path.display().to_string()), "{err}");

        std::fs::write(&path, br#"{"next": 3, "pid": 1, "files": [{"staged": "../x", "final": "out/y"}]}"#).unwrap();
        let err = Lane::recover(&sinks, "f", "t-p8").unwrap_err().to_string();
        assert!(err.contains(".."), "a record cannot name a file outside the data root: {err}");
    }

    #[test]
    fn record_names_cannot_leave_the_record_directory() {
        let root = Path::new("/data");
        assert_eq!(record_path(root, "f", "t.x-p0"), Path::new("/data/.sluice-lanes/f/t%2Ex-p0.roll"));
        assert_eq!(record_path(root, "..", "a/b"), Path::new("/data/.sluice-lanes/%2E%2E/a%2Fb.roll"));
    }
}

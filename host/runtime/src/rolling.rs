//! Sink files that stay open across the batches of one ordered stream (a Kafka partition).
//!
//! Making every batch's output durable on its own costs an fsynced file per batch. A [`Lane`]
//! instead appends the rows of each successful invocation to one open staging file per sink
//! (and per hive partition), and rolls them all together — fsync, link to the final name,
//! fsync of the directory — when a sink's `roll-rows`, `roll-bytes` or `roll-ms` is reached,
//! or when the stream asks (shutdown, rebalance). The stream acknowledges its input (commits
//! Kafka offsets) only up to the last batch of a roll.
//!
//! Rolled files are named `<function>-<lane>-o<first>-<last>-<n>.parquet` by the positions
//! (offsets) of the first and last batch they hold, so a replay after a crash that cuts the
//! same batches finds its identical files already durable, and one that cuts them differently
//! writes new names: duplicates, never a corrupted or overwritten file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_frame::sink::{RollingFile, StagedFile, create_partition_dir, discard_staged, split_by_partition};
use sluice_frame::{Frame, FrameError};

use crate::sinks::{Sinks, WrittenFile};

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
        let result = sinks.commit(&staged);
        if result.is_err() {
            sinks.discard(&staged);
        }
        result
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
}

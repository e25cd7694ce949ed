//! The events of one delivery, held by the host and handed to the guest by reference.
//!
//! File input is memory-mapped, not read: a `whole`-mode batch over a large file refers to
//! the file, and its bytes are parsed in place when the guest asks for a frame.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;
use sluice_frame::ingest::{BadLinePolicy, JsonSource};

/// Which kind of trigger delivered a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    File,
    Http,
    Kafka,
    Cron,
}

/// Where an event came from, as the guest sees it through `batch.meta`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventMeta {
    File { path: String, line: u64 },
    Http { method: String, path: String, headers: Vec<(String, String)> },
    Kafka { topic: String, partition: i32, offset: i64, key: Option<Vec<u8>> },
    Cron { scheduled_ms: i64 },
}

impl EventMeta {
    /// A short name for error messages: the file, or the topic/partition@offset.
    fn source_name(&self) -> String {
        match self {
            EventMeta::File { path, .. } => path.clone(),
            EventMeta::Http { method, path, .. } => format!("{method} {path}"),
            EventMeta::Kafka { topic, partition, offset, .. } => format!("{topic}/{partition}@{offset}"),
            EventMeta::Cron { scheduled_ms } => format!("cron tick {scheduled_ms}"),
        }
    }

    /// Where the event came from and its position there, as dead-letter records name them:
    /// a file and line, a topic/partition and offset, a request, a cron tick.
    pub fn dead_letter_position(&self) -> (String, u64) {
        match self {
            EventMeta::File { path, line } => (path.clone(), *line),
            EventMeta::Kafka { topic, partition, offset, .. } => (format!("kafka:{topic}/{partition}"), *offset as u64),
            EventMeta::Http { method, path, .. } => (format!("http:{method} {path}"), 0),
            EventMeta::Cron { scheduled_ms } => ("cron".to_string(), *scheduled_ms as u64),
        }
    }

    fn first_line(&self) -> u64 {
        match self {
            EventMeta::File { line, .. } => *line,
            _ => 1,
        }
    }
}

/// A read-only memory map of one input file.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    display: String,
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps `path` read-only. Empty files are not mapped (mmap refuses length 0).
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        // SAFETY: the map is read-only; sluice does not modify input files, and a file
        // truncated underneath us is outside what the file trigger supports.
        let map = if len == 0 { None } else { Some(unsafe { Mmap::map(&file)? }) };
        Ok(MappedFile {
            path: path.to_path_buf(),
            display: path.display().to_string(),
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Advises the kernel that `range` is not needed: its pages leave the resident set.
    ///
    /// The page cache may hold a file in large folios (up to 2 MiB), which stay mapped unless a
    /// release covers them whole, so the range is widened down to a 2 MiB boundary at its start
    /// (bytes before it were parsed already, or are refaulted by a parser still on them) and cut
    /// to one at its end (the next release covers the rest).
    pub fn release(&self, range: Range<usize>) {
        const FOLIO: usize = 2 << 20;
        let Some(map) = &self.map else { return };
        let start = range.start / FOLIO * FOLIO;
        let end = if range.end >= map.len() { map.len() } else { range.end / FOLIO * FOLIO };
        if end <= start {
            return;
        }
        // SAFETY: the map is read-only and file-backed, so dropped pages hold nothing that is
        // not in the file; a later read faults them in again with the same contents.
        if let Err(error) = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) } {
            tracing::debug!(path = %self.display, %error, "madvise(DONTNEED) failed; pages stay resident");
        }
    }
}

/// A contiguous run of lines in one file.
#[derive(Debug, Clone)]
pub struct FileSpan {
    pub file: Arc<MappedFile>,
    pub range: Range<usize>,
    /// 1-based line number of the span's first line.
    pub first_line: u64,
}

impl FileSpan {
    /// The whole file as one span.
    pub fn whole(file: Arc<MappedFile>) -> FileSpan {
        let len = file.bytes().len();
        FileSpan { file, range: 0..len, first_line: 1 }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.range.clone()]
    }
}

/// One event delivered by a stream trigger, body owned by the host.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Vec<u8>,
    pub meta: EventMeta,
}

/// The messages of one Kafka partition in offset order, their bodies packed into one buffer
/// with a newline after each. The JSON reader then parses a stretch of them in place as lines
/// of one source, rather than one source (and one allocation) per message.
#[derive(Debug)]
pub struct PartitionMessages {
    topic: Arc<str>,
    partition: i32,
    /// `kafka:<topic>/<partition>`: the source that parse errors and skipped lines name; their
    /// line number is the message's offset.
    name: String,
    bodies: Vec<u8>,
    keys: Vec<u8>,
    entries: Vec<PackedMessage>,
    runs: OnceLock<Vec<Run>>,
}

#[derive(Debug)]
struct PackedMessage {
    offset: i64,
    body: Range<usize>,
    key: Option<Range<usize>>,
}

/// Consecutive offsets whose bodies hold no newline but the one after each: within it, the
/// n-th line is the message at `first_offset + n`.
#[derive(Debug)]
struct Run {
    bytes: Range<usize>,
    first_offset: i64,
}

impl PartitionMessages {
    pub fn new(topic: Arc<str>, partition: i32) -> PartitionMessages {
        PartitionMessages {
            name: format!("kafka:{topic}/{partition}"),
            topic,
            partition,
            bodies: Vec::new(),
            keys: Vec::new(),
            entries: Vec::new(),
            runs: OnceLock::new(),
        }
    }

    /// Appends the message at `offset`; offsets must grow.
    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, body: &[u8]) {
        debug_assert!(self.entries.last().is_none_or(|last| last.offset < offset), "offsets of a partition grow");
        let start = self.bodies.len();
        self.bodies.extend_from_slice(body);
        self.bodies.push(b'\n');
        let key = key.map(|key| {
            let start = self.keys.len();
            self.keys.extend_from_slice(key);
            start..self.keys.len()
        });
        self.entries.push(PackedMessage { offset, body: start..start + body.len(), key });
    }

    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The offsets of the first and last message, if any.
    pub fn offsets(&self) -> Option<(i64, i64)> {
        Some((self.entries.first()?.offset, self.entries.last()?.offset))
    }

    fn meta(&self, entry: &PackedMessage) -> EventMeta {
        EventMeta::Kafka {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: entry.offset,
            key: entry.key.clone().map(|key| self.keys[key].to_vec()),
        }
    }

    /// Splits the bodies where the offsets skip (compacted or transactional topics) or where
    /// a body holds a newline of its own, which would shift the lines after it.
    fn runs(&self) -> &[Run] {
        self.runs.get_or_init(|| {
            let mut runs: Vec<Run> = Vec::new();
            // The offset that continues the last run, unless its last body broke the lines.
            let mut continuing = None;
            for entry in &self.entries {
                let end = entry.body.end + 1;
                match runs.last_mut() {
                    Some(run) if continuing == Some(entry.offset) => run.bytes.end = end,
                    _ => runs.push(Run { bytes: entry.body.start..end, first_offset: entry.offset }),
                }
                continuing = memchr::memchr(b'\n', &self.bodies[entry.body.clone()]).is_none().then_some(entry.offset + 1);
            }
            runs
        })
    }
}

#[derive(Debug)]
enum Events {
    /// Lines of files: every non-blank line is one event.
    Lines { spans: Vec<FileSpan>, index: OnceLock<Vec<LineRef>> },
    /// Messages with their source names, computed once for error messages.
    Messages { messages: Vec<Message>, names: Vec<String> },
    /// The messages of one Kafka partition, packed.
    Partition(PartitionMessages),
}

/// Where one line event sits, built only when the guest asks for single events.
#[derive(Debug, Clone, Copy)]
struct LineRef {
    span: u32,
    start: usize,
    end: usize,
    line: u64,
}

/// How the guest's `batch` handle refers to a batch: the trigger keeps its own reference,
/// so a failed batch can still be dead-lettered after the instance is gone.
pub type SharedBatch = Arc<Batch>;

/// The host side of the WIT `batch` resource.
#[derive(Debug)]
pub struct Batch {
    trigger: TriggerKind,
    events: Events,
    bad_lines: BadLinePolicy,
    bytes: u64,
}

impl Batch {
    /// A batch over lines of files (the file trigger).
    pub fn from_spans(spans: Vec<FileSpan>, bad_lines: BadLinePolicy) -> Batch {
        let bytes = spans.iter().map(|s| s.range.len() as u64).sum();
        Batch {
            trigger: TriggerKind::File,
            events: Events::Lines { spans, index: OnceLock::new() },
            bad_lines,
            bytes,
        }
    }

    /// A batch of messages from a stream trigger.
    pub fn from_messages(trigger: TriggerKind, messages: Vec<Message>, bad_lines: BadLinePolicy) -> Batch {
        let bytes = messages.iter().map(|m| m.body.len() as u64).sum();
        let names = messages.iter().map(|m| m.meta.source_name()).collect();
        Batch { trigger, events: Events::Messages { messages, names }, bad_lines, bytes }
    }

    /// A batch of one Kafka partition's messages.
    pub fn from_partition(messages: PartitionMessages, bad_lines: BadLinePolicy) -> Batch {
        // Every body is followed by its newline.
        let bytes = (messages.bodies.len() - messages.entries.len()) as u64;
        Batch { trigger: TriggerKind::Kafka, events: Events::Partition(messages), bad_lines, bytes }
    }

    pub fn trigger(&self) -> TriggerKind {
        self.trigger
    }

    /// Total body bytes in the batch.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn bad_line_policy(&self) -> BadLinePolicy {
        self.bad_lines
    }

    /// Number of events (for file input: non-blank lines).
    pub fn len(&self) -> usize {
        match &self.events {
            Events::Lines { spans, index } => index.get_or_init(|| index_lines(spans)).len(),
            Events::Messages { messages, .. } => messages.len(),
            Events::Partition(packed) => packed.len(),
        }
    }

    /// [`Batch::len`] when it needs no pass over the input: messages, or file lines already
    /// indexed. Counting a whole file's lines reads (and maps back in) every page of it.
    pub fn len_if_known(&self) -> Option<usize> {
        match &self.events {
            Events::Lines { index, .. } => index.get().map(Vec::len),
            Events::Messages { messages, .. } => Some(messages.len()),
            Events::Partition(packed) => Some(packed.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn meta(&self, index: usize) -> Option<EventMeta> {
        match &self.events {
            Events::Lines { spans, index: lines } => {
                let line = lines.get_or_init(|| index_lines(spans)).get(index)?;
                let span = &spans[line.span as usize];
                Some(EventMeta::File { path: span.file.display.clone(), line: line.line })
            }
            Events::Messages { messages, .. } => messages.get(index).map(|m| m.meta.clone()),
            Events::Partition(packed) => packed.entries.get(index).map(|entry| packed.meta(entry)),
        }
    }

    pub fn body(&self, index: usize) -> Option<&[u8]> {
        match &self.events {
            Events::Lines { spans, index: lines } => {
                let line = lines.get_or_init(|| index_lines(spans)).get(index)?;
                Some(&spans[line.span as usize].bytes()[line.start..line.end])
            }
            Events::Messages { messages, .. } => messages.get(index).map(|m| m.body.as_slice()),
            Events::Partition(packed) => packed.entries.get(index).map(|entry| &packed.bodies[entry.body.clone()]),
        }
    }

    /// The bodies as JSON sources, each named so that parse errors point at the input.
    pub fn json_sources(&self) -> Vec<JsonSource<'_>> {
        match &self.events {
            Events::Lines { spans, .. } => spans
                .iter()
                .map(|s| JsonSource { name: &s.file.display, data: s.bytes(), first_line: s.first_line })
                .collect(),
            Events::Messages { messages, names } => messages
                .iter()
                .zip(names)
                .map(|(m, name)| JsonSource { name, data: &m.body, first_line: m.meta.first_line() })
                .collect(),
            Events::Partition(packed) => packed
                .runs()
                .iter()
                .map(|run| JsonSource { name: &packed.name, data: &packed.bodies[run.bytes.clone()], first_line: run.first_offset as u64 })
                .collect(),
        }
    }

    /// Drops the pages of `range` of source `index` (as numbered by [`Batch::json_sources`])
    /// from the resident set when that source is a mapped file; the file stays intact and is
    /// read again from the page cache if touched later. Other sources are left alone.
    pub fn release(&self, index: usize, range: Range<usize>) {
        if let Events::Lines { spans, .. } = &self.events
            && let Some(span) = spans.get(index)
        {
            span.file.release(span.range.start + range.start..span.range.start + range.end.min(span.range.len()));
        }
    }
}

fn index_lines(spans: &[FileSpan]) -> Vec<LineRef> {
    let mut lines = Vec::new();
    for (span_index, span) in spans.iter().enumerate() {
        let bytes = span.bytes();
        let mut start = 0;
        let mut line = span.first_line;
        while start < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
            let mut content_end = end;
            if content_end > start && bytes[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            if bytes[start..content_end].iter().any(|b| !b.is_ascii_whitespace()) {
                lines.push(LineRef { span: span_index as u32, start, end: content_end, line });
            }
            start = end + 1;
            line += 1;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span_of(text: &str) -> (tempfile::TempDir, FileSpan) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, text).unwrap();
        let file = Arc::new(MappedFile::open(&path).unwrap());
        (dir, FileSpan::whole(file))
    }

    #[test]
    fn file_lines_are_events_with_line_numbers() {
        let (_dir, span) = span_of("{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":3}");
        let batch = Batch::from_spans(vec![span], BadLinePolicy::Fail);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.body(1), Some(&b"{\"a\":2}"[..]));
        assert!(matches!(batch.meta(2), Some(EventMeta::File { line: 4, .. })));
        assert_eq!(batch.body(3), None);
        assert_eq!(batch.bytes(), 25);
    }

    #[test]
    fn empty_files_map_to_empty_batches() {
        let (_dir, span) = span_of("");
        let batch = Batch::from_spans(vec![span], BadLinePolicy::Fail);
        assert!(batch.is_empty());
        assert_eq!(batch.json_sources()[0].data, b"");
    }

    #[test]
    fn messages_keep_their_meta() {
        let meta = EventMeta::Kafka { topic: "t".into(), partition: 2, offset: 9, key: None };
        let batch = Batch::from_messages(
            TriggerKind::Kafka,
            vec![Message { body: b"{}".to_vec(), meta: meta.clone() }],
            BadLinePolicy::Skip,
        );
        assert_eq!(batch.trigger(), TriggerKind::Kafka);
        assert_eq!(batch.meta(0), Some(meta));
        assert_eq!(batch.json_sources()[0].name, "t/2@9");
    }

    fn packed(messages: &[(i64, &str)]) -> Batch {
        let mut packed = PartitionMessages::new(Arc::from("t"), 2);
        for (offset, body) in messages {
            packed.push(*offset, (*offset % 2 == 0).then_some(b"k".as_slice()), body.as_bytes());
        }
        Batch::from_partition(packed, BadLinePolicy::Skip)
    }

    #[test]
    fn partition_messages_keep_bodies_keys_and_offsets() {
        let batch = packed(&[(7, "{\"a\":1}"), (8, "")]);
        assert_eq!((batch.len(), batch.bytes(), batch.trigger()), (2, 7, TriggerKind::Kafka));
        assert_eq!(batch.body(1), Some(&b""[..]));
        assert_eq!(batch.meta(1), Some(EventMeta::Kafka { topic: "t".into(), partition: 2, offset: 8, key: Some(b"k".to_vec()) }));
        assert!(matches!(batch.meta(0), Some(EventMeta::Kafka { offset: 7, key: None, .. })));
        assert_eq!(batch.body(2), None);
    }

    #[test]
    fn partition_messages_parse_in_place_and_errors_name_the_offset() {
        // 10 and 11 are consecutive; 13 follows a gap; 14 follows a body that holds a newline.
        let batch = packed(&[(10, "{\"a\":1}"), (11, "{\"a\":"), (13, "{\"a\":3}\n{\"a\":4}"), (14, "nope")]);
        let sources = batch.json_sources();
        let starts: Vec<u64> = sources.iter().map(|s| s.first_line).collect();
        assert_eq!(starts, [10, 13, 14]);
        assert!(sources.iter().all(|s| s.name == "kafka:t/2"));
        let options = sluice_frame::ingest::ReadOptions { bad_lines: BadLinePolicy::Skip, ..Default::default() };
        let read = sluice_frame::ingest::read_json_lines(&sources, &options).unwrap();
        assert_eq!(read.frame.num_rows(), 3);
        let bad: Vec<(&str, u64)> = read.bad_lines.iter().map(|b| (b.source.as_str(), b.line)).collect();
        assert_eq!(bad, [("kafka:t/2", 11), ("kafka:t/2", 14)]);
        let failed = sluice_frame::ingest::read_json_lines(&sources, &Default::default()).unwrap_err();
        assert!(failed.to_string().starts_with("kafka:t/2 line 11:"), "{failed}");
    }
}

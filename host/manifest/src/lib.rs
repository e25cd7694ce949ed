//! The `sluice.toml` manifest: everything the host needs to know about one function.
//!
//! The same manifest drives `sluice run`, `sluice dev` and a REST deploy, so it holds
//! configuration only — which triggers feed the function is never a code change.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The file name every function directory carries.
pub const MANIFEST_FILE: &str = "sluice.toml";

/// Why a manifest was refused; every variant names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One function: its component, how to build it, what feeds it and where it writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub name: String,
    /// Path of the built component, relative to the manifest's directory.
    pub component: PathBuf,
    /// Shell command that builds the component, run in the manifest's directory.
    #[serde(default)]
    pub build: Option<String>,
    #[serde(default)]
    pub device: DevicePreference,
    /// Free-form settings the handler reads through the `config` interface.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
    #[serde(default)]
    pub batching: Batching,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSpec>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retry: Retry,
    /// The directory the manifest was read from; set by [`Manifest::load`].
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Where the function's frames are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DevicePreference {
    /// A GPU when the host has one, the CPU otherwise.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// What feeds the function. Several triggers may feed one function.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TriggerSpec {
    /// Local files, given on the command line.
    File {
        #[serde(default)]
        mode: FileMode,
        #[serde(default, rename = "bad-lines")]
        bad_lines: BadLines,
    },
    /// A Kafka consumer group; see [`KafkaTrigger`].
    Kafka(KafkaTrigger),
    /// Requests to `/functions/<name>` on the host's HTTP listener; see [`HttpTrigger`].
    Http(HttpTrigger),
    /// A schedule: a cron expression or a fixed interval; see [`CronTrigger`].
    Cron(CronTrigger),
}

/// Consumes topics as one member of a consumer group; offsets are committed only after the
/// batch's output is durable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaTrigger {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// Consumer group; several hosts with the same group share the partitions.
    pub group: String,
    /// Where a group without committed offsets starts.
    #[serde(default)]
    pub initial_offset: InitialOffset,
    #[serde(default)]
    pub bad_lines: BadLines,
    /// Passed to librdkafka as they are (e.g. `security.protocol`, `sasl.mechanisms`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialOffset {
    #[default]
    Earliest,
    Latest,
}

/// Serves the function over HTTP, one reply per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpTrigger {
    #[serde(default)]
    pub mode: HttpMode,
    /// Larger request bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Requests waiting for an instance; beyond it requests get 429 with Retry-After.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

fn default_queue_depth() -> usize {
    1024
}

/// How HTTP requests map to invocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpMode {
    /// One invocation per request.
    #[default]
    PerRequest,
    /// Requests gathered by `[batching]`; each gets its own reply from the outcome.
    Batched,
}

/// Fires the function on a schedule; a tick that comes while the previous run is still going
/// is skipped and counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CronTrigger {
    /// A cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// A fixed interval instead of `schedule`.
    #[serde(default)]
    pub every_ms: Option<u64>,
}

/// How the file trigger cuts its input into batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileMode {
    /// All input is one batch, so an aggregation sees every row.
    #[default]
    Whole,
    /// Cut by `max-events` / `max-bytes`, one invocation per chunk, as a stream would deliver it.
    Chunked,
}

/// What happens to a line that is not valid JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadLines {
    /// The batch fails with an error naming the file and line; nothing of it is written.
    #[default]
    Fail,
    /// The line goes to the dead-letter file with its line number; the rest is processed.
    Skip,
}

/// When a batch is cut: whichever limit is reached first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Batching {
    pub max_events: u64,
    pub max_bytes: u64,
    pub max_wait_ms: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_bytes: 64 << 20,
            max_wait_ms: 1_000,
        }
    }
}

/// A Parquet sink the handler writes to by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkSpec {
    /// Directory relative to the data root; `..` and absolute paths are refused.
    pub path: PathBuf,
    #[serde(default)]
    pub compression: SinkCompression,
    /// zstd level (1..=22); 3 when unset.
    #[serde(default)]
    pub zstd_level: Option<i32>,
    /// Rows per Parquet row group.
    #[serde(default)]
    pub row_group_rows: Option<usize>,
    /// A new file is started after this many rows.
    #[serde(default)]
    pub roll_rows: Option<usize>,
    /// A stream's file is rolled (made durable) once it holds about this many bytes.
    #[serde(default)]
    pub roll_bytes: Option<u64>,
    /// A stream's file is rolled at the latest this long after its first rows arrived.
    #[serde(default)]
    pub roll_ms: Option<u64>,
    /// Hive-style partition columns: rows go to `<path>/<col>=<value>/…` by their values.
    #[serde(default)]
    pub partition_by: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkCompression {
    #[default]
    Zstd,
    Snappy,
    None,
}

/// What one instance of the function may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Linear memory of one instance, in MiB.
    pub memory_mb: u64,
    /// Wall time of one invocation, in milliseconds.
    pub timeout_ms: u64,
    /// Warm instances kept ready while idle: pre-instantiated stores that a batch takes
    /// without paying for instantiation.
    pub min_instances: u32,
    /// Invocations running at once; `instances` is the older name.
    #[serde(alias = "instances")]
    pub max_instances: u32,
    /// GPU memory the function's frames may hold at once on the CUDA backend (all its
    /// invocations together), in MiB.
    pub gpu_memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 256,
            timeout_ms: 60_000,
            min_instances: 0,
            max_instances: 1,
            gpu_memory_mb: 2048,
        }
    }
}

/// How a failed batch is retried before its events go to the dead-letter directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Retry {
    /// Invocations in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// For Kafka-triggered functions: failed events, with the error, are also produced to
    /// this topic (on the trigger's brokers), besides the dead-letter file.
    pub dead_letter_topic: Option<String>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff_ms: 100,
            max_backoff_ms: 5_000,
            dead_letter_topic: None,
        }
    }
}

impl Manifest {
    /// Reads `sluice.toml` from a function directory (or the manifest file itself).
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let file = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Manifest::parse(&text, &file, dir)
    }

    /// Parses and validates manifest text; `origin` names it in errors, `dir` anchors relative paths.
    pub fn parse(text: &str, origin: &Path, dir: PathBuf) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        manifest.dir = dir;
        manifest.validate().map_err(invalid)?;
        Ok(manifest)
    }

    /// The component path, resolved against the manifest's directory.
    pub fn component_path(&self) -> PathBuf {
        self.dir.join(&self.component)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name `{}` must be non-empty and use only letters, digits, `-` and `_`",
                self.name
            ));
        }
        for (name, sink) in &self.sinks {
            check_relative_path(&sink.path).map_err(|why| format!("sink `{name}`: {why}"))?;
            if let Some(level) = sink.zstd_level
                && !(1..=22).contains(&level)
            {
                return Err(format!("sink `{name}`: zstd-level {level} is outside 1..=22"));
            }
            if sink.roll_rows == Some(0) || sink.row_group_rows == Some(0) || sink.roll_bytes == Some(0) || sink.roll_ms == Some(0) {
                return Err(format!("sink `{name}`: roll-rows, roll-bytes, roll-ms and row-group-rows must be > 0"));
            }
            for column in &sink.partition_by {
                if column.is_empty() || column.contains(['/', '=', '\\']) || column.starts_with('.') {
                    return Err(format!(
                        "sink `{name}`: partition-by column `{column}` must be non-empty, not start with `.` and hold no `/`, `\\` or `=`"
                    ));
                }
            }
        }
        if self.limits.memory_mb == 0 || self.limits.timeout_ms == 0 || self.limits.max_instances == 0 {
            return Err("limits: memory-mb, timeout-ms and max-instances (or instances) must be > 0".into());
        }
        if self.limits.min_instances > self.limits.max_instances {
            return Err(format!(
                "limits: min-instances {} exceeds max-instances {}",
                self.limits.min_instances, self.limits.max_instances
            ));
        }
        if let Some(topic) = &self.retry.dead_letter_topic {
            if topic.trim().is_empty() {
                return Err("retry: dead-letter-topic must be non-empty".into());
            }
            if !self.triggers.iter().any(|t| matches!(t, TriggerSpec::Kafka(_))) {
                return Err(format!("retry: dead-letter-topic `{topic}` needs a kafka trigger (its brokers receive the events)"));
            }
        }
        if self.batching.max_events == 0 || self.batching.max_bytes == 0 {
            return Err("batching: max-events and max-bytes must be > 0".into());
        }
        if self.retry.attempts == 0 {
            return Err("retry: attempts must be > 0".into());
        }
        for (index, trigger) in self.triggers.iter().enumerate() {
            validate_trigger(trigger).map_err(|why| format!("triggers[{index}]: {why}"))?;
        }
        Ok(())
    }
}

fn validate_trigger(trigger: &TriggerSpec) -> Result<(), String> {
    match trigger {
        TriggerSpec::File { .. } => Ok(()),
        TriggerSpec::Kafka(kafka) => {
            if kafka.brokers.trim().is_empty() || kafka.group.trim().is_empty() {
                return Err("kafka: brokers and group must be non-empty".into());
            }
            if kafka.topics.is_empty() || kafka.topics.iter().any(|t| t.trim().is_empty()) {
                return Err(format!("kafka: topics {:?} must name at least one non-empty topic", kafka.topics));
            }
            Ok(())
        }
        TriggerSpec::Http(http) => {
            if http.max_body_bytes == 0 || http.queue_depth == 0 {
                return Err("http: max-body-bytes and queue-depth must be > 0".into());
            }
            Ok(())
        }
        TriggerSpec::Cron(cron) => match (&cron.schedule, cron.every_ms) {
            (Some(_), None) | (None, Some(1..)) => Ok(()),
            (None, Some(0)) => Err("cron: every-ms must be > 0".into()),
            _ => Err("cron: set exactly one of `schedule` and `every-ms`".into()),
        },
    }
}

/// Refuses paths that could leave the data root: absolute, `..`, or empty.
pub fn check_relative_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("path is empty".into());
    }
    for part in path.components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("path `{}` must not contain `..`", path.display()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "path `{}` must be relative to the data root",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "log-aggregator"
component = "target/f.wasm"
build = "cargo build --release"
device = "cpu"

[config]
top = "10"

[[triggers]]
kind = "file"
mode = "chunked"
bad-lines = "skip"

[batching]
max-events = 5

[sinks.metrics]
path = "out/metrics"
compression = "zstd"
zstd-level = 7
roll-rows = 1000

[limits]
memory-mb = 64
timeout-ms = 500
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("sluice.toml"), PathBuf::from("/fn"))
    }

    #[test]
    fn parses_every_section() {
        let m = parse(FULL).unwrap();
        assert_eq!(m.name, "log-aggregator");
        assert_eq!(m.component_path(), PathBuf::from("/fn/target/f.wasm"));
        assert_eq!(m.device, DevicePreference::Cpu);
        assert_eq!(m.config["top"], "10");
        assert!(matches!(
            m.triggers[0],
            TriggerSpec::File {
                mode: FileMode::Chunked,
                bad_lines: BadLines::Skip
            }
        ));
        assert_eq!(m.batching.max_events, 5);
        assert_eq!(m.batching.max_bytes, Batching::default().max_bytes);
        assert_eq!(m.sinks["metrics"].zstd_level, Some(7));
        assert_eq!(m.limits.memory_mb, 64);
        assert_eq!((m.limits.min_instances, m.limits.max_instances), (0, 1));
    }

    #[test]
    fn gpu_memory_limit_defaults_and_parses() {
        assert_eq!(parse(FULL).unwrap().limits.gpu_memory_mb, 2048);
        let m = parse(&FULL.replace("memory-mb = 64", "memory-mb = 64\ngpu-memory-mb = 512")).unwrap();
        assert_eq!(m.limits.gpu_memory_mb, 512);
    }

    #[test]
    fn refuses_sink_paths_that_leave_the_data_root() {
        for bad in ["../up", "a/../../b", "/etc"] {
            let text = FULL.replace("out/metrics", bad);
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("sink `metrics`"), "{err}");
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn names_unknown_fields_and_trigger_kinds() {
        let err = parse(&FULL.replace("timeout-ms", "timeout-secs"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout-secs"), "{err}");
        let err = parse(&FULL.replace("kind = \"file\"", "kind = \"carrier-pigeon\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn refuses_bad_names_and_zero_limits() {
        let err = parse(&FULL.replace("log-aggregator", "log aggregator"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log aggregator"), "{err}");
        let err = parse(&FULL.replace("memory-mb = 64", "memory-mb = 0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory-mb"), "{err}");
    }

    #[test]
    fn parses_stream_triggers() {
        let text = format!(
            "{FULL}{}",
            r#"
[[triggers]]
kind = "kafka"
brokers = "127.0.0.1:9092"
topics = ["events"]
group = "g"
initial-offset = "latest"
properties = { "security.protocol" = "SASL_SSL" }

[[triggers]]
kind = "http"
mode = "batched"
max-body-bytes = 100

[[triggers]]
kind = "cron"
every-ms = 250

[retry]
attempts = 5
"#
        );
        let m = parse(&text).unwrap();
        let TriggerSpec::Kafka(kafka) = &m.triggers[1] else { panic!("{:?}", m.triggers[1]) };
        assert_eq!(kafka.initial_offset, InitialOffset::Latest);
        assert_eq!(kafka.properties["security.protocol"], "SASL_SSL");
        let TriggerSpec::Http(http) = &m.triggers[2] else { panic!("{:?}", m.triggers[2]) };
        assert_eq!((http.mode, http.max_body_bytes, http.queue_depth), (HttpMode::Batched, 100, 1024));
        assert!(matches!(m.triggers[3], TriggerSpec::Cron(CronTrigger { every_ms: Some(250), schedule: None })));
        assert_eq!((m.retry.attempts, m.retry.backoff_ms), (5, 100));
    }

    #[test]
    fn refuses_incomplete_stream_triggers() {
        let cases = [
            ("[[triggers]]\nkind = \"cron\"\n", "exactly one of `schedule` and `every-ms`"),
            ("[[triggers]]\nkind = \"cron\"\nevery-ms = 0\n", "every-ms must be > 0"),
            ("[[triggers]]\nkind = \"kafka\"\nbrokers = \"b\"\ngroup = \"g\"\ntopics = []\n", "topics []"),
            ("[[triggers]]\nkind = \"kafka\"\ntopics = [\"t\"]\ngroup = \"g\"\n", "brokers"),
        ];
        for (extra, expected) in cases {
            let err = parse(&format!("{FULL}{extra}")).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
    }

    #[test]
    fn parses_rolling_partitioned_sinks_pools_and_a_dead_letter_topic() {
        let text = FULL.replace("roll-rows = 1000", "roll-rows = 1000\nroll-bytes = 4096\nroll-ms = 250\npartition-by = [\"day\", \"company\"]")
            .replace("timeout-ms = 500", "timeout-ms = 500\nmin-instances = 1\nmax-instances = 3")
            + "[[triggers]]\nkind = \"kafka\"\nbrokers = \"b\"\ntopics = [\"t\"]\ngroup = \"g\"\n[retry]\ndead-letter-topic = \"failed\"\n";
        let m = parse(&text).unwrap();
        let sink = &m.sinks["metrics"];
        assert_eq!((sink.roll_rows, sink.roll_bytes, sink.roll_ms), (Some(1000), Some(4096), Some(250)));
        assert_eq!(sink.partition_by, ["day", "company"]);
        assert_eq!((m.limits.min_instances, m.limits.max_instances), (1, 3));
        assert_eq!(m.retry.dead_letter_topic.as_deref(), Some("failed"));
        let old = parse(&FULL.replace("timeout-ms = 500", "timeout-ms = 500\ninstances = 4")).unwrap();
        assert_eq!(old.limits.max_instances, 4, "`instances` is the older name of max-instances");
    }

    #[test]
    fn refuses_bad_partition_columns_pools_and_dead_letter_topics() {
        let cases = [
            (FULL.replace("roll-rows = 1000", "partition-by = [\"../x\"]"), "partition-by column `../x`"),
            (FULL.replace("roll-rows = 1000", "partition-by = [\"a=b\"]"), "partition-by column `a=b`"),
            (FULL.replace("roll-rows = 1000", "roll-ms = 0"), "roll-ms"),
            (FULL.replace("timeout-ms = 500", "timeout-ms = 500\nmin-instances = 3\nmax-instances = 2"), "min-instances 3 exceeds max-instances 2"),
            (format!("{FULL}[retry]\ndead-letter-topic = \"failed\"\n"), "needs a kafka trigger"),
            (FULL.replace("timeout-ms = 500", "timeout-ms = 500\ninstances = 2\nmax-instances = 2"), "max-instances"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn load_reads_a_function_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), FULL).unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.dir, dir.path());
        let err = Manifest::load(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

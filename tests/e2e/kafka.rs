//! The Kafka trigger end to end: a real broker (nisshi), `sluice serve` as a child process,
//! the Parquet files read back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, Float64Array, Int64Array};
use sluice_e2e::streams::{Broker, Serve, eventually, free_port, function_dir};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_e2e::{read_parquet, row_count, temp_files};

const PARTITIONS: i32 = 4;
/// Rows per sink file: each partition's lane rolls at this many rows (or after a second).
const ROLL_ROWS: usize = 300;

fn bodies(range: std::ops::Range<i64>) -> Vec<String> {
    range.map(|id| format!("{{\"id\":{id},\"value\":{:.1},\"action\":\"ok\"}}", id as f64 * 0.5)).collect()
}

fn kafka_function(dir: &Path, broker: &Broker, topic: &str, max_events: u32) -> std::path::PathBuf {
    let body = format!(
        r#"
[config]
sink = "events"

[[triggers]]
kind = "kafka"
brokers = "{}"
topics = ["{topic}"]
group = "sluice-{topic}"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}

[batching]
max-events = {max_events}
max-wait-ms = 200

[sinks.events]
path = "events"
roll-rows = {ROLL_ROWS}

[limits]
instances = 2
"#,
        broker.address()
    );
    function_dir(dir, "kafka-sink", "echo", &body)
}

/// Every id of the Parquet under `dir`, with how often it appears; checks each value.
fn ids_in(dir: &Path) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for batch in read_parquet(dir) {
        let ids = batch.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let values = batch.column_by_name("value").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
        for row in 0..batch.num_rows() {
            assert!(!ids.is_null(row));
            assert_eq!(values.value(row), ids.value(row) as f64 * 0.5, "value of id {}", ids.value(row));
            *seen.entry(ids.value(row)).or_insert(0) += 1;
        }
    }
    seen
}

fn rows_in(dir: &Path) -> usize {
    row_count(&read_parquet(dir))
}

#[test]
fn messages_over_several_partitions_land_in_parquet_exactly_once() {
    let broker = Broker::start();
    broker.create_topic("metrics", PARTITIONS as u32);
    const N: i64 = 3000;
    broker.produce("metrics", PARTITIONS, &bodies(0..N));
    let work = tempfile::tempdir().unwrap();
    let function = kafka_function(work.path(), &broker, "metrics", 250);
    let data = work.path().join("data");
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve.log"));
    let events = data.join("kafka-sink/events");
    let drained = eventually(Duration::from_secs(90), || rows_in(&events) >= N as usize);
    assert!(drained, "only {} of {N} rows landed; log:\n{}", rows_in(&events), serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)), "serve did not exit 0 on SIGTERM");
    let seen = ids_in(&events);
    assert_eq!(seen.len(), N as usize);
    assert!(seen.values().all(|&n| n == 1), "duplicates without any crash");
    assert_eq!(seen.keys().next_back(), Some(&(N - 1)));
    // Files roll across batches: none holds more than roll-rows, and they are named by
    // partition and offset range.
    let files = sluice_e2e::parquet_files(&events);
    assert!(files.len() <= (N as usize).div_ceil(ROLL_ROWS) + 2 * PARTITIONS as usize, "{} files for {N} messages", files.len());
    for file in &files {
        let rows = rows_of(file);
        assert!(rows <= ROLL_ROWS, "{} holds {rows} rows", file.display());
        assert!(file.file_name().unwrap().to_string_lossy().contains("-metrics-p"));
    }
}

#[test]
fn sigterm_drains_and_commits_so_a_restart_reads_nothing_twice() {
    let broker = Broker::start();
    broker.create_topic("drain", PARTITIONS as u32);
    let work = tempfile::tempdir().unwrap();
    let function = kafka_function(work.path(), &broker, "drain", 100);
    let data = work.path().join("data");
    let events = data.join("kafka-sink/events");
    broker.produce("drain", PARTITIONS, &bodies(0..2000));
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve-1.log"));
    assert!(eventually(Duration::from_secs(60), || rows_in(&events) > 0), "nothing landed:\n{}", serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)), "serve did not exit 0 on SIGTERM");
    let after_first = ids_in(&events);
    assert!(after_first.values().all(|&n| n == 1));

    broker.produce("drain", PARTITIONS, &bodies(2000..3000));
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve-2.log"));
    let done = eventually(Duration::from_secs(60), || rows_in(&events) >= 3000);
    assert!(done, "{} of 3000 rows; log:\n{}", rows_in(&events), serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)));
    let seen = ids_in(&events);
    assert_eq!(seen.len(), 3000);
    assert!(seen.values().all(|&n| n == 1), "a drained batch was read again after the restart");
}

#[test]
fn kill_9_mid_stream_loses_nothing_and_writes_no_row_twice() {
    let broker = Broker::start();
    broker.create_topic("crash", PARTITIONS as u32);
    // Enough per crash that the kill lands while the consumer still works through a backlog
    // (once caught up, it rolls every lane at once and no staging file would be left open).
    const PER_CRASH: i64 = 20_000;
    const MAX_EVENTS: usize = 200;
    let work = tempfile::tempdir().unwrap();
    let function = kafka_function(work.path(), &broker, "crash", MAX_EVENTS as u32);
    let data = work.path().join("data");
    let events = data.join("kafka-sink/events");
    let crashes = 3;
    const N: i64 = PER_CRASH * 3;
    let mut left_staging = 0;
    for crash in 0..crashes {
        let fresh = crash as i64 * PER_CRASH;
        broker.produce("crash", PARTITIONS, &bodies(fresh..fresh + PER_CRASH));
        let before = rows_in(&events);
        let serve = Serve::start(&[&function], &data, free_port(), work.path().join(format!("serve-{crash}.log")));
        let progressed = eventually(Duration::from_secs(60), || rows_in(&events) > before + 500);
        assert!(progressed, "no progress before crash {crash}; log:\n{}", serve.log_text());
        serve.kill();
        // Every visible file is complete Parquet (read_parquet panics on a partial one).
        rows_in(&events);
        left_staging += temp_files(&events).len();
    }
    assert!(left_staging > 0, "no kill left an open staging file; the cleanup below was not exercised");
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve-final.log"));
    let drained = eventually(Duration::from_secs(120), || ids_in(&events).len() == N as usize);
    assert!(drained, "{} of {N} ids after the crashes; log:\n{}", ids_in(&events).len(), serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)));
    assert!(temp_files(&events).is_empty(), "staging files of the killed processes were not removed on start");
    let seen = ids_in(&events);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // Partitions that a restart started at their roll record, ahead of their commit: the
    // crash came between a roll and its commit reaching the broker.
    let resumed_from_records: usize = std::fs::read_dir(work.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|log| std::fs::read_to_string(log).unwrap().matches("partition resumes from its roll record").count())
        .sum();
    eprintln!("{duplicates} duplicates after {crashes} crashes; {resumed_from_records} partitions resumed from a roll record ahead of their commit");
    // A kill can lose the commit of the last roll of each partition (one roll: roll-rows plus
    // the batch that crossed it), but not its roll record, written before the roll's files
    // became visible; the restart resumes every partition after it, so with the same data
    // directory nothing visible in Parquet is read again. What is read again (the batches
    // after the last roll) was never visible. Zero is the design's bound for a killed process
    // (a power loss can also lose a staged file's directory entry: the record is then
    // unusable and the partition resumes from its commit, re-reading what rolled since).
    assert_eq!(duplicates, 0, "{duplicates} duplicate rows after {crashes} crashes (at most one batch per partition per crash would be {})", crashes * PARTITIONS as usize * MAX_EVENTS);
}

#[test]
fn a_kill_between_rolls_and_their_commits_reads_nothing_durable_again() {
    let broker = Broker::start();
    broker.create_topic("uncommitted", PARTITIONS as u32);
    // Enough that the consumer is still working through its first fetches when the first
    // files appear.
    const N: i64 = 100_000;
    const MAX_EVENTS: usize = 200;
    broker.produce("uncommitted", PARTITIONS, &bodies(0..N));
    let work = tempfile::tempdir().unwrap();
    let function = kafka_function(work.path(), &broker, "uncommitted", MAX_EVENTS as u32);
    let data = work.path().join("data");
    let events = data.join("kafka-sink/events");
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve-1.log"));
    let landed = eventually(Duration::from_secs(60), || !sluice_e2e::parquet_files(&events).is_empty());
    assert!(landed, "nothing landed:\n{}", serve.log_text());
    // With the broker frozen, the consumer works through the messages it already fetched:
    // its lanes roll, but no commit reaches the broker. Then it dies.
    broker.pause();
    let at_pause = rows_in(&events);
    let rolled_uncommitted = eventually(Duration::from_secs(20), || rows_in(&events) >= at_pause + 2 * ROLL_ROWS);
    let rows_before_kill = rows_in(&events);
    serve.kill();
    broker.resume();
    assert!(rolled_uncommitted, "only {} rows rolled while the broker was frozen", rows_before_kill - at_pause);

    // The restart cuts its batches differently (a redeploy changed max-events): re-reading
    // from the commit would write the rolled rows again under other names, not find them as
    // identical files.
    let function = kafka_function(work.path(), &broker, "uncommitted", MAX_EVENTS as u32 - 50);
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve-2.log"));
    let drained = eventually(Duration::from_secs(120), || ids_in(&events).len() == N as usize);
    assert!(drained, "{} of {N} ids after the kill; log:\n{}", ids_in(&events).len(), serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)));
    let log = std::fs::read_to_string(work.path().join("serve-2.log")).unwrap();
    let resumed = log.matches("partition resumes from its roll record").count();
    assert!(resumed > 0, "no partition resumed from its roll record; log:\n{log}");
    let seen = ids_in(&events);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("{at_pause} rows before the pause, {} rolled without a commit before the kill; {resumed} partitions resumed from their roll record; {duplicates} duplicates", rows_before_kill - at_pause);
    // Resuming from the committed offsets would have written every row rolled while the
    // broker was frozen a second time.
    assert_eq!(duplicates, 0, "rows rolled before the kill were read again");
}

/// Rows of one Parquet file, from its footer.
fn rows_of(file: &Path) -> usize {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    reader.metadata().file_metadata().num_rows() as usize
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing_and_the_host_reconnects_by_itself() {
    let storage = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_persistent(storage.path());
    broker.create_topic("restart", PARTITIONS as u32);
    let work = tempfile::tempdir().unwrap();
    let function = kafka_function(work.path(), &broker, "restart", 200);
    let data = work.path().join("data");
    let events = data.join("kafka-sink/events");
    const FIRST: i64 = 3_000;
    broker.produce("restart", PARTITIONS, &bodies(0..FIRST));
    let mut serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve.log"));
    let progressed = eventually(Duration::from_secs(60), || rows_in(&events) > 0);
    assert!(progressed, "nothing landed before the restart; log:\n{}", serve.log_text());

    broker.restart(Duration::from_secs(2));
    const N: i64 = 2 * FIRST;
    broker.produce("restart", PARTITIONS, &bodies(FIRST..N));
    let drained = eventually(Duration::from_secs(120), || ids_in(&events).len() == N as usize);
    assert!(drained, "{} of {N} ids after the broker restart; log:\n{}", ids_in(&events).len(), serve.log_text());
    assert!(serve.child_is_running(), "serve exited instead of reconnecting; log:\n{}", serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)), "serve did not exit 0 after the broker restart");
    let seen = ids_in(&events);
    assert_eq!(seen.len(), N as usize);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("{duplicates} duplicates after one broker restart");
    // The host did not crash: it keeps its fetch positions, commits what it stored once the
    // broker is back, and a rebalance the restart causes resumes every partition after its
    // roll record, so by design no row lands twice. The records are consulted only at an
    // assignment, though, so a fetch position librdkafka moved back by itself would re-read
    // what was rolled after the last commit; this bound (one roll per partition: roll-rows
    // plus the batch that crossed it) is what was measured before the records, not derived.
    let bound = PARTITIONS as usize * (ROLL_ROWS + 200);
    assert!(duplicates <= bound, "{duplicates} duplicates after one broker restart (bound {bound})");
}

/// The partitions of `topic` that the last assignment in a serve log gave that process.
fn last_assignment(log: &str, topic: &str) -> std::collections::BTreeSet<i32> {
    let Some(line) = log.lines().filter(|line| line.contains("partitions assigned")).last() else { return Default::default() };
    line.match_indices(&format!("{topic}/"))
        .filter_map(|(at, prefix)| {
            let digits: String = line[at + prefix.len()..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn two_serve_processes_in_one_group_split_the_partitions_and_the_survivor_takes_over() {
    let broker = Broker::start();
    broker.create_topic("scale", PARTITIONS as u32);
    const MAX_EVENTS: usize = 100;
    let work = tempfile::tempdir().unwrap();
    let function = kafka_function(work.path(), &broker, "scale", MAX_EVENTS as u32);
    // Two pods sharing one volume: both processes write to one data directory, so the
    // survivor sees the killed process's roll records. Their files never collide: a file is
    // named by its partition and offset range, a partition has one owner at a time, staging
    // names carry the process id, and a final name that exists is never overwritten.
    let data = work.path().join("data");
    let events = data.join("kafka-sink/events");
    let serve_a = Serve::start(&[&function], &data, free_port(), work.path().join("serve-a.log"));
    let serve_b = Serve::start(&[&function], &data, free_port(), work.path().join("serve-b.log"));
    let both_assigned = eventually(Duration::from_secs(60), || {
        serve_a.log_text().contains("partitions assigned") && serve_b.log_text().contains("partitions assigned")
    });
    assert!(both_assigned, "a process got no partitions; logs:\n{}\n{}", serve_a.log_text(), serve_b.log_text());

    const FIRST: i64 = 4_000;
    broker.produce("scale", PARTITIONS, &bodies(0..FIRST));
    let split = eventually(Duration::from_secs(90), || rows_in(&events) >= FIRST as usize);
    assert!(split, "{} of {FIRST} rows", rows_in(&events));
    let (owned_by_a, owned_by_b) = (last_assignment(&serve_a.log_text(), "scale"), last_assignment(&serve_b.log_text(), "scale"));
    assert!(!owned_by_a.is_empty() && !owned_by_b.is_empty(), "one process reads every partition: {owned_by_a:?} / {owned_by_b:?}");
    assert!(owned_by_a.is_disjoint(&owned_by_b), "a partition is assigned to both: {owned_by_a:?} / {owned_by_b:?}");
    let seen = ids_in(&events);
    assert_eq!(seen.len(), FIRST as usize);
    assert!(seen.values().all(|&n| n == 1), "duplicates while both processes ran");

    // A dies mid-stream: some of its rolls may not have reached the broker's commit yet.
    const N: i64 = FIRST * 6;
    broker.produce("scale", PARTITIONS, &bodies(FIRST..N));
    let midway = eventually(Duration::from_secs(90), || rows_in(&events) > FIRST as usize + 1_000);
    assert!(midway, "no progress on the second half; logs:\n{}\n{}", serve_a.log_text(), serve_b.log_text());
    serve_a.kill();
    let b_log_before_kill = serve_b.log_text().len();
    // A may have read its share to the end before it died: the takeover (after the session
    // timeout) is then waited for as well as the rows.
    let all_partitions: std::collections::BTreeSet<i32> = (0..PARTITIONS).collect();
    let taken_over = eventually(Duration::from_secs(90), || {
        ids_in(&events).len() == N as usize && last_assignment(&serve_b.log_text()[b_log_before_kill..], "scale") == all_partitions
    });
    assert!(taken_over, "the survivor did not read the killed process's partitions; log:\n{}", serve_b.log_text());
    assert!(serve_b.terminate(Duration::from_secs(30)));
    let b_log = std::fs::read_to_string(work.path().join("serve-b.log")).unwrap();
    assert_eq!(last_assignment(&b_log[b_log_before_kill..], "scale"), all_partitions, "the survivor did not take over every partition");
    let seen = ids_in(&events);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let resumed = b_log[b_log_before_kill..].matches("partition resumes from its roll record").count();
    eprintln!("{duplicates} duplicates after one kill; the survivor resumed {resumed} partitions from a roll record ahead of their commit");
    // The survivor starts each of the killed process's partitions at the later of its commit
    // and its roll record, after which nothing is visible: no row lands twice (with separate
    // data directories it would re-read what the killed process rolled after its last commit).
    assert_eq!(duplicates, 0, "{duplicates} duplicate rows after one kill");
}

#[test]
fn failed_batches_go_to_the_dead_letter_topic_with_their_error_and_origin() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let broker = Broker::start();
    broker.create_topic("orders", PARTITIONS as u32);
    broker.create_topic("orders-failed", 1);
    let work = tempfile::tempdir().unwrap();
    let body = format!(
        r#"
[config]
sink = "events"

[[triggers]]
kind = "kafka"
brokers = "{}"
topics = ["orders"]
group = "sluice-orders"

[batching]
max-events = 100
max-wait-ms = 200

[sinks.events]
path = "events"

[retry]
attempts = 2
backoff-ms = 10
dead-letter-topic = "orders-failed"
"#,
        broker.address()
    );
    let function = function_dir(work.path(), "dlq", "misbehave", &body);
    // Round-robin over 4 partitions: every event of partition 3 asks the handler to fail.
    const N: i64 = 400;
    let events: Vec<String> = (0..N)
        .map(|id| format!("{{\"id\":{id},\"value\":{:.1},\"action\":\"{}\"}}", id as f64 * 0.5, if id % 4 == 3 { "error" } else { "ok" }))
        .collect();
    broker.produce("orders", PARTITIONS, &events);
    let data = work.path().join("data");
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve.log"));

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "dead-letter-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("orders-failed", 0, Offset::Beginning).unwrap();
    reader.assign(&assignment).unwrap();
    let mut dead: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while dead.len() < (N / 4) as usize && std::time::Instant::now() < deadline {
        let Some(message) = reader.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("reading the dead-letter topic");
        let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let headers = message.headers().expect("dead-lettered events carry headers");
        let headers = headers
            .iter()
            .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect();
        dead.insert(value["id"].as_i64().unwrap(), headers);
    }
    let expected: Vec<i64> = (0..N).filter(|id| id % 4 == 3).collect();
    assert_eq!(dead.keys().copied().collect::<Vec<_>>(), expected, "log:\n{}", serve.log_text());
    for headers in dead.values() {
        assert_eq!(headers["sluice-topic"], "orders");
        assert_eq!(headers["sluice-partition"], "3");
        assert!(headers["sluice-offset"].parse::<i64>().is_ok(), "{headers:?}");
        assert!(headers["sluice-error"].contains("asked to fail"), "{headers:?}");
    }
    // Nothing accepted was lost: the other partitions' events are in Parquet, the failed ones
    // in the dead-letter file too.
    let stored = data.join("dlq/events");
    let landed = eventually(Duration::from_secs(60), || rows_in(&stored) >= (N - N / 4) as usize);
    assert!(landed, "{} rows; log:\n{}", rows_in(&stored), serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)));
    assert_eq!(rows_in(&stored), (N - N / 4) as usize);
    let dead_letter_files = std::fs::read_dir(data.join("dlq/_dead_letter")).unwrap().count();
    assert!(dead_letter_files > 0, "no dead-letter file next to the topic");
}

/// Undoes the sink's percent-escaping of a hive partition value.
fn unescape_partition_value(escaped: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = escaped.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            bytes.push(u8::from_str_radix(std::str::from_utf8(&tail[..2]).unwrap(), 16).unwrap());
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn partition_by_writes_hive_directories_that_no_value_can_climb_out_of() {
    let broker = Broker::start();
    broker.create_topic("visits", PARTITIONS as u32);
    let work = tempfile::tempdir().unwrap();
    let body = format!(
        r#"
[config]
sink = "events"

[[triggers]]
kind = "kafka"
brokers = "{}"
topics = ["visits"]
group = "sluice-visits"

[batching]
max-events = 200
max-wait-ms = 200

[sinks.events]
path = "events"
partition-by = ["day"]
"#,
        broker.address()
    );
    let function = function_dir(work.path(), "hive", "echo", &body);
    let days = ["mon", "../../escape", "a/b", "100% = x", "tue"];
    const N: i64 = 1000;
    let events: Vec<String> = (0..N)
        .map(|id| format!("{{\"id\":{id},\"value\":{:.1},\"day\":{}}}", id as f64 * 0.5, serde_json::json!(days[id as usize % days.len()])))
        .collect();
    broker.produce("visits", PARTITIONS, &events);
    let data = work.path().join("data");
    let serve = Serve::start(&[&function], &data, free_port(), work.path().join("serve.log"));
    let sink = data.join("hive/events");
    let landed = eventually(Duration::from_secs(90), || rows_in(&sink) >= N as usize);
    assert!(landed, "{} of {N} rows; log:\n{}", rows_in(&sink), serve.log_text());
    assert!(serve.terminate(Duration::from_secs(30)));

    let mut day_of_id = BTreeMap::new();
    for file in sluice_e2e::parquet_files(&sink) {
        let relative = file.strip_prefix(&sink).unwrap();
        let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        assert_eq!(parts.len(), 2, "one partition level under the sink: {}", relative.display());
        let day = unescape_partition_value(parts[0].strip_prefix("day=").expect("a day=<value> directory"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
        for batch in reader.map(Result::unwrap) {
            assert!(batch.column_by_name("day").is_none(), "the partition column lives in the path");
            let ids = batch.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
            for row in 0..batch.num_rows() {
                assert_eq!(day_of_id.insert(ids.value(row), day.clone()), None, "id {} twice", ids.value(row));
            }
        }
    }
    assert_eq!(day_of_id.len(), N as usize);
    for (id, day) in &day_of_id {
        assert_eq!(day, days[*id as usize % days.len()], "id {id}");
    }
    let outside: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!data.join("escape").exists() && !work.path().join("escape").exists(), "a value climbed out: {outside:?}");
}

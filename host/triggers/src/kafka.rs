//! The Kafka trigger: one member of a consumer group.
//!
//! A polling thread gathers messages into rounds by `[batching]`, while the previous round is
//! being settled; each round is split by partition into batches (keyed
//! `<topic>-p<partition>-o<first>-<last>`) that run concurrently on the function's instances.
//! A batch's rows are appended to its partition's [`Lane`]: sink files that stay open across
//! batches and roll (fsync, rename, fsync of the directory) at the sinks' `roll-rows`,
//! `roll-bytes` or `roll-ms`, or as soon as the consumer is caught up with the topic (nothing
//! came for `max-wait-ms`, or a full round took every partition read to its high watermark).
//! A partition's offset is stored and committed only once every batch before it is durable:
//! rolled, dead-lettered, or without rows. On a partition
//! revocation the polling thread waits until every round it handed out is settled and every
//! lane rolled, so librdkafka commits them before the partitions move; shutdown rolls too.
//!
//! The roll, not the commit, is the commit point: each roll first writes its lane's roll
//! record (the offset after its last batch; see [`Lane::recover`]) under the function's data
//! root. When partitions are assigned, each resumes at the later of its committed offset and
//! its recorded one, after the links a crash interrupted are finished. So a `kill -9` between
//! a roll and its commit reaching the broker reads nothing twice that is durable in Parquet:
//! with the same data directory (or one shared by the members of the group) a crash writes
//! no duplicate row. What is read again are batches after the last roll (never visible) and
//! batches that wrote no rows. A record that cannot be used (unreadable, corrupt, naming a
//! file that is gone) is logged and the partition resumes from its committed offset: what was
//! rolled after the last commit that reached the broker (one roll per partition while the
//! broker answers) is then read twice, in files of other names or, when the batches are cut
//! the same way, as identical files found durable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message as _, Offset, TopicPartitionList};
use sluice_frame::FrameError;
use sluice_frame::ingest::BadLinePolicy;
use sluice_manifest::{BadLines, InitialOffset, KafkaTrigger};
use sluice_runtime::{Batch, EventMeta, Function, FunctionSlot, Lane, PartitionMessages, WriteMode};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::batcher::{Accumulator, BatchLimits};
use crate::delivery::{Delivered, DeliveryError, RetryPolicy, deliver};
use crate::Shutdown;

/// The longest the polling thread goes without looking at the shutdown signal.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// How often lanes are checked for a roll that is due by time or asked for by a rebalance.
const LANE_CHECK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka trigger of `{function}` (brokers {brokers}): cannot create the consumer: {source}")]
    Create { function: String, brokers: String, source: rdkafka::error::KafkaError },
    #[error("kafka trigger of `{function}`: cannot subscribe to {topics:?}: {source}")]
    Subscribe { function: String, topics: Vec<String>, source: rdkafka::error::KafkaError },
    #[error("kafka trigger of `{function}` stopped without acknowledging a batch: {source}")]
    Undeliverable { function: String, source: DeliveryError },
    #[error("kafka trigger of `{function}`: the polling thread panicked")]
    PollThread { function: String },
    #[error("kafka trigger of `{function}`: cannot make the files of partition {topic}/{partition} durable: {source}")]
    Roll { function: String, topic: String, partition: i32, source: FrameError },
    #[error("kafka trigger of `{function}`: cannot produce failed events to the dead-letter topic `{topic}`: {source}")]
    DeadLetterTopic { function: String, topic: String, source: rdkafka::error::KafkaError },
}

/// How long producing one failed event to the dead-letter topic may take, retries included.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);

/// `[retry] dead-letter-topic`: the events of a dead-lettered batch are produced there (on the
/// trigger's brokers, with its properties), besides the dead-letter file. Each keeps its key
/// and body; headers carry the error and where it came from. The partition's offset moves past
/// the batch only once the broker acknowledged every one of them (`acks=all`).
struct DeadLetterTopic {
    function: String,
    topic: String,
    producer: FutureProducer,
}

/// Header names of a dead-lettered event.
pub const DEAD_LETTER_HEADERS: [&str; 4] = ["sluice-error", "sluice-topic", "sluice-partition", "sluice-offset"];

impl DeadLetterTopic {
    fn new(function: &str, spec: &KafkaTrigger, topic: &str) -> Result<DeadLetterTopic, KafkaError> {
        let mut config = ClientConfig::new();
        for (key, value) in &spec.properties {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &spec.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", DEAD_LETTER_TIMEOUT.as_millis().to_string());
        let producer = config.create().map_err(|source| KafkaError::Create {
            function: function.to_string(),
            brokers: spec.brokers.clone(),
            source,
        })?;
        Ok(DeadLetterTopic { function: function.to_string(), topic: topic.to_string(), producer })
    }

    async fn send(&self, batch: &Batch, error: &str) -> Result<(), KafkaError> {
        for index in 0..batch.len() {
            let Some(EventMeta::Kafka { topic, partition, offset, key }) = batch.meta(index) else { continue };
            let (partition, offset) = (partition.to_string(), offset.to_string());
            let headers = [error, topic.as_str(), partition.as_str(), offset.as_str()]
                .into_iter()
                .zip(DEAD_LETTER_HEADERS)
                .fold(OwnedHeaders::new(), |headers, (value, key)| headers.insert(Header { key, value: Some(value) }));
            let mut record = FutureRecord::to(&self.topic).payload(batch.body(index).unwrap_or_default()).headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_slice());
            }
            self.producer.send(record, Timeout::After(DEAD_LETTER_TIMEOUT)).await.map_err(|(source, _)| KafkaError::DeadLetterTopic {
                function: self.function.clone(),
                topic: self.topic.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// What a Kafka trigger did, for the log and for tests.
#[derive(Debug, Default)]
pub struct KafkaStats {
    pub messages: AtomicU64,
    pub batches: AtomicU64,
    pub dead_lettered_batches: AtomicU64,
    pub retried_batches: AtomicU64,
}

/// One Kafka trigger of one function, ready to run.
pub struct KafkaSource {
    pub spec: KafkaTrigger,
    pub limits: BatchLimits,
    pub retry: RetryPolicy,
    /// `[retry] dead-letter-topic`, if set.
    pub dead_letter_topic: Option<String>,
    pub stats: Arc<KafkaStats>,
}

/// The messages of a round, packed per partition (in the order the partitions first came):
/// the polling thread copies each payload once, into its partition's buffer, and allocates
/// nothing per message.
#[derive(Default)]
struct Packed {
    partitions: Vec<PartitionMessages>,
}

impl Packed {
    fn add(&mut self, message: &BorrowedMessage<'_>) {
        let (topic, partition) = (message.topic(), message.partition());
        let slot = match self.partitions.iter().position(|p| p.partition() == partition && &**p.topic() == topic) {
            Some(slot) => slot,
            None => {
                self.partitions.push(PartitionMessages::new(Arc::from(topic), partition));
                self.partitions.len() - 1
            }
        };
        self.partitions[slot].push(message.offset(), message.key(), message.payload().unwrap_or_default());
    }
}

/// What the polling thread hands over: the messages of a round, and whether it was cut
/// because it was full (a backlog) rather than by `max-wait-ms` (caught up). An empty round
/// says that nothing came for `max-wait-ms` after a full one.
struct Round {
    messages: Packed,
    full: bool,
}

/// Rounds handed to the processing side and not yet settled, and whether a rebalance waits
/// for every lane to roll.
#[derive(Default)]
struct InFlight {
    state: Mutex<Pending>,
    settled: Condvar,
}

#[derive(Default)]
struct Pending {
    rounds: usize,
    roll_requested: bool,
    /// The processing side stopped: nothing will settle any more.
    closed: bool,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().expect("in-flight lock")
    }

    fn begin(&self) {
        self.lock().rounds += 1;
    }

    fn end(&self) {
        self.lock().rounds -= 1;
        self.settled.notify_all();
    }

    /// Asks the processing side to roll every lane and waits until it did, after every round.
    fn settle_and_roll(&self) {
        let mut pending = self.lock();
        pending.roll_requested = true;
        drop(self.settled.wait_while(pending, |p| !p.closed && (p.rounds > 0 || p.roll_requested)).expect("in-flight lock"));
    }

    fn roll_requested(&self) -> bool {
        self.lock().roll_requested
    }

    fn rolled(&self) {
        self.lock().roll_requested = false;
        self.settled.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.settled.notify_all();
    }
}

/// Holds revocations until in-flight rounds are settled and their offsets stored, and starts
/// assigned partitions where their lanes' roll records say.
struct GroupContext {
    function: String,
    /// The function's tenant (empty outside the control plane), a label of the lag metric.
    tenant: String,
    in_flight: Arc<InFlight>,
    /// Whose sinks hold the roll records (the version current at the rebalance).
    slot: Arc<FunctionSlot>,
    /// Where a partition with neither a commit nor a roll record starts (`initial-offset`);
    /// `None` when the properties set `auto.offset.reset`, which librdkafka then applies.
    initial: Option<Offset>,
}

/// How long an assignment waits for the group's committed offsets before it resumes from the
/// roll records alone.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

impl ClientContext for GroupContext {
    /// librdkafka's periodic statistics: the consumer lag of every assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    metrics::gauge!(
                        "sluice_kafka_consumer_lag",
                        "tenant" => self.tenant.clone(),
                        "function" => self.function.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(stats.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    /// rdkafka's own strategy (assign, or unassign on a revocation or an error) with two
    /// additions: a revocation first waits for every in-flight round to settle and every lane
    /// to roll, and an assignment starts each partition past what its roll record made durable.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, error: RDKafkaRespErr, partitions: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(function = %self.function, partitions = %partition_names(partitions), "partitions assigned");
                let resumed = self.set_starts(consumer, partitions);
                let assigned = if cooperative { consumer.incremental_assign(partitions) } else { consumer.assign(partitions) };
                if assigned.is_ok() && resumed.count() > 0 {
                    // The group's commit catches up with what is durable (and the lag shows it).
                    store_and_commit(consumer, &resumed, CommitMode::Async);
                }
                assigned
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(function = %self.function, partitions = partitions.count(), "partitions revoked: settling in-flight batches and rolling their files");
                self.in_flight.settle_and_roll();
                if cooperative { consumer.incremental_unassign(partitions) } else { consumer.unassign() }
            }
            other => {
                tracing::warn!(function = %self.function, error = %RDKafkaErrorCode::from(other), "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::warn!(function = %self.function, %error, "applying a rebalance failed");
        }
    }
}

impl GroupContext {
    /// Sets where each assigned partition starts: the later of its committed offset and its
    /// roll record (whose links are finished first), else `initial-offset`. Returns the
    /// partitions that resume from a record ahead of their commit, with that start. Looking
    /// the committed offsets up here, in one request, also spares librdkafka its own lookup
    /// after the assignment, which held the first fetch back by about 0.1 s.
    fn set_starts(&self, consumer: &GroupConsumer, partitions: &mut TopicPartitionList) -> TopicPartitionList {
        let function = self.slot.current();
        let committed = match consumer.committed_offsets(partitions.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => Some(committed),
            Err(error) => {
                tracing::warn!(function = %self.function, %error, "committed offsets unknown: librdkafka looks them up; partitions with a roll record resume from it");
                None
            }
        };
        let mut resumed = TopicPartitionList::new();
        let assigned: Vec<(String, i32)> = partitions.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        for (topic, partition) in assigned {
            let recorded = match Lane::recover(function.sinks(), function.name(), &lane_name(&topic, partition)) {
                Ok(recorded) => recorded,
                Err(error) => {
                    tracing::warn!(function = %self.function, %topic, partition, %error, "roll record unusable: the partition resumes from its committed offset");
                    None
                }
            };
            let commit = committed.as_ref().and_then(|c| c.find_partition(&topic, partition)).and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
            let start = match (commit, recorded) {
                (Some(commit), Some(next)) if commit >= next => {
                    tracing::info!(function = %self.function, %topic, partition, offset = commit, recorded = next, "partition resumes from its committed offset");
                    Offset::Offset(commit)
                }
                (commit, Some(next)) => {
                    tracing::info!(function = %self.function, %topic, partition, offset = next, ?commit, "partition resumes from its roll record: the rows before it are durable in Parquet");
                    add_offset(&mut resumed, &topic, partition, next);
                    Offset::Offset(next)
                }
                (Some(commit), None) => Offset::Offset(commit),
                // Without the committed offsets, librdkafka looks them up itself.
                (None, None) if committed.is_none() => continue,
                (None, None) => match self.initial {
                    Some(initial) => initial,
                    None => continue,
                },
            };
            if let Err(error) = partitions.set_partition_offset(&topic, partition, start) {
                tracing::warn!(function = %self.function, %topic, partition, %error, "cannot set where the partition starts; librdkafka decides");
            }
        }
        resumed
    }
}

/// `topic/partition,…` of every partition in `partitions`, for the log.
fn partition_names(partitions: &TopicPartitionList) -> String {
    partitions.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>().join(",")
}

type GroupConsumer = BaseConsumer<GroupContext>;

impl KafkaSource {
    pub fn new(spec: KafkaTrigger, limits: BatchLimits, retry: RetryPolicy) -> Self {
        KafkaSource { spec, limits, retry, dead_letter_topic: None, stats: Arc::default() }
    }

    /// Also produces the events of dead-lettered batches to `topic` (`[retry] dead-letter-topic`).
    pub fn with_dead_letter_topic(self, topic: Option<String>) -> Self {
        KafkaSource { dead_letter_topic: topic, ..self }
    }

    /// Consumes until `shutdown`, then settles and commits what it holds and leaves the group.
    /// Each round runs on the slot's version at the time it is settled, so a hot swap keeps
    /// the consumer and its partitions.
    pub async fn run(self, function: Arc<FunctionSlot>, shutdown: Shutdown) -> Result<(), KafkaError> {
        let name = function.name().to_string();
        let dead_letters = match &self.dead_letter_topic {
            Some(topic) => Some(Arc::new(DeadLetterTopic::new(&name, &self.spec, topic)?)),
            None => None,
        };
        let in_flight = Arc::new(InFlight::default());
        let consumer = Arc::new(self.consumer(&function, in_flight.clone())?);
        let topics: Vec<&str> = self.spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|source| KafkaError::Subscribe {
            function: name.clone(),
            topics: self.spec.topics.clone(),
            source,
        })?;
        tracing::info!(function = %name, topics = ?self.spec.topics, group = %self.spec.group, "kafka trigger started");

        let (rounds_tx, mut rounds_rx) = mpsc::channel::<Round>(1);
        let poller = {
            let (consumer, in_flight, limits, shutdown) = (consumer.clone(), in_flight.clone(), self.limits, shutdown.clone());
            std::thread::Builder::new()
                .name(format!("kafka-{name}"))
                .spawn(move || poll_rounds(&consumer, limits, &shutdown, &rounds_tx, &in_flight))
                .expect("spawning the kafka polling thread")
        };
        let policy = match self.spec.bad_lines {
            BadLines::Fail => BadLinePolicy::Fail,
            BadLines::Skip => BadLinePolicy::Skip,
        };
        let mut lanes = Lanes::default();
        let mut check = tokio::time::interval(LANE_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failure = None;
        loop {
            let mut caught_up = false;
            tokio::select! {
                round = rounds_rx.recv() => {
                    let Some(Round { messages, full }) = round else { break };
                    caught_up = !full;
                    let settled = self.settle_round(&function.current(), &mut lanes, messages, policy, dead_letters.as_ref()).await;
                    let stored = settled.map(|offsets| store_and_commit(&consumer, &offsets, CommitMode::Async));
                    in_flight.end();
                    if let Err(error) = stored {
                        failure = Some(error);
                        break;
                    }
                }
                _ = check.tick() => {}
            }
            // Caught up with the head of the topic (the round was cut by max-wait-ms, not
            // filled): nothing is gained by keeping files open, so the lanes roll now and the
            // offsets commit without waiting for roll-ms.
            let roll_all = in_flight.roll_requested() || caught_up;
            match lanes.roll(roll_all).await {
                Ok(offsets) => store_and_commit(&consumer, &offsets, CommitMode::Async),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
            if roll_all {
                in_flight.rolled();
            }
        }
        match lanes.roll(true).await {
            Ok(offsets) => store_and_commit(&consumer, &offsets, CommitMode::Async),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
        in_flight.close();
        while rounds_rx.try_recv().is_ok() {
            in_flight.end();
        }
        drop(rounds_rx);
        let polled_to_the_end = tokio::task::spawn_blocking(move || poller.join()).await;
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(function = %name, %error, "final offset commit");
        }
        consumer.unsubscribe();
        tracing::info!(function = %name, messages = self.stats.messages.load(Ordering::Relaxed), "kafka trigger stopped");
        if let Some(failure) = failure {
            return Err(failure);
        }
        match polled_to_the_end {
            Ok(Ok(())) => Ok(()),
            _ => Err(KafkaError::PollThread { function: name }),
        }
    }

    fn consumer(&self, slot: &Arc<FunctionSlot>, in_flight: Arc<InFlight>) -> Result<GroupConsumer, KafkaError> {
        let function = slot.name();
        let tenant = slot.current().deployment().tenant.clone();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.spec.brokers)
            .set("group.id", &self.spec.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            // librdkafka stops fetching a partition whose local queue holds queued.min.messages
            // and by default waits a whole second before fetching again; a consumer that works
            // through a backlog faster than that would sit idle, so it looks again soon.
            .set("fetch.queue.backoff.ms", "10")
            // Statistics carry the consumer lag per partition (`sluice_kafka_consumer_lag`).
            .set("statistics.interval.ms", "5000")
            .set(
                "auto.offset.reset",
                match self.spec.initial_offset {
                    InitialOffset::Earliest => "earliest",
                    InitialOffset::Latest => "latest",
                },
            );
        for (key, value) in &self.spec.properties {
            config.set(key, value);
        }
        let initial = match self.spec.initial_offset {
            _ if self.spec.properties.contains_key("auto.offset.reset") => None,
            InitialOffset::Earliest => Some(Offset::Beginning),
            InitialOffset::Latest => Some(Offset::End),
        };
        config
            .create_with_context(GroupContext { function: function.to_string(), tenant, in_flight, slot: slot.clone(), initial })
            .map_err(|source| KafkaError::Create {
                function: function.to_string(),
                brokers: self.spec.brokers.clone(),
                source,
            })
    }

    /// Runs one batch per partition of `round`, concurrently, each appending its rows to its
    /// partition's lane; returns the offsets that became safe to store (the next offset to
    /// read, per partition whose batches are all durable).
    async fn settle_round(
        &self,
        function: &Arc<Function>,
        lanes: &mut Lanes,
        round: Packed,
        policy: BadLinePolicy,
        dead_letters: Option<&Arc<DeadLetterTopic>>,
    ) -> Result<TopicPartitionList, KafkaError> {
        let offsets = lanes.switch_to(function).await?;
        let mut batches = JoinSet::new();
        for messages in round.partitions {
            let Some((first, last)) = messages.offsets() else { continue };
            let (topic, partition) = (messages.topic().to_string(), messages.partition());
            let key = format!("{topic}-p{partition}-o{first}-{last}");
            self.stats.messages.fetch_add(messages.len() as u64, Ordering::Relaxed);
            let batch = Arc::new(Batch::from_partition(messages, policy));
            let lane = lanes.take(function.name(), &topic, partition);
            let (function, retry, stats, dead_letters) = (function.clone(), self.retry, self.stats.clone(), dead_letters.cloned());
            batches.spawn(async move {
                let delivered = match deliver(&function, batch.clone(), &key, &retry, WriteMode::BufferForLane).await {
                    Ok(delivered) => delivered,
                    Err(source) => {
                        let error = KafkaError::Undeliverable { function: function.name().to_string(), source };
                        return (topic, partition, lane, Err(error));
                    }
                };
                stats.batches.fetch_add(1, Ordering::Relaxed);
                let rows = match delivered {
                    Delivered::Committed { invocation, attempts } => {
                        if attempts > 1 {
                            stats.retried_batches.fetch_add(1, Ordering::Relaxed);
                        }
                        invocation.buffered
                    }
                    Delivered::DeadLettered { error, .. } => {
                        stats.dead_lettered_batches.fetch_add(1, Ordering::Relaxed);
                        if let Some(dead_letters) = dead_letters
                            && let Err(error) = dead_letters.send(&batch, &error.to_string()).await
                        {
                            return (topic, partition, lane, Err(error));
                        }
                        Vec::new()
                    }
                };
                let (lane, appended) = tokio::task::spawn_blocking(move || {
                    let mut lane = lane;
                    let appended = lane.append(&function, rows, first, last);
                    (lane, appended)
                })
                .await
                .expect("a lane append panicked");
                (topic, partition, lane, appended)
            });
        }
        let mut durable = Durable { offsets, failure: None };
        while let Some(joined) = batches.join_next().await {
            let (topic, partition, lane, appended) = joined.expect("a batch task panicked");
            durable.add(&topic, partition, appended);
            lanes.put(topic, partition, lane);
        }
        durable.into_result()
    }
}

/// The offsets that became safe to store as partitions' batches were appended or their lanes
/// rolled, and the first failure among them.
struct Durable {
    offsets: TopicPartitionList,
    failure: Option<KafkaError>,
}

impl Durable {
    /// Takes one partition's outcome: the offset it made safe to store, if any, or its error.
    fn add(&mut self, topic: &str, partition: i32, outcome: Result<Option<i64>, KafkaError>) {
        match outcome {
            Ok(Some(next)) => add_offset(&mut self.offsets, topic, partition, next),
            Ok(None) => {}
            Err(error) => {
                self.failure.get_or_insert(error);
            }
        }
    }

    fn into_result(self) -> Result<TopicPartitionList, KafkaError> {
        self.failure.map_or(Ok(self.offsets), Err)
    }
}

fn add_offset(offsets: &mut TopicPartitionList, topic: &str, partition: i32, next: i64) {
    offsets
        .add_partition_offset(topic, partition, Offset::Offset(next))
        .expect("a fresh partition entry takes an offset");
}

/// A partition's open files and the offset that becomes safe to commit when they roll.
struct PartitionLane {
    lane: Lane,
    topic: String,
    partition: i32,
    /// The offset after the last batch appended; stored once the lane rolled.
    next_offset: Option<i64>,
}

impl PartitionLane {
    /// Appends a settled batch's rows; returns the offset to store now, if the partition
    /// holds nothing unrolled after it (rolling first when a bound is reached).
    fn append(&mut self, function: &Function, rows: Vec<sluice_runtime::BufferedWrite>, first: i64, last: i64) -> Result<Option<i64>, KafkaError> {
        self.lane.append(function.sinks(), rows, first, last).map_err(|source| self.roll_error(function, source))?;
        self.next_offset = Some(last + 1);
        if self.lane.holds_rows() && !self.lane.is_due(Instant::now()) {
            return Ok(None);
        }
        self.roll(function)
    }

    /// Rolls the lane; returns the offset that became safe to store.
    fn roll(&mut self, function: &Function) -> Result<Option<i64>, KafkaError> {
        let written = self.lane.roll(function.sinks()).map_err(|source| self.roll_error(function, source))?;
        if !written.is_empty() {
            tracing::debug!(function = function.name(), topic = %self.topic, partition = self.partition, files = written.len(), "lane rolled");
        }
        Ok(self.next_offset.take())
    }

    fn roll_error(&self, function: &Function, source: FrameError) -> KafkaError {
        KafkaError::Roll { function: function.name().to_string(), topic: self.topic.clone(), partition: self.partition, source }
    }
}

/// The lane of a partition: its files are named and its roll record is kept by this name.
fn lane_name(topic: &str, partition: i32) -> String {
    format!("{topic}-p{partition}")
}

/// The lanes of every partition this member has read, and the function version that writes them.
#[derive(Default)]
struct Lanes {
    function: Option<Arc<Function>>,
    by_partition: BTreeMap<(String, i32), PartitionLane>,
}

impl Lanes {
    fn take(&mut self, function: &str, topic: &str, partition: i32) -> PartitionLane {
        self.by_partition.remove(&(topic.to_string(), partition)).unwrap_or_else(|| PartitionLane {
            lane: Lane::new(function, &lane_name(topic, partition)),
            topic: topic.to_string(),
            partition,
            next_offset: None,
        })
    }

    fn put(&mut self, topic: String, partition: i32, lane: PartitionLane) {
        self.by_partition.insert((topic, partition), lane);
    }

    /// Makes `function` the version that writes the lanes; a new version (a hot swap) first
    /// rolls what the old one wrote. Returns the offsets that became safe to store.
    async fn switch_to(&mut self, function: &Arc<Function>) -> Result<TopicPartitionList, KafkaError> {
        let offsets = match &self.function {
            Some(current) if !Arc::ptr_eq(current, function) => self.roll(true).await?,
            _ => TopicPartitionList::new(),
        };
        self.function = Some(function.clone());
        Ok(offsets)
    }

    /// Rolls every lane that is due (or every lane holding rows, with `all`); returns the
    /// offsets that became safe to store.
    async fn roll(&mut self, all: bool) -> Result<TopicPartitionList, KafkaError> {
        let Some(function) = self.function.clone() else { return Ok(TopicPartitionList::new()) };
        let now = Instant::now();
        let due: Vec<(String, i32)> = self
            .by_partition
            .iter()
            .filter(|(_, p)| p.next_offset.is_some() && (all || p.lane.is_due(now)))
            .map(|(key, _)| key.clone())
            .collect();
        if due.is_empty() {
            return Ok(TopicPartitionList::new());
        }
        // Each lane rolls on its own blocking thread: a roll is mostly waiting for fsyncs, and
        // the lanes' waits overlap.
        let mut rolls = JoinSet::new();
        for mut lane in due.iter().filter_map(|key| self.by_partition.remove(key)) {
            let function = function.clone();
            rolls.spawn_blocking(move || {
                let rolled = lane.roll(&function);
                (lane, rolled)
            });
        }
        let mut durable = Durable { offsets: TopicPartitionList::new(), failure: None };
        while let Some(joined) = rolls.join_next().await {
            let (lane, rolled) = joined.expect("a lane roll panicked");
            durable.add(&lane.topic, lane.partition, rolled);
            self.by_partition.insert((lane.topic.clone(), lane.partition), lane);
        }
        durable.into_result()
    }
}

/// Stores the settled offsets and commits them. A partition that moved to another member in
/// the meantime refuses the store; the new owner re-reads that batch (at-least-once).
fn store_and_commit(consumer: &GroupConsumer, offsets: &TopicPartitionList, mode: CommitMode) {
    for element in offsets.elements() {
        let mut one = TopicPartitionList::new();
        one.add_partition_offset(element.topic(), element.partition(), element.offset())
            .expect("a fresh partition entry takes an offset");
        if let Err(error) = consumer.store_offsets(&one) {
            tracing::info!(topic = element.topic(), partition = element.partition(), %error, "offset not stored: partition no longer assigned");
        }
    }
    if let Err(error) = consumer.commit_consumer_state(mode) {
        tracing::debug!(%error, "offset commit deferred to the next auto-commit");
    }
}

/// How many messages the polling thread takes between looks at the clock and the shutdown
/// signal: reading both for every message took a tenth of its time.
const MESSAGES_BETWEEN_CHECKS: u32 = 64;

/// The polling thread: gathers messages into rounds and hands them over, until shutdown;
/// a partial round is handed over too, so what was taken gets processed before exit.
fn poll_rounds(
    consumer: &GroupConsumer,
    limits: BatchLimits,
    shutdown: &Shutdown,
    rounds: &mpsc::Sender<Round>,
    in_flight: &InFlight,
) {
    let mut round = Accumulator::<Packed>::new(limits);
    // When the last message came, and whether an empty round already told the processing
    // side that nothing more came for max-wait-ms (so it rolls what it holds).
    let (mut last_message, mut idle_announced) = (Instant::now(), true);
    // The partitions of the rounds handed over, with the offset after their last message.
    let mut read: BTreeMap<(Arc<str>, i32), i64> = BTreeMap::new();
    // Messages taken since the last check; a round closes at most this many messages late.
    let (mut taken, mut check, mut wait) = (0u32, true, Duration::ZERO);
    loop {
        if check {
            let stopping = shutdown.is_stopping();
            let now = Instant::now();
            if taken > 0 {
                (last_message, idle_announced, taken) = (now, false, 0);
            }
            let idle = round.is_empty()
                && !idle_announced
                && (now.duration_since(last_message) >= limits.max_wait || read_to_the_end(consumer, &mut read));
            if round.is_due(now) || (stopping && !round.is_empty()) || idle {
                let full = round.is_full();
                let messages = round.take();
                for packed in &messages.partitions {
                    if let Some((_, last)) = packed.offsets() {
                        read.insert((packed.topic().clone(), packed.partition()), last + 1);
                    }
                }
                if !hand_over(rounds, in_flight, Round { messages, full }) {
                    return;
                }
                idle_announced |= !full;
                // A full round may have taken the last messages there are: then the consumer
                // says at once that it is caught up, instead of after max-wait-ms of silence, so
                // the lanes roll and commit as soon as a backlog is worked off.
                if full && read_to_the_end(consumer, &mut read) {
                    if !hand_over(rounds, in_flight, Round { messages: Packed::default(), full: false }) {
                        return;
                    }
                    idle_announced = true;
                }
            }
            if stopping {
                return;
            }
            wait = if round.is_empty() && !idle_announced { limits.max_wait.saturating_sub(now.duration_since(last_message)) } else { round.remaining_wait(now) };
        }
        match consumer.poll(wait.min(SHUTDOWN_CHECK)) {
            Some(Ok(message)) => {
                round.push_with(message.payload_len() as u64, |packed| packed.add(&message));
                taken += 1;
                check = taken >= MESSAGES_BETWEEN_CHECKS || round.is_full();
            }
            None => check = true,
            Some(Err(error)) => {
                tracing::warn!(%error, "kafka poll error; librdkafka reconnects by itself");
                check = true;
            }
        }
    }
}

/// Hands a round to the processing side; false when that side stopped.
fn hand_over(rounds: &mpsc::Sender<Round>, in_flight: &InFlight, round: Round) -> bool {
    in_flight.begin();
    if rounds.blocking_send(round).is_err() {
        in_flight.end();
        return false;
    }
    true
}

/// Whether every partition in `read` (topic and partition → the offset after its last message)
/// is at its high watermark as librdkafka last saw it in a fetch response: nothing more to
/// read for now. Asks librdkafka's cache, never the broker. Partitions it knows nothing of
/// (no longer assigned) are forgotten.
fn read_to_the_end(consumer: &GroupConsumer, read: &mut BTreeMap<(Arc<str>, i32), i64>) -> bool {
    let mut at_end = true;
    read.retain(|(topic, partition), next| {
        let Ok(topic) = std::ffi::CString::new(topic.as_bytes()) else { return false };
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is alive as long as `consumer`; the topic is a valid C
        // string for the call; librdkafka only writes the two offsets.
        let error = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(consumer.client().native_ptr(), topic.as_ptr(), *partition, &mut low, &mut high)
        };
        let known = error == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0;
        at_end &= !known || *next >= high;
        known
    });
    at_end
}

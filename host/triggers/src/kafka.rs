//! The Kafka trigger: one member of a consumer group.
//!
//! A polling thread gathers messages into rounds by `[batching]`; each round is split by
//! partition into batches (keyed `<topic>-p<partition>-o<first>-<last>`, so a replay after a
//! crash reuses the key) that run concurrently on the function's instances. Offsets are stored
//! only after a round's batches are durable (committed or dead-lettered) and committed right
//! after; on a partition revocation the polling thread waits until every round it handed out
//! is settled, so librdkafka commits them before the partitions move.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Message as _, Offset, TopicPartitionList};
use sluice_frame::ingest::BadLinePolicy;
use sluice_manifest::{BadLines, InitialOffset, KafkaTrigger};
use sluice_runtime::{Batch, EventMeta, Function, FunctionSlot, Message, TriggerKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::batcher::{Accumulator, BatchLimits};
use crate::delivery::{Delivered, DeliveryError, RetryPolicy, deliver};
use crate::Shutdown;

/// The longest the polling thread goes without looking at the shutdown signal.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

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
    pub stats: Arc<KafkaStats>,
}

/// A message as polled: owned, with where it came from.
struct Polled {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Rounds handed to the processing side and not yet settled.
#[derive(Default)]
struct InFlight {
    rounds: Mutex<usize>,
    settled: Condvar,
}

impl InFlight {
    fn begin(&self) {
        *self.rounds.lock().expect("in-flight lock") += 1;
    }

    fn end(&self) {
        *self.rounds.lock().expect("in-flight lock") -= 1;
        self.settled.notify_all();
    }

    fn wait_settled(&self) {
        let rounds = self.rounds.lock().expect("in-flight lock");
        drop(self.settled.wait_while(rounds, |n| *n > 0).expect("in-flight lock"));
    }
}

/// Holds revocations until in-flight rounds are settled and their offsets stored.
struct GroupContext {
    function: String,
    in_flight: Arc<InFlight>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                tracing::info!(function = %self.function, partitions = partitions.count(), "partitions revoked: settling in-flight batches");
                self.in_flight.wait_settled();
            }
            Rebalance::Assign(partitions) => {
                tracing::info!(function = %self.function, partitions = partitions.count(), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(function = %self.function, %error, "rebalance error"),
        }
    }
}

type GroupConsumer = BaseConsumer<GroupContext>;

impl KafkaSource {
    pub fn new(spec: KafkaTrigger, limits: BatchLimits, retry: RetryPolicy) -> Self {
        KafkaSource { spec, limits, retry, stats: Arc::default() }
    }

    /// Consumes until `shutdown`, then settles and commits what it holds and leaves the group.
    /// Each round runs on the slot's version at the time it is settled, so a hot swap keeps
    /// the consumer and its partitions.
    pub async fn run(self, function: Arc<FunctionSlot>, shutdown: Shutdown) -> Result<(), KafkaError> {
        let name = function.name().to_string();
        let in_flight = Arc::new(InFlight::default());
        let consumer = Arc::new(self.consumer(&name, in_flight.clone())?);
        let topics: Vec<&str> = self.spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|source| KafkaError::Subscribe {
            function: name.clone(),
            topics: self.spec.topics.clone(),
            source,
        })?;
        tracing::info!(function = %name, topics = ?self.spec.topics, group = %self.spec.group, "kafka trigger started");

        let (rounds_tx, mut rounds_rx) = mpsc::channel::<Vec<Polled>>(1);
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
        let mut failure = None;
        while let Some(round) = rounds_rx.recv().await {
            let settled = self.settle_round(&function.current(), round, policy).await;
            match settled {
                Ok(offsets) => store_and_commit(&consumer, &offsets, CommitMode::Async),
                Err(source) => {
                    failure.get_or_insert(KafkaError::Undeliverable { function: name.clone(), source });
                }
            }
            in_flight.end();
            if failure.is_some() {
                break;
            }
        }
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

    fn consumer(&self, function: &str, in_flight: Arc<InFlight>) -> Result<GroupConsumer, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.spec.brokers)
            .set("group.id", &self.spec.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
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
        config
            .create_with_context(GroupContext { function: function.to_string(), in_flight })
            .map_err(|source| KafkaError::Create {
                function: function.to_string(),
                brokers: self.spec.brokers.clone(),
                source,
            })
    }

    /// Runs one batch per partition of `round`, concurrently; returns the offsets to store
    /// (the next offset to read, per partition).
    async fn settle_round(
        &self,
        function: &Arc<Function>,
        round: Vec<Polled>,
        policy: BadLinePolicy,
    ) -> Result<TopicPartitionList, DeliveryError> {
        let mut by_partition: BTreeMap<(String, i32), Vec<Polled>> = BTreeMap::new();
        for message in round {
            by_partition.entry((message.topic.clone(), message.partition)).or_default().push(message);
        }
        let mut batches = JoinSet::new();
        for ((topic, partition), messages) in by_partition {
            let (first, last) = (messages[0].offset, messages[messages.len() - 1].offset);
            let key = format!("{topic}-p{partition}-o{first}-{last}");
            let events = messages
                .into_iter()
                .map(|m| Message {
                    body: m.body,
                    meta: EventMeta::Kafka { topic: m.topic, partition: m.partition, offset: m.offset, key: m.key },
                })
                .collect::<Vec<_>>();
            self.stats.messages.fetch_add(events.len() as u64, Ordering::Relaxed);
            let batch = Arc::new(Batch::from_messages(TriggerKind::Kafka, events, policy));
            let (function, retry, stats) = (function.clone(), self.retry, self.stats.clone());
            batches.spawn(async move {
                let delivered = deliver(&function, batch, &key, &retry).await?;
                stats.batches.fetch_add(1, Ordering::Relaxed);
                match delivered {
                    Delivered::Committed { attempts, .. } if attempts > 1 => {
                        stats.retried_batches.fetch_add(1, Ordering::Relaxed);
                    }
                    Delivered::Committed { .. } => {}
                    Delivered::DeadLettered { .. } => {
                        stats.dead_lettered_batches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, DeliveryError>((topic, partition, last + 1))
            });
        }
        let mut offsets = TopicPartitionList::new();
        let mut failure = None;
        while let Some(joined) = batches.join_next().await {
            match joined.expect("a batch task panicked") {
                Ok((topic, partition, next)) => {
                    offsets
                        .add_partition_offset(&topic, partition, Offset::Offset(next))
                        .expect("a fresh partition entry takes an offset");
                }
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(offsets),
        }
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

/// The polling thread: gathers messages into rounds and hands them over, until shutdown;
/// a partial round is handed over too, so what was taken gets processed before exit.
fn poll_rounds(
    consumer: &GroupConsumer,
    limits: BatchLimits,
    shutdown: &Shutdown,
    rounds: &mpsc::Sender<Vec<Polled>>,
    in_flight: &InFlight,
) {
    let mut round = Accumulator::new(limits);
    loop {
        let stopping = shutdown.is_stopping();
        if round.is_due(Instant::now()) || (stopping && !round.is_empty()) {
            in_flight.begin();
            if rounds.blocking_send(round.take()).is_err() {
                in_flight.end();
                return;
            }
        }
        if stopping {
            return;
        }
        match consumer.poll(round.remaining_wait(Instant::now()).min(SHUTDOWN_CHECK)) {
            None => {}
            Some(Ok(message)) => {
                let body = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let bytes = body.len() as u64;
                let polled = Polled {
                    topic: message.topic().to_string(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    body,
                };
                round.push(polled, bytes);
            }
            Some(Err(error)) => tracing::warn!(%error, "kafka poll error; librdkafka reconnects by itself"),
        }
    }
}

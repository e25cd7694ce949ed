//! The ceiling of the Kafka benchmark: a bare rdkafka consumer that reads every message of a
//! topic from the beginning and does nothing with it.
//!
//! `kafka_drain <brokers> <topic> <messages> [--group GROUP]` prints one JSON line —
//! `{"messages":…,"bytes":…,"seconds":…}` — once `messages` messages have been read. Without
//! `--group` it assigns itself every partition from the beginning (no group protocol: the
//! ceiling); with it, it subscribes as a member of `GROUP`, as a stream consumer does, and pays
//! the group join and offset lookup before its first fetch.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error("usage: kafka_drain <brokers> <topic> <messages> [--group GROUP]")]
    Usage,
    #[error("`{0}` is not a message count")]
    Count(String),
    #[error("kafka ({brokers}, topic {topic}): {source}")]
    Kafka { brokers: String, topic: String, source: rdkafka::error::KafkaError },
    #[error("topic {topic} has no partitions on {brokers}")]
    NoPartitions { brokers: String, topic: String },
}

fn main() -> Result<(), DrainError> {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic), Some(count)) = (args.next(), args.next(), args.next()) else {
        return Err(DrainError::Usage);
    };
    let expected: u64 = count.parse().map_err(|_| DrainError::Count(count.clone()))?;
    let group = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--group"), Some(group)) => Some(group),
        _ => return Err(DrainError::Usage),
    };
    let kafka = |source| DrainError::Kafka { brokers: brokers.clone(), topic: topic.clone(), source };

    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", group.as_deref().unwrap_or("sluice-bench-drain"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // As the kafka trigger does: without it librdkafka idles a second whenever a
        // partition's local queue fills, and the ceiling would be set by that pause.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .map_err(kafka)?;
    if group.is_some() {
        consumer.subscribe(&[&topic]).map_err(kafka)?;
    } else {
        assign_every_partition(&consumer, &brokers, &topic)?;
    }

    let (mut messages, mut bytes) = (0u64, 0u64);
    while messages < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                messages += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(error)) => eprintln!("kafka_drain: poll error (librdkafka retries): {error}"),
            None => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"messages\":{messages},\"bytes\":{bytes},\"seconds\":{seconds:.3}}}");
    Ok(())
}

/// Assigns every partition of `topic` from its beginning.
fn assign_every_partition(consumer: &BaseConsumer, brokers: &str, topic: &str) -> Result<(), DrainError> {
    let kafka = |source| DrainError::Kafka { brokers: brokers.to_string(), topic: topic.to_string(), source };
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).map_err(kafka)?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        return Err(DrainError::NoPartitions { brokers: brokers.to_string(), topic: topic.to_string() });
    }
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).map_err(kafka)?;
    }
    consumer.assign(&assignment).map_err(kafka)
}

//! Reading a topic back from the beginning to its current end, without a consumer group: what
//! `streamagg consume` prints, and what the tests compare with their oracles.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{self, KafkaSettings, KafkaSetupError, StreamaggContext};

/// One record as it was on the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("reading '{topic}': {cause}")]
    Kafka {
        topic: String,
        cause: rdkafka::error::KafkaError,
    },
    #[error("reading '{topic}' did not reach its end within {}", humantime::format_duration(*.waited))]
    Timeout { topic: String, waited: Duration },
}

/// Which records a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    ReadCommitted,
    /// Everything written, including records of open or aborted transactions.
    ReadUncommitted,
}

/// Reads every record of `topic` from the beginning up to the end offsets it has when the read
/// starts, for at most `deadline`. Blocks.
pub fn read_to_end(
    settings: &KafkaSettings,
    topic: &str,
    isolation: Isolation,
    deadline: Duration,
) -> Result<Vec<RawRecord>, ReadError> {
    let consumer: BaseConsumer<StreamaggContext> = settings
        .client_config("streamagg-reader")
        // librdkafka's assign() needs a group id; this reader never joins the group or commits.
        .set("group.id", "streamagg-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create_with_context(StreamaggContext::default())
        .map_err(KafkaSetupError::Config)?;
    let partitions = kafka::partition_count(consumer.client(), settings, topic)?
        .ok_or_else(|| KafkaSetupError::TopicMissing(topic.to_owned()))?;
    let kafka_error = |cause| ReadError::Kafka {
        topic: topic.to_owned(),
        cause,
    };

    // The end of each partition as of now; partitions already at their end are not read.
    let mut ends = Vec::with_capacity(partitions);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, settings.timeout)
            .map_err(kafka_error)?;
        if high > low {
            ends.push((partition, high));
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(kafka_error)?;
        }
    }
    consumer.assign(&assignment).map_err(kafka_error)?;

    let started = Instant::now();
    let mut records = Vec::new();
    while !ends.is_empty() {
        if started.elapsed() > deadline {
            return Err(ReadError::Timeout {
                topic: topic.to_owned(),
                waited: deadline,
            });
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.map_err(kafka_error)?;
            if ends
                .iter()
                .any(|&(p, end)| p == message.partition() && message.offset() < end)
            {
                records.push(RawRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    headers: message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        // A partition is done once the consumer's position has passed its end: under read_committed
        // the last offsets may be transaction markers that are never returned as messages.
        let positions = consumer.position().map_err(kafka_error)?;
        ends.retain(|&(partition, end)| {
            !matches!(
                positions.find_partition(topic, partition).map(|p| p.offset()),
                Some(Offset::Offset(position)) if position >= end
            )
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

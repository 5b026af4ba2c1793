//! Reading a topic back from the beginning to its current end, without a consumer group: what
//! `streamagg consume` prints, and what the tests compare with their oracles.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::cluster::KafkaSettings;
use crate::kafka::context::StreamaggContext;
use crate::kafka::{self, KafkaSetupError};

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
    let mut records = Vec::new();
    drain(settings, topic, isolation, deadline, &[], |message| {
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
    })?;
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// Hands every record of `topic`, from the beginning up to the end offsets it has when the read
/// starts, to `visit` (in fetch order), for at most `deadline`; returns how many there were. Blocks.
/// The benchmark's raw-consume ceiling is this loop with a visitor that only counts. `properties`
/// are librdkafka consumer properties applied last (the benchmark gives the ceiling the same
/// pass-through properties as the processor, so the two compare like for like).
pub fn drain(
    settings: &KafkaSettings,
    topic: &str,
    isolation: Isolation,
    deadline: Duration,
    properties: &[(String, String)],
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, ReadError> {
    let mut config = settings.consumer_config("streamagg-reader");
    for (key, value) in properties {
        config.set(key, value);
    }
    let consumer: BaseConsumer<StreamaggContext> = config
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
        .map_err(KafkaSetupError::config)?;
    let partitions = kafka::admin::partition_count(&consumer, settings, topic)?
        .ok_or_else(|| KafkaSetupError::TopicMissing(topic.to_owned()))?;
    let kafka_error = |cause| ReadError::Kafka {
        topic: topic.to_owned(),
        cause,
    };

    // The end of each partition as of now; partitions already at their end are not read.
    let mut ends = Vec::with_capacity(partitions);
    let mut total = 0_i64; // offsets to read; equal to the records unless markers or compaction gaps
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, settings.timeout)
            .map_err(kafka_error)?;
        if high > low {
            total += high - low;
            ends.push((partition, high));
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(kafka_error)?;
        }
    }
    consumer.assign(&assignment).map_err(kafka_error)?;

    let started = Instant::now();
    let mut count = 0_u64;
    let mut since_check = 0_u32;
    while !ends.is_empty() && count < total as u64 {
        if started.elapsed() > deadline {
            return Err(ReadError::Timeout {
                topic: topic.to_owned(),
                waited: deadline,
            });
        }
        let polled = consumer.poll(Duration::from_millis(100));
        if let Some(message) = &polled {
            let message = message.as_ref().map_err(|e| kafka_error(e.clone()))?;
            if ends
                .iter()
                .any(|&(p, end)| p == message.partition() && message.offset() < end)
            {
                visit(message);
                count += 1;
            }
            since_check += 1;
        }
        // A partition is done once the consumer's position has passed its end: under read_committed
        // the last offsets may be transaction markers that are never returned as messages. Asked
        // when the consumer is idle or every 1024 records, not per record.
        if polled.is_none() || since_check >= 1024 {
            since_check = 0;
            let positions = consumer.position().map_err(kafka_error)?;
            ends.retain(|&(partition, end)| {
                !matches!(
                    positions.find_partition(topic, partition).map(|p| p.offset()),
                    Some(Offset::Offset(position)) if position >= end
                )
            });
        }
    }
    Ok(count)
}

/// How far a consumer group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
    /// The partition's end (high watermark).
    pub end: i64,
}

impl PartitionLag {
    /// Records not yet committed by the group (all of them if it has no commit).
    pub fn lag(&self) -> i64 {
        self.end - self.committed.unwrap_or(0).min(self.end)
    }
}

/// The committed offsets of `group` on every partition of `topics` against their ends, without
/// joining the group. Blocks.
pub fn group_lag(
    settings: &KafkaSettings,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>, ReadError> {
    let consumer: BaseConsumer<StreamaggContext> = settings
        .client_config("streamagg-lag")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create_with_context(StreamaggContext::default())
        .map_err(KafkaSetupError::config)?;
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let partitions = kafka::admin::partition_count(&consumer, settings, topic)?
            .ok_or_else(|| KafkaSetupError::TopicMissing(topic.clone()))?;
        for partition in 0..partitions as i32 {
            list.add_partition(topic, partition);
        }
    }
    let kafka_error = |topic: &str| {
        let topic = topic.to_owned();
        move |cause| ReadError::Kafka { topic, cause }
    };
    let committed = consumer
        .committed_offsets(list.clone(), settings.timeout)
        .map_err(kafka_error(group))?;
    let mut lags = Vec::new();
    for element in list.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (_, end) = consumer
            .fetch_watermarks(topic, partition, settings.timeout)
            .map_err(kafka_error(topic))?;
        let committed = committed
            .find_partition(topic, partition)
            .and_then(|c| match c.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        lags.push(PartitionLag {
            topic: topic.to_owned(),
            partition,
            committed,
            end,
        });
    }
    Ok(lags)
}

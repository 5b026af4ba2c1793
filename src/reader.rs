//! Reading a topic without a consumer group: from the beginning (or the end, a point in time, or
//! offsets where an earlier read stopped) to its end as of the start, or following new records
//! until told to stop. What `streamagg consume` prints and `streamagg dlq replay` re-injects, and
//! what the tests compare with their oracles.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::cluster::KafkaSettings;
use crate::kafka::context::StreamaggContext;
use crate::kafka::{self, KafkaSetupError};

mod start;

use start::first_offset;

/// One record as it was on the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp (CreateTime or LogAppendTime), epoch milliseconds.
    pub timestamp: Option<i64>,
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
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: header_list(message)
                .into_iter()
                .map(|(key, value)| (key, value.unwrap_or_default()))
                .collect(),
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
    let scan = Scan {
        isolation,
        start: StartAt::Beginning,
        until: Until::End { deadline },
        max_records: None,
    };
    scan.run(
        settings,
        topic,
        properties,
        &AtomicBool::new(false),
        |message| {
            visit(message);
            ControlFlow::Continue(())
        },
    )
}

/// Where a read starts on every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first record still on the partition.
    Beginning,
    /// The partition's end: only records written after the read starts (with [`Until::Follow`]).
    End,
    /// The first record whose timestamp is at or after this epoch millisecond (Kafka's time index).
    Time(i64),
}

/// When a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// At the end offsets the partitions have when the read starts; an error if that takes longer
    /// than `deadline`.
    End { deadline: Duration },
    /// Never by itself: when the stop flag is set, or after `for_at_most` if given (not an error).
    Follow { for_at_most: Option<Duration> },
}

/// A read of one topic without a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub isolation: Isolation,
    pub start: StartAt,
    pub until: Until,
    /// Stop after this many records.
    pub max_records: Option<u64>,
}

impl Scan {
    /// Hands each record of `topic` to `visit` (in fetch order) until [`Self::until`] says stop,
    /// `stop` is set, `max_records` were visited or `visit` breaks; returns how many it visited.
    /// Blocks. `properties` are librdkafka consumer properties applied last.
    pub fn run(
        &self,
        settings: &KafkaSettings,
        topic: &str,
        properties: &[(String, String)],
        stop: &AtomicBool,
        visit: impl FnMut(&BorrowedMessage<'_>) -> ControlFlow<()>,
    ) -> Result<u64, ReadError> {
        self.run_resuming(settings, topic, properties, &[], stop, visit)
    }

    /// [`Scan::run`], except that partition `p` starts at `resume[p]` where that is `Some` (an
    /// offset where an earlier read stopped, kept within what the partition holds) instead of at
    /// [`Self::start`].
    pub fn run_resuming(
        &self,
        settings: &KafkaSettings,
        topic: &str,
        properties: &[(String, String)],
        resume: &[Option<i64>],
        stop: &AtomicBool,
        mut visit: impl FnMut(&BorrowedMessage<'_>) -> ControlFlow<()>,
    ) -> Result<u64, ReadError> {
        let consumer = reader_consumer(settings, self.isolation, properties)?;
        let partitions = kafka::admin::partition_count(&consumer, settings, topic)?
            .ok_or_else(|| KafkaSetupError::TopicMissing(topic.to_owned()))?;
        let kafka_error = |cause| ReadError::Kafka {
            topic: topic.to_owned(),
            cause,
        };
        let starts = start_offsets(&consumer, settings, topic, partitions, self.start, resume)?;

        // With `Until::End`: the end of each partition as of now; partitions already there are not read.
        let mut ends = Vec::with_capacity(partitions);
        let mut total = 0_i64; // offsets to read; equal to the records unless markers or compaction gaps
        let mut assignment = TopicPartitionList::new();
        for (partition, (start, high)) in starts.into_iter().enumerate() {
            let partition = partition as i32;
            let follow = matches!(self.until, Until::Follow { .. });
            if follow || high > start {
                total += high - start;
                ends.push((partition, high));
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(start))
                    .map_err(kafka_error)?;
            }
        }
        consumer.assign(&assignment).map_err(kafka_error)?;

        let started = Instant::now();
        let limit = self.max_records.unwrap_or(u64::MAX);
        let mut count = 0_u64;
        let mut since_check = 0_u32;
        loop {
            if count >= limit || stop.load(Ordering::Relaxed) {
                break;
            }
            match self.until {
                Until::End { deadline } => {
                    if ends.is_empty() || count >= total as u64 {
                        break;
                    }
                    if started.elapsed() > deadline {
                        return Err(ReadError::Timeout {
                            topic: topic.to_owned(),
                            waited: deadline,
                        });
                    }
                }
                Until::Follow { for_at_most } => {
                    if for_at_most.is_some_and(|d| started.elapsed() >= d) {
                        break;
                    }
                }
            }
            let polled = consumer.poll(Duration::from_millis(100));
            if let Some(message) = &polled {
                let message = message.as_ref().map_err(|e| kafka_error(e.clone()))?;
                let wanted = match self.until {
                    Until::Follow { .. } => true,
                    Until::End { .. } => ends
                        .iter()
                        .any(|&(p, end)| p == message.partition() && message.offset() < end),
                };
                if wanted {
                    count += 1;
                    if visit(message).is_break() {
                        break;
                    }
                }
                since_check += 1;
            }
            // A partition is done once the consumer's position has passed its end: under
            // read_committed the last offsets may be transaction markers that are never returned as
            // messages. Asked when the consumer is idle or every 1024 records, not per record.
            if matches!(self.until, Until::End { .. }) && (polled.is_none() || since_check >= 1024)
            {
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
}

/// A consumer that reads by assignment: it never joins a group or commits.
fn reader_consumer(
    settings: &KafkaSettings,
    isolation: Isolation,
    properties: &[(String, String)],
) -> Result<BaseConsumer<StreamaggContext>, KafkaSetupError> {
    let mut config = settings.consumer_config("streamagg-reader");
    for (key, value) in properties {
        config.set(key, value);
    }
    config
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
        .map_err(KafkaSetupError::config)
}

/// Per partition (by number): the offset `start` names (or `resume` gives) and the partition's end
/// as of now.
fn start_offsets(
    consumer: &BaseConsumer<StreamaggContext>,
    settings: &KafkaSettings,
    topic: &str,
    partitions: usize,
    start: StartAt,
    resume: &[Option<i64>],
) -> Result<Vec<(i64, i64)>, ReadError> {
    let kafka_error = |cause| ReadError::Kafka {
        topic: topic.to_owned(),
        cause,
    };
    let mut watermarks = Vec::with_capacity(partitions);
    for partition in 0..partitions as i32 {
        watermarks.push(
            consumer
                .fetch_watermarks(topic, partition, settings.timeout)
                .map_err(kafka_error)?,
        );
    }
    let at_time = match start {
        StartAt::Time(ms) => {
            let mut query = TopicPartitionList::new();
            for partition in 0..partitions as i32 {
                query
                    .add_partition_offset(topic, partition, Offset::Offset(ms))
                    .map_err(kafka_error)?;
            }
            Some(
                consumer
                    .offsets_for_times(query, settings.timeout)
                    .map_err(kafka_error)?,
            )
        }
        StartAt::Beginning | StartAt::End => None,
    };
    Ok(watermarks
        .into_iter()
        .enumerate()
        .map(|(partition, (low, high))| {
            // No record at or after the time: `None`.
            let found = at_time.as_ref().and_then(|found| {
                match found.find_partition(topic, partition as i32)?.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                }
            });
            let resumed = resume.get(partition).copied().flatten();
            (first_offset(start, low, high, found, resumed), high)
        })
        .collect())
}

/// A record's headers in order, read through the C API so a key that is not UTF-8 becomes its
/// lossy rendering instead of a panic (rdkafka's `Headers::get` unwraps it); `None` for a header
/// without a value.
pub fn header_list(message: &BorrowedMessage<'_>) -> Vec<(String, Option<Vec<u8>>)> {
    let Some(headers) = message.headers() else {
        return Vec::new();
    };
    // rdkafka's `BorrowedHeaders` is the C header list itself (a reference to it is the pointer).
    let native = headers as *const rdkafka::message::BorrowedHeaders
        as *const rdkafka::bindings::rd_kafka_headers_t;
    (0..headers.count())
        .filter_map(|index| {
            // SAFETY: `native` is the message's header list, valid while `message` is borrowed;
            // librdkafka writes a pointer to a NUL-terminated name it owns, a value pointer (NULL
            // for no value) and its size. Both are copied before the borrow ends.
            unsafe {
                let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
                let error = rdkafka::bindings::rd_kafka_header_get_all(
                    native, index, &mut name, &mut value, &mut size,
                );
                if error != rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                    || name.is_null()
                {
                    return None;
                }
                let key =
                    String::from_utf8_lossy(std::ffi::CStr::from_ptr(name).to_bytes()).into_owned();
                let value = (!value.is_null())
                    .then(|| std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec());
                Some((key, value))
            }
        })
        .collect()
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

//! The output edge of the processor: closed windows become `TrafficAverage` records on the output
//! topic; late and undecodable input records are forwarded unchanged to the late topic and the DLQ,
//! with headers saying why and where they came from. All through one idempotent [`RecordProducer`].
//!
//! Timestamps: an output record carries the wall clock at sending, or with
//! `--output-timestamp window-end` its window's last instant ([`output_timestamp`], why that
//! instant); a forwarded copy its input record's timestamp. A topic that refuses such a timestamp
//! (`message.timestamp.before.max.ms`) fails the send like any refusal: the checkpoint's
//! transaction is aborted and redone, a bounded number of times.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::codec::{encode, Format};
use crate::config::{OutputTimestamp, RunSettings};
use crate::kafka::KafkaSetupError;
use crate::model::TrafficAverage;
use crate::producer::{PreparedCommit, ProduceError, RecordProducer};
use crate::window::sketch::SketchSpec;
use crate::window::ClosedWindow;

/// Header naming why a record went to the DLQ or late topic.
pub const HEADER_ERROR: &str = "streamagg.error";
/// Headers naming where a forwarded record came from.
pub const HEADER_TOPIC: &str = "streamagg.topic";
pub const HEADER_PARTITION: &str = "streamagg.partition";
pub const HEADER_OFFSET: &str = "streamagg.offset";
/// On late records: the start of the window that had closed.
pub const HEADER_WINDOW_START: &str = "streamagg.window_start";
/// On a result whose window may be one part of a window split between two partitions by partitions
/// added to the input (`processor::split`): `partition=<p> home=<q> partitions=<n>` (read from
/// partition `p`; with `n` partitions its source belongs in `q`).
pub const HEADER_POSSIBLY_SPLIT: &str = "streamagg.possibly_split";
/// On a marker that stands for a record too large for its side-output topic: the size of the
/// original payload, in bytes (the marker itself has no payload).
pub const HEADER_ORIGINAL_BYTES: &str = "streamagg.original_bytes";

/// librdkafka's `message.max.bytes` unless the producer properties set it.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Room left under a size limit for what a record costs beyond its key, payload and headers
/// (record and batch framing, compression that cannot shrink the payload).
fn framing_bytes(size: usize) -> usize {
    1024 + size / 64
}

/// The output producer's queue unless the producer properties size it: deep enough for a burst of
/// window closes, bounded so a flood of late or invalid records (each forwarded whole) waits for
/// deliveries instead of growing the process by up to librdkafka's default of 1 GiB.
const SINK_QUEUE_MESSAGES: &str = "100000";
const SINK_QUEUE_KBYTES: &str = "65536";

/// The averages of one closed window, and its percentiles when its values were sketched (each
/// estimate kept within the window's `[min, max]`, where the exact value lies too).
pub fn average_of(window: &ClosedWindow, percentiles: Option<&SketchSpec>) -> TrafficAverage {
    let a = &window.aggregate;
    let percentile = |q: f64| {
        let sketch = a.sketch.as_deref()?;
        // max-then-min, not `clamp`: a damaged stored aggregate (min > max) must not panic.
        Some(sketch.quantile(percentiles?, q)?.max(a.min).min(a.max))
    };
    TrafficAverage {
        source: window.source.to_string(),
        window_start: window.window_start,
        window_end: window.window_end,
        count: a.count as i64,
        sum: a.sum,
        avg: a.sum / a.count as f64,
        min: a.min,
        max: a.max,
        p50: percentile(0.5),
        p90: percentile(0.9),
        p95: percentile(0.95),
        p99: percentile(0.99),
    }
}

/// The Kafka timestamp of an output record under `--output-timestamp window-end`: the last instant
/// its window covers, `window_end - 1`
/// (Flink's `TimeWindow.maxTimestamp()`). Event time, not the wall clock at emission, so that
/// - a re-emission (at-least-once redo, a hand-off, a replay after a reset) is identical to the
///   first, timestamp included;
/// - a downstream consumer that windows by record timestamp with the same or a coarser alignment
///   puts the record in the window it describes (the window end itself belongs to the next one);
/// - it never exceeds the timestamps of later windows' records, so the topic's timestamps rise with
///   its windows, which time-based retention and `offsetsForTimes` lookups expect.
///
/// (Kafka Streams stamps the largest input timestamp, which depends on which records came;
/// Quix the window start, which a consumer aligned by end would misplace.)
///
/// Two exceptions, both of windows no well-behaved producer makes: a window that ends in the
/// future (a producer clock ahead, microseconds sent as milliseconds) is stamped `now_ms`, because
/// brokers refuse timestamps more than `log.message.timestamp.after.max.ms` ahead (one hour by
/// default since Kafka 4.0) and one refused output would stop the instance at every redo; and a
/// window ending at or before the epoch gets no timestamp of its own (`None`: the wall clock),
/// since 0 and negative timestamps mean "none" to clients and are refused by default extractors.
pub fn output_timestamp(average: &TrafficAverage, now_ms: i64) -> Option<i64> {
    let last_instant = average.window_end.saturating_sub(1);
    match last_instant {
        t if t <= 0 => None,
        t => Some(t.min(now_ms)),
    }
}

/// Writes the processor's outputs.
pub struct Sink {
    producer: RecordProducer,
    /// Per window size (0: the smallest), the topic its results go to.
    output_topics: Vec<String>,
    output_format: Format,
    /// Per window size, the registry id of the output schema under its topic's subject, with
    /// `avro-confluent` ([`Sink::frame_with`]).
    output_schema_ids: Vec<u32>,
    /// The side-output topics and the largest record each accepts (its `max.message.bytes`, and
    /// the producer's `message.max.bytes`).
    late_topic: Option<(String, usize)>,
    dlq_topic: Option<(String, usize)>,
    percentiles: Option<SketchSpec>,
    output_timestamp: OutputTimestamp,
    buffer: Vec<u8>,
}

/// The output producer's `linger.ms` unless configured: see [`Sink::connect`].
pub const SINK_LINGER_MS: &str = "5";

impl Sink {
    /// Connects the producer (checking the cluster answers) with the run's pass-through properties;
    /// a transactional one when `transactional_id` is given.
    pub fn connect(
        settings: &RunSettings,
        transactional_id: Option<&str>,
    ) -> Result<Self, ProduceError> {
        // Results are few next to the input, and a closed window's average should not wait for a
        // batch to fill: a short linger, unless the run's pass-through properties set one.
        let mut properties = settings.producer_properties.clone();
        properties
            .entry("linger.ms".to_owned())
            .or_insert_with(|| SINK_LINGER_MS.to_owned());
        for (key, value) in [
            ("queue.buffering.max.messages", SINK_QUEUE_MESSAGES),
            ("queue.buffering.max.kbytes", SINK_QUEUE_KBYTES),
        ] {
            properties
                .entry(key.to_owned())
                .or_insert_with(|| value.to_owned());
        }
        let producer_limit = properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let written: Vec<&str> = settings
            .output_topics()
            .into_iter()
            .chain(&settings.late_topic)
            .chain(&settings.dlq_topic)
            .map(String::as_str)
            .collect();
        // The cluster must answer, and accept this client, before it is asked about topics: a
        // refusal is then one line at once (see `kafka::admin::fetch_metadata`).
        drop(RecordProducer::connect(
            &settings.kafka,
            "streamagg-sink",
            &BTreeMap::new(),
        )?);
        let topic_limits = match crate::kafka::admin::max_message_bytes(&settings.kafka, &written) {
            Ok(limits) => limits,
            Err(error @ KafkaSetupError::DescribeTopic { .. }) => {
                tracing::warn!(%error, "assuming the topics accept the producer's message.max.bytes (the DescribeConfigs ACL on them lets streamagg check)");
                vec![None; written.len()]
            }
            Err(error) => return Err(error.into()),
        };
        let limit_of = |topic: &str| {
            let topic_limit = written
                .iter()
                .zip(&topic_limits)
                .find(|(t, _)| **t == topic)
                .and_then(|(_, limit)| *limit);
            topic_limit.map_or(producer_limit, |t| t.min(producer_limit))
        };
        let side_output = |topic: &Option<String>| topic.as_ref().map(|t| (t.clone(), limit_of(t)));
        let late_topic = side_output(&settings.late_topic);
        let dlq_topic = side_output(&settings.dlq_topic);
        // The broker checks a whole batch against the topic's limit: no batch may be larger than
        // the smallest limit of the topics written (a batch of records that each fit would
        // otherwise be refused, every time the work is redone).
        let smallest = written
            .iter()
            .map(|topic| limit_of(topic))
            .min()
            .unwrap_or(producer_limit);
        let batch_bytes = smallest.saturating_sub(framing_bytes(smallest)).max(1);
        let batch_size = properties
            .get("batch.size")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(crate::producer::BATCH_BYTES)
            .min(batch_bytes);
        properties.insert("batch.size".to_owned(), batch_size.to_string());
        let properties = &properties;
        let producer = match transactional_id {
            Some(id) => RecordProducer::connect_transactional(
                &settings.kafka,
                "streamagg-sink",
                properties,
                id,
            )?,
            None => RecordProducer::connect(&settings.kafka, "streamagg-sink", properties)?,
        };
        Ok(Sink {
            producer,
            output_topics: (0..=settings.rollups.sizes().len())
                .map(|level| settings.output_of(level).to_owned())
                .collect(),
            output_format: settings.output_format,
            output_schema_ids: Vec::new(),
            late_topic,
            dlq_topic,
            percentiles: settings.percentiles,
            output_timestamp: settings.output_timestamp,
            buffer: Vec::with_capacity(256),
        })
    }

    /// The topics this sink writes to, for error messages.
    pub fn topics(&self) -> String {
        let mut topics: Vec<&String> = self.output_topics.iter().collect();
        topics.dedup();
        topics
            .into_iter()
            .chain(self.late_topic.as_ref().map(|(t, _)| t))
            .chain(self.dlq_topic.as_ref().map(|(t, _)| t))
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The producer, for metadata requests.
    pub fn client(
        &self,
    ) -> &rdkafka::producer::BaseProducer<crate::kafka::context::StreamaggContext> {
        self.producer.client()
    }

    /// Frames every output in the Confluent wire format: window size `i`'s with registry schema
    /// `ids[i]` (the id under its topic's subject).
    pub fn frame_with(&mut self, ids: Vec<u32>) {
        self.output_schema_ids = ids;
    }

    /// Queues the average of a closed window, keyed by source, timestamped with the window's last
    /// instant ([`output_timestamp`]).
    /// `possibly_split`: the [`HEADER_POSSIBLY_SPLIT`] header's value, when the window may be one
    /// part of a window split by partitions added to the input.
    pub fn emit(
        &mut self,
        window: &ClosedWindow,
        possibly_split: Option<&str>,
    ) -> Result<(), ProduceError> {
        self.buffer.clear();
        if let Some(&id) = self.output_schema_ids.get(window.level) {
            crate::codec::confluent::write_header(id, &mut self.buffer);
        }
        let average = average_of(window, self.percentiles.as_ref());
        encode(&average, self.output_format, &mut self.buffer);
        // One topic per size (`Sink::new`): a level beyond them is the last size's.
        let topic = self
            .output_topics
            .get(window.level)
            .or(self.output_topics.last())
            .map_or("", String::as_str);
        self.producer.send_at(
            topic,
            Some(window.source.as_bytes()),
            Some(&self.buffer),
            possibly_split.map(|value| {
                OwnedHeaders::new().insert(Header {
                    key: HEADER_POSSIBLY_SPLIT,
                    value: Some(value),
                })
            }),
            match self.output_timestamp {
                OutputTimestamp::WallClock => None,
                OutputTimestamp::WindowEnd => output_timestamp(&average, crate::producer::now_ms()),
            },
        )
    }

    /// Forwards a record whose window had closed to the late topic, if one is set; `rolled_up`: a
    /// larger window size still took it, which its reason says. Returns whether it was.
    pub fn forward_late(
        &mut self,
        message: &BorrowedMessage<'_>,
        window_start: i64,
        rolled_up: bool,
    ) -> Result<bool, ProduceError> {
        let Some((topic, limit)) = self.late_topic.clone() else {
            return Ok(false);
        };
        let window_start = window_start.to_string();
        let extra = [(HEADER_WINDOW_START, window_start.as_str())];
        let reason = match rolled_up {
            false => "late: window closed",
            true => "late: window closed (a larger window size took it)",
        };
        self.forward(&topic, limit, message, reason, &extra)?;
        Ok(true)
    }

    /// Forwards a record that could not be processed to the DLQ, if one is set. Returns whether it was.
    pub fn forward_invalid(
        &mut self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<bool, ProduceError> {
        let Some((topic, limit)) = self.dlq_topic.clone() else {
            return Ok(false);
        };
        self.forward(&topic, limit, message, reason, &[])?;
        Ok(true)
    }

    /// Sends `message` unchanged (its Kafka timestamp too) to `topic` with its provenance, or — when the copy would be larger
    /// than the topic accepts (`limit`) — a marker in its place: no payload, the provenance headers
    /// and the original size. A refused copy would fail the whole checkpoint (under exactly-once,
    /// every window of the transaction) for one record the DLQ cannot hold anyway.
    fn forward(
        &mut self,
        topic: &str,
        limit: usize,
        message: &BorrowedMessage<'_>,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), ProduceError> {
        // A copy keeps a null key or value null: a tombstone is not an empty record. It keeps
        // the input record's timestamp too: it is the same record, set aside.
        let (key, payload) = (message.key(), message.payload());
        let key_bytes = key.map_or(0, <[u8]>::len);
        let payload_bytes = payload.map_or(0, <[u8]>::len);
        let timestamp = message.timestamp().to_millis();
        let original_headers = message.headers();
        let header_bytes = original_headers.map_or(0, header_bytes);
        let size = key_bytes + payload_bytes + header_bytes + reason.len();
        if size + framing_bytes(size) <= limit {
            let headers = with_extra(provenance(original_headers, message, reason), extra);
            match self
                .producer
                .send_at(topic, key, payload, Some(headers), timestamp)
            {
                // librdkafka's own size check refused it at once: the marker below, then.
                Err(ProduceError::Send {
                    cause: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    ..
                }) => {}
                sent => return sent,
            }
        }
        let original_bytes = payload_bytes.to_string();
        let reason = format!(
            "{reason}; record too large for '{topic}' ({size} bytes, limit {limit}): payload dropped"
        );
        let headers = with_extra(provenance(None, message, &reason), extra).insert(Header {
            key: HEADER_ORIGINAL_BYTES,
            value: Some(original_bytes.as_bytes()),
        });
        let key = if key_bytes + framing_bytes(key_bytes) <= limit / 2 {
            key
        } else {
            Some(&[][..])
        };
        self.producer
            .send_at(topic, key, Some(&[]), Some(headers), timestamp)
    }

    /// Adds the consumer's `offsets` to the transaction of everything sent since the last commit
    /// and waits for its records (see [`RecordProducer::prepare_commit`]).
    pub fn prepare_commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        patience: Duration,
    ) -> Result<PreparedCommit, ProduceError> {
        self.producer.prepare_commit(offsets, group, patience)
    }

    /// Commits the prepared transaction: its records and offsets become visible together.
    pub fn commit_prepared(&mut self, prepared: PreparedCommit) -> Result<(), ProduceError> {
        self.producer.commit_prepared(prepared)
    }

    /// How long the open transaction has been open, if one is.
    pub fn open_transaction_age(&self) -> Option<Duration> {
        self.producer.open_transaction_age()
    }

    /// Aborts everything sent since the last commit.
    pub fn abort_transaction(&mut self) -> Result<(), ProduceError> {
        self.producer.abort_transaction()
    }

    /// Waits until everything queued is delivered (see [`RecordProducer::flush`]).
    pub fn flush(&mut self, timeout: Duration) -> Result<(), ProduceError> {
        self.producer.flush(timeout)
    }
}

/// What `headers` weigh against librdkafka's `message.max.bytes` check: each header's key and value
/// plus its framing (two varint lengths, at most 10 bytes). Read through the C API, so a key
/// that is not UTF-8 is counted, not a panic.
fn header_bytes(headers: &BorrowedHeaders) -> usize {
    const PER_HEADER: usize = 10;
    // rdkafka's `BorrowedHeaders` is the C header list itself (a reference to it is the pointer).
    let native = headers as *const BorrowedHeaders as *const rdkafka::bindings::rd_kafka_headers_t;
    // SAFETY: `native` is the message's header list, valid while `headers` is borrowed; librdkafka
    // writes a pointer to a NUL-terminated name it owns, a value pointer and its size.
    (0..headers.count())
        .map(|index| unsafe {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            let error = rdkafka::bindings::rd_kafka_header_get_all(
                native, index, &mut name, &mut value, &mut size,
            );
            if error != rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null()
            {
                PER_HEADER
            } else {
                PER_HEADER + std::ffi::CStr::from_ptr(name).to_bytes().len() + size
            }
        })
        .sum()
}

/// `headers` followed by `extra`.
fn with_extra(mut headers: OwnedHeaders, extra: &[(&str, &str)]) -> OwnedHeaders {
    for (key, value) in extra {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// The `original` headers (if kept) followed by the reason and where the record came from.
fn provenance(
    original: Option<&BorrowedHeaders>,
    message: &BorrowedMessage<'_>,
    reason: &str,
) -> OwnedHeaders {
    // Copied whole by librdkafka: iterating them would read each key as UTF-8 (and rdkafka panics on
    // a key that is not).
    original
        .map_or_else(OwnedHeaders::new, BorrowedHeaders::detach)
        .insert(Header {
            key: HEADER_ERROR,
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: HEADER_TOPIC,
            value: Some(message.topic().as_bytes()),
        })
        .insert(Header {
            key: HEADER_PARTITION,
            value: Some(message.partition().to_string().as_bytes()),
        })
        .insert(Header {
            key: HEADER_OFFSET,
            value: Some(message.offset().to_string().as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Aggregate;

    #[test]
    fn average_divides_sum_by_count_and_spans_the_window() {
        let window = ClosedWindow {
            source: "s".into(),
            window_start: 120_000,
            window_end: 180_000,
            level: 0,
            aggregate: Aggregate {
                count: 4,
                sum: 10.0,
                min: 1.0,
                max: 4.0,
                first_offset: 0,
                sketch: None,
            },
        };
        let average = average_of(&window, None);
        assert_eq!(
            average,
            TrafficAverage {
                source: "s".into(),
                window_start: 120_000,
                window_end: 180_000,
                count: 4,
                sum: 10.0,
                avg: 2.5,
                min: 1.0,
                max: 4.0,
                p50: None,
                p90: None,
                p95: None,
                p99: None,
            }
        );
        assert_eq!(output_timestamp(&average, 10_000_000), Some(179_999));
    }

    #[test]
    fn output_timestamps_are_the_last_instant_unless_in_the_future_or_before_the_epoch() {
        let ending = |window_end: i64| TrafficAverage {
            source: "s".into(),
            window_start: window_end - 60_000,
            window_end,
            count: 1,
            sum: 1.0,
            avg: 1.0,
            min: 1.0,
            max: 1.0,
            p50: None,
            p90: None,
            p95: None,
            p99: None,
        };
        let now = 1_700_000_000_000;
        // (window end, expected timestamp)
        let cases = [
            (now - 60_000, Some(now - 60_001)),
            (now, Some(now - 1)),
            (now + 1, Some(now)),
            (now + 7_200_000, Some(now)),
            (2, Some(1)),
            (1, None),
            (0, None),
            (-60_000, None),
            (i64::MIN + 60_000, None),
        ];
        for (window_end, expected) in cases {
            assert_eq!(
                output_timestamp(&ending(window_end), now),
                expected,
                "end {window_end}"
            );
        }
    }

    #[test]
    fn percentiles_come_from_the_sketch_within_min_and_max() {
        let spec = SketchSpec::new(0.01, 2048).expect("valid");
        let mut aggregate = Aggregate::of(1.0, 0);
        let mut sketch = crate::window::sketch::Sketch::default();
        sketch.add(&spec, 1.0);
        for (offset, value) in [(1, 2.0), (2, 3.0), (3, 100.0)] {
            aggregate.add(value, offset);
            sketch.add(&spec, value);
        }
        aggregate.sketch = Some(Box::new(sketch));
        let window = ClosedWindow {
            source: "s".into(),
            window_start: 0,
            window_end: 60_000,
            level: 0,
            aggregate,
        };
        let average = average_of(&window, Some(&spec));
        // Ranks ⌊q · 3⌋: p50 → 2.0 (rank 1), p90, p95, p99 → 3.0 (rank 2).
        for (got, exact) in [
            (average.p50, 2.0),
            (average.p90, 3.0),
            (average.p95, 3.0),
            (average.p99, 3.0),
        ] {
            let got = got.expect("a percentile");
            assert!((got - exact).abs() <= 0.01 * exact, "{got} vs {exact}");
        }
        // A single value: its bin's estimate is kept within [min, max], so exact.
        let single = ClosedWindow {
            aggregate: Aggregate {
                sketch: Some(Box::new({
                    let mut s = crate::window::sketch::Sketch::default();
                    s.add(&spec, 7.3);
                    s
                })),
                ..Aggregate::of(7.3, 0)
            },
            ..window
        };
        assert_eq!(average_of(&single, Some(&spec)).p99, Some(7.3));
        // Percentiles off: none, whatever the aggregate holds.
        assert_eq!(average_of(&single, None).p50, None);
    }
}

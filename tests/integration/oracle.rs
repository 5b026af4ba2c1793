//! The oracle the processor tests share: the documented semantics recomputed the slow, obvious way
//! from the input as it sits in the topic, and assertions that compare a run's output, late and DLQ
//! topics with it. The datasets it judges are in `dataset.rs`.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::{types::Value as AvroValue, Schema};
use streamagg::codec::{Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};
use streamagg::reader::RawRecord;

use crate::common::read_all;
use crate::dataset::{index_of, Input};
use crate::scenario::Topics;

pub const WINDOW_MS: i64 = 60_000;
pub const GRACE_MS: i64 = 10_000;
pub const MIN_VALUE: f64 = 50.0;
/// The processor flags that give it the oracle's semantics (`MIN_VALUE`, `WINDOW_MS`, `GRACE_MS`),
/// plus a short checkpoint interval so tests see their output quickly.
pub const SEMANTICS_ARGS: [&str; 8] = [
    "--min-value",
    "50",
    "--window",
    "60s",
    "--grace",
    "10s",
    "--checkpoint-interval",
    "200ms",
];
/// A `source` longer than this (in UTF-8 bytes) is invalid input.
pub const MAX_SOURCE_BYTES: usize = 1024;

/// A decoded input as the oracle sees it: `None` for records the semantics call invalid.
pub fn parse_independently(format: Format, payload: &[u8]) -> Option<(String, i64, f64)> {
    let (source, timestamp, value) = match format {
        Format::AvroConfluent => {
            panic!("scenario datasets are JSON or raw Avro (avro-confluent: schema_registry.rs)")
        }
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
            (
                v.get("source")?.as_str()?.to_owned(),
                v.get("timestamp")?.as_i64()?,
                v.get("value")?.as_f64()?,
            )
        }
        Format::Avro => {
            let schema = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("schema");
            let mut reader = payload;
            let AvroValue::Record(fields) = GenericDatumReader::builder(&schema)
                .build()
                .expect("reader")
                .read_value(&mut reader)
                .ok()?
            else {
                return None;
            };
            if !reader.is_empty() {
                return None;
            }
            let mut it = fields.into_iter().map(|(_, v)| v);
            match (it.next()?, it.next()?, it.next()?) {
                (AvroValue::String(s), AvroValue::TimestampMillis(t), AvroValue::Double(v)) => {
                    (s, t, v)
                }
                _ => return None,
            }
        }
    };
    (!source.is_empty() && source.len() <= MAX_SOURCE_BYTES && value.is_finite())
        .then_some((source, timestamp, value))
}

#[derive(Debug, Default)]
pub struct Expected {
    /// (source, window_start) → (count, sum, min, max)
    pub windows: BTreeMap<(String, i64), (i64, f64, f64, f64)>,
    /// (source, window_start) → the window's values, in input order.
    pub values: BTreeMap<(String, i64), Vec<f64>>,
    pub late: BTreeSet<usize>,
    pub invalid: BTreeSet<usize>,
}

/// The documented semantics, computed the slow, obvious way from the records as they sit in the
/// input topic (partition, offset order): per-partition stream time, tumbling windows, grace,
/// filter before aggregation, late and invalid records set aside.
pub fn oracle(format: Format, inputs: &[Input], input_records: &[RawRecord]) -> Expected {
    let mut expected = Expected::default();
    let partitions: BTreeSet<i32> = input_records.iter().map(|r| r.partition).collect();
    for partition in partitions {
        let mut records: Vec<&RawRecord> = input_records
            .iter()
            .filter(|r| r.partition == partition)
            .collect();
        records.sort_by_key(|r| r.offset);
        let mut stream_time = i64::MIN;
        let mut open: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
        for record in records {
            let index = index_of(record);
            let Some((source, timestamp, value)) =
                parse_independently(format, &inputs[index].payload)
            else {
                expected.invalid.insert(index);
                continue;
            };
            if value < MIN_VALUE {
                continue;
            }
            stream_time = stream_time.max(timestamp);
            let window_start = timestamp.div_euclid(WINDOW_MS) * WINDOW_MS;
            if window_start + WINDOW_MS + GRACE_MS <= stream_time {
                expected.late.insert(index);
                continue;
            }
            open.entry((source, window_start)).or_default().push(value);
        }
        for ((source, window_start), values) in open {
            if window_start + WINDOW_MS + GRACE_MS <= stream_time {
                let sum: f64 = values.iter().sum();
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                expected.windows.insert(
                    (source.clone(), window_start),
                    (values.len() as i64, sum, min, max),
                );
                expected.values.insert((source, window_start), values);
            }
        }
    }
    expected
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// What a run promises about duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not one duplicate.
    ExactlyOnce,
    /// Duplicates allowed, but each byte-identical to the first emission.
    AtLeastOnce,
}

/// `records` with byte-identical copies (same key, payload and headers) removed under at-least-once.
fn deduplicated(records: Vec<RawRecord>, delivery: Delivery) -> Vec<RawRecord> {
    if delivery == Delivery::ExactlyOnce {
        return records;
    }
    let mut seen = BTreeSet::new();
    records
        .into_iter()
        .filter(|r| seen.insert((r.key.clone(), r.payload.clone(), r.headers.clone())))
        .collect()
}

/// The fields of a raw Avro output record, decoded with apache-avro's generic reader and
/// `schema` (`TRAFFIC_AVERAGE_SCHEMA`), independently of the codec under test.
pub fn avro_output_fields(schema: &Schema, payload: &[u8]) -> Vec<(String, AvroValue)> {
    let value = GenericDatumReader::builder(schema)
        .build()
        .expect("reader")
        .read_value(&mut &payload[..])
        .expect("avro output");
    let AvroValue::Record(fields) = value else {
        panic!("not a record")
    };
    fields
}

/// Field `name` of [`avro_output_fields`]' answer.
pub fn avro_field(fields: &[(String, AvroValue)], name: &str) -> AvroValue {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("field {name}"))
}

/// One output record's fields, decoded independently of the codec under test.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputWindow {
    pub source: String,
    pub start: i64,
    pub end: i64,
    pub count: i64,
    pub sum: f64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// Decodes an output payload in `format` (JSON with serde_json, raw Avro with apache-avro).
pub fn decode_output(format: Format, payload: &[u8]) -> OutputWindow {
    let schema = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA).expect("schema");
    let (source, start, end, count, sum, avg, min, max) = match format {
        Format::AvroConfluent => {
            panic!("scenario datasets are JSON or raw Avro (avro-confluent: schema_registry.rs)")
        }
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(payload).expect("json output");
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("field {k} in {v}"));
            let i = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("field {k} in {v}"));
            (
                v["source"].as_str().expect("source").to_owned(),
                i("window_start"),
                i("window_end"),
                i("count"),
                f("sum"),
                f("avg"),
                f("min"),
                f("max"),
            )
        }
        Format::Avro => {
            let fields = avro_output_fields(&schema, payload);
            let get = |name: &str| avro_field(&fields, name);
            let long = |name: &str| match get(name) {
                AvroValue::Long(l) | AvroValue::TimestampMillis(l) => l,
                other => panic!("{name}: {other:?}"),
            };
            let double = |name: &str| match get(name) {
                AvroValue::Double(d) => d,
                other => panic!("{name}: {other:?}"),
            };
            let AvroValue::String(source) = get("source") else {
                panic!("source")
            };
            (
                source,
                long("window_start"),
                long("window_end"),
                long("count"),
                double("sum"),
                double("avg"),
                double("min"),
                double("max"),
            )
        }
    };
    OutputWindow {
        source,
        start,
        end,
        count,
        sum,
        avg,
        min,
        max,
    }
}

/// The output topic equals the oracle: every window present with the oracle's values, none twice
/// (under at-least-once: none twice with different bytes).
pub fn assert_output_matches(
    format: Format,
    output: &[RawRecord],
    expected: &Expected,
    delivery: Delivery,
) {
    let output = deduplicated(output.to_vec(), delivery);
    let output = output.as_slice();
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for record in output {
        let payload = record.payload.as_deref().expect("payload");
        let OutputWindow {
            source,
            start,
            end,
            count,
            sum,
            avg,
            min,
            max,
        } = decode_output(format, payload);
        assert_eq!(
            record.key.as_deref(),
            Some(source.as_bytes()),
            "keyed by source"
        );
        assert_eq!(end, start + WINDOW_MS);
        *seen.entry((source.clone(), start)).or_default() += 1;
        let Some(&(e_count, e_sum, e_min, e_max)) = expected.windows.get(&(source.clone(), start))
        else {
            panic!("unexpected window ({source}, {start})");
        };
        assert_eq!(count, e_count, "count of ({source}, {start})");
        assert!(
            close(sum, e_sum),
            "sum of ({source}, {start}): {sum} vs {e_sum}"
        );
        assert!(
            close(avg, e_sum / e_count as f64),
            "avg of ({source}, {start})"
        );
        assert!(
            close(min, e_min) && close(max, e_max),
            "min/max of ({source}, {start})"
        );
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated windows: {duplicates:?}");
    let missing: Vec<_> = expected
        .windows
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} missing windows, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(output.len(), expected.windows.len());
}

pub fn assert_side_topic(
    topic: &str,
    expected: &BTreeSet<usize>,
    reason_prefix: &str,
    delivery: Delivery,
) {
    let records = deduplicated(read_all(topic), delivery);
    let got: BTreeSet<usize> = records.iter().map(index_of).collect();
    assert_eq!(got.len(), records.len(), "{topic}: duplicates");
    assert_eq!(&got, expected, "{topic}");
    for record in &records {
        let header = |name: &str| header(record, name);
        let reason = header("streamagg.error").expect("reason header");
        assert!(
            reason.starts_with(reason_prefix),
            "{topic}: reason {reason}"
        );
        assert_eq!(
            header("streamagg.partition"),
            Some(record_partition_in_input(record))
        );
        assert!(header("streamagg.offset").is_some() && header("streamagg.topic").is_some());
    }
}

/// The value of header `name` of `record`, as text.
pub fn header(record: &RawRecord, name: &str) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

pub fn record_partition_in_input(record: &RawRecord) -> String {
    // Forwarded records keep their key, so they land on the same partition number as in the input
    // (same partition count, same partitioner).
    record.partition.to_string()
}

/// Holds the output topic (`output`, as read), the late topic and the DLQ to `expected`.
pub fn assert_topics_match(
    format: Format,
    topics: &Topics,
    expected: &Expected,
    delivery: Delivery,
    output: &[RawRecord],
) {
    assert_output_matches(format, output, expected, delivery);
    assert_side_topic(&topics.late.name, &expected.late, "late", delivery);
    assert_side_topic(&topics.dlq.name, &expected.invalid, "", delivery);
    let input = read_all(&topics.input.name);
    assert_copies_keep_input_timestamps(&topics.late.name, &input);
    assert_copies_keep_input_timestamps(&topics.dlq.name, &input);
}

/// Every record forwarded to `topic` (late or DLQ, a copy or a marker) carries the Kafka timestamp
/// of the input record it stands for (found by its provenance headers among `input`), not the time
/// it was forwarded.
pub fn assert_copies_keep_input_timestamps(topic: &str, input: &[RawRecord]) {
    let input_timestamps: BTreeMap<(i32, i64), Option<i64>> = input
        .iter()
        .map(|r| ((r.partition, r.offset), r.timestamp))
        .collect();
    for record in read_all(topic) {
        let partition = header(&record, "streamagg.partition").and_then(|v| v.parse::<i32>().ok());
        let offset = header(&record, "streamagg.offset").and_then(|v| v.parse::<i64>().ok());
        let (Some(partition), Some(offset)) = (partition, offset) else {
            panic!("{topic}: a forwarded record without provenance: {record:?}");
        };
        assert_eq!(
            Some(&record.timestamp),
            input_timestamps.get(&(partition, offset)),
            "{topic}: the copy of input {partition}/{offset} keeps its timestamp"
        );
    }
}

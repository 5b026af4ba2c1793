//! The oracle the processor tests share: datasets encoded independently of the codec under test,
//! the documented semantics recomputed the slow, obvious way, and assertions that compare a run's
//! output, late and DLQ topics with it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{types::Value as AvroValue, Schema};
use rdkafka::message::{Header, OwnedHeaders};
use streamagg::codec::{Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};
use streamagg::generate::{GeneratorConfig, TrafficGenerator};
use streamagg::producer::RecordProducer;
use streamagg::reader::RawRecord;

use crate::common::{brokers, kafka_settings, read_all, ProcessorProcess, TestTopic};

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
pub const INDEX_HEADER: &str = "it.index";
/// A `source` longer than this (in UTF-8 bytes) is invalid input.
pub const MAX_SOURCE_BYTES: usize = 1024;
/// Where [`dataset`]'s event time starts (a window start).
pub const DATASET_START: i64 = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS;

/// One input record of a test dataset, encoded by the test itself (not by the codec under test).
pub struct Input {
    pub source: String,
    pub payload: Vec<u8>,
}

/// Encodes an event in `format` with serde_json / apache-avro's generic encoder.
pub fn encode_independently(format: Format, source: &str, timestamp: i64, value: f64) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(
            &serde_json::json!({"source": source, "timestamp": timestamp, "value": value}),
        )
        .expect("json"),
        Format::Avro => {
            let schema = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("schema");
            GenericDatumWriter::builder(&schema)
                .build()
                .expect("writer")
                .write_value_to_vec(AvroValue::Record(vec![
                    ("source".into(), AvroValue::String(source.into())),
                    ("timestamp".into(), AvroValue::TimestampMillis(timestamp)),
                    ("value".into(), AvroValue::Double(value)),
                ]))
                .expect("avro")
        }
    }
}

/// ≥ 50 sources, 12 minutes of event time, out-of-order within grace, late events beyond it, values
/// below the filter threshold, malformed records of several kinds, and a final far-future event per
/// source so every earlier window closes.
pub fn dataset(format: Format, seed: u64, events: i64) -> Vec<Input> {
    dataset_from(format, seed, events, DATASET_START)
}

/// [`dataset`] with its event time starting at `start` (a window start) instead of `DATASET_START`.
pub fn dataset_from(format: Format, seed: u64, events: i64, start: i64) -> Vec<Input> {
    let sources = 60;
    let mut generator = TrafficGenerator::new(GeneratorConfig {
        sources,
        seed,
        out_of_order_ms: 5_000,
        late_fraction: 0.03,
        late_by_ms: 120_000,
    });
    let mut inputs = Vec::new();
    // 12 minutes of event time, however many events
    let step = 720_000 / events.max(1);
    for i in 0..events {
        let base = start + 10_000 + i * step;
        let event = generator.next_event(base);
        if i % 97 == 13 {
            let bad: Vec<u8> = match (i / 97) % 4 {
                0 => b"\x00\xffnot a record".to_vec(),
                1 => encode_independently(format, "", event.timestamp, event.value),
                2 => match format {
                    Format::Json => br#"{"source":"x","timestamp":5}"#.to_vec(),
                    Format::Avro => {
                        encode_independently(format, &event.source, event.timestamp, f64::NAN)
                    }
                },
                _ => {
                    let mut cut =
                        encode_independently(format, &event.source, event.timestamp, event.value);
                    cut.truncate(cut.len() - 3);
                    cut
                }
            };
            inputs.push(Input {
                source: event.source.clone(),
                payload: bad,
            });
        }
        inputs.push(Input {
            payload: encode_independently(format, &event.source, event.timestamp, event.value),
            source: event.source,
        });
    }
    for s in 0..sources {
        let source = streamagg::generate::source_name(s);
        let payload = encode_independently(format, &source, start + 3_600_000, 100.0);
        inputs.push(Input { source, payload });
    }
    inputs
}

/// Writes `inputs[range]` keyed by source, each with a header carrying its index.
pub fn produce_inputs(topic: &str, inputs: &[Input], range: std::ops::Range<usize>) {
    produce_inputs_with_headers(topic, inputs, range, &Default::default(), |_, headers| {
        headers
    });
}

/// [`produce_inputs`] by a producer with librdkafka `properties`, with `extra` adding headers of its
/// own to record `index` after the index header.
pub fn produce_inputs_with_headers(
    topic: &str,
    inputs: &[Input],
    range: std::ops::Range<usize>,
    properties: &std::collections::BTreeMap<String, String>,
    extra: impl Fn(usize, OwnedHeaders) -> OwnedHeaders,
) {
    let mut producer =
        RecordProducer::connect(&kafka_settings(), "it-dataset", properties).expect("broker");
    for index in range {
        let headers = OwnedHeaders::new().insert(Header {
            key: INDEX_HEADER,
            value: Some(index.to_string().as_bytes()),
        });
        let headers = extra(index, headers);
        producer
            .send(
                topic,
                inputs[index].source.as_bytes(),
                &inputs[index].payload,
                Some(headers),
            )
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

pub fn index_of(record: &RawRecord) -> usize {
    let value = record
        .headers
        .iter()
        .find(|(k, _)| k == INDEX_HEADER)
        .map(|(_, v)| v.clone())
        .expect("index header");
    String::from_utf8(value)
        .expect("utf8")
        .parse()
        .expect("number")
}

/// A decoded input as the oracle sees it: `None` for records the semantics call invalid.
pub fn parse_independently(format: Format, payload: &[u8]) -> Option<(String, i64, f64)> {
    let (source, timestamp, value) = match format {
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
                expected
                    .windows
                    .insert((source, window_start), (values.len() as i64, sum, min, max));
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
    let schema = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA).expect("schema");
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for record in output {
        let payload = record.payload.as_deref().expect("payload");
        let (source, start, end, count, sum, avg, min, max) = match format {
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
                let value = GenericDatumReader::builder(&schema)
                    .build()
                    .expect("reader")
                    .read_value(&mut &payload[..])
                    .expect("avro output");
                let AvroValue::Record(fields) = value else {
                    panic!("not a record")
                };
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .expect(name)
                };
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

pub struct Topics {
    pub input: TestTopic,
    pub output: TestTopic,
    pub late: TestTopic,
    pub dlq: TestTopic,
}

impl Topics {
    pub fn create(purpose: &str, partitions: i32) -> Topics {
        Topics {
            input: TestTopic::create(&format!("{purpose}-in"), partitions),
            output: TestTopic::create(&format!("{purpose}-out"), partitions),
            late: TestTopic::create(&format!("{purpose}-late"), partitions),
            dlq: TestTopic::create(&format!("{purpose}-dlq"), partitions),
        }
    }

    pub fn args(&self, format: &str, group: &str, state_dir: &str) -> Vec<String> {
        [
            "--brokers",
            &brokers(),
            "--input",
            &self.input.name,
            "--output",
            &self.output.name,
            "--late-topic",
            &self.late.name,
            "--dlq-topic",
            &self.dlq.name,
            "--group",
            group,
            "--state-dir",
            state_dir,
            "--input-format",
            format,
            "--output-format",
            format,
        ]
        .into_iter()
        .chain(SEMANTICS_ARGS)
        .map(str::to_owned)
        .collect()
    }
}

/// Sets the value of `flag` in processor arguments: replaces the one after it, or appends both.
pub fn set_arg(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_owned(),
        None => args.extend([flag.to_owned(), value.to_owned()]),
    }
}

/// JSON events `(key and source, timestamp, value)` as a dataset, encoded independently.
pub fn json_events(events: &[(&str, i64, f64)]) -> Vec<Input> {
    events
        .iter()
        .map(|&(source, timestamp, value)| Input {
            source: source.to_owned(),
            payload: encode_independently(Format::Json, source, timestamp, value),
        })
        .collect()
}

pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Avro => "avro",
    }
}

pub fn check_alive(processes: &mut [&mut ProcessorProcess]) {
    for p in processes.iter_mut() {
        if let Some(status) = p.exited() {
            panic!("processor exited early ({status}); log:\n{}", p.log());
        }
    }
}

/// Partitions (by number) a processor's log says it was assigned.
pub fn assigned_partitions(log: &str) -> BTreeSet<i32> {
    log.lines()
        .filter(|line| line.contains("assigned") && !line.contains("revoked"))
        .filter_map(|line| {
            line.split("partition=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Writes `inputs[range]` in `chunks` pieces with `pause` between them on a background thread, as
/// live upstream traffic would arrive (records keep their index in `inputs`).
pub fn produce_input_range_gradually(
    topic: String,
    inputs: std::sync::Arc<Vec<Input>>,
    range: std::ops::Range<usize>,
    chunks: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut producer =
            RecordProducer::connect(&kafka_settings(), "it-dataset", &Default::default())
                .expect("broker");
        let chunk = range.len().div_ceil(chunks.max(1)).max(1);
        let first = range.start;
        for (n, part) in inputs[range].chunks(chunk).enumerate() {
            for (i, input) in part.iter().enumerate() {
                let index = first + n * chunk + i;
                let headers = OwnedHeaders::new().insert(Header {
                    key: INDEX_HEADER,
                    value: Some(index.to_string().as_bytes()),
                });
                producer
                    .send(
                        &topic,
                        input.source.as_bytes(),
                        &input.payload,
                        Some(headers),
                    )
                    .expect("queued");
            }
            std::thread::sleep(pause);
        }
        producer.flush(Duration::from_secs(120)).expect("delivered");
    })
}

/// Waits until the output topic holds at least `count` records, failing fast if `processor` exits;
/// then expects it alive and the count reached within `deadline`. Returns the output as read.
pub fn wait_for_output(
    processor: &mut ProcessorProcess,
    topics: &Topics,
    count: usize,
    deadline: Duration,
) -> Vec<RawRecord> {
    let output = crate::common::wait_for_records(&topics.output.name, count, deadline, || {
        check_alive(&mut [&mut *processor])
    });
    processor.assert_alive();
    assert!(
        output.len() >= count,
        "{} of {count} output records within {deadline:?}; log:\n{}",
        output.len(),
        processor.log()
    );
    output
}

/// Waits until a processor's log says it owns partitions, failing fast if it exits.
pub fn wait_until_assigned(process: &mut ProcessorProcess, deadline: Duration) {
    let started = std::time::Instant::now();
    while assigned_partitions(&process.log()).is_empty() {
        check_alive(&mut [&mut *process]);
        assert!(
            started.elapsed() < deadline,
            "no partitions within {deadline:?}; log:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A consumer group name no other test uses.
pub fn random_group() -> String {
    format!("it-group-{:016x}", rand::random::<u64>())
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
}

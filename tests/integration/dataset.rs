//! The datasets the processor tests write: events encoded by the test itself (serde_json /
//! apache-avro's generic encoder, not the codec under test), seeded datasets with out-of-order, late
//! and malformed records, and producers that write them keyed by source with each record's index in
//! a header (so the oracle can tell which input a record came from).

use std::time::Duration;

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{types::Value as AvroValue, Schema};
use rdkafka::message::{Header, OwnedHeaders};
use streamagg::codec::{Format, TRAFFIC_EVENT_SCHEMA};
use streamagg::generate::{GeneratorConfig, TrafficGenerator};
use streamagg::producer::RecordProducer;
use streamagg::reader::RawRecord;

use crate::common::kafka_settings;
use crate::oracle::WINDOW_MS;

pub const INDEX_HEADER: &str = "it.index";

/// Where [`dataset`]'s event time starts (a window start).
pub const DATASET_START: i64 = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS;

/// A window start (a multiple of 60 s) for tests' hand-made events ([`json_events`]).
pub const T0: i64 = 1_700_000_040_000;

/// One input record of a test dataset, encoded by the test itself (not by the codec under test).
pub struct Input {
    pub source: String,
    pub payload: Vec<u8>,
}

/// Encodes an event in `format` with serde_json / apache-avro's generic encoder.
pub fn encode_independently(format: Format, source: &str, timestamp: i64, value: f64) -> Vec<u8> {
    match format {
        Format::AvroConfluent => {
            panic!("scenario datasets are JSON or raw Avro (avro-confluent: schema_registry.rs)")
        }
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
            let bad: Vec<u8> = match (i / 97) % 5 {
                0 => b"\x00\xffnot a record".to_vec(),
                1 => encode_independently(format, "", event.timestamp, event.value),
                2 => match format {
                    Format::Json => br#"{"source":"x","timestamp":5}"#.to_vec(),
                    Format::Avro | Format::AvroConfluent => {
                        encode_independently(format, &event.source, event.timestamp, f64::NAN)
                    }
                },
                3 => {
                    let mut cut =
                        encode_independently(format, &event.source, event.timestamp, event.value);
                    cut.truncate(cut.len() - 3);
                    cut
                }
                // The event's fields as a JSON array, in order: serde would read that as the
                // struct (found by the chaos soak).
                _ => serde_json::to_vec(&serde_json::json!([
                    event.source,
                    event.timestamp,
                    event.value
                ]))
                .expect("json"),
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

/// `count` bytes that are not JSON and do not compress.
pub fn incompressible(count: usize) -> Vec<u8> {
    let mut bytes = vec![0xff_u8; count];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[1..]);
    bytes
}

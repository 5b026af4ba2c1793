//! The per-record cost of decoding an input event, by input format: JSON, raw Avro (streamagg's own
//! schema: the direct decoder), registry-framed Avro of the same schema, registry-framed Avro of an
//! evolved writer schema (fields reordered, an optional field added, `value` a `float`: the
//! resolution plan), and apache-avro's generic resolving decoder for comparison. Pure CPU, no
//! broker. Prints ns/record, the median of `--runs` passes over `--records` pre-encoded events.
//!
//!   cargo run --release --example decode_cost -- [--records 1000000] [--runs 7]

use std::hint::black_box;
use std::time::Instant;

use apache_avro::types::Value;
use apache_avro::Schema;
use streamagg::codec::input::InputDecoder;
use streamagg::codec::{confluent, decode_event, encode_to_vec, Format, TRAFFIC_EVENT_SCHEMA};
use streamagg::model::TrafficEvent;

const EVOLVED: &str = r#"{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[
    {"name":"value","type":"float"},
    {"name":"region","type":["null","string"],"default":null},
    {"name":"source","type":"string"},
    {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

/// A row: its name, the payloads, and the decode that returns something to keep.
type Case<'a> = (&'a str, &'a [Vec<u8>], &'a dyn Fn(&[u8]) -> f64);

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut records, mut runs) = (1_000_000_usize, 7_usize);
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        let number = value
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: not a number"));
        match flag.as_str() {
            "--records" => records = number,
            "--runs" => runs = number,
            other => panic!("unknown flag {other}"),
        }
    }
    let events: Vec<TrafficEvent> = (0..records)
        .map(|i| TrafficEvent {
            source: format!("link-{:04}", i % 1000),
            timestamp: 1_764_000_000_000 + i as i64,
            value: (i % 400) as f64 * 0.25,
        })
        .collect();
    let framed = |id: u32, datum: Vec<u8>| {
        let mut out = Vec::with_capacity(datum.len() + 5);
        confluent::write_header(id, &mut out);
        out.extend_from_slice(&datum);
        out
    };
    let evolved = Schema::parse_str(EVOLVED).expect("schema");
    #[allow(deprecated)]
    let evolved_datum = |e: &TrafficEvent| {
        apache_avro::to_avro_datum(
            &evolved,
            Value::Record(vec![
                ("value".into(), Value::Float(e.value as f32)),
                (
                    "region".into(),
                    Value::Union(1, Box::new(Value::String("eu".into()))),
                ),
                ("source".into(), Value::String(e.source.clone())),
                ("timestamp".into(), Value::TimestampMillis(e.timestamp)),
            ]),
        )
        .expect("datum")
    };
    let json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| encode_to_vec(e, Format::Json))
        .collect();
    let avro: Vec<Vec<u8>> = events
        .iter()
        .map(|e| encode_to_vec(e, Format::Avro))
        .collect();
    let same: Vec<Vec<u8>> = avro.iter().map(|d| framed(1, d.clone())).collect();
    let evolved_raw: Vec<Vec<u8>> = events.iter().map(evolved_datum).collect();
    let evolved_framed: Vec<Vec<u8>> = evolved_raw.iter().map(|d| framed(2, d.clone())).collect();

    let raw_decoder = InputDecoder::new(Format::Avro, None);
    let mut registry_decoder = InputDecoder::new(Format::AvroConfluent, None);
    registry_decoder
        .learn(1, Ok(TRAFFIC_EVENT_SCHEMA))
        .expect("same schema");
    registry_decoder
        .learn(2, Ok(EVOLVED))
        .expect("evolved schema");
    let reader = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("schema");

    println!("| input | ns/record (median of {runs} x {records}) |");
    println!("|---|---:|");
    let cases: [Case<'_>; 6] = [
        ("json", &json, &|b| {
            decode_event(b, Format::Json).map_or(0.0, |e| e.value)
        }),
        (
            "avro, codec::decode_event (the decoder before issue 18)",
            &avro,
            &|b| decode_event(b, Format::Avro).map_or(0.0, |e| e.value),
        ),
        ("avro (raw, streamagg's schema: direct)", &avro, &|b| {
            raw_decoder.decode(b).map_or(0.0, |e| e.value)
        }),
        ("avro-confluent, same schema (direct)", &same, &|b| {
            registry_decoder.decode(b).map_or(0.0, |e| e.value)
        }),
        (
            "avro-confluent, evolved schema (plan)",
            &evolved_framed,
            &|b| registry_decoder.decode(b).map_or(0.0, |e| e.value),
        ),
        (
            "evolved, apache-avro generic resolution",
            &evolved_raw,
            &|b| {
                #[allow(deprecated)]
                let value = apache_avro::from_avro_datum(&evolved, &mut &b[..], Some(&reader));
                value.map_or(0.0, |_| 1.0)
            },
        ),
    ];
    for (name, payloads, decode) in cases {
        let passes = if name.contains("apache") {
            runs.min(3)
        } else {
            runs
        };
        let mut times: Vec<f64> = (0..passes)
            .map(|_| {
                let started = Instant::now();
                let mut sum = 0.0;
                for payload in payloads {
                    sum += decode(black_box(payload));
                }
                black_box(sum);
                started.elapsed().as_nanos() as f64 / payloads.len() as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("| {name} | {:.1} |", times[times.len() / 2]);
    }
}

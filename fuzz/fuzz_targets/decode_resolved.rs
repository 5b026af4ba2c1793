//! Any bytes as a registry-framed `TrafficEvent` of one of a few evolved writer schemas: the
//! planned resolution never panics (nor loops on hostile block counts), and every event it accepts
//! is the one `apache-avro`'s own schema resolution reads from the same datum.
#![no_main]

use apache_avro::types::Value;
use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use streamagg::codec::input::InputDecoder;
use streamagg::codec::{Format, TRAFFIC_EVENT_SCHEMA};

/// Writer schemas by registry id 1..: fields skipped of every kind, unions, promotions.
const WRITERS: [&str; 3] = [
    r#"{"type":"record","name":"E","fields":[{"name":"value","type":"float"},
        {"name":"region","type":["null","string"],"default":null},
        {"name":"source","type":"string"},{"name":"timestamp","type":"int"}]}"#,
    r#"{"type":"record","name":"E","fields":[{"name":"source","type":["null","bytes"]},
        {"name":"tags","type":{"type":"array","items":{"type":"map","values":"long"}}},
        {"name":"timestamp","type":"long"},{"name":"value","type":["null","long","double"]}]}"#,
    r#"{"type":"record","name":"E","fields":[{"name":"m","type":{"type":"record","name":"M","fields":[
        {"name":"f","type":{"type":"fixed","name":"F","size":2}},{"name":"k","type":{"type":"enum","name":"K","symbols":["A","B"]}},
        {"name":"b","type":"boolean"}]}},{"name":"again","type":["null","M"]},
        {"name":"source","type":"string"},{"name":"timestamp","type":"long"},{"name":"value","type":"double"}]}"#,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datum)) = data.split_first() else {
        return;
    };
    let id = u32::from(selector) % WRITERS.len() as u32 + 1;
    let mut decoder = InputDecoder::new(Format::AvroConfluent, None);
    decoder.learn(id, Ok(WRITERS[id as usize - 1])).expect("the writers resolve");
    let mut framed = vec![0, 0, 0, 0, id as u8];
    framed.extend_from_slice(datum);
    let Ok(event) = decoder.decode(&framed) else {
        return;
    };
    let writer = Schema::parse_str(WRITERS[id as usize - 1]).expect("schema");
    let reader = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("schema");
    let mut rest = datum;
    #[allow(deprecated)]
    let resolved = apache_avro::from_avro_datum(&writer, &mut rest, Some(&reader))
        .expect("apache-avro resolves a datum streamagg accepted");
    assert!(rest.is_empty(), "apache-avro left bytes streamagg consumed");
    let Value::Record(fields) = resolved else {
        panic!("not a record: {resolved:?}");
    };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(field("source"), Some(Value::String(event.source.into_owned())));
    match field("timestamp") {
        Some(Value::Long(t) | Value::TimestampMillis(t)) => assert_eq!(t, event.timestamp),
        other => panic!("timestamp {other:?}"),
    }
    match field("value") {
        Some(Value::Double(v)) => assert_eq!(v.to_bits(), event.value.to_bits()),
        other => panic!("value {other:?}"),
    }
});

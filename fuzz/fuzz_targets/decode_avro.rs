//! Any bytes as an Avro `TrafficEvent` / `TrafficAverage` datum: the hand-written hot-path decoder
//! never panics, agrees with `apache-avro`'s generic reader on every datum it accepts, and
//! re-encodes what it accepted to bytes that decode to the same record.
#![no_main]

use apache_avro::types::Value;
use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;
use streamagg::codec::{
    decode, encode_to_vec, Format, WireRecord, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA,
};
use streamagg::model::{TrafficAverage, TrafficEvent};

/// The record's fields as `apache-avro` values, in schema order.
trait AsAvroFields {
    fn fields(&self) -> Vec<Value>;
}

impl AsAvroFields for TrafficEvent {
    fn fields(&self) -> Vec<Value> {
        vec![
            Value::String(self.source.clone()),
            Value::Long(self.timestamp),
            Value::Double(self.value),
        ]
    }
}

impl AsAvroFields for TrafficAverage {
    fn fields(&self) -> Vec<Value> {
        vec![
            Value::String(self.source.clone()),
            Value::Long(self.window_start),
            Value::Long(self.window_end),
            Value::Long(self.count),
            Value::Double(self.sum),
            Value::Double(self.avg),
            Value::Double(self.min),
            Value::Double(self.max),
            optional_double(self.p50),
            optional_double(self.p90),
            optional_double(self.p95),
            optional_double(self.p99),
        ]
    }
}

fn optional_double(value: Option<f64>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Double(v))),
    }
}

/// `TrafficAverage` before its percentile fields: streamagg reads such datums too (the fields null).
const TRAFFIC_AVERAGE_SCHEMA_BEFORE_PERCENTILES: &str = r#"{"type": "record", "name": "TrafficAverage", "fields": [
    {"name": "source", "type": "string"},
    {"name": "window_start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "window_end", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "count", "type": "long"}, {"name": "sum", "type": "double"},
    {"name": "avg", "type": "double"}, {"name": "min", "type": "double"},
    {"name": "max", "type": "double"}]}"#;

/// Doubles compared by bits, so NaN payloads count as equal to themselves; a `timestamp-millis`
/// long (how apache-avro reads the schemas' logical type) as the long it is on the wire.
fn same(theirs: &Value, ours: &Value) -> bool {
    match (theirs, ours) {
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        (Value::TimestampMillis(x), Value::Long(y)) => x == y,
        (Value::Union(i, x), Value::Union(j, y)) => i == j && same(x, y),
        _ => theirs == ours,
    }
}

/// `data` as streamagg decodes it equals what apache-avro reads with one of `schema_texts` (the
/// current schema first, then earlier ones streamagg still reads); fields an earlier schema lacks
/// are null.
fn check<R: WireRecord + AsAvroFields>(data: &[u8], schema_texts: &[&str]) {
    let Ok(record) = decode::<R>(data, Format::Avro) else {
        return;
    };
    let read_whole = |text: &&str| {
        let schema = Schema::parse_str(text).expect("embedded schema parses");
        let mut reader = data;
        let generic = apache_avro::from_avro_datum(&schema, &mut reader, None).ok()?;
        reader.is_empty().then_some(generic)
    };
    let generic = schema_texts
        .iter()
        .find_map(read_whole)
        .expect("apache-avro reads the whole of a datum streamagg accepted");
    let Value::Record(fields) = generic else {
        panic!("apache-avro read a non-record: {generic:?}");
    };
    let ours = record.fields();
    assert!(fields.len() <= ours.len());
    for ((name, theirs), mine) in fields.iter().zip(&ours) {
        assert!(same(theirs, mine), "field {name}: apache-avro {theirs:?}, streamagg {mine:?}");
    }
    for absent in &ours[fields.len()..] {
        assert_eq!(absent, &Value::Union(0, Box::new(Value::Null)));
    }
    let encoded = encode_to_vec(&record, Format::Avro);
    let again = decode::<R>(&encoded, Format::Avro).expect("re-encoded datum decodes");
    assert_eq!(encode_to_vec(&again, Format::Avro), encoded, "Avro round trip changed the record");
}

fuzz_target!(|data: &[u8]| {
    check::<TrafficEvent>(data, &[TRAFFIC_EVENT_SCHEMA]);
    check::<TrafficAverage>(
        data,
        &[TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_AVERAGE_SCHEMA_BEFORE_PERCENTILES],
    );
});

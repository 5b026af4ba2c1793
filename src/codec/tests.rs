//! Tests of [`super`] (codec).

use super::*;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{types::Value, Schema};
use proptest::prelude::*;

fn to_avro_datum(schema: &Schema, value: Value) -> apache_avro::AvroResult<Vec<u8>> {
    GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)
}

fn from_avro_datum(schema: &Schema, bytes: &mut &[u8]) -> apache_avro::AvroResult<Value> {
    GenericDatumReader::builder(schema)
        .build()?
        .read_value(bytes)
}

fn event(source: &str, timestamp: i64, value: f64) -> TrafficEvent {
    TrafficEvent {
        source: source.to_owned(),
        timestamp,
        value,
    }
}

fn event_value(e: &TrafficEvent) -> Value {
    Value::Record(vec![
        ("source".into(), Value::String(e.source.clone())),
        ("timestamp".into(), Value::TimestampMillis(e.timestamp)),
        ("value".into(), Value::Double(e.value)),
    ])
}

fn average_value(a: &TrafficAverage) -> Value {
    Value::Record(vec![
        ("source".into(), Value::String(a.source.clone())),
        (
            "window_start".into(),
            Value::TimestampMillis(a.window_start),
        ),
        ("window_end".into(), Value::TimestampMillis(a.window_end)),
        ("count".into(), Value::Long(a.count)),
        ("sum".into(), Value::Double(a.sum)),
        ("avg".into(), Value::Double(a.avg)),
        ("min".into(), Value::Double(a.min)),
        ("max".into(), Value::Double(a.max)),
        ("p50".into(), optional_double(a.p50)),
        ("p90".into(), optional_double(a.p90)),
        ("p95".into(), optional_double(a.p95)),
        ("p99".into(), optional_double(a.p99)),
    ])
}

fn optional_double(value: Option<f64>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Double(v))),
    }
}

/// `schemas/traffic_average.avsc` as it was before percentiles: what existing consumers hold.
const TRAFFIC_AVERAGE_SCHEMA_BEFORE_PERCENTILES: &str = r#"{"type": "record", "name": "TrafficAverage", "namespace": "streamagg", "fields": [
    {"name": "source", "type": "string"},
    {"name": "window_start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "window_end", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "count", "type": "long"}, {"name": "sum", "type": "double"},
    {"name": "avg", "type": "double"}, {"name": "min", "type": "double"},
    {"name": "max", "type": "double"}]}"#;

/// apache-avro's schema resolution: a datum written with `writer`, read as `reader`.
fn resolve(writer: &Schema, reader: &Schema, bytes: &[u8]) -> apache_avro::AvroResult<Value> {
    GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()?
        .read_value(&mut &bytes[..])
}

fn average(percentiles: Option<[f64; 4]>) -> TrafficAverage {
    let p = |i: usize| percentiles.map(|p| p[i]);
    TrafficAverage {
        source: "core-router-1".into(),
        window_start: 1_700_000_040_000,
        window_end: 1_700_000_100_000,
        count: 300,
        sum: 4567.125,
        avg: 15.22375,
        min: -2.0,
        max: 99.5,
        p50: p(0),
        p90: p(1),
        p95: p(2),
        p99: p(3),
    }
}

fn events() -> Vec<TrafficEvent> {
    vec![
        event("a", 0, 0.0),
        event("link-7/eth0", 1_700_000_000_123, 12.5),
        event("ünïcødé ☃", -1, -3.25e-300),
        event(&"x".repeat(300), i64::MAX, f64::MAX),
        event("min", i64::MIN, f64::MIN_POSITIVE),
        event("63", 63, 1.0),
        event("64", 64, 1.0),
        event("-65", -65, 1.0),
    ]
}

#[test]
fn avro_event_bytes_equal_apache_avro_generic_encoder() {
    let schema = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("embedded schema parses");
    for e in events() {
        let expected = to_avro_datum(&schema, event_value(&e)).expect("apache-avro encodes");
        assert_eq!(encode_to_vec(&e, Format::Avro), expected, "{e:?}");
        let generic =
            from_avro_datum(&schema, &mut expected.as_slice()).expect("apache-avro decodes");
        assert_eq!(generic, event_value(&e));
        assert_eq!(decode::<TrafficEvent>(&expected, Format::Avro), Ok(e));
    }
}

#[test]
fn avro_average_bytes_equal_apache_avro_generic_encoder() {
    let schema = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA).expect("embedded schema parses");
    let mut partly = average(Some([10.0, 90.5, -0.0, f64::MAX]));
    partly.p95 = None;
    for a in [
        average(None),
        average(Some([10.0, 90.5, 95.25, 99.0])),
        partly,
    ] {
        let expected = to_avro_datum(&schema, average_value(&a)).expect("apache-avro encodes");
        assert_eq!(encode_to_vec(&a, Format::Avro), expected, "{a:?}");
        let generic =
            from_avro_datum(&schema, &mut expected.as_slice()).expect("apache-avro decodes");
        assert_eq!(generic, average_value(&a));
        assert_eq!(decode::<TrafficAverage>(&expected, Format::Avro), Ok(a));
    }
    let mut bad_branch = encode_to_vec(&average(None), Format::Avro);
    let last = bad_branch.len() - 1;
    bad_branch[last] = 4; // union branch 2 of 2
    assert!(decode::<TrafficAverage>(&bad_branch, Format::Avro).is_err());
}

/// The percentile fields are a backward- and forward-compatible change: a consumer holding the
/// schema before them reads new records (apache-avro's schema resolution, old schema as reader),
/// and one holding the new schema reads records written before them (the fields default to null).
#[test]
fn old_and_new_average_schemas_read_each_others_records() {
    let new = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA).expect("embedded schema parses");
    let old = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA_BEFORE_PERCENTILES).expect("old parses");
    let old_fields = |v: &Value| match v {
        Value::Record(fields) => fields[..8].to_vec(),
        other => panic!("not a record: {other:?}"),
    };
    for a in [average(None), average(Some([10.0, 90.5, 95.25, 99.0]))] {
        let bytes = encode_to_vec(&a, Format::Avro);
        let read = resolve(&new, &old, &bytes).expect("the old schema reads a new record");
        assert_eq!(read, Value::Record(old_fields(&average_value(&a))));
    }
    let old_record = Value::Record(old_fields(&average_value(&average(None))));
    let old_bytes = to_avro_datum(&old, old_record).expect("apache-avro encodes");
    let read = resolve(&old, &new, &old_bytes).expect("the new schema reads an old record");
    assert_eq!(read, average_value(&average(None)));
    // streamagg's own decoder reads an old record as the new schema's reader does.
    assert_eq!(
        decode::<TrafficAverage>(&old_bytes, Format::Avro),
        Ok(average(None))
    );
    // JSON: the fields are left out when absent, so output without percentiles is unchanged.
    let json: serde_json::Value =
        serde_json::from_slice(&encode_to_vec(&average(None), Format::Json)).expect("json");
    assert_eq!(json.as_object().expect("object").len(), 8);
    assert!(json.get("p50").is_none());
    let json: serde_json::Value = serde_json::from_slice(&encode_to_vec(
        &average(Some([1.0, 2.0, 3.0, 4.0])),
        Format::Json,
    ))
    .expect("json");
    assert_eq!(json["p99"], serde_json::json!(4.0));
    assert_eq!(
        decode::<TrafficAverage>(&encode_to_vec(&average(None), Format::Json), Format::Json),
        Ok(average(None))
    );
}

#[test]
fn json_uses_the_schema_field_names_and_integer_millis() {
    let e = event("s1", 1_700_000_000_000, 2.5);
    let json: serde_json::Value =
        serde_json::from_slice(&encode_to_vec(&e, Format::Json)).expect("valid JSON");
    assert_eq!(
        json,
        serde_json::json!({"source": "s1", "timestamp": 1_700_000_000_000_i64, "value": 2.5})
    );
    for e in events() {
        assert_eq!(
            decode::<TrafficEvent>(&encode_to_vec(&e, Format::Json), Format::Json),
            Ok(e)
        );
    }
}

/// Found by fuzzing: serde_json's default float parser may miss the nearest double by one ULP
/// for long decimals, so a value did not survive encode → decode. The oracle is the standard
/// library's correctly rounded parser.
#[test]
fn json_values_are_the_correctly_rounded_double_of_their_text() {
    for text in [
        "444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444440.0",
        "0.30000000000000004",
        "2.2250738585072011e-308",
        "9007199254740993",
        "1.7976931348623157e308",
        "747.105",
    ] {
        let json = format!(r#"{{"source":"s","timestamp":0,"value":{text}}}"#);
        let event: TrafficEvent = decode(json.as_bytes(), Format::Json).expect(text);
        let nearest: f64 = text.parse().expect("a float");
        assert_eq!(event.value.to_bits(), nearest.to_bits(), "{text}");
        let again: TrafficEvent =
            decode(&encode_to_vec(&event, Format::Json), Format::Json).expect("round trip");
        assert_eq!(again, event, "{text}");
    }
}

#[test]
fn json_ignores_unknown_fields() {
    let bytes = br#"{"value": 1.5, "unit": "Mbit/s", "source": "s", "timestamp": 7}"#;
    assert_eq!(
        decode::<TrafficEvent>(bytes, Format::Json),
        Ok(event("s", 7, 1.5))
    );
}

#[test]
fn rejects_bad_input_with_a_reason() {
    let mut good_avro = encode_to_vec(&event("s", 1, 1.0), Format::Avro);
    let mut nan_avro = Vec::new();
    event("s", 1, f64::NAN).write_avro(&mut nan_avro);
    let mut inf_avro = Vec::new();
    event("s", 1, f64::INFINITY).write_avro(&mut inf_avro);
    let mut empty_avro = Vec::new();
    event("", 1, 1.0).write_avro(&mut empty_avro);
    let truncated = good_avro[..good_avro.len() - 1].to_vec();
    good_avro.push(0);
    let trailing = good_avro;

    let cases: Vec<(&str, Vec<u8>, Format, DecodeError)> = vec![
        (
            "empty payload, avro",
            vec![],
            Format::Avro,
            DecodeError::Avro("truncated long"),
        ),
        (
            "truncated double",
            truncated,
            Format::Avro,
            DecodeError::Avro("truncated double"),
        ),
        (
            "trailing byte",
            trailing,
            Format::Avro,
            DecodeError::Avro("trailing bytes after the record"),
        ),
        (
            "string longer than payload",
            vec![0x10, b'a'],
            Format::Avro,
            DecodeError::Avro("truncated string"),
        ),
        (
            "negative string length",
            vec![0x01],
            Format::Avro,
            DecodeError::Avro("negative string length"),
        ),
        (
            "invalid utf-8",
            vec![0x02, 0xff],
            Format::Avro,
            DecodeError::Avro("string is not UTF-8"),
        ),
        (
            "overlong varint",
            vec![0xff; 11],
            Format::Avro,
            DecodeError::Avro("long overflows 64 bits"),
        ),
        (
            "NaN value, avro",
            nan_avro,
            Format::Avro,
            DecodeError::NonFiniteValue,
        ),
        (
            "infinite value, avro",
            inf_avro,
            Format::Avro,
            DecodeError::NonFiniteValue,
        ),
        (
            "empty source, avro",
            empty_avro,
            Format::Avro,
            DecodeError::EmptySource,
        ),
        (
            "empty source, json",
            br#"{"source":"","timestamp":1,"value":1}"#.to_vec(),
            Format::Json,
            DecodeError::EmptySource,
        ),
        (
            "source one byte too long, json",
            format!(
                r#"{{"source":"{}","timestamp":1,"value":1}}"#,
                "é".repeat(512) + "x"
            )
            .into_bytes(),
            Format::Json,
            DecodeError::SourceTooLong,
        ),
        (
            "600,000-byte source, avro",
            encode_to_vec(
                &TrafficEvent {
                    source: "x".repeat(600_000),
                    timestamp: 1,
                    value: 1.0,
                },
                Format::Avro,
            ),
            Format::Avro,
            DecodeError::SourceTooLong,
        ),
    ];
    for (name, bytes, format, expected) in cases {
        assert_eq!(
            decode::<TrafficEvent>(&bytes, format),
            Err(expected),
            "{name}"
        );
    }

    let json_failures: &[(&str, &[u8])] = &[
        ("missing value", br#"{"source":"s","timestamp":1}"#),
        (
            "string timestamp",
            br#"{"source":"s","timestamp":"1","value":1}"#,
        ),
        (
            "fractional timestamp",
            br#"{"source":"s","timestamp":1.5,"value":1}"#,
        ),
        (
            "value out of f64 range",
            br#"{"source":"s","timestamp":1,"value":1e400}"#,
        ),
        ("not an object", b"[1,2,3]"),
        ("not JSON", b"\x00\x01garbage"),
    ];
    for (name, bytes) in json_failures {
        assert!(
            matches!(
                decode::<TrafficEvent>(bytes, Format::Json),
                Err(DecodeError::Json(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn encode_appends_so_one_buffer_serves_many_records() {
    let mut buf = Vec::new();
    encode(&event("a", 1, 1.0), Format::Avro, &mut buf);
    let first = buf.len();
    encode(&event("b", 2, 2.0), Format::Avro, &mut buf);
    assert_eq!(
        decode::<TrafficEvent>(&buf[first..], Format::Avro),
        Ok(event("b", 2, 2.0))
    );
}

#[test]
fn a_source_of_exactly_the_limit_is_accepted_in_both_formats() {
    let event = TrafficEvent {
        source: "é".repeat(MAX_SOURCE_BYTES / 2),
        timestamp: 1,
        value: 1.0,
    };
    assert_eq!(event.source.len(), MAX_SOURCE_BYTES);
    for format in [Format::Json, Format::Avro] {
        assert_eq!(
            decode::<TrafficEvent>(&encode_to_vec(&event, format), format),
            Ok(event.clone()),
            "{format:?}"
        );
    }
}

/// JSON texts of events, valid and not: escapes in the source, other field orders, unknown and
/// duplicate fields, wrong types, truncation.
fn json_event_texts() -> impl Strategy<Value = Vec<u8>> {
    let source = prop_oneof![
        "[a-z0-9]{0,4}".prop_map(|s| format!("\"{s}\"")),
        Just(r#""a\"b\\c\u00e9\n""#.to_owned()),
        Just("\"é\"".to_owned()),
        Just("7".to_owned()),
        Just("null".to_owned()),
    ];
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just("1e999".to_owned()),
        Just("\"3\"".to_owned()),
    ];
    (
        source,
        number.clone(),
        number,
        0..4usize,
        any::<bool>(),
        0..64usize,
    )
        .prop_map(|(source, timestamp, value, shape, extra, cut)| {
            let mut fields = vec![
                format!(r#""source":{source}"#),
                format!(r#""timestamp":{timestamp}"#),
                format!(r#""value":{value}"#),
            ];
            match shape {
                0 => {}
                1 => fields.reverse(),
                2 => fields.push(format!(r#""source":{source}"#)),
                _ => {
                    fields.pop();
                }
            }
            if extra {
                fields.insert(1, r#""site":{"x":[1,2]}"#.to_owned());
            }
            let text = format!("{{{}}}", fields.join(","));
            let keep = if cut < 8 {
                text.len().saturating_sub(cut)
            } else {
                text.len()
            };
            text.as_bytes()[..keep].to_vec()
        })
}

proptest! {
    /// The processor's in-place decode is the owned decode: the same record or the same error, for
    /// any input, in both formats.
    #[test]
    fn the_in_place_event_decode_agrees_with_the_owned_one(
        json in json_event_texts(),
        raw in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        for (bytes, format) in [(&json, Format::Json), (&raw, Format::Json), (&raw, Format::Avro)] {
            let owned = decode::<TrafficEvent>(bytes, format);
            let in_place = decode_event(bytes, format).map(EventView::into_owned);
            prop_assert_eq!(in_place, owned);
        }
    }
}

#[test]
fn the_in_place_decode_borrows_the_source_unless_it_has_escapes() {
    let plain = br#"{"source":"link-1","timestamp":5,"value":1.5}"#;
    assert!(matches!(
        decode_event(plain, Format::Json).map(|e| e.source),
        Ok(Cow::Borrowed("link-1"))
    ));
    let escaped = br#"{"source":"link\u002d1","timestamp":5,"value":1.5}"#;
    let event = decode_event(escaped, Format::Json).map(|e| e.source);
    assert!(
        matches!(event, Ok(Cow::Owned(ref s)) if s == "link-1"),
        "{event:?}"
    );
    let avro = encode_to_vec(&event_of("link-1"), Format::Avro);
    assert!(matches!(
        decode_event(&avro, Format::Avro).map(|e| e.source),
        Ok(Cow::Borrowed("link-1"))
    ));
}

fn event_of(source: &str) -> TrafficEvent {
    event(source, 5, 1.5)
}

/// A record is a JSON object: serde would also read a struct from an array of its field values in
/// order, which would let `["a",1700000001000,7.0]` count as an event (the chaos soak found it).
#[test]
fn a_json_array_of_the_field_values_is_not_a_record() {
    for text in [
        r#"["a",1700000001000,7.0]"#,
        r#" ["a",1700000001000,7.0]"#,
        r#"[]"#,
        r#""a""#,
        r#"7"#,
        "",
    ] {
        let bytes = text.as_bytes();
        assert!(
            decode_event(bytes, Format::Json).is_err(),
            "{text:?} as a view"
        );
        assert!(
            decode::<TrafficEvent>(bytes, Format::Json).is_err(),
            "{text:?} as an event"
        );
    }
    let error = decode_event(br#"["a",1700000001000,7.0]"#, Format::Json)
        .expect_err("an array")
        .to_string();
    assert!(error.contains("not a JSON object"), "{error}");
    assert!(decode_event(
        b" \n{\"source\":\"a\",\"timestamp\":1,\"value\":2.0}",
        Format::Json
    )
    .is_ok());
}

//! The plan against `apache-avro`'s own schema resolution, over a table of evolutions.
#![allow(deprecated)] // apache-avro's datum functions: the reference, whatever their successor's name

use apache_avro::types::Value;
use apache_avro::{from_avro_datum, to_avro_datum, Schema};
use proptest::prelude::*;

use super::*;
use crate::codec::TRAFFIC_EVENT_SCHEMA;

/// What a case writes for one event (source, timestamp, value).
type Build = fn(&str, i64, f64) -> Value;

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

/// The event `apache-avro` resolves, or its error as `None`.
fn reference(writer: &Schema, reader: &Schema, bytes: &[u8]) -> Option<(String, i64, f64)> {
    let Value::Record(fields) = from_avro_datum(writer, &mut &bytes[..], Some(reader)).ok()? else {
        return None;
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let source = match get("source")? {
        Value::String(text) => text,
        _ => return None,
    };
    let timestamp = match get("timestamp")? {
        Value::Long(t) | Value::TimestampMillis(t) => t,
        _ => return None,
    };
    let value = match get("value")? {
        Value::Double(v) => v,
        _ => return None,
    };
    Some((source, timestamp, value))
}

const WRITER_FIELDS_OK: &[(&str, &str, Build)] = &[
    (
        "added optional field with a default, reordered",
        r#"{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[
            {"name":"value","type":"double"},
            {"name":"region","type":["null","string"],"default":null},
            {"name":"source","type":"string"},
            {"name":"timestamp","type":"long"}]}"#,
        |src, ts, v| {
            record(vec![
                ("value", Value::Double(v)),
                ("region", Value::Union(1, Box::new(s("eu")))),
                ("source", s(src)),
                ("timestamp", Value::Long(ts)),
            ])
        },
    ),
    (
        "promoted: timestamp int, value float",
        r#"{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[
            {"name":"source","type":"string"},
            {"name":"timestamp","type":"int"},
            {"name":"value","type":"float"}]}"#,
        |src, ts, v| {
            record(vec![
                ("source", s(src)),
                ("timestamp", Value::Int(ts as i32)),
                ("value", Value::Float(v as f32)),
            ])
        },
    ),
    (
        "promoted: value int and long",
        r#"{"type":"record","name":"Other","fields":[
            {"name":"source","type":"bytes"},
            {"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"n","type":"long"},
            {"name":"value","type":"int"}]}"#,
        |src, ts, v| {
            record(vec![
                ("source", Value::Bytes(src.as_bytes().to_vec())),
                ("timestamp", Value::TimestampMillis(ts)),
                ("n", Value::Long(-5)),
                ("value", Value::Int(v as i32)),
            ])
        },
    ),
    (
        "unions with null around read fields",
        r#"{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[
            {"name":"source","type":["string","null"]},
            {"name":"timestamp","type":["null","long"],"default":null},
            {"name":"value","type":["null","float","double"],"default":null}]}"#,
        |src, ts, v| {
            record(vec![
                ("source", Value::Union(0, Box::new(s(src)))),
                ("timestamp", Value::Union(1, Box::new(Value::Long(ts)))),
                ("value", Value::Union(2, Box::new(Value::Double(v)))),
            ])
        },
    ),
    (
        "writer-only fields of every kind are skipped",
        r#"{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[
            {"name":"flag","type":"boolean"},
            {"name":"source","type":"string"},
            {"name":"meta","type":{"type":"record","name":"Meta","fields":[
                {"name":"tags","type":{"type":"array","items":{"type":"map","values":"string"}}},
                {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
                {"name":"hash","type":{"type":"fixed","name":"Hash","size":3}},
                {"name":"f","type":"float"},
                {"name":"nothing","type":"null"}]}},
            {"name":"timestamp","type":"long"},
            {"name":"again","type":["null","Meta"]},
            {"name":"value","type":"double"}]}"#,
        |src, ts, v| {
            let meta = record(vec![
                (
                    "tags",
                    Value::Array(vec![
                        Value::Map([("k".to_owned(), s("v"))].into()),
                        Value::Map(Default::default()),
                    ]),
                ),
                ("kind", Value::Enum(1, "B".into())),
                ("hash", Value::Fixed(3, vec![1, 2, 3])),
                ("f", Value::Float(1.5)),
                ("nothing", Value::Null),
            ]);
            record(vec![
                ("flag", Value::Boolean(true)),
                ("source", s(src)),
                ("meta", meta.clone()),
                ("timestamp", Value::Long(ts)),
                ("again", Value::Union(1, Box::new(meta))),
                ("value", Value::Double(v)),
            ])
        },
    ),
];

#[test]
fn each_evolution_decodes_as_apache_avro_resolves_it() {
    let reader = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).unwrap();
    for (name, writer, build) in WRITER_FIELDS_OK {
        let writer = Schema::parse_str(writer).unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = Plan::compile(&writer, &reader).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!plan.is_direct(), "{name}");
        for (source, timestamp, value) in [("a", 60_000, 1.5), ("link-7", -3, -0.25), ("é", 0, 1e6)]
        {
            let bytes = to_avro_datum(&writer, build(source, timestamp, value)).unwrap();
            let ours = plan
                .decode(&bytes)
                .map(|e| (e.source.into_owned(), e.timestamp, e.value));
            assert_eq!(ours.ok(), reference(&writer, &reader, &bytes), "{name}");
            assert!(ours_is_some(&plan, &bytes), "{name}: decoded");
        }
    }
}

fn ours_is_some(plan: &Plan, bytes: &[u8]) -> bool {
    plan.decode(bytes).is_ok()
}

#[test]
fn the_readers_own_schema_is_the_direct_decoder() {
    let plan = Plan::compile_str(TRAFFIC_EVENT_SCHEMA, TRAFFIC_EVENT_SCHEMA).unwrap();
    assert_eq!(plan, Plan::DIRECT);
    // Formatting and docs do not matter: the canonical form does.
    let terse = r#"{"type":"record","name":"streamagg.TrafficEvent","fields":[{"name":"source","type":"string"},{"name":"timestamp","type":{"type":"long","logicalType":"timestamp-millis"}},{"name":"value","type":"double"}]}"#;
    assert_eq!(
        Plan::compile_str(terse, TRAFFIC_EVENT_SCHEMA).unwrap(),
        Plan::DIRECT
    );
}

#[test]
fn unresolvable_writer_schemas_name_the_field() {
    let fields = |fields: &str| format!(r#"{{"type":"record","name":"E","fields":[{fields}]}}"#);
    let ours = |timestamp: &str| {
        format!(
            r#"{{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[{{"name":"source","type":"string"}},{{"name":"timestamp","type":{timestamp}}},{{"name":"value","type":"double"}}]}}"#
        )
    };
    let cases = [
        (
            "source missing",
            fields(r#"{"name":"timestamp","type":"long"},{"name":"value","type":"double"}"#),
            "source",
            "missing from the writer schema and has no default",
        ),
        (
            "value is a string",
            fields(
                r#"{"name":"source","type":"string"},{"name":"timestamp","type":"long"},{"name":"value","type":"string"}"#,
            ),
            "value",
            "string or bytes",
        ),
        (
            "timestamp is a double",
            fields(
                r#"{"name":"source","type":"string"},{"name":"timestamp","type":"double"},{"name":"value","type":"double"}"#,
            ),
            "timestamp",
            "double",
        ),
        (
            "timestamp in micros",
            fields(
                r#"{"name":"source","type":"string"},{"name":"timestamp","type":{"type":"long","logicalType":"timestamp-micros"}},{"name":"value","type":"double"}"#,
            ),
            "timestamp",
            "timestamp-micros",
        ),
        // Named as ours: the canonical form drops `logicalType`, so it equals ours; still refused.
        (
            "timestamp in micros, named as ours",
            ours(r#"{"type":"long","logicalType":"timestamp-micros"}"#),
            "timestamp",
            "timestamp-micros",
        ),
        (
            "timestamp in nanos, named as ours",
            ours(r#"{"type":"long","logicalType":"timestamp-nanos"}"#),
            "timestamp",
            "timestamp-nanos",
        ),
        (
            "local timestamp in micros, named as ours",
            ours(r#"{"type":"long","logicalType":"local-timestamp-micros"}"#),
            "timestamp",
            "timestamp-micros",
        ),
        (
            "time in micros, named as ours",
            ours(r#"{"type":"long","logicalType":"time-micros"}"#),
            "timestamp",
            "logical type",
        ),
        (
            "time in millis, named as ours",
            ours(r#"{"type":"int","logicalType":"time-millis"}"#),
            "timestamp",
            "logical type",
        ),
        (
            "source an int",
            fields(
                r#"{"name":"source","type":"int"},{"name":"timestamp","type":"long"},{"name":"value","type":"double"}"#,
            ),
            "source",
            "int",
        ),
        (
            "value only null",
            fields(
                r#"{"name":"source","type":"string"},{"name":"timestamp","type":"long"},{"name":"value","type":["null","string"]}"#,
            ),
            "value",
            "no branch",
        ),
    ];
    for (name, writer, field, reason) in cases {
        match Plan::compile_str(&writer, TRAFFIC_EVENT_SCHEMA) {
            Err(PlanError::Field {
                field: f,
                reason: r,
            }) => {
                assert_eq!(f, field, "{name}");
                assert!(r.contains(reason) || r.contains("logical"), "{name}: {r}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(
        Plan::compile_str(r#""string""#, TRAFFIC_EVENT_SCHEMA),
        Err(PlanError::NotARecord)
    );
    assert!(matches!(
        Plan::compile_str("{", TRAFFIC_EVENT_SCHEMA),
        Err(PlanError::Invalid(_))
    ));
}

#[test]
fn reader_defaults_fill_what_the_writer_lacks_and_reader_aliases_match_writer_names() {
    let reader = r#"{"type":"record","name":"TrafficEvent","namespace":"streamagg","fields":[
        {"name":"source","type":"string"},
        {"name":"timestamp","type":"long","aliases":["ts"]},
        {"name":"value","type":"double","default":2.5}]}"#;
    let reader = Schema::parse_str(reader).unwrap();
    // A default, as apache-avro resolves it.
    let writer = Schema::parse_str(
        r#"{"type":"record","name":"E","fields":[
        {"name":"timestamp","type":"long"},{"name":"source","type":"string"}]}"#,
    )
    .unwrap();
    let plan = Plan::compile(&writer, &reader).unwrap();
    let bytes = to_avro_datum(
        &writer,
        record(vec![("timestamp", Value::Long(42)), ("source", s("a"))]),
    )
    .unwrap();
    let event = plan.decode(&bytes).unwrap();
    assert_eq!(
        (event.source.as_ref(), event.timestamp, event.value),
        ("a", 42, 2.5)
    );
    assert_eq!(
        reference(&writer, &reader, &bytes),
        Some(("a".to_owned(), 42, 2.5))
    );
    // An alias: the Avro specification's rule ("a reader field's aliases match writer field
    // names"), which apache-avro 0.22 does not implement (it finds no `timestamp`): Java's does.
    let writer = Schema::parse_str(
        r#"{"type":"record","name":"E","fields":[
        {"name":"ts","type":"long"},{"name":"source","type":"string"}]}"#,
    )
    .unwrap();
    let plan = Plan::compile(&writer, &reader).unwrap();
    let bytes = to_avro_datum(
        &writer,
        record(vec![("ts", Value::Long(42)), ("source", s("a"))]),
    )
    .unwrap();
    let event = plan.decode(&bytes).unwrap();
    assert_eq!(
        (event.source.as_ref(), event.timestamp, event.value),
        ("a", 42, 2.5)
    );
    assert_eq!(reference(&writer, &reader, &bytes), None);
}

#[test]
fn a_null_where_a_value_is_needed_and_broken_datums_are_record_errors() {
    let writer = r#"{"type":"record","name":"E","fields":[{"name":"source","type":"string"},
        {"name":"timestamp","type":"long"},{"name":"value","type":["null","double"]}]}"#;
    let plan = Plan::compile_str(writer, TRAFFIC_EVENT_SCHEMA).unwrap();
    let writer = Schema::parse_str(writer).unwrap();
    let null = to_avro_datum(
        &writer,
        record(vec![
            ("source", s("a")),
            ("timestamp", Value::Long(1)),
            ("value", Value::Union(0, Box::new(Value::Null))),
        ]),
    )
    .unwrap();
    assert_eq!(plan.decode(&null), Err(DecodeError::NullField("value")));
    assert_eq!(
        reference(
            &writer,
            &Schema::parse_str(TRAFFIC_EVENT_SCHEMA).unwrap(),
            &null
        ),
        None
    );
    let good = to_avro_datum(
        &writer,
        record(vec![
            ("source", s("a")),
            ("timestamp", Value::Long(1)),
            ("value", Value::Union(1, Box::new(Value::Double(3.0)))),
        ]),
    )
    .unwrap();
    for cut in 0..good.len() {
        assert!(plan.decode(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        plan.decode(&trailing),
        Err(DecodeError::Avro("trailing bytes after the record"))
    );
    let mut bad_branch = good;
    bad_branch[3] = 4; // union index 2: out of range
    assert!(plan.decode(&bad_branch).is_err());
}

#[test]
fn a_huge_block_count_of_a_skipped_array_is_refused_not_looped() {
    let writer = r#"{"type":"record","name":"E","fields":[{"name":"xs","type":{"type":"array","items":"long"}},
        {"name":"source","type":"string"},{"name":"timestamp","type":"long"},{"name":"value","type":"double"}]}"#;
    let plan = Plan::compile_str(writer, TRAFFIC_EVENT_SCHEMA).unwrap();
    let mut bytes = vec![0xfe, 0xff, 0xff, 0xff, 0x0f]; // count 2^31 - 1
    bytes.extend_from_slice(&[0; 12]);
    assert_eq!(
        plan.decode(&bytes),
        Err(DecodeError::Avro("block count exceeds the bytes left"))
    );
    // Null items take no bytes: any count is stepped over at once.
    let nulls = r#"{"type":"record","name":"E","fields":[{"name":"xs","type":{"type":"array","items":"null"}},
        {"name":"source","type":"string"},{"name":"timestamp","type":"long"},{"name":"value","type":"double"}]}"#;
    let plan = Plan::compile_str(nulls, TRAFFIC_EVENT_SCHEMA).unwrap();
    let mut bytes = vec![0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 2, b'a', 2];
    bytes.extend_from_slice(&1.0f64.to_le_bytes());
    assert_eq!(plan.decode(&bytes).map(|e| e.timestamp), Ok(1));
}

proptest! {
    #[test]
    fn every_evolution_decodes_random_events_as_apache_avro_does(
        case in 0..WRITER_FIELDS_OK.len(),
        source in "\\PC{0,12}",
        timestamp in any::<i32>(),
        value in any::<f32>().prop_filter("finite", |v| v.is_finite()),
    ) {
        let (name, writer, build) = WRITER_FIELDS_OK[case];
        let reader = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).unwrap();
        let writer = Schema::parse_str(writer).unwrap();
        let plan = Plan::compile(&writer, &reader).unwrap();
        let bytes = to_avro_datum(&writer, build(&source, i64::from(timestamp), f64::from(value))).unwrap();
        let ours = plan.decode(&bytes).map(|e| (e.source.into_owned(), e.timestamp, e.value));
        prop_assert_eq!(ours.ok(), reference(&writer, &reader, &bytes), "{}", name);
    }
}

/// Found by the `decode_resolved` fuzz target: a negative block count whose byte size (0) does
/// not hold its one item. apache-avro reads the items (and fails); the plan skipped the bytes the
/// size named and accepted the datum.
#[test]
fn a_block_whose_byte_size_disagrees_with_its_items_is_refused_as_apache_avro_refuses_it() {
    let writer = r#"{"type":"record","name":"E","fields":[{"name":"source","type":["null","bytes"]},
        {"name":"tags","type":{"type":"array","items":{"type":"map","values":"long"}}},
        {"name":"timestamp","type":"long"},{"name":"value","type":["null","long","double"]}]}"#;
    let plan = Plan::compile_str(writer, TRAFFIC_EVENT_SCHEMA).unwrap();
    let datum = [
        0x02, 0x02, 0x00, 0x01, 0x00, 0x00, 0x1a, 0x02, 0xff, 0xff, 0xff, 0x0a,
    ];
    let writer = Schema::parse_str(writer).unwrap();
    let reader = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).unwrap();
    assert_eq!(
        reference(&writer, &reader, &datum),
        None,
        "apache-avro refuses it"
    );
    assert!(plan.decode(&datum).is_err(), "{:?}", plan.decode(&datum));
    // A well-formed sized block (one map of one entry, 5 bytes) is read.
    let sized = [
        0x02, 0x02, b'a', 0x01, 0x0a, 0x02, 0x02, b'k', 0x06, 0x00, 0x00, 0x1a, 0x02, 0x04,
    ];
    let event = plan
        .decode(&sized)
        .map(|e| (e.source.into_owned(), e.timestamp, e.value));
    assert_eq!(event.clone().ok(), reference(&writer, &reader, &sized));
    assert_eq!(event, Ok(("a".to_owned(), 13, 2.0)));
}

/// Found by the `decode_resolved` fuzz target: a writer-only `string` that is not UTF-8 makes the
/// datum invalid Avro (apache-avro refuses it); the plan stepped over it as bytes.
#[test]
fn a_skipped_string_that_is_not_utf8_is_refused_as_apache_avro_refuses_it() {
    let writer = r#"{"type":"record","name":"E","fields":[{"name":"value","type":"float"},
        {"name":"region","type":["null","string"],"default":null},
        {"name":"note","type":"bytes"},
        {"name":"source","type":"string"},{"name":"timestamp","type":"int"}]}"#;
    let plan = Plan::compile_str(writer, TRAFFIC_EVENT_SCHEMA).unwrap();
    let (writer, reader) = (
        Schema::parse_str(writer).unwrap(),
        Schema::parse_str(TRAFFIC_EVENT_SCHEMA).unwrap(),
    );
    let datum = |region: u8| {
        [
            0, 0, 0x80, 0x3f, 0x02, 0x02, region, 0x02, 0xff, 0x02, b'a', 0x02,
        ]
    };
    for (region, accepted) in [(0xdb, false), (b'e', true)] {
        let ours = plan
            .decode(&datum(region))
            .map(|e| (e.source.into_owned(), e.timestamp, e.value));
        assert_eq!(
            ours.clone().ok(),
            reference(&writer, &reader, &datum(region)),
            "{region:#x}"
        );
        assert_eq!(ours.is_ok(), accepted, "{region:#x}: {ours:?}");
    }
}

/// Found by the `decode_resolved` fuzz target: a writer-only enum's index beyond its symbols makes
/// the datum invalid (apache-avro refuses it); the plan stepped over it as any varint.
#[test]
fn a_skipped_enum_index_beyond_its_symbols_is_refused_as_apache_avro_refuses_it() {
    let writer = r#"{"type":"record","name":"E","fields":[
        {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
        {"name":"source","type":"string"},{"name":"timestamp","type":"long"},{"name":"value","type":"long"}]}"#;
    let plan = Plan::compile_str(writer, TRAFFIC_EVENT_SCHEMA).unwrap();
    let (writer, reader) = (
        Schema::parse_str(writer).unwrap(),
        Schema::parse_str(TRAFFIC_EVENT_SCHEMA).unwrap(),
    );
    for (index, accepted) in [(0x02, true), (0x04, false), (0x01, false)] {
        let datum = [index, 0x02, b'a', 0x02, 0x04];
        let ours = plan
            .decode(&datum)
            .map(|e| (e.source.into_owned(), e.timestamp, e.value));
        assert_eq!(
            ours.clone().ok(),
            reference(&writer, &reader, &datum),
            "{index:#x}"
        );
        assert_eq!(ours.is_ok(), accepted, "{index:#x}: {ours:?}");
    }
}

/// Record types `T0`…`T{levels-1}`, each with 8 fields of the previous type, in a writer-only
/// field: 8^levels nodes if expanded in place.
fn exponential_writer(levels: usize) -> String {
    let mut inner =
        r#"{"type":"record","name":"T0","fields":[{"name":"f","type":"long"}]}"#.to_owned();
    for level in 1..levels {
        let previous = format!("T{}", level - 1);
        let fields: Vec<String> = (0..8)
            .map(|i| {
                let ty = if i == 0 {
                    inner.clone()
                } else {
                    format!(r#""{previous}""#)
                };
                format!(r#"{{"name":"f{i}","type":{ty}}}"#)
            })
            .collect();
        inner = format!(
            r#"{{"type":"record","name":"T{level}","fields":[{}]}}"#,
            fields.join(",")
        );
    }
    format!(
        r#"{{"type":"record","name":"E","fields":[{{"name":"source","type":"string"}},{{"name":"timestamp","type":"long"}},{{"name":"value","type":"double"}},{{"name":"big","type":{inner}}}]}}"#
    )
}

#[test]
fn a_writer_only_field_that_expands_exponentially_is_refused_quickly() {
    let started = std::time::Instant::now();
    match Plan::compile_str(&exponential_writer(10), TRAFFIC_EVENT_SCHEMA) {
        Err(PlanError::Invalid(reason)) => assert!(reason.contains("too large"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A modest nesting still plans.
    assert!(Plan::compile_str(&exponential_writer(3), TRAFFIC_EVENT_SCHEMA).is_ok());
}

#[test]
fn a_fixed_too_large_for_apache_avro_is_refused_not_a_panic() {
    for size in ["9223372036854775808", "18446744073709551615"] {
        let writer = format!(
            r#"{{"type":"record","name":"E","fields":[{{"name":"source","type":"string"}},{{"name":"timestamp","type":"long"}},{{"name":"value","type":"double"}},{{"name":"f","type":{{"type":"fixed","name":"F","size":{size}}}}}]}}"#
        );
        let plan = std::panic::catch_unwind(|| Plan::compile_str(&writer, TRAFFIC_EVENT_SCHEMA));
        assert!(
            matches!(plan, Ok(Err(PlanError::Invalid(_)))),
            "{size}: {plan:?}"
        );
    }
}

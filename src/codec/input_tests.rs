use super::*;
use crate::codec::{encode_to_vec, resolve::Plan};
use crate::model::TrafficEvent;
use std::time::Instant;

fn event() -> TrafficEvent {
    TrafficEvent {
        source: "a".into(),
        timestamp: 60_000,
        value: 2.0,
    }
}

fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    confluent::write_header(id, &mut out);
    out.extend_from_slice(datum);
    out
}

const NO_SOURCE: &str = r#"{"type":"record","name":"E","fields":[{"name":"timestamp","type":"long"},{"name":"value","type":"double"}]}"#;

#[test]
fn registry_ids_are_resolved_once_learned_and_unresolvable_ones_name_id_and_field() {
    let mut decoder = InputDecoder::new(Format::AvroConfluent, None);
    let datum = encode_to_vec(&event(), Format::Avro);
    let record = framed(7, &datum);
    assert_eq!(decoder.missing_schema(&record), Some(7));
    assert_eq!(
        decoder.missing_schema(b"not framed"),
        None,
        "a DLQ record, not a fetch"
    );
    assert_eq!(decoder.learn(7, Ok(TRAFFIC_EVENT_SCHEMA)), Ok(()));
    assert_eq!(decoder.missing_schema(&record), None);
    assert_eq!(
        decoder.decode(&record).map(EventView::into_owned),
        Ok(event())
    );

    assert!(decoder.learn(8, Ok(NO_SOURCE)).is_err());
    let reason = decoder.decode(&framed(8, &[])).unwrap_err().to_string();
    assert!(
        reason.contains("schema id 8") && reason.contains("`source`"),
        "{reason}"
    );
    assert!(decoder
        .learn(9, Err("the registry has no schema with this id".into()))
        .is_err());
    let reason = decoder.decode(&framed(9, &datum)).unwrap_err().to_string();
    assert!(
        reason.contains("schema id 9") && reason.contains("no schema"),
        "{reason}"
    );
    assert_eq!(decoder.decode(&datum), Err(DecodeError::NotFramed));
}

#[test]
fn raw_avro_says_when_a_record_is_registry_framed() {
    let decoder = InputDecoder::new(Format::Avro, None);
    let datum = encode_to_vec(&event(), Format::Avro);
    assert_eq!(
        decoder.decode(&datum).map(EventView::into_owned),
        Ok(event())
    );
    let reason = decoder.decode(&framed(3, &datum)).unwrap_err();
    assert_eq!(reason, DecodeError::RegistryFramed(3));
    assert!(reason.to_string().contains("--input-format avro-confluent"));
    // Starting with 0 but not a framed event: the decoder's own error.
    assert_ne!(
        decoder.decode(&[0, 0, 0, 0, 1, 9]),
        Err(DecodeError::RegistryFramed(1))
    );
}

#[test]
fn raw_avro_reads_an_older_writer_schema_given_at_start_up() {
    let writer = r#"{"type":"record","name":"E","fields":[{"name":"source","type":"string"},{"name":"timestamp","type":"int"},{"name":"value","type":"float"}]}"#;
    let decoder = InputDecoder::new(
        Format::Avro,
        Some(Plan::compile_str(writer, TRAFFIC_EVENT_SCHEMA).unwrap()),
    );
    let datum = [2, b'a', 4, 0, 0, 0x40, 0x40]; // "a", 2, 3.0f32
    let event = decoder.decode(&datum).unwrap();
    assert_eq!(
        (event.source.as_ref(), event.timestamp, event.value),
        ("a", 2, 3.0)
    );
    // Validation still applies to resolved records.
    assert_eq!(
        decoder.decode(&[0, 4, 0, 0, 0x40, 0x40]),
        Err(DecodeError::EmptySource)
    );
}

#[test]
fn the_plan_cache_is_bounded_and_forgets_the_oldest() {
    let mut cache = PlanCache::new(3);
    for id in 0..5 {
        cache.insert(id, Ok(Plan::DIRECT));
    }
    assert_eq!(cache.len(), 3);
    assert!(!cache.contains(0) && !cache.contains(1));
    assert!(cache.contains(2) && cache.contains(4));
    cache.insert(4, Err("again".into())); // replacing keeps the size
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(4), Some(&Err("again".into())));
}

#[test]
fn an_unknown_id_is_asked_again_once_its_answer_expires() {
    let mut decoder = InputDecoder::new(Format::AvroConfluent, None);
    let record = framed(7, &encode_to_vec(&event(), Format::Avro));
    let now = Instant::now();
    decoder.learn_unknown(
        7,
        "the registry has no such schema".into(),
        now + UNKNOWN_ID_TTL,
    );
    assert_eq!(
        decoder.missing_schema(&record),
        None,
        "not asked for every record"
    );
    let reason = decoder.decode(&record).unwrap_err().to_string();
    assert!(reason.contains("no such schema"), "{reason}");
    // Expired: asked again, and a schema that appeared since is read.
    decoder.learn_unknown(7, "the registry has no such schema".into(), now);
    assert_eq!(decoder.missing_schema(&record), Some(7));
    assert_eq!(decoder.learn(7, Ok(TRAFFIC_EVENT_SCHEMA)), Ok(()));
    assert_eq!(decoder.missing_schema(&record), None);
    assert_eq!(
        decoder.decode(&record).map(EventView::into_owned),
        Ok(event())
    );
}

#[test]
fn reasons_are_bounded_on_a_char_boundary() {
    let long_ascii = "a".repeat(MAX_REASON_BYTES + 1);
    let long_wide = "é".repeat(MAX_REASON_BYTES); // 2 bytes each: the cut falls inside one
    let cases = [
        ("short", "short".to_owned(), "short".to_owned()),
        (
            "at the bound",
            "a".repeat(MAX_REASON_BYTES),
            "a".repeat(MAX_REASON_BYTES),
        ),
        (
            "one byte over",
            long_ascii,
            format!("{}…", "a".repeat(MAX_REASON_BYTES - '…'.len_utf8())),
        ),
        (
            "multi-byte",
            long_wide,
            format!("{}…", "é".repeat((MAX_REASON_BYTES - '…'.len_utf8()) / 2)),
        ),
    ];
    for (name, reason, expected) in cases {
        let bounded = bounded_reason(reason);
        assert!(
            bounded.len() <= MAX_REASON_BYTES,
            "{name}: {}",
            bounded.len()
        );
        assert_eq!(bounded, expected, "{name}");
    }
}

#[test]
fn a_huge_resolution_error_is_learned_bounded() {
    let mut decoder = InputDecoder::new(Format::AvroConfluent, None);
    let default = "x".repeat(10_000);
    let writer = format!(
        r#"{{"type":"record","name":"E","fields":[{{"name":"timestamp","type":"long"}},{{"name":"value","type":"double"}},{{"name":"source","type":"string"}},{{"name":"extra","type":"{default}"}}]}}"#
    );
    let reason = decoder.learn(3, Ok(&writer)).unwrap_err();
    assert!(reason.len() <= MAX_REASON_BYTES, "{}", reason.len());
    let error = decoder.decode(&framed(3, &[])).unwrap_err().to_string();
    assert!(error.len() <= MAX_REASON_BYTES + 100, "{}", error.len());
    decoder.learn_unknown(4, default, Instant::now() + UNKNOWN_ID_TTL);
    let error = decoder.decode(&framed(4, &[])).unwrap_err().to_string();
    assert!(error.len() <= MAX_REASON_BYTES + 100, "{}", error.len());
}

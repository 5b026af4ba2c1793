//! Hostile input: an oversized source, a side output too large for its topic (it becomes a marker
//! record), a burst of side outputs that each fit but not together, and a record whose headers the
//! producer cannot copy. Each outcome is checked against the oracle and against exact expectations
//! computed by the test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use streamagg::codec::Format;
use streamagg::reader::RawRecord;

use crate::common::read_all;
use crate::dataset::{
    encode_independently, incompressible, index_of, json_events, produce_inputs_with_headers, T0,
};
use crate::oracle::{assert_output_matches, assert_side_topic, header, Delivery};
use crate::scenario::{wait_for_output, Scenario, Topics};

/// The offset in the input topic of the record with dataset index `index`.
fn input_offset(input_records: &[RawRecord], index: usize) -> i64 {
    input_records
        .iter()
        .find(|r| index_of(r) == index)
        .map(|r| r.offset)
        .expect("the record is in the input topic")
}

/// Topics whose DLQ accepts records of at most 100,000 bytes (the broker's default is ~1 MiB).
fn topics_with_a_small_dlq(purpose: &str) -> Topics {
    Topics::create_with(purpose, 1, "dlq", &[("max.message.bytes", "100000")])
}

#[test]
fn an_oversized_source_goes_to_the_dlq_and_costs_no_other_window() {
    let oversized = "x".repeat(600_000);
    let mut inputs = json_events(&[
        ("y", T0 + 1_000, 60.0),
        ("oversized", T0 + 2_000, 70.0),
        ("z", T0 + 3_000, 80.0),
        ("zz", T0 + 4_000, 90.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    // Keyed short (the key is not what is checked); the payload's source is 600,000 bytes.
    inputs[1].payload = encode_independently(Format::Json, &oversized, T0 + 2_000, 70.0);
    let scenario = Scenario::with_inputs("oversized", Format::Json, 1, inputs);
    scenario.preload(scenario.all());
    let input_records = read_all(&scenario.topics.input.name);
    let expected = scenario.expected();
    let windows: Vec<&str> = expected.windows.keys().map(|(s, _)| s.as_str()).collect();
    assert_eq!(windows, ["y", "z", "zz"], "the oracle's windows");
    assert_eq!(expected.invalid, BTreeSet::from([1]), "the oracle's DLQ");

    let mut processor = scenario.start("s");
    let output = scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(60));
    processor.assert_alive();
    scenario.assert_matches(
        Delivery::ExactlyOnce,
        &read_all(&scenario.topics.output.name),
    );
    assert_eq!(output.len(), 3);
    let dlq = read_all(&scenario.topics.dlq.name);
    let reason = header(&dlq[0], "streamagg.error").expect("reason");
    assert!(
        reason.contains("longer than 1024 bytes"),
        "DLQ reason: {reason}"
    );
    assert_eq!(
        header(&dlq[0], "streamagg.offset"),
        Some(input_offset(&input_records, 1).to_string())
    );
    processor.stop_gracefully();
}

#[test]
fn a_side_output_too_large_for_its_topic_becomes_a_marker_record() {
    let mut inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("huge", T0 + 1_500, 0.0),
        ("b", T0 + 2_000, 70.0),
        ("a", T0 + 3_000, 80.0),
        ("c", T0 + 5_000, 90.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    // Not JSON, and incompressible: the lz4-compressed batch stays above the DLQ's 100,000 bytes.
    inputs[1].payload = incompressible(300_000);
    let scenario = Scenario::with_topics(topics_with_a_small_dlq("marker"), Format::Json, inputs);
    let topics = &scenario.topics;
    scenario.preload(scenario.all());
    let input_records = read_all(&topics.input.name);
    let expected = scenario.expected();
    assert_eq!(expected.windows.len(), 3, "a, b and c");
    assert_eq!(expected.invalid, BTreeSet::from([1]));

    let mut processor = scenario.start("s");
    let output = wait_for_output(
        &mut processor,
        topics,
        expected.windows.len(),
        Duration::from_secs(90),
    );
    assert_output_matches(Format::Json, &output, &expected, Delivery::ExactlyOnce);
    assert_side_topic(
        &topics.late.name,
        &expected.late,
        "late",
        Delivery::ExactlyOnce,
    );

    let dlq = read_all(&topics.dlq.name);
    assert_eq!(dlq.len(), 1, "one DLQ record: {dlq:?}");
    let marker = &dlq[0];
    assert!(
        marker.payload.as_deref().unwrap_or_default().is_empty(),
        "the marker carries no payload ({} bytes)",
        marker.payload.as_ref().map_or(0, Vec::len)
    );
    assert_eq!(marker.key.as_deref(), Some(&b"huge"[..]), "key kept");
    let reason = header(marker, "streamagg.error").expect("reason header");
    assert!(reason.contains("too large"), "reason: {reason}");
    assert_eq!(
        header(marker, "streamagg.original_bytes"),
        Some(scenario.inputs[1].payload.len().to_string())
    );
    assert_eq!(
        header(marker, "streamagg.topic").as_deref(),
        Some(topics.input.name.as_str())
    );
    assert_eq!(header(marker, "streamagg.partition").as_deref(), Some("0"));
    assert_eq!(
        header(marker, "streamagg.offset"),
        Some(input_offset(&input_records, 1).to_string())
    );
    processor.stop_gracefully();
}

/// Runs a processor until the output holds the windows the oracle expects, checks them, and
/// returns the DLQ's records.
fn run_until_the_windows_and_read_the_dlq(scenario: &Scenario) -> Vec<RawRecord> {
    let expected = scenario.expected();
    let mut processor = scenario.start("s");
    let output = wait_for_output(
        &mut processor,
        &scenario.topics,
        expected.windows.len(),
        Duration::from_secs(60),
    );
    assert_output_matches(Format::Json, &output, &expected, Delivery::ExactlyOnce);
    processor.stop_gracefully();
    read_all(&scenario.topics.dlq.name)
}

#[test]
fn a_burst_of_side_outputs_that_each_fit_is_never_refused_as_one_batch() {
    let mut inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("bad1", T0 + 1_100, 0.0),
        ("bad2", T0 + 1_200, 0.0),
        ("bad3", T0 + 1_300, 0.0),
        ("b", T0 + 2_000, 70.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    // Each copy fits the DLQ's 100,000 bytes; three in one batch would not.
    for input in &mut inputs[1..4] {
        input.payload = incompressible(60_000);
    }
    let scenario = Scenario::with_topics(topics_with_a_small_dlq("burst"), Format::Json, inputs);
    scenario.preload(scenario.all());
    assert_eq!(scenario.expected().invalid, BTreeSet::from([1, 2, 3]));
    let dlq = run_until_the_windows_and_read_the_dlq(&scenario);
    let copies: Vec<(usize, Option<&Vec<u8>>)> = dlq
        .iter()
        .map(|r| (index_of(r), r.payload.as_ref()))
        .collect();
    let originals: Vec<(usize, Option<&Vec<u8>>)> = (1..4)
        .map(|i| (i, Some(&scenario.inputs[i].payload)))
        .collect();
    assert_eq!(copies, originals, "three whole copies, in order");
}

#[test]
fn a_record_whose_headers_the_producer_cannot_copy_becomes_a_marker() {
    let mut inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("bad", T0 + 1_100, 0.0),
        ("b", T0 + 2_000, 70.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    inputs[1].payload = b"not json".to_vec();
    // The input topic takes records up to 5 MB; the DLQ the broker's default (~1 MiB).
    let topics = Topics::create_with("headers", 1, "in", &[("max.message.bytes", "5000000")]);
    let scenario = Scenario::with_topics(topics, Format::Json, inputs);
    // 40,000 headers of 25 random bytes: with their framing over 1.1 MB, past librdkafka's own
    // message.max.bytes (1,000,000), which refuses a copy at once. A producer allowed larger
    // records writes the original.
    let large = BTreeMap::from([("message.max.bytes".to_owned(), "5000000".to_owned())]);
    let values: Vec<Vec<u8>> = (0..40_000).map(|_| incompressible(25)).collect();
    produce_inputs_with_headers(
        &scenario.topics.input.name,
        &scenario.inputs,
        scenario.all(),
        &large,
        |index, headers| {
            if index != 1 {
                return headers;
            }
            values.iter().fold(headers, |headers, value| {
                headers.insert(rdkafka::message::Header {
                    key: "h",
                    value: Some(value),
                })
            })
        },
    );
    let input_records = read_all(&scenario.topics.input.name);
    assert_eq!(scenario.expected().invalid, BTreeSet::from([1]));
    let dlq = run_until_the_windows_and_read_the_dlq(&scenario);
    assert_eq!(dlq.len(), 1, "one DLQ record");
    let reason = header(&dlq[0], "streamagg.error").expect("reason");
    assert!(reason.contains("too large"), "{reason}");
    assert_eq!(
        header(&dlq[0], "streamagg.offset"),
        Some(input_offset(&input_records, 1).to_string())
    );
}

#[test]
fn a_record_with_a_null_key_and_value_reaches_the_dlq_as_null_not_empty() {
    let mut inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("tombstone", T0 + 1_100, 0.0),
        ("empty", T0 + 1_200, 0.0),
        ("b", T0 + 2_000, 70.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    // What the oracle decodes for them: nothing (a null value carries no bytes).
    inputs[1].payload = Vec::new();
    inputs[2].payload = Vec::new();
    let scenario = Scenario::with_inputs("nulls", Format::Json, 1, inputs);
    // Index 1: a tombstone with no key (null key, null value); index 2: an empty key and value.
    // Both are invalid input; the DLQ must hold each exactly as it was, null staying null.
    let mut producer = streamagg::producer::RecordProducer::connect(
        &crate::common::kafka_settings(),
        "it-nulls",
        &BTreeMap::new(),
    )
    .expect("broker");
    for (index, input) in scenario.inputs.iter().enumerate() {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: crate::dataset::INDEX_HEADER,
            value: Some(index.to_string().as_bytes()),
        });
        let (key, payload): (Option<&[u8]>, Option<&[u8]>) = match index {
            1 => (None, None),
            2 => (Some(b""), Some(b"")),
            _ => (Some(input.source.as_bytes()), Some(&input.payload)),
        };
        producer
            .send_nullable(&scenario.topics.input.name, key, payload, Some(headers))
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");

    assert_eq!(scenario.expected().invalid, BTreeSet::from([1, 2]));
    let dlq = run_until_the_windows_and_read_the_dlq(&scenario);
    let copies: Vec<_> = dlq
        .iter()
        .map(|r| (index_of(r), r.key.clone(), r.payload.clone()))
        .collect();
    assert_eq!(
        copies,
        vec![(1, None, None), (2, Some(vec![]), Some(vec![]))],
        "each DLQ copy keeps its key and value as they were, null or empty"
    );
}

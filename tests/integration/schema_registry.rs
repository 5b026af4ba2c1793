//! The Schema Registry wire format end to end, against the reference client: Confluent's own
//! Python serializers (confluent-kafka's `AvroSerializer` upstream, with evolved writer schemas, and
//! `AvroDeserializer` downstream) and the stand-in registry `tests/registry/registry.py` (the REST
//! subset those serializers use; no real registry installs on these machines), through the real
//! broker. The oracle is computed here from the generated events. Needs the tools venv
//! (`STREAMAGG_TEST_PYTHON`, set by `scripts/test`): without it the tests fail, never skip.

mod edges;
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use streamagg::codec::TRAFFIC_AVERAGE_SCHEMA;

use crate::common::{
    brokers, metric_sum, streamagg, wait_for_records, ProcessorProcess, TestTopic,
};
use crate::oracle::header;
use crate::scenario::random_group;

use harness::*;

#[test]
fn confluent_serializers_with_evolving_schemas_feed_a_run_whose_output_equals_the_oracle() {
    let python = python();
    let registry = Registry::start(&python, None);
    let input = TestTopic::create("sr-in", 2);
    let output = TestTopic::create("sr-out", 2);
    let dlq = TestTopic::create("sr-dlq", 1);
    let events = events(18, 1_500);
    let schemas_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(schemas_file.path(), writer_schemas().to_string()).expect("schemas written");
    let schemas_path = schemas_file.path().to_str().expect("utf8");
    let ids: Value = serde_json::from_str(&run_python(
        &python,
        &[
            "produce",
            "--brokers",
            &brokers(),
            "--topic",
            &input.name,
            "--registry",
            &registry.url(),
            "--schemas",
            schemas_path,
        ],
        &produce_lines(&events, 2),
    ))
    .expect("the ids of the writer schemas");
    let incompatible_id = ids["v4"].as_u64().expect("v4 was registered");
    assert_eq!(ids.as_object().map(|o| o.len()), Some(4), "{ids}");

    // `streamagg consume` with the registry reads each event with its writer schema; the
    // incompatible ones are shown with their error.
    let consumed = streamagg(&[
        "consume",
        "--brokers",
        &brokers(),
        "--topic",
        &input.name,
        "--record",
        "event",
        "--format",
        "avro-confluent",
        "--schema-registry-url",
        &registry.url(),
        "--positions",
    ]);
    let stdout = String::from_utf8_lossy(&consumed.stdout);
    let mut shown: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut errors = 0;
    for line in stdout.lines() {
        let line: Value = serde_json::from_str(line).expect("a JSON line");
        match line.get("record") {
            Some(event) => shown
                .entry(event["source"].as_str().expect("source").to_owned())
                .or_default()
                .push((
                    event["timestamp"].as_i64().expect("ts"),
                    event["value"].as_f64().expect("value"),
                )),
            None => {
                let error = line["error"].as_str().expect("error");
                assert!(
                    error.contains(&format!("schema id {incompatible_id}")),
                    "{error}"
                );
                errors += 1;
            }
        }
    }
    let mut generated: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (_, source, timestamp, value) in events.iter().filter(|e| e.0 != "v4") {
        generated
            .entry(source.clone())
            .or_default()
            .push((*timestamp, *value));
    }
    shown.remove("seal");
    assert_eq!(
        shown, generated,
        "consume shows every readable event as generated"
    );
    assert_eq!(errors, events.iter().filter(|e| e.0 == "v4").count());

    let state = tempfile::tempdir().expect("state dir");
    let mut processor = ProcessorProcess::start(&[
        "--brokers",
        &brokers(),
        "--input",
        &input.name,
        "--output",
        &output.name,
        "--dlq-topic",
        &dlq.name,
        "--group",
        &random_group(),
        "--state-dir",
        state.path().to_str().expect("utf8"),
        "--input-format",
        "avro-confluent",
        "--output-format",
        "avro-confluent",
        "--schema-registry-url",
        &registry.url(),
        "--window",
        "60s",
        "--grace",
        "10s",
    ]);
    let expected = oracle(&events);
    let dlq_expected = events.iter().filter(|e| e.0 == "v4").count();
    assert!(
        dlq_expected > 0 && expected.len() > 40,
        "the dataset exercises both"
    );
    let outputs = wait_for_records(
        &output.name,
        expected.len(),
        Duration::from_secs(90),
        || processor.assert_alive(),
    );
    assert_eq!(outputs.len(), expected.len(), "{}", processor.log());

    // Downstream: Confluent's deserializer reads every output, with the schema streamagg
    // registered under `<output>-value`, which is schemas/traffic_average.avsc.
    let registered = registry.get(&format!("/subjects/{}-value/versions/latest", output.name));
    let registered_schema: Value =
        serde_json::from_str(registered["schema"].as_str().expect("schema")).expect("JSON");
    assert_eq!(
        registered_schema,
        serde_json::from_str::<Value>(TRAFFIC_AVERAGE_SCHEMA).unwrap()
    );
    let lines = run_python(
        &python,
        &[
            "consume",
            "--brokers",
            &brokers(),
            "--topic",
            &output.name,
            "--registry",
            &registry.url(),
            "--count",
            &expected.len().to_string(),
            "--timeout",
            "60",
        ],
        "",
    );
    let mut actual = BTreeMap::new();
    for line in lines.lines() {
        let record: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(record["schema_id"], registered["id"], "{line}");
        let v = &record["value"];
        let source = v["source"].as_str().expect("source").to_owned();
        assert_eq!(record["key"].as_str(), Some(source.as_str()));
        let start = v["window_start"].as_i64().expect("window_start");
        assert_eq!(v["window_end"].as_i64(), Some(start + 60_000), "{line}");
        let count = v["count"].as_i64().expect("count");
        let sum = v["sum"].as_f64().expect("sum");
        assert_eq!(v["avg"].as_f64(), Some(sum / count as f64), "{line}");
        let stats = (
            count,
            sum,
            v["min"].as_f64().expect("min"),
            v["max"].as_f64().expect("max"),
        );
        assert!(
            actual.insert((start, source), stats).is_none(),
            "emitted twice: {line}"
        );
    }
    assert_eq!(actual, expected);

    // The incompatible version: every record in the DLQ, unchanged, with a reason naming its
    // schema id and the missing field.
    let dead = wait_for_records(&dlq.name, dlq_expected, Duration::from_secs(30), || {});
    assert_eq!(dead.len(), dlq_expected);
    for record in &dead {
        let payload = record.payload.as_deref().expect("payload");
        assert_eq!(payload[..5], [0, 0, 0, 0, incompatible_id as u8]);
        let reason = header(record, "streamagg.error").expect("reason");
        assert!(
            reason.contains(&format!("schema id {incompatible_id}")) && reason.contains("`source`"),
            "{reason}"
        );
    }
    let telemetry = processor.telemetry_addr(Duration::from_secs(10));
    let unresolvable = metric_sum(telemetry, "streamagg_writer_schemas_unresolvable_total");
    assert_eq!(
        unresolvable, 1.0,
        "one writer schema id could not be resolved"
    );
    processor.stop_gracefully();
}

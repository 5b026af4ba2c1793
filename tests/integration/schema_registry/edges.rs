//! The edges of the registry formats: an unreachable registry, registry-framed records read as raw
//! Avro, basic auth, and raw Avro of another writer schema.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use streamagg::codec::Format;

use crate::common::{brokers, read_all, streamagg, wait_for_records, ProcessorProcess, TestTopic};
use crate::dataset::{produce_inputs, Input};
use crate::oracle::{header, parse_independently};
use crate::scenario::random_group;

use super::harness::*;

#[test]
fn an_unreachable_registry_stops_the_run_without_a_dlq_record_and_a_restart_resumes() {
    let python = python();
    let dir = tempfile::tempdir().expect("dir");
    let registry_state = dir.path().join("registry.json");
    let registry = Registry::start(&python, Some(&registry_state));
    let input = TestTopic::create("sr-down-in", 1);
    let output = TestTopic::create("sr-down-out", 1);
    let dlq = TestTopic::create("sr-down-dlq", 1);
    // `streamagg produce --format avro-confluent`: registers the event schema, frames every event.
    let produced = streamagg(&[
        "produce",
        "--brokers",
        &brokers(),
        "--topic",
        &input.name,
        "--format",
        "avro-confluent",
        "--schema-registry-url",
        &registry.url(),
        "--count",
        "600",
        "--span",
        "5m",
        "--sources",
        "7",
        "--seal",
    ]);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let url = registry.url();
    drop(registry);

    let state = dir.path().join("state");
    let group = random_group();
    let args = |url: &str| {
        vec![
            "--brokers".to_owned(),
            brokers(),
            "--input".into(),
            input.name.clone(),
            "--output".into(),
            output.name.clone(),
            "--dlq-topic".into(),
            dlq.name.clone(),
            "--group".into(),
            group.clone(),
            "--state-dir".into(),
            state.to_str().expect("utf8").into(),
            "--input-format".into(),
            "avro-confluent".into(),
            "--output-format".into(),
            "json".into(),
            "--schema-registry-url".into(),
            url.to_owned(),
            "--schema-registry-patience".into(),
            "2s".into(),
        ]
    };
    let mut down = ProcessorProcess::start(&args(&url));
    let status = down.wait(Duration::from_secs(60));
    assert!(!status.success(), "the run must stop: {}", down.log());
    assert!(down.log().contains("still failing after"), "{}", down.log());
    assert!(
        read_all(&dlq.name).is_empty(),
        "no record is a DLQ record because the registry is down"
    );
    assert!(read_all(&output.name).is_empty(), "nothing was committed");

    // The registry back (its schemas kept, on another port): everything is processed once.
    let registry = Registry::start(&python, Some(&registry_state));
    let mut up = ProcessorProcess::start(&args(&registry.url()));
    // The oracle's windows, from the input decoded here (apache-avro after the 5-byte header).
    let mut oracle_windows = std::collections::BTreeSet::new();
    let mut events = Vec::new();
    for record in read_all(&input.name) {
        let payload = record.payload.expect("payload");
        assert_eq!(payload[0], 0, "framed");
        let event = parse_independently(Format::Avro, &payload[5..]).expect("an event");
        if event.0 != "streamagg.seal" {
            oracle_windows.insert((event.1 / 60_000, event.0.clone()));
        }
        events.push(json!({"source": event.0, "timestamp": event.1, "value": event.2}));
    }
    // `streamagg consume --format avro-confluent` shows the same events.
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
    ]);
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let shown: Vec<Value> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event"))
        .collect();
    assert_eq!(shown, events);
    assert_eq!(
        oracle_windows
            .iter()
            .map(|w| &w.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        7
    );
    let outputs = wait_for_records(
        &output.name,
        oracle_windows.len(),
        Duration::from_secs(60),
        || up.assert_alive(),
    );
    assert_eq!(outputs.len(), oracle_windows.len(), "{}", up.log());
    assert!(read_all(&dlq.name).is_empty());
    up.stop_gracefully();
}

#[test]
fn a_registry_framed_record_read_as_raw_avro_is_dlqd_with_the_option_to_use() {
    let python = python();
    let registry = Registry::start(&python, None);
    let input = TestTopic::create("sr-raw-in", 1);
    let output = TestTopic::create("sr-raw-out", 1);
    let dlq = TestTopic::create("sr-raw-dlq", 1);
    let produced = streamagg(&[
        "produce",
        "--brokers",
        &brokers(),
        "--topic",
        &input.name,
        "--format",
        "avro-confluent",
        "--schema-registry-url",
        &registry.url(),
        "--count",
        "5",
        "--sources",
        "2",
    ]);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let state = tempfile::tempdir().expect("state");
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
        "avro",
    ]);
    let dead = wait_for_records(&dlq.name, 5, Duration::from_secs(60), || {
        processor.assert_alive()
    });
    assert_eq!(dead.len(), 5);
    let inputs = read_all(&input.name);
    for (record, original) in dead.iter().zip(&inputs) {
        assert_eq!(record.payload, original.payload, "a byte-identical copy");
        let reason = header(record, "streamagg.error").expect("reason");
        assert!(
            reason.contains("Confluent Schema Registry wire format")
                && reason.contains("--input-format avro-confluent"),
            "{reason}"
        );
    }
    processor.stop_gracefully();
}

#[test]
fn basic_auth_takes_the_password_from_the_environment_and_never_shows_it() {
    let python = python();
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let registry = Registry::start_with(&python, None, Some(("streamagg", &password)));
    let topic = TestTopic::create("sr-auth", 1);
    let produce = |password: &str| {
        Command::new(crate::common::binary())
            .args([
                "produce",
                "--brokers",
                &brokers(),
                "--topic",
                &topic.name,
                "--format",
                "avro-confluent",
                "--schema-registry-url",
                &registry.url(),
                "--schema-registry-username",
                "streamagg",
                "--count",
                "3",
            ])
            .env("STREAMAGG_SCHEMA_REGISTRY_PASSWORD", password)
            .env("RUST_LOG", "debug")
            .output()
            .expect("streamagg runs")
    };
    let good = produce(&password);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(read_all(&topic.name).len(), 3);
    let wrong = format!("{password}-wrong");
    let refused = produce(&wrong);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("HTTP 401") && last.contains("check the registry user and password"),
        "{stderr}"
    );
    for output in [&good, &refused] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!all.contains(&password), "the password was shown: {all}");
    }
    assert_eq!(
        read_all(&topic.name).len(),
        3,
        "nothing produced without the schema registered"
    );
}

#[test]
fn raw_avro_of_another_writer_schema_is_read_with_input_writer_schema() {
    // An upstream that writes raw datums with its own schema: fields reordered, `value` a float,
    // an extra `unit` string. Encoded here with apache-avro.
    let writer_text = r#"{"type":"record","name":"Measurement","namespace":"upstream","fields":[
        {"name":"unit","type":"string"},
        {"name":"value","type":"float"},
        {"name":"timestamp","type":"long"},
        {"name":"source","type":"string"}]}"#;
    let writer = apache_avro::Schema::parse_str(writer_text).expect("schema");
    #[allow(deprecated)]
    let encode = |source: &str, timestamp: i64, value: f64| {
        use apache_avro::types::Value as Avro;
        apache_avro::to_avro_datum(
            &writer,
            Avro::Record(vec![
                ("unit".into(), Avro::String("Mbit/s".into())),
                ("value".into(), Avro::Float(value as f32)),
                ("timestamp".into(), Avro::Long(timestamp)),
                ("source".into(), Avro::String(source.into())),
            ]),
        )
        .expect("datum")
    };
    let events: Vec<Event> = events(7, 600)
        .into_iter()
        .map(|e| ("v1", e.1, e.2, e.3))
        .collect();
    let mut inputs: Vec<Input> = events
        .iter()
        .map(|(_, source, timestamp, value)| Input {
            source: source.clone(),
            payload: encode(source, *timestamp, *value),
        })
        .collect();
    let seal_at = events.last().map_or(0, |e| e.2) + 15 * 60_000;
    inputs.push(Input {
        source: "seal".into(),
        payload: encode("seal", seal_at, 0.0),
    });
    let input = TestTopic::create("raw-writer-in", 1);
    let output = TestTopic::create("raw-writer-out", 1);
    let dlq = TestTopic::create("raw-writer-dlq", 1);
    produce_inputs(&input.name, &inputs, 0..inputs.len());
    let dir = tempfile::tempdir().expect("dir");
    let schema_file = dir.path().join("upstream.avsc");
    std::fs::write(&schema_file, writer_text).expect("schema file");
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
        dir.path().join("state").to_str().expect("utf8"),
        "--input-format",
        "avro",
        "--input-writer-schema",
        schema_file.to_str().expect("utf8"),
    ]);
    let expected = oracle(&events);
    let outputs = wait_for_records(
        &output.name,
        expected.len(),
        Duration::from_secs(60),
        || processor.assert_alive(),
    );
    let mut actual = BTreeMap::new();
    for record in &outputs {
        let v: Value =
            serde_json::from_slice(record.payload.as_deref().expect("payload")).expect("JSON");
        let key = (
            v["window_start"].as_i64().expect("start"),
            v["source"].as_str().expect("source").to_owned(),
        );
        let stats = (
            v["count"].as_i64().expect("count"),
            v["sum"].as_f64().expect("sum"),
            v["min"].as_f64().expect("min"),
            v["max"].as_f64().expect("max"),
        );
        assert!(actual.insert(key, stats).is_none(), "emitted twice");
    }
    assert_eq!(actual, expected, "{}", processor.log());
    assert!(read_all(&dlq.name).is_empty());
    processor.stop_gracefully();
}

#[test]
fn an_https_registry_is_trusted_through_its_ca_file_and_refused_at_once_without_it() {
    let python = python();
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (
        dir.path().join("registry.crt"),
        dir.path().join("registry.key"),
    );
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let registry = Registry::start_tls(&python, (&cert, &key));
    assert!(registry.url().starts_with("https://"));
    let topic = TestTopic::create("sr-tls", 1);
    let produce = |ca: Option<&std::path::Path>| {
        let mut command = Command::new(crate::common::binary());
        command.args([
            "produce",
            "--brokers",
            &brokers(),
            "--topic",
            &topic.name,
            "--format",
            "avro-confluent",
            "--schema-registry-url",
            &registry.url(),
            "--count",
            "3",
        ]);
        if let Some(ca) = ca {
            command.arg("--schema-registry-ca-location").arg(ca);
        }
        command.output().expect("streamagg runs")
    };
    let trusted = produce(Some(&cert));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(read_all(&topic.name).len(), 3);
    // The system's CAs do not know it: refused at once (not retried for the patience), one line.
    let started = std::time::Instant::now();
    let untrusted = produce(None);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "retried a certificate failure"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("refused") && last.contains("TLS"), "{stderr}");
    assert_eq!(read_all(&topic.name).len(), 3);
}

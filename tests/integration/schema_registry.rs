//! The Schema Registry wire format end to end, against the reference client: Confluent's own
//! Python serializers (confluent-kafka's `AvroSerializer` upstream, with evolved writer schemas, and
//! `AvroDeserializer` downstream) and the stand-in registry `tests/registry/registry.py` (the REST
//! subset those serializers use; no real registry installs on these machines), through the real
//! broker. The oracle is computed here from the generated events. Needs the tools venv
//! (`STREAMAGG_TEST_PYTHON`, set by `scripts/test`): without it the tests fail, never skip.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use streamagg::codec::{Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};

use crate::common::{
    brokers, metric_sum, read_all, streamagg, wait_for_records, ProcessorProcess, TestTopic,
};
use crate::dataset::{produce_inputs, Input};
use crate::oracle::{header, parse_independently};
use crate::scenario::random_group;

/// The venv python with confluent-kafka, or a failure saying how to get it.
fn python() -> String {
    let python = std::env::var("STREAMAGG_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/streamagg/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let works = Command::new(&python)
        .args(["-c", "import confluent_kafka.schema_registry.avro"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "no python with confluent-kafka at {python}: run scripts/test, or set STREAMAGG_TEST_PYTHON \
         to the python `source scripts/lib.sh; ensure_tools_venv` prints"
    );
    python
}

fn script(name: &str) -> String {
    format!("{}/tests/registry/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The stand-in registry, on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    addr: SocketAddr,
}

impl Registry {
    fn start(python: &str, state: Option<&std::path::Path>) -> Registry {
        Registry::start_with(python, state, None)
    }

    /// With basic auth: `user` and its password.
    fn start_with(
        python: &str,
        state: Option<&std::path::Path>,
        auth: Option<(&str, &str)>,
    ) -> Registry {
        let mut command = Command::new(python);
        command.arg(script("registry.py")).args(["--port", "0"]);
        if let Some((user, password)) = auth {
            command
                .args(["--user", user])
                .env("REGISTRY_PASSWORD", password);
        }
        if let Some(state) = state {
            command.arg("--state").arg(state);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("the registry starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        // Bounded: the line comes at once, or the process died (EOF).
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("registry output");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("registry did not start: {line:?}"));
        Registry { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) =
            streamagg::telemetry::http_get(self.addr, path, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("registry GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("registry JSON")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The writer schemas upstream evolves through, by name: the original (streamagg's own), + an
/// optional field, + fields reordered and `value` written as `float` (promoted to `double` when
/// read); and an incompatible one without `source`.
fn writer_schemas() -> Value {
    let record = |fields: Value| {
        json!({"type": "record", "name": "TrafficEvent", "namespace": "streamagg", "fields": fields})
            .to_string()
    };
    let ts = json!({"type": "long", "logicalType": "timestamp-millis"});
    let region = json!({"name": "region", "type": ["null", "string"], "default": null});
    json!({
        "v1": TRAFFIC_EVENT_SCHEMA,
        "v2": record(json!([{"name": "source", "type": "string"}, {"name": "timestamp", "type": ts},
            {"name": "value", "type": "double"}, region])),
        "v3": record(json!([{"name": "value", "type": "float"}, region,
            {"name": "source", "type": "string"}, {"name": "timestamp", "type": ts}])),
        "v4": record(json!([{"name": "link", "type": "string"}, {"name": "timestamp", "type": ts},
            {"name": "value", "type": "double"}])),
    })
}

/// One generated event: the writer schema it is written with, source, timestamp, value.
type Event = (&'static str, String, i64, f64);

/// Seeded events in event-time order over six minutes, mostly v1–v3, some v4.
fn events(seed: u64, count: i64) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = 1_764_000_000_000 / 60_000 * 60_000;
    (0..count)
        .map(|i| {
            let version = match rng.random_range(0..100) {
                0..=29 => "v1",
                30..=59 => "v2",
                60..=94 => "v3",
                _ => "v4",
            };
            let source = format!("link-{:02}", rng.random_range(0..12));
            // Quarters below 100: exact as a float, so the promoted v3 values equal the oracle's.
            let value = f64::from(rng.random_range(0..400)) * 0.25;
            (version, source, start + i * 360_000 / count, value)
        })
        .collect()
}

/// The lines `confluent_client.py produce` reads: the events, then a seal per partition 15 minutes
/// later (its window never closes; every other one does).
fn produce_lines(events: &[Event], partitions: i32) -> String {
    let mut lines = String::new();
    for (version, source, timestamp, value) in events {
        let name = if *version == "v4" { "link" } else { "source" };
        let mut record = json!({name: source, "timestamp": timestamp, "value": value});
        if *version != "v1" && *version != "v4" {
            record["region"] = json!("eu");
        }
        lines += &json!({"schema": version, "key": source, "value": record}).to_string();
        lines.push('\n');
    }
    let seal_at = events.last().map_or(0, |e| e.2) + 15 * 60_000;
    for partition in 0..partitions {
        let record = json!({"source": "seal", "timestamp": seal_at, "value": 0.0});
        let line = json!({"schema": "v1", "key": "seal", "value": record, "partition": partition});
        lines += &format!("{line}\n");
    }
    lines
}

/// (window_start, source) → (count, sum, min, max) of the events streamagg can read.
fn oracle(events: &[Event]) -> BTreeMap<(i64, String), (i64, f64, f64, f64)> {
    let mut windows = BTreeMap::new();
    for (_, source, timestamp, value) in events.iter().filter(|e| e.0 != "v4") {
        let start = timestamp / 60_000 * 60_000;
        let entry = windows.entry((start, source.clone())).or_insert((
            0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ));
        entry.0 += 1;
        entry.1 += value;
        entry.2 = entry.2.min(*value);
        entry.3 = entry.3.max(*value);
    }
    windows
}

fn run_python(python: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(python)
        .arg(script("confluent_client.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "confluent_client.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf8")
}

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

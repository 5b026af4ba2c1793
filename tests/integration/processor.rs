//! The processor against a real broker: its output topic, late topic and DLQ must equal an
//! independent oracle of the documented semantics — for JSON and Avro, across a graceful restart,
//! and with two instances sharing a consumer group.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{types::Value as AvroValue, Schema};
use rdkafka::message::{Header, OwnedHeaders};
use streamagg::codec::{Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};
use streamagg::consume::RawRecord;
use streamagg::generate::{GeneratorConfig, TrafficGenerator};
use streamagg::produce::RecordProducer;

use crate::common::{
    brokers, kafka_settings, read_all, streamagg, wait_for_records, ProcessorProcess, TestTopic,
};

const WINDOW_MS: i64 = 60_000;
const GRACE_MS: i64 = 10_000;
const MIN_VALUE: f64 = 50.0;
const INDEX_HEADER: &str = "it.index";

/// One input record of a test dataset, encoded by the test itself (not by the codec under test).
struct Input {
    source: String,
    payload: Vec<u8>,
}

/// Encodes an event in `format` with serde_json / apache-avro's generic encoder.
fn encode_independently(format: Format, source: &str, timestamp: i64, value: f64) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(
            &serde_json::json!({"source": source, "timestamp": timestamp, "value": value}),
        )
        .expect("json"),
        Format::Avro => {
            let schema = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("schema");
            GenericDatumWriter::builder(&schema)
                .build()
                .expect("writer")
                .write_value_to_vec(AvroValue::Record(vec![
                    ("source".into(), AvroValue::String(source.into())),
                    ("timestamp".into(), AvroValue::TimestampMillis(timestamp)),
                    ("value".into(), AvroValue::Double(value)),
                ]))
                .expect("avro")
        }
    }
}

/// ≥ 50 sources, 12 minutes of event time, out-of-order within grace, late events beyond it, values
/// below the filter threshold, malformed records of several kinds, and a final far-future event per
/// source so every earlier window closes.
fn dataset(format: Format, seed: u64) -> Vec<Input> {
    let sources = 60;
    let mut generator = TrafficGenerator::new(GeneratorConfig {
        sources,
        seed,
        out_of_order_ms: 5_000,
        late_fraction: 0.03,
        late_by_ms: 120_000,
    });
    let start = 1_700_000_000_000_i64 - 1_700_000_000_000 % WINDOW_MS;
    let mut inputs = Vec::new();
    for i in 0..6_000_i64 {
        let base = start + 10_000 + i * 120; // 12 minutes of event time
        let event = generator.next_event(base);
        if i % 97 == 13 {
            let bad: Vec<u8> = match (i / 97) % 4 {
                0 => b"\x00\xffnot a record".to_vec(),
                1 => encode_independently(format, "", event.timestamp, event.value),
                2 => match format {
                    Format::Json => br#"{"source":"x","timestamp":5}"#.to_vec(),
                    Format::Avro => {
                        encode_independently(format, &event.source, event.timestamp, f64::NAN)
                    }
                },
                _ => {
                    let mut cut =
                        encode_independently(format, &event.source, event.timestamp, event.value);
                    cut.truncate(cut.len() - 3);
                    cut
                }
            };
            inputs.push(Input {
                source: event.source.clone(),
                payload: bad,
            });
        }
        inputs.push(Input {
            payload: encode_independently(format, &event.source, event.timestamp, event.value),
            source: event.source,
        });
    }
    for s in 0..sources {
        let source = streamagg::generate::source_name(s);
        let payload = encode_independently(format, &source, start + 3_600_000, 100.0);
        inputs.push(Input { source, payload });
    }
    inputs
}

/// Writes `inputs[range]` keyed by source, each with a header carrying its index.
fn produce_inputs(topic: &str, inputs: &[Input], range: std::ops::Range<usize>) {
    let mut producer =
        RecordProducer::connect(&kafka_settings(), "it-dataset", &Default::default())
            .expect("broker");
    for index in range {
        let headers = OwnedHeaders::new().insert(Header {
            key: INDEX_HEADER,
            value: Some(index.to_string().as_bytes()),
        });
        producer
            .send(
                topic,
                inputs[index].source.as_bytes(),
                &inputs[index].payload,
                Some(headers),
            )
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

fn index_of(record: &RawRecord) -> usize {
    let value = record
        .headers
        .iter()
        .find(|(k, _)| k == INDEX_HEADER)
        .map(|(_, v)| v.clone())
        .expect("index header");
    String::from_utf8(value)
        .expect("utf8")
        .parse()
        .expect("number")
}

/// A decoded input as the oracle sees it: `None` for records the semantics call invalid.
fn parse_independently(format: Format, payload: &[u8]) -> Option<(String, i64, f64)> {
    let (source, timestamp, value) = match format {
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
            (
                v.get("source")?.as_str()?.to_owned(),
                v.get("timestamp")?.as_i64()?,
                v.get("value")?.as_f64()?,
            )
        }
        Format::Avro => {
            let schema = Schema::parse_str(TRAFFIC_EVENT_SCHEMA).expect("schema");
            let mut reader = payload;
            let AvroValue::Record(fields) = GenericDatumReader::builder(&schema)
                .build()
                .expect("reader")
                .read_value(&mut reader)
                .ok()?
            else {
                return None;
            };
            if !reader.is_empty() {
                return None;
            }
            let mut it = fields.into_iter().map(|(_, v)| v);
            match (it.next()?, it.next()?, it.next()?) {
                (AvroValue::String(s), AvroValue::TimestampMillis(t), AvroValue::Double(v)) => {
                    (s, t, v)
                }
                _ => return None,
            }
        }
    };
    (!source.is_empty() && value.is_finite()).then_some((source, timestamp, value))
}

#[derive(Debug, Default)]
struct Expected {
    /// (source, window_start) → (count, sum, min, max)
    windows: BTreeMap<(String, i64), (i64, f64, f64, f64)>,
    late: BTreeSet<usize>,
    invalid: BTreeSet<usize>,
}

/// The documented semantics, computed the slow, obvious way from the records as they sit in the
/// input topic (partition, offset order): per-partition stream time, tumbling windows, grace,
/// filter before aggregation, late and invalid records set aside.
fn oracle(format: Format, inputs: &[Input], input_records: &[RawRecord]) -> Expected {
    let mut expected = Expected::default();
    let partitions: BTreeSet<i32> = input_records.iter().map(|r| r.partition).collect();
    for partition in partitions {
        let mut records: Vec<&RawRecord> = input_records
            .iter()
            .filter(|r| r.partition == partition)
            .collect();
        records.sort_by_key(|r| r.offset);
        let mut stream_time = i64::MIN;
        let mut open: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
        for record in records {
            let index = index_of(record);
            let Some((source, timestamp, value)) =
                parse_independently(format, &inputs[index].payload)
            else {
                expected.invalid.insert(index);
                continue;
            };
            if value < MIN_VALUE {
                continue;
            }
            stream_time = stream_time.max(timestamp);
            let window_start = timestamp.div_euclid(WINDOW_MS) * WINDOW_MS;
            if window_start + WINDOW_MS + GRACE_MS <= stream_time {
                expected.late.insert(index);
                continue;
            }
            open.entry((source, window_start)).or_default().push(value);
        }
        for ((source, window_start), values) in open {
            if window_start + WINDOW_MS + GRACE_MS <= stream_time {
                let sum: f64 = values.iter().sum();
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                expected
                    .windows
                    .insert((source, window_start), (values.len() as i64, sum, min, max));
            }
        }
    }
    expected
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The output topic equals the oracle exactly: same windows, no duplicates, same values.
fn assert_output_matches(format: Format, output: &[RawRecord], expected: &Expected) {
    let schema = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA).expect("schema");
    let mut seen: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for record in output {
        let payload = record.payload.as_deref().expect("payload");
        let (source, start, end, count, sum, avg, min, max) = match format {
            Format::Json => {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("json output");
                let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("field {k} in {v}"));
                let i = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("field {k} in {v}"));
                (
                    v["source"].as_str().expect("source").to_owned(),
                    i("window_start"),
                    i("window_end"),
                    i("count"),
                    f("sum"),
                    f("avg"),
                    f("min"),
                    f("max"),
                )
            }
            Format::Avro => {
                let value = GenericDatumReader::builder(&schema)
                    .build()
                    .expect("reader")
                    .read_value(&mut &payload[..])
                    .expect("avro output");
                let AvroValue::Record(fields) = value else {
                    panic!("not a record")
                };
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .expect(name)
                };
                let long = |name: &str| match get(name) {
                    AvroValue::Long(l) | AvroValue::TimestampMillis(l) => l,
                    other => panic!("{name}: {other:?}"),
                };
                let double = |name: &str| match get(name) {
                    AvroValue::Double(d) => d,
                    other => panic!("{name}: {other:?}"),
                };
                let AvroValue::String(source) = get("source") else {
                    panic!("source")
                };
                (
                    source,
                    long("window_start"),
                    long("window_end"),
                    long("count"),
                    double("sum"),
                    double("avg"),
                    double("min"),
                    double("max"),
                )
            }
        };
        assert_eq!(
            record.key.as_deref(),
            Some(source.as_bytes()),
            "keyed by source"
        );
        assert_eq!(end, start + WINDOW_MS);
        *seen.entry((source.clone(), start)).or_default() += 1;
        let Some(&(e_count, e_sum, e_min, e_max)) = expected.windows.get(&(source.clone(), start))
        else {
            panic!("unexpected window ({source}, {start})");
        };
        assert_eq!(count, e_count, "count of ({source}, {start})");
        assert!(
            close(sum, e_sum),
            "sum of ({source}, {start}): {sum} vs {e_sum}"
        );
        assert!(
            close(avg, e_sum / e_count as f64),
            "avg of ({source}, {start})"
        );
        assert!(
            close(min, e_min) && close(max, e_max),
            "min/max of ({source}, {start})"
        );
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated windows: {duplicates:?}");
    let missing: Vec<_> = expected
        .windows
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} missing windows, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(output.len(), expected.windows.len());
}

fn assert_side_topic(topic: &str, expected: &BTreeSet<usize>, reason_prefix: &str) {
    let records = read_all(topic);
    let got: BTreeSet<usize> = records.iter().map(index_of).collect();
    assert_eq!(got.len(), records.len(), "{topic}: duplicates");
    assert_eq!(&got, expected, "{topic}");
    for record in &records {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let reason = header("streamagg.error").expect("reason header");
        assert!(
            reason.starts_with(reason_prefix),
            "{topic}: reason {reason}"
        );
        assert_eq!(
            header("streamagg.partition"),
            Some(record_partition_in_input(record))
        );
        assert!(header("streamagg.offset").is_some() && header("streamagg.topic").is_some());
    }
}

fn record_partition_in_input(record: &RawRecord) -> String {
    // Forwarded records keep their key, so they land on the same partition number as in the input
    // (same partition count, same partitioner).
    record.partition.to_string()
}

struct Topics {
    input: TestTopic,
    output: TestTopic,
    late: TestTopic,
    dlq: TestTopic,
}

impl Topics {
    fn create(purpose: &str) -> Topics {
        Topics {
            input: TestTopic::create(&format!("{purpose}-in"), 4),
            output: TestTopic::create(&format!("{purpose}-out"), 4),
            late: TestTopic::create(&format!("{purpose}-late"), 4),
            dlq: TestTopic::create(&format!("{purpose}-dlq"), 4),
        }
    }

    fn args(&self, format: &str, group: &str, state_dir: &str) -> Vec<String> {
        [
            "--brokers",
            &brokers(),
            "--input",
            &self.input.name,
            "--output",
            &self.output.name,
            "--late-topic",
            &self.late.name,
            "--dlq-topic",
            &self.dlq.name,
            "--group",
            group,
            "--state-dir",
            state_dir,
            "--input-format",
            format,
            "--output-format",
            format,
            "--min-value",
            "50",
            "--window",
            "60s",
            "--grace",
            "10s",
            "--checkpoint-interval",
            "200ms",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Avro => "avro",
    }
}

fn check_alive(processes: &mut [&mut ProcessorProcess]) {
    for p in processes.iter_mut() {
        if let Some(status) = p.exited() {
            panic!("processor exited early ({status}); log:\n{}", p.log());
        }
    }
}

fn oracle_test(format: Format) {
    let topics = Topics::create(&format!("oracle-{}", format_name(format)));
    let inputs = dataset(format, 11);
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let input_records = read_all(&topics.input.name);
    let expected = oracle(format, &inputs, &input_records);
    assert!(
        expected.windows.len() > 600 && !expected.late.is_empty() && !expected.invalid.is_empty()
    );

    let state = tempfile::tempdir().expect("state dir");
    let group = format!("it-group-{:016x}", rand::random::<u64>());
    let state_dir = state.path().to_str().expect("utf8 path");
    let mut processor =
        ProcessorProcess::start(&topics.args(format_name(format), &group, state_dir));
    let output = wait_for_records(
        &topics.output.name,
        expected.windows.len(),
        Duration::from_secs(120),
        || check_alive(&mut [&mut processor]),
    );
    processor.stop_gracefully();
    assert_output_matches(format, &output, &expected);
    // Nothing more arrived after the expected count (no late duplicates).
    let output = read_all(&topics.output.name);
    assert_output_matches(format, &output, &expected);
    assert_side_topic(&topics.late.name, &expected.late, "late");
    assert_side_topic(&topics.dlq.name, &expected.invalid, "");
}

#[test]
fn output_equals_the_oracle_for_json() {
    oracle_test(Format::Json);
}

#[test]
fn output_equals_the_oracle_for_avro() {
    oracle_test(Format::Avro);
}

#[test]
fn graceful_restart_neither_loses_nor_duplicates_a_window() {
    let format = Format::Avro;
    let topics = Topics::create("restart");
    let inputs = dataset(format, 12);
    let half = inputs.len() / 2;
    produce_inputs(&topics.input.name, &inputs, 0..half);

    let state = tempfile::tempdir().expect("state dir");
    let group = format!("it-group-{:016x}", rand::random::<u64>());
    let state_dir = state.path().to_str().expect("utf8 path");
    let args = topics.args(format_name(format), &group, state_dir);
    let mut first = ProcessorProcess::start(&args);
    let partial = wait_for_records(&topics.output.name, 50, Duration::from_secs(60), || {
        check_alive(&mut [&mut first])
    });
    assert!(
        partial.len() >= 50,
        "first run emitted nothing; log:\n{}",
        first.log()
    );
    first.stop_gracefully();

    produce_inputs(&topics.input.name, &inputs, half..inputs.len());
    let input_records = read_all(&topics.input.name);
    let expected = oracle(format, &inputs, &input_records);
    let between = read_all(&topics.output.name);
    assert!(
        between.len() < expected.windows.len(),
        "the first run must stop mid-stream"
    );

    let mut second = ProcessorProcess::start(&args);
    let output = wait_for_records(
        &topics.output.name,
        expected.windows.len(),
        Duration::from_secs(120),
        || check_alive(&mut [&mut second]),
    );
    second.stop_gracefully();
    assert!(
        second.log().contains("plan=Local"),
        "the restart resumed from local state:\n{}",
        second.log()
    );
    assert_output_matches(format, &output, &expected);
    assert_side_topic(&topics.late.name, &expected.late, "late");
    assert_side_topic(&topics.dlq.name, &expected.invalid, "");
}

/// Partitions (by number) a processor's log says it was assigned.
fn assigned_partitions(log: &str) -> BTreeSet<i32> {
    log.lines()
        .filter(|line| line.contains("assigned") && !line.contains("revoked"))
        .filter_map(|line| {
            line.split("partition=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn two_instances_split_the_partitions_and_together_equal_the_oracle() {
    let format = Format::Json;
    let topics = Topics::create("two");
    let inputs = dataset(format, 13);
    let half = inputs.len() / 2;
    produce_inputs(&topics.input.name, &inputs, 0..half);

    let group = format!("it-group-{:016x}", rand::random::<u64>());
    let (state_a, state_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let args_a = topics.args(
        format_name(format),
        &group,
        state_a.path().to_str().expect("utf8"),
    );
    let args_b = topics.args(
        format_name(format),
        &group,
        state_b.path().to_str().expect("utf8"),
    );
    let mut a = ProcessorProcess::start(&args_a);
    wait_for_records(&topics.output.name, 50, Duration::from_secs(60), || {
        check_alive(&mut [&mut a])
    });
    let mut b = ProcessorProcess::start(&args_b);
    // Wait until b owns partitions, then feed the rest of the data to both.
    let started = std::time::Instant::now();
    while assigned_partitions(&b.log()).is_empty() {
        check_alive(&mut [&mut a, &mut b]);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "b never got partitions; log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    produce_inputs(&topics.input.name, &inputs, half..inputs.len());
    let input_records = read_all(&topics.input.name);
    let expected = oracle(format, &inputs, &input_records);
    let output = wait_for_records(
        &topics.output.name,
        expected.windows.len(),
        Duration::from_secs(120),
        || check_alive(&mut [&mut a, &mut b]),
    );
    let (log_a, log_b) = (a.log(), b.log());
    a.stop_gracefully();
    b.stop_gracefully();
    let (parts_a, parts_b) = (assigned_partitions(&log_a), assigned_partitions(&log_b));
    assert!(
        !parts_b.is_empty() && parts_b.len() < 4,
        "b got {parts_b:?}"
    );
    assert_eq!(
        parts_a.union(&parts_b).count(),
        4,
        "a {parts_a:?} b {parts_b:?}"
    );
    assert!(
        log_b.contains("plan=Rebuild"),
        "b rebuilt a handed-over partition from the group commit:\n{log_b}"
    );
    assert_output_matches(format, &output, &expected);
    assert_side_topic(&topics.late.name, &expected.late, "late");
    assert_side_topic(&topics.dlq.name, &expected.invalid, "");
}

#[test]
fn run_fails_with_one_line_for_each_kind_of_misconfiguration() {
    let output = TestTopic::create("errors-out", 1);
    let input = TestTopic::create("errors-in", 1);
    let state = tempfile::tempdir().expect("dir");
    let file_in_the_way = state.path().join("file");
    std::fs::write(&file_in_the_way, b"x").expect("write");
    let state_dir = state.path().join("state");
    let (state_dir, blocked_dir) = (
        state_dir.to_str().expect("utf8"),
        file_in_the_way.join("state"),
    );
    let missing = format!("it-missing-{:016x}", rand::random::<u64>());
    let b = brokers();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec![
                "--brokers",
                "127.0.0.1:1",
                "--kafka-timeout",
                "2s",
                "--input",
                &input.name,
                "--output",
                &output.name,
                "--state-dir",
                state_dir,
            ],
            "streamagg: error: cannot reach Kafka at 127.0.0.1:1 within 2s".into(),
        ),
        (
            vec![
                "--brokers",
                &b,
                "--input",
                &missing,
                "--output",
                &output.name,
                "--state-dir",
                state_dir,
            ],
            format!("streamagg: error: input topic '{missing}' does not exist"),
        ),
        (
            vec![
                "--brokers",
                &b,
                "--input",
                &input.name,
                "--output",
                &output.name,
                "--state-dir",
                blocked_dir.to_str().expect("utf8"),
            ],
            "streamagg: error: cannot open the state store in ".into(),
        ),
        (
            vec![
                "--brokers",
                &b,
                "--input",
                &input.name,
                "--output",
                &output.name,
                "--window",
                "0s",
            ],
            "streamagg: error: invalid setting 'window': must be at least 1ms".into(),
        ),
        (
            vec!["--output", &output.name],
            "streamagg: error: missing setting 'input'".into(),
        ),
    ];
    for (args, prefix) in cases {
        let mut full = vec!["run"];
        full.extend(args.iter().copied());
        let started = std::time::Instant::now();
        let out = streamagg(&full);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with(&prefix), "{args:?}: {}", lines[0]);
    }
}

#[test]
fn settings_come_from_flags_over_environment_over_the_config_file() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("streamagg.toml");
    let missing = format!("it-missing-{:016x}", rand::random::<u64>());
    std::fs::write(
        &config,
        format!(
            "input = [\"{missing}\"]\noutput = \"out\"\nwindow = \"0s\"\nbrokers = \"{}\"\n",
            brokers()
        ),
    )
    .expect("write");
    let config = config.to_str().expect("utf8");
    let state_dir = dir.path().join("state");
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_streamagg"));
        command
            .args([
                "run",
                "--config",
                config,
                "--state-dir",
                state_dir.to_str().expect("utf8"),
            ])
            .args(extra);
        command.env("RUST_LOG", "warn");
        for (key, value) in env {
            command.env(key, value);
        }
        let out = command.output().expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    // The file alone: its invalid window is reported.
    assert_eq!(
        run(&[], &[]),
        "streamagg: error: invalid setting 'window': must be at least 1ms"
    );
    // The environment overrides the file; the next problem is the file's missing input topic.
    assert_eq!(
        run(&[("STREAMAGG_WINDOW", "5s")], &[]),
        format!("streamagg: error: input topic '{missing}' does not exist")
    );
    // A flag overrides the environment.
    assert_eq!(
        run(&[("STREAMAGG_WINDOW", "5s")], &["--window", "0s"]),
        "streamagg: error: invalid setting 'window': must be at least 1ms"
    );
    // Unknown keys in the file are refused, with the key named.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "input = [\"a\"]\nwindw = \"1m\"\n").expect("write");
    let out = streamagg(&["run", "--config", typo.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.trim().starts_with(&format!(
            "streamagg: error: config file {}: unknown field `windw`",
            typo.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

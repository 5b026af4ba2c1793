//! The processor against a real broker: its output topic, late topic and DLQ must equal an
//! independent oracle of the documented semantics — for JSON and Avro, across a graceful restart,
//! and with two instances sharing a consumer group.

use std::process::Command;
use std::time::Duration;

use streamagg::codec::Format;

use crate::bounded::{run_bounded, single_error_line};
use crate::common::{brokers, kafka_settings, read_all, streamagg, wait_for_records, TestTopic};
use crate::oracle::{assert_output_matches, Delivery};
use crate::scenario::{assigned_partitions, check_alive, format_name, Scenario, Topics};

fn oracle_test(format: Format) {
    let scenario = Scenario::new(
        &format!("oracle-{}", format_name(format)),
        format,
        4,
        11,
        6_000,
    );
    scenario.preload(scenario.all());
    let expected = scenario.expected();
    assert!(
        expected.windows.len() > 600 && !expected.late.is_empty() && !expected.invalid.is_empty()
    );
    let input_records = read_all(&scenario.topics.input.name);
    let total_lag = || -> i64 {
        let lags = streamagg::reader::group_lag(
            &kafka_settings(),
            &scenario.group,
            std::slice::from_ref(&scenario.topics.input.name),
        )
        .expect("lag readable");
        lags.iter().map(|l| l.lag()).sum()
    };
    assert_eq!(
        total_lag(),
        input_records.len() as i64,
        "a new group lags by the whole topic"
    );
    let mut processor = scenario.start("state");
    let output = scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(120));
    processor.stop_gracefully();
    assert_eq!(total_lag(), 0, "everything consumed was committed");
    assert_output_matches(format, &output, &expected, Delivery::ExactlyOnce);
    // Nothing more arrived after the expected count (no late duplicates).
    let output = read_all(&scenario.topics.output.name);
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
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
    let scenario = Scenario::new("restart", Format::Avro, 4, 12, 6_000);
    let half = scenario.inputs.len() / 2;
    scenario.preload(0..half);
    let mut first = scenario.start("state");
    let partial = wait_for_records(
        &scenario.topics.output.name,
        50,
        Duration::from_secs(60),
        || check_alive(&mut [&mut first]),
    );
    assert!(
        partial.len() >= 50,
        "first run emitted nothing; log:\n{}",
        first.log()
    );
    first.stop_gracefully();

    scenario.preload(half..scenario.inputs.len());
    let between = read_all(&scenario.topics.output.name);
    assert!(
        between.len() < scenario.expected().windows.len(),
        "the first run must stop mid-stream"
    );

    let mut second = scenario.start("state");
    let output = scenario.wait_for_all(&mut [&mut second], Duration::from_secs(120));
    second.stop_gracefully();
    assert!(
        second.log().contains("resume=\"local\""),
        "the restart resumed from local state:\n{}",
        second.log()
    );
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
}

#[test]
fn two_instances_split_the_partitions_and_together_equal_the_oracle() {
    let scenario = Scenario::new("two", Format::Json, 4, 13, 6_000);
    let half = scenario.inputs.len() / 2;
    scenario.preload(0..half);
    let mut a = scenario.start("a");
    wait_for_records(
        &scenario.topics.output.name,
        50,
        Duration::from_secs(60),
        || check_alive(&mut [&mut a]),
    );
    // Wait until b owns partitions (a still running), then feed the rest of the data to both.
    let mut b = scenario.start("b");
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
    scenario.preload(half..scenario.inputs.len());
    let output = scenario.wait_for_all(&mut [&mut a, &mut b], Duration::from_secs(120));
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
        log_b.contains("resume=\"rebuild\""),
        "b rebuilt a handed-over partition from the group commit:\n{log_b}"
    );
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
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
            vec![
                "--brokers",
                &b,
                "--input",
                &input.name,
                "--output",
                &output.name,
                "--percentiles",
                "--percentile-accuracy",
                "1.5",
            ],
            "streamagg: error: invalid setting 'percentile_accuracy': 1.5 is not between 0.000001 and 1 (exclusive)".into(),
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
        let mut command = Command::new(crate::common::binary());
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

/// `--event-time kafka`: windows follow the Kafka record timestamps, not the `timestamp` field (set
/// here to a value that would put every event in the same 1970 window).
#[test]
fn kafka_record_timestamps_drive_the_windows_with_event_time_kafka() {
    use rdkafka::producer::{BaseRecord, Producer};
    let mut scenario = Scenario::with_inputs("kafka-time", Format::Json, 1, Vec::new());
    let topics = &scenario.topics;
    let producer: rdkafka::producer::BaseProducer = crate::common::kafka_settings()
        .client_config("it-kafka-time")
        .create()
        .expect("producer");
    let start = 1_700_000_040_000_i64; // a window start (a multiple of 60 s)
                                       // (Kafka timestamp, value): two events in the first window, one in the next, and a late-enough
                                       // one that closes both (stream time passes start + 120 s + grace).
    let events = [
        (start + 1_000, 10.0),
        (start + 2_000, 20.0),
        (start + 61_000, 40.0),
        (start + 200_000, 1.0),
    ];
    for (timestamp, value) in events {
        let payload = crate::dataset::encode_independently(Format::Json, "link", 0, value);
        producer
            .send(
                BaseRecord::to(&topics.input.name)
                    .key("link")
                    .payload(&payload)
                    .timestamp(timestamp),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");

    scenario.unset("--min-value").set("--event-time", "kafka");
    let windows = json_windows_output(&scenario, 2);
    assert_eq!(windows, vec![(start, 2, 30.0), (start + 60_000, 1, 40.0)]);
}

/// SASL settings reach librdkafka (a SASL handshake against the plaintext test listener fails) and
/// the failure is one line that never carries the password, whether it came from the environment
/// or a file.
#[test]
fn a_failed_sasl_login_is_one_line_without_the_password() {
    let topics = Topics::create("sasl", 1);
    let dir = tempfile::tempdir().expect("dir");
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).expect("written");
    let base = [
        "run",
        "--brokers",
        &brokers(),
        "--input",
        &topics.input.name,
        "--output",
        &topics.output.name,
        "--state-dir",
        dir.path().join("state").to_str().expect("utf8"),
        "--kafka-timeout",
        "3s",
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        "streamagg",
    ]
    .map(str::to_owned);
    let debug = ("RUST_LOG", "debug");
    let deadline = Duration::from_secs(60);
    let (from_env, _) = run_bounded(
        &base,
        &[debug, ("STREAMAGG_SASL_PASSWORD", &password)],
        deadline,
    );
    let mut with_file = base.to_vec();
    with_file.extend([
        "--sasl-password-file".into(),
        password_file.display().to_string(),
    ]);
    let (from_file, _) = run_bounded(&with_file, &[debug], deadline);
    for (how, output) in [("env", from_env), ("file", from_file)] {
        // A SASL login to a plaintext listener fails: one line, without the password.
        single_error_line(how, &output, &[&password]);
    }
}

/// Under exactly-once, results are visible when the checkpoint's transaction commits. A caught-up
/// instance commits soon after windows close instead of waiting for the checkpoint interval: with a
/// 10-minute interval, the closed window must reach a `read_committed` reader within a minute.
#[test]
fn exactly_once_commits_closed_windows_soon_after_they_close_not_at_the_checkpoint_interval() {
    let mut scenario = Scenario::with_inputs("early-commit", Format::Json, 1, Vec::new());
    // A window start (a multiple of 60 s); two events in its window, then one whose timestamp
    // passes its end + grace.
    let start = 1_700_000_040_000_i64;
    let events = [
        (start + 1_000, 60.0),
        (start + 2_000, 90.0),
        (start + 200_000, 70.0),
    ];
    let mut producer = streamagg::producer::RecordProducer::connect(
        &kafka_settings(),
        "it-early-commit",
        &Default::default(),
    )
    .expect("producer");
    for (timestamp, value) in events {
        let payload = crate::dataset::encode_independently(Format::Json, "link", timestamp, value);
        producer
            .send(&scenario.topics.input.name, b"link", &payload, None)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");

    // A 5-minute interval needs a transaction timeout of at least twice that (the broker allows
    // up to 15 minutes).
    scenario
        .config("[kafka.producer]\n\"transaction.timeout.ms\" = 600000\n")
        .set("--checkpoint-interval", "5m")
        .set("--guarantee", "exactly-once");
    // The output is read while the processor runs: stopping it would checkpoint anyway.
    let windows = json_windows_output(&scenario, 1);
    assert_eq!(
        windows,
        vec![(start, 2, 150.0)],
        "the closed window, committed long before the 5-minute checkpoint interval"
    );
}

/// Runs a JSON processor of `scenario` until the output holds `count` records (or a minute passes),
/// then stops it; the output read while it ran, as (window_start, count, sum), decoded with
/// serde_json rather than the codec under test.
fn json_windows_output(scenario: &Scenario, count: usize) -> Vec<(i64, i64, f64)> {
    let mut processor = scenario.start("state");
    let topics = &scenario.topics;
    let output = wait_for_records(&topics.output.name, count, Duration::from_secs(60), || {
        check_alive(&mut [&mut processor])
    });
    processor.assert_alive();
    processor.stop_gracefully();
    output
        .iter()
        .map(|r| {
            let v: serde_json::Value =
                serde_json::from_slice(r.payload.as_deref().expect("payload")).expect("json");
            (
                v["window_start"].as_i64().expect("window_start"),
                v["count"].as_i64().expect("count"),
                v["sum"].as_f64().expect("sum"),
            )
        })
        .collect()
}

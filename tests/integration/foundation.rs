//! The foundation: records round-trip through real topics in both formats, the generator preloads
//! through the binary, and an unreachable cluster is one clear line and a non-zero exit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use streamagg::codec::{decode, encode_to_vec, Format};
use streamagg::generate::{GeneratorConfig, TrafficGenerator};
use streamagg::model::TrafficEvent;
use streamagg::producer::RecordProducer;

use crate::common::{kafka_settings, read_all, streamagg, TestTopic};

fn round_trip(format: Format) {
    let topic = TestTopic::create("roundtrip", 4);
    let mut generator = TrafficGenerator::new(GeneratorConfig {
        sources: 60,
        seed: 7,
        out_of_order_ms: 2_000,
        late_fraction: 0.05,
        late_by_ms: 120_000,
    });
    let sent: Vec<TrafficEvent> = (0..3_000)
        .map(|i| generator.next_event(1_700_000_000_000 + i * 37))
        .collect();

    let mut producer =
        RecordProducer::connect(&kafka_settings(), "it-roundtrip", &Default::default())
            .expect("broker reachable");
    for event in &sent {
        producer
            .send(
                &topic.name,
                event.source.as_bytes(),
                &encode_to_vec(event, format),
                None,
            )
            .expect("queued");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("all delivered");

    let records = read_all(&topic.name);
    assert_eq!(records.len(), sent.len());

    // Kafka keeps order per partition, and keyed records of one source share a partition: so per
    // source, the events read back are exactly the events sent, in order.
    let mut expected: BTreeMap<&str, Vec<&TrafficEvent>> = BTreeMap::new();
    for event in &sent {
        expected.entry(&event.source).or_default().push(event);
    }
    let mut received: BTreeMap<String, Vec<TrafficEvent>> = BTreeMap::new();
    let mut partitions_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for record in &records {
        let event: TrafficEvent =
            decode(record.payload.as_deref().expect("payload"), format).expect("decodes");
        assert_eq!(
            record.key.as_deref(),
            Some(event.source.as_bytes()),
            "keyed by source"
        );
        partitions_of
            .entry(event.source.clone())
            .or_default()
            .insert(record.partition);
        received
            .entry(event.source.clone())
            .or_default()
            .push(event);
    }
    assert_eq!(received.len(), expected.len());
    for (source, events) in &expected {
        let got: Vec<&TrafficEvent> = received[*source].iter().collect();
        assert_eq!(&got, events, "events of {source}");
        assert_eq!(
            partitions_of[*source].len(),
            1,
            "{source} spread over partitions"
        );
    }
    let used: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        used.len() > 1,
        "60 sources should hash to more than one of 4 partitions"
    );
}

#[test]
fn avro_events_round_trip_through_a_real_topic() {
    round_trip(Format::Avro);
}

#[test]
fn json_events_round_trip_through_a_real_topic() {
    round_trip(Format::Json);
}

#[test]
fn produce_command_preloads_and_consume_command_reads_back() {
    let topic = TestTopic::create("produce-cmd", 4);
    let start_ms = 1_700_000_040_000_i64;
    let out = streamagg(&[
        "produce",
        "--topic",
        &topic.name,
        "--brokers",
        &crate::common::brokers(),
        "--count",
        "5000",
        "--sources",
        "25",
        "--format",
        "avro",
        "--span",
        "5m",
        "--start-ms",
        &start_ms.to_string(),
        "--out-of-order-ms",
        "1000",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("produced 5000 events"));

    let out = streamagg(&[
        "consume",
        "--topic",
        &topic.name,
        "--brokers",
        &crate::common::brokers(),
        "--record",
        "event",
        "--format",
        "avro",
    ]);
    assert!(
        out.status.success(),
        "consume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<TrafficEvent> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a TrafficEvent in JSON"))
        .collect();
    assert_eq!(events.len(), 5000);
    let sources: BTreeSet<&str> = events.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources.len(), 25);
    let span_end = start_ms + 5 * 60_000;
    assert!(events
        .iter()
        .all(|e| e.timestamp >= start_ms - 1000 && e.timestamp < span_end));

    // A reader that stops early (`consume … | head -n 1`) ends consume quietly, not with a panic.
    let mut child = std::process::Command::new(crate::common::binary())
        .args(["consume", "--topic", &topic.name, "--brokers"])
        .arg(crate::common::brokers())
        .args(["--record", "event", "--format", "avro"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("consume starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("one line");
    assert!(first.contains("\"source\""), "{first}");
    drop(stdout);
    let output = child.wait_with_output().expect("consume exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn unreachable_broker_is_one_line_and_a_non_zero_exit_within_the_timeout() {
    let started = Instant::now();
    let out = streamagg(&[
        "produce",
        "--brokers",
        "127.0.0.1:1",
        "--kafka-timeout",
        "3s",
        "--topic",
        "t",
        "--count",
        "10",
    ]);
    let elapsed = started.elapsed();
    assert!(!out.status.success());
    assert!(elapsed < Duration::from_secs(13), "took {elapsed:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(
        lines[0].starts_with("streamagg: error: cannot reach Kafka at 127.0.0.1:1 within 3s"),
        "{}",
        lines[0]
    );
}

#[test]
fn missing_topic_is_a_clear_error() {
    let name = format!("it-missing-{:016x}", rand::random::<u64>());
    let out = streamagg(&[
        "consume",
        "--topic",
        &name,
        "--brokers",
        &crate::common::brokers(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("streamagg: error: topic '{name}' does not exist")
    );
}

#[test]
fn invalid_arguments_are_refused_before_connecting() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["produce", "--topic", "t"],
            "give --count, --rate, or both",
        ),
        (
            &[
                "produce",
                "--topic",
                "t",
                "--count",
                "1",
                "--late-fraction",
                "1.5",
            ],
            "--late-fraction must be within [0, 1], got 1.5",
        ),
        (
            &["produce", "--topic", "t", "--rate", "0"],
            "--rate must be a positive number, got 0",
        ),
        (
            &["produce", "--topic", "t", "--count", "1", "--sources", "0"],
            "--sources must be at least 1",
        ),
    ];
    for (args, reason) in cases {
        let out = streamagg(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim(),
            format!("streamagg: error: {reason}"),
            "{args:?}"
        );
    }
}

//! The operator's tools against the real broker: `consume` showing keys, headers, positions and the
//! bytes of undecodable records, seeking by time or to the end and following; `dlq replay`
//! re-injecting DLQ records whose cause was fixed so that they then aggregate as the oracle says;
//! `topics create`/`topics ensure` and `run --create-topics`; completions and the man page.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use serde_json::Value;
use streamagg::codec::Format;
use streamagg::producer::RecordProducer;

use crate::common::{brokers, kafka_settings, read_all, streamagg, wait_for_records, TestTopic};
use crate::dataset::{encode_independently, index_of, json_events, produce_inputs, Input, T0};
use crate::oracle::{header, Delivery};
use crate::scenario::Scenario;

/// A record the test writes: key, value and headers.
type Record<'a> = (&'a [u8], &'a [u8], &'a [(&'a str, &'a [u8])]);

/// Writes records to `topic` and waits for their delivery.
fn produce(topic: &str, records: &[Record<'_>]) {
    let mut producer =
        RecordProducer::connect(&kafka_settings(), "it-operator", &Default::default())
            .expect("broker");
    for (key, value, headers) in records {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(*v),
            })
        });
        producer
            .send(topic, key, value, Some(headers))
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

/// `streamagg consume --topic <topic> <args>`: its JSON lines, parsed; it must succeed.
fn consume(topic: &str, args: &[&str]) -> Vec<Value> {
    let brokers = brokers();
    let mut all = vec!["consume", "--brokers", &brokers, "--topic", topic];
    all.extend(args);
    let out = streamagg(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "consume {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn consume_shows_keys_headers_positions_and_undecodable_records_with_their_bytes() {
    let topic = TestTopic::create("consume-show", 1);
    let event = encode_independently(Format::Json, "a", T0, 7.5);
    let bad: &[u8] = b"\xff\x00bad";
    produce(
        &topic.name,
        &[
            (b"a", &event, &[("h", b"v")]),
            (b"\xfe", bad, &[("streamagg.error", b"invalid JSON")]),
        ],
    );
    // Without flags: the decoded record alone, and the undecodable one shown, not skipped.
    let plain = consume(&topic.name, &["--record", "event"]);
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert_eq!(
        plain[0],
        serde_json::json!({"source": "a", "timestamp": T0, "value": 7.5})
    );
    assert_eq!(plain[1]["offset"], 1);
    assert_eq!(
        plain[1]["value_base64"], "/wBiYWQ=",
        "base64 of ff 00 'bad'"
    );
    assert!(plain[1]["error"].as_str().is_some_and(|e| !e.is_empty()));

    let all = consume(
        &topic.name,
        &[
            "--record",
            "event",
            "--keys",
            "--headers",
            "--positions",
            "--raw",
            "hex",
        ],
    );
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["key"], "a");
    assert_eq!(all[0]["headers"], serde_json::json!([["h", "v"]]));
    assert_eq!(
        (all[0]["partition"].clone(), all[0]["offset"].clone()),
        (0.into(), 0.into())
    );
    assert!(all[0]["timestamp"].as_i64().is_some_and(|t| t > T0));
    assert_eq!(all[0]["record"]["source"], "a");
    assert_eq!(all[1]["key"], serde_json::json!({"hex": "fe"}));
    assert_eq!(all[1]["value_hex"], "ff00626164");
    assert_eq!(
        all[1]["headers"],
        serde_json::json!([["streamagg.error", "invalid JSON"]])
    );

    let raw = consume(&topic.name, &["--record", "raw"]);
    assert_eq!(raw.len(), 2);
    assert!(raw.iter().all(|r| r.get("error").is_none()), "{raw:?}");
    assert_eq!(raw[1]["value_base64"], "/wBiYWQ=");
}

#[test]
fn consume_starts_at_a_time_or_the_end_and_follows_new_records_until_told_to_stop() {
    let topic = TestTopic::create("consume-seek", 2);
    let record = |key: &'static str| (key.as_bytes(), key.as_bytes(), &[][..]);
    produce(&topic.name, &[record("old-1"), record("old-2")]);
    std::thread::sleep(Duration::from_millis(50));
    let cut = streamagg::producer::now_ms();
    std::thread::sleep(Duration::from_millis(50));
    produce(
        &topic.name,
        &[record("new-1"), record("new-2"), record("new-3")],
    );
    let keys = |lines: &[Value]| -> Vec<String> {
        let mut keys: Vec<String> = lines
            .iter()
            .map(|l| l["key"].as_str().expect("key").to_owned())
            .collect();
        keys.sort();
        keys
    };
    let rfc3339 =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(cut as u64))
            .to_string();
    for from in [cut.to_string(), rfc3339] {
        let lines = consume(&topic.name, &["--record", "raw", "--keys", "--from", &from]);
        assert_eq!(keys(&lines), ["new-1", "new-2", "new-3"], "--from {from}");
    }
    assert!(consume(&topic.name, &["--from", "end"]).is_empty());
    let first = consume(&topic.name, &["--record", "raw", "--max-records", "1"]);
    assert_eq!(first.len(), 1);

    // --from end --follow: only records written after it started, then it stops at --max-records.
    let mut follower = Command::new(crate::common::binary())
        .args(["consume", "--brokers", &brokers(), "--topic", &topic.name])
        .args(["--record", "raw", "--keys", "--from", "end", "--follow"])
        .args(["--max-records", "2", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("consume starts");
    let stdout = follower.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.expect("a line"));
        }
    });
    // It resolves "end" at some point after starting: write until it has shown two records.
    let started = Instant::now();
    let mut seen = Vec::new();
    for n in 0.. {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "follow showed {seen:?}"
        );
        let key = format!("live-{n}");
        produce(&topic.name, &[(key.as_bytes(), b"x", &[])]);
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(serde_json::from_str::<Value>(&line).expect("json"));
        }
        if seen.len() >= 2 {
            break;
        }
    }
    let output = follower.wait_with_output().expect("exits");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        keys(&seen).iter().all(|k| k.starts_with("live-")),
        "only records written after the start: {seen:?}"
    );

    // Without bounds, --follow stops on SIGTERM, exit 0.
    let mut follower = crate::common::StreamaggProcess::spawn(
        "consume",
        &["--brokers", &brokers(), "--topic", &topic.name, "--follow"],
    );
    std::thread::sleep(Duration::from_secs(2));
    follower.assert_alive();
    follower.stop_gracefully();
}

/// The records of `topic` by their dataset index.
fn by_index(topic: &str) -> BTreeMap<usize, streamagg::reader::RawRecord> {
    read_all(topic)
        .into_iter()
        .map(|r| (index_of(&r), r))
        .collect()
}

#[test]
fn dlq_replay_reinjects_records_whose_cause_was_fixed_and_they_then_aggregate_like_the_oracle() {
    // The cause: an instance configured for Avro reads JSON, so every record goes to its DLQ.
    let inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("b", T0 + 2_000, 70.0),
        ("a", T0 + 3_000, 80.0),
        ("b", T0 + 61_000, 90.0),
        ("a", T0 + 200_000, 100.0),
    ]);
    let mut wrong = Scenario::with_inputs("replay-wrong", Format::Json, 2, inputs);
    wrong.set("--input-format", "avro");
    wrong.preload(wrong.all());
    // One record that fails for another reason under Avro too (an empty source): not replayed. Its
    // index is outside the dataset's.
    let empty_source = encode_independently(Format::Avro, "", T0, 1.0);
    produce(
        &wrong.topics.input.name,
        &[(
            b"e",
            &empty_source,
            &[(crate::dataset::INDEX_HEADER, b"99")],
        )],
    );
    let mut processor = wrong.start("wrong");
    let dlq = wait_for_records(&wrong.topics.dlq.name, 6, Duration::from_secs(60), || {
        processor.assert_alive()
    });
    processor.stop_gracefully();
    assert_eq!(dlq.len(), 6, "every record in the DLQ");
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| header(r, "streamagg.error").expect("reason"))
        .collect();
    let avro = reasons
        .iter()
        .filter(|r| r.contains("invalid Avro"))
        .count();
    assert_eq!(
        (
            avro,
            reasons
                .iter()
                .filter(|r| r.contains("empty source"))
                .count()
        ),
        (5, 1),
        "{reasons:?}"
    );

    // Fixed: a JSON instance on a topic of its own, fed by the replay.
    let same_inputs = wrong
        .inputs
        .iter()
        .map(|i| Input {
            source: i.source.clone(),
            payload: i.payload.clone(),
        })
        .collect();
    let fixed = Scenario::with_inputs("replay-fixed", Format::Json, 2, same_inputs);
    let brokers = brokers();
    let replay = |extra: &[&str]| {
        let mut args = vec!["dlq", "replay", "--brokers", &brokers];
        args.extend(["--from-topic", &wrong.topics.dlq.name]);
        args.extend([
            "--to-topic",
            &fixed.topics.input.name,
            "--reason",
            "invalid Avro",
        ]);
        args.extend(extra);
        let out = streamagg(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = replay(&["--dry-run"]);
    assert!(dry.contains("would replay 5 of"), "{dry}");
    assert!(dry.contains("skipped 1 with another reason"), "{dry}");
    assert!(
        read_all(&fixed.topics.input.name).is_empty(),
        "a dry run produces nothing"
    );
    let done = replay(&[]);
    assert!(done.contains("replayed 5 of"), "{done}");

    let originals = by_index(&wrong.topics.input.name);
    let dlq_positions: BTreeMap<usize, String> = dlq
        .iter()
        .filter(|r| header(r, "streamagg.error").is_some_and(|e| e.contains("invalid Avro")))
        .map(|r| {
            (
                index_of(r),
                format!("{}/{}/{}", wrong.topics.dlq.name, r.partition, r.offset),
            )
        })
        .collect();
    let replayed = by_index(&fixed.topics.input.name);
    assert_eq!(replayed.len(), 5);
    for (index, record) in &replayed {
        let original = &originals[index];
        assert_eq!(record.key, original.key, "key bytes of {index}");
        assert_eq!(record.payload, original.payload, "value bytes of {index}");
        assert_eq!(
            header(record, "streamagg.replayed-from").as_ref(),
            dlq_positions.get(index)
        );
        assert_eq!(
            header(record, "streamagg.error"),
            None,
            "the DLQ's headers are dropped"
        );
    }
    let mut processor = fixed.start("fixed");
    let output = fixed.wait_for_all(&mut [&mut processor], Duration::from_secs(60));
    fixed.assert_matches(Delivery::ExactlyOnce, &output);
    assert!(!fixed.expected().windows.is_empty());
    processor.stop_gracefully();
}

/// `streamagg dlq replay --from-topic <from> --to-topic <to> <extra>`.
fn replay_run(from: &str, to: &str, extra: &[&str]) -> std::process::Output {
    let brokers = brokers();
    let mut args = vec!["dlq", "replay", "--brokers", &brokers];
    args.extend(["--from-topic", from, "--to-topic", to]);
    args.extend(extra);
    streamagg(&args)
}

/// [`replay_run`], which must succeed: its stdout.
fn replay_ok(from: &str, to: &str, extra: &[&str]) -> String {
    let out = replay_run(from, to, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay {extra:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The header a test's DLQ record carries its number in.
const RECORD_NUMBER: &str = "it.n";

/// Writes DLQ records number `numbers` to `topic`: key `k<n>`, value `v<n>`, a reason and
/// [`RECORD_NUMBER`].
fn produce_dlq_records(topic: &str, numbers: std::ops::Range<usize>) {
    let texts: Vec<(String, String, String)> = numbers
        .map(|n| (format!("k{n}"), format!("v{n}"), n.to_string()))
        .collect();
    let headers: Vec<[(&str, &[u8]); 2]> = texts
        .iter()
        .map(|(_, _, n)| {
            [
                ("streamagg.error", &b"invalid JSON: expected value"[..]),
                (RECORD_NUMBER, n.as_bytes()),
            ]
        })
        .collect();
    let records: Vec<Record<'_>> = texts
        .iter()
        .zip(&headers)
        .map(|((k, v, _), h)| (k.as_bytes(), v.as_bytes(), &h[..]))
        .collect();
    produce(topic, &records);
}

/// How many times each record number is on `topic`.
fn copies_by_number(topic: &str) -> BTreeMap<usize, usize> {
    let mut copies = BTreeMap::new();
    for record in read_all(topic) {
        let n = header(&record, RECORD_NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no record number: {record:?}"));
        *copies.entry(n).or_insert(0) += 1;
    }
    copies
}

/// Each of `0..count` exactly once.
fn once_each(count: usize) -> BTreeMap<usize, usize> {
    (0..count).map(|n| (n, 1)).collect()
}

#[test]
fn dlq_replay_run_again_replays_only_what_no_earlier_run_did() {
    let dlq = TestTopic::create("replay-twice-dlq", 2);
    let target = TestTopic::create("replay-twice-to", 2);
    produce_dlq_records(&dlq.name, 0..10);
    let first = replay_ok(&dlq.name, &target.name, &[]);
    assert!(first.contains("replayed 10 of"), "{first}");
    assert!(first.contains("progress committed to group"), "{first}");
    let second = replay_ok(&dlq.name, &target.name, &[]);
    assert!(second.contains("replayed 0 of"), "{second}");
    assert_eq!(copies_by_number(&target.name), once_each(10));

    // Records added since: only they are replayed; a dry run shows them and changes nothing.
    produce_dlq_records(&dlq.name, 10..13);
    let dry = replay_ok(&dlq.name, &target.name, &["--dry-run"]);
    assert!(dry.contains("would replay 3 of"), "{dry}");
    let third = replay_ok(&dlq.name, &target.name, &[]);
    assert!(third.contains("replayed 3 of"), "{third}");
    assert_eq!(copies_by_number(&target.name), once_each(13));

    // --restart ignores the progress on purpose; --group keeps a progress of its own.
    let restarted = replay_ok(&dlq.name, &target.name, &["--restart", "--dry-run"]);
    assert!(restarted.contains("would replay 13 of"), "{restarted}");
    let group = crate::scenario::random_group();
    let other = replay_ok(&dlq.name, &target.name, &["--group", &group, "--dry-run"]);
    assert!(other.contains("would replay 13 of"), "{other}");
    assert_eq!(copies_by_number(&target.name), once_each(13));
}

#[test]
fn dlq_replay_stopped_part_way_then_run_again_replays_each_record_once() {
    let dlq = TestTopic::create("replay-part-dlq", 2);
    let target = TestTopic::create("replay-part-to", 2);
    produce_dlq_records(&dlq.name, 0..10);
    let first = replay_ok(&dlq.name, &target.name, &["--max-records", "4"]);
    assert!(first.contains("replayed 4 of"), "{first}");
    assert!(first.contains("stopped after --max-records 4"), "{first}");
    assert_eq!(copies_by_number(&target.name).len(), 4);
    let rest = replay_ok(&dlq.name, &target.name, &[]);
    assert!(rest.contains("replayed 6 of"), "{rest}");
    assert_eq!(copies_by_number(&target.name), once_each(10));
}

#[test]
fn dlq_replay_stopped_by_its_deadline_keeps_what_it_delivered_and_a_rerun_continues() {
    const COUNT: usize = 400_000;
    let dlq = TestTopic::create("replay-deadline-dlq", 2);
    let target = TestTopic::create("replay-deadline-to", 2);
    produce_dlq_records(&dlq.name, 0..COUNT);
    // A deadline far too short to read them all: a run stops at it part-way, waits for what it
    // produced and commits how far it got; the runs together replay each record once.
    let mut stopped = 0;
    for run in 0.. {
        assert!(
            run < 100,
            "{stopped} runs stopped at the deadline, none finished"
        );
        let out = replay_run(&dlq.name, &target.name, &["--deadline", "300ms"]);
        eprintln!(
            "run {run}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("streamagg: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {stderr}");
        assert!(errors[0].contains("did not reach its end"), "{stderr}");
        assert!(
            errors[0].contains(" records and replayed ")
                && errors[0].contains("(all delivered)")
                && errors[0].contains("a re-run continues after them"),
            "how far it got: {stderr}"
        );
        stopped += 1;
    }
    assert!(stopped > 0, "the deadline never stopped a run");
    assert_eq!(copies_by_number(&target.name), once_each(COUNT));
}

#[test]
fn dlq_replay_stopped_by_a_signal_keeps_what_it_delivered_and_a_rerun_continues() {
    const COUNT: usize = 400_000;
    let dlq = TestTopic::create("replay-signal-dlq", 2);
    let target = TestTopic::create("replay-signal-to", 2);
    produce_dlq_records(&dlq.name, 0..COUNT);
    let brokers = brokers();
    let replay = crate::common::StreamaggProcess::spawn(
        "dlq",
        &[
            "replay",
            "--brokers",
            &brokers,
            "--from-topic",
            &dlq.name,
            "--to-topic",
            &target.name,
        ],
    );
    std::thread::sleep(Duration::from_millis(400));
    let mut replay = replay;
    replay.signal("TERM");
    let status = replay.wait(Duration::from_secs(60));
    let log = replay.log();
    // Mostly stopped part-way; on a fast machine it may have finished first.
    eprintln!(
        "the signal stopped the replay part-way: {}",
        !status.success()
    );
    if !status.success() {
        assert_eq!(status.code(), Some(1), "{log}");
        let error = log
            .lines()
            .find(|line| line.starts_with("streamagg: error:"))
            .unwrap_or_else(|| panic!("an error line: {log}"));
        assert!(
            error.contains("stopped by a signal")
                && error.contains("(all delivered)")
                && error.contains("a re-run continues after them"),
            "{log}"
        );
    }
    replay_ok(&dlq.name, &target.name, &[]);
    assert_eq!(copies_by_number(&target.name), once_each(COUNT));
}

#[test]
fn dlq_replay_keeps_null_keys_and_values_null_and_empty_ones_empty() {
    let dlq = TestTopic::create("replay-null-dlq", 1);
    let target = TestTopic::create("replay-null-to", 1);
    /// A key and a value, either of them null.
    type Nullable<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
    let cases: [Nullable<'_>; 5] = [
        (None, Some(&b"keyless"[..])),
        (Some(&b"tombstone"[..]), None),
        (None, None),
        (Some(&b""[..]), Some(&b""[..])),
        (Some(&b"k\xff"[..]), Some(&b"\x00v"[..])),
    ];
    let mut producer =
        RecordProducer::connect(&kafka_settings(), "it-operator", &Default::default())
            .expect("broker");
    for (n, (key, value)) in cases.iter().enumerate() {
        let number = n.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "streamagg.error",
                value: Some("invalid JSON"),
            })
            .insert(Header {
                key: RECORD_NUMBER,
                value: Some(number.as_str()),
            });
        producer
            .send_nullable(&dlq.name, *key, *value, Some(headers))
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
    let originals = read_all(&dlq.name);
    assert_eq!(
        originals
            .iter()
            .map(|r| (r.key.as_deref(), r.payload.as_deref()))
            .collect::<Vec<_>>(),
        cases,
        "the DLQ holds them as written"
    );
    let done = replay_ok(&dlq.name, &target.name, &[]);
    assert!(done.contains("replayed 5 of"), "{done}");
    let mut replayed = read_all(&target.name);
    replayed.sort_by_key(|r| header(r, RECORD_NUMBER));
    assert_eq!(
        replayed
            .iter()
            .map(|r| (r.key.as_deref(), r.payload.as_deref()))
            .collect::<Vec<_>>(),
        cases,
        "key and value bytes as they were, null included"
    );
}

#[test]
fn dlq_replay_of_a_record_that_fails_again_retries_it_once_per_run() {
    // A running processor sends what it cannot decode to its DLQ; replaying the DLQ into its input
    // makes that record fail again: each run adds one copy, never doubles them.
    let input = TestTopic::create("replay-again-in", 1);
    let (output, dlq) = (
        TestTopic::create("replay-again-out", 1),
        TestTopic::create("replay-again-dlq", 1),
    );
    produce(
        &input.name,
        &[(b"s", b"{not json", &[(RECORD_NUMBER, b"0")])],
    );
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().to_str().expect("utf8");
    let group = crate::scenario::random_group();
    let brokers = brokers();
    let mut processor = crate::common::StreamaggProcess::start(&[
        "--brokers",
        &brokers,
        "--input",
        &input.name,
        "--output",
        &output.name,
        "--dlq-topic",
        &dlq.name,
        "--group",
        &group,
        "--state-dir",
        state,
        "--checkpoint-interval",
        "200ms",
    ]);
    let wait_for_dlq = |processor: &mut crate::common::StreamaggProcess, count: usize| {
        let records = wait_for_records(&dlq.name, count, Duration::from_secs(60), || {
            processor.assert_alive()
        });
        assert_eq!(records.len(), count, "DLQ records");
    };
    wait_for_dlq(&mut processor, 1);
    // The progress is never kept in a group with members: the processor's is refused.
    let busy = replay_run(&dlq.name, &input.name, &["--group", &group]);
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("streamagg: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("active member"), "{stderr}");
    for run in 1..=3 {
        let done = replay_ok(&dlq.name, &input.name, &[]);
        assert!(done.contains("replayed 1 of"), "run {run}: {done}");
        wait_for_dlq(&mut processor, 1 + run);
    }
    // Time for any further copy to arrive.
    std::thread::sleep(Duration::from_secs(2));
    processor.stop_gracefully();
    assert_eq!(read_all(&dlq.name).len(), 4, "the original and one per run");
    assert_eq!(copies_by_number(&input.name), BTreeMap::from([(0, 4)]));
}

/// Partition count, replication factor and the given configs of `topic`, asked of the broker with
/// rdkafka's admin client directly.
fn described(topic: &str, keys: &[&str]) -> (usize, usize, BTreeMap<String, String>) {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin");
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let t = &metadata.topics()[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let configs = runtime
        .block_on(admin.describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("describe");
    let resource = configs.into_iter().next().expect("one").expect("described");
    let picked = resource
        .entries
        .into_iter()
        .filter(|e| keys.contains(&e.name.as_str()))
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    (
        t.partitions().len(),
        t.partitions()[0].replicas().len(),
        picked,
    )
}

/// `topic`'s partition count, asked by a client that never asks the broker to create it (the
/// test's own `described` uses an admin client, whose lookups would).
fn partitions_of(topic: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let settings = kafka_settings();
    let consumer: BaseConsumer<streamagg::kafka::context::StreamaggContext> = settings
        .client_config("it-lookup")
        .set("allow.auto.create.topics", "false")
        .create_with_context(Default::default())
        .expect("consumer");
    streamagg::kafka::admin::partition_count(consumer.client(), &settings, topic).expect("metadata")
}

/// Looking a topic up never creates it, also on a broker with `auto.create.topics.enable=true`
/// (Apache's default; `KAFKA_AUTO_CREATE_TOPICS=true scripts/kafka up`), where librdkafka's
/// producer default would: `run` refuses a missing output topic and leaves it missing, and
/// `topics ensure` then creates it shaped like the input, not like the broker's defaults
/// (`num.partitions=4` on the test broker). On a broker without auto-creation it holds as well.
#[test]
fn looking_up_a_missing_topic_never_creates_it() {
    let input = TestTopic::create("lookup-in", 3);
    let output = TestTopic::named("lookup-out");
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state");
    let args: Vec<String> = [
        "run",
        "--brokers",
        brokers().as_str(),
        "--input",
        input.name.as_str(),
        "--output",
        output.name.as_str(),
        "--group",
        crate::scenario::random_group().as_str(),
        "--state-dir",
        state.to_str().expect("utf8"),
    ]
    .map(str::to_owned)
    .to_vec();
    let (run, _) =
        crate::bounded::run_bounded(&args, &[("RUST_LOG", "warn")], Duration::from_secs(30));
    let line = crate::bounded::single_error_line("run", &run, &[]);
    assert!(
        line.contains(&format!("output topic '{}' does not exist", output.name)),
        "{line}"
    );
    assert_eq!(
        partitions_of(&output.name),
        None,
        "the start-up check created it"
    );

    let ensure = streamagg(&[
        "topics",
        "ensure",
        "--brokers",
        &brokers(),
        "--input",
        &input.name,
        "--output",
        &output.name,
    ]);
    let stdout = String::from_utf8_lossy(&ensure.stdout);
    assert!(
        ensure.status.success(),
        "{}",
        String::from_utf8_lossy(&ensure.stderr)
    );
    assert!(stdout.contains(": created"), "{stdout}");
    assert_eq!(
        partitions_of(&output.name),
        Some(3),
        "shaped like the input"
    );
}

#[test]
fn topics_ensure_creates_missing_topics_shaped_like_the_input_and_is_idempotent() {
    let input = TestTopic::create_with_config("ensure-in", 3, &[("retention.ms", "600000")]);
    let (output, late, dlq) = (
        TestTopic::named("ensure-out"),
        TestTopic::named("ensure-late"),
        TestTopic::named("ensure-dlq"),
    );
    let brokers = brokers();
    let ensure = |extra: &[&str]| {
        let mut args = vec!["topics", "ensure", "--brokers", &brokers];
        args.extend(["--input", &input.name, "--output", &output.name]);
        args.extend(["--late", &late.name, "--dlq", &dlq.name]);
        args.extend(extra);
        streamagg(&args)
    };
    let first = ensure(&["--config", "max.message.bytes=200000"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    assert!(first.status.success(), "{stderr}");
    assert_eq!(stdout.matches(": created").count(), 3, "{stdout}");
    assert!(
        stderr.contains("keeps records for 10m"),
        "the input's short retention: {stderr}"
    );
    let keys = ["compression.type", "retention.ms", "max.message.bytes"];
    for (topic, retention) in [
        (&output, "604800000"),
        (&late, "604800000"),
        (&dlq, "1209600000"),
    ] {
        let (partitions, replication, configs) = described(&topic.name, &keys);
        assert_eq!((partitions, replication), (3, 1), "{}", topic.name);
        assert_eq!(configs["compression.type"], "lz4");
        assert_eq!(configs["retention.ms"], retention);
        assert_eq!(configs["max.message.bytes"], "200000");
    }

    let again = ensure(&[]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert_eq!(stdout.matches(": exists").count(), 3, "{stdout}");
    assert!(!stdout.contains("created"), "{stdout}");
    let strict = ensure(&["--strict"]);
    assert_eq!(strict.status.code(), Some(1), "warnings fail with --strict");

    // An existing topic with fewer partitions than the input is reported, and left as it is.
    let small = TestTopic::create("ensure-small", 1);
    let args = [
        "topics",
        "ensure",
        "--brokers",
        &brokers,
        "--input",
        &input.name,
        "--output",
        &small.name,
    ];
    let out = streamagg(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(
        stderr.contains(&format!(
            "output topic '{}' has 1 partitions, fewer than the input's 3",
            small.name
        )),
        "{stderr}"
    );
    assert_eq!(described(&small.name, &[]).0, 1);

    // topics create: replication factor and configs.
    let made = TestTopic::named("create-configs");
    let out = streamagg(&[
        "topics",
        "create",
        &made.name,
        "--brokers",
        &brokers,
        "--partitions",
        "2",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=123456",
        "--config",
        "cleanup.policy=compact",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (partitions, _, configs) = described(&made.name, &["retention.ms", "cleanup.policy"]);
    assert_eq!(partitions, 2);
    assert_eq!(
        (
            configs["retention.ms"].as_str(),
            configs["cleanup.policy"].as_str()
        ),
        ("123456", "compact")
    );
}

#[test]
fn run_with_create_topics_creates_the_missing_written_topics_and_processes() {
    let inputs = json_events(&[("a", T0 + 1_000, 60.0), ("a", T0 + 200_000, 70.0)]);
    let input = TestTopic::create("create-run-in", 2);
    produce_inputs(&input.name, &inputs, 0..inputs.len());
    let (output, dlq) = (
        TestTopic::named("create-run-out"),
        TestTopic::named("create-run-dlq"),
    );
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().to_str().expect("utf8");
    let group = crate::scenario::random_group();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--brokers",
            &brokers(),
            "--input",
            &input.name,
            "--output",
            &output.name,
            "--dlq-topic",
            &dlq.name,
            "--group",
            &group,
            "--state-dir",
            state,
            "--checkpoint-interval",
            "200ms",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    // Off by default: a missing output is refused, as before.
    let mut refused = crate::common::StreamaggProcess::start(&args(&[]));
    let lines = refused.refusal_lines(Duration::from_secs(30));
    assert!(
        lines.iter().any(|l| l.contains("does not exist")),
        "{lines:?}"
    );

    let mut processor = crate::common::StreamaggProcess::start(&args(&["--create-topics"]));
    let started = Instant::now();
    let settings = kafka_settings();
    let admin = streamagg::kafka::admin::admin_client(&settings).expect("admin");
    let exists = |topic: &str| {
        streamagg::kafka::admin::partition_count(admin.inner(), &settings, topic)
            .expect("metadata")
            .is_some()
    };
    while !(exists(&output.name) && exists(&dlq.name)) {
        processor.assert_alive();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "topics not created"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output_records = wait_for_records(&output.name, 1, Duration::from_secs(60), || {
        processor.assert_alive()
    });
    processor.stop_gracefully();
    assert_eq!(output_records.len(), 1, "the window of a");
    assert_eq!(described(&output.name, &[]).0, 2);
    assert_eq!(described(&dlq.name, &[]).0, 2);
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_command_line() {
    let bash = streamagg(&["completions", "bash"]);
    assert!(bash.status.success());
    let text = String::from_utf8_lossy(&bash.stdout);
    assert!(
        text.contains("streamagg") && text.contains("--follow"),
        "{text}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("streamagg.bash");
    std::fs::write(&path, &bash.stdout).expect("written");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = streamagg(&["completions", shell]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("replay"),
            "{shell}"
        );
    }
    let man = streamagg(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success());
    assert!(
        page.starts_with(".ie") || page.contains(".TH streamagg"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(
        page.contains("consume") && page.contains("dlq"),
        "the subcommands are listed"
    );
}

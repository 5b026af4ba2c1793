//! Hostile input and hostile operations: an oversized source, a side output too large for its topic,
//! an input topic deleted and created again under the processor, changed window semantics on an
//! existing state dir and group, a hand-off whose new owner closed windows by idleness, and a
//! checkpoint interval the transaction timeout cannot hold, and an output topic that refuses every
//! record until its limit is raised (the transaction is aborted and the work redone in place, from
//! where each partition started). Each outcome is checked against the oracle or against exact
//! expectations computed by the test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use streamagg::codec::Format;
use streamagg::reader::RawRecord;

use crate::common::{
    config_file, metric_sum, read_all, wait_for_records, ProcessorProcess, TestTopic,
};
use crate::dataset::{
    dataset, dataset_from, index_of, json_events, produce_inputs, produce_inputs_with_headers,
    Input, DATASET_START,
};
use crate::oracle::{
    assert_output_matches, assert_side_topic, assert_topics_match, header, oracle, Delivery,
    Expected,
};
use crate::scenario::{
    check_alive, random_group, set_arg, wait_for_output, wait_until_assigned, Topics,
};

/// The offset in the input topic of the record with dataset index `index`.
fn input_offset(input_records: &[RawRecord], index: usize) -> i64 {
    input_records
        .iter()
        .find(|r| index_of(r) == index)
        .map(|r| r.offset)
        .expect("the record is in the input topic")
}

/// Standard JSON processor arguments on `topics` with a new group and `state_dir`.
fn json_args(topics: &Topics, group: &str, state_dir: &std::path::Path) -> Vec<String> {
    topics.args("json", group, state_dir.to_str().expect("utf8"))
}

/// A window start (a multiple of 60 s) for the tests' hand-made events.
const T0: i64 = 1_700_000_040_000;

#[test]
fn an_oversized_source_goes_to_the_dlq_and_costs_no_other_window() {
    let topics = Topics::create("oversized", 1);
    let oversized = "x".repeat(600_000);
    let mut inputs = json_events(&[
        ("y", T0 + 1_000, 60.0),
        ("oversized", T0 + 2_000, 70.0),
        ("z", T0 + 3_000, 80.0),
        ("zz", T0 + 4_000, 90.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    // Keyed short (the key is not what is checked); the payload's source is 600,000 bytes.
    inputs[1].payload =
        crate::dataset::encode_independently(Format::Json, &oversized, T0 + 2_000, 70.0);
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let input_records = read_all(&topics.input.name);
    let expected = oracle(Format::Json, &inputs, &input_records);
    let windows: Vec<&str> = expected.windows.keys().map(|(s, _)| s.as_str()).collect();
    assert_eq!(windows, ["y", "z", "zz"], "the oracle's windows");
    assert_eq!(expected.invalid, BTreeSet::from([1]), "the oracle's DLQ");

    let dir = tempfile::tempdir().expect("dir");
    let mut processor =
        ProcessorProcess::start(&json_args(&topics, &random_group(), &dir.path().join("s")));
    let output = wait_for_records(&topics.output.name, 3, Duration::from_secs(60), || {
        check_alive(&mut [&mut processor])
    });
    processor.assert_alive();
    assert_topics_match(
        Format::Json,
        &topics,
        &expected,
        Delivery::ExactlyOnce,
        &read_all(&topics.output.name),
    );
    assert_eq!(output.len(), 3);
    let dlq = read_all(&topics.dlq.name);
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
    let topics = Topics {
        input: TestTopic::create("marker-in", 1),
        output: TestTopic::create("marker-out", 1),
        late: TestTopic::create("marker-late", 1),
        dlq: TestTopic::create_with_config("marker-dlq", 1, &[("max.message.bytes", "100000")]),
    };
    let mut inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("huge", T0 + 1_500, 0.0),
        ("b", T0 + 2_000, 70.0),
        ("a", T0 + 3_000, 80.0),
        ("c", T0 + 5_000, 90.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    // Not JSON, and incompressible: the lz4-compressed batch stays above the DLQ's 100,000 bytes.
    let mut huge = vec![0xff_u8; 300_000];
    rand::Rng::fill(&mut rand::rng(), &mut huge[1..]);
    inputs[1].payload = huge;
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let input_records = read_all(&topics.input.name);
    let expected = oracle(Format::Json, &inputs, &input_records);
    assert_eq!(expected.windows.len(), 3, "a, b and c");
    assert_eq!(expected.invalid, BTreeSet::from([1]));

    let dir = tempfile::tempdir().expect("dir");
    let mut processor =
        ProcessorProcess::start(&json_args(&topics, &random_group(), &dir.path().join("s")));
    let output = wait_for_output(
        &mut processor,
        &topics,
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
        Some(inputs[1].payload.len().to_string())
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

/// The records of `topic` that are not in `before` (an earlier read of it).
fn records_since(topic: &str, before: &[RawRecord]) -> Vec<RawRecord> {
    let seen: BTreeSet<(i32, i64)> = before.iter().map(|r| (r.partition, r.offset)).collect();
    read_all(topic)
        .into_iter()
        .filter(|r| !seen.contains(&(r.partition, r.offset)))
        .collect()
}

/// Lines of a log (text or JSON format) at ERROR level that mention `word`.
fn error_lines_mentioning<'a>(log: &'a str, word: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|line| line.contains(" ERROR ") || line.contains(r#""level":"ERROR""#))
        .filter(|line| line.to_lowercase().contains(word))
        .collect()
}

#[test]
fn a_recreated_input_topic_is_processed_from_fresh_state_not_skipped() {
    let format = Format::Json;
    let topics = Topics::create("recreated", 4);
    let old = dataset(format, 31, 1_000);
    produce_inputs(&topics.input.name, &old, 0..old.len());
    let expected_old = oracle(format, &old, &read_all(&topics.input.name));

    let dir = tempfile::tempdir().expect("dir");
    let args = json_args(&topics, &random_group(), &dir.path().join("s"));
    let mut first = ProcessorProcess::start(&args);
    wait_for_records(
        &topics.output.name,
        expected_old.windows.len(),
        Duration::from_secs(90),
        || check_alive(&mut [&mut first]),
    );
    first.stop_gracefully();
    let first_output = read_all(&topics.output.name);
    assert_output_matches(format, &first_output, &expected_old, Delivery::ExactlyOnce);
    let (dlq_before, late_before) = (read_all(&topics.dlq.name), read_all(&topics.late.name));

    topics.input.recreate(4, Duration::from_secs(60));
    assert!(
        read_all(&topics.input.name).is_empty(),
        "the new topic is empty"
    );
    // Later event time than anything before (the first batch's stream time is its start + 1 h).
    let new = dataset_from(format, 32, 500, DATASET_START + 2 * 3_600_000);
    produce_inputs(&topics.input.name, &new, 0..new.len());
    let expected_new = oracle(format, &new, &read_all(&topics.input.name));
    assert!(expected_new.windows.len() > 50 && !expected_new.invalid.is_empty());

    let mut second = ProcessorProcess::start(&args);
    let addr = second.telemetry_addr(Duration::from_secs(30));
    let output = wait_for_records(
        &topics.output.name,
        first_output.len() + expected_new.windows.len(),
        Duration::from_secs(60),
        || check_alive(&mut [&mut second]),
    );
    let consumed = metric_sum(addr, "streamagg_records_consumed_total");
    // Counters are published once a second: wait for the reset to show.
    let resets = second.wait_for_metric(
        "streamagg_partition_resets_total",
        1.0,
        Duration::from_secs(10),
    );
    let log = second.log();
    second.stop_gracefully();
    assert!(
        output.len() >= first_output.len() + expected_new.windows.len(),
        "{} of the {} windows of the recreated topic within 60 s ({consumed} records consumed); \
         log:\n{log}",
        output.len() - first_output.len(),
        expected_new.windows.len()
    );
    let new_output = records_since(&topics.output.name, &first_output);
    assert_output_matches(format, &new_output, &expected_new, Delivery::ExactlyOnce);
    for (topic, before, expected) in [
        (&topics.dlq.name, &dlq_before, &expected_new.invalid),
        (&topics.late.name, &late_before, &expected_new.late),
    ] {
        let got: Vec<usize> = records_since(topic, before).iter().map(index_of).collect();
        assert_eq!(got.len(), expected.len(), "{topic}: {got:?}");
        assert_eq!(
            &got.into_iter().collect::<BTreeSet<_>>(),
            expected,
            "{topic}"
        );
    }
    assert!(resets >= 1.0, "streamagg_partition_resets_total = {resets}");
    assert!(
        !error_lines_mentioning(&log, "reset").is_empty(),
        "an ERROR line about the reset; log:\n{log}"
    );
}

#[test]
fn changed_window_semantics_are_refused_with_the_old_and_new_values() {
    let format = Format::Json;
    let topics = Topics::create("semantics", 2);
    let inputs = dataset(format, 41, 2_000);
    let half = inputs.len() / 2;
    produce_inputs(&topics.input.name, &inputs, 0..half);

    let dir = tempfile::tempdir().expect("dir");
    let group = random_group();
    let args = json_args(&topics, &group, &dir.path().join("a"));
    let mut first = ProcessorProcess::start(&args);
    wait_for_records(&topics.output.name, 10, Duration::from_secs(60), || {
        check_alive(&mut [&mut first])
    });
    first.stop_gracefully();
    let emitted = read_all(&topics.output.name).len();
    assert!(emitted >= 10, "the first run emitted and checkpointed");
    // More input waits: a run that is not refused would process it.
    produce_inputs(&topics.input.name, &inputs, half..inputs.len());
    let expected = oracle(format, &inputs, &read_all(&topics.input.name));
    assert!(
        emitted < expected.windows.len(),
        "the first run stopped mid-stream"
    );

    let with = |state: &str, flag: &str, value: &str| {
        let mut changed = json_args(&topics, &group, &dir.path().join(state));
        set_arg(&mut changed, flag, value);
        changed
    };
    let window_words = ["window", "1m", "5m"].as_slice();
    let cases = [
        (
            "same state dir",
            with("a", "--window", "300s"),
            window_words,
        ),
        ("new state dir", with("b", "--window", "300s"), window_words),
        (
            "filter",
            with("a", "--min-value", "10"),
            ["min_value"].as_slice(),
        ),
    ];
    for (case, changed, words) in cases {
        let mut refused = ProcessorProcess::start(&changed);
        let lines = refused.refusal_lines(Duration::from_secs(60));
        assert_eq!(lines.len(), 1, "{case}: one error line: {lines:?}");
        for word in words {
            assert!(lines[0].contains(word), "{case}: {word} in {}", lines[0]);
        }
        assert_eq!(
            read_all(&topics.output.name).len(),
            emitted,
            "{case}: the refused run wrote nothing"
        );
    }

    let mut again = ProcessorProcess::start(&args);
    let output = wait_for_records(
        &topics.output.name,
        expected.windows.len(),
        Duration::from_secs(60),
        || check_alive(&mut [&mut again]),
    );
    again.stop_gracefully();
    assert_topics_match(format, &topics, &expected, Delivery::ExactlyOnce, &output);
}

#[test]
fn idle_close_then_hand_off_emits_each_window_once() {
    let topics = Topics::create("idle-hand-off", 1);
    let t0 = T0; // a multiple of the 2 s window
    let inputs = json_events(&[
        ("a", t0 + 100, 60.0),
        ("b", t0 + 200, 70.0),
        ("a", t0 + 300, 80.0),
        ("b", t0 + 400, 90.5),
    ]);
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let dir = tempfile::tempdir().expect("dir");
    let group = random_group();
    let args_for = |state: &str| {
        let mut args = json_args(&topics, &group, &dir.path().join(state));
        set_arg(&mut args, "--window", "2s");
        set_arg(&mut args, "--grace", "0s");
        args
    };
    let consumed = "streamagg_records_consumed_total";

    // A consumes and checkpoints the open window; nothing closes.
    let mut a = ProcessorProcess::start(&args_for("a"));
    a.wait_for_metric(consumed, inputs.len() as f64, Duration::from_secs(60));
    a.stop_gracefully();
    assert!(
        read_all(&topics.output.name).is_empty(),
        "nothing closed yet"
    );

    // B takes the partition over and closes the window by idleness.
    let mut idle_args = args_for("b");
    set_arg(&mut idle_args, "--idle-close-after", "1s");
    let mut b = ProcessorProcess::start(&idle_args);
    let closed = wait_for_records(&topics.output.name, 2, Duration::from_secs(60), || {
        check_alive(&mut [&mut b])
    });
    b.stop_gracefully();
    assert_eq!(closed.len(), 2, "B's idle close; log:\n{}", b.log());

    // A comes back on its own, older state; a closer arrives.
    let mut a = ProcessorProcess::start(&args_for("a"));
    wait_until_assigned(&mut a, Duration::from_secs(60));
    let closer = json_events(&[("a", t0 + 100_000, 60.0)]);
    produce_inputs(&topics.input.name, &closer, 0..1);
    let produced = Instant::now();
    a.wait_for_metric(consumed, 1.0, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(10).saturating_sub(produced.elapsed()));
    a.assert_alive();
    a.stop_gracefully();

    // (source, window_start) → every (count, sum) emitted for it
    let mut emitted: BTreeMap<(String, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for record in read_all(&topics.output.name) {
        let average: serde_json::Value =
            serde_json::from_slice(record.payload.as_deref().unwrap_or_default())
                .expect("a JSON average");
        let number = |name: &str| average[name].as_f64().expect(name);
        let source = average["source"].as_str().expect("source").to_owned();
        emitted
            .entry((source, number("window_start") as i64))
            .or_default()
            .push((number("count") as i64, number("sum")));
    }
    let once = |count, sum| vec![(count, sum)];
    let expected = BTreeMap::from([
        (("a".to_owned(), t0), once(2, 140.0)),
        (("b".to_owned(), t0), once(2, 160.5)),
    ]);
    assert_eq!(emitted, expected, "each window once; A's log:\n{}", a.log());
}

#[test]
fn exactly_once_refuses_a_checkpoint_interval_the_transaction_timeout_cannot_hold() {
    let topics = Topics::create("tx-timeout", 1);
    let dir = tempfile::tempdir().expect("dir");
    let mut args = json_args(&topics, &random_group(), &dir.path().join("s"));
    set_arg(&mut args, "--checkpoint-interval", "10s");

    let started = Instant::now();
    let mut refused = ProcessorProcess::start(&args);
    let lines = refused.refusal_lines(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(lines.len(), 1, "one error line: {lines:?}");
    for word in ["checkpoint_interval", "transaction.timeout.ms"] {
        assert!(lines[0].contains(word), "{word} in {}", lines[0]);
    }

    // At-least-once has no transaction: the same interval runs.
    set_arg(&mut args, "--guarantee", "at-least-once");
    let started = Instant::now();
    let mut running = ProcessorProcess::start(&args);
    wait_until_assigned(&mut running, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    running.assert_alive();
    running.stop_gracefully();
    assert!(
        !running.log().contains("checkpoint_interval"),
        "{}",
        running.log()
    );
}

/// The output topic's `max.message.bytes` while it refuses every output: below the size of any
/// record batch holding a JSON average (over 200 bytes), so every delivery to it fails; above the
/// batch (about 80 bytes) of the marker the transaction coordinator writes to abort a transaction:
/// with a smaller limit (60) the broker cannot complete the abort (`RecordTooLargeException while
/// sending txn marker`), the transactional id stays in PrepareAbort and every later transaction
/// of the instance fails.
const REFUSING_LIMIT: &str = "100";

/// Counts aborted transactions.
const ABORTS: &str = "streamagg_transaction_aborts_total";

/// Topics whose output topic refuses every record (`max.message.bytes` = [`REFUSING_LIMIT`]): under
/// exactly-once every transaction that emits a window becomes abortable.
fn topics_with_a_refusing_output(purpose: &str, partitions: i32) -> Topics {
    let name = |role: &str| format!("{purpose}-{role}");
    Topics {
        input: TestTopic::create(&name("in"), partitions),
        output: TestTopic::create_with_config(
            &name("out"),
            partitions,
            &[("max.message.bytes", REFUSING_LIMIT)],
        ),
        late: TestTopic::create(&name("late"), partitions),
        dlq: TestTopic::create(&name("dlq"), partitions),
    }
}

/// Waits for the processor's first aborted transaction, then lets the output topic accept records:
/// the processor, still retrying (at most 10 aborts in a row, with a short backoff), must then get
/// its redone work through. Returns how many checkpoints it had made before the limit was raised.
fn accept_the_output_after_the_first_abort(
    processor: &mut ProcessorProcess,
    topics: &Topics,
) -> f64 {
    processor.wait_for_metric(ABORTS, 1.0, Duration::from_secs(30));
    let checkpoints = metric_sum(
        processor.telemetry_addr(Duration::from_secs(10)),
        "streamagg_checkpoints_total",
    );
    topics
        .output
        .alter_config(&[("max.message.bytes", "1000000")]);
    checkpoints
}

/// Waits for the redone work with the processor alive throughout, stops it, and holds the output,
/// late and DLQ topics to `expected`, each record exactly once.
fn expect_the_redone_work_to_equal(
    processor: &mut ProcessorProcess,
    topics: &Topics,
    expected: &Expected,
) {
    let addr = processor.telemetry_addr(Duration::from_secs(10));
    wait_for_output(
        processor,
        topics,
        expected.windows.len(),
        Duration::from_secs(90),
    );
    let aborts = metric_sum(addr, ABORTS);
    processor.stop_gracefully();
    assert!(aborts >= 1.0, "{ABORTS} = {aborts}");
    // Read after the stop: whatever its last checkpoint committed is held to the oracle too.
    let output = read_all(&topics.output.name);
    assert_topics_match(
        Format::Json,
        topics,
        expected,
        Delivery::ExactlyOnce,
        &output,
    );
}

#[test]
fn an_abortable_send_error_aborts_and_redoes_the_work_instead_of_crashing() {
    let format = Format::Json;
    let topics = topics_with_a_refusing_output("abort-redo", 4);
    // Enough input that the processor is still emitting when the first delivery fails: the
    // failure then surfaces at a send, not only at the commit (4,000 events were too few: it
    // surfaced at the commit only).
    let inputs = dataset(format, 61, 30_000);
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let expected = oracle(format, &inputs, &read_all(&topics.input.name));
    assert!(
        expected.windows.len() > 600 && !expected.late.is_empty() && !expected.invalid.is_empty()
    );

    let dir = tempfile::tempdir().expect("dir");
    let mut processor =
        ProcessorProcess::start(&json_args(&topics, &random_group(), &dir.path().join("s")));
    accept_the_output_after_the_first_abort(&mut processor, &topics);
    let log = processor.log();
    assert!(
        log.lines()
            .any(|line| line.contains("aborting the transaction")
                && line.contains("transaction produce failed")),
        "a send, not only a commit, met the failed delivery (the case under test); log:\n{log}"
    );
    expect_the_redone_work_to_equal(&mut processor, &topics, &expected);
}

#[test]
fn after_an_abort_a_partition_without_a_checkpoint_resumes_where_auto_offset_reset_started_it() {
    let format = Format::Json;
    let topics = topics_with_a_refusing_output("latest-abort", 1);
    // Old records, there before the processor: sources of their own, two hours before the new
    // ones, closing their windows, one of them invalid. Had they been processed, they would show
    // in the output and the DLQ.
    let mut inputs = json_events(&[
        ("old-a", DATASET_START + 1_000, 60.0),
        ("old-b", DATASET_START + 2_000, 70.0),
        ("old-a", DATASET_START + 61_000, 80.0),
        ("old-c", DATASET_START + 3_600_000, 90.0),
    ]);
    inputs.push(Input {
        source: "old-bad".into(),
        payload: b"not an event".to_vec(),
    });
    let old = inputs.len();
    produce_inputs(&topics.input.name, &inputs, 0..old);
    let from_old = oracle(format, &inputs, &read_all(&topics.input.name));
    assert!(
        from_old.windows.len() == 3 && from_old.invalid.len() == 1,
        "the old records make windows and a DLQ record: {from_old:?}"
    );

    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(
        dir.path(),
        "[kafka.consumer]\n\"auto.offset.reset\" = \"latest\"\n",
    );
    let mut args = json_args(&topics, &random_group(), &dir.path().join("s"));
    set_arg(&mut args, "--config", &config);
    let mut processor = ProcessorProcess::start(&args);
    wait_until_assigned(&mut processor, Duration::from_secs(60));
    // `latest` becomes an offset only after the assignment, when the consumer first fetches.
    std::thread::sleep(Duration::from_secs(3));
    processor.assert_alive();

    // The new records, all at once (one transaction holds their windows, so the partition has no
    // checkpoint when it is aborted): the dataset's sources, two hours later.
    inputs.extend(dataset_from(format, 62, 600, DATASET_START + 2 * 3_600_000));
    produce_inputs(&topics.input.name, &inputs, old..inputs.len());
    let new_records: Vec<RawRecord> = read_all(&topics.input.name)
        .into_iter()
        .filter(|r| index_of(r) >= old)
        .collect();
    let expected = oracle(format, &inputs, &new_records);
    assert!(expected.windows.len() > 50 && !expected.invalid.is_empty());

    let checkpoints = accept_the_output_after_the_first_abort(&mut processor, &topics);
    assert_eq!(
        checkpoints,
        0.0,
        "no checkpoint before the abort (the case under test); log:\n{}",
        processor.log()
    );
    expect_the_redone_work_to_equal(&mut processor, &topics, &expected);
}

/// Topics whose DLQ accepts records of at most 100,000 bytes (the broker's default is ~1 MiB).
fn topics_with_a_small_dlq(purpose: &str) -> Topics {
    Topics {
        input: TestTopic::create(&format!("{purpose}-in"), 1),
        output: TestTopic::create(&format!("{purpose}-out"), 1),
        late: TestTopic::create(&format!("{purpose}-late"), 1),
        dlq: TestTopic::create_with_config(
            &format!("{purpose}-dlq"),
            1,
            &[("max.message.bytes", "100000")],
        ),
    }
}

/// `count` bytes that are not JSON and do not compress.
fn incompressible(count: usize) -> Vec<u8> {
    let mut bytes = vec![0xff_u8; count];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[1..]);
    bytes
}

/// Runs a processor on `topics` until the output holds `expected`'s windows, checks them, and
/// returns the DLQ's records.
fn run_until_the_windows_and_read_the_dlq(topics: &Topics, expected: &Expected) -> Vec<RawRecord> {
    let dir = tempfile::tempdir().expect("dir");
    let mut processor =
        ProcessorProcess::start(&json_args(topics, &random_group(), &dir.path().join("s")));
    let output = wait_for_output(
        &mut processor,
        topics,
        expected.windows.len(),
        Duration::from_secs(60),
    );
    assert_output_matches(Format::Json, &output, expected, Delivery::ExactlyOnce);
    processor.stop_gracefully();
    read_all(&topics.dlq.name)
}

#[test]
fn a_burst_of_side_outputs_that_each_fit_is_never_refused_as_one_batch() {
    let topics = topics_with_a_small_dlq("burst");
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
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let expected = oracle(Format::Json, &inputs, &read_all(&topics.input.name));
    assert_eq!(expected.invalid, BTreeSet::from([1, 2, 3]));
    let dlq = run_until_the_windows_and_read_the_dlq(&topics, &expected);
    let copies: Vec<(usize, Option<&Vec<u8>>)> = dlq
        .iter()
        .map(|r| (index_of(r), r.payload.as_ref()))
        .collect();
    let originals: Vec<(usize, Option<&Vec<u8>>)> =
        (1..4).map(|i| (i, Some(&inputs[i].payload))).collect();
    assert_eq!(copies, originals, "three whole copies, in order");
}

#[test]
fn a_record_whose_headers_the_producer_cannot_copy_becomes_a_marker() {
    // The input topic takes records up to 5 MB; the DLQ the broker's default (~1 MiB).
    let topics = Topics {
        input: TestTopic::create_with_config("headers-in", 1, &[("max.message.bytes", "5000000")]),
        output: TestTopic::create("headers-out", 1),
        late: TestTopic::create("headers-late", 1),
        dlq: TestTopic::create("headers-dlq", 1),
    };
    let mut inputs = json_events(&[
        ("a", T0 + 1_000, 60.0),
        ("bad", T0 + 1_100, 0.0),
        ("b", T0 + 2_000, 70.0),
        ("w", T0 + 200_000, 100.0),
    ]);
    inputs[1].payload = b"not json".to_vec();
    // 40,000 headers of 25 random bytes: with their framing over 1.1 MB, past librdkafka's own
    // message.max.bytes (1,000,000), which refuses a copy at once. A producer allowed larger
    // records writes the original.
    let large =
        std::collections::BTreeMap::from([("message.max.bytes".to_owned(), "5000000".to_owned())]);
    let values: Vec<Vec<u8>> = (0..40_000).map(|_| incompressible(25)).collect();
    produce_inputs_with_headers(
        &topics.input.name,
        &inputs,
        0..inputs.len(),
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
    let input_records = read_all(&topics.input.name);
    let expected = oracle(Format::Json, &inputs, &input_records);
    assert_eq!(expected.invalid, BTreeSet::from([1]));
    let dlq = run_until_the_windows_and_read_the_dlq(&topics, &expected);
    assert_eq!(dlq.len(), 1, "one DLQ record");
    let reason = header(&dlq[0], "streamagg.error").expect("reason");
    assert!(reason.contains("too large"), "{reason}");
    assert_eq!(
        header(&dlq[0], "streamagg.offset"),
        Some(input_offset(&input_records, 1).to_string())
    );
}

#[test]
fn a_state_dir_is_refused_for_another_group() {
    let topics = Topics::create("other-group", 1);
    let inputs = json_events(&[("a", T0 + 1_000, 60.0), ("w", T0 + 200_000, 100.0)]);
    produce_inputs(&topics.input.name, &inputs, 0..inputs.len());
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("s");
    let (first, second) = (random_group(), random_group());
    let mut processor = ProcessorProcess::start(&json_args(&topics, &first, &state));
    wait_for_output(&mut processor, &topics, 1, Duration::from_secs(60));
    processor.stop_gracefully();

    let mut refused = ProcessorProcess::start(&json_args(&topics, &second, &state));
    let lines = refused.refusal_lines(Duration::from_secs(30));
    assert_eq!(lines.len(), 1, "{lines:?}");
    for word in ["group", &first, &second] {
        assert!(lines[0].contains(word), "{word} in {lines:?}");
    }
    assert_eq!(
        read_all(&topics.output.name).len(),
        1,
        "nothing more was output"
    );
}

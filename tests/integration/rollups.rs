//! Several window sizes from one state (`--window 1m,5m,10m`) and windows aligned to a time zone
//! (`--time-zone`), against the real broker under exactly-once. The oracle here judges every event
//! against every size on its own, in each partition's offset order (a window holds exactly the
//! events that arrived while stream time was below its end + grace), with window bounds from its
//! own arithmetic — it merges nothing, as the processor does. Straight through, across `kill -9`s
//! (every size's windows restored from RocksDB) and across a hand-off to an instance without state
//! (every size rebuilt by replaying the input).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use streamagg::codec::Format;
use streamagg::reader::RawRecord;

use crate::common::{read_all, wait_for_records};
use crate::dataset::{dataset_from, index_of, DATASET_START};
use crate::oracle::{
    assert_side_topic, close, decode_output, parse_independently, Delivery, GRACE_MS, MIN_VALUE,
};
use crate::scenario::{assigned_partitions, check_alive, Scenario, FAST_FAILOVER};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// How the oracle places a timestamp in a window of one size: `(start, end)`.
type Bounds = fn(i64) -> (i64, i64);

fn epoch<const SIZE: i64>(ts: i64) -> (i64, i64) {
    let start = ts - ts.rem_euclid(SIZE);
    (start, start + SIZE)
}

/// Asia/Kathmandu has been UTC+05:45 without DST since 1986: its hours start at :15 UTC.
fn kathmandu_hour(ts: i64) -> (i64, i64) {
    let offset = 5 * HOUR + 45 * MINUTE;
    let start = ts - (ts + offset).rem_euclid(HOUR);
    (start, start + HOUR)
}

/// Europe/Berlin's days around the end of DST in 2024 (03:00 CEST became 02:00 CET on 27 October
/// at 01:00 UTC): 26 October began at 25 Oct 22:00 UTC, 27 October at 26 Oct 22:00 UTC and lasted
/// 25 hours, 28 October began at 27 Oct 23:00 UTC.
fn berlin_day(ts: i64) -> (i64, i64) {
    let utc = |day: i64, hour: i64| 1_729_814_400_000 + (day - 25) * 24 * HOUR + hour * HOUR;
    let starts = [utc(25, 22), utc(26, 22), utc(27, 23), utc(28, 23)];
    let i = starts
        .windows(2)
        .position(|w| w[0] <= ts && ts < w[1])
        .unwrap_or_else(|| panic!("{ts} is outside the days this oracle knows"));
    (starts[i], starts[i + 1])
}

/// (source, start, end) → the window's values, in input order.
type Windows = BTreeMap<(String, i64, i64), Vec<f64>>;

/// Every size's windows that the final stream time of their partition closed.
fn oracle(format: Format, scenario: &Scenario, input: &[RawRecord], sizes: &[Bounds]) -> Windows {
    let mut closed = Windows::new();
    let partitions: BTreeSet<i32> = input.iter().map(|r| r.partition).collect();
    for partition in partitions {
        let mut records: Vec<&RawRecord> =
            input.iter().filter(|r| r.partition == partition).collect();
        records.sort_by_key(|r| r.offset);
        let mut stream_time = i64::MIN;
        let mut open = Windows::new();
        for record in records {
            let payload = &scenario.inputs[index_of(record)].payload;
            let Some((source, ts, value)) = parse_independently(format, payload) else {
                continue;
            };
            if value < MIN_VALUE {
                continue;
            }
            stream_time = stream_time.max(ts);
            for bounds in sizes {
                let (start, end) = bounds(ts);
                if end + GRACE_MS > stream_time {
                    open.entry((source.clone(), start, end))
                        .or_default()
                        .push(value);
                }
            }
        }
        closed.extend(
            open.into_iter()
                .filter(|((_, _, end), _)| end + GRACE_MS <= stream_time),
        );
    }
    closed
}

/// The output equals `expected`: every window of every size once, with the oracle's values.
fn assert_output(format: Format, output: &[RawRecord], expected: &Windows) {
    let mut seen = BTreeSet::new();
    for record in output {
        let got = decode_output(format, record.payload.as_deref().expect("payload"));
        let key = (got.source.clone(), got.start, got.end);
        assert!(seen.insert(key.clone()), "emitted twice: {key:?}");
        let values = expected
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected window {key:?}"));
        let sum: f64 = values.iter().sum();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(got.count, values.len() as i64, "count of {key:?}");
        assert!(close(got.sum, sum), "sum of {key:?}: {} vs {sum}", got.sum);
        assert!(close(got.avg, sum / values.len() as f64), "avg of {key:?}");
        assert!(
            close(got.min, min) && close(got.max, max),
            "min/max of {key:?}"
        );
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

/// Output windows per size (end - start), to show every size was tested.
fn sizes_seen(expected: &Windows) -> BTreeMap<i64, usize> {
    let mut sizes = BTreeMap::new();
    for (_, start, end) in expected.keys() {
        *sizes.entry(end - start).or_default() += 1;
    }
    sizes
}

/// Runs `scenario` to completion with the given instances' lifecycle and holds every topic to the
/// oracle; the late topic holds exactly the events late for their smallest window.
fn check(scenario: &Scenario, output: &[RawRecord], sizes: &[Bounds]) -> Windows {
    let input = read_all(&scenario.topics.input.name);
    let expected = oracle(scenario.format, scenario, &input, sizes);
    assert_output(scenario.format, output, &expected);
    let base = scenario.expected();
    assert_side_topic(
        &scenario.topics.late.name,
        &base.late,
        "late",
        Delivery::ExactlyOnce,
    );
    assert_side_topic(
        &scenario.topics.dlq.name,
        &base.invalid,
        "",
        Delivery::ExactlyOnce,
    );
    expected
}

const ROLLUPS: [Bounds; 3] = [
    epoch::<MINUTE>,
    epoch::<{ 5 * MINUTE }>,
    epoch::<{ 10 * MINUTE }>,
];

fn expected_count(scenario: &Scenario, sizes: &[Bounds]) -> usize {
    oracle(
        scenario.format,
        scenario,
        &read_all(&scenario.topics.input.name),
        sizes,
    )
    .len()
}

#[test]
fn every_size_from_one_state_survives_kill_9_mid_window() {
    let mut scenario = Scenario::new("roll-crash", Format::Avro, 3, 51, 20_000);
    scenario.config(FAST_FAILOVER).set("--window", "1m,5m,10m");
    let traffic = scenario.traffic(scenario.all(), 40, Duration::from_millis(250));
    for pause in [900, 1_400, 700] {
        let mut process = scenario.start_assigned("state", Duration::from_secs(90));
        std::thread::sleep(Duration::from_millis(pause));
        process.signal("KILL");
        process.wait(Duration::from_secs(10));
    }
    traffic.join().expect("traffic written");
    let mut last = scenario.start_assigned("state", Duration::from_secs(90));
    let count = expected_count(&scenario, &ROLLUPS);
    let output = wait_for_records(
        &scenario.topics.output.name,
        count,
        Duration::from_secs(180),
        || check_alive(&mut [&mut last]),
    );
    let log = last.log();
    last.stop_gracefully();
    assert!(
        log.contains("resume=\"local\""),
        "resumed from local state:\n{log}"
    );
    let expected = check(&scenario, &output, &ROLLUPS);
    let sizes = sizes_seen(&expected);
    assert!(
        sizes.len() == 3 && sizes.values().all(|&n| n >= 50),
        "{sizes:?}"
    );
}

#[test]
fn every_size_is_rebuilt_when_a_second_instance_takes_partitions_mid_window() {
    // The hour follows Kathmandu's clock (hours at :15 UTC), so zoned windows are rebuilt too:
    // the data runs from 22:06 UTC, and the hour [21:15, 22:15) is open at the hand-off.
    let start = DATASET_START - 7 * MINUTE;
    let inputs = dataset_from(Format::Json, 52, 20_000, start);
    let mut scenario = Scenario::with_inputs("roll-hand-off", Format::Json, 4, inputs);
    scenario
        .set("--window", "1m,5m,1h")
        .set("--time-zone", "Asia/Kathmandu")
        .set("--percentiles", "true");
    let sizes: [Bounds; 3] = [epoch::<MINUTE>, epoch::<{ 5 * MINUTE }>, kathmandu_hour];
    let half = scenario.inputs.len() / 2;
    scenario.preload(0..half);
    let mut a = scenario.start("a");
    wait_for_records(
        &scenario.topics.output.name,
        50,
        Duration::from_secs(60),
        || check_alive(&mut [&mut a]),
    );
    // b, without state, takes partitions whose windows of every size a holds open: it rebuilds
    // them by replaying from the group commit's rebuild offset (the oldest open 10 m window's).
    let mut b = scenario.start("b");
    crate::scenario::wait_until_assigned(&mut b, Duration::from_secs(60));
    scenario.preload(half..scenario.inputs.len());
    let count = expected_count(&scenario, &sizes);
    let output = wait_for_records(
        &scenario.topics.output.name,
        count,
        Duration::from_secs(120),
        || check_alive(&mut [&mut a, &mut b]),
    );
    let log_b = b.log();
    a.stop_gracefully();
    b.stop_gracefully();
    assert!(!assigned_partitions(&log_b).is_empty());
    assert!(log_b.contains("resume=\"rebuild\""), "b rebuilt:\n{log_b}");
    let expected = check(&scenario, &output, &sizes);
    assert!(
        expected.keys().any(|(_, s, e)| e - s == HOUR),
        "an hour window closed"
    );
    assert_percentiles(&output, &expected);
}

/// Every JSON output record's p50..p99 is within 1 % of the exact value at rank `⌊q·(n−1)⌋` of its
/// window's values: merged sketches (and rebuilt ones) answer like one sketch of all the values.
fn assert_percentiles(output: &[RawRecord], expected: &Windows) {
    for record in output {
        let v: serde_json::Value =
            serde_json::from_slice(record.payload.as_deref().expect("payload")).expect("json");
        let key = (
            v["source"].as_str().expect("source").to_owned(),
            v["window_start"].as_i64().expect("start"),
            v["window_end"].as_i64().expect("end"),
        );
        let mut values = expected[&key].clone();
        values.sort_by(f64::total_cmp);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
            let got = v[name]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} of {key:?}"));
            assert!(
                (got - exact).abs() <= (0.01 + 1e-12) * exact.abs(),
                "{name} of {key:?} over {} values: {got}, exact {exact}",
                values.len()
            );
        }
    }
}

/// Runs a zoned scenario straight through and checks it.
fn zoned(purpose: &str, start: i64, windows: &str, zone: &str, sizes: &[Bounds]) -> Windows {
    let inputs = dataset_from(Format::Json, 53, 6_000, start);
    let mut scenario = Scenario::with_inputs(purpose, Format::Json, 2, inputs);
    scenario.set("--window", windows).set("--time-zone", zone);
    scenario.preload(scenario.all());
    let mut processor = scenario.start("state");
    let count = expected_count(&scenario, sizes);
    let output = wait_for_records(
        &scenario.topics.output.name,
        count,
        Duration::from_secs(120),
        || check_alive(&mut [&mut processor]),
    );
    processor.stop_gracefully();
    check(&scenario, &output, sizes)
}

#[test]
fn hours_follow_a_zone_whose_offset_is_not_whole_hours() {
    // The dataset's 12 minutes from 22:13 UTC cross 22:15 UTC, where Kathmandu's hours begin.
    assert_eq!(DATASET_START % HOUR, 13 * MINUTE);
    let expected = zoned(
        "roll-ktm",
        DATASET_START,
        "1m,1h",
        "Asia/Kathmandu",
        &[epoch::<MINUTE>, kathmandu_hour],
    );
    let hours: BTreeSet<i64> = expected
        .keys()
        .filter(|(_, s, e)| e - s == HOUR)
        .map(|(_, s, _)| s.rem_euclid(HOUR))
        .collect();
    assert_eq!(
        hours,
        BTreeSet::from([15 * MINUTE]),
        "hours start at :15 UTC"
    );
}

#[test]
fn a_day_follows_the_zone_across_the_end_of_dst() {
    // 12 minutes from 22:54 UTC on 27 October 2024: the end of Berlin's 25-hour day.
    let start = 1_729_814_400_000 + 2 * 24 * HOUR + 22 * HOUR + 54 * MINUTE;
    let expected = zoned(
        "roll-ber",
        start,
        "1m,1h,1d",
        "Europe/Berlin",
        &[epoch::<MINUTE>, epoch::<HOUR>, berlin_day],
    );
    let days: BTreeSet<i64> = expected
        .keys()
        .filter(|(_, s, e)| e - s > 2 * HOUR)
        .map(|(_, s, e)| e - s)
        .collect();
    assert_eq!(days, BTreeSet::from([25 * HOUR]), "the day lasted 25 hours");
}

#[test]
fn rollup_outputs_put_each_size_in_a_topic_of_its_own() {
    let mut scenario = Scenario::new("roll-topics", Format::Json, 2, 54, 6_000);
    let five = crate::common::TestTopic::create("roll-topics-5m", 2);
    scenario
        .set("--window", "1m,5m")
        .set("--rollup-outputs", &five.name);
    scenario.preload(scenario.all());
    let sizes: [Bounds; 2] = [epoch::<MINUTE>, epoch::<{ 5 * MINUTE }>];
    let expected = oracle(
        scenario.format,
        &scenario,
        &read_all(&scenario.topics.input.name),
        &sizes,
    );
    let count = |size: i64| expected.keys().filter(|(_, s, e)| e - s == size).count();
    let mut processor = scenario.start("state");
    let minutes = wait_for_records(
        &scenario.topics.output.name,
        count(MINUTE),
        Duration::from_secs(120),
        || check_alive(&mut [&mut processor]),
    );
    let fives = wait_for_records(
        &five.name,
        count(5 * MINUTE),
        Duration::from_secs(60),
        || check_alive(&mut [&mut processor]),
    );
    processor.stop_gracefully();
    let span = |r: &RawRecord| {
        let w = decode_output(Format::Json, r.payload.as_deref().expect("payload"));
        w.end - w.start
    };
    assert!(
        minutes.iter().all(|r| span(r) == MINUTE),
        "only minutes in --output"
    );
    assert!(
        fives.iter().all(|r| span(r) == 5 * MINUTE),
        "only 5 m windows in their topic"
    );
    assert!(count(5 * MINUTE) >= 50, "{expected:?}");
    let all: Vec<RawRecord> = minutes.into_iter().chain(fives).collect();
    assert_output(Format::Json, &all, &expected);
}

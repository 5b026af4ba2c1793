//! Percentiles (`--percentiles`) against the real broker under exactly-once: every output record's
//! p50, p90, p95 and p99 are within the run's relative accuracy of the exact value at rank
//! `⌊q · (count − 1)⌋` of its window's values (sorted by the test, from the oracle's windows) —
//! straight through, across `kill -9`s (sketches restored from RocksDB) and across a hand-off to an
//! instance without state (sketches rebuilt by replaying the input).

use std::time::Duration;

use apache_avro::{types::Value as AvroValue, Schema};
use streamagg::codec::{Format, TRAFFIC_AVERAGE_SCHEMA};
use streamagg::reader::RawRecord;

use crate::common::wait_for_records;
use crate::oracle::{avro_field, avro_output_fields, Delivery, Expected};
use crate::scenario::{assigned_partitions, check_alive, Scenario, FAST_FAILOVER};

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)];

/// The four percentiles of an output record, by name (`None` where absent or null).
fn reported(format: Format, record: &RawRecord) -> (String, i64, Vec<Option<f64>>) {
    let payload = record.payload.as_deref().expect("payload");
    match format {
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(payload).expect("json output");
            let source = v["source"].as_str().expect("source").to_owned();
            let start = v["window_start"].as_i64().expect("window_start");
            let ps = QUANTILES.iter().map(|(n, _)| v[*n].as_f64()).collect();
            (source, start, ps)
        }
        Format::AvroConfluent => {
            panic!("the percentile tests read JSON and raw Avro outputs, not registry-framed ones")
        }
        Format::Avro => {
            let schema = Schema::parse_str(TRAFFIC_AVERAGE_SCHEMA).expect("schema");
            let fields = avro_output_fields(&schema, payload);
            let get = |name: &str| avro_field(&fields, name);
            let AvroValue::String(source) = get("source") else {
                panic!("source")
            };
            let (AvroValue::TimestampMillis(start) | AvroValue::Long(start)) = get("window_start")
            else {
                panic!("window_start")
            };
            let ps = QUANTILES
                .iter()
                .map(|(n, _)| match get(n) {
                    AvroValue::Union(1, d) => match *d {
                        AvroValue::Double(d) => Some(d),
                        other => panic!("{n}: {other:?}"),
                    },
                    AvroValue::Union(0, _) => None,
                    other => panic!("{n}: {other:?}"),
                })
                .collect();
            (source, start, ps)
        }
    }
}

/// Every output record carries all four percentiles, each within `accuracy` (relative) of the
/// exact value at rank `⌊q · (n − 1)⌋` of its window's values.
fn assert_percentiles(format: Format, output: &[RawRecord], expected: &Expected, accuracy: f64) {
    // Windows with enough values that the four percentiles are different ranks.
    let many = expected.values.values().filter(|v| v.len() >= 20).count();
    assert!(
        many * 2 > expected.values.len(),
        "{many} of {} windows",
        expected.values.len()
    );
    let mut checked = 0;
    for record in output {
        let (source, start, percentiles) = reported(format, record);
        let mut values = expected
            .values
            .get(&(source.clone(), start))
            .unwrap_or_else(|| panic!("unexpected window ({source}, {start})"))
            .clone();
        values.sort_by(f64::total_cmp);
        for ((name, q), got) in QUANTILES.iter().zip(percentiles) {
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
            let got = got.unwrap_or_else(|| panic!("{name} of ({source}, {start}) is missing"));
            assert!(
                (got - exact).abs() <= (accuracy + 1e-12) * exact.abs(),
                "{name} of ({source}, {start}) over {} values: {got}, exact {exact}",
                values.len()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * output.len());
}

fn straight_run(format: Format, accuracy: Option<&str>) {
    let mut scenario = Scenario::new("pct", format, 3, 41, 30_000);
    scenario.set("--percentiles", "true");
    if let Some(accuracy) = accuracy {
        scenario.set("--percentile-accuracy", accuracy);
    }
    scenario.preload(scenario.all());
    let expected = scenario.expected();
    let mut processor = scenario.start("state");
    let output = scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(120));
    processor.stop_gracefully();
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
    let accuracy = accuracy.map_or(0.01, |a| a.parse().expect("a number"));
    assert_percentiles(format, &output, &expected, accuracy);
}

#[test]
fn percentiles_are_within_the_accuracy_of_the_exact_rank_values_in_json() {
    straight_run(Format::Json, None);
}

#[test]
fn percentiles_are_within_a_configured_accuracy_in_avro() {
    straight_run(Format::Avro, Some("0.002"));
}

#[test]
fn percentiles_survive_kill_9_mid_window_under_exactly_once() {
    let mut scenario = Scenario::new("pct-crash", Format::Avro, 3, 42, 20_000);
    scenario.config(FAST_FAILOVER).set("--percentiles", "true");
    let traffic = scenario.traffic(scenario.all(), 40, Duration::from_millis(250));
    // kill -9 while windows are open, three times, restarting on the same state dir: the open
    // windows' sketches come back from RocksDB.
    for pause in [700, 1_300, 900] {
        let mut process = scenario.start_assigned("state", Duration::from_secs(90));
        std::thread::sleep(Duration::from_millis(pause));
        process.signal("KILL");
        process.wait(Duration::from_secs(10));
    }
    traffic.join().expect("traffic written");
    let mut last = scenario.start_assigned("state", Duration::from_secs(90));
    let output = scenario.wait_for_all(&mut [&mut last], Duration::from_secs(180));
    let log = last.log();
    last.stop_gracefully();
    assert!(
        log.contains("resume=\"local\""),
        "the last run resumed from local state:\n{log}"
    );
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
    assert_percentiles(Format::Avro, &output, &scenario.expected(), 0.01);
}

#[test]
fn percentiles_are_rebuilt_when_a_second_instance_takes_partitions_mid_window() {
    let mut scenario = Scenario::new("pct-hand-off", Format::Json, 4, 43, 20_000);
    scenario.set("--percentiles", "true");
    let half = scenario.inputs.len() / 2;
    scenario.preload(0..half);
    let mut a = scenario.start("a");
    wait_for_records(
        &scenario.topics.output.name,
        50,
        Duration::from_secs(60),
        || check_alive(&mut [&mut a]),
    );
    // b, with no state of its own, takes partitions whose windows a holds open: it rebuilds them
    // by replaying the input from the group commit's rebuild offset.
    let mut b = scenario.start("b");
    crate::scenario::wait_until_assigned(&mut b, Duration::from_secs(60));
    scenario.preload(half..scenario.inputs.len());
    let output = scenario.wait_for_all(&mut [&mut a, &mut b], Duration::from_secs(120));
    let log_b = b.log();
    a.stop_gracefully();
    b.stop_gracefully();
    assert!(!assigned_partitions(&log_b).is_empty());
    assert!(
        log_b.contains("resume=\"rebuild\""),
        "b rebuilt a handed-over partition from the group commit:\n{log_b}"
    );
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
    assert_percentiles(Format::Json, &output, &scenario.expected(), 0.01);
}

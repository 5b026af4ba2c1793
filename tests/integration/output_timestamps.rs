//! Output timestamps. With `--output-timestamp window-end` each `TrafficAverage`'s Kafka timestamp
//! is its window's last instant; by default it is the time it was sent. Late and DLQ copies keep
//! their input record's timestamp either way (every oracle comparison checks it:
//! `oracle::assert_copies_keep_input_timestamps`). Here: window-end timestamps equal the oracle's,
//! the default is the wall clock, and an output topic that refuses records that old (KIP-937's
//! `message.timestamp.before.max.ms`).

use std::time::Duration;

use streamagg::codec::Format;

use crate::common::{kafka_settings, read_all};
use crate::oracle::Delivery;
use crate::scenario::{Scenario, Topics};

/// The `window_end` of a JSON output record.
fn window_end(record: &streamagg::reader::RawRecord) -> i64 {
    let value: serde_json::Value =
        serde_json::from_slice(record.payload.as_deref().expect("payload")).expect("json");
    value["window_end"].as_i64().expect("window_end")
}

/// A JSON scenario whose output topic keeps its records whatever their timestamps (the dataset's
/// event times are in 2023: a time-retained topic would delete window-end-stamped results).
fn kept_output(purpose: &str) -> Scenario {
    let topics = Topics::create_with(purpose, 2, "out", &[("retention.ms", "-1")]);
    let inputs = crate::dataset::dataset(Format::Json, 37, 3_000);
    let scenario = Scenario::with_topics(topics, Format::Json, inputs);
    scenario.preload(scenario.all());
    scenario
}

#[test]
fn window_end_timestamps_are_each_window_s_last_instant() {
    let mut scenario = kept_output("ts-window-end");
    scenario.set("--output-timestamp", "window-end");
    let mut processor = scenario.start("state");
    let output = scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(90));
    processor.stop_gracefully();
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
    for record in &output {
        assert_eq!(record.timestamp, Some(window_end(record) - 1), "{record:?}");
    }
}

#[test]
fn by_default_output_timestamps_are_the_wall_clock() {
    let scenario = kept_output("ts-default");
    let before = streamagg::producer::now_ms();
    let mut processor = scenario.start("state");
    let output = scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(90));
    processor.stop_gracefully();
    let after = streamagg::producer::now_ms();
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
    for record in &output {
        let timestamp = record.timestamp.expect("a timestamp");
        assert!(
            (before..=after).contains(&timestamp),
            "{record:?} not sent between {before} and {after}"
        );
    }
}

/// Old windows into a topic that refuses old timestamps: under exactly-once every transaction that
/// carries a result is refused and aborted. The run must neither loop forever nor commit past the
/// refused windows: it gives up after its bounded aborts, with a clear error, the output empty and
/// the group's offsets where they were (a fixed topic config and a restart emit everything).
#[test]
fn an_output_topic_refusing_old_timestamps_stops_the_run_and_commits_nothing() {
    let topics = Topics::create_with(
        "old-ts",
        2,
        "out",
        &[("message.timestamp.before.max.ms", "3600000")],
    );
    let inputs = crate::dataset::dataset(Format::Json, 31, 2_000);
    let mut scenario = Scenario::with_topics(topics, Format::Json, inputs);
    scenario.set("--output-timestamp", "window-end");
    scenario.preload(scenario.all());
    assert!(scenario.expected().windows.len() > 50);
    let mut processor = scenario.start("state");
    let status = processor.wait(Duration::from_secs(180));
    let log = processor.log();
    assert!(!status.success(), "the run must fail; log:\n{log}");
    assert!(
        log.contains("timestamp") || log.contains("Timestamp"),
        "the error names the refused timestamp; log:\n{log}"
    );
    assert!(read_all(&scenario.topics.output.name).is_empty());
    let lags = streamagg::reader::group_lag(
        &kafka_settings(),
        &scenario.group,
        std::slice::from_ref(&scenario.topics.input.name),
    )
    .expect("lag readable");
    assert_eq!(
        lags.iter().map(|l| l.lag()).sum::<i64>(),
        read_all(&scenario.topics.input.name).len() as i64,
        "no offset committed past a refused window"
    );
}

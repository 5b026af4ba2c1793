//! Output records carry event time: each `TrafficAverage`'s Kafka timestamp is its window's last
//! instant (held for every window by the oracle, `oracle::assert_output_matches`), and late and
//! DLQ copies keep their input record's (`oracle::assert_copies_keep_input_timestamps`). Here: an
//! output topic that refuses records that old (KIP-937's `message.timestamp.before.max.ms`).

use std::time::Duration;

use streamagg::codec::Format;

use crate::common::{kafka_settings, read_all};
use crate::scenario::{Scenario, Topics};

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
    let scenario = Scenario::with_topics(topics, Format::Json, inputs);
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

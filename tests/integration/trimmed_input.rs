//! Input records deleted before they were read (retention; here Kafka's DeleteRecords): a hand-off
//! whose rebuild finds the start of the open windows gone, an instance that falls behind the log's
//! start while it runs, and one that resumes below it. Each is counted exactly in
//! `streamagg_input_records_trimmed_total`, against counts the test works out from the group's
//! commits and the broker's offsets, and logged.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamagg::codec::Format;
use streamagg::reader::group_lag;

use crate::common::{block_on, brokers, http_get, kafka_settings, ProcessorProcess};
use crate::scenario::{check_alive, Scenario};

const PARTITIONS: i32 = 2;

/// The group's commit on each partition of `topic`: (partition, committed offset, the rebuild
/// offset its metadata records as `rb=`).
fn commits(group: &str, topic: &str) -> Vec<(i32, i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|element| {
            let Offset::Offset(offset) = element.offset() else {
                panic!("no commit on partition {}", element.partition());
            };
            let metadata = element.metadata();
            let rebuild = metadata
                .split(' ')
                .find_map(|word| word.strip_prefix("rb="))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no rb= in the commit metadata {metadata:?}"));
            (element.partition(), offset, rebuild)
        })
        .collect()
}

/// Deletes the records of `topic` before each (partition, offset), as retention would.
fn delete_records_before(topic: &str, offsets: &[(i32, i64)]) {
    let admin = streamagg::kafka::admin::admin_client(&kafka_settings()).expect("admin client");
    let mut list = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("offset");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deleted = block_on(admin.delete_records(&list, &options)).expect("DeleteRecords");
    for element in deleted.elements() {
        assert!(element.error().is_ok(), "DeleteRecords: {element:?}");
    }
}

/// Each partition's log end (high watermark) and the group's committed offset there.
fn ends_and_commits(group: &str, topic: &str) -> Vec<(i32, i64, Option<i64>)> {
    let lags = group_lag(&kafka_settings(), group, &[topic.to_owned()]).expect("group lag");
    lags.iter()
        .map(|l| (l.partition, l.end, l.committed))
        .collect()
}

/// Waits until the group has committed everything written to `topic`.
fn wait_until_committed(group: &str, topic: &str, running: &mut ProcessorProcess) {
    let started = Instant::now();
    while ends_and_commits(group, topic)
        .iter()
        .any(|&(_, end, committed)| committed != Some(end))
    {
        check_alive(&mut [&mut *running]);
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not everything committed within 90 s: {:?}; log:\n{}",
            ends_and_commits(group, topic),
            running.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `streamagg_input_records_trimmed_total{missing_from="<missing_from>"}` on `addr`.
fn trimmed(addr: SocketAddr, missing_from: &str) -> f64 {
    let (_, metrics) = http_get(addr, "/metrics").expect("/metrics");
    let label = format!("missing_from=\"{missing_from}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("streamagg_input_records_trimmed_total{"))
        .filter(|line| line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the counter of `missing_from` shows `expected` (published once a second), then holds
/// both counters to exact values.
fn assert_trimmed(process: &mut ProcessorProcess, rebuild: i64, unread: i64) {
    let addr = process.telemetry_addr(Duration::from_secs(30));
    let started = Instant::now();
    while (trimmed(addr, "rebuild"), trimmed(addr, "unread")) != (rebuild as f64, unread as f64) {
        process.assert_alive();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "trimmed records: rebuild {} unread {}, expected {rebuild} and {unread}; log:\n{}",
            trimmed(addr, "rebuild"),
            trimmed(addr, "unread"),
            process.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn records_deleted_before_they_were_read_are_counted_exactly_and_logged() {
    let scenario = Scenario::new("trimmed", Format::Json, PARTITIONS, 61, 3_000);
    let input = scenario.topics.input.name.clone();
    let group = scenario.group.clone();
    let fifth = scenario.inputs.len() / 5;
    let slice = |k: usize| k * fifth..(k + 1) * fifth;
    let all_of = |positions: &[(i32, i64, Option<i64>)]| -> Vec<(i32, i64)> {
        positions.iter().map(|&(p, end, _)| (p, end)).collect()
    };
    let unread_of = |positions: &[(i32, i64, Option<i64>)]| -> i64 {
        positions
            .iter()
            .map(|&(_, end, committed)| end - committed.expect("committed"))
            .sum()
    };

    // 1. The first instance processes a fifth of the dataset and stops: its commits say where the
    // windows it left open begin. Retention then takes half of their history on each partition.
    scenario.preload(slice(0));
    let mut first = scenario.start("a");
    wait_until_committed(&group, &input, &mut first);
    first.stop_gracefully();
    let before = commits(&group, &input);
    let cut: Vec<(i32, i64)> = before
        .iter()
        .map(|&(partition, committed, rebuild)| (partition, rebuild + (committed - rebuild) / 2))
        .collect();
    assert!(
        before
            .iter()
            .zip(&cut)
            .all(|(&(_, committed, rebuild), &(_, cut))| rebuild < cut && cut <= committed),
        "windows left open on every partition to cut into: {before:?}"
    );
    delete_records_before(&input, &cut);
    let from_rebuild: i64 = before
        .iter()
        .zip(&cut)
        .map(|(&(_, _, rebuild), &(_, cut))| cut - rebuild)
        .sum();

    // Another instance, without the first one's state, takes over: it rebuilds the open windows
    // from what is left.
    scenario.preload(slice(1));
    let mut second = scenario.start("b");
    assert_trimmed(&mut second, from_rebuild, 0);
    wait_until_committed(&group, &input, &mut second);

    // 2. While it runs, it falls behind retention: frozen, the records written meanwhile are
    // deleted before it reads them; thawed, it goes on with what comes next.
    second.signal("STOP");
    // A fetch request sent before the freeze waits at the broker for records up to
    // `fetch.wait.max.ms` (500 ms): let it be answered empty first, or it would carry the records
    // to the frozen client before they are deleted (and they would be read after all).
    std::thread::sleep(Duration::from_millis(1_500));
    scenario.preload(slice(2));
    let behind = ends_and_commits(&group, &input);
    let unread_running = unread_of(&behind);
    assert!(unread_running > 0, "records written while it was frozen");
    delete_records_before(&input, &all_of(&behind));
    second.signal("CONT");
    scenario.preload(slice(3));
    wait_until_committed(&group, &input, &mut second);
    assert_trimmed(&mut second, from_rebuild, unread_running);
    let log = second.log();
    second.stop_gracefully();
    assert!(
        log.contains("they are rebuilt from what is left and will be short"),
        "the short rebuild is logged; log:\n{log}"
    );
    assert!(
        log.contains("records deleted before anyone read them"),
        "the records it never read are logged; log:\n{log}"
    );

    // 3. While it is stopped, retention takes records it never read again.
    scenario.preload(slice(4));
    let stopped = ends_and_commits(&group, &input);
    let unread_stopped = unread_of(&stopped);
    assert!(unread_stopped > 0, "records written while it was stopped");
    delete_records_before(&input, &all_of(&stopped));
    // It resumes from its own state, below the log's start now (the counts are this process's).
    // The gap shows when a record comes from past it: a few events more on every partition.
    let mut third = scenario.start("b");
    scenario.preload(slice(4).start..slice(4).start + 40);
    let grown = ends_and_commits(&group, &input);
    assert!(
        grown
            .iter()
            .zip(&stopped)
            .all(|(&(_, now, _), &(_, then, _))| now > then),
        "every partition got more records: {stopped:?} -> {grown:?}"
    );
    wait_until_committed(&group, &input, &mut third);
    assert_trimmed(&mut third, 0, unread_stopped);
    third.stop_gracefully();
}

//! Partitions added to a live input topic: the running processor picks the new ones up without a
//! restart and loses nothing written to them, and a source whose key moved has its window around
//! the change emitted in two parts whose counts and sums add up, the old part marked with the
//! `streamagg.possibly_split` header — never a silent partial average. Also: the partitioners
//! streamagg assumes agree with librdkafka's own.
//!
//! The oracle knows nothing of partitioners: it takes the records as they sit in the topic, runs
//! the documented semantics per partition (`oracle.rs`), and learns where each source moved from
//! the partitions its records are in before and after the change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use streamagg::codec::Format;
use streamagg::kafka;
use streamagg::partitioner::partition_of;
use streamagg::reader::RawRecord;

use crate::common::{block_on, kafka_settings, read_all, wait_for_records, TestTopic};
use crate::dataset::{index_of, json_events, produce_inputs, produce_inputs_with_headers};
use crate::oracle::{close, decode_output, header, oracle, Expected};
use crate::scenario::{assigned_partitions, check_alive, Scenario};

/// A minute boundary.
pub const BASE: i64 = 1_700_000_040_000;
pub const SOURCES: usize = 40;
pub const SPLIT_HEADER: &str = "streamagg.possibly_split";

/// (source, window start)
pub type Window = (String, i64);
/// (count, sum, min, max)
pub type Values = (i64, f64, f64, f64);

/// `(source, seconds after BASE, value)` for every source, every 10 s in `seconds`.
pub fn events(seconds: std::ops::RangeInclusive<i64>) -> Vec<(String, i64, f64)> {
    seconds
        .step_by(10)
        .flat_map(|second| {
            (0..SOURCES).map(move |i| {
                let value = 50.0 + ((i as i64 * 7 + second) % 47) as f64;
                (format!("sensor-{i:02}"), BASE + second * 1000, value)
            })
        })
        .collect()
}

/// Adds partitions to `topic` (Kafka's CreatePartitions) until it has `total`.
pub fn add_partitions(topic: &TestTopic, total: usize) {
    let settings = kafka_settings();
    let admin = kafka::admin::admin_client(&settings).expect("admin client");
    let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(settings.timeout));
    let results = block_on(admin.create_partitions(
        [&rdkafka::admin::NewPartitions::new(&topic.name, total)],
        &options,
    ))
    .expect("CreatePartitions");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("adding partitions to {name}: {code}"));
    }
}

/// The oracle run on each partition's records alone: partition → its windows.
pub fn per_partition(
    inputs: &[crate::dataset::Input],
    records: &[RawRecord],
) -> BTreeMap<i32, Expected> {
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    partitions
        .into_iter()
        .map(|p| {
            let mine: Vec<RawRecord> = records
                .iter()
                .filter(|r| r.partition == p)
                .cloned()
                .collect();
            (p, oracle(Format::Json, inputs, &mine))
        })
        .collect()
}

/// (source, window) → each partition's part of it (of [`per_partition`]'s windows).
pub fn parts_by_window(parts: &BTreeMap<i32, Expected>) -> BTreeMap<Window, Vec<(i32, Values)>> {
    let mut windows: BTreeMap<Window, Vec<(i32, Values)>> = BTreeMap::new();
    for (partition, expected) in parts {
        for (key, values) in &expected.windows {
            windows
                .entry(key.clone())
                .or_default()
                .push((*partition, *values));
        }
    }
    windows
}

/// The `sensor-` sources whose records are in another partition from input index `first` on than
/// before it, from the topic itself: source → (old partition, new partition).
pub fn moved_sources(
    inputs: &[crate::dataset::Input],
    records: &[RawRecord],
    first: usize,
) -> BTreeMap<String, (i32, i32)> {
    let mut homes: BTreeMap<String, (BTreeSet<i32>, BTreeSet<i32>)> = BTreeMap::new();
    for record in records {
        let index = index_of(record);
        let home = homes.entry(inputs[index].source.clone()).or_default();
        if index < first {
            home.0.insert(record.partition);
        } else {
            home.1.insert(record.partition);
        }
    }
    homes
        .into_iter()
        .filter(|(s, _)| s.starts_with("sensor-"))
        .filter_map(|(s, (old, new))| {
            assert_eq!(
                (old.len(), new.len()),
                (1, 1),
                "{s} keyed to one partition at a time"
            );
            let (old, new) = (*old.first()?, *new.first()?);
            (old != new).then_some((s, (old, new)))
        })
        .collect()
}

/// When the producers move sources to their new partitions, relative to the processor learning of
/// the change.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Producers {
    /// After the processor has rebalanced onto the new partitions (Java producers refresh their
    /// metadata every 5 minutes; the processor every 10 s): both parts are marked.
    SwitchAfterTheProcessorKnows,
    /// At once, while the processor still counts the old partitions: the old parts close
    /// unmarked, so the new parts must carry the mark.
    SwitchAtOnce,
}

#[test]
fn partitions_added_to_a_live_input_are_picked_up_and_split_windows_are_marked() {
    partitions_added(Producers::SwitchAfterTheProcessorKnows);
}

#[test]
fn a_split_window_is_marked_even_when_producers_switch_before_the_processor_knows() {
    partitions_added(Producers::SwitchAtOnce);
}

fn partitions_added(producers: Producers) {
    // Before the change: minutes 0–2 and the first half of minute 3; after it: the rest of minute
    // 3, minutes 4 and 5, then one event per partition at minute 20 to close every window.
    let before = events(0..=200);
    let after = events(210..=330);
    let mut all: Vec<(String, i64, f64)> = before.iter().chain(&after).cloned().collect();
    // One closer per partition of the five (chosen with streamagg's murmur2; checked below against
    // where the producer put them).
    let closers: Vec<String> = (0..5)
        .map(|p| {
            (0..)
                .map(|i| format!("closer-{i}"))
                .find(|c| partition_of(c.as_bytes(), 5) == Some(p))
                .expect("a key for every partition")
        })
        .collect();
    all.extend(closers.iter().map(|c| (c.clone(), BASE + 1_200_000, 60.0)));
    let borrowed: Vec<(&str, i64, f64)> =
        all.iter().map(|(s, t, v)| (s.as_str(), *t, *v)).collect();
    let scenario = Scenario::with_inputs("repartition", Format::Json, 3, json_events(&borrowed));
    let (first, second) = (before.len(), before.len() + after.len());

    let mut processor = scenario.start_assigned("a", Duration::from_secs(60));
    scenario.preload(0..first);
    let emitted = wait_for_records(
        &scenario.topics.output.name,
        SOURCES * 3,
        Duration::from_secs(60),
        || check_alive(&mut [&mut processor]),
    );
    assert_eq!(
        emitted.len(),
        SOURCES * 3,
        "minutes 0-2 closed before the change"
    );

    add_partitions(&scenario.topics.input, 5);
    if producers == Producers::SwitchAtOnce {
        // A new producer, which asks for the topic's metadata now.
        scenario.preload(first..second);
        scenario.preload(second..scenario.inputs.len());
    }
    // Picked up without a restart, by the metadata refresh and the rebalance it causes.
    let started = std::time::Instant::now();
    while !assigned_partitions(&processor.log()).is_superset(&BTreeSet::from([3, 4])) {
        check_alive(&mut [&mut processor]);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new partitions were not assigned within 60 s; log:\n{}",
            processor.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let added = processor.wait_for_metric(
        "streamagg_input_partitions_added_total",
        2.0,
        Duration::from_secs(10),
    );
    assert_eq!(added, 2.0, "two partitions added");

    if producers == Producers::SwitchAfterTheProcessorKnows {
        // A new producer sees five partitions: moved sources now go to their new partition.
        scenario.preload(first..second);
        scenario.preload(second..scenario.inputs.len());
    }

    let input = read_all(&scenario.topics.input.name);
    let closed: BTreeSet<i32> = input
        .iter()
        .filter(|r| index_of(r) >= second)
        .map(|r| r.partition)
        .collect();
    assert_eq!(
        closed,
        BTreeSet::from([0, 1, 2, 3, 4]),
        "a closer in every partition"
    );
    let parts = per_partition(&scenario.inputs, &input);
    let moved = moved_sources(&scenario.inputs, &input, first);
    assert!(
        moved.len() >= 8 && moved.len() <= SOURCES - 8,
        "a fair share of the sources moved: {}",
        moved.len()
    );
    assert!(
        moved.values().any(|&(old, new)| old < 3 && new < 3),
        "some sources moved between the old partitions, not only to new ones: {moved:?}"
    );

    let expected = parts_by_window(&parts);
    let records_expected: usize = expected.values().map(Vec::len).sum();
    let split: Vec<&(String, i64)> = expected.keys().filter(|k| expected[*k].len() > 1).collect();
    assert_eq!(
        split.len(),
        moved.len(),
        "exactly one window of each moved source is split"
    );

    let output = wait_for_records(
        &scenario.topics.output.name,
        records_expected,
        Duration::from_secs(90),
        || check_alive(&mut [&mut processor]),
    );
    let mut got: BTreeMap<Window, Vec<(Option<String>, Values)>> = BTreeMap::new();
    for record in &output {
        let window = decode_output(Format::Json, record.payload.as_deref().expect("payload"));
        got.entry((window.source, window.start)).or_default().push((
            header(record, SPLIT_HEADER),
            (window.count, window.sum, window.min, window.max),
        ));
    }
    assert_eq!(
        output.len(),
        records_expected,
        "one record per window part, nothing more"
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the windows of every source"
    );
    let same = |a: &Values, b: &Values| a.0 == b.0 && close(a.1, b.1) && a.2 == b.2 && a.3 == b.3;
    for (key, wanted) in &expected {
        let records = &got[key];
        assert_eq!(records.len(), wanted.len(), "{key:?}: one record per part");
        // A split window's parts are marked with where they were read and where their source
        // belongs with the count that makes them a part; the old part only if the processor knew
        // of the change in time.
        let split_from = moved.get(key.0.as_str()).filter(|_| wanted.len() > 1);
        for (partition, part) in wanted {
            let marks: Vec<Option<String>> = match split_from {
                // Whole windows of a source that moved between two old partitions, read before
                // the processor knew the new count: not at home with 3 partitions, so marked.
                None => match moved.get(key.0.as_str()) {
                    Some(&(old, new))
                        if producers == Producers::SwitchAtOnce && *partition == new && new < 3 =>
                    {
                        vec![
                            None,
                            Some(format!("partition={new} home={old} partitions=3")),
                        ]
                    }
                    _ => vec![None],
                },
                Some(&(old, new)) if *partition == old => {
                    let mark = Some(format!("partition={old} home={new} partitions=5"));
                    match producers {
                        Producers::SwitchAtOnce => vec![None, mark],
                        Producers::SwitchAfterTheProcessorKnows => vec![mark],
                    }
                }
                Some(&(old, new)) => vec![Some(format!("partition={new} home={old} partitions=3"))],
            };
            assert!(
                records.iter().any(|(h, values)| marks.contains(h) && same(values, part)),
                "{key:?}: the part from partition {partition} {part:?} with a header in {marks:?}; got {records:?}"
            );
        }
        if split_from.is_some() {
            assert!(
                records.iter().any(|(h, _)| h.is_some()),
                "{key:?}: a split window has a marked part: {records:?}"
            );
        }
        // The parts add up to the window as the whole input has it.
        let count: i64 = records.iter().map(|(_, v)| v.0).sum();
        let sum: f64 = records.iter().map(|(_, v)| v.1).sum();
        let whole: Vec<f64> = all
            .iter()
            .filter(|(s, t, _)| *s == key.0 && t.div_euclid(60_000) * 60_000 == key.1)
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(
            count,
            whole.len() as i64,
            "{key:?}: the parts' counts add up"
        );
        assert!(
            close(sum, whole.iter().sum()),
            "{key:?}: the parts' sums add up"
        );
    }
    let marked_records = output
        .iter()
        .filter(|r| header(r, SPLIT_HEADER).is_some())
        .count();
    if producers == Producers::SwitchAfterTheProcessorKnows {
        assert_eq!(
            marked_records,
            2 * moved.len(),
            "both parts of each split window"
        );
    }
    let marked = processor.wait_for_metric(
        "streamagg_windows_possibly_split_total",
        marked_records as f64,
        Duration::from_secs(10),
    );
    if producers == Producers::SwitchAfterTheProcessorKnows {
        assert_eq!(
            marked, marked_records as f64,
            "each marked window counted once"
        );
    } // else results of a transaction redone with the new count are counted twice
    assert!(processor
        .log()
        .contains("partitions were added to an input topic"));
    processor.stop_gracefully();
}

#[test]
fn the_partitioners_agree_with_librdkafkas_own() {
    use streamagg::partitioner::Partitioner;
    let keys: Vec<String> = (0..300)
        .map(|i| format!("source-{i}-{}", "x".repeat(i % 9)))
        .collect();
    let borrowed: Vec<(&str, i64, f64)> = keys.iter().map(|k| (k.as_str(), BASE, 60.0)).collect();
    let inputs = json_events(&borrowed);
    for (librdkafka, ours) in [
        ("murmur2_random", Partitioner::Murmur2),
        ("consistent_random", Partitioner::Crc32),
    ] {
        let topic = TestTopic::create("partitioner", 7);
        let properties = BTreeMap::from([("partitioner".to_owned(), librdkafka.to_owned())]);
        produce_inputs_with_headers(&topic.name, &inputs, 0..inputs.len(), &properties, |_, h| h);
        let records = read_all(&topic.name);
        assert_eq!(records.len(), keys.len());
        for record in &records {
            let key = &keys[index_of(record)];
            assert_eq!(
                ours.partition_of(key.as_bytes(), 7),
                Some(record.partition),
                "{librdkafka} put {key} in partition {}",
                record.partition
            );
        }
    }
    // The processor's own producer (`streamagg produce`, the gateway) is murmur2.
    let topic = TestTopic::create("partitioner-default", 7);
    produce_inputs(&topic.name, &inputs, 0..inputs.len());
    for record in read_all(&topic.name) {
        let key = &keys[index_of(&record)];
        assert_eq!(
            Partitioner::Murmur2.partition_of(key.as_bytes(), 7),
            Some(record.partition)
        );
    }
}

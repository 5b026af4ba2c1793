//! Tests of [`super`] (window).

use super::*;

const MINUTE: WindowSpec = WindowSpec::epoch(60_000, 10_000);

/// Windows of one size holding `windows` at `stream_time`, as a store would restore them.
fn restore(
    spec: WindowSpec,
    stream_time: Option<i64>,
    windows: impl IntoIterator<Item = (i64, String, Aggregate)>,
) -> PartitionWindows {
    let stored = windows
        .into_iter()
        .map(|(start, source, aggregate)| StoredWindow {
            size_ms: spec.size_ms,
            start,
            source,
            aggregate,
        });
    let (restored, unknown) = PartitionWindows::new(spec).restored(stream_time, stored);
    assert_eq!(unknown, 0);
    restored
}

#[test]
fn window_start_rounds_down_to_the_epoch_aligned_window() {
    let cases: &[(i64, Option<i64>)] = &[
        (0, Some(0)),
        (59_999, Some(0)),
        (60_000, Some(60_000)),
        (-1, Some(-60_000)),
        (-60_000, Some(-60_000)),
        (1_700_000_012_345, Some(1_699_999_980_000)),
        (i64::MAX, None),
        (i64::MAX - 40_000, None),
        (i64::MAX - 80_000, Some(9_223_372_036_854_660_000)),
        (i64::MIN, None),
        // The first windows of time are refused until `open_from` has room below them.
        (i64::MIN + 100_000, None),
        (-9_223_372_036_854_600_001, None),
        (-9_223_372_036_854_600_000, Some(-9_223_372_036_854_600_000)),
    ];
    for &(timestamp, expected) in cases {
        assert_eq!(MINUTE.start_of(timestamp), expected, "{timestamp}");
    }
}

#[test]
fn open_from_is_the_first_start_whose_close_time_is_after_stream_time() {
    for stream_time in [
        -200_000_i64,
        -70_001,
        -1,
        0,
        69_999,
        70_000,
        70_001,
        129_999,
        130_000,
        1_700_000_012_345,
    ] {
        let open_from = MINUTE.open_from(stream_time);
        assert_eq!(open_from.rem_euclid(60_000), 0);
        assert!(MINUTE.closes_at(open_from) > stream_time, "{stream_time}");
        assert!(
            MINUTE.closes_at(open_from - 60_000) <= stream_time,
            "{stream_time}"
        );
    }
}

/// The table: events (source, timestamp, value) in arrival order, and what each produced.
#[test]
fn observe_and_close_follow_stream_time_and_grace() {
    let mut windows = PartitionWindows::new(MINUTE);
    type Step = (
        &'static str,
        i64,
        f64,
        Observed,
        &'static [(&'static str, i64, u64)],
    );
    let steps: &[Step] = &[
        ("a", 5_000, 1.0, Observed::Aggregated, &[]),
        ("b", 59_000, 3.0, Observed::Aggregated, &[]),
        ("a", 61_000, 5.0, Observed::Aggregated, &[]),
        // out of order but within grace: still counts for [0, 60s)
        ("a", 30_000, 7.0, Observed::Aggregated, &[]),
        // stream time 69_999: [0, 60s) closes at 70_000, not yet
        ("c", 69_999, 1.0, Observed::Aggregated, &[]),
        // stream time 70_000: [0, 60s) closes; sorted by source
        (
            "c",
            70_000,
            1.0,
            Observed::Aggregated,
            &[("a", 0, 2), ("b", 0, 1)],
        ),
        // its window closed: late
        (
            "b",
            10_000,
            9.0,
            Observed::Late {
                window_start: 0,
                rolled_up: false,
            },
            &[],
        ),
        // a far-future event closes everything before it
        (
            "z",
            1_000_000,
            2.0,
            Observed::Aggregated,
            &[("a", 60_000, 1), ("c", 60_000, 2)],
        ),
    ];
    for (i, &(source, timestamp, value, expected, closes)) in steps.iter().enumerate() {
        assert_eq!(
            windows.observe(source, timestamp, value, i as i64),
            expected,
            "step {i}"
        );
        let closed: Vec<(String, i64, u64)> = windows
            .close_due()
            .into_iter()
            .map(|w| (w.source.to_string(), w.window_start, w.aggregate.count))
            .collect();
        let expected: Vec<(String, i64, u64)> = closes
            .iter()
            .map(|&(s, w, c)| (s.to_owned(), w, c))
            .collect();
        assert_eq!(closed, expected, "step {i}");
    }
    assert_eq!(windows.stream_time(), Some(1_000_000));
    assert_eq!(windows.open_count(), 1);
}

#[test]
fn windows_of_a_source_are_its_open_windows_by_start_and_nothing_of_others() {
    let mut windows = PartitionWindows::new(MINUTE);
    for (source, timestamp, value, offset) in [
        ("a", 1_000, 1.0, 0),
        ("b", 2_000, 5.0, 1),
        ("a", 61_000, 2.0, 2),
        ("a", 3_000, 3.0, 3),
    ] {
        assert_eq!(
            windows.observe(source, timestamp, value, offset),
            Observed::Aggregated
        );
    }
    let a: Vec<(i64, u64, f64)> = windows
        .windows_of("a")
        .into_iter()
        .map(|(_, start, _, agg)| (start, agg.count, agg.sum))
        .collect();
    assert_eq!(a, [(0, 2, 4.0), (60_000, 1, 2.0)]);
    assert_eq!(windows.windows_of("c").len(), 0);
    // Once stream time closes the first minute, only the second is open.
    windows.advance_stream_time(70_000);
    assert_eq!(windows.close_due().len(), 2);
    let a: Vec<i64> = windows
        .windows_of("a")
        .into_iter()
        .map(|(_, start, _, _)| start)
        .collect();
    assert_eq!(a, [60_000]);
    assert_eq!(windows.windows_of("b").len(), 0);
}

#[test]
fn aggregates_sum_count_min_max_and_first_offset() {
    let mut windows = PartitionWindows::new(MINUTE);
    for (offset, value) in [(10, 4.0), (11, -1.5), (12, 9.25), (13, 0.0)] {
        windows.observe("s", 1_000 + offset, value, offset);
    }
    assert_eq!(windows.rebuild_offset(), Some(10));
    windows.observe("t", 200_000, 1.0, 14);
    let closed = windows.close_due();
    assert_eq!(
        closed,
        vec![ClosedWindow {
            source: "s".into(),
            window_start: 0,
            window_end: 60_000,
            level: 0,
            aggregate: Aggregate {
                count: 4,
                sum: 11.75,
                min: -1.5,
                max: 9.25,
                first_offset: 10,
                sketch: None,
            },
        }]
    );
    assert_eq!(windows.rebuild_offset(), Some(14));
}

#[test]
fn dirty_windows_are_reported_once_per_change_and_closed_ones_not_at_all() {
    let mut windows = PartitionWindows::new(MINUTE);
    windows.observe("a", 1_000, 1.0, 0);
    windows.observe("a", 2_000, 1.0, 1);
    windows.observe("b", 61_000, 1.0, 2);
    let dirty = windows.take_dirty().remove(0);
    assert_eq!(
        dirty
            .iter()
            .map(|(s, src, a)| (*s, src.as_str(), a.count))
            .collect::<Vec<_>>(),
        [(0, "a", 2), (60_000, "b", 1)]
    );
    assert!(windows.take_dirty()[0].is_empty());
    windows.observe("b", 62_000, 1.0, 3);
    windows.observe("c", 500_000, 1.0, 4);
    windows.close_due();
    // b changed but then closed: nothing to store for it; c is new.
    let dirty: Vec<_> = windows
        .take_dirty()
        .remove(0)
        .into_iter()
        .map(|(s, src, _)| (s, src))
        .collect();
    assert_eq!(dirty, [(480_000, SmolStr::new("c"))]);
}

#[test]
fn advancing_stream_time_closes_windows_and_never_moves_it_back() {
    let mut windows = PartitionWindows::new(MINUTE);
    windows.observe("a", 1_000, 1.0, 0);
    windows.advance_stream_time(69_999);
    assert!(windows.close_due().is_empty());
    windows.advance_stream_time(70_000);
    assert_eq!(windows.close_due().len(), 1);
    windows.advance_stream_time(5);
    assert_eq!(windows.stream_time(), Some(70_000));
}

#[test]
fn restore_then_continue_equals_an_uninterrupted_run() {
    let events: Vec<(String, i64, f64)> = (0..2_000)
        .map(|i| {
            (
                format!("s{}", i % 7),
                i * 997 % 400_000 + i * 300,
                (i % 13) as f64,
            )
        })
        .collect();
    let mut uninterrupted = PartitionWindows::new(MINUTE);
    let mut expected = Vec::new();
    for (offset, (source, ts, value)) in events.iter().enumerate() {
        uninterrupted.observe(source, *ts, *value, offset as i64);
        expected.extend(uninterrupted.close_due());
    }

    let mut first = PartitionWindows::new(MINUTE);
    let mut got = Vec::new();
    for (offset, (source, ts, value)) in events.iter().enumerate().take(1_000) {
        first.observe(source, *ts, *value, offset as i64);
        got.extend(first.close_due());
    }
    let stored = first
        .take_dirty()
        .remove(0)
        .into_iter()
        .map(|(start, source, a)| (start, source.to_string(), a));
    let mut second = restore(MINUTE, first.stream_time(), stored);
    for (offset, (source, ts, value)) in events.iter().enumerate().skip(1_000) {
        second.observe(source, *ts, *value, offset as i64);
        got.extend(second.close_due());
    }
    assert_eq!(got, expected);
}

/// Properties over generated event streams, checked against an oracle that groups the events
/// with its own arithmetic (`ts - ts.rem_euclid(size)`), not through `WindowSpec`.
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const SPEC: WindowSpec = WindowSpec::epoch(1_000, 300);

    /// (source, timestamp, value, arrival jitter ≤ grace). Values are small integers so float
    /// sums are exact in any order.
    type Event = (String, i64, f64, i64);
    /// (window_start, source, count, sum, min, max, first_offset).
    type Row = (i64, String, u64, f64, f64, f64, i64);

    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "c", "ü/eth0"]).prop_map(str::to_owned),
                -2_500_i64..6_000,
                (-50_i32..50).prop_map(f64::from),
                0..=SPEC.grace_ms,
            ),
            0..200,
        )
    }

    fn oracle(events: &[Event]) -> Vec<Row> {
        let mut windows: BTreeMap<(i64, String), Row> = BTreeMap::new();
        for (offset, (source, ts, value, _)) in events.iter().enumerate() {
            let start = ts - ts.rem_euclid(SPEC.size_ms);
            let row = windows.entry((start, source.clone())).or_insert((
                start,
                source.clone(),
                0,
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                i64::MAX,
            ));
            row.2 += 1;
            row.3 += value;
            row.4 = row.4.min(*value);
            row.5 = row.5.max(*value);
            row.6 = row.6.min(offset as i64);
        }
        windows.into_values().collect()
    }

    fn flat(closed: &[ClosedWindow]) -> Vec<Row> {
        closed
            .iter()
            .map(|w| {
                let a = &w.aggregate;
                (
                    w.window_start,
                    w.source.to_string(),
                    a.count,
                    a.sum,
                    a.min,
                    a.max,
                    a.first_offset,
                )
            })
            .collect()
    }

    /// Feeds `order` (indices into `events`, whose index is the event's offset), closing after
    /// every event and at the end; returns what was emitted and how many events were late.
    fn run(events: &[Event], order: &[usize]) -> (Vec<ClosedWindow>, usize) {
        let mut windows = PartitionWindows::new(SPEC);
        let mut emitted = Vec::new();
        let mut late = 0;
        for &i in order {
            let (source, ts, value, _) = &events[i];
            match windows.observe(source, *ts, *value, i as i64) {
                Observed::Aggregated => {}
                Observed::Late { .. } => late += 1,
                Observed::OutOfRange | Observed::NotNested | Observed::ValueOutOfRange => {
                    panic!("timestamps and values are in range")
                }
            }
            emitted.extend(windows.close_due());
        }
        windows.advance_stream_time(i64::MAX / 2);
        emitted.extend(windows.close_due());
        (emitted, late)
    }

    /// A seeded Fisher–Yates shuffle of `0..n`: any permutation, reproducible from the seed.
    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        let mut state = seed | 1;
        for i in (1..n).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        order
    }

    proptest! {
        /// Any arrival order that keeps every event within grace of the stream time gives the
        /// oracle's windows, in (window_start, source) order, whatever the order was.
        #[test]
        fn any_in_grace_permutation_gives_the_oracle_in_closing_order(events in events()) {
            // Arrival by timestamp + jitter: an event arrives after no event more than `grace`
            // newer than itself, so none is late.
            let mut order: Vec<usize> = (0..events.len()).collect();
            order.sort_by_key(|&i| (events[i].1 + events[i].3, i));
            let (emitted, late) = run(&events, &order);
            prop_assert_eq!(late, 0);
            prop_assert_eq!(flat(&emitted), oracle(&events));
        }

        /// Under any order at all, every event is either in exactly one emitted window or
        /// counted late, each window is emitted once, and emission is in (start, source) order.
        #[test]
        fn under_any_order_nothing_is_lost_and_closing_order_is_deterministic(
            events in events(),
            shuffle in any::<u64>(),
        ) {
            let order = shuffled(events.len(), shuffle);
            let (emitted, late) = run(&events, &order);
            let counted: u64 = emitted.iter().map(|w| w.aggregate.count).sum();
            prop_assert_eq!(counted as usize + late, events.len());
            for pair in emitted.windows(2) {
                prop_assert!(
                    (pair[0].window_start, &pair[0].source) < (pair[1].window_start, &pair[1].source),
                    "emitted out of order or twice: {:?} then {:?}", pair[0], pair[1]
                );
            }
        }

        /// Checkpointing the dirty windows at any point, dropping the in-memory state and
        /// restoring from the checkpoint, then continuing, emits what an uninterrupted run emits
        /// (under any order, so late events after the restore are judged as before it).
        #[test]
        fn restoring_from_a_checkpoint_at_any_point_changes_nothing(
            events in events(),
            shuffle in any::<u64>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let order = shuffled(events.len(), shuffle);
            let (expected, _) = run(&events, &order);

            let cut = if order.is_empty() { 0 } else { cut.index(order.len() + 1) };
            let mut stored: BTreeMap<(i64, String), Aggregate> = BTreeMap::new();
            let mut windows = PartitionWindows::new(SPEC);
            let mut emitted = Vec::new();
            for &i in &order[..cut] {
                let (source, ts, value, _) = &events[i];
                windows.observe(source, *ts, *value, i as i64);
                emitted.extend(windows.close_due());
                // A checkpoint after every few events, as the pipeline does on its interval.
                if i % 3 == 0 {
                    for (start, source, aggregate) in windows.take_dirty().remove(0) {
                        stored.insert((start, source.to_string()), aggregate);
                    }
                    let open_from = windows.open_from()[0];
                    stored.retain(|(start, _), _| *start >= open_from);
                }
            }
            for (start, source, aggregate) in windows.take_dirty().remove(0) {
                stored.insert((start, source.to_string()), aggregate);
            }
            let open_from = windows.open_from()[0];
            stored.retain(|(start, _), _| *start >= open_from);
            let mut restored = restore(
                SPEC,
                windows.stream_time(),
                stored.into_iter().map(|((start, source), a)| (start, source, a)),
            );
            drop(windows);
            for &i in &order[cut..] {
                let (source, ts, value, _) = &events[i];
                restored.observe(source, *ts, *value, i as i64);
                emitted.extend(restored.close_due());
            }
            restored.advance_stream_time(i64::MAX / 2);
            emitted.extend(restored.close_due());
            prop_assert_eq!(flat(&emitted), flat(&expected));
        }
    }
}

/// At every accepted timestamp, the window holding it is still open once stream time reaches
/// it: observing an event never closes (and later reopens) its own window, even at the ends of
/// time, where the arithmetic of `open_from` would otherwise saturate.
#[test]
fn an_event_never_closes_its_own_window_at_the_ends_of_time() {
    let first = -9_223_372_036_854_600_000_i64;
    let last = i64::MAX - 80_000;
    for timestamp in [
        first,
        first + 1,
        first + 59_999,
        first + 60_000,
        -1,
        0,
        last - 60_000,
        last,
    ] {
        let start = MINUTE.start_of(timestamp).expect("accepted");
        assert!(MINUTE.open_from(timestamp) <= start, "{timestamp}");
        let mut windows = PartitionWindows::new(MINUTE);
        assert_eq!(
            windows.observe("s", timestamp, 1.0, 0),
            Observed::Aggregated
        );
        assert_eq!(windows.close_due(), Vec::new(), "{timestamp}");
        assert_eq!(windows.open_count(), 1, "{timestamp}");
    }
}

/// A window's sum stays finite: an event whose value would overflow it is refused and changes
/// nothing (not the window, not stream time), while other windows keep their events.
#[test]
fn a_value_that_would_overflow_the_sum_is_refused_and_changes_nothing() {
    let mut windows = PartitionWindows::new(MINUTE);
    let huge = f64::MAX;
    let steps = [
        ("a", 1_000, huge, Observed::Aggregated),
        ("a", 2_000, huge, Observed::ValueOutOfRange),
        ("a", 3_000, -huge, Observed::Aggregated),
        ("a", 4_000, -huge, Observed::Aggregated),
        ("a", 50_000, -huge, Observed::ValueOutOfRange),
        ("b", 50_000, huge, Observed::Aggregated),
    ];
    for (source, timestamp, value, expected) in steps {
        assert_eq!(
            windows.observe(source, timestamp, value, timestamp),
            expected,
            "{source}@{timestamp}"
        );
    }
    assert_eq!(windows.stream_time(), Some(50_000));
    windows.advance_stream_time(70_000);
    let closed = windows.close_due();
    let a = &closed[0].aggregate;
    assert_eq!((a.count, a.sum, a.min, a.max), (3, -huge, -huge, huge));
    assert_eq!(closed[1].aggregate.sum, huge);
    for window in &closed {
        let a = &window.aggregate;
        assert!((a.sum / a.count as f64).is_finite());
    }
}

#[test]
fn latest_time_is_the_last_timestamp_a_window_holds() {
    for (size_ms, grace_ms) in [
        (60_000, 10_000),
        (1, 0),
        (7, 3),
        (86_400_000, 0),
        (1_000, 999_999),
    ] {
        let spec = WindowSpec::epoch(size_ms, grace_ms);
        let latest = spec.latest_time();
        assert!(
            spec.start_of(latest).is_some(),
            "{spec:?}: {latest} is in a window"
        );
        assert!(
            spec.start_of(latest + 1).is_none(),
            "{spec:?}: {} is not",
            latest + 1
        );
    }
}

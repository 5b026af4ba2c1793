//! Tests of [`super`] with several window sizes (rollups), against an oracle that judges every
//! event against every size with its own arithmetic (`ts - ts.rem_euclid(size)`), in arrival
//! order, without merging anything.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::window::sketch::Sketch;

const GRACE: i64 = 300;
const BASE: WindowSpec = WindowSpec::epoch(1_000, GRACE);
const SIZES: [i64; 3] = [1_000, 3_000, 6_000];

fn rollups() -> Rollups {
    Rollups::new(&SIZES[1..]).expect("two rollups")
}

fn windows() -> PartitionWindows {
    PartitionWindows::new(BASE).rolling_up(rollups())
}

/// (source, timestamp, value). Values are small integers so float sums are exact in any order.
type Event = (String, i64, f64);
/// (size, window_start, source) → (count, sum, min, max, first_offset).
type Windows = BTreeMap<(i64, i64, String), (u64, f64, f64, f64, i64)>;

/// Every size's windows as the semantics define them: a window holds exactly the events that
/// arrived while stream time (the largest timestamp so far, the event's own included) was below
/// its `start + size + grace`.
fn oracle(events: &[Event]) -> Windows {
    let mut windows = Windows::new();
    let mut stream_time = i64::MIN;
    for (offset, (source, ts, value)) in events.iter().enumerate() {
        stream_time = stream_time.max(*ts);
        for size in SIZES {
            let start = ts - ts.rem_euclid(size);
            if start + size + GRACE <= stream_time {
                continue;
            }
            let row = windows.entry((size, start, source.clone())).or_insert((
                0,
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                i64::MAX,
            ));
            row.0 += 1;
            row.1 += value;
            row.2 = row.2.min(*value);
            row.3 = row.3.max(*value);
            row.4 = row.4.min(offset as i64);
        }
    }
    windows
}

fn size_of(window: &ClosedWindow) -> i64 {
    window.window_end - window.window_start
}

fn table(closed: &[ClosedWindow]) -> Windows {
    let mut table = Windows::new();
    for w in closed {
        let a = &w.aggregate;
        let previous = table.insert(
            (size_of(w), w.window_start, w.source.to_string()),
            (a.count, a.sum, a.min, a.max, a.first_offset),
        );
        assert!(previous.is_none(), "emitted twice: {w:?}");
    }
    table
}

/// Feeds `events` in order, closing after each, then closes everything; checks per-size order.
fn run(windows: &mut PartitionWindows, events: &[Event], first_offset: usize) -> Vec<ClosedWindow> {
    let mut emitted = Vec::new();
    for (i, (source, ts, value)) in events.iter().enumerate() {
        windows.observe(source, *ts, *value, (first_offset + i) as i64);
        emitted.extend(windows.close_due());
    }
    emitted
}

fn finish(mut windows: PartitionWindows) -> Vec<ClosedWindow> {
    windows.advance_stream_time(i64::MAX / 4);
    windows.close_due()
}

#[test]
fn a_larger_window_is_the_merge_of_its_smaller_ones_and_closes_with_the_last() {
    let mut windows = windows().keeping_percentiles(SketchSpec::new(0.01, 64));
    /// (source, timestamp, value, what observing it answers, the windows that close after it).
    type Step = (&'static str, i64, f64, Observed, &'static [(i64, i64)]);
    let events: &[Step] = &[
        ("a", 100, 1.0, Observed::Aggregated, &[]),
        ("a", 1_100, 2.0, Observed::Aggregated, &[]),
        // stream time 1_300 closes [0, 1s) (its end + grace); the 3 s window stays open
        ("a", 1_300, 3.0, Observed::Aggregated, &[(0, 1_000)]),
        // late for [0, 1s) but the 3 s and 6 s windows still take it
        (
            "a",
            500,
            4.0,
            Observed::Late {
                window_start: 0,
                rolled_up: true,
            },
            &[],
        ),
        ("a", 2_500, 5.0, Observed::Aggregated, &[(1_000, 2_000)]),
        // stream time 3_300: [2s, 3s) closes, and with it [0, 3s)
        (
            "b",
            3_300,
            6.0,
            Observed::Aggregated,
            &[(2_000, 3_000), (0, 3_000)],
        ),
    ];
    for &(source, ts, value, ref observed, closing) in events {
        assert_eq!(
            &windows.observe(source, ts, value, ts),
            observed,
            "{source} {ts}"
        );
        let closed: Vec<(i64, i64)> = windows
            .close_due()
            .iter()
            .map(|w| (w.window_start, w.window_end))
            .collect();
        assert_eq!(closed, closing, "after {source} {ts}");
    }
    // The 6 s window closes at 6_300: it holds the 3 s window and b.
    windows.advance_stream_time(6_300);
    let closed = windows.close_due();
    let last = closed.last().expect("the 6 s window of a");
    assert_eq!(
        (last.window_start, last.window_end, last.level),
        (0, 6_000, 2)
    );
    let rolled = &closed[closed.len() - 2];
    assert_eq!((rolled.source.as_str(), rolled.window_end), ("a", 6_000));
    assert_eq!(
        (
            rolled.aggregate.count,
            rolled.aggregate.sum,
            rolled.aggregate.first_offset
        ),
        (5, 15.0, 100)
    );
    // Sketches merge exactly: the rolled-up one is the sketch of all five values.
    let spec = SketchSpec::new(0.01, 64).expect("valid");
    let mut all = Sketch::default();
    for value in [1.0, 2.0, 3.0, 4.0, 5.0] {
        all.add(&spec, value);
    }
    assert_eq!(rolled.aggregate.sketch.as_deref(), Some(&all));
}

#[test]
fn a_live_view_of_a_larger_window_includes_its_smaller_windows_still_open() {
    let mut windows = windows();
    for (offset, (ts, value)) in [(100, 1.0), (1_100, 2.0), (1_400, 4.0)]
        .into_iter()
        .enumerate()
    {
        windows.observe("a", ts, value, offset as i64);
        windows.close_due();
    }
    // [0, 1s) closed into the 3 s and 6 s windows; [1s, 2s) is open: each larger window has all.
    let view: Vec<(i64, i64, u64, f64)> = windows
        .windows_of("a")
        .into_iter()
        .map(|(_, start, end, a)| (start, end, a.count, a.sum))
        .collect();
    assert_eq!(
        view,
        [
            (1_000, 2_000, 2, 6.0),
            (0, 3_000, 3, 7.0),
            (0, 6_000, 3, 7.0)
        ]
    );
    assert!(windows.windows_of("b").is_empty());
}

#[test]
fn late_for_every_size_is_late_and_changes_nothing() {
    let mut windows = windows();
    windows.observe("a", 10_000, 1.0, 0);
    let before = windows.clone();
    assert_eq!(
        windows.observe("a", 100, 1.0, 1),
        Observed::Late {
            window_start: 0,
            rolled_up: false
        }
    );
    assert_eq!(windows, before);
}

#[test]
fn huge_values_are_refused_when_a_rolled_up_sum_would_overflow() {
    let mut windows = windows();
    assert_eq!(windows.observe("a", 100, 1.0e308, 0), Observed::Aggregated);
    // Another minute: its own sum is finite, but the 3 s window would merge to infinity.
    assert_eq!(
        windows.observe("a", 1_100, 1.0e308, 1),
        Observed::ValueOutOfRange
    );
    assert_eq!(
        windows.observe("b", 1_100, 1.0e308, 2),
        Observed::Aggregated
    );
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned),
            -2_500_i64..13_000,
            (-50_i32..50).prop_map(f64::from),
        ),
        0..250,
    )
}

/// The windows a pinned-stream-time rebuild makes, and the uninterrupted run's open windows, as
/// stored (every size).
fn open_windows(windows: &mut PartitionWindows) -> Windows {
    let sizes: Vec<i64> = windows.specs().map(|s| s.size_ms).collect();
    let mut open = Windows::new();
    // Everything is dirty for a fresh or replayed run; the clone keeps `windows` untouched.
    for (size, changed) in sizes.iter().zip(windows.clone().take_dirty()) {
        for (start, source, a) in changed {
            open.insert(
                (*size, start, source.to_string()),
                (a.count, a.sum, a.min, a.max, a.first_offset),
            );
        }
    }
    open
}

proptest! {
    /// Whatever the order (late events included), every size's windows are the oracle's, each
    /// emitted once, and per size in (window_start, source) order.
    #[test]
    fn every_size_holds_what_arrived_before_it_closed(events in events()) {
        let mut windows = windows();
        let mut emitted = run(&mut windows, &events, 0);
        emitted.extend(finish(windows));
        prop_assert_eq!(table(&emitted), oracle(&events));
        for level in 0..SIZES.len() {
            let keys: Vec<_> = emitted
                .iter()
                .filter(|w| w.level == level)
                .map(|w| (w.window_start, w.source.clone()))
                .collect();
            prop_assert!(keys.windows(2).all(|p| p[0] < p[1]), "level {}: {:?}", level, keys);
        }
    }

    /// Restoring every size's checkpointed windows at any point changes nothing.
    #[test]
    fn a_restore_at_any_point_changes_nothing(events in events(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(events.len() + 1);
        let mut expected = {
            let mut windows = windows();
            let mut emitted = run(&mut windows, &events, 0);
            emitted.extend(finish(windows));
            table(&emitted)
        };
        let mut first = windows();
        let mut emitted = run(&mut first, &events[..cut], 0);
        let stored: Vec<StoredWindow> = first
            .specs()
            .map(|s| s.size_ms)
            .collect::<Vec<_>>()
            .into_iter()
            .zip(first.take_dirty())
            .flat_map(|(size_ms, changed)| {
                changed.into_iter().map(move |(start, source, aggregate)| StoredWindow {
                    size_ms,
                    start,
                    source: source.to_string(),
                    aggregate,
                })
            })
            .collect();
        let (mut restored, unknown) = windows().restored(first.stream_time(), stored);
        prop_assert_eq!(unknown, 0);
        emitted.extend(run(&mut restored, &events[cut..], cut));
        emitted.extend(finish(restored));
        prop_assert_eq!(table(&emitted), std::mem::take(&mut expected));
    }

    /// A hand-off without state: replaying from the rebuild offset with stream time pinned at the
    /// committed value, and closing nothing, gives exactly the open windows of every size.
    #[test]
    fn a_pinned_rebuild_gives_every_size_s_open_windows(events in events(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(events.len() + 1);
        let mut uninterrupted = windows();
        run(&mut uninterrupted, &events[..cut], 0);
        let expected = open_windows(&mut uninterrupted);
        let from = uninterrupted.rebuild_offset().map_or(cut, |o| o as usize);
        let (mut rebuilt, _) = windows().restored(uninterrupted.stream_time(), []);
        for (i, (source, ts, value)) in events.iter().enumerate().take(cut).skip(from) {
            rebuilt.observe(source, *ts, *value, i as i64);
        }
        prop_assert_eq!(rebuilt.stream_time(), uninterrupted.stream_time());
        prop_assert_eq!(open_windows(&mut rebuilt), expected);
    }
}

/// Zones whose clocks do what most do not: the windows stay well formed, nothing is emitted twice,
/// and what an event gets does not depend on what came before it (cases found in review).
mod zones {
    use super::*;
    use crate::window::zone::Zone;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    fn utc(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>()
            .expect("a UTC time")
            .as_millisecond()
    }

    fn zoned(name: &str, size_ms: i64, grace_ms: i64) -> WindowSpec {
        WindowSpec {
            size_ms,
            grace_ms,
            zone: Some(Zone::named(name).expect("a zone")),
        }
    }

    /// Feeds `(timestamp, value)` events, closes after each and at the end; no (size, start) twice.
    fn emitted_once(mut windows: PartitionWindows, events: &[i64]) -> Vec<ClosedWindow> {
        let mut closed = Vec::new();
        for (offset, ts) in events.iter().enumerate() {
            windows.observe("s", *ts, 1.0, offset as i64);
            closed.extend(windows.close_due());
        }
        closed.extend(finish(windows));
        let mut seen = std::collections::BTreeSet::new();
        for w in &closed {
            assert!(
                w.window_end > w.window_start,
                "an empty or negative window: {w:?}"
            );
            assert!(
                seen.insert((w.level, w.window_start)),
                "emitted twice: {w:?}"
            );
        }
        closed
    }

    /// Before 1893 Berlin kept local mean time (+00:53:28), and Monrovia kept −00:44:30 until
    /// 1972: 15-minute windows on UTC straddle their local hours. Events there are refused rather
    /// than split over two hours (which emitted an hour twice).
    #[test]
    fn windows_that_do_not_nest_are_refused_not_emitted_twice() {
        for (zone, at) in [
            ("Europe/Berlin", "1850-06-01T10:50:00Z"),
            ("Africa/Monrovia", "1971-06-01T10:40:00Z"),
        ] {
            let mut windows = PartitionWindows::new(zoned(zone, 15 * MINUTE, 0))
                .rolling_up(Rollups::new(&[HOUR]).expect("one"));
            let t = utc(at);
            let answers: Vec<Observed> = [t, t + 11 * MINUTE, t + 20 * MINUTE]
                .iter()
                .map(|ts| windows.observe("s", *ts, 1.0, 0))
                .collect();
            assert!(
                answers.contains(&Observed::NotNested),
                "{zone}: {answers:?}"
            );
            let events: Vec<i64> = (0..40).map(|k| t + k * 5 * MINUTE).collect();
            emitted_once(
                PartitionWindows::new(zoned(zone, 15 * MINUTE, 0))
                    .rolling_up(Rollups::new(&[HOUR]).expect("one")),
                &events,
            );
        }
    }

    /// Antarctica/Casey, 2010-03-04 15:00Z: +11 became +08, so the clock went from 5 March 02:00
    /// back to 4 March 23:00, after 5 March had begun; St. John's went back at 00:01 into the
    /// previous day until 2011. A window still holds its timestamps, whatever was looked up before.
    #[test]
    fn a_clock_set_back_into_the_previous_date_keeps_windows_well_formed() {
        let casey = utc("2010-03-04T13:00:00Z");
        let events = [
            casey + 30 * MINUTE,
            casey + 90 * MINUTE,
            casey + 5 * HOUR,
            casey + 105 * MINUTE,
        ];
        emitted_once(
            PartitionWindows::new(zoned("Antarctica/Casey", HOUR, 3 * HOUR)),
            &events,
        );
        let mut rolled = PartitionWindows::new(zoned("Antarctica/Casey", MINUTE, 10_000))
            .rolling_up(Rollups::new(&[HOUR]).expect("one"));
        rolled.observe("s", utc("2010-03-04T14:50:00Z"), 1.0, 0);
        // A huge value in the hour after the change: checked, not a panic.
        rolled.observe("s", utc("2010-03-04T15:30:00Z"), 1e300, 1);

        let spec = zoned("America/St_Johns", HOUR, 10 * MINUTE);
        let tz = jiff::tz::TimeZone::get("America/St_Johns").expect("zone");
        let from = jiff::Timestamp::from_millisecond(utc("2000-10-20T00:00:00Z")).expect("ts");
        let back = tz
            .following(from)
            .next()
            .expect("a transition")
            .timestamp()
            .as_millisecond();
        for t in [
            back - 30_000,
            back + MINUTE,
            back + 59 * MINUTE,
            back + 61 * MINUTE,
        ] {
            let start = spec.start_of(t).expect("in range");
            assert!(
                start <= t && t < spec.end_of(start),
                "{t} outside its window"
            );
        }
        let mut fresh = PartitionWindows::new(spec);
        fresh.advance_stream_time(back - 30_000);
        let mut warm = PartitionWindows::new(spec);
        warm.observe("s", back - 30_000, 1.0, 0);
        warm.close_due();
        assert_eq!(
            fresh.observe("s", back + MINUTE, 1.0, 1),
            warm.observe("s", back + MINUTE, 1.0, 1)
        );
    }

    /// Berlin, 2026-10-25: 02:00 summer time became 02:00 winter time, so the 1 h and the 2 h
    /// window of that hour have the same bounds. In one topic that window is one record; with a
    /// topic per size, each size's topic has it.
    #[test]
    fn sizes_with_the_same_bounds_give_one_record_in_a_shared_topic() {
        let t = utc("2026-10-25T00:30:00Z");
        let run = |shared: bool| {
            let windows = PartitionWindows::new(zoned("Europe/Berlin", HOUR, 0))
                .rolling_up(Rollups::new(&[2 * HOUR]).expect("one"))
                .sharing_one_topic(shared);
            emitted_once(windows, &[t, t + 10 * HOUR])
        };
        let bounds = |closed: &[ClosedWindow]| {
            closed
                .iter()
                .filter(|w| w.window_start == utc("2026-10-25T00:00:00Z"))
                .map(|w| (w.level, w.window_end))
                .collect::<Vec<_>>()
        };
        let end = utc("2026-10-25T01:00:00Z");
        assert_eq!(bounds(&run(true)), [(0, end)]);
        assert_eq!(bounds(&run(false)), [(0, end), (1, end)]);
    }

    /// Every zone, every transition 1970..2030, probed every 15 minutes for 3 hours either side:
    /// each timestamp lies in the window `start_of` gives, starts never go back, and lengths stay
    /// plausible (Vostok's clock once went back 7 hours: a 31-hour day).
    #[test]
    fn every_zone_gives_well_formed_monotone_windows_around_its_transitions() {
        let (lo, hi) = (utc("1970-01-01T00:00:00Z"), utc("2030-01-01T00:00:00Z"));
        let mut bad = Vec::new();
        for name in jiff::tz::db().available() {
            let name = name.as_str();
            let Ok(zone) = Zone::named(name) else {
                continue;
            };
            let tz = jiff::tz::TimeZone::get(name).expect("listed");
            let from = jiff::Timestamp::from_millisecond(lo).expect("ts");
            for transition in tz.following(from) {
                let at = transition.timestamp().as_millisecond();
                if at > hi {
                    break;
                }
                for size in [HOUR, 24 * HOUR] {
                    let mut previous = i64::MIN;
                    for k in -12..=12 {
                        let t = at + k * 15 * MINUTE;
                        let start = zone.start_of(size, t).expect("in range");
                        let end = zone.end_of(size, start).expect("in range");
                        if !(start <= t && t < end)
                            || start < previous
                            || end - start > size + 12 * HOUR
                        {
                            bad.push(format!("{name} {size} at {t}: [{start}, {end})"));
                        }
                        previous = start;
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} bad probes, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }
}

//! Tests of [`super`] (zoned windows). The expected instants were worked out from the zones' DST
//! rules (and checked with Python's `zoneinfo`, not jiff), written as UTC times.

use super::*;

/// Epoch milliseconds of a UTC time `YYYY-MM-DDTHH:MM`.
fn utc(text: &str) -> i64 {
    let dt: DateTime = text.parse().expect("a civil datetime");
    Offset::UTC
        .to_timestamp(dt)
        .expect("in range")
        .as_millisecond()
}

const HOUR: i64 = HOUR_MS;
const DAY: i64 = DAY_MS;

#[test]
fn windows_follow_the_local_clock_across_dst_changes() {
    // (zone, size, a timestamp inside, the window's start and end), all UTC.
    let cases: &[(&str, i64, &str, &str, &str)] = &[
        // Berlin, autumn 2024: 03:00 CEST becomes 02:00 CET at 01:00Z. The day lasts 25 hours.
        (
            "Europe/Berlin",
            DAY,
            "2024-10-27T12:00",
            "2024-10-26T22:00",
            "2024-10-27T23:00",
        ),
        // ... the hour 02:00-03:00 the clock shows twice is two hour windows.
        (
            "Europe/Berlin",
            HOUR,
            "2024-10-27T00:30",
            "2024-10-27T00:00",
            "2024-10-27T01:00",
        ),
        (
            "Europe/Berlin",
            HOUR,
            "2024-10-27T01:30",
            "2024-10-27T01:00",
            "2024-10-27T02:00",
        ),
        // ... and a 6-hour window holding the repeat lasts 7 hours (00:00 to 06:00 local).
        (
            "Europe/Berlin",
            6 * HOUR,
            "2024-10-27T01:30",
            "2024-10-26T22:00",
            "2024-10-27T05:00",
        ),
        // Berlin, spring 2024: 02:00 CET becomes 03:00 CEST at 01:00Z. The day lasts 23 hours.
        (
            "Europe/Berlin",
            DAY,
            "2024-03-31T12:00",
            "2024-03-30T23:00",
            "2024-03-31T22:00",
        ),
        // ... the hour from 01:00 CET ends when the clock shows 03:00 CEST: one hour later.
        (
            "Europe/Berlin",
            HOUR,
            "2024-03-31T00:59",
            "2024-03-31T00:00",
            "2024-03-31T01:00",
        ),
        // Kathmandu, UTC+05:45: hours start at a quarter past in UTC, days at 18:15Z.
        (
            "Asia/Kathmandu",
            HOUR,
            "2024-06-01T18:20",
            "2024-06-01T18:15",
            "2024-06-01T19:15",
        ),
        (
            "Asia/Kathmandu",
            DAY,
            "2024-06-02T03:00",
            "2024-06-01T18:15",
            "2024-06-02T18:15",
        ),
        // Havana, autumn 2024: 01:00 CDT becomes 00:00 CST at 05:00Z, so midnight shows twice:
        // the day starts at the first, and the repeated hour 00:00-01:00 is two hour windows.
        (
            "America/Havana",
            DAY,
            "2024-11-03T05:30",
            "2024-11-03T04:00",
            "2024-11-04T05:00",
        ),
        (
            "America/Havana",
            HOUR,
            "2024-11-03T04:30",
            "2024-11-03T04:00",
            "2024-11-03T05:00",
        ),
        (
            "America/Havana",
            HOUR,
            "2024-11-03T05:30",
            "2024-11-03T05:00",
            "2024-11-03T06:00",
        ),
        // Havana, spring 2024: midnight is skipped (00:00 CST becomes 01:00 CDT at 05:00Z): the
        // day starts at the first instant of its date, 01:00 local.
        (
            "America/Havana",
            DAY,
            "2024-03-10T12:00",
            "2024-03-10T05:00",
            "2024-03-11T04:00",
        ),
        (
            "America/Havana",
            DAY,
            "2024-03-10T04:59",
            "2024-03-09T05:00",
            "2024-03-10T05:00",
        ),
        // UTC itself: the epoch's days.
        (
            "UTC",
            DAY,
            "2024-06-01T23:59",
            "2024-06-01T00:00",
            "2024-06-02T00:00",
        ),
    ];
    for &(name, size, inside, start, end) in cases {
        let zone = Zone::named(name).expect("a zone");
        let what = format!("{name} {size} ms at {inside}");
        assert_eq!(
            zone.start_of(size, utc(inside)),
            Some(utc(start)),
            "start: {what}"
        );
        assert_eq!(zone.end_of(size, utc(start)), Some(utc(end)), "end: {what}");
        // The window's bounds are its own: its first instant is in it, its end in the next.
        assert_eq!(zone.start_of(size, utc(start)), Some(utc(start)), "{what}");
        assert_eq!(
            zone.start_of(size, utc(end) - 1),
            Some(utc(start)),
            "{what}"
        );
        assert_eq!(zone.start_of(size, utc(end)), Some(utc(end)), "{what}");
    }
}

#[test]
fn smaller_zoned_windows_nest_in_larger_ones_through_a_whole_year() {
    // Every boundary of a larger size is one of each size dividing it, so rollups merge whole
    // windows: walk a year of hour windows in zones with DST at 02:00, at midnight and none.
    for name in [
        "Europe/Berlin",
        "America/Havana",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
    ] {
        let zone = Zone::named(name).expect("a zone");
        let mut start = zone
            .start_of(HOUR, utc("2024-01-01T00:00"))
            .expect("in range");
        let (mut days, mut hours) = (0, 0);
        while start < utc("2025-01-01T00:00") {
            let end = zone.end_of(HOUR, start).expect("in range");
            assert!(end > start, "{name}: empty hour at {start}");
            assert!(
                end - start <= 2 * HOUR,
                "{name}: hour at {start} lasts {}",
                end - start
            );
            for size in [2 * HOUR, 6 * HOUR, DAY] {
                let outer = zone.start_of(size, start).expect("in range");
                assert_eq!(
                    zone.start_of(size, end - 1),
                    Some(outer),
                    "{name}: the hour at {start} straddles a {size} ms window"
                );
            }
            if zone.start_of(DAY, start) == Some(start) {
                days += 1;
            }
            hours += 1;
            start = end;
        }
        assert!((365..=367).contains(&days), "{name}: {days} days");
        assert!((8_780..=8_790).contains(&hours), "{name}: {hours} hours");
    }
}

#[test]
fn names_outside_the_database_and_times_outside_the_years_are_refused() {
    assert!(Zone::named("Not/AZone").is_err());
    let berlin = Zone::named("Europe/Berlin").expect("a zone");
    assert!(std::ptr::eq(
        berlin,
        Zone::named("Europe/Berlin").expect("a zone")
    ));
    let lower = Zone::named("europe/berlin").expect("found in any case");
    assert!(
        std::ptr::eq(berlin, lower),
        "one zone, under the database's spelling"
    );
    assert_eq!(lower.name(), "Europe/Berlin");
    assert_eq!(berlin.start_of(DAY, i64::MAX), None);
    assert_eq!(berlin.start_of(DAY, i64::MIN), None);
    assert_eq!(berlin.start_of(HOUR, LATEST_MS + 1), None);
    assert!(berlin.start_of(HOUR, LATEST_MS).is_some());
    assert!(berlin.start_of(HOUR, EARLIEST_MS).is_some());
}

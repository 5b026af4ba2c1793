//! Windows aligned to a time zone's clock (`--time-zone Area/City`) — pure, no I/O: the IANA
//! database is compiled in (jiff's `tzdb-bundle-always`), so results do not depend on the host's
//! or the container's `tzdata`.
//!
//! A zoned window of size `d` (an hour or more, dividing a day) starts at every instant the local
//! clock shows a multiple of `d` since midnight, and at the first instant of every local date.
//! A day (`d` = 24 h) starts only at the first instant of its date. So a day lasts 23 or 25 hours
//! across a DST change; the hour the clock shows twice in autumn gives two hour windows, each an
//! hour long; the hour skipped in spring gives none (the window before it ends when the clock next
//! shows a boundary). Boundaries of sizes that divide each other nest, which is what rolling a
//! smaller window up into a larger one needs. Zones whose offset was not a whole number of minutes
//! (local mean time, before about 1900) are not treated specially.

use std::sync::{Mutex, OnceLock};

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A day in milliseconds: the largest zoned window.
pub const DAY_MS: i64 = 86_400_000;
/// An hour in milliseconds: the smallest zoned window; shorter ones stay epoch-aligned.
pub const HOUR_MS: i64 = 3_600_000;

/// Zoned windows accept timestamps within years 1800..=9000: far inside jiff's range, so the day
/// around any of them can be resolved.
pub const EARLIEST_MS: i64 = -5_364_662_400_000;
pub const LATEST_MS: i64 = 221_845_392_000_000;

/// An IANA time zone, known by its name. Interned: settings and checkpoint records name the same
/// `&'static Zone`, so window specs stay `Copy` and compare by name.
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Zone {
    /// The zone called `name` in the IANA database (e.g. `Europe/Berlin`, in any case); the error
    /// says why not. At most one `Zone` per canonical name is ever made (the database's names, a
    /// bounded set).
    pub fn named(name: &str) -> Result<&'static Zone, String> {
        static ZONES: OnceLock<Mutex<Vec<&'static Zone>>> = OnceLock::new();
        let zones = ZONES.get_or_init(Mutex::default);
        let mut zones = zones
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(zone) = zones.iter().find(|z| z.name == name) {
            return Ok(zone);
        }
        let tz = TimeZone::get(name).map_err(|_| {
            format!("'{name}' is not a time zone of the IANA database (like Europe/Berlin)")
        })?;
        // The database finds names in any case: keep its own spelling, so `europe/berlin` and
        // `Europe/Berlin` are one zone (one record in settings, one `Zone`).
        let canonical = tz.iana_name().unwrap_or(name).to_owned();
        if let Some(zone) = zones.iter().find(|z| z.name == canonical) {
            return Ok(zone);
        }
        let zone: &'static Zone = Box::leak(Box::new(Zone {
            name: canonical,
            tz,
        }));
        zones.push(zone);
        Ok(zone)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The latest timestamp a zoned window accepts.
    pub fn latest_time() -> i64 {
        LATEST_MS
    }

    /// The start of the size-`size_ms` window holding `timestamp`: the last boundary at or before
    /// it. `None` outside the years zoned windows accept.
    pub fn start_of(&self, size_ms: i64, timestamp: i64) -> Option<i64> {
        if !(EARLIEST_MS..=LATEST_MS).contains(&timestamp) {
            return None;
        }
        // The date's first instant is a boundary at or before `timestamp`, so the maximum exists.
        self.boundaries_around(timestamp, size_ms)?
            .into_iter()
            .filter(|&b| b <= timestamp)
            .max()
    }

    /// The end of the window starting at `start` (a boundary): the first boundary after it.
    pub fn end_of(&self, size_ms: i64, start: i64) -> Option<i64> {
        // The next date's first instant is a boundary after `start`, so the minimum exists.
        self.boundaries_around(start, size_ms)?
            .into_iter()
            .filter(|&b| b > start)
            .min()
    }

    /// The boundaries of the local dates before, of and after the one `timestamp` shows, and the
    /// first instant of the date after that. A clock set back can show a date again after the next
    /// one began (Antarctica/Casey in 2010, St. John's at 00:01 until 2011), so the date shown alone
    /// does not hold the boundaries nearest a timestamp; a day either side always does.
    fn boundaries_around(&self, timestamp: i64, size_ms: i64) -> Option<Vec<i64>> {
        let date = self.tz.to_datetime(instant(timestamp)?).date();
        let mut boundaries = Vec::new();
        let mut day = date.yesterday().ok()?;
        for _ in 0..3 {
            boundaries.extend(self.boundaries(day, size_ms)?);
            day = day.tomorrow().ok()?;
        }
        boundaries.push(self.first_instant(day)?);
        Some(boundaries)
    }

    /// Every boundary of size-`size_ms` windows whose local date is `date` (unsorted).
    fn boundaries(&self, date: Date, size_ms: i64) -> Option<Vec<i64>> {
        let mut boundaries = vec![self.first_instant(date)?];
        if size_ms < DAY_MS {
            let midnight = date.at(0, 0, 0, 0);
            for k in 0..DAY_MS / size_ms {
                let shown = midnight
                    .checked_add(SignedDuration::from_millis(k * size_ms))
                    .ok()?;
                boundaries.extend(self.instants_showing(shown)?.into_iter().flatten());
            }
        }
        Some(boundaries)
    }

    /// The first instant whose local date is `date`: its midnight, or when midnight is skipped
    /// (a DST change at 00:00), the end of the skip.
    fn first_instant(&self, date: Date) -> Option<i64> {
        let midnight = date.at(0, 0, 0, 0);
        match self.tz.to_ambiguous_timestamp(midnight).offset() {
            AmbiguousOffset::Unambiguous { offset } => at_offset(midnight, offset),
            AmbiguousOffset::Fold { before, .. } => at_offset(midnight, before),
            AmbiguousOffset::Gap { after, .. } => {
                // The skip starts before midnight - after (in UTC) and ends at the next transition.
                let before_skip = instant(at_offset(midnight, after)?)?;
                let transition = self.tz.following(before_skip).next()?;
                Some(transition.timestamp().as_millisecond())
            }
        }
    }

    /// The instants at which the local clock shows `shown`: none (skipped), one, or two (repeated).
    fn instants_showing(&self, shown: DateTime) -> Option<[Option<i64>; 2]> {
        Some(match self.tz.to_ambiguous_timestamp(shown).offset() {
            AmbiguousOffset::Unambiguous { offset } => [Some(at_offset(shown, offset)?), None],
            AmbiguousOffset::Gap { .. } => [None, None],
            AmbiguousOffset::Fold { before, after } => [
                Some(at_offset(shown, before)?),
                Some(at_offset(shown, after)?),
            ],
        })
    }
}

fn instant(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

/// The instant at which a clock at `offset` shows `shown`, in epoch milliseconds.
fn at_offset(shown: DateTime, offset: Offset) -> Option<i64> {
    Some(offset.to_timestamp(shown).ok()?.as_millisecond())
}

#[cfg(test)]
mod tests;

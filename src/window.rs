//! Event-time tumbling windows of one input partition — pure logic, no I/O.
//!
//! Windows are `[start, end)`: `start + size`, aligned to the epoch, or with `--time-zone` and a size
//! of an hour or more, to the zone's clock ([`zone`]). A partition's *stream time* is the largest
//! event timestamp it has seen. A window closes when its partition's stream time reaches
//! `end + grace`; an event whose window has already closed is late and is not aggregated.
//! Closed windows come out in order of `window_start`, then `source`, each exactly once, and are then
//! dropped. Because stream time only moves forward and closing is monotone in `start`, "every window
//! with `start < open_from()` is closed" holds at all times: the store uses it to delete closed windows
//! with one range delete.
//!
//! Several sizes (`--window 1m,5m,1h`, each dividing the next) share one stream time
//! ([`PartitionWindows`]): an event goes into its smallest window, and a closed window is merged
//! into the next size's window holding it ([`Aggregate::merge`]: counts and sums add, sketches merge
//! exactly), so the larger sizes cost a merge per closed window, not work per event. A larger
//! window closes with its last smaller one (`end + grace` is the same instant). An event late for
//! its smallest window but not for a larger one goes into the smallest such window directly: every
//! window of every size holds exactly the events that arrived before it closed.
//!
//! With percentiles on ([`PartitionWindows::keeping_percentiles`]) each window also keeps a
//! [`sketch::Sketch`] of its values.

use smol_str::SmolStr;

mod partition;
pub mod sketch;
pub mod zone;

pub use partition::{PartitionWindows, Rollups, StoredWindow, MAX_ROLLUPS};
use sketch::{Sketch, SketchSpec};
use zone::Zone;

/// Window size and grace period, in milliseconds (both validated positive / non-negative by config),
/// and with `--time-zone` the zone windows of an hour or more align to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub grace_ms: i64,
    /// Windows of an hour or more follow this zone's clock ([`zone`]); shorter ones ignore it.
    pub zone: Option<&'static Zone>,
}

impl WindowSpec {
    /// Epoch-aligned windows of `size_ms` with `grace_ms`.
    pub const fn epoch(size_ms: i64, grace_ms: i64) -> Self {
        WindowSpec {
            size_ms,
            grace_ms,
            zone: None,
        }
    }

    /// The zone these windows follow: only windows of an hour or more do.
    fn zoned(&self) -> Option<&'static Zone> {
        self.zone.filter(|_| self.size_ms >= zone::HOUR_MS)
    }

    /// The start of the window holding `timestamp`, or `None` if the arithmetic of that window would
    /// leave `i64`: its close time (`start + size + grace`), or the earliest start [`Self::open_from`]
    /// looks at for a stream time inside it (`start - 2 * size - grace`). Such a timestamp lies
    /// within a few windows of the ends of time and is treated as bad input (zoned windows: outside
    /// the years 1800..=9000).
    pub fn start_of(&self, timestamp: i64) -> Option<i64> {
        if let Some(zone) = self.zoned() {
            return zone.start_of(self.size_ms, timestamp);
        }
        let start = timestamp
            .div_euclid(self.size_ms)
            .checked_mul(self.size_ms)?;
        start
            .checked_add(self.size_ms)?
            .checked_add(self.grace_ms)?;
        start
            .checked_sub(self.size_ms)?
            .checked_sub(self.size_ms)?
            .checked_sub(self.grace_ms)?;
        Some(start)
    }

    /// The end (exclusive) of the window starting at `start`.
    pub fn end_of(&self, start: i64) -> i64 {
        match self.zoned() {
            Some(zone) => zone
                .end_of(self.size_ms, start)
                .unwrap_or_else(|| start.saturating_add(self.size_ms)),
            None => start.saturating_add(self.size_ms),
        }
    }

    /// The latest time [`Self::start_of`] still places in a window: stream time never needs to go
    /// beyond it (idle closing stops there), and a commit whose stream time does is not ours.
    pub fn latest_time(&self) -> i64 {
        if self.zoned().is_some() {
            return Zone::latest_time();
        }
        let latest_start =
            (i64::MAX - self.size_ms - self.grace_ms).div_euclid(self.size_ms) * self.size_ms;
        latest_start + self.size_ms - 1
    }

    /// The stream time at which the window starting at `start` closes.
    pub fn closes_at(&self, start: i64) -> i64 {
        self.end_of(start).saturating_add(self.grace_ms)
    }

    /// The first window start still open at `stream_time`: every window starting before it is closed.
    pub fn open_from(&self, stream_time: i64) -> i64 {
        if let Some(zone) = self.zoned() {
            // closes_at(s) > t  ⇔  end(s) > t - grace  ⇔  s ≥ the start of the window holding t - grace.
            let held = stream_time.saturating_sub(self.grace_ms);
            return match zone.start_of(self.size_ms, held) {
                Some(start) => start,
                None if held < 0 => i64::MIN,
                None => i64::MAX,
            };
        }
        // closes_at(s) > t  ⇔  s > t - size - grace  ⇔  s ≥ t - size - grace + 1; rounded up to a start.
        let bound = stream_time
            .saturating_sub(self.size_ms)
            .saturating_sub(self.grace_ms)
            .saturating_add(1);
        let start = bound.div_euclid(self.size_ms).saturating_mul(self.size_ms);
        if start < bound {
            start.saturating_add(self.size_ms)
        } else {
            start
        }
    }
}

/// The running aggregate of one source in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The smallest input offset that contributed: replaying the partition from the smallest of these
    /// over all open windows rebuilds them.
    pub first_offset: i64,
    /// The window's values, with percentiles on; `None` (8 bytes, no allocation) with them off.
    pub sketch: Option<Box<Sketch>>,
}

impl Aggregate {
    pub fn of(value: f64, offset: i64) -> Self {
        Aggregate {
            count: 1,
            sum: value,
            min: value,
            max: value,
            first_offset: offset,
            sketch: None,
        }
    }

    /// Adds `value` to the sketch, creating it if needed.
    fn sketch_value(&mut self, spec: &SketchSpec, value: f64) {
        self.sketch
            .get_or_insert_with(Box::default)
            .add(spec, value);
    }

    /// Adds the values of `other`, an aggregate of the same source made with the same `percentiles`
    /// (a rollup of windows): counts and sums add, sketches merge exactly.
    pub fn merge(&mut self, other: &Aggregate, percentiles: Option<&SketchSpec>) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.first_offset = self.first_offset.min(other.first_offset);
        if let (Some(spec), Some(theirs)) = (percentiles, &other.sketch) {
            self.sketch
                .get_or_insert_with(Box::default)
                .merge(spec, theirs);
        }
    }

    pub fn add(&mut self, value: f64, offset: i64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.first_offset = self.first_offset.min(offset);
    }
}

/// A window that has closed, ready to be emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    pub source: SmolStr,
    pub window_start: i64,
    /// Exclusive; `window_start` + the size, or for zoned windows where the local clock next shows
    /// a boundary.
    pub window_end: i64,
    /// Which window size it is of: 0 the smallest (`--window`'s first), then the rollups.
    pub level: usize,
    pub aggregate: Aggregate,
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Added to its open window.
    Aggregated,
    /// Its window had already closed on this partition. With rollups, `rolled_up`: a larger
    /// window holding it was still open and took it (it is missing only from the smaller ones).
    Late { window_start: i64, rolled_up: bool },
    /// Its timestamp is within a few windows of the ends of `i64` time (zoned windows: outside the
    /// years 1800..=9000).
    OutOfRange,
    /// With several sizes: its windows do not nest at that time (a zone's offset then was not a
    /// multiple of the smaller sizes).
    NotNested,
    /// Adding its value would make its window's sum infinite: the output must stay finite numbers.
    ValueOutOfRange,
}

#[cfg(test)]
mod tests;

//! Event-time tumbling windows of one input partition — pure logic, no I/O.
//!
//! Windows are `[start, start + size)`, aligned to the epoch. A partition's *stream time* is the
//! largest event timestamp it has seen. A window closes when its partition's stream time reaches
//! `start + size + grace`; an event whose window has already closed is late and is not aggregated.
//! Closed windows come out in order of `window_start`, then `source`, each exactly once, and are then
//! dropped. Because stream time only moves forward and closing is monotone in `start`, "every window
//! with `start < open_from()` is closed" holds at all times: the store uses it to delete closed windows
//! with one range delete.
//!
//! With percentiles on ([`PartitionWindows::keeping_percentiles`]) each window also keeps a
//! [`sketch::Sketch`] of its values. An [`Aggregate`] merges with another of the same source
//! (counts and sums add, sketches merge exactly): what a rollup of closed windows needs.

use std::collections::BTreeMap;
use std::hash::RandomState;

use hashbrown::HashMap;
use smol_str::SmolStr;

pub mod sketch;

use sketch::{Sketch, SketchSpec};

/// Window size and grace period, in milliseconds. Both validated positive / non-negative by config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub grace_ms: i64,
}

impl WindowSpec {
    /// The start of the window holding `timestamp`, or `None` if the arithmetic of that window would
    /// leave `i64`: its close time (`start + size + grace`), or the earliest start [`Self::open_from`]
    /// looks at for a stream time inside it (`start - 2 * size - grace`). Such a timestamp lies
    /// within a few windows of the ends of time and is treated as bad input.
    pub fn start_of(&self, timestamp: i64) -> Option<i64> {
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

    /// The latest time [`Self::start_of`] still places in a window: stream time never needs to go
    /// beyond it (idle closing stops there), and a commit whose stream time does is not ours.
    pub fn latest_time(&self) -> i64 {
        let latest_start =
            (i64::MAX - self.size_ms - self.grace_ms).div_euclid(self.size_ms) * self.size_ms;
        latest_start + self.size_ms - 1
    }

    /// The stream time at which the window starting at `start` closes.
    pub fn closes_at(&self, start: i64) -> i64 {
        start
            .saturating_add(self.size_ms)
            .saturating_add(self.grace_ms)
    }

    /// The first window start still open at `stream_time`: every window starting before it is closed.
    pub fn open_from(&self, stream_time: i64) -> i64 {
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
    pub aggregate: Aggregate,
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Added to its open window.
    Aggregated,
    /// Its window had already closed on this partition.
    Late { window_start: i64 },
    /// Its timestamp is within a few windows of the ends of `i64` time.
    OutOfRange,
    /// Adding its value would make its window's sum infinite: the output must stay finite numbers.
    ValueOutOfRange,
}

/// One window start's open windows: source → aggregate and whether it changed since the last
/// checkpoint.
type SourceMap = HashMap<SmolStr, (Aggregate, bool), RandomState>;

/// The open windows of one input partition, and its stream time.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionWindows {
    spec: WindowSpec,
    /// With percentiles on: how each window's values are sketched.
    percentiles: Option<SketchSpec>,
    stream_time: Option<i64>,
    /// window start → source → aggregate, plus a dirty flag since the last checkpoint.
    ///
    /// Memory per open (window, source) is what bounds the number of sources an instance holds, so
    /// sources are [`SmolStr`]s: names up to 23 bytes live inside the 24-byte key with no heap
    /// allocation, and longer ones are shared (reference-counted) between this map, the dirty list
    /// and the checkpoint, never copied. hashbrown's map is std's (same table, same SipHash with
    /// a random key: source names come from outside and a flood of crafted names must not degrade
    /// it) plus `get_key_value_mut`, which lets the dirty list share the stored key.
    open: BTreeMap<i64, SourceMap>,
    /// Keys whose dirty flag went from false to true since the last `take_dirty`.
    dirty: Vec<(i64, SmolStr)>,
}

impl PartitionWindows {
    pub fn new(spec: WindowSpec) -> Self {
        PartitionWindows {
            spec,
            percentiles: None,
            stream_time: None,
            open: BTreeMap::new(),
            dirty: Vec::new(),
        }
    }

    /// These windows with percentiles kept (`Some`) or not. Windows restored before keep the
    /// sketches they were stored with.
    pub fn keeping_percentiles(mut self, percentiles: Option<SketchSpec>) -> Self {
        self.percentiles = percentiles;
        self
    }

    /// Rebuilds a partition from checkpointed windows (not dirty: they are already stored).
    pub fn restore(
        spec: WindowSpec,
        stream_time: Option<i64>,
        windows: impl IntoIterator<Item = (i64, String, Aggregate)>,
    ) -> Self {
        let mut restored = PartitionWindows::new(spec);
        restored.stream_time = stream_time;
        for (start, source, aggregate) in windows {
            restored
                .open
                .entry(start)
                .or_default()
                .insert(source.into(), (aggregate, false));
        }
        restored
    }

    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// The first window start still open (see [`WindowSpec::open_from`]); `i64::MIN` before any event.
    pub fn open_from(&self) -> i64 {
        self.stream_time
            .map_or(i64::MIN, |t| self.spec.open_from(t))
    }

    /// The open windows of `source`, by window start: a lookup per open window start (a few).
    pub fn windows_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = (i64, &'a Aggregate)> {
        self.open
            .iter()
            .filter_map(move |(start, sources)| Some((*start, &sources.get(source)?.0)))
    }

    /// Number of open (source, window) pairs.
    pub fn open_count(&self) -> usize {
        self.open.values().map(SourceMap::len).sum()
    }

    /// The smallest input offset contributing to an open window, if any window is open.
    pub fn rebuild_offset(&self) -> Option<i64> {
        self.open
            .values()
            .flat_map(|sources| sources.values().map(|(a, _)| a.first_offset))
            .min()
    }

    /// Adds one event at input `offset`, advancing stream time. A late or refused event changes
    /// nothing (a late one's timestamp is below stream time already).
    pub fn observe(&mut self, source: &str, timestamp: i64, value: f64, offset: i64) -> Observed {
        let Some(start) = self.spec.start_of(timestamp) else {
            return Observed::OutOfRange;
        };
        let stream_time = self.stream_time.map_or(timestamp, |t| t.max(timestamp));
        if self.spec.closes_at(start) <= stream_time {
            return Observed::Late {
                window_start: start,
            };
        }
        let sources = self.open.entry(start).or_default();
        match sources.get_key_value_mut(source) {
            Some((key, (aggregate, dirty))) => {
                if !(aggregate.sum + value).is_finite() {
                    return Observed::ValueOutOfRange;
                }
                aggregate.add(value, offset);
                if let Some(spec) = &self.percentiles {
                    aggregate.sketch_value(spec, value);
                }
                if !*dirty {
                    *dirty = true;
                    self.dirty.push((start, key.clone()));
                }
            }
            None => {
                let source = SmolStr::new(source);
                self.dirty.push((start, source.clone()));
                let mut aggregate = Aggregate::of(value, offset);
                if let Some(spec) = &self.percentiles {
                    aggregate.sketch_value(spec, value);
                }
                sources.insert(source, (aggregate, true));
            }
        }
        self.stream_time = Some(stream_time);
        Observed::Aggregated
    }

    /// Moves stream time forward to `stream_time` without an event (idle-partition closing); never back.
    pub fn advance_stream_time(&mut self, stream_time: i64) {
        self.stream_time = Some(self.stream_time.map_or(stream_time, |t| t.max(stream_time)));
    }

    /// Removes and returns every window that stream time has closed, by `window_start` then `source`.
    pub fn close_due(&mut self) -> Vec<ClosedWindow> {
        let open_from = self.open_from();
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() >= open_from {
                break;
            }
            let window_start = *entry.key();
            let mut sources: Vec<(SmolStr, (Aggregate, bool))> =
                entry.remove().into_iter().collect();
            sources.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            closed.extend(
                sources
                    .into_iter()
                    .map(|(source, (aggregate, _))| ClosedWindow {
                        source,
                        window_start,
                        aggregate,
                    }),
            );
        }
        closed
    }

    /// The open windows changed since the last call, with their aggregates; clears their dirty flags.
    pub fn take_dirty(&mut self) -> Vec<(i64, SmolStr, Aggregate)> {
        let mut changed = Vec::with_capacity(self.dirty.len());
        for (start, source) in std::mem::take(&mut self.dirty) {
            if let Some((aggregate, dirty)) =
                self.open.get_mut(&start).and_then(|s| s.get_mut(&source))
            {
                *dirty = false;
                changed.push((start, source, aggregate.clone()));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests;

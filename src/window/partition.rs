//! The open windows of one input partition, of every window size, and its stream time — pure.
//!
//! Level 0 is the smallest size (`--window`'s first); each further level ([`Rollups`]) is a multiple
//! of the one before. Events go into level 0; a window of level `i` that closes is merged into the
//! level-`i + 1` window holding its start, which is still open (it closes at the same stream time
//! or later: its end is at or after the smaller window's end, and the grace is shared). See the
//! parent module for the semantics.

use std::collections::BTreeMap;
use std::hash::RandomState;

use hashbrown::HashMap;
use smol_str::SmolStr;

use super::sketch::SketchSpec;
use super::{Aggregate, ClosedWindow, Observed, WindowSpec};

/// At most this many sizes after the smallest.
pub const MAX_ROLLUPS: usize = 4;

/// The window sizes after the smallest, in milliseconds, ascending (validated by config: each a
/// multiple of the one before). `Copy`, so settings and checkpoint records carry it by value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollups {
    sizes: [i64; MAX_ROLLUPS],
    len: u8,
}

impl Rollups {
    /// One window size only.
    pub const NONE: Rollups = Rollups {
        sizes: [0; MAX_ROLLUPS],
        len: 0,
    };

    /// `None` if there are more than [`MAX_ROLLUPS`].
    pub fn new(sizes: &[i64]) -> Option<Rollups> {
        let mut rollups = Rollups::default();
        rollups.sizes.get_mut(..sizes.len())?.copy_from_slice(sizes);
        rollups.len = sizes.len() as u8;
        Some(rollups)
    }

    pub fn sizes(&self) -> &[i64] {
        &self.sizes[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A window as the store keeps it: its size, start and source, and its aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    pub size_ms: i64,
    pub start: i64,
    pub source: String,
    pub aggregate: Aggregate,
}

/// One window start's open windows: source → aggregate and whether it changed since the last
/// checkpoint.
type SourceMap = HashMap<SmolStr, (Aggregate, bool), RandomState>;

/// The open windows of one size.
#[derive(Debug, Clone, PartialEq)]
struct Level {
    spec: WindowSpec,
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
    /// The last window looked up, `(start, end)`, and the last close time asked, `(start, closes
    /// at)`: zoned windows resolve through the time zone database, so consecutive events of one
    /// window, and the per-record check of the first open window, skip it.
    last: Option<(i64, i64)>,
    closing: Option<(i64, i64)>,
    /// Every window starting before this has been closed (and emitted).
    closed_before: i64,
    /// How many sources the last closed window start held: a new window start's map is made that
    /// large, so it does not grow (and rehash) source by source when sources recur every window.
    typical: usize,
}

impl Level {
    fn new(spec: WindowSpec) -> Self {
        Level {
            spec,
            open: BTreeMap::new(),
            dirty: Vec::new(),
            last: None,
            closing: None,
            closed_before: i64::MIN,
            typical: 0,
        }
    }

    /// The start of the window holding `timestamp` (see [`WindowSpec::start_of`]).
    fn start_of(&mut self, timestamp: i64) -> Option<i64> {
        if self.spec.zone.is_none() {
            return self.spec.start_of(timestamp);
        }
        if let Some((start, _)) = self.last.filter(|&(s, e)| s <= timestamp && timestamp < e) {
            return Some(start);
        }
        let start = self.spec.start_of(timestamp)?;
        self.last = Some((start, self.spec.end_of(start)));
        Some(start)
    }

    /// The window holding `timestamp`, `(start, end)`.
    fn bounds(&mut self, timestamp: i64) -> Option<(i64, i64)> {
        let start = self.start_of(timestamp)?;
        match self.last {
            Some((s, end)) if s == start => Some((start, end)),
            _ => Some((start, self.spec.end_of(start))),
        }
    }

    /// The stream time at which the window starting at `start` closes.
    fn closes_at(&mut self, start: i64) -> i64 {
        if self.spec.zone.is_none() {
            return self.spec.closes_at(start);
        }
        match self.closing {
            Some((s, closes)) if s == start => closes,
            _ => {
                let closes = self.spec.closes_at(start);
                self.closing = Some((start, closes));
                closes
            }
        }
    }

    /// Merges `aggregate` into `source`'s window at `start` (a copy of it if there is none), marking
    /// it dirty.
    fn merge(
        &mut self,
        start: i64,
        source: &SmolStr,
        aggregate: &Aggregate,
        percentiles: Option<&SketchSpec>,
    ) {
        let sources = sources_at(&mut self.open, self.typical, start);
        match sources.get_mut(source) {
            Some((merged, dirty)) => {
                merged.merge(aggregate, percentiles);
                if !*dirty {
                    *dirty = true;
                    self.dirty.push((start, source.clone()));
                }
            }
            None => {
                self.dirty.push((start, source.clone()));
                sources.insert(source.clone(), (aggregate.clone(), true));
            }
        }
    }

    /// Adds one value to `source`'s window at `start`; `false` (and nothing changed) if its sum
    /// would become infinite. One hash lookup when the window exists: the per-event path.
    fn add(
        &mut self,
        start: i64,
        source: &str,
        value: f64,
        offset: i64,
        percentiles: Option<&SketchSpec>,
    ) -> bool {
        let sources = sources_at(&mut self.open, self.typical, start);
        match sources.get_key_value_mut(source) {
            Some((key, (aggregate, dirty))) => {
                if !(aggregate.sum + value).is_finite() {
                    return false;
                }
                aggregate.add(value, offset);
                if let Some(spec) = percentiles {
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
                if let Some(spec) = percentiles {
                    aggregate.sketch_value(spec, value);
                }
                sources.insert(source, (aggregate, true));
            }
        }
        true
    }

    /// Removes and returns the windows starting before `open_from`, by start then source.
    fn close_before(&mut self, open_from: i64, level: usize) -> Vec<ClosedWindow> {
        self.closed_before = self.closed_before.max(open_from);
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() >= open_from {
                break;
            }
            let window_start = *entry.key();
            let window_end = self.spec.end_of(window_start);
            let mut sources: Vec<(SmolStr, (Aggregate, bool))> =
                entry.remove().into_iter().collect();
            self.typical = sources.len();
            sources.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            closed.extend(
                sources
                    .into_iter()
                    .map(|(source, (aggregate, _))| ClosedWindow {
                        source,
                        window_start,
                        window_end,
                        level,
                        aggregate,
                    }),
            );
        }
        closed
    }
}

/// The open windows of one input partition, and its stream time.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionWindows {
    /// Smallest size first; never empty.
    levels: Vec<Level>,
    /// With percentiles on: how each window's values are sketched.
    percentiles: Option<SketchSpec>,
    stream_time: Option<i64>,
    /// Whether a larger window with the same bounds as the smaller size's (zoned sizes on a night
    /// the clock goes back: `1h` and `2h` both `[02:00 summer time, 02:00 winter time)`) is left
    /// out of what `close_due` returns: the sizes share a topic, where it would be a second,
    /// identical record of the same window.
    one_record_per_bounds: bool,
}

/// With rollups, a value this large could make a larger window's sum infinite when closed windows
/// merge: such values are checked against every window of the source that will merge (2^53 values
/// below it cannot overflow).
const SAFE_ROLLUP_VALUE: f64 = 1.0e292;

impl PartitionWindows {
    pub fn new(spec: WindowSpec) -> Self {
        PartitionWindows {
            levels: vec![Level::new(spec)],
            percentiles: None,
            stream_time: None,
            one_record_per_bounds: false,
        }
    }

    /// These windows with the larger sizes of `rollups` (same grace and zone as the smallest).
    pub fn rolling_up(mut self, rollups: Rollups) -> Self {
        let base = self.levels[0].spec;
        self.levels.truncate(1);
        for &size_ms in rollups.sizes() {
            self.levels.push(Level::new(WindowSpec { size_ms, ..base }));
        }
        self
    }

    /// These windows, returning one record per window bounds when every size goes to one topic
    /// (see the field).
    pub fn sharing_one_topic(mut self, shared: bool) -> Self {
        self.one_record_per_bounds = shared;
        self
    }

    /// These windows with percentiles kept (`Some`) or not. Windows restored before keep the
    /// sketches they were stored with.
    pub fn keeping_percentiles(mut self, percentiles: Option<SketchSpec>) -> Self {
        self.percentiles = percentiles;
        self
    }

    /// These windows (made with every size and setting) holding checkpointed windows (not dirty: they
    /// are already stored) at `stream_time`. Windows of a size these do not have are not restored:
    /// their number is returned (a store of other settings is refused before it gets here).
    pub fn restored(
        mut self,
        stream_time: Option<i64>,
        windows: impl IntoIterator<Item = StoredWindow>,
    ) -> (Self, usize) {
        self.stream_time = stream_time;
        if let Some(t) = stream_time {
            for level in &mut self.levels {
                level.closed_before = level.spec.open_from(t);
            }
        }
        let mut unknown = 0;
        for window in windows {
            let Some(level) = self
                .levels
                .iter_mut()
                .find(|l| l.spec.size_ms == window.size_ms)
            else {
                unknown += 1;
                continue;
            };
            level
                .open
                .entry(window.start)
                .or_default()
                .insert(window.source.into(), (window.aggregate, false));
        }
        (self, unknown)
    }

    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    /// The window sizes, smallest first.
    pub fn specs(&self) -> impl Iterator<Item = &WindowSpec> {
        self.levels.iter().map(|l| &l.spec)
    }

    /// Per size, smallest first: the first window start still open (see [`WindowSpec::open_from`]);
    /// `i64::MIN` before any event.
    pub fn open_from(&self) -> Vec<i64> {
        self.levels
            .iter()
            .map(|l| self.stream_time.map_or(i64::MIN, |t| l.spec.open_from(t)))
            .collect()
    }

    /// The open windows of `source` as `(size index, start, end, aggregate)`, by size then start. A larger
    /// window's aggregate includes the smaller windows inside it that are still open (they are
    /// merged into it only when they close), so it says what the window holds so far.
    pub fn windows_of(&self, source: &str) -> Vec<(usize, i64, i64, Aggregate)> {
        let mut windows = Vec::new();
        for (index, level) in self.levels.iter().enumerate() {
            let (smaller, _) = self.levels.split_at(index);
            let mut starts: std::collections::BTreeSet<i64> = level
                .open
                .iter()
                .filter(|(_, sources)| sources.contains_key(source))
                .map(|(start, _)| *start)
                .collect();
            for inner in smaller {
                starts.extend(
                    inner
                        .open
                        .iter()
                        .filter(|(_, sources)| sources.contains_key(source))
                        .filter_map(|(start, _)| level.spec.start_of(*start)),
                );
            }
            for start in starts {
                let end = level.spec.end_of(start);
                let own = level.open.get(&start).and_then(|s| s.get(source));
                let mut aggregate: Option<Aggregate> = own.map(|(a, _)| a.clone());
                for inner in smaller {
                    for sources in inner.open.range(start..end.max(start)).map(|(_, s)| s) {
                        if let Some((a, _)) = sources.get(source) {
                            match &mut aggregate {
                                Some(merged) => merged.merge(a, self.percentiles.as_ref()),
                                None => aggregate = Some(a.clone()),
                            }
                        }
                    }
                }
                windows.extend(aggregate.map(|a| (index, start, end, a)));
            }
        }
        windows
    }

    /// Number of open (source, window) pairs, of every size.
    pub fn open_count(&self) -> usize {
        self.levels
            .iter()
            .flat_map(|l| l.open.values())
            .map(SourceMap::len)
            .sum()
    }

    /// The smallest input offset contributing to an open window of any size, if any is open.
    pub fn rebuild_offset(&self) -> Option<i64> {
        self.levels
            .iter()
            .flat_map(|l| l.open.values())
            .flat_map(|sources| sources.values().map(|(a, _)| a.first_offset))
            .min()
    }

    /// Adds one event at input `offset`, advancing stream time. A late or refused event changes
    /// nothing in the windows it missed (a late one's timestamp is below stream time already).
    pub fn observe(&mut self, source: &str, timestamp: i64, value: f64, offset: i64) -> Observed {
        let Some(base_start) = self.levels[0].start_of(timestamp) else {
            return Observed::OutOfRange;
        };
        let stream_time = self.stream_time.map_or(timestamp, |t| t.max(timestamp));
        if self.levels.len() > 1 {
            match self.nesting(timestamp) {
                Some(true) => {}
                Some(false) => return Observed::NotNested,
                None => return Observed::OutOfRange,
            }
            if value.abs() > SAFE_ROLLUP_VALUE
                && !self.rollup_sum_stays_finite(source, timestamp, value)
            {
                return Observed::ValueOutOfRange;
            }
        }
        let percentiles = self.percentiles.as_ref();
        for (index, level) in self.levels.iter_mut().enumerate() {
            let start = if index == 0 {
                base_start
            } else {
                match level.start_of(timestamp) {
                    Some(start) => start,
                    None => break,
                }
            };
            if level.closes_at(start) <= stream_time {
                continue; // closed at this size: perhaps a larger one is still open
            }
            if !level.add(start, source, value, offset, percentiles) {
                return Observed::ValueOutOfRange;
            }
            if index > 0 {
                return Observed::Late {
                    window_start: base_start,
                    rolled_up: true,
                };
            }
            self.stream_time = Some(stream_time);
            return Observed::Aggregated;
        }
        Observed::Late {
            window_start: base_start,
            rolled_up: false,
        }
    }

    /// Whether the windows holding `timestamp` nest, each size's inside the next size's; `None` if a
    /// size places it in no window (its arithmetic, or the years a zone covers). They nest unless a
    /// zone's offset at that time is not a multiple of the smaller sizes (local mean time before
    /// about 1900, Monrovia's −00:44:30 until 1972): merging such windows would split a smaller
    /// window over two larger ones.
    fn nesting(&mut self, timestamp: i64) -> Option<bool> {
        let mut inner: Option<(i64, i64)> = None;
        for level in &mut self.levels {
            let bounds = level.bounds(timestamp)?;
            if inner.is_some_and(|(start, end)| start < bounds.0 || end > bounds.1) {
                return Some(false);
            }
            inner = Some(bounds);
        }
        Some(true)
    }

    /// Whether adding `value` for `source` keeps every sum its windows will merge into finite:
    /// the absolute sums of every open window of `source` that holds `timestamp` plus the value.
    fn rollup_sum_stays_finite(&mut self, source: &str, timestamp: i64, value: f64) -> bool {
        let largest = self.levels.len() - 1;
        let Some(outer) = self.levels[largest].start_of(timestamp) else {
            return false;
        };
        let outer_end = self.levels[largest].spec.end_of(outer);
        if outer_end <= outer {
            return false;
        }
        let mut total = value.abs();
        for level in &self.levels {
            for (_, sources) in level.open.range(outer..outer_end) {
                if let Some((aggregate, _)) = sources.get(source) {
                    total += aggregate.sum.abs();
                }
            }
        }
        total.is_finite()
    }

    /// Moves stream time forward to `stream_time` without an event (idle-partition closing); never back.
    pub fn advance_stream_time(&mut self, stream_time: i64) {
        self.stream_time = Some(self.stream_time.map_or(stream_time, |t| t.max(stream_time)));
    }

    /// Removes and returns every window that stream time has closed: by size, smallest first, then
    /// `window_start`, then `source`. Each closed window is merged into the next size's window.
    pub fn close_due(&mut self) -> Vec<ClosedWindow> {
        let Some(stream_time) = self.stream_time else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        for index in 0..self.levels.len() {
            let (smaller, larger) = self.levels.split_at_mut(index + 1);
            let level = &mut smaller[index];
            let Some(&first) = level.open.keys().next() else {
                continue;
            };
            if level.closes_at(first) > stream_time {
                continue; // the common case, once per record
            }
            let mut level_closed = level.close_before(level.spec.open_from(stream_time), index);
            if let Some(next) = larger.first_mut() {
                for window in &level_closed {
                    merge_into(next, window, self.percentiles.as_ref());
                }
            }
            if index > 0 && self.one_record_per_bounds {
                let smaller = &smaller[index - 1].spec;
                level_closed.retain(|w| {
                    smaller.start_of(w.window_start) != Some(w.window_start)
                        || smaller.end_of(w.window_start) != w.window_end
                });
            }
            closed.extend(level_closed);
        }
        closed
    }

    /// The open windows changed since the last call, with their aggregates, per size (smallest
    /// first); clears their dirty flags.
    pub fn take_dirty(&mut self) -> Vec<Vec<(i64, SmolStr, Aggregate)>> {
        self.levels
            .iter_mut()
            .map(|level| {
                let mut changed = Vec::with_capacity(level.dirty.len());
                for (start, source) in std::mem::take(&mut level.dirty) {
                    if let Some((aggregate, dirty)) =
                        level.open.get_mut(&start).and_then(|s| s.get_mut(&source))
                    {
                        *dirty = false;
                        changed.push((start, source, aggregate.clone()));
                    }
                }
                changed
            })
            .collect()
    }
}

/// The sources of the window starting at `start` in `open`, a new map of capacity `typical` (the
/// last closed window start's sources) if there is none yet.
fn sources_at(open: &mut BTreeMap<i64, SourceMap>, typical: usize, start: i64) -> &mut SourceMap {
    open.entry(start)
        .or_insert_with(|| SourceMap::with_capacity_and_hasher(typical, RandomState::new()))
}

/// Merges a closed smaller window into the window of `next` holding its start. That window is not
/// yet closed: every event's windows were checked to nest (`nesting`), so it ends no earlier than
/// the smaller one (and closes in this same pass at the earliest). Were it closed already, merging
/// would make it anew and emit it twice: it is left alone.
fn merge_into(next: &mut Level, window: &ClosedWindow, percentiles: Option<&SketchSpec>) {
    if let Some(start) = next.start_of(window.window_start) {
        if start >= next.closed_before {
            next.merge(start, &window.source, &window.aggregate, percentiles);
        }
    }
}

#[cfg(test)]
mod tests;

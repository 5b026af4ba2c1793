//! Checkpoint decisions — pure, no I/O: what a partition's Kafka commit carries besides its offset,
//! which settings a checkpoint was made under, and where to resume a newly assigned partition from.
//!
//! The local RocksDB checkpoint is the truth for partitions this instance processed last. The group
//! commit is what lets *another* instance (or this one with a lost state dir) take a partition over:
//! its metadata carries the partition's stream time and the *rebuild offset* — the smallest input
//! offset still contributing to an open window. A new owner seeks there and replays up to the
//! committed offset with stream time pinned at the committed value: exactly the events of windows
//! still open are re-aggregated, and nothing is re-emitted or re-forwarded. Rebuild cost is bounded by
//! the open-window span (window + grace + out-of-orderness), not by topic history.
//!
//! A partition's position is its next offset *and* its stream time: idle closing advances stream
//! time (and emits windows) without consuming a record, so two checkpoints at the same offset can
//! differ. Local state is trusted only when its position is not behind the group's.
//!
//! Both checkpoints also record the [`Semantics`] they were made under: state built with one window
//! size, grace, filter, event-time mode or input format is never continued with another.
//!
//! And both record the partition's [`Generation`]: the line of processing they belong to. A group
//! offset reset (`streamagg reset`, which commits a *reset marker* with a new generation, or Kafka's
//! own `kafka-consumer-groups --reset-offsets`, which commits without streamagg metadata) starts a
//! new one, and so does every start that continues neither local state nor a streamagg commit.
//! Local state of another generation than the group commit's is obsolete, wherever it lies: it is
//! never continued, so an operator's reset reaches every instance's state dir.

use crate::codec::Format;
use crate::route::EventTime;
use crate::window::sketch::SketchSpec;
use crate::window::zone::Zone;
use crate::window::{Rollups, WindowSpec};

const PREFIX_V1: &str = "streamagg/1";
const PREFIX_V2: &str = "streamagg/2";
const PREFIX: &str = "streamagg/3";

/// One input partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// The line of processing a partition's state and commits belong to. `Generation(0)` is the first
/// (what state and commits of streamagg before generations read as); a reset, or a start from
/// neither local state nor a streamagg commit, begins a new one ([`Generation::new_after`]).
/// Generations are only ever compared for equality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

impl Generation {
    /// A new generation, begun at `now_ms` (Unix milliseconds, which an operator can read), and in
    /// any case later than every one in `seen`.
    pub fn new_after(now_ms: i64, seen: impl IntoIterator<Item = Generation>) -> Generation {
        let latest = seen.into_iter().map(|g| g.0).max().unwrap_or(0);
        Generation(
            u64::try_from(now_ms)
                .unwrap_or(0)
                .max(latest.saturating_add(1)),
        )
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a partition's processing stands: everything before `next_offset` is reflected in the stored
/// windows, `stream_time` is the largest event timestamp among those offsets, and `generation` the
/// line of processing they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    pub next_offset: i64,
    pub stream_time: Option<i64>,
    pub generation: Generation,
}

/// The settings that decide what a window holds: state and commits made under one set are
/// meaningless under another (a restored 60 s window emitted as a 300 s one, a lower filter turning
/// replayed events into stream-time jumps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Semantics {
    pub window_ms: i64,
    pub grace_ms: i64,
    pub min_value: Option<f64>,
    pub event_time: EventTime,
    pub input_format: Format,
    /// With percentiles on, the sketch every window keeps.
    pub percentiles: Option<SketchSpec>,
    /// The larger window sizes rolled up from `window_ms`.
    pub rollups: Rollups,
    /// The zone windows of an hour or more align to.
    pub zone: Option<&'static Zone>,
}

impl Semantics {
    /// The compact text form kept in the store and in every commit's metadata. Percentiles add
    /// ` pct=<accuracy>/<max bins>`, rollups ` roll=<size>,…`, a time zone ` tz=<name>`, each only
    /// when on: with them off the text is what versions without them write and read.
    pub fn encode(&self) -> String {
        let min = self.min_value.map_or("-".to_owned(), |m| m.to_string());
        let mut options = self
            .percentiles
            .map_or(String::new(), |p| format!(" {}", percentiles_word(p)));
        if !self.rollups.is_empty() {
            options.push_str(&format!(" roll={}", join_sizes(self.rollups.sizes())));
        }
        if let Some(zone) = self.zone {
            options.push_str(&format!(" tz={}", zone.name()));
        }
        format!(
            "w={} g={} min={min} et={} in={}{options}",
            self.window_ms,
            self.grace_ms,
            event_time_name(self.event_time),
            format_name(self.input_format)
        )
    }

    /// Reads [`Semantics::encode`]'s form from `words`; `None` for anything else.
    fn parse_words<'a, I: Iterator<Item = &'a str>>(
        words: &mut std::iter::Peekable<I>,
    ) -> Option<Semantics> {
        let semantics = Self::parse_required_words(words)?;
        let percentiles = match words.next_if(|w| w.starts_with("pct=")) {
            Some(word) => Some(parse_percentiles_word(word)?),
            None => None,
        };
        let rollups = match words.next_if(|w| w.starts_with("roll=")) {
            Some(word) => parse_rollups_word(word)?,
            None => Rollups::default(),
        };
        let zone = match words.next_if(|w| w.starts_with("tz=")) {
            Some(word) => Some(Zone::named(word.strip_prefix("tz=")?).ok()?),
            None => None,
        };
        Some(Semantics {
            percentiles,
            rollups,
            zone,
            ..semantics
        })
    }

    /// The words every version writes.
    fn parse_required_words<'a>(words: &mut impl Iterator<Item = &'a str>) -> Option<Semantics> {
        let mut field = |name: &str| words.next()?.strip_prefix(name);
        let window_ms = field("w=")?.parse().ok()?;
        let grace_ms = field("g=")?.parse().ok()?;
        let min_value = match field("min=")? {
            "-" => None,
            m => Some(m.parse::<f64>().ok().filter(|m| m.is_finite())?),
        };
        let event_time = match field("et=")? {
            "field" => EventTime::Field,
            "kafka" => EventTime::Kafka,
            _ => return None,
        };
        let input_format = match field("in=")? {
            "json" => Format::Json,
            "avro" => Format::Avro,
            "avro-confluent" => Format::AvroConfluent,
            _ => return None,
        };
        Some(Semantics {
            window_ms,
            grace_ms,
            min_value,
            event_time,
            input_format,
            percentiles: None,
            rollups: Rollups::default(),
            zone: None,
        })
    }

    /// Parses [`Semantics::encode`]'s form.
    pub fn parse(text: &str) -> Option<Semantics> {
        let mut words = text.split(' ').peekable();
        let semantics = Self::parse_words(&mut words)?;
        words.next().is_none().then_some(semantics)
    }

    /// What differs from `now`, as `window 1m (now 5m), min_value 50 (now 10)`; empty when equal.
    pub fn differences(&self, now: &Semantics) -> String {
        let duration = |ms: i64| {
            humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
                .to_string()
        };
        let min = |m: Option<f64>| m.map_or("none".to_owned(), |m| m.to_string());
        let sizes = |smallest: i64, rollups: Rollups| {
            std::iter::once(smallest)
                .chain(rollups.sizes().iter().copied())
                .map(duration)
                .collect::<Vec<_>>()
                .join(",")
        };
        let zone =
            |z: Option<&'static Zone>| z.map_or("none (UTC)".to_owned(), |z| z.name().to_owned());
        let pairs = [
            (
                "window",
                sizes(self.window_ms, self.rollups),
                sizes(now.window_ms, now.rollups),
            ),
            ("grace", duration(self.grace_ms), duration(now.grace_ms)),
            ("min_value", min(self.min_value), min(now.min_value)),
            (
                "event_time",
                event_time_name(self.event_time).to_owned(),
                event_time_name(now.event_time).to_owned(),
            ),
            (
                "input_format",
                format_name(self.input_format).to_owned(),
                format_name(now.input_format).to_owned(),
            ),
            (
                "percentiles",
                percentiles_name(self.percentiles),
                percentiles_name(now.percentiles),
            ),
            ("time_zone", zone(self.zone), zone(now.zone)),
        ];
        pairs
            .into_iter()
            .filter(|(_, old, new)| old != new)
            .map(|(name, old, new)| format!("{name} {old} (now {new})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn join_sizes(sizes: &[i64]) -> String {
    sizes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `roll=<size ms>,…`: at least one size, each positive.
fn parse_rollups_word(word: &str) -> Option<Rollups> {
    let sizes = word
        .strip_prefix("roll=")?
        .split(',')
        .map(|s| s.parse::<i64>().ok().filter(|&s| s > 0))
        .collect::<Option<Vec<_>>>()?;
    Rollups::new(&sizes).filter(|r| !r.is_empty())
}

/// `pct=<accuracy>/<max bins>`.
fn percentiles_word(spec: SketchSpec) -> String {
    format!("pct={}/{}", spec.accuracy(), spec.max_bins())
}

fn parse_percentiles_word(word: &str) -> Option<SketchSpec> {
    let (accuracy, max_bins) = word.strip_prefix("pct=")?.split_once('/')?;
    SketchSpec::new(accuracy.parse().ok()?, max_bins.parse().ok()?)
}

fn percentiles_name(spec: Option<SketchSpec>) -> String {
    spec.map_or("off".to_owned(), |spec| {
        format!(
            "on (accuracy {}, at most {} bins)",
            spec.accuracy(),
            spec.max_bins()
        )
    })
}

fn event_time_name(event_time: EventTime) -> &'static str {
    match event_time {
        EventTime::Field => "field",
        EventTime::Kafka => "kafka",
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Avro => "avro",
        Format::AvroConfluent => "avro-confluent",
    }
}

/// What the group commit of a partition carries in its metadata string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitMetadata {
    pub stream_time: Option<i64>,
    pub rebuild_offset: i64,
    /// `None` for a commit of an older streamagg that did not record them, or a reset marker made
    /// when the group's commit did not say.
    pub semantics: Option<Semantics>,
    pub generation: Generation,
    /// Written by `streamagg reset`: the committed offset is where generation `generation` starts,
    /// with empty state (`stream_time` none, `rebuild_offset` the committed offset).
    pub reset: bool,
    /// The topic's partition counts before its increases, as the committing instance knew them
    /// (`pc=3,5`; written only after an increase): an instance that takes the partition over
    /// learns which sources moved in (`processor::split`).
    pub earlier_counts: EarlierCounts,
}

/// Up to [`EarlierCounts::MAX`] earlier partition counts of a topic, ascending (the latest kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EarlierCounts {
    counts: [u32; EarlierCounts::MAX],
    len: usize,
}

impl EarlierCounts {
    pub const MAX: usize = 4;

    /// The latest [`EarlierCounts::MAX`] of `counts` (ascending, each at least 1), or `None` if
    /// they are not.
    pub fn of(counts: &[usize]) -> Option<EarlierCounts> {
        if counts.first() == Some(&0) || !counts.windows(2).all(|w| w[0] < w[1]) {
            return None;
        }
        let kept = &counts[counts.len().saturating_sub(Self::MAX)..];
        let mut earlier = EarlierCounts::default();
        for (slot, &count) in earlier.counts.iter_mut().zip(kept) {
            *slot = u32::try_from(count).ok()?;
        }
        earlier.len = kept.len();
        Some(earlier)
    }

    pub fn as_vec(&self) -> Vec<usize> {
        self.counts[..self.len]
            .iter()
            .map(|&c| c as usize)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn word(&self) -> String {
        let counts: Vec<String> = self.as_vec().iter().map(usize::to_string).collect();
        format!("pc={}", counts.join(","))
    }

    fn parse_word(word: &str) -> Option<EarlierCounts> {
        let counts: Option<Vec<usize>> = word
            .strip_prefix("pc=")?
            .split(',')
            .map(|c| c.parse().ok())
            .collect();
        let counts = counts?;
        (counts.len() <= Self::MAX)
            .then(|| EarlierCounts::of(&counts))
            .flatten()
            .filter(|e| !e.is_empty())
    }
}

impl CommitMetadata {
    /// The marker `streamagg reset` commits at `offset`: generation `generation` starts there with
    /// empty state.
    pub fn reset_marker(
        offset: i64,
        generation: Generation,
        semantics: Option<Semantics>,
    ) -> CommitMetadata {
        CommitMetadata {
            stream_time: None,
            rebuild_offset: offset,
            semantics,
            generation,
            reset: true,
            earlier_counts: EarlierCounts::default(),
        }
    }

    /// `streamagg/3 gen=<generation>[ reset] st=<stream time> rb=<rebuild offset>[ <semantics>]`;
    /// in the first generation, and not a reset, the older `streamagg/2` (or, without semantics,
    /// `streamagg/1`) form, which streamagg before generations reads too.
    pub fn encode(&self) -> String {
        let stream_time = self.stream_time.map_or("-".to_owned(), |t| t.to_string());
        let mut text = if self.generation != Generation::default() || self.reset {
            let reset = if self.reset { " reset" } else { "" };
            format!("{PREFIX} gen={}{reset} ", self.generation)
        } else if self.semantics.is_some() {
            format!("{PREFIX_V2} ")
        } else {
            format!("{PREFIX_V1} ")
        };
        text.push_str(&format!("st={stream_time} rb={}", self.rebuild_offset));
        if let Some(semantics) = &self.semantics {
            text.push(' ');
            text.push_str(&semantics.encode());
        }
        if !self.earlier_counts.is_empty() {
            text.push(' ');
            text.push_str(&self.earlier_counts.word());
        }
        text
    }

    /// `None` for metadata streamagg did not write (another tool's commit, or none).
    pub fn parse(text: &str) -> Option<CommitMetadata> {
        let mut words = text.split(' ').peekable();
        // (semantics: required, optional or absent; generation; reset)
        let (semantics_words, generation, reset) = match words.next()? {
            PREFIX_V1 => (Some(false), Generation::default(), false),
            PREFIX_V2 => (Some(true), Generation::default(), false),
            PREFIX => {
                let generation = Generation(words.next()?.strip_prefix("gen=")?.parse().ok()?);
                let reset = words.next_if_eq(&"reset").is_some();
                (None, generation, reset)
            }
            _ => return None,
        };
        let stream_time = match words.next()?.strip_prefix("st=")? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let rebuild_offset = words.next()?.strip_prefix("rb=")?.parse().ok()?;
        let earlier_next = |words: &mut std::iter::Peekable<std::str::Split<'_, char>>| {
            words.peek().is_some_and(|w| w.starts_with("pc="))
        };
        let semantics = match semantics_words {
            Some(true) => Some(Semantics::parse_words(&mut words)?),
            Some(false) => None,
            None if words.peek().is_some() && !earlier_next(&mut words) => {
                Some(Semantics::parse_words(&mut words)?)
            }
            None => None,
        };
        let earlier_counts = match words.next_if(|w| w.starts_with("pc=")) {
            Some(word) => EarlierCounts::parse_word(word)?,
            None => EarlierCounts::default(),
        };
        words.next().is_none().then_some(CommitMetadata {
            stream_time,
            rebuild_offset,
            semantics,
            generation,
            reset,
            earlier_counts,
        })
    }
}

impl CommitMetadata {
    /// Why this metadata, found on a group commit at `committed`, cannot be what streamagg wrote
    /// there: a rebuild offset outside `0..=committed` (a negative one would be a logical offset,
    /// END or BEGINNING, to librdkafka), or a stream time no accepted record could have set (it
    /// would make every later record late), or a reset marker that is not where its generation
    /// starts (a stream time, a rebuild offset other than the committed one, or the first
    /// generation). Anyone allowed to commit for the group can write metadata; such metadata is
    /// foreign and must not steer where processing resumes.
    pub fn implausible(&self, committed: i64, window: &WindowSpec) -> Option<String> {
        if self.reset
            && (self.stream_time.is_some()
                || self.rebuild_offset != committed
                || self.generation == Generation::default())
        {
            return Some(format!(
                "a reset marker at {committed} must have no stream time, rebuild offset \
                 {committed} and a generation after the first"
            ));
        }
        if !(0..=committed).contains(&self.rebuild_offset) {
            return Some(format!(
                "rebuild offset {} is outside 0..={committed}",
                self.rebuild_offset
            ));
        }
        match self.stream_time {
            Some(t) if window.start_of(t).is_none() => {
                Some(format!("stream time {t} lies beyond any window"))
            }
            _ => None,
        }
    }
}

/// Where a newly assigned partition resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePlan {
    /// Local state is current: load it and continue at its next offset, in its generation.
    Local { from: i64, generation: Generation },
    /// Local state is missing, stale or of another generation: drop it (if any), seek to `from`,
    /// and replay up to `replay_until` with stream time pinned at `stream_time`, without emitting
    /// or forwarding; continue in the commit's generation.
    Rebuild {
        from: i64,
        replay_until: i64,
        stream_time: Option<i64>,
        generation: Generation,
        forget_local: bool,
    },
    /// The group committed an offset without streamagg metadata, not behind local state (or there
    /// is none): continue there with empty state, in a new generation.
    CommittedOnly { from: i64, forget_local: bool },
    /// The group's offset was reset ([`GroupReset`]): what local state holds is obsolete. Drop it,
    /// process the partition again from `from` with empty state; the windows from there are
    /// emitted again.
    Replay {
        from: i64,
        forget_local: bool,
        by: GroupReset,
    },
    /// Nothing anywhere: start where `auto.offset.reset` says, with empty state, in a new generation.
    Fresh,
    /// The partition's log ends below where its checkpoints say processing got to: the topic was
    /// deleted and created again, or its log was truncated. Its state belongs to records that are
    /// gone: drop it and process the partition from its beginning, with empty state, in a new
    /// generation.
    Reset { checkpointed: i64, log_end: i64 },
}

/// Input offsets a partition's log no longer held when they were to be read (retention, deleted
/// records): [`Trimmed::between`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Below the offset a rebuild replays to: missing from the windows it restores (they come out
    /// short); another instance processed them before.
    pub from_rebuild: u64,
    /// From there on: never processed by anyone.
    pub unread: u64,
}

impl Trimmed {
    /// Where the deleted part of a gap ends: a record at `offset` came from further on than the
    /// partition's `expected` next offset, and the log starts at `log_start`. Deleted records lie
    /// below a log start past `expected`, and only a record at or past that start comes after them
    /// (the reset policy moved the consumer there): a record below it was fetched before the log
    /// was trimmed, so the gap before it is transaction markers, aborted or compacted records.
    pub fn gap_end(expected: i64, offset: i64, log_start: i64) -> Option<i64> {
        (offset > expected && log_start > expected && offset >= log_start).then_some(log_start)
    }

    /// The offsets `[from, to)` that were gone when they were to be read, less those up to
    /// `counted_through` (counted before on this partition: a rebuild redone after an abort or a
    /// reassignment meets the same gap again), split at `replay_until`.
    pub fn between(from: i64, to: i64, replay_until: i64, counted_through: Option<i64>) -> Self {
        let from = counted_through.map_or(from, |counted| from.max(counted));
        if to <= from {
            return Trimmed::default();
        }
        let split = replay_until.clamp(from, to);
        Trimmed {
            from_rebuild: u64::try_from(split - from).unwrap_or(0),
            unread: u64::try_from(to - split).unwrap_or(0),
        }
    }
}

/// Who reset a group's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupReset {
    /// `streamagg reset`, whose marker starts `generation`.
    Streamagg { generation: Generation },
    /// A commit streamagg did not write, behind local state: Kafka's own
    /// `kafka-consumer-groups --reset-offsets`, or any client committing for the group. A new
    /// generation starts.
    Foreign,
}

impl ResumePlan {
    /// The plan's kind as one stable word for logs and dashboards: `local`, `rebuild`,
    /// `committed-only`, `replay`, `fresh` or `reset`.
    pub fn kind(&self) -> &'static str {
        match self {
            ResumePlan::Local { .. } => "local",
            ResumePlan::Rebuild { .. } => "rebuild",
            ResumePlan::CommittedOnly { .. } => "committed-only",
            ResumePlan::Replay { .. } => "replay",
            ResumePlan::Fresh => "fresh",
            ResumePlan::Reset { .. } => "reset",
        }
    }

    /// The generation the partition continues in; `None` where it begins a new one.
    pub fn generation(&self) -> Option<Generation> {
        match *self {
            ResumePlan::Local { generation, .. } | ResumePlan::Rebuild { generation, .. } => {
                Some(generation)
            }
            ResumePlan::Replay {
                by: GroupReset::Streamagg { generation },
                ..
            } => Some(generation),
            ResumePlan::Replay {
                by: GroupReset::Foreign,
                ..
            }
            | ResumePlan::CommittedOnly { .. }
            | ResumePlan::Fresh
            | ResumePlan::Reset { .. } => None,
        }
    }
}

/// Decides where to resume from the local checkpoint, the group's committed offset (and its
/// metadata, `None` when foreign), if any, and the partition's log end offset (high watermark), if
/// it could be asked.
///
/// Local state is used when it is of the commit's generation and its position (next offset, then
/// stream time) is not behind the group's: equal, or ahead (at-least-once commits to the group
/// after RocksDB, so a crash in between leaves the group behind — with streamagg's metadata). A
/// group commit ahead of it — more records, or the same records with stream time advanced by idle
/// closing — means another owner emitted what local state still holds open. A commit behind local
/// state that streamagg did not write, or a reset marker of another generation, is an operator's
/// reset: local state is dropped and the partition processed again from the committed offset.
pub fn plan_resume(
    local: Option<PartitionCheckpoint>,
    committed: Option<(i64, Option<CommitMetadata>)>,
    log_end: Option<i64>,
) -> ResumePlan {
    let had_local = local.is_some();
    // Local state that belongs to another line of processing than the group commit is obsolete,
    // wherever it lies: a commit behind it that streamagg did not write, or one of another
    // generation.
    let current = match committed {
        None => local,
        Some((offset, None)) => local.filter(|local| local.next_offset <= offset),
        Some((_, Some(meta))) => local.filter(|local| local.generation == meta.generation),
    };
    let checkpointed = [
        current.map(|l| l.next_offset),
        committed.map(|(offset, _)| offset),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some((checkpointed, log_end)) = checkpointed
        .zip(log_end)
        .filter(|&(checkpointed, log_end)| checkpointed > log_end)
    {
        return ResumePlan::Reset {
            checkpointed,
            log_end,
        };
    }
    let local_plan = |local: PartitionCheckpoint| ResumePlan::Local {
        from: local.next_offset,
        generation: local.generation,
    };
    match committed {
        // The group is not ahead of us: our own state is the freshest there is.
        None => current.map_or(ResumePlan::Fresh, local_plan),
        Some((offset, None)) => match current {
            Some(local) if local.next_offset == offset => local_plan(local),
            None if had_local => ResumePlan::Replay {
                from: offset,
                forget_local: true,
                by: GroupReset::Foreign,
            },
            _ => ResumePlan::CommittedOnly {
                from: offset,
                forget_local: had_local,
            },
        },
        Some((offset, Some(meta))) => match current {
            Some(local)
                if offset < local.next_offset
                    || (offset == local.next_offset && meta.stream_time <= local.stream_time) =>
            {
                local_plan(local)
            }
            None if meta.reset => ResumePlan::Replay {
                from: offset,
                forget_local: had_local,
                by: GroupReset::Streamagg {
                    generation: meta.generation,
                },
            },
            _ => ResumePlan::Rebuild {
                from: meta.rebuild_offset.min(offset),
                replay_until: offset,
                stream_time: meta.stream_time,
                generation: meta.generation,
                forget_local: had_local,
            },
        },
    }
}

#[cfg(test)]
mod tests;

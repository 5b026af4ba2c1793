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

use crate::codec::Format;
use crate::route::EventTime;
use crate::window::WindowSpec;

const PREFIX_V1: &str = "streamagg/1";
const PREFIX: &str = "streamagg/2";

/// One input partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Where a partition's processing stands: everything before `next_offset` is reflected in the stored
/// windows, and `stream_time` is the largest event timestamp among those offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    pub next_offset: i64,
    pub stream_time: Option<i64>,
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
}

impl Semantics {
    /// The compact text form kept in the store and in every commit's metadata.
    pub fn encode(&self) -> String {
        let min = self.min_value.map_or("-".to_owned(), |m| m.to_string());
        format!(
            "w={} g={} min={min} et={} in={}",
            self.window_ms,
            self.grace_ms,
            event_time_name(self.event_time),
            format_name(self.input_format)
        )
    }

    /// Reads [`Semantics::encode`]'s form from `words`; `None` for anything else.
    fn parse_words<'a>(words: &mut impl Iterator<Item = &'a str>) -> Option<Semantics> {
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
            _ => return None,
        };
        Some(Semantics {
            window_ms,
            grace_ms,
            min_value,
            event_time,
            input_format,
        })
    }

    /// Parses [`Semantics::encode`]'s form.
    pub fn parse(text: &str) -> Option<Semantics> {
        let mut words = text.split(' ');
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
        let pairs = [
            ("window", duration(self.window_ms), duration(now.window_ms)),
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
        ];
        pairs
            .into_iter()
            .filter(|(_, old, new)| old != new)
            .map(|(name, old, new)| format!("{name} {old} (now {new})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
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
    }
}

/// What the group commit of a partition carries in its metadata string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitMetadata {
    pub stream_time: Option<i64>,
    pub rebuild_offset: i64,
    /// `None` for a commit of an older streamagg that did not record them.
    pub semantics: Option<Semantics>,
}

impl CommitMetadata {
    pub fn encode(&self) -> String {
        let stream_time = self.stream_time.map_or("-".to_owned(), |t| t.to_string());
        // Without semantics it is the older form, which is read as such.
        let prefix = if self.semantics.is_some() {
            PREFIX
        } else {
            PREFIX_V1
        };
        let mut text = format!("{prefix} st={stream_time} rb={}", self.rebuild_offset);
        if let Some(semantics) = &self.semantics {
            text.push(' ');
            text.push_str(&semantics.encode());
        }
        text
    }

    /// `None` for metadata streamagg did not write (another tool's commit, or none).
    pub fn parse(text: &str) -> Option<CommitMetadata> {
        let mut words = text.split(' ');
        let versioned = match words.next()? {
            PREFIX_V1 => false,
            PREFIX => true,
            _ => return None,
        };
        let stream_time = match words.next()?.strip_prefix("st=")? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let rebuild_offset = words.next()?.strip_prefix("rb=")?.parse().ok()?;
        let semantics = if versioned {
            Some(Semantics::parse_words(&mut words)?)
        } else {
            None
        };
        words.next().is_none().then_some(CommitMetadata {
            stream_time,
            rebuild_offset,
            semantics,
        })
    }
}

impl CommitMetadata {
    /// Why this metadata, found on a group commit at `committed`, cannot be what streamagg wrote
    /// there: a rebuild offset outside `0..=committed` (a negative one would be a logical offset,
    /// END or BEGINNING, to librdkafka), or a stream time no accepted record could have set (it
    /// would make every later record late). Anyone allowed to commit for the group can write
    /// metadata; such metadata is foreign and must not steer where processing resumes.
    pub fn implausible(&self, committed: i64, window: &WindowSpec) -> Option<String> {
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
    /// Local state is current: load it and continue at its next offset.
    Local { from: i64 },
    /// Local state is missing or stale: drop it (if any), seek to `from`, and replay up to
    /// `replay_until` with stream time pinned at `stream_time`, without emitting or forwarding.
    Rebuild {
        from: i64,
        replay_until: i64,
        stream_time: Option<i64>,
        forget_local: bool,
    },
    /// The group committed an offset without streamagg metadata: continue there with empty state.
    CommittedOnly { from: i64, forget_local: bool },
    /// Nothing anywhere: start where `auto.offset.reset` says, with empty state.
    Fresh,
    /// The partition's log ends below where its checkpoints say processing got to: the topic was
    /// deleted and created again, or its log was truncated. Its state belongs to records that are
    /// gone: drop it and process the partition from its beginning, with empty state.
    Reset { checkpointed: i64, log_end: i64 },
}

impl ResumePlan {
    /// The plan's kind as one stable word for logs and dashboards: `local`, `rebuild`,
    /// `committed-only`, `fresh` or `reset`.
    pub fn kind(&self) -> &'static str {
        match self {
            ResumePlan::Local { .. } => "local",
            ResumePlan::Rebuild { .. } => "rebuild",
            ResumePlan::CommittedOnly { .. } => "committed-only",
            ResumePlan::Fresh => "fresh",
            ResumePlan::Reset { .. } => "reset",
        }
    }
}

/// Decides where to resume from the local checkpoint, the group's committed offset (and its
/// metadata), if any, and the partition's log end offset (high watermark), if it could be asked.
///
/// Local state is used when its position (next offset, then stream time) is not behind the group's:
/// equal, or ahead (at-least-once commits to the group after RocksDB, so a crash in between leaves
/// the group behind). A group commit ahead of it — more records, or the same records with stream
/// time advanced by idle closing — means another owner emitted what local state still holds open.
pub fn plan_resume(
    local: Option<PartitionCheckpoint>,
    committed: Option<(i64, Option<CommitMetadata>)>,
    log_end: Option<i64>,
) -> ResumePlan {
    let checkpointed = [
        local.map(|l| l.next_offset),
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
    let local_not_behind =
        |local: &PartitionCheckpoint, offset: i64, meta: Option<&CommitMetadata>| {
            offset < local.next_offset
                || (offset == local.next_offset
                    && meta.is_none_or(|m| m.stream_time <= local.stream_time))
        };
    match (local, committed) {
        // The group is not ahead of us: our own state is the freshest there is.
        (Some(local), None) => ResumePlan::Local {
            from: local.next_offset,
        },
        (Some(local), Some((offset, meta))) if local_not_behind(&local, offset, meta.as_ref()) => {
            ResumePlan::Local {
                from: local.next_offset,
            }
        }
        (local, Some((offset, Some(meta)))) => ResumePlan::Rebuild {
            from: meta.rebuild_offset.min(offset),
            replay_until: offset,
            stream_time: meta.stream_time,
            forget_local: local.is_some(),
        },
        (local, Some((offset, None))) => ResumePlan::CommittedOnly {
            from: offset,
            forget_local: local.is_some(),
        },
        (None, None) => ResumePlan::Fresh,
    }
}

#[cfg(test)]
mod tests;

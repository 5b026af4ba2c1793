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
use crate::config::EventTime;
use crate::encoding::PartitionCheckpoint;

const PREFIX_V1: &str = "streamagg/1";
const PREFIX: &str = "streamagg/2";

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
mod tests {
    use super::*;

    const MINUTE: Semantics = Semantics {
        window_ms: 60_000,
        grace_ms: 10_000,
        min_value: None,
        event_time: EventTime::Field,
        input_format: Format::Json,
    };

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_ignored() {
        let filtered = Semantics {
            min_value: Some(-2.5),
            event_time: EventTime::Kafka,
            input_format: Format::Avro,
            ..MINUTE
        };
        for (stream_time, rebuild_offset, semantics) in [
            (Some(1_700_000_000_000), 42, Some(MINUTE)),
            (Some(-5), 0, Some(filtered)),
            (None, 7, Some(MINUTE)),
            (Some(3), 7, None),
        ] {
            let meta = CommitMetadata {
                stream_time,
                rebuild_offset,
                semantics,
            };
            assert_eq!(CommitMetadata::parse(&meta.encode()), Some(meta));
        }
        // What streamagg wrote before it recorded the semantics is still read.
        assert_eq!(
            CommitMetadata::parse("streamagg/1 st=1 rb=2"),
            Some(CommitMetadata {
                stream_time: Some(1),
                rebuild_offset: 2,
                semantics: None
            })
        );
        for foreign in [
            "",
            "hello",
            "streamagg/3 st=1 rb=2",
            "streamagg/1 st=x rb=2",
            "streamagg/1 st=1",
            "streamagg/1 st=1 rb=2 extra",
            "streamagg/2 st=1 rb=2",
            "streamagg/2 st=1 rb=2 w=60000 g=0 min=- et=field in=xml",
            "streamagg/2 st=1 rb=2 w=60000 g=0 min=NaN et=field in=json",
            "streamagg/2 st=1 rb=2 w=60000 g=0 min=- et=field in=json extra",
        ] {
            assert_eq!(CommitMetadata::parse(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn semantics_name_every_difference_with_old_and_new_values() {
        let cases = [
            (MINUTE, MINUTE, ""),
            (
                MINUTE,
                Semantics {
                    window_ms: 300_000,
                    ..MINUTE
                },
                "window 1m (now 5m)",
            ),
            (
                Semantics {
                    min_value: Some(50.0),
                    ..MINUTE
                },
                Semantics {
                    grace_ms: 0,
                    min_value: Some(10.0),
                    input_format: Format::Avro,
                    ..MINUTE
                },
                "grace 10s (now 0s), min_value 50 (now 10), input_format json (now avro)",
            ),
            (
                MINUTE,
                Semantics {
                    event_time: EventTime::Kafka,
                    min_value: Some(0.5),
                    ..MINUTE
                },
                "min_value none (now 0.5), event_time field (now kafka)",
            ),
        ];
        for (old, new, expected) in cases {
            assert_eq!(old.differences(&new), expected);
            assert_eq!(Semantics::parse(&old.encode()), Some(old));
        }
    }

    #[test]
    fn resume_plans() {
        let local = |next_offset, stream_time| {
            Some(PartitionCheckpoint {
                next_offset,
                stream_time: Some(stream_time),
            })
        };
        let meta = |rebuild_offset, stream_time| {
            Some(CommitMetadata {
                stream_time: Some(stream_time),
                rebuild_offset,
                semantics: Some(MINUTE),
            })
        };
        let cases = [
            ("nothing anywhere", None, None, 0, ResumePlan::Fresh),
            (
                "local only",
                local(50, 9),
                None,
                50,
                ResumePlan::Local { from: 50 },
            ),
            (
                "local equals commit",
                local(50, 100),
                Some((50, meta(40, 100))),
                80,
                ResumePlan::Local { from: 50 },
            ),
            (
                "local ahead of commit (crash before commit)",
                local(60, 9),
                Some((50, meta(40, 100))),
                60,
                ResumePlan::Local { from: 60 },
            ),
            (
                "same offset, commit's stream time ahead (another owner idle-closed windows)",
                local(50, 99),
                Some((50, meta(40, 130))),
                50,
                ResumePlan::Rebuild {
                    from: 40,
                    replay_until: 50,
                    stream_time: Some(130),
                    forget_local: true,
                },
            ),
            (
                "same offset, local stream time ahead (at-least-once, commit failed)",
                local(50, 131),
                Some((50, meta(40, 130))),
                50,
                ResumePlan::Local { from: 50 },
            ),
            (
                "commit ahead of local: stale local state",
                local(30, 9),
                Some((50, meta(40, 100))),
                90,
                ResumePlan::Rebuild {
                    from: 40,
                    replay_until: 50,
                    stream_time: Some(100),
                    forget_local: true,
                },
            ),
            (
                "no local state: rebuild from the commit",
                None,
                Some((50, meta(40, 100))),
                50,
                ResumePlan::Rebuild {
                    from: 40,
                    replay_until: 50,
                    stream_time: Some(100),
                    forget_local: false,
                },
            ),
            (
                "rebuild offset never after the commit",
                None,
                Some((50, meta(70, 100))),
                50,
                ResumePlan::Rebuild {
                    from: 50,
                    replay_until: 50,
                    stream_time: Some(100),
                    forget_local: false,
                },
            ),
            (
                "foreign commit",
                None,
                Some((50, None)),
                50,
                ResumePlan::CommittedOnly {
                    from: 50,
                    forget_local: false,
                },
            ),
            (
                "foreign commit ahead of local",
                local(10, 9),
                Some((50, None)),
                50,
                ResumePlan::CommittedOnly {
                    from: 50,
                    forget_local: true,
                },
            ),
            (
                "local checkpoint past the log end: the topic was recreated",
                local(494, 9),
                Some((494, meta(400, 100))),
                125,
                ResumePlan::Reset {
                    checkpointed: 494,
                    log_end: 125,
                },
            ),
            (
                "group commit past the log end, no local state",
                None,
                Some((494, None)),
                0,
                ResumePlan::Reset {
                    checkpointed: 494,
                    log_end: 0,
                },
            ),
        ];
        for (name, local, committed, log_end, expected) in cases {
            assert_eq!(
                plan_resume(local, committed, Some(log_end)),
                expected,
                "{name}"
            );
            if !matches!(expected, ResumePlan::Reset { .. }) {
                assert_eq!(
                    plan_resume(local, committed, None),
                    expected,
                    "{name}, log end unknown"
                );
            }
        }
    }
}

//! Checkpoint decisions — pure, no I/O: what a partition's Kafka commit carries besides its offset,
//! and where to resume a newly assigned partition from.
//!
//! The local RocksDB checkpoint is the truth for partitions this instance processed last. The group
//! commit is what lets *another* instance (or this one with a lost state dir) take a partition over:
//! its metadata carries the partition's stream time and the *rebuild offset* — the smallest input
//! offset still contributing to an open window. A new owner seeks there and replays up to the
//! committed offset with stream time pinned at the committed value: exactly the events of windows
//! still open are re-aggregated, and nothing is re-emitted or re-forwarded. Rebuild cost is bounded by
//! the open-window span (window + grace + out-of-orderness), not by topic history.

use crate::encoding::PartitionCheckpoint;

const PREFIX: &str = "streamagg/1";

/// What the group commit of a partition carries in its metadata string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMetadata {
    pub stream_time: Option<i64>,
    pub rebuild_offset: i64,
}

impl CommitMetadata {
    pub fn encode(&self) -> String {
        match self.stream_time {
            Some(t) => format!("{PREFIX} st={t} rb={}", self.rebuild_offset),
            None => format!("{PREFIX} st=- rb={}", self.rebuild_offset),
        }
    }

    /// `None` for metadata streamagg did not write (another tool's commit, or none).
    pub fn parse(text: &str) -> Option<CommitMetadata> {
        let mut words = text.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let stream_time = match words.next()?.strip_prefix("st=")? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let rebuild_offset = words.next()?.strip_prefix("rb=")?.parse().ok()?;
        words.next().is_none().then_some(CommitMetadata {
            stream_time,
            rebuild_offset,
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
}

/// Decides where to resume from the local checkpoint and the group's committed offset (and its
/// metadata), if any.
pub fn plan_resume(
    local: Option<PartitionCheckpoint>,
    committed: Option<(i64, Option<CommitMetadata>)>,
) -> ResumePlan {
    match (local, committed) {
        // The group is not ahead of us: our own state is the freshest there is.
        (Some(local), None) => ResumePlan::Local {
            from: local.next_offset,
        },
        (Some(local), Some((offset, _))) if offset <= local.next_offset => ResumePlan::Local {
            from: local.next_offset,
        },
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

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_ignored() {
        for meta in [
            CommitMetadata {
                stream_time: Some(1_700_000_000_000),
                rebuild_offset: 42,
            },
            CommitMetadata {
                stream_time: Some(-5),
                rebuild_offset: 0,
            },
            CommitMetadata {
                stream_time: None,
                rebuild_offset: 7,
            },
        ] {
            assert_eq!(CommitMetadata::parse(&meta.encode()), Some(meta));
        }
        for foreign in [
            "",
            "hello",
            "streamagg/2 st=1 rb=2",
            "streamagg/1 st=x rb=2",
            "streamagg/1 st=1",
            "streamagg/1 st=1 rb=2 extra",
        ] {
            assert_eq!(CommitMetadata::parse(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn resume_plans() {
        let local = |next_offset| {
            Some(PartitionCheckpoint {
                next_offset,
                stream_time: Some(9),
            })
        };
        let meta = |rebuild_offset| {
            Some(CommitMetadata {
                stream_time: Some(100),
                rebuild_offset,
            })
        };
        let cases = [
            ("nothing anywhere", None, None, ResumePlan::Fresh),
            (
                "local only",
                local(50),
                None,
                ResumePlan::Local { from: 50 },
            ),
            (
                "local equals commit",
                local(50),
                Some((50, meta(40))),
                ResumePlan::Local { from: 50 },
            ),
            (
                "local ahead of commit (crash before commit)",
                local(60),
                Some((50, meta(40))),
                ResumePlan::Local { from: 60 },
            ),
            (
                "commit ahead of local: stale local state",
                local(30),
                Some((50, meta(40))),
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
                Some((50, meta(40))),
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
                Some((50, meta(70))),
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
                ResumePlan::CommittedOnly {
                    from: 50,
                    forget_local: false,
                },
            ),
            (
                "foreign commit ahead of local",
                local(10),
                Some((50, None)),
                ResumePlan::CommittedOnly {
                    from: 50,
                    forget_local: true,
                },
            ),
        ];
        for (name, local, committed, expected) in cases {
            assert_eq!(plan_resume(local, committed), expected, "{name}");
        }
    }
}

//! `streamagg reset` — pure, no I/O: where a consumer group's offsets go on each partition of an
//! input topic (its earliest record, the first record at or after a point in time, or an offset),
//! the new [`Generation`] the reset starts, and the reset marker each new commit carries
//! ([`CommitMetadata::reset_marker`]). Every instance that later resumes one of these partitions
//! finds its local state of an older generation and drops it (`checkpoint::plan_resume`), so the
//! reset reaches every state dir without anyone deleting volumes. The plan prints as
//! `topic[partition]: current → new` lines for `--dry-run`.

use std::fmt;

use crate::checkpoint::{CommitMetadata, Generation};

/// Where the group's offsets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first record each partition still holds.
    Earliest,
    /// The first record whose Kafka timestamp is at or after this (Unix ms); the log end where
    /// none is.
    Datetime(i64),
    /// This offset on every partition, kept within what the partition holds.
    Offset(i64),
}

/// What the cluster says about one partition before the reset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionNow {
    pub partition: i32,
    /// The group's committed offset, if any, and its metadata if streamagg wrote it.
    pub committed: Option<(i64, Option<CommitMetadata>)>,
    /// The first offset the log still holds (low watermark) and its end (high watermark).
    pub log_start: i64,
    pub log_end: i64,
    /// For [`ResetTo::Datetime`]: the broker's answer for the partition (`None`: no record that late).
    pub at_time: Option<i64>,
}

/// One partition's new commit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionReset {
    pub partition: i32,
    pub current: Option<i64>,
    pub new: i64,
    /// `--to-offset` lay outside what the partition holds and was moved to its nearest end.
    pub clamped: bool,
    pub metadata: CommitMetadata,
}

/// The reset of one topic's partitions for a group.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetPlan {
    pub topic: String,
    pub generation: Generation,
    pub partitions: Vec<PartitionReset>,
}

/// Plans the reset of `topic` to `to`, at `now_ms`. The new generation is later than every one the
/// group's commits name; each marker carries the window semantics the partition's commit (or, where
/// it has none, another partition's) was made under, so the processor's settings check still
/// applies after the reset.
pub fn plan_reset(topic: &str, to: ResetTo, partitions: &[PartitionNow], now_ms: i64) -> ResetPlan {
    let ours = || {
        partitions
            .iter()
            .filter_map(|p| p.committed.and_then(|(_, meta)| meta))
    };
    let generation = Generation::new_after(now_ms, ours().map(|m| m.generation));
    let any_semantics = ours().find_map(|m| m.semantics);
    let partitions = partitions
        .iter()
        .map(|p| {
            let (new, clamped) = match to {
                ResetTo::Earliest => (p.log_start, false),
                ResetTo::Datetime(_) => (p.at_time.unwrap_or(p.log_end), false),
                ResetTo::Offset(offset) => {
                    let new = offset.clamp(p.log_start, p.log_end.max(p.log_start));
                    (new, new != offset)
                }
            };
            let semantics = p
                .committed
                .and_then(|(_, meta)| meta?.semantics)
                .or(any_semantics);
            PartitionReset {
                partition: p.partition,
                current: p.committed.map(|(offset, _)| offset),
                new,
                clamped,
                metadata: CommitMetadata::reset_marker(new, generation, semantics),
            }
        })
        .collect();
    ResetPlan {
        topic: topic.to_owned(),
        generation,
        partitions,
    }
}

impl fmt::Display for ResetPlan {
    /// One `topic[partition]: current → new` line per partition (`-` where the group has no commit).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.partitions {
            let current = p.current.map_or("-".to_owned(), |c| c.to_string());
            let clamped = if p.clamped {
                " (the requested offset is outside the partition's records)"
            } else {
                ""
            };
            writeln!(
                f,
                "{}[{}]: {current} → {}{clamped}",
                self.topic, p.partition, p.new
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

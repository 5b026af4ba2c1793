//! Input the log no longer held when it was to be read (retention, deleted records): counted once
//! per offset and logged, never skipped silently. Met in two places: at assignment, when the log
//! starts past where the partition's plan was to read (the open windows' rebuild, a resume; it
//! then reads from the log's start), and while running, when the next record comes from further on
//! than the partition's next offset and from at or past a log start that is beyond it: the
//! consumer fell behind retention and its reset policy moved it over the gap
//! ([`Trimmed::gap_end`]).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use super::Processor;
use crate::checkpoint::{TopicPartition, Trimmed};
use crate::kafka;

/// How long a gap waits for the broker's log start when librdkafka has none cached.
const GAP_LOG_START_TIMEOUT: Duration = Duration::from_secs(1);

impl Processor {
    /// Counts the offsets `[from, to)` of `tp` that were gone when they were to be read, each once
    /// in this process's life (a rebuild redone after an abort, a reassignment or an in-process
    /// restart meets the same gap again), split at `replay_until`; logs what it counted.
    pub(super) fn count_trimmed(
        &mut self,
        tp: &TopicPartition,
        from: i64,
        to: i64,
        replay_until: i64,
    ) {
        let through = self.trimmed_through.get(tp).copied();
        let trimmed = Trimmed::between(from, to, replay_until, through);
        if to > through.unwrap_or(i64::MIN) {
            self.trimmed_through.insert(tp.clone(), to);
        }
        self.counts.trimmed_from_rebuilds += trimmed.from_rebuild;
        self.counts.trimmed_unread += trimmed.unread;
        if trimmed.from_rebuild > 0 {
            tracing::warn!(topic = %tp.topic, partition = tp.partition, rebuild_from = from, log_start = to.min(replay_until), missing = trimmed.from_rebuild, "the log no longer holds the start of the open windows: they are rebuilt from what is left and will be short");
        }
        if trimmed.unread > 0 {
            tracing::error!(topic = %tp.topic, partition = tp.partition, expected = from.max(replay_until), next = to, unread = trimmed.unread, "the log was trimmed (retention, deleted records) past where processing was to read: records deleted before anyone read them are missing from the results; processing goes on from the log's start");
        }
    }

    /// [`Self::count_trimmed`] for the deleted part of a gap ([`Trimmed::gap_end`]): the record at
    /// `offset` of `topic`'s `partition` comes from further on than its `expected` next offset.
    /// The log start is librdkafka's from its last fetch response, asked of the broker if that
    /// response carried none (an error response stores -1). Cold: gaps are transaction markers.
    #[cold]
    pub(super) fn count_gap<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        (topic, partition): (&str, i32),
        expected: i64,
        offset: i64,
        replay_until: i64,
    ) {
        let log_start = kafka::admin::cached_log_start(consumer, topic, partition).or_else(|| {
            consumer
                .fetch_watermarks(topic, partition, GAP_LOG_START_TIMEOUT)
                .ok()
                .map(|(low, _)| low)
        });
        if let Some(end) = log_start.and_then(|start| Trimmed::gap_end(expected, offset, start)) {
            let tp = TopicPartition {
                topic: topic.to_owned(),
                partition,
            };
            self.count_trimmed(&tp, expected, end, replay_until);
        }
    }

    /// A partition whose offsets start over (its topic created anew, its log truncated, its group
    /// offset reset): what was counted for its old offsets says nothing about the new ones. (The
    /// per-record path, which holds a partition's state, removes the mark itself.)
    pub(super) fn forget_trimmed(&mut self, tp: &TopicPartition) {
        self.trimmed_through.remove(tp);
    }

    /// What was counted as trimmed, per partition: the end of the last gap. An in-process restart
    /// carries it to the next run's processor ([`Self::remembering_trimmed`]).
    pub(crate) fn trimmed_through(&self) -> &std::collections::HashMap<TopicPartition, i64> {
        &self.trimmed_through
    }

    /// Starts from what an earlier run of this process counted as trimmed.
    pub(crate) fn remembering_trimmed(
        mut self,
        through: std::collections::HashMap<TopicPartition, i64>,
    ) -> Self {
        self.trimmed_through = through;
        self
    }
}

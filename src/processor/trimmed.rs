//! Input the log no longer held when it was to be read (retention, deleted records): counted once
//! per offset and logged, never skipped silently. Met in two places: a rebuild whose start the log
//! no longer holds (seen at assignment, from the log start), and a position below the log start
//! (seen when the next record comes from further on than the partition's next offset, while
//! librdkafka's last fetch response puts the log start past that offset: its reset policy moved the
//! consumer over the gap) — after a resume, or while running behind retention.

use rdkafka::consumer::{BaseConsumer, ConsumerContext};

use super::Processor;
use crate::checkpoint::{TopicPartition, Trimmed};
use crate::kafka;

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

    /// [`Self::count_trimmed`] for a record at `offset` of `tp` that comes from further on than the
    /// partition's `expected` next offset, if the log start librdkafka last saw is past `expected`
    /// (a gap of transaction markers or compacted records is not a loss).
    pub(super) fn count_gap<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tp: &TopicPartition,
        expected: i64,
        offset: i64,
        replay_until: i64,
    ) {
        let log_start = kafka::admin::cached_log_start(consumer, &tp.topic, tp.partition);
        if log_start.is_some_and(|start| start > expected) {
            self.count_trimmed(tp, expected, offset, replay_until);
        }
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

//! The processor's checkpoint under either guarantee, and what happens after an error: recovery
//! from an abortable transaction error (abort, rewind, redo) or failing for good, after which it
//! never checkpoints again. The protocol is described in [`super`]'s module doc.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use super::assignment::{probe_partition_counts, ProbedCounts};
use super::*;
use crate::checkpoint::EarlierCounts;
use crate::kafka::context::{ConnectionAware, ServedClient};

/// How long a checkpoint waits for the input topics' partition counts: it holds up the poll loop
/// (while the checkpoint flushes its outputs, or prepares its transaction), and an unanswered
/// probe only leaves the counts as they were.
const COUNT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Processor {
    /// After a processing or checkpoint error: under exactly-once, an abortable transaction error
    /// aborts the transaction and redoes the work since the last checkpoint ([`Processor::rewind`]);
    /// anything else (or too many aborts in a row) fails the instance, which then never
    /// checkpoints again.
    pub(crate) fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        error: PipelineError,
    ) -> Result<(), PipelineError> {
        let abortable = self.settings.guarantee == Guarantee::ExactlyOnce
            && match &error {
                PipelineError::Produce(e) => {
                    e.transaction_kind() == Some(TransactionErrorKind::Abortable)
                }
                PipelineError::PartitionsAdded => true,
                _ => false,
            };
        if !abortable {
            return Err(self.fail(error));
        }
        if self.consecutive_aborts >= MAX_CONSECUTIVE_ABORTS {
            let error = PipelineError::TooManyAborts(self.consecutive_aborts, Box::new(error));
            return Err(self.fail(error));
        }
        tracing::warn!(%error, "aborting the transaction; redoing the work since the last checkpoint");
        self.consecutive_aborts += 1;
        // A problem that is still there when the work is redone is met again: back off a little.
        std::thread::sleep(
            Duration::from_millis(50 << self.consecutive_aborts.min(6)).min(Duration::from_secs(2)),
        );
        let rewound = self
            .sink
            .abort_transaction()
            .map_err(PipelineError::from)
            .and_then(|()| {
                self.counts.aborts += 1;
                self.results_waiting = None;
                self.inputs.rewound();
                self.rewind(consumer)
            });
        rewound.map_err(|error| self.fail(error))
    }

    /// Marks the instance failed (nothing is checkpointed from now on) and, under exactly-once,
    /// aborts the open transaction so read_committed consumers are not held up by it. Returns
    /// `error`, classified once, at the first failure ([`PipelineError::expired_if_fenced`]); when
    /// `error` would start the pipeline again but the abort meets a fence, the fence decides
    /// instead (classified by the transaction's age when it was met).
    pub(crate) fn fail(&mut self, error: PipelineError) -> PipelineError {
        if self.failed {
            return error;
        }
        self.failed = true;
        // Nothing more is committed: not even a checkpoint that waits for the committer thread.
        self.group_commits.discard_waiting();
        let timeout = self.settings.transaction_timeout;
        let error = error.expired_if_fenced(self.sink.open_transaction_age(), timeout);
        if self.settings.guarantee != Guarantee::ExactlyOnce {
            return error;
        }
        match self.sink.abort_transaction() {
            Ok(()) => error,
            Err(abort) => {
                tracing::warn!(%error, %abort, "aborting the open transaction after the error failed too; the next run aborts it");
                let abort = PipelineError::from(abort);
                if abort.is_fenced() && error.is_transient() {
                    abort.expired_if_fenced(self.sink.open_transaction_age(), timeout)
                } else {
                    error
                }
            }
        }
    }

    /// Checkpoints every owned partition that processed records since its last checkpoint, unless
    /// the instance has failed.
    ///
    /// at-least-once: flush outputs → write state + offsets to RocksDB in one batch → commit offsets
    /// to the group (advisory). exactly-once: commit outputs and offsets in one Kafka transaction →
    /// then write RocksDB; if the transaction must be aborted, everything since the last checkpoint is
    /// redone from there ([`Processor::rewind`]).
    pub(crate) fn checkpoint<C: ConsumerContext + ConnectionAware>(
        &mut self,
        consumer: &BaseConsumer<C>,
        group_commit: GroupCommit,
    ) -> Result<Checkpointed, PipelineError> {
        if self.failed {
            return Ok(Checkpointed::Nothing);
        }
        match self.write_checkpoint(consumer, group_commit) {
            Ok(checkpointed) => {
                if checkpointed == Checkpointed::Committed {
                    self.consecutive_aborts = 0;
                    self.inputs.checkpointed();
                }
                Ok(checkpointed)
            }
            Err(error) => self
                .recover(consumer, error)
                .map(|()| Checkpointed::Aborted),
        }
    }

    /// The work of [`Processor::checkpoint`]. Partitions still replaying to rebuild their windows
    /// are left out: their group commit stays where the rebuild started from (committing the replay
    /// position would move it back, and a later owner would forward the replayed records again).
    fn write_checkpoint<C: ConsumerContext + ConnectionAware>(
        &mut self,
        consumer: &BaseConsumer<C>,
        group_commit: GroupCommit,
    ) -> Result<Checkpointed, PipelineError> {
        // Partitions whose group commit failed, or waits for the committer thread when this
        // checkpoint commits itself, are committed (again) by this one, from their current state.
        let (again, commit_to_group) = match group_commit {
            GroupCommit::Background => (self.group_commits.take_failed(), true),
            GroupCommit::Wait => match self.group_commits.settle(self.settings.kafka.timeout) {
                Ok(taken) => (taken, true),
                Err(unsettled) => {
                    tracing::warn!(%unsettled, "not committing this checkpoint's offsets to the group: whoever takes its partitions over starts from an earlier commit (under at-least-once, emitting windows again)");
                    (unsettled.taken, false)
                }
            },
        };
        for offsets in &again {
            self.mark_changed(offsets);
        }
        let results = self.results_waiting.take().is_some();
        let mut updates = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for (topic, parts) in &mut self.partitions {
            for (&partition, state) in parts.iter_mut() {
                let Some(next_offset) = state.checkpoint_offset() else {
                    continue;
                };
                let stream_time = state.windows.stream_time();
                let metadata = CommitMetadata {
                    stream_time,
                    rebuild_offset: state.windows.rebuild_offset().unwrap_or(next_offset),
                    semantics: Some(self.semantics),
                    generation: state.generation,
                    reset: false,
                    earlier_counts: EarlierCounts::of(self.inputs.earlier(topic))
                        .unwrap_or_default(),
                };
                let mut element = offsets.add_partition(topic, partition);
                element
                    .set_offset(Offset::Offset(next_offset))
                    .map_err(PipelineError::Consumer)?;
                element.set_metadata(metadata.encode());
                updates.push(PartitionUpdate {
                    partition: TopicPartition {
                        topic: topic.clone(),
                        partition,
                    },
                    checkpoint: PartitionCheckpoint {
                        next_offset,
                        stream_time,
                        generation: state.generation,
                    },
                    levels: level_updates(&mut state.windows),
                });
                state.changed = false;
            }
        }
        if updates.is_empty() {
            return Ok(Checkpointed::Nothing);
        }
        let started = Instant::now();
        // Results are about to be committed: an increase of the input's partitions is learnt now,
        // not only at the next rebalance (librdkafka sees it within its metadata refresh). The
        // probe starts after every result of this checkpoint was emitted, on a thread of its own
        // through the consumer's client, while the outputs are flushed or the transaction is
        // prepared: under exactly-once its answer is in before anything is committed.
        let probe = results || !self.inputs.knows_all(&self.settings.input_topics);
        let counts_client = Consumer::client(consumer);
        match self.settings.guarantee {
            Guarantee::AtLeastOnce => {
                // Outputs first: state must never claim offsets whose windows were not delivered.
                let flush_timeout = self.settings.kafka.timeout.max(Duration::from_secs(60));
                let (flushed, probed) = while_probing(counts_client, &self.settings, probe, || {
                    self.sink.flush(flush_timeout)
                });
                if let Some(probed) = probed {
                    self.learn_probed_counts(probed);
                }
                flushed?;
                self.store.write(&updates)?;
                // The group commit is advisory (RocksDB is the truth for this instance); a failed
                // commit only means a new owner rebuilds from an older point, and its partitions
                // are committed again at the next checkpoint.
                match group_commit {
                    GroupCommit::Background => self.group_commits.in_background(offsets),
                    GroupCommit::Wait if commit_to_group => {
                        if let Err(error) = self.group_commits.wait(consumer, &self.store, &offsets)
                        {
                            tracing::warn!(%error, "retrying at the next checkpoint");
                            self.mark_changed(&offsets);
                        }
                    }
                    GroupCommit::Wait => self.mark_changed(&offsets),
                }
            }
            Guarantee::ExactlyOnce => {
                let group = consumer
                    .group_metadata()
                    .ok_or(PipelineError::NoGroupMetadata)?;
                // Retrying past the transaction timeout is pointless: the coordinator aborts it.
                let patience = self.settings.transaction_timeout;
                let (prepared, probed) =
                    while_probing(counts_client, &self.settings, probe, || {
                        self.sink.prepare_commit(&offsets, &group, patience)
                    });
                let added = probed.is_some_and(|probed| self.learn_probed_counts(probed));
                let prepared = prepared?;
                if added {
                    // Partitions were added and producers may have moved sources already: abort,
                    // and redo the work with the new count, so the results it split are marked.
                    return Err(PipelineError::PartitionsAdded);
                }
                self.sink.commit_prepared(prepared)?;
                self.store.write(&updates)?;
            }
        }
        self.counts.checkpoints += 1;
        self.checkpoint_duration
            .record(started.elapsed().as_secs_f64());
        Ok(Checkpointed::Committed)
    }

    /// The results emitted since the last checkpoint, if any: how long they have waited for it,
    /// whether every owned partition has closed the same window ends, and how long before the wall
    /// clock the newest of them closed.
    pub(crate) fn waiting_results(&self) -> Option<WaitingResults> {
        let pending = self.results_waiting.as_ref()?;
        let stream_times = self
            .partitions
            .values()
            .flat_map(|parts| parts.values())
            .map(|state| state.windows.stream_time());
        let closed_before_now = crate::producer::now_ms().saturating_sub(pending.closes_at);
        Some(WaitingResults {
            waited: pending.since.elapsed(),
            close_complete: close_complete(pending.closes_at, stream_times),
            closed_before_now: Duration::from_millis(u64::try_from(closed_before_now).unwrap_or(0)),
        })
    }

    /// Marks `offsets`' partitions (those still owned) to be checkpointed and committed at the next
    /// checkpoint, even if they process nothing until then.
    fn mark_changed(&mut self, offsets: &TopicPartitionList) {
        for element in offsets.elements() {
            if let Some(state) = self
                .partitions
                .get_mut(element.topic())
                .and_then(|p| p.get_mut(&element.partition()))
            {
                state.changed = true;
            }
        }
    }
}

/// Results emitted since the last checkpoint, as the poll loop's early commit sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitingResults {
    /// Since the first of them was emitted.
    pub waited: Duration,
    /// Whether every owned partition has closed the same window ends ([`close_complete`]).
    pub close_complete: bool,
    /// How long before the wall clock the newest of them closed (zero if not yet by it: producers'
    /// clocks ahead).
    pub closed_before_now: Duration,
}

/// Whether every partition, at `stream_times`, has closed the windows that close at `closes_at`
/// (window end + grace): a partition closes what is due after every record, so one whose stream
/// time has reached it has. A partition that has seen no valid record has no stream time, and has
/// not.
fn close_complete(closes_at: i64, mut stream_times: impl Iterator<Item = Option<i64>>) -> bool {
    stream_times.all(|time| time >= Some(closes_at))
}

/// Runs `work` on this thread while, if `probe`, another asks the cluster through `kafka` for the
/// input topics' partition counts ([`probe_partition_counts`]); returns both when both are done.
/// If no thread can be started, the probe runs here first, as it did before it had a thread.
fn while_probing<K: ServedClient + Sync, T>(
    kafka: &K,
    settings: &RunSettings,
    probe: bool,
    work: impl FnOnce() -> T,
) -> (T, Option<ProbedCounts>) {
    let ask = || {
        probe_partition_counts(
            kafka,
            &settings.kafka,
            &settings.input_topics,
            COUNT_PROBE_TIMEOUT,
        )
    };
    if !probe {
        return (work(), None);
    }
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("count-probe".into())
            .spawn_scoped(scope, ask)
        {
            Ok(probing) => {
                let done = work();
                let probed = probing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (done, Some(probed))
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread for the partition-count probe: probing on the poll loop");
                let probed = ask();
                (work(), Some(probed))
            }
        }
    })
}

/// How an at-least-once checkpoint commits its offsets to the group (exactly-once commits them in
/// its transaction); see [`GroupCommits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupCommit {
    /// Waits for the coordinator's answer: before partitions are handed over, a reset is
    /// committed, or the instance stops, so that whoever starts next starts from this checkpoint.
    Wait,
    /// Hands the offsets to the committer thread and goes on: the periodic checkpoint, which must
    /// not hold up the poll loop for a round trip to the coordinator.
    Background,
}

/// What a checkpoint writes of each window size of a partition: its closed windows' bound and its
/// changed windows (clearing their dirty flags).
fn level_updates(windows: &mut PartitionWindows) -> Vec<LevelUpdate> {
    let sizes: Vec<i64> = windows.specs().map(|spec| spec.size_ms).collect();
    let closed_before = windows.open_from();
    sizes
        .into_iter()
        .zip(closed_before)
        .zip(windows.take_dirty())
        .map(|((size_ms, closed_before), changed)| LevelUpdate {
            size_ms,
            closed_before,
            changed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_is_complete_once_every_partition_reached_its_close_time() {
        #[rustfmt::skip]
        let cases = [
            ("every partition past it", vec![Some(61_000), Some(61_004), Some(61_002)], true),
            ("a partition just short of it", vec![Some(61_000), Some(60_999)], false),
            ("a partition that has seen no valid record", vec![Some(61_000), None], false),
            ("a partition far behind, catching up", vec![Some(61_000), Some(2_000)], false),
            ("no partition left (all revoked)", vec![], true),
        ];
        for (name, stream_times, expected) in cases {
            assert_eq!(
                close_complete(61_000, stream_times.into_iter()),
                expected,
                "{name}"
            );
        }
    }
}

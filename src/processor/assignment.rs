//! Where newly assigned partitions resume (local state, rebuild from the group commit, fresh, or
//! reset when the log went back), how an abort rewinds them, and what a revoke checkpoints.
//!
//! - **Assign**: for each new partition, load its local checkpoint and fetch the group's committed offset;
//!   `plan_resume` picks: *local* (local state is not behind the group: load it, seek to its
//!   `next_offset`), *rebuild* (no or stale local state: seek to the committed rebuild offset and replay to
//!   the committed offset with stream time pinned at the committed value — windows open at the commit are
//!   rebuilt exactly, nothing is re-emitted or re-forwarded), *committed-only* (a commit without our
//!   metadata), *replay* (the group's offset was reset, by `streamagg reset` or Kafka's own tool: local
//!   state is dropped and the partition processed again from the committed offset, emitting its windows
//!   again), or *fresh* (`auto.offset.reset`, default earliest). Each continues the generation of the
//!   state or commit it resumes from, or begins a new one. The offsets are set in the assignment list
//!   before `incremental_assign`, so no record is fetched from the wrong place.
//! - **Revoke / stop**: checkpoint the affected partitions with a synchronous commit, drop their state,
//!   then release them (`incremental_unassign`) or leave the group. A last assignment that arrives while
//!   the consumer is leaving is accepted without restoring state: nothing is read from it any more.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use super::{GroupCommit, PartitionState, PipelineError, Processor};
use crate::checkpoint::TopicPartition;
use crate::checkpoint::{plan_resume, CommitMetadata, Generation, GroupReset, ResumePlan};
use crate::config::cluster::KafkaSettings;
use crate::config::Guarantee;
use crate::kafka::context::{ConnectionAware, ServedClient};
use crate::kafka::{self, Backoff, KafkaSetupError};
use crate::store::db::Recorded;

impl Processor {
    /// Sets up state for `partitions` (replacing any) from the local store, the group's committed
    /// offsets and the partitions' log ends, and returns where each must be read from (`None`: where
    /// `auto.offset.reset` says).
    fn resume<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &TopicPartitionList,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, PipelineError> {
        // Asked inside a rebalance, while the group coordinator may itself be moving: failures are
        // retried, like every other step that talks to the cluster. An error on one partition (e.g.
        // offsets still pending in a transaction) is never read as "no commit".
        let timeout = self.settings.kafka.timeout;
        let mut backoff = Backoff::new(timeout.max(Duration::from_secs(60)));
        let committed = loop {
            let answer = consumer
                .committed_offsets(partitions.clone(), timeout)
                .and_then(|committed| match first_partition_error(&committed) {
                    Some(error) => Err(error),
                    None => Ok(committed),
                });
            match answer {
                Ok(committed) => break committed,
                Err(error @ KafkaError::OffsetFetch(_)) if backoff.wait(&error) => {}
                Err(error) if kafka::is_transient(&error) && backoff.wait(&error) => {}
                Err(error) => return Err(PipelineError::Consumer(error)),
            }
        };
        let mut positions = Vec::new();
        for element in partitions.elements() {
            let tp = TopicPartition {
                topic: element.topic().to_owned(),
                partition: element.partition(),
            };
            let group = committed
                .find_partition(&tp.topic, tp.partition)
                .and_then(|c| match c.offset() {
                    Offset::Offset(offset) => Some((offset, self.ours(&tp, offset, c.metadata()))),
                    _ => None,
                });
            if let Some(Some(meta)) = group.map(|(_, meta)| meta) {
                // The committer's knowledge of earlier partition counts (a state dir of its own).
                self.inputs
                    .learn_earlier(&tp.topic, &meta.earlier_counts.as_vec());
            }
            if let Some(committed) = group.and_then(|(_, meta)| meta?.semantics) {
                if committed != self.semantics {
                    return Err(PipelineError::SettingsChanged {
                        what: format!(
                            "the offset group '{}' committed for {}[{}]",
                            self.settings.group, tp.topic, tp.partition
                        ),
                        differences: committed.differences(&self.semantics),
                    });
                }
            }
            // Unknown (a partition without a leader just now) is not an error: the check of a
            // checkpoint past the log end is skipped, and records below the checkpoint still reset
            // the partition when they arrive.
            let (log_start, log_end) = match consumer.fetch_watermarks(
                &tp.topic,
                tp.partition,
                timeout,
            ) {
                Ok((start, end)) => (Some(start), Some(end)),
                Err(error) => {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, %error, "the partition's log end is unknown; not checking the checkpoint against it");
                    (None, None)
                }
            };
            let local = self.store.load(&tp, self.settings.window.size_ms)?;
            let plan = plan_resume(
                local.as_ref().map(|(checkpoint, _)| *checkpoint),
                group,
                log_end,
            );
            if let (ResumePlan::Local { from, .. }, Some((offset, _))) = (plan, group) {
                if offset < from && self.settings.guarantee == Guarantee::ExactlyOnce {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, committed = offset, local = from, "the group's streamagg commit is behind this instance's state (written under at-least-once?): continuing from the state; to process again, use `streamagg reset`");
                }
            }
            let empty = super::new_windows(&self.settings);
            let forget_local = match plan {
                ResumePlan::Rebuild { forget_local, .. }
                | ResumePlan::CommittedOnly { forget_local, .. }
                | ResumePlan::Replay { forget_local, .. } => forget_local,
                ResumePlan::Reset { .. } => local.is_some(),
                ResumePlan::Local { .. } | ResumePlan::Fresh => false,
            };
            if forget_local {
                self.store.forget(&tp)?;
            }
            // A start from a foreign commit (a reset with Kafka's own tool) or from a log that went
            // back begins a new generation, so that state other instances kept from before it is
            // never continued. A start from nothing at all stays in generation 0: what every
            // version writes (the `streamagg/2` commit, the version-1 store record), so a rollback
            // or a group of mixed versions reads it as its own.
            let generation = plan.generation().unwrap_or_else(|| match plan {
                ResumePlan::Fresh => Generation::default(),
                _ => {
                    let seen = local.as_ref().map(|(c, _)| c.generation);
                    let committed = group.and_then(|(_, meta)| meta).map(|m| m.generation);
                    Generation::new_after(
                        crate::producer::now_ms(),
                        seen.into_iter().chain(committed),
                    )
                }
            });
            // (windows, offset to read from, offset below which records are a replay)
            let (windows, from, replay_until) = match plan {
                ResumePlan::Local { from, .. } => {
                    let (stream_time, stored) =
                        local.map(|(c, w)| (c.stream_time, w)).unwrap_or_default();
                    let (windows, unknown) = empty.restored(stream_time, stored);
                    if unknown > 0 {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, unknown, "the state dir holds windows of a size these settings do not have: they are dropped");
                    }
                    (windows, Some(from), from)
                }
                ResumePlan::Rebuild {
                    from,
                    replay_until,
                    stream_time,
                    ..
                } => (empty.restored(stream_time, []).0, Some(from), replay_until),
                ResumePlan::CommittedOnly { from, .. } => {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, "group offset has no streamagg metadata: open windows start empty");
                    (empty, Some(from), from)
                }
                ResumePlan::Replay { from, by, .. } => {
                    let local = local.as_ref().map(|(c, _)| c.next_offset);
                    match by {
                        GroupReset::Streamagg { generation } => {
                            tracing::warn!(topic = %tp.topic, partition = tp.partition, from, ?local, %generation, "the group was reset by `streamagg reset`: local state is obsolete and dropped; processing again from the reset offset with empty state (its windows are emitted again)")
                        }
                        GroupReset::Foreign => {
                            tracing::warn!(topic = %tp.topic, partition = tp.partition, from, ?local, "the group's offset is behind this instance's state and was not committed by streamagg (reset with kafka-consumer-groups?): local state is dropped; processing again from the committed offset with empty state (its windows are emitted again)")
                        }
                    }
                    self.counts.group_resets += 1;
                    self.forget_trimmed(&tp);
                    (empty, Some(from), from)
                }
                ResumePlan::Reset {
                    checkpointed,
                    log_end,
                } => {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, checkpointed, log_end, "the partition's log ends before its checkpoint (topic recreated or log truncated): its state is reset and it is processed from its beginning");
                    self.counts.resets += 1;
                    // A topic created anew: its partition count is no increase of the old one's.
                    self.inputs.forget(&tp.topic);
                    self.forget_trimmed(&tp);
                    let start = log_start.unwrap_or(0);
                    (empty, Some(start), start)
                }
                ResumePlan::Fresh => (empty, None, 0),
            };
            // Retention (or deleted records) took what the plan was to read first: a rebuild
            // rebuilds what is left, and anything past the commit was never read. Read from the
            // log's start (not wherever the reset policy would move the consumer: `latest` would
            // skip what is left too), counting what is gone.
            let from = match (from, log_start) {
                (Some(from), Some(start)) if start > from => {
                    self.count_trimmed(&tp, from, start, replay_until);
                    Some(start)
                }
                (from, _) => from,
            };
            tracing::info!(topic = %tp.topic, partition = tp.partition, resume = plan.kind(), ?plan, %generation, "assigned");
            let state = PartitionState {
                replay_until,
                ..PartitionState::empty(windows, from, generation)
            };
            self.partitions
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, state);
            positions.push((tp, from));
        }
        Ok(positions)
    }

    /// Prepares newly assigned partitions and sets the offsets they resume from in `assignment`.
    pub(crate) fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        assignment: &mut TopicPartitionList,
    ) -> Result<(), PipelineError> {
        for (tp, from) in self.resume(consumer, assignment)? {
            if let Some(from) = from {
                assignment
                    .set_partition_offset(&tp.topic, tp.partition, Offset::Offset(from))
                    .map_err(PipelineError::Consumer)?;
            }
        }
        self.learn_partition_counts(self.settings.kafka.timeout);
        self.assigned_once = true;
        Ok(())
    }

    /// Asks the cluster for the input topics' partition counts through the sink's client and learns
    /// from the answer ([`Processor::learn_probed_counts`]). Returns whether partitions were added.
    pub(super) fn learn_partition_counts(&mut self, timeout: Duration) -> bool {
        let probed = probe_partition_counts(
            self.sink.client(),
            &self.settings.kafka,
            &self.settings.input_topics,
            timeout,
        );
        self.learn_probed_counts(probed)
    }

    /// Learns from the input topics' partition counts as the cluster gave them (a rebalance follows
    /// every change librdkafka sees; a checkpoint with results also asks): an increase is logged
    /// and counted, and from now on windows of sources that moved are marked as possibly split
    /// ([`super::split`]). The counts are recorded in the store, so a restart knows of an increase
    /// while it was down. Returns whether partitions were added. A failure to ask is logged, not
    /// fatal: the counts stay as they were, and results whose source is not at home under them
    /// are still marked.
    pub(super) fn learn_probed_counts(&mut self, probed: ProbedCounts) -> bool {
        let recorded = self.inputs.encode();
        let mut added = false;
        for (topic, answer) in probed.0 {
            let topic = &topic;
            let count = match answer {
                Ok(Some(count)) => count,
                Ok(None) => {
                    // Deleted: one created again under its name starts anew (no increase).
                    self.inputs.forget(topic);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(topic, %error, "cannot learn the input topic's partition count now");
                    continue;
                }
            };
            if let Some(before) = self.inputs.update(topic, count) {
                if self.created_anew(topic) {
                    // Not an increase: a new topic under the old name (its partitions are reset
                    // as their records come in). Its count is the first one seen.
                    tracing::info!(
                        topic,
                        partitions = count,
                        "the input topic was created anew"
                    );
                    self.inputs.forget(topic);
                    self.inputs.update(topic, count);
                    continue;
                }
                added = true;
                // The next checkpoint commits every owned partition again, its metadata now with
                // the earlier counts (`pc=`): whoever takes one over learns of the increase.
                for state in self
                    .partitions
                    .get_mut(topic.as_str())
                    .into_iter()
                    .flat_map(|p| p.values_mut())
                {
                    state.changed |= state.next_offset.is_some();
                }
                tracing::warn!(
                    topic,
                    before,
                    now = count,
                    partitioner = ?self.settings.input_partitioner,
                    "partitions were added to an input topic: sources whose key hashes to another partition now move there, and their windows around the change are emitted in two parts (one from each partition, marked with the header {}); see the README's \"Adding input partitions\"",
                    crate::sink::HEADER_POSSIBLY_SPLIT
                );
                metrics::counter!(crate::telemetry::metric::INPUT_PARTITIONS_ADDED, "topic" => topic.clone())
                    .increment((count - before) as u64);
            }
        }
        let now = self.inputs.encode();
        if now != recorded {
            if let Err(error) = self.store.record(Recorded::PartitionCounts, &now) {
                tracing::warn!(%error, "cannot record the input topics' partition counts");
            }
        }
        added
    }

    /// Whether `topic` was deleted and created again since this instance read it: the log of a
    /// partition it owns now ends before the offset it has processed up to. (The deletion itself
    /// may fall between two metadata refreshes, so that the new topic looks like the old one with
    /// more partitions.) Asked only when the count went up.
    fn created_anew(&self, topic: &str) -> bool {
        let Some(parts) = self.partitions.get(topic) else {
            return false;
        };
        parts.iter().any(|(&partition, state)| {
            let high = rdkafka::producer::Producer::client(self.sink.client()).fetch_watermarks(
                topic,
                partition,
                self.settings.kafka.timeout,
            );
            matches!((state.next_offset, high), (Some(next), Ok((_, high))) if high < next)
        })
    }

    /// After an aborted transaction: every owned partition goes back to its last checkpoint (state
    /// reloaded, consumer seeked), as if the work since then had never happened. A partition that
    /// had no checkpoint goes back to the first record it processed (not to the beginning, nor to
    /// the end: `auto.offset.reset` chose where it started, and that is where it starts again).
    /// The streamagg metadata of a group commit at `committed`, unless it is foreign: not
    /// streamagg's form, or implausible for that commit (then logged): either way, resuming then
    /// starts at the committed offset with empty state.
    fn ours(&self, tp: &TopicPartition, committed: i64, text: &str) -> Option<CommitMetadata> {
        let metadata = CommitMetadata::parse(text)?;
        match metadata.implausible(committed, &self.settings.window) {
            None => Some(metadata),
            Some(reason) => {
                tracing::warn!(
                    topic = %tp.topic,
                    partition = tp.partition,
                    committed,
                    %reason,
                    "the group commit carries metadata streamagg did not write: ignoring it, \
                     continuing from the committed offset with empty state"
                );
                None
            }
        }
    }

    pub(super) fn rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        let mut owned = TopicPartitionList::new();
        let mut started_fresh_at = HashMap::new();
        for (topic, parts) in &self.partitions {
            for (&partition, state) in parts {
                owned.add_partition(topic, partition);
                started_fresh_at.insert((topic.clone(), partition), state.started_fresh_at);
            }
        }
        for (tp, from) in self.resume(consumer, &owned)? {
            let from = from.or_else(|| {
                started_fresh_at
                    .get(&(tp.topic.clone(), tp.partition))
                    .copied()
                    .flatten()
            });
            // `None`: nothing was processed since the partition started fresh; it has not moved.
            if let Some(from) = from {
                consumer
                    .seek(
                        &tp.topic,
                        tp.partition,
                        Offset::Offset(from),
                        self.settings.kafka.timeout,
                    )
                    .map_err(PipelineError::Consumer)?;
            }
        }
        Ok(())
    }

    /// Checkpoints everything (unless the instance has failed), then drops the state of revoked
    /// partitions.
    pub(crate) fn revoke<C: ConsumerContext + ConnectionAware>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) -> Result<(), PipelineError> {
        // Under exactly-once the open transaction spans all partitions, so all are checkpointed.
        let result = self.checkpoint(consumer, GroupCommit::Wait).map(|_| ());
        for element in revoked.elements() {
            if let Some(parts) = self.partitions.get_mut(element.topic()) {
                parts.remove(&element.partition());
            }
            tracing::info!(
                topic = element.topic(),
                partition = element.partition(),
                "revoked"
            );
        }
        result
    }
}

/// The first per-partition error in an offset-fetch answer.
fn first_partition_error(committed: &TopicPartitionList) -> Option<KafkaError> {
    committed.elements().iter().find_map(|e| e.error().err())
}

/// The input topics' partition counts as the cluster answered, topic by topic: `Ok(None)` for one
/// it does not have.
#[derive(Debug)]
pub(super) struct ProbedCounts(Vec<(String, Result<Option<usize>, KafkaSetupError>)>);

/// Asks the cluster, through `kafka`, for the partition count of each of `topics`, waiting at most
/// `timeout` for each. Only asks: [`Processor::learn_probed_counts`] learns from the answer, so a
/// checkpoint may ask on another thread while it prepares its commit.
pub(super) fn probe_partition_counts<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topics: &[String],
    timeout: Duration,
) -> ProbedCounts {
    ProbedCounts(
        topics
            .iter()
            .map(|topic| {
                let answer = kafka::admin::partition_count_within(kafka, settings, topic, timeout);
                (topic.clone(), answer)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaRespErr;

    #[test]
    fn a_per_partition_offset_fetch_error_is_an_error_not_an_absent_commit() {
        let mut answer = TopicPartitionList::new();
        answer
            .add_partition_offset("t", 0, Offset::Offset(5))
            .expect("offset");
        assert!(first_partition_error(&answer).is_none());
        answer.add_partition("t", 1);
        // What librdkafka's OffsetFetch answer holds when the group has transactional offsets
        // pending for the partition (KIP-447): an error on the element, offset invalid.
        // SAFETY: the list holds two elements, and only the second's error code is written.
        unsafe {
            (*(*answer.ptr()).elems.add(1)).err =
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNSTABLE_OFFSET_COMMIT;
        }
        let error = first_partition_error(&answer).expect("the error is seen");
        assert!(error.to_string().contains("nstable"), "{error}");
    }
}

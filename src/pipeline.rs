//! `streamagg run`: the consumer-group loop wiring source → decode → window → state/checkpoint → sink.
//!
//! One thread owns a `BaseConsumer` and polls it; the [`Processor`] (open windows, state store, sink)
//! lives in the consumer's context behind a mutex, so librdkafka's rebalance callback — which runs
//! inside `poll` on the same thread — can checkpoint revoked partitions before they are released and
//! set the resume offsets of assigned ones before they are fetched. Every `checkpoint_interval` (and,
//! under exactly-once, early once caught up and windows have closed) the loop checkpoints: outputs
//! are flushed, then state and the offsets it reflects are written to RocksDB in one batch, then the
//! offsets are committed to the group with rebuild metadata.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Offset;

use crate::checkpoint::{plan_resume, CommitMetadata, ResumePlan, Semantics};
use crate::codec::decode;
use crate::config::{EventTime, Guarantee, RunSettings};
use crate::kafka::{self, Backoff, ConnectionAware, KafkaSetupError, StreamaggContext};
use crate::model::TrafficEvent;
use crate::produce::{ProduceError, TransactionErrorKind};
use crate::sink::Sink;
use crate::store::{
    self, PartitionCheckpoint, PartitionUpdate, Recorded, StateStore, StoreError, TopicPartition,
};
use crate::telemetry::{self, metric, Health};
use crate::window::{ClosedWindow, Observed, PartitionWindows};

/// Why the processor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Setup(Box<KafkaSetupError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Produce(Box<ProduceError>),
    #[error("input topic '{0}' does not exist")]
    InputMissing(String),
    #[error("{what} topic '{topic}' does not exist")]
    OutputMissing { what: &'static str, topic: String },
    #[error("Kafka consumer: {0}")]
    Consumer(KafkaError),
    /// The cluster's ACLs do not let this principal do its work: never retried.
    #[error("not authorized (check the Kafka user's ACLs on {topics} and the group): {cause}")]
    NotAuthorized {
        topics: String,
        cause: Box<ProduceError>,
    },
    #[error("the consumer has no group metadata to commit a transaction with")]
    NoGroupMetadata,
    /// State or commits made under other window semantics: continuing would mix them.
    #[error("{what} was written with other settings: {differences}; to change them, start a new consumer group with an empty state dir (or delete the group and the state dir)")]
    SettingsChanged { what: String, differences: String },
    #[error("{0} transaction aborts in a row without a checkpoint in between; the last: {1}")]
    TooManyAborts(u32, Box<PipelineError>),
}

impl From<KafkaSetupError> for PipelineError {
    fn from(error: KafkaSetupError) -> Self {
        PipelineError::Setup(Box::new(error))
    }
}

impl From<ProduceError> for PipelineError {
    fn from(error: ProduceError) -> Self {
        PipelineError::Produce(Box::new(error))
    }
}

/// What happened to input records, counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub consumed: u64,
    pub aggregated: u64,
    pub late: u64,
    pub filtered: u64,
    pub invalid: u64,
    pub replayed: u64,
    pub windows_emitted: u64,
    pub checkpoints: u64,
    pub aborts: u64,
    pub resets: u64,
}

/// What a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpointed {
    /// Nothing had changed (or the instance has failed and must not checkpoint any more).
    Nothing,
    /// State and offsets were committed.
    Committed,
    /// Under exactly-once the transaction was aborted and the work since the last checkpoint is being
    /// redone.
    Aborted,
}

/// Under exactly-once, how many aborts may follow each other without a checkpoint succeeding before
/// the instance gives up (a problem that redoing the work meets every time).
const MAX_CONSECUTIVE_ABORTS: u32 = 10;

/// One owned input partition.
struct PartitionState {
    windows: PartitionWindows,
    /// The offset after the last processed record; `None` before the first record of a fresh partition.
    next_offset: Option<i64>,
    /// Records below this offset are a rebuild of state another owner already emitted from.
    replay_until: i64,
    /// Processed records since the last checkpoint.
    changed: bool,
    /// When the partition last delivered a record (for `idle_close_after`).
    last_record: Instant,
    /// For a partition started without any checkpoint: the offset of its first processed record,
    /// where an abort rewinds it to.
    started_fresh_at: Option<i64>,
}

impl PartitionState {
    /// Empty windows, reading from `from`, nothing to replay.
    fn empty(windows: PartitionWindows, from: Option<i64>) -> Self {
        PartitionState {
            windows,
            next_offset: from,
            replay_until: from.unwrap_or(0),
            changed: false,
            last_record: Instant::now(),
            started_fresh_at: None,
        }
    }

    /// Whether records below `replay_until` are still being replayed to rebuild the open windows.
    fn rebuilding(&self) -> bool {
        self.next_offset
            .is_some_and(|next| next < self.replay_until)
    }
}

/// The open windows of every owned partition, with the store and sink they checkpoint to.
pub struct Processor {
    settings: RunSettings,
    store: StateStore,
    sink: Sink,
    /// topic → partition → state (two levels so a message is looked up without allocating).
    partitions: HashMap<String, HashMap<i32, PartitionState>>,
    counts: Counts,
    health: Arc<Health>,
    /// Whether the group has handed this instance its first assignment (possibly empty).
    assigned_once: bool,
    /// Whether a record has been consumed yet (the first one is logged: start-up is over).
    consumed_once: bool,
    emit_latency: metrics::Histogram,
    checkpoint_duration: metrics::Histogram,
    /// Since when emitted results wait for a checkpoint (`None`: none emitted since the last one).
    results_waiting_since: Option<Instant>,
    /// The settings the state and commits must have been made under.
    semantics: Semantics,
    /// Set by the first processing error: from then on nothing is checkpointed, so the half-handled
    /// work is never committed (the restart redoes it from the last checkpoint).
    failed: bool,
    /// Transaction aborts since the last successful checkpoint.
    consecutive_aborts: u32,
}

/// Emits closed windows to the sink, counting them and observing their emission latency.
///
/// The latency is observed once per window start in the burst (all its sources close at the same
/// moment and share the value), not once per source: the exporter keeps every observation until the
/// next scrape, which at 1M sources was 21 MiB of the processor's peak memory.
fn emit_windows(
    sink: &mut Sink,
    counts: &mut Counts,
    emit_latency: &metrics::Histogram,
    window_size_ms: i64,
    windows: Vec<ClosedWindow>,
) -> Result<(), ProduceError> {
    if windows.is_empty() {
        return Ok(()); // the common case, once per record: no clock read
    }
    let now = crate::produce::now_ms();
    let mut observed_start = None;
    for window in windows {
        sink.emit(&window)?;
        counts.windows_emitted += 1;
        if observed_start != Some(window.window_start) {
            observed_start = Some(window.window_start);
            let window_end = window.window_start.saturating_add(window_size_ms);
            emit_latency.record(now.saturating_sub(window_end) as f64 / 1000.0);
        }
    }
    Ok(())
}

/// Notes that results were just emitted, if they were: the first since the last checkpoint starts the
/// wait [`Processor::results_waited`] measures.
fn note_results(waiting_since: &mut Option<Instant>, emitted: bool) {
    if emitted && waiting_since.is_none() {
        *waiting_since = Some(Instant::now());
    }
}

impl Processor {
    /// Processes one input record.
    fn handle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        if self.failed {
            return Ok(()); // the loop is stopping: nothing more is processed or committed
        }
        let resets = self.counts.resets;
        self.process(message)
            .or_else(|error| self.recover(consumer, error))?;
        if self.counts.resets > resets {
            // Commit the reset at once: until then the group's commit still describes the old log,
            // and a restart would rebuild from it.
            self.checkpoint(consumer)?;
        }
        Ok(())
    }

    /// The per-record work of [`Processor::handle`].
    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        let (topic, partition) = (message.topic(), message.partition());
        let Some(state) = self
            .partitions
            .get_mut(topic)
            .and_then(|p| p.get_mut(&partition))
        else {
            return Ok(()); // fetched just before its partition was revoked: the new owner processes it
        };
        let offset = message.offset();
        if let Some(expected) = state.next_offset.filter(|&next| offset < next) {
            // librdkafka hands out a partition's records in offset order from where it was
            // positioned: an earlier offset means the log itself went back (an out-of-range reset
            // after the topic was deleted and created again, or its log truncated). The state
            // belongs to records that are gone; these are new and must be processed, not skipped.
            tracing::error!(
                topic,
                partition,
                offset,
                expected,
                "the partition's offsets went back (topic recreated or log truncated): its state is reset and it is processed again from this record"
            );
            *state = PartitionState::empty(PartitionWindows::new(self.settings.window), None);
            self.counts.resets += 1;
            self.store.forget(&TopicPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        }
        self.counts.consumed += 1;
        if !self.consumed_once {
            self.consumed_once = true;
            tracing::info!(
                first_record_ms = crate::produce::now_ms(),
                topic,
                partition,
                offset,
                "first record consumed"
            );
        }
        if state.next_offset.is_none() {
            state.started_fresh_at = Some(offset);
        }
        let replay = offset < state.replay_until;
        let event = decode::<TrafficEvent>(
            message.payload().unwrap_or_default(),
            self.settings.input_format,
        );
        let outcome = match event {
            Err(error) => Err(error.to_string()),
            Ok(event) => {
                let timestamp = match self.settings.event_time {
                    EventTime::Field => Some(event.timestamp),
                    EventTime::Kafka => message.timestamp().to_millis(),
                };
                match timestamp {
                    None => Err("record has no Kafka timestamp".to_owned()),
                    Some(_) if self.settings.min_value.is_some_and(|min| event.value < min) => {
                        Ok(None)
                    }
                    Some(timestamp) => Ok(Some(state.windows.observe(
                        &event.source,
                        timestamp,
                        event.value,
                        offset,
                    ))),
                }
            }
        };
        state.next_offset = Some(offset + 1);
        state.changed = true;
        state.last_record = Instant::now();
        if replay {
            // Side outputs and counts of these records happened when they were first processed.
            self.counts.replayed += 1;
            return Ok(());
        }
        match outcome {
            Ok(Some(Observed::Aggregated)) => self.counts.aggregated += 1,
            Ok(Some(Observed::Late { window_start })) => {
                self.counts.late += 1;
                self.sink.forward_late(message, window_start)?;
            }
            Ok(Some(Observed::OutOfRange)) => {
                self.counts.invalid += 1;
                self.sink
                    .forward_invalid(message, "timestamp out of range")?;
            }
            Ok(Some(Observed::ValueOutOfRange)) => {
                self.counts.invalid += 1;
                self.sink.forward_invalid(
                    message,
                    "value out of range: its window's sum would not be a finite number",
                )?;
            }
            Ok(None) => self.counts.filtered += 1,
            Err(reason) => {
                self.counts.invalid += 1;
                self.sink.forward_invalid(message, &reason)?;
            }
        }
        let closed = state.windows.close_due();
        let emitted = !closed.is_empty();
        emit_windows(
            &mut self.sink,
            &mut self.counts,
            &self.emit_latency,
            self.settings.window.size_ms,
            closed,
        )?;
        note_results(&mut self.results_waiting_since, emitted);
        Ok(())
    }

    /// After a processing or checkpoint error: under exactly-once, an abortable transaction error
    /// aborts the transaction and redoes the work since the last checkpoint ([`Processor::rewind`]);
    /// anything else (or too many aborts in a row) fails the instance, which then never
    /// checkpoints again.
    fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        error: PipelineError,
    ) -> Result<(), PipelineError> {
        let abortable = self.settings.guarantee == Guarantee::ExactlyOnce
            && matches!(&error, PipelineError::Produce(e)
                if e.transaction_kind() == Some(TransactionErrorKind::Abortable));
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
                self.results_waiting_since = None;
                self.rewind(consumer)
            });
        rewound.map_err(|error| self.fail(error))
    }

    /// Marks the instance failed (nothing is checkpointed from now on) and, under exactly-once,
    /// aborts the open transaction so read_committed consumers are not held up by it; returns `error`.
    fn fail(&mut self, error: PipelineError) -> PipelineError {
        if !self.failed {
            self.failed = true;
            if self.settings.guarantee == Guarantee::ExactlyOnce {
                if let Err(abort) = self.sink.abort_transaction() {
                    tracing::warn!(%abort, "aborting the open transaction after the error failed too; the restarted instance aborts it");
                }
            }
        }
        error
    }

    /// Checkpoints every owned partition that processed records since its last checkpoint, unless
    /// the instance has failed.
    ///
    /// at-least-once: flush outputs → write state + offsets to RocksDB in one batch → commit offsets
    /// to the group (advisory). exactly-once: commit outputs and offsets in one Kafka transaction →
    /// then write RocksDB; if the transaction must be aborted, everything since the last checkpoint is
    /// redone from there ([`Processor::rewind`]).
    fn checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<Checkpointed, PipelineError> {
        if self.failed {
            return Ok(Checkpointed::Nothing);
        }
        match self.write_checkpoint(consumer) {
            Ok(checkpointed) => {
                if checkpointed == Checkpointed::Committed {
                    self.consecutive_aborts = 0;
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
    fn write_checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<Checkpointed, PipelineError> {
        self.results_waiting_since = None;
        let mut updates = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for (topic, parts) in &mut self.partitions {
            for (&partition, state) in parts.iter_mut() {
                if state.rebuilding() {
                    continue;
                }
                let Some(next_offset) = state.next_offset.filter(|_| state.changed) else {
                    continue;
                };
                let stream_time = state.windows.stream_time();
                let metadata = CommitMetadata {
                    stream_time,
                    rebuild_offset: state.windows.rebuild_offset().unwrap_or(next_offset),
                    semantics: Some(self.semantics),
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
                    },
                    closed_before: state.windows.open_from(),
                    changed: state.windows.take_dirty(),
                });
                state.changed = false;
            }
        }
        if updates.is_empty() {
            return Ok(Checkpointed::Nothing);
        }
        let started = Instant::now();
        match self.settings.guarantee {
            Guarantee::AtLeastOnce => {
                // Outputs first: state must never claim offsets whose windows were not delivered.
                self.sink
                    .flush(self.settings.kafka.timeout.max(Duration::from_secs(60)))?;
                self.store.write(&updates)?;
                // The group commit is advisory (RocksDB is the truth for this instance); a failed
                // commit only means a new owner rebuilds from an older point.
                if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
                    tracing::warn!(%error, "committing offsets to the group failed; retrying at the next checkpoint");
                    self.mark_changed(&offsets);
                }
            }
            Guarantee::ExactlyOnce => {
                let group = consumer
                    .group_metadata()
                    .ok_or(PipelineError::NoGroupMetadata)?;
                // Retrying past the transaction timeout is pointless: the coordinator aborts it.
                self.sink.commit_transaction(
                    &offsets,
                    &group,
                    self.settings.transaction_timeout,
                )?;
                self.store.write(&updates)?;
            }
        }
        self.counts.checkpoints += 1;
        self.checkpoint_duration
            .record(started.elapsed().as_secs_f64());
        Ok(Checkpointed::Committed)
    }

    /// Whether results emitted since the last checkpoint have waited at least `delay` for one.
    fn results_waited(&self, delay: Duration) -> bool {
        self.results_waiting_since
            .is_some_and(|since| since.elapsed() >= delay)
    }

    /// An error with what only the processor knows added: which topics a refused write was for.
    fn explain(&self, error: PipelineError) -> PipelineError {
        match error {
            PipelineError::Produce(cause) if cause.is_not_authorized() => {
                PipelineError::NotAuthorized {
                    topics: self.sink.topics(),
                    cause,
                }
            }
            other => other,
        }
    }

    /// Publishes counts and gauges, and readiness: assigned, and no partition still replaying.
    fn publish(&self) {
        let c = &self.counts;
        for (name, value) in [
            (metric::RECORDS_CONSUMED, c.consumed),
            (metric::EVENTS_AGGREGATED, c.aggregated),
            (metric::EVENTS_LATE, c.late),
            (metric::EVENTS_FILTERED, c.filtered),
            (metric::RECORDS_INVALID, c.invalid),
            (metric::RECORDS_REPLAYED, c.replayed),
            (metric::WINDOWS_EMITTED, c.windows_emitted),
            (metric::CHECKPOINTS, c.checkpoints),
            (metric::TRANSACTION_ABORTS, c.aborts),
            (metric::PARTITION_RESETS, c.resets),
        ] {
            metrics::counter!(name).absolute(value);
        }
        let now_ms = crate::produce::now_ms();
        let (mut open, mut owned, mut replaying) = (0, 0, false);
        for (topic, parts) in &self.partitions {
            for (partition, state) in parts {
                owned += 1;
                open += state.windows.open_count();
                replaying |= state.rebuilding();
                if let Some(stream_time) = state.windows.stream_time() {
                    let labels = [
                        ("topic", topic.clone()),
                        ("partition", partition.to_string()),
                    ];
                    metrics::gauge!(metric::STREAM_TIME_SECONDS, &labels)
                        .set(stream_time as f64 / 1000.0);
                    metrics::gauge!(metric::WATERMARK_LAG_SECONDS, &labels)
                        .set(now_ms.saturating_sub(stream_time) as f64 / 1000.0);
                }
            }
        }
        metrics::gauge!(metric::OPEN_WINDOWS).set(open as f64);
        metrics::gauge!(metric::ASSIGNED_PARTITIONS).set(owned as f64);
        let stats = self.store.stats();
        metrics::gauge!(metric::STATE_KEYS).set(stats.keys as f64);
        metrics::gauge!(metric::STATE_SIZE_BYTES).set(stats.bytes as f64);
        let ready = self.assigned_once && !replaying;
        self.health.set_ready(ready);
        // Gauges set only on change would age out of the exporter: refresh them with the rest.
        metrics::gauge!(metric::READY).set(if ready { 1.0 } else { 0.0 });
        let guarantee = match self.settings.guarantee {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        };
        metrics::gauge!(metric::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "guarantee" => guarantee)
            .set(1.0);
    }

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
                    Offset::Offset(offset) => Some((offset, CommitMetadata::parse(c.metadata()))),
                    _ => None,
                });
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
            let local = self.store.load(&tp)?;
            let plan = plan_resume(
                local.as_ref().map(|(checkpoint, _)| *checkpoint),
                group,
                log_end,
            );
            if let (ResumePlan::Local { from }, Some((offset, _))) = (plan, group) {
                if offset < from && self.settings.guarantee == Guarantee::ExactlyOnce {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, committed = offset, local = from, "the group's offset is behind this instance's state (reset by hand, or expired): continuing from the state; to reprocess, use a new group with an empty state dir");
                }
            }
            let spec = self.settings.window;
            let forget_local = match plan {
                ResumePlan::Rebuild { forget_local, .. }
                | ResumePlan::CommittedOnly { forget_local, .. } => forget_local,
                ResumePlan::Reset { .. } => local.is_some(),
                ResumePlan::Local { .. } | ResumePlan::Fresh => false,
            };
            if forget_local {
                self.store.forget(&tp)?;
            }
            // (windows, offset to read from, offset below which records are a replay)
            let (windows, from, replay_until) = match plan {
                ResumePlan::Local { from } => {
                    let (stream_time, stored) =
                        local.map(|(c, w)| (c.stream_time, w)).unwrap_or_default();
                    (
                        PartitionWindows::restore(spec, stream_time, stored),
                        Some(from),
                        from,
                    )
                }
                ResumePlan::Rebuild {
                    from,
                    replay_until,
                    stream_time,
                    ..
                } => {
                    // Retention (or deleted records) took part of what the rebuild needs: rebuild
                    // what is left rather than let the reset policy move past the commit.
                    let from = match log_start.filter(|&start| start > from) {
                        Some(start) => {
                            tracing::warn!(topic = %tp.topic, partition = tp.partition, rebuild_from = from, log_start = start, "the log no longer holds the start of the open windows: they are rebuilt from what is left and will be short");
                            start.min(replay_until)
                        }
                        None => from,
                    };
                    (
                        PartitionWindows::restore(spec, stream_time, Vec::new()),
                        Some(from),
                        replay_until,
                    )
                }
                ResumePlan::CommittedOnly { from, .. } => {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, "group offset has no streamagg metadata: open windows start empty");
                    (PartitionWindows::new(spec), Some(from), from)
                }
                ResumePlan::Reset {
                    checkpointed,
                    log_end,
                } => {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, checkpointed, log_end, "the partition's log ends before its checkpoint (topic recreated or log truncated): its state is reset and it is processed from its beginning");
                    self.counts.resets += 1;
                    let start = log_start.unwrap_or(0);
                    (PartitionWindows::new(spec), Some(start), start)
                }
                ResumePlan::Fresh => (PartitionWindows::new(spec), None, 0),
            };
            tracing::info!(topic = %tp.topic, partition = tp.partition, ?plan, "assigned");
            let state = PartitionState {
                replay_until,
                ..PartitionState::empty(windows, from)
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
    fn assign<C: ConsumerContext>(
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
        self.assigned_once = true;
        Ok(())
    }

    /// After an aborted transaction: every owned partition goes back to its last checkpoint (state
    /// reloaded, consumer seeked), as if the work since then had never happened. A partition that
    /// had no checkpoint goes back to the first record it processed (not to the beginning, nor to
    /// the end: `auto.offset.reset` chose where it started, and that is where it starts again).
    fn rewind<C: ConsumerContext>(
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
    fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) -> Result<(), PipelineError> {
        // Under exactly-once the open transaction spans all partitions, so all are checkpointed.
        let result = self.checkpoint(consumer).map(|_| ());
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

    /// With `idle_close_after`: advances the stream time of partitions that received nothing for that
    /// long *and have nothing left to fetch* by the wall-clock time since their last record, and emits
    /// the windows that closes. A partition whose records are waiting (behind another partition's
    /// backlog, or behind a slow fetch) is not idle: closing it would turn on-time events into late
    /// ones.
    fn close_idle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
    ) -> Result<(), PipelineError> {
        let Some(idle_after) = self.settings.idle_close_after else {
            return Ok(());
        };
        let mut positions = None;
        for (topic, parts) in self.partitions.iter_mut() {
            for (&partition, state) in parts.iter_mut() {
                let idle = now.saturating_duration_since(state.last_record);
                let (Some(stream_time), Some(next)) =
                    (state.windows.stream_time(), state.next_offset)
                else {
                    continue;
                };
                if idle < idle_after || state.rebuilding() {
                    continue;
                }
                // librdkafka's position also steps over transaction markers, which `next` does not.
                let position = positions
                    .get_or_insert_with(|| consumer.position().ok())
                    .as_ref()
                    .and_then(|p: &TopicPartitionList| p.find_partition(topic, partition))
                    .and_then(|e| e.offset().to_raw())
                    .filter(|&o| o >= 0);
                let high_watermark = kafka::cached_high_watermark(consumer, topic, partition);
                if !nothing_left_to_fetch(next, position, high_watermark) {
                    continue;
                }
                let advanced =
                    stream_time.saturating_add(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
                state.windows.advance_stream_time(advanced);
                state.last_record = now;
                let closed = state.windows.close_due();
                let emitted = !closed.is_empty();
                state.changed |= emitted;
                emit_windows(
                    &mut self.sink,
                    &mut self.counts,
                    &self.emit_latency,
                    self.settings.window.size_ms,
                    closed,
                )?;
                note_results(&mut self.results_waiting_since, emitted);
            }
        }
        Ok(())
    }
}

/// Whether a partition consumed up to `next` (librdkafka's `position`, if known, may be further:
/// it steps over transaction markers) has nothing left to fetch, as far as the last fetch response
/// (`high_watermark`) says. Unknown watermark: it cannot be known to be idle.
fn nothing_left_to_fetch(next: i64, position: Option<i64>, high_watermark: Option<i64>) -> bool {
    high_watermark.is_some_and(|high| next.max(position.unwrap_or(next)) >= high)
}

/// The first per-partition error in an offset-fetch answer.
fn first_partition_error(committed: &TopicPartitionList) -> Option<KafkaError> {
    committed.elements().iter().find_map(|e| e.error().err())
}

/// The consumer's context: logging, plus the processor the rebalance callback works on.
struct ProcessorContext {
    base: StreamaggContext,
    processor: Mutex<Processor>,
    /// An error raised inside a callback, picked up by the poll loop.
    failure: Mutex<Option<PipelineError>>,
    /// Set once the consumer is leaving the group: partitions a last rebalance still hands over are
    /// accepted without restoring state (nothing will be read from them, and the group coordinator
    /// no longer answers offset fetches of a closing member).
    closing: AtomicBool,
}

impl ProcessorContext {
    /// An error inside a callback: the processor stops checkpointing at once (a revoke in the same
    /// poll must not commit), and the poll loop picks the error up.
    fn fail(&self, error: PipelineError) {
        let error = self.with_processor(|p| p.fail(error));
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(error);
        }
    }

    fn take_failure(&self) -> Option<PipelineError> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    fn with_processor<T>(&self, f: impl FnOnce(&mut Processor) -> T) -> T {
        let mut guard = self
            .processor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

impl ClientContext for ProcessorContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.base.log_line(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.log_error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        telemetry::publish_consumer_lag(&statistics);
    }
}

impl ConnectionAware for ProcessorContext {
    fn mark_connected(&self) {
        self.base.mark_connected();
    }

    fn refusal(&self) -> Option<String> {
        self.base.refusal()
    }
}

impl ConsumerContext for ProcessorContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                metrics::counter!(metric::REBALANCES, "event" => "assigned").increment(1);
                let prepared = if self.closing.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    self.with_processor(|p| p.assign(consumer, partitions))
                };
                let assigned = if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                };
                prepared.and(assigned.map_err(PipelineError::Consumer))
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                metrics::counter!(metric::REBALANCES, "event" => "revoked").increment(1);
                let checkpointed = self.with_processor(|p| p.revoke(consumer, partitions));
                let released = if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                };
                checkpointed.and(released.map_err(PipelineError::Consumer))
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                if !cooperative {
                    let _ = consumer.unassign();
                }
                Ok(())
            }
        };
        if let Err(error) = result {
            self.fail(error);
        }
    }
}

/// Refuses a state dir whose recorded `name` differs from `value` (`differences` says how), and
/// records `value` in one that has none yet.
fn check_recorded(
    store: &StateStore,
    settings: &RunSettings,
    name: Recorded,
    value: &str,
    differences: impl FnOnce(&str) -> String,
) -> Result<(), PipelineError> {
    match store.recorded(name)? {
        None => Ok(store.record(name, value)?),
        Some(stored) if stored == value => Ok(()),
        Some(stored) => Err(PipelineError::SettingsChanged {
            what: format!("the state in {}", settings.state_dir.display()),
            differences: differences(&stored),
        }),
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub counts: Counts,
}

/// Runs the processor until `stop` is set, then checkpoints, leaves the group and returns. Blocks.
pub fn run(
    settings: RunSettings,
    stop: &AtomicBool,
    health: Arc<Health>,
) -> Result<RunReport, PipelineError> {
    // Counters of rare events exist from the start, at zero, so rates and alerts see them.
    for counter in [metric::PRODUCER_ERRORS, metric::CHECKPOINT_FAILURES] {
        metrics::counter!(counter).increment(0);
    }
    for event in ["assigned", "revoked"] {
        metrics::counter!(metric::REBALANCES, "event" => event).increment(0);
    }
    let store = StateStore::open(&settings.state_dir)?;
    let semantics = settings.semantics();
    check_recorded(
        &store,
        &settings,
        Recorded::Semantics,
        &semantics.encode(),
        |stored| {
            Semantics::parse(stored).map_or_else(
                || format!("unreadable settings record '{stored}'"),
                |stored| stored.differences(&semantics),
            )
        },
    )?;
    check_recorded(
        &store,
        &settings,
        Recorded::Group,
        &settings.group,
        |stored| format!("group '{stored}' (now '{}')", settings.group),
    )?;
    if settings.input_topics.len() > 1 {
        tracing::warn!(inputs = ?settings.input_topics, "windows are kept per input partition: a source that appears in more than one input topic gets one result per topic and window");
    }
    let instance = match &settings.instance_id {
        Some(id) => id.clone(),
        None => store::instance_id(&settings.state_dir)?,
    };
    let transactional_id = match settings.guarantee {
        Guarantee::ExactlyOnce => Some(format!("streamagg-{}-{instance}", settings.group)),
        Guarantee::AtLeastOnce => None,
    };
    let sink = Sink::connect(&settings, transactional_id.as_deref())?;
    for topic in &settings.input_topics {
        if kafka::partition_count(sink.client(), &settings.kafka, topic)?.is_none() {
            return Err(PipelineError::InputMissing(topic.clone()));
        }
    }
    let written = [
        ("output", Some(&settings.output_topic)),
        ("late", settings.late_topic.as_ref()),
        ("DLQ", settings.dlq_topic.as_ref()),
    ];
    for (what, topic) in written {
        if let Some(topic) = topic {
            if kafka::partition_count(sink.client(), &settings.kafka, topic)?.is_none() {
                return Err(PipelineError::OutputMissing {
                    what,
                    topic: topic.clone(),
                });
            }
        }
    }

    let mut config = settings.kafka.client_config("streamagg");
    config
        .set("group.id", &settings.group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Per-partition lag for the metrics endpoint (a pass-through setting may change it).
        .set("statistics.interval.ms", "5000");
    if settings.static_membership {
        // KIP-345: a restarted instance takes its partitions back without a rebalance, instead of
        // the group waiting for the dead member's session to time out.
        config.set("group.instance.id", format!("streamagg-{instance}"));
    }
    for (key, value) in &settings.consumer_properties {
        config.set(key, value);
    }
    let context = ProcessorContext {
        base: StreamaggContext::default(),
        processor: Mutex::new(Processor {
            settings: settings.clone(),
            store,
            sink,
            partitions: HashMap::new(),
            counts: Counts::default(),
            health: Arc::clone(&health),
            assigned_once: false,
            consumed_once: false,
            emit_latency: metrics::histogram!(metric::EMIT_LATENCY_SECONDS),
            results_waiting_since: None,
            checkpoint_duration: metrics::histogram!(metric::CHECKPOINT_DURATION_SECONDS),
            semantics,
            failed: false,
            consecutive_aborts: 0,
        }),
        failure: Mutex::new(None),
        closing: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<ProcessorContext> = config
        .create_with_context(context)
        .map_err(KafkaSetupError::Config)?;
    kafka::fetch_metadata(&consumer, &settings.kafka, None)?;
    let topics: Vec<&str> = settings.input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(PipelineError::Consumer)?;
    tracing::info!(group = %settings.group, inputs = ?settings.input_topics, output = %settings.output_topic, "running");

    let context = consumer.context();
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| watch_poll_loop(&health, &done));
        let result = poll_loop(&consumer, &settings, stop, &health);
        done.store(true, Ordering::Relaxed);
        result
    });
    // After an error nothing is checkpointed any more: not here, and not by the revoke that leaving
    // the group runs below (the half-handled work since the last checkpoint is redone on restart).
    let result = result.map_err(|error| {
        context.with_processor(|p| {
            let error = p.fail(error);
            p.explain(error)
        })
    });
    // On a clean stop: a final checkpoint, then leave the group (dropping the consumer revokes its
    // partitions through the callback above, which has nothing left to write).
    let result = result.and_then(|()| {
        context
            .with_processor(|p| p.checkpoint(&consumer))
            .map(|_| ())
    });
    let counts = context.with_processor(|p| p.counts);
    health.set_ready(false);
    context.closing.store(true, Ordering::Relaxed);
    drop(consumer);
    tracing::info!(?counts, "stopped");
    result.map(|()| RunReport { counts })
}

/// The most records the poll loop takes from librdkafka's queue between two looks at the clock.
const POLL_BATCH: usize = 1024;

/// Under exactly-once, how long results wait for other partitions' closes before a caught-up
/// instance commits them early (see [`poll_loop`]).
const EARLY_COMMIT_DELAY: Duration = Duration::from_millis(20);

/// Polls, processes, closes idle windows, checkpoints and publishes metrics until `stop` is set or
/// an error occurs.
fn poll_loop(
    consumer: &BaseConsumer<ProcessorContext>,
    settings: &RunSettings,
    stop: &AtomicBool,
    health: &Health,
) -> Result<(), PipelineError> {
    let context = consumer.context();
    let mut last_checkpoint = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        health.polled();
        // A batch: wait up to 100 ms for the first record, then take what is already fetched without
        // waiting, up to POLL_BATCH records; the clock is read and the timers below are checked
        // once per batch, not per record. (The processor's lock is taken per record, never across
        // a poll: librdkafka runs the rebalance callback, which takes it too, inside poll.)
        let mut timeout = Duration::from_millis(100);
        let mut caught_up = false;
        for _ in 0..POLL_BATCH {
            match consumer.poll(timeout) {
                Some(Ok(message)) => context.with_processor(|p| p.handle(consumer, &message))?,
                // A missing ACL (no read on an input topic or the group) does not go away.
                Some(Err(error)) if kafka::is_not_authorized(&error) => {
                    return Err(PipelineError::Consumer(error))
                }
                Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                None => {
                    caught_up = true;
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if let Some(error) = context.take_failure() {
            return Err(error);
        }
        if settings.idle_close_after.is_some() {
            context.with_processor(|p| {
                p.close_idle(consumer, Instant::now())
                    .or_else(|error| p.recover(consumer, error))
            })?;
        }
        // A checkpoint every interval. Under exactly-once, results become visible only when the
        // checkpoint's transaction commits, so a caught-up instance (the fetched records all
        // processed) also commits once results have waited EARLY_COMMIT_DELAY — long enough for the
        // other partitions crossing the same window end to close theirs into the same transaction —
        // and emits within tens of milliseconds of a close instead of within a checkpoint interval.
        // While catching up on a backlog, where windows close often and throughput matters, only
        // the interval counts. (Under at-least-once results are sent as they close, after the
        // output's 5 ms linger; an early checkpoint would only hold up the other partitions.)
        let due = last_checkpoint.elapsed() >= settings.checkpoint_interval
            || (caught_up
                && settings.guarantee == Guarantee::ExactlyOnce
                && context.with_processor(|p| p.results_waited(EARLY_COMMIT_DELAY)));
        if due {
            last_checkpoint = Instant::now();
            match context.with_processor(|p| p.checkpoint(consumer)) {
                Ok(Checkpointed::Nothing | Checkpointed::Committed) => {}
                Ok(Checkpointed::Aborted) => {
                    metrics::counter!(metric::CHECKPOINT_FAILURES).increment(1)
                }
                Err(error) => {
                    metrics::counter!(metric::CHECKPOINT_FAILURES).increment(1);
                    return Err(error);
                }
            }
        }
        if last_publish.elapsed() >= Duration::from_secs(1) {
            last_publish = Instant::now();
            context.with_processor(|p| p.publish());
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let counts = context.with_processor(|p| p.counts);
            tracing::info!(?counts, "progress");
        }
    }
    Ok(())
}

/// The watchdog: reports (once per stall, in the log and the metrics) when the poll loop has not
/// polled for the stall timeout — a stuck broker call or a slow checkpoint that would otherwise only
/// show as a silent consumer lag. `/healthz` reads the same [`Health`].
fn watch_poll_loop(health: &Health, done: &AtomicBool) {
    let mut reported = false;
    metrics::counter!(metric::POLL_LOOP_STALLS).absolute(0);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let stalled = !health.is_live();
        metrics::gauge!(metric::POLL_LOOP_STALLED).set(if stalled { 1.0 } else { 0.0 });
        if stalled && !reported {
            tracing::error!(stalled_for = ?health.since_last_poll(), "the poll loop is stalled");
            metrics::counter!(metric::POLL_LOOP_STALLS).increment(1);
            reported = true;
        } else if !stalled && reported {
            tracing::warn!("the poll loop is polling again");
            reported = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_idle_only_when_the_last_fetch_says_nothing_is_left() {
        let cases = [
            ("caught up", 10, None, Some(10), true),
            (
                "records waiting behind a backlog or a slow fetch",
                10,
                None,
                Some(25),
                false,
            ),
            ("watermark not known yet", 10, None, None, false),
            (
                "a transaction marker at the end, stepped over by the position",
                10,
                Some(11),
                Some(11),
                true,
            ),
            (
                "position behind what was processed is not trusted",
                10,
                Some(3),
                Some(10),
                true,
            ),
        ];
        for (name, next, position, high, idle) in cases {
            assert_eq!(nothing_left_to_fetch(next, position, high), idle, "{name}");
        }
    }

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

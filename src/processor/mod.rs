//! The operator of `streamagg run`: the open windows of every owned partition, with the state store
//! and sink they checkpoint to. Per record: decode → event time → filter → window (aggregated,
//! late, out of range) → side outputs → close due windows → emit. Per checkpoint: outputs and offsets
//! committed (transaction, or flush + group commit), state written to RocksDB. After any error it
//! never checkpoints again; an abortable transaction error is recovered from by aborting and
//! redoing the work since the last checkpoint. Assignment (resume, rewind, revoke) lives in
//! [`assignment`], idle closing in [`idle`], partitions added to an input topic in [`split`]; the
//! consumer loop that drives it in [`crate::pipeline`].
//!
//! # Checkpoint protocol
//!
//! - **Per record**: [`crate::route::route`] decides (decode → event time → filter →
//!   `PartitionWindows::observe`: aggregated, filtered, late or invalid) → side outputs → `close_due`
//!   → [`Processor::emit`] closed windows in `(window_start, source)` order.
//! - **Checkpoint**, at-least-once: (1) flush the producer until every output and side output is
//!   delivered; (2) write, per changed partition, the dirty open windows, a range delete of the closed
//!   ones, and the partition's `next_offset`, stream time and generation, in one synced `WriteBatch`;
//!   (3) commit the offsets to the group with metadata `streamagg/2 st=<stream time> rb=<rebuild
//!   offset>` plus the window semantics (`w= g= min= et= in=`) and, once the input topic grew, its
//!   earlier partition counts (`pc=`, [`split`]), or `streamagg/3 gen=<generation> …`
//!   once the partition is past its first generation (see [`crate::checkpoint::CommitMetadata`]). A
//!   crash between (2) and (3) leaves the group commit behind RocksDB, with streamagg's metadata of
//!   the same generation: `plan_resume` continues from local state. A commit behind it *without*
//!   streamagg's metadata (Kafka's `kafka-consumer-groups --reset-offsets`) or of another
//!   generation (`streamagg reset`) is an operator's reset instead: local state is dropped and the
//!   partition processed again from the committed offset.
//! - **Checkpoint**, exactly-once: (1) `send_offsets_to_transaction` (same offsets and metadata, with the
//!   consumer's group metadata, so a zombie from an older generation is fenced) and
//!   `commit_transaction` — the transaction holds every output and side output since the last
//!   checkpoint. A checkpoint that carries results asks the cluster for the input topics' partition
//!   counts on a thread of its own while it sends the offsets and flushes, and waits for the answer
//!   before the commit: an increase aborts and redoes the work instead, so the windows it split
//!   are marked ([`split`]); (2) only then the RocksDB batch. A crash before (1) completes aborts the transaction
//!   (fenced by the restarted instance's `init_transactions`, or timed out) and leaves RocksDB at the
//!   previous checkpoint, which equals the group's committed offsets: the work is redone. A crash between
//!   (1) and (2) leaves RocksDB *behind* the group commit: `plan_resume` sees it and rebuilds from the
//!   commit's metadata instead of trusting the stale local state. An abortable error aborts and
//!   `rewind`s every owned partition to its last checkpoint (state reloaded, consumer seeked).
//! - **Transactional id**: `streamagg-<group>-<instance id>`, the instance id kept in the state dir, so a
//!   restarted instance fences its own previous incarnation; zombies of other instances are fenced by
//!   the group generation (KIP-447). With `static_membership` the same instance id also names the
//!   consumer's `group.instance.id` (`streamagg-<instance id>`, KIP-345), so a restarted instance is
//!   handed its partitions back without a rebalance.

mod assignment;
mod checkpoint;
pub(crate) use checkpoint::{GroupCommit, WaitingResults};
mod group_commit;
pub(crate) use group_commit::GroupCommits;
mod idle;
mod live;
mod split;
mod trimmed;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

use crate::checkpoint::{CommitMetadata, Generation, Semantics};
use crate::checkpoint::{PartitionCheckpoint, TopicPartition};
use crate::config::{Guarantee, RunSettings};
use crate::kafka::context::ConnectionAware;
use crate::kafka::{self, KafkaSetupError};
use crate::producer::{ProduceError, TransactionErrorKind};
use crate::registry::{EventInput, InputError};
use crate::route::{route_event, Route};
use crate::sink::Sink;
use crate::store::db::{LevelUpdate, PartitionUpdate, Recorded, StateStore, StoreError};
use crate::telemetry::{metric, Health};
use crate::window::{ClosedWindow, PartitionWindows};

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
    /// The input cannot be decoded: a writer schema file, or the schema registry.
    #[error(transparent)]
    Input(#[from] InputError),
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
    /// Learnt before committing results: they are redone with the new partition count.
    #[error("partitions were added to an input topic since the results were computed")]
    PartitionsAdded,
    #[error("{0} transaction aborts in a row without a checkpoint in between; the last: {1}")]
    TooManyAborts(u32, Box<PipelineError>),
    /// The coordinator aborted a transaction that outlived `transaction.timeout.ms` (it could not
    /// be committed in time, e.g. while the coordinator moved) and fenced its producer epoch.
    #[error("the transaction was open for {} and the coordinator aborted it past transaction.timeout.ms: {cause}", humantime::format_duration(*.open_for))]
    TransactionExpired {
        open_for: Duration,
        cause: Box<PipelineError>,
    },
    #[error("cannot start the thread that commits offsets to the group: {0}")]
    CommitterThread(std::io::Error),
}

impl PipelineError {
    /// Whether a pipeline that failed with this after it had been running may be started again
    /// in-process ([`crate::restart`]): the cluster's state (an unreachable broker, a coordinator
    /// away past the transaction timeout and the epoch it then bumped), not the settings, the
    /// ACLs or credentials, the input's schemas, the local disk, a record the cluster refuses or
    /// another instance running under this one's id, which a restart would only meet again.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Setup(e) => matches!(**e, KafkaSetupError::Unreachable { .. }),
            PipelineError::TransactionExpired { .. }
            | PipelineError::NoGroupMetadata
            | PipelineError::PartitionsAdded => true,
            PipelineError::Produce(e) => match **e {
                ProduceError::Setup(KafkaSetupError::Unreachable { .. })
                | ProduceError::FlushTimeout { .. } => true,
                // A failed delivery keeps only its reason's text: a refusal (an ACL, a timestamp
                // out of the topic's bounds) cannot be told from a timeout.
                ProduceError::Setup(_) | ProduceError::Delivery { .. } => false,
                ProduceError::Send { ref cause, .. }
                | ProduceError::Transaction { ref cause, .. } => !refused(cause) && !e.is_fenced(),
            },
            PipelineError::Consumer(e) => !refused(e),
            // Aborts in a row have already been retried with back-off (a refused record stays refused).
            PipelineError::TooManyAborts(..)
            | PipelineError::Store(_)
            | PipelineError::InputMissing(_)
            | PipelineError::OutputMissing { .. }
            | PipelineError::Input(_)
            | PipelineError::NotAuthorized { .. }
            | PipelineError::CommitterThread(_)
            | PipelineError::SettingsChanged { .. } => false,
        }
    }

    /// Whether a newer producer with this instance's `transactional.id` fenced it.
    pub fn is_fenced(&self) -> bool {
        matches!(self, PipelineError::Produce(e) if e.is_fenced())
    }

    /// A fence met by a transaction that had been open for at least `timeout` is the coordinator's
    /// doing: it aborts a transaction that outlives `transaction.timeout.ms` and bumps the
    /// producer's epoch, which librdkafka reports as fenced, as if another instance had taken the
    /// id over. Such a fence becomes [`PipelineError::TransactionExpired`]; any other error, and a
    /// fence of a younger transaction (another instance with this id), stays as it is.
    pub fn expired_if_fenced(self, open_for: Option<Duration>, timeout: Duration) -> Self {
        match open_for {
            Some(open_for) if open_for >= timeout && self.is_fenced() => {
                PipelineError::TransactionExpired {
                    open_for,
                    cause: Box::new(self),
                }
            }
            _ => self,
        }
    }
}

/// Whether the cluster refused this principal: an ACL, or its credentials or TLS settings
/// ([`kafka::context::is_refusal`], which start-up uses too).
fn refused(error: &KafkaError) -> bool {
    kafka::context::is_not_authorized(error)
        || kafka::context::is_refusal(error, &error.to_string())
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

/// Empty windows of every size, with percentiles if on.
pub(crate) fn new_windows(settings: &RunSettings) -> PartitionWindows {
    PartitionWindows::new(settings.window)
        .rolling_up(settings.rollups)
        .sharing_one_topic(settings.rollup_outputs.is_empty())
        .keeping_percentiles(settings.percentiles)
}

/// What happened to input records, counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub consumed: u64,
    pub aggregated: u64,
    pub late: u64,
    /// Of the late events, those a larger window size still took (`--window 1m,5m,…`).
    pub late_rolled_up: u64,
    pub filtered: u64,
    pub invalid: u64,
    pub replayed: u64,
    pub windows_emitted: u64,
    pub checkpoints: u64,
    pub aborts: u64,
    /// Partitions whose log went back (topic recreated, log truncated).
    pub resets: u64,
    /// Partitions whose group offset was reset (`streamagg reset`, Kafka's own tool) and that are
    /// processed again from there.
    pub group_resets: u64,
    /// Input records deleted before they were read: missing from the windows a hand-off rebuilt.
    pub trimmed_from_rebuilds: u64,
    /// Input records deleted before they were read: never processed (a resume below the log's
    /// start, or an instance that fell behind retention while running).
    pub trimmed_unread: u64,
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

/// Results emitted since the last checkpoint.
struct PendingResults {
    /// When the first of them was emitted.
    since: Instant,
    /// The latest close time (window end + grace) among them.
    closes_at: i64,
}

/// One owned input partition.
struct PartitionState {
    windows: PartitionWindows,
    /// The offset after the last processed record; `None` before the first record of a fresh partition.
    next_offset: Option<i64>,
    /// Records below this offset are a rebuild of state another owner already emitted from.
    replay_until: i64,
    /// Processed records since the last checkpoint.
    changed: bool,
    /// When the partition last delivered a record (for `idle_close_after`): the end of the poll
    /// batch it came in, never earlier than the record ([`Processor::end_batch`]).
    last_record: Instant,
    /// Whether a record of this partition came in the current poll batch.
    in_batch: bool,
    /// For a partition started without any checkpoint: the offset of its first processed record,
    /// where an abort rewinds it to.
    started_fresh_at: Option<i64>,
    /// The line of processing its state and commits belong to ([`Generation`]).
    generation: Generation,
}

impl PartitionState {
    /// Empty windows, reading from `from`, nothing to replay, in `generation`.
    fn empty(windows: PartitionWindows, from: Option<i64>, generation: Generation) -> Self {
        PartitionState {
            windows,
            next_offset: from,
            replay_until: from.unwrap_or(0),
            changed: false,
            last_record: Instant::now(),
            in_batch: false,
            started_fresh_at: None,
            generation,
        }
    }

    /// Whether records below `replay_until` are still being replayed to rebuild the open windows.
    fn rebuilding(&self) -> bool {
        self.next_offset
            .is_some_and(|next| next < self.replay_until)
    }

    /// The offset a checkpoint commits for this partition, if it has anything to commit: records
    /// processed since the last checkpoint, and no rebuild under way (committing a replay position
    /// would move the group's offset back, and a later owner would forward the replayed records
    /// again).
    fn checkpoint_offset(&self) -> Option<i64> {
        self.next_offset
            .filter(|_| self.changed && !self.rebuilding())
    }
}

/// topic → partition → state, looked up once per record. The keys are the operator's topic names
/// and the group's partitions, not input data, so the map hashes them with foldhash, a fast hash,
/// instead of SipHash (3 % of the per-record instructions under callgrind). The window maps, keyed
/// by `source` from outside, keep SipHash.
type Partitions = HashMap<String, HashMap<i32, PartitionState, FastHash>, FastHash>;
type FastHash = foldhash::fast::RandomState;

/// The open windows of every owned partition, with the store and sink they checkpoint to.
pub struct Processor {
    settings: RunSettings,
    /// Shared with the run's committer thread, which syncs its log before a group commit.
    store: Arc<StateStore>,
    sink: Sink,
    /// Decodes input records (and fetches registry writer schemas).
    input: EventInput,
    /// topic → partition → state (two levels so a message is looked up without allocating).
    partitions: Partitions,
    counts: Counts,
    health: Arc<Health>,
    /// Whether the group has handed this instance its first assignment (possibly empty).
    assigned_once: bool,
    /// Whether a record has been consumed yet (the first one is logged: start-up is over).
    consumed_once: bool,
    emit_latency: metrics::Histogram,
    checkpoint_duration: metrics::Histogram,
    /// Results emitted since the last checkpoint (`None`: none), waiting for it to commit them.
    results_waiting: Option<PendingResults>,
    /// The settings the state and commits must have been made under.
    semantics: Semantics,
    /// Set by the first processing error: from then on nothing is checkpointed, so the half-handled
    /// work is never committed (the restart redoes it from the last checkpoint).
    failed: bool,
    /// Transaction aborts since the last successful checkpoint.
    consecutive_aborts: u32,
    /// Per partition, the end of the last gap counted as trimmed input ([`trimmed`]).
    trimmed_through: HashMap<TopicPartition, i64>,
    /// The input topics' partition counts, to mark windows a partition increase split.
    inputs: split::InputPartitions,
    /// At-least-once group commits, the periodic ones sent by a committer thread the run starts
    /// ([`Processor::group_commits`]).
    group_commits: Arc<GroupCommits>,
}

impl Processor {
    /// A processor owning no partitions yet.
    pub(crate) fn new(
        settings: RunSettings,
        store: StateStore,
        sink: Sink,
        input: EventInput,
        health: Arc<Health>,
    ) -> Self {
        let inputs = match store.recorded(Recorded::PartitionCounts) {
            Ok(recorded) => split::InputPartitions::restore(
                settings.input_partitioner,
                recorded.as_deref().unwrap_or_default(),
            ),
            Err(error) => {
                tracing::warn!(%error, "the recorded partition counts cannot be read: an increase before this start goes unnoticed");
                split::InputPartitions::new(settings.input_partitioner)
            }
        };
        Processor {
            input,
            inputs,
            semantics: settings.semantics(),
            settings,
            store: Arc::new(store),
            sink,
            partitions: Partitions::default(),
            counts: Counts::default(),
            health,
            assigned_once: false,
            consumed_once: false,
            emit_latency: metrics::histogram!(metric::EMIT_LATENCY_SECONDS),
            results_waiting: None,
            checkpoint_duration: metrics::histogram!(metric::CHECKPOINT_DURATION_SECONDS),
            failed: false,
            consecutive_aborts: 0,
            trimmed_through: HashMap::new(),
            group_commits: Arc::default(),
        }
    }

    /// What the run's committer thread serves, and the store whose log it syncs
    /// ([`GroupCommits::run`]).
    pub(crate) fn group_commits(&self) -> (Arc<GroupCommits>, Arc<StateStore>) {
        (Arc::clone(&self.group_commits), Arc::clone(&self.store))
    }

    /// What happened to input records so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// Counts on from `counts`, an earlier run's in this process (the metrics are its totals).
    pub(crate) fn counting_from(mut self, counts: Counts) -> Self {
        self.counts = counts;
        self
    }

    /// Processes one input record.
    pub(crate) fn handle<C: ConsumerContext + ConnectionAware>(
        &mut self,
        consumer: &BaseConsumer<C>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        if self.failed {
            return Ok(()); // the loop is stopping: nothing more is processed or committed
        }
        let resets = self.counts.resets;
        self.process(consumer, message)
            .or_else(|error| self.recover(consumer, error))?;
        if self.counts.resets > resets {
            // Commit the reset at once: until then the group's commit still describes the old log,
            // and a restart would rebuild from it.
            self.checkpoint(consumer, GroupCommit::Wait)?;
        }
        Ok(())
    }

    /// Ends a poll batch at `now`: every partition that delivered a record in it last did so at
    /// `now` for idle closing. One clock read per batch instead of one per record, and never
    /// earlier than the record: whatever stalled the batch (a checkpoint in a rebalance callback,
    /// an abort's backoff) cannot make a partition look idle for longer than it was.
    pub(crate) fn end_batch(&mut self, now: Instant) {
        for state in self
            .partitions
            .values_mut()
            .flat_map(|parts| parts.values_mut())
        {
            if std::mem::take(&mut state.in_batch) {
                state.last_record = now;
            }
        }
    }

    /// The per-record work of [`Processor::handle`].
    fn process<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        let route_settings = self.settings.route_settings();
        let (topic, partition) = (message.topic(), message.partition());
        let offset = message.offset();
        let Some(mut state) = self
            .partitions
            .get_mut(topic)
            .and_then(|p| p.get_mut(&partition))
        else {
            return Ok(()); // fetched just before its partition was revoked: the new owner processes it
        };
        if let Some(expected) = state.next_offset.filter(|&next| offset > next) {
            // Further on than expected: transaction markers, or records deleted before they were
            // read (librdkafka's reset policy moved the consumer to the log's start).
            let replay_until = state.replay_until;
            self.count_gap(consumer, (topic, partition), expected, offset, replay_until);
            state = match self
                .partitions
                .get_mut(topic)
                .and_then(|p| p.get_mut(&partition))
            {
                Some(state) => state,
                None => return Ok(()),
            };
        }
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
            let generation = Generation::new_after(crate::producer::now_ms(), [state.generation]);
            *state = PartitionState::empty(new_windows(&self.settings), None, generation);
            self.counts.resets += 1;
            // A topic created anew: its partition count is no increase of the old one's.
            self.inputs.forget(topic);
            let tp = TopicPartition {
                topic: topic.to_owned(),
                partition,
            };
            self.store.forget(&tp)?;
            // Its offsets start over: what was counted as trimmed for the old ones says nothing.
            self.trimmed_through.remove(&tp);
        }
        self.counts.consumed += 1;
        if !self.consumed_once {
            self.consumed_once = true;
            tracing::info!(
                first_record_ms = crate::producer::now_ms(),
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
        let payload = message.payload().unwrap_or_default();
        // A new writer schema id is fetched before the record is decided: an unavailable
        // registry is a processing error (nothing committed), never a DLQ record.
        self.input.prepare(payload).map_err(InputError::from)?;
        let routed = route_event(
            &route_settings,
            &mut state.windows,
            self.input.decode(payload),
            message.timestamp().to_millis(),
            offset,
        );
        state.next_offset = Some(offset + 1);
        state.changed = true;
        state.in_batch = true;
        if replay {
            // Side outputs and counts of these records happened when they were first processed.
            self.counts.replayed += 1;
            return Ok(());
        }
        match routed {
            Route::Aggregated => self.counts.aggregated += 1,
            Route::Filtered => self.counts.filtered += 1,
            Route::Late {
                window_start,
                rolled_up,
            } => {
                self.counts.late += 1;
                self.counts.late_rolled_up += u64::from(rolled_up);
                self.sink.forward_late(message, window_start, rolled_up)?;
            }
            Route::Invalid(reason) => {
                self.counts.invalid += 1;
                self.sink.forward_invalid(message, &reason)?;
            }
        }
        let closed = state.windows.close_due();
        self.emit(topic, partition, closed)?;
        Ok(())
    }

    /// Emits closed windows to the sink, counting them and observing their emission latency; the
    /// first results since the last checkpoint start the wait [`Processor::waiting_results`] reports.
    ///
    /// The latency is observed once per window start in the burst (all its sources close at the same
    /// moment and share the value), not once per source: the exporter keeps every observation until
    /// the next scrape, which at a million sources was most of the processor's memory.
    fn emit(
        &mut self,
        topic: &str,
        partition: i32,
        windows: Vec<ClosedWindow>,
    ) -> Result<(), ProduceError> {
        if windows.is_empty() {
            return Ok(()); // the common case, once per record: no clock read
        }
        // Every size closes at its end + the one grace (a larger window with its last smaller one).
        let closes_at = windows
            .iter()
            .map(|w| w.window_end)
            .max()
            .unwrap_or(i64::MIN);
        let closes_at = closes_at.saturating_add(self.settings.window.grace_ms);
        let pending = self.results_waiting.get_or_insert(PendingResults {
            since: Instant::now(),
            closes_at,
        });
        pending.closes_at = pending.closes_at.max(closes_at);
        let now = crate::producer::now_ms();
        let mut observed_start = None;
        for window in windows {
            let split = self.possibly_split(topic, partition, &window);
            self.sink.emit(&window, split.as_deref())?;
            self.counts.windows_emitted += 1;
            if observed_start != Some(window.window_start) {
                observed_start = Some(window.window_start);
                self.emit_latency
                    .record(now.saturating_sub(window.window_end) as f64 / 1000.0);
            }
        }
        Ok(())
    }

    /// The `streamagg.possibly_split` header value of a window read from `topic`'s `partition`, if
    /// it may be one part of a window split by added partitions ([`split`]); counted, and the
    /// partition's first one logged.
    fn possibly_split(
        &mut self,
        topic: &str,
        partition: i32,
        window: &ClosedWindow,
    ) -> Option<String> {
        let displaced = self
            .inputs
            .displaced(topic, partition, &window.source, window.level)?;
        metrics::counter!(metric::WINDOWS_POSSIBLY_SPLIT, "topic" => topic.to_owned()).increment(1);
        if displaced.first {
            match displaced.fits {
                Some(fits) => tracing::warn!(
                    topic,
                    partition,
                    source = %window.source,
                    where_ = %displaced.header,
                    "a window's source is not in the partition --input-partitioner {} puts it in, but where {} does: the producers partition with {} (set --input-partitioner {}); until then results are marked {} and windows split by added partitions can go unmarked",
                    self.settings.input_partitioner.name(),
                    fits.name(),
                    fits.name(),
                    fits.name(),
                    crate::sink::HEADER_POSSIBLY_SPLIT
                ),
                None => tracing::warn!(
                    topic,
                    partition,
                    source = %window.source,
                    where_ = %displaced.header,
                    partitioner = ?self.settings.input_partitioner,
                    "a window's source is not in the partition the input partitioner puts it in: partitions were added to the topic (its window may be split between two partitions; both parts are emitted, marked with the header {}), or the producers partition otherwise (set --input-partitioner)",
                    crate::sink::HEADER_POSSIBLY_SPLIT
                ),
            }
        }
        Some(displaced.header)
    }

    /// An error with what only the processor knows added: which topics a refused write was for.
    pub(crate) fn explain(&self, error: PipelineError) -> PipelineError {
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
    pub(crate) fn publish(&self) {
        let c = &self.counts;
        for (name, value) in [
            (metric::RECORDS_CONSUMED, c.consumed),
            (metric::EVENTS_AGGREGATED, c.aggregated),
            (metric::EVENTS_LATE, c.late),
            (metric::EVENTS_LATE_ROLLED_UP, c.late_rolled_up),
            (metric::EVENTS_FILTERED, c.filtered),
            (metric::RECORDS_INVALID, c.invalid),
            (metric::RECORDS_REPLAYED, c.replayed),
            (metric::WINDOWS_EMITTED, c.windows_emitted),
            (metric::CHECKPOINTS, c.checkpoints),
            (metric::TRANSACTION_ABORTS, c.aborts),
        ] {
            metrics::counter!(name).absolute(value);
        }
        for (reason, value) in [("log_went_back", c.resets), ("group_reset", c.group_resets)] {
            metrics::counter!(metric::PARTITION_RESETS, "reason" => reason).absolute(value);
        }
        for (missing_from, value) in [
            ("rebuild", c.trimmed_from_rebuilds),
            ("unread", c.trimmed_unread),
        ] {
            metrics::counter!(metric::INPUT_RECORDS_TRIMMED, "missing_from" => missing_from)
                .absolute(value);
        }
        let now_ms = crate::producer::now_ms();
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
}

#[cfg(test)]
mod tests;

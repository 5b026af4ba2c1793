//! `streamagg run`: the consumer-group loop wiring source → decode → window → state/checkpoint → sink.
//!
//! One thread owns a `BaseConsumer` and polls it; the [`Processor`] (open windows, state store, sink)
//! lives in the consumer's context behind a mutex, so librdkafka's rebalance callback — which runs
//! inside `poll` on the same thread — can checkpoint revoked partitions before they are released and
//! set the resume offsets of assigned ones before they are fetched. Every `checkpoint_interval` (and,
//! under exactly-once, early once results are ready) the loop checkpoints: outputs
//! are flushed, then state and the offsets it reflects are written to RocksDB in one batch, then the
//! offsets are committed to the group with rebuild metadata.
//!
//! - **Start**: validate settings → serve `/metrics`, `/healthz`, `/readyz` (not ready yet) → open RocksDB → connect the sink (cluster reachable within
//!   `kafka_timeout`; with `create_topics`, create missing written topics first) → check input,
//!   output, late and DLQ topics exist → subscribe with the
//!   cooperative-sticky assignor. Any failure is one line and exit 1.
//! - **Poll loop** (one thread): `poll` (batches of up to 1,024 records) → `Processor::handle` → every
//!   `checkpoint_interval`, `Processor::checkpoint`; under exactly-once also early
//!   ([`early_commit`]): live results once every partition has closed the same window ends (20 ms
//!   at most), those of older data once they waited 20 ms and the batch drained what was fetched;
//!   every second, `Processor::publish` (metrics, readiness). Rebalance callbacks
//!   run inside `poll` on this same thread and reach the processor through the consumer context's mutex;
//!   so do librdkafka's statistics (consumer lag). A watchdog thread watches the loop's last poll.
//!   With the live-state endpoint on, the loop also answers its questions between batches
//!   ([`crate::live`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use crate::checkpoint::Semantics;
use crate::codec::{self, Format};
use crate::config::{Guarantee, RunSettings};
use crate::kafka::context::{ConnectionAware, StreamaggContext};
use crate::kafka::{self, KafkaSetupError};
use crate::live::assignment::advertising_client_id;
use crate::live::queries::Inbox;
use crate::processor::{Checkpointed, Counts, GroupCommit, GroupCommits, PipelineError, Processor};
use crate::registry::{EventInput, InputError, RegistryClient};
use crate::sink::Sink;
use crate::store::db::{self, Recorded, StateStore};
use crate::telemetry::{self, metric, Health};

mod early_commit;
mod supervise;

pub use supervise::run;
use supervise::Progress;

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

/// The poll loop's side of the live-state endpoint: the questions it answers, and the address it
/// publishes in its consumer `client.id` for the other instances to point at.
#[derive(Debug)]
pub struct LiveRun {
    pub inbox: Inbox,
    pub advertised_address: Option<String>,
}

/// With `--output-format avro-confluent`, per window size the registry id of `TrafficAverage`'s
/// schema, registered under the subject of its output topic (or the record name) at start-up.
fn output_schema_ids(settings: &RunSettings) -> Result<Option<Vec<u32>>, PipelineError> {
    let (Some(registry), Format::AvroConfluent) = (&settings.registry, settings.output_format)
    else {
        return Ok(None);
    };
    let client = RegistryClient::new(registry).map_err(InputError::from)?;
    let mut registered: Vec<(String, u32)> = Vec::new();
    let mut ids = Vec::new();
    for level in 0..=settings.rollups.sizes().len() {
        let subject = registry
            .subject_strategy
            .subject(settings.output_of(level), codec::TRAFFIC_AVERAGE_NAME);
        let id = match registered.iter().find(|(s, _)| *s == subject) {
            Some(&(_, id)) => id,
            None => {
                let id = client
                    .register(&subject, codec::TRAFFIC_AVERAGE_SCHEMA)
                    .map_err(InputError::from)?;
                tracing::info!(subject, schema_id = id, "output schema registered");
                registered.push((subject, id));
                id
            }
        };
        ids.push(id);
    }
    Ok(Some(ids))
}

/// One run of the pipeline: start-up, then the poll loop until `stop` or an error, then the
/// final checkpoint (on a stop) and leaving the group. Counts on from `progress.counts` and leaves
/// its own there; sets `progress.started` once the consumer has subscribed.
fn run_once(
    settings: &RunSettings,
    stop: &AtomicBool,
    health: &Arc<Health>,
    live: Option<&LiveRun>,
    progress: &mut Progress,
) -> Result<RunReport, PipelineError> {
    let store = StateStore::open(&settings.state_dir, !settings.rollups.is_empty())?;
    let semantics = settings.semantics();
    check_recorded(
        &store,
        settings,
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
        settings,
        Recorded::Group,
        &settings.group,
        |stored| format!("group '{stored}' (now '{}')", settings.group),
    )?;
    if settings.input_topics.len() > 1 {
        tracing::warn!(inputs = ?settings.input_topics, "windows are kept per input partition: a source that appears in more than one input topic gets one result per topic and window");
    }
    let instance = match &settings.instance_id {
        Some(id) => id.clone(),
        None => db::instance_id(&settings.state_dir)?,
    };
    let transactional_id = match settings.guarantee {
        Guarantee::ExactlyOnce => Some(format!("streamagg-{}-{instance}", settings.group)),
        Guarantee::AtLeastOnce => None,
    };
    if settings.create_topics {
        create_topics(settings)?;
    }
    let input = EventInput::new(settings)?;
    let mut sink = Sink::connect(settings, transactional_id.as_deref())?;
    if let Some(ids) = output_schema_ids(settings)? {
        sink.frame_with(ids);
    }
    for topic in &settings.input_topics {
        if kafka::admin::partition_count(sink.client(), &settings.kafka, topic)?.is_none() {
            return Err(PipelineError::InputMissing(topic.clone()));
        }
    }
    let written = settings
        .output_topics()
        .into_iter()
        .map(|t| ("output", Some(t)))
        .chain([
            ("late", settings.late_topic.as_ref()),
            ("DLQ", settings.dlq_topic.as_ref()),
        ]);
    for (what, topic) in written {
        if let Some(topic) = topic {
            if kafka::admin::partition_count(sink.client(), &settings.kafka, topic)?.is_none() {
                return Err(PipelineError::OutputMissing {
                    what,
                    topic: topic.clone(),
                });
            }
        }
    }

    if progress.started && stop.load(Ordering::Relaxed) {
        // Stopped while a restart was starting up: nothing is open yet, nothing to finish.
        return Ok(RunReport {
            counts: progress.counts,
        });
    }
    let mut config = settings.kafka.consumer_config("streamagg");
    config
        .set("group.id", &settings.group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Per-partition lag for the metrics endpoint (a pass-through setting may change it).
        .set("statistics.interval.ms", "5000")
        // Partitions added to an input topic are seen (and a rebalance hands them out) within
        // 10 s instead of librdkafka's 5 minutes: the sooner the processor knows the new count,
        // the fewer split windows go out unmarked (`processor::split`). One small metadata
        // request per 10 s; a pass-through setting may change it.
        .set("topic.metadata.refresh.interval.ms", "10000");
    if settings.static_membership {
        // KIP-345: a restarted instance takes its partitions back without a rebalance, instead of
        // the group waiting for the dead member's session to time out.
        config.set("group.instance.id", format!("streamagg-{instance}"));
    }
    for (key, value) in &settings.consumer_properties {
        config.set(key, value);
    }
    if let Some(address) = live.as_ref().and_then(|l| l.advertised_address.as_deref()) {
        // Owner discovery reads it from the group's description (`live::assignment`). A
        // pass-through `client.id` is refused with the endpoint on (`config::query`).
        config.set("client.id", advertising_client_id(address));
    }
    let context = ProcessorContext {
        base: StreamaggContext::default(),
        processor: Mutex::new(
            Processor::new(settings.clone(), store, sink, input, Arc::clone(health))
                .counting_from(progress.counts)
                .remembering_trimmed(progress.trimmed_through.clone()),
        ),
        failure: Mutex::new(None),
        closing: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<ProcessorContext> = config
        .create_with_context(context)
        .map_err(KafkaSetupError::config)?;
    kafka::admin::fetch_metadata(&consumer, &settings.kafka, None)?;
    let topics: Vec<&str> = settings.input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(PipelineError::Consumer)?;
    tracing::info!(group = %settings.group, inputs = ?settings.input_topics, output = %settings.output_topic, rollup_outputs = ?settings.rollup_outputs, "running");
    progress.started = true;

    let context = consumer.context();
    let inbox = live.as_ref().map(|l| &l.inbox);
    // Under at-least-once the periodic checkpoints' group commits go out from a thread of their
    // own (`GroupCommits`); it ends, having sent what waits, before the consumer is dropped (also
    // when the run unwinds).
    let (group_commits, store) = context.with_processor(|p| p.group_commits());
    let result = std::thread::scope(|scope| {
        let _stop_committer = group_commits.stop_on_drop();
        if settings.guarantee == Guarantee::AtLeastOnce {
            std::thread::Builder::new()
                .name("group-commits".into())
                .spawn_scoped(scope, || group_commits.run(&consumer, &store))
                .map_err(PipelineError::CommitterThread)?;
        }
        let result = poll_loop(&consumer, settings, stop, health, inbox, &group_commits);
        // After an error nothing is checkpointed any more: not here, and not by the revoke that
        // leaving the group runs below (the half-handled work since the last checkpoint is redone
        // on restart).
        let result = result.map_err(|error| {
            context.with_processor(|p| {
                let error = p.fail(error);
                p.explain(error)
            })
        });
        // On a clean stop: a final checkpoint, then leave the group (dropping the consumer revokes
        // its partitions through the callback above, which has nothing left to write).
        result.and_then(|()| {
            context
                .with_processor(|p| p.checkpoint(&consumer, GroupCommit::Wait))
                .map(|_| ())
        })
    });
    let counts = context.with_processor(|p| p.counts());
    progress.counts = counts;
    progress.trimmed_through = context.with_processor(|p| p.trimmed_through().clone());
    health.set_ready(false);
    context.closing.store(true, Ordering::Relaxed);
    drop(consumer);
    tracing::info!(?counts, "stopped");
    result.map(|()| RunReport { counts })
}

/// The most records the poll loop takes from librdkafka's queue between two looks at the clock.
const POLL_BATCH: usize = 1024;

/// With the live-state endpoint on, how long an idle poll waits for a record: the most a question
/// waits when nothing is arriving (100 idle wake-ups a second, instead of 10).
const LIVE_IDLE_POLL: Duration = Duration::from_millis(10);

/// Polls, processes, closes idle windows, checkpoints, answers live-state questions and publishes
/// metrics until `stop` is set or an error occurs.
fn poll_loop(
    consumer: &BaseConsumer<ProcessorContext>,
    settings: &RunSettings,
    stop: &AtomicBool,
    health: &Health,
    inbox: Option<&Inbox>,
    group_commits: &GroupCommits,
) -> Result<(), PipelineError> {
    let context = consumer.context();
    let mut last_checkpoint = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_report = Instant::now();
    // How long a poll waits for the first record of a batch. A live-state question waits for it
    // when the instance is idle, so with the endpoint on the wait is short.
    let idle_poll = match inbox {
        Some(_) => LIVE_IDLE_POLL,
        None => Duration::from_millis(100),
    };
    while !stop.load(Ordering::Relaxed) {
        // A group commit the committer thread has been waiting on stalls the loop's checkpoints
        // as surely as one waited on here (the watchdog then exits, as for any stuck call).
        health.polled_unless_waiting_since(group_commits.on_the_wire_since());
        // A batch: wait up to 100 ms (10 ms with the live-state endpoint on) for the first record,
        // then take what is already fetched without waiting, up to POLL_BATCH records; the clock
        // is read and the timers below are checked once per batch, not per record. (The processor's lock is taken per record, never across
        // a poll: librdkafka runs the rebalance callback, which takes it too, inside poll.)
        let mut timeout = idle_poll;
        let mut drained = false;
        for _ in 0..POLL_BATCH {
            match consumer.poll(timeout) {
                Some(Ok(message)) => context.with_processor(|p| p.handle(consumer, &message))?,
                // A missing ACL (no read on an input topic or the group) does not go away.
                Some(Err(error)) if kafka::context::is_not_authorized(&error) => {
                    return Err(PipelineError::Consumer(error))
                }
                Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                None => {
                    drained = true;
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if let Some(error) = context.take_failure() {
            return Err(error);
        }
        // Live-state questions, between batches: every record before is applied in full, none after
        // has begun. One `try_recv` when none waits; a question waits at most one batch or the
        // idle poll above (LIVE_IDLE_POLL).
        if let Some(inbox) = inbox {
            inbox.answer_waiting(|query| context.with_processor(|p| p.live_view(query)));
        }
        if settings.idle_close_after.is_some() {
            let now = Instant::now();
            context.with_processor(|p| {
                p.end_batch(now);
                p.close_idle(consumer, now)
                    .or_else(|error| p.recover(consumer, error))
            })?;
        }
        // A checkpoint every interval. Under exactly-once, results become visible only when the
        // checkpoint's transaction commits, so results also commit early: live ones once every
        // partition has closed the same window ends into the transaction, those of older data once
        // the loop drained what was fetched ([`early_commit`]). (Under at-least-once
        // results are sent as they close, after the output's 5 ms linger; an early checkpoint
        // would only hold up the other partitions.)
        let early = settings.guarantee == Guarantee::ExactlyOnce
            && early_commit::commit_early(context.with_processor(|p| p.waiting_results()), drained);
        if early || last_checkpoint.elapsed() >= settings.checkpoint_interval {
            last_checkpoint = Instant::now();
            match context.with_processor(|p| p.checkpoint(consumer, GroupCommit::Background)) {
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
            let counts = context.with_processor(|p| p.counts());
            tracing::info!(?counts, "progress");
        }
    }
    Ok(())
}

/// The largest window size: a rebuild replays up to its span of input.
fn largest_size_ms(settings: &RunSettings) -> i64 {
    settings
        .rollups
        .sizes()
        .last()
        .copied()
        .unwrap_or(settings.window.size_ms)
}

/// `create_topics`: the missing output, late and DLQ topics are created shaped like the input (see
/// [`kafka::topics`]); what does not fit is logged, never fatal. A missing input is refused as usual.
fn create_topics(settings: &RunSettings) -> Result<(), PipelineError> {
    let topics = kafka::topics::TopicSet {
        inputs: settings.input_topics.clone(),
        outputs: settings.output_topics().into_iter().cloned().collect(),
        late: settings.late_topic.clone(),
        dlq: settings.dlq_topic.clone(),
        rebuild_span: std::time::Duration::from_millis(
            (largest_size_ms(settings) + settings.window.grace_ms).max(0) as u64,
        ),
        configs: Vec::new(),
    };
    let report = match kafka::topics::ensure(&settings.kafka, &topics) {
        Err(KafkaSetupError::TopicMissing(input)) => {
            return Err(PipelineError::InputMissing(input))
        }
        other => other?,
    };
    for (role, topic, partitions, replication) in &report.created {
        tracing::info!(%topic, role = role.name(), partitions, replication, "created topic");
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    Ok(())
}

//! `streamagg run` over its whole life: the runs of the pipeline, started again in-process after a
//! transient failure (the strategy is [`crate::restart`]), and the watchdog over all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{run_once, LiveRun, RunReport};
use crate::checkpoint::TopicPartition;
use crate::config::RunSettings;
use crate::processor::{Counts, PipelineError};
use crate::restart::{self, RestartBudget};
use crate::telemetry::{metric, Health};

/// What the runs of one process have done so far, carried from one run to the next.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Whether a run got as far as subscribing: from then on a transient failure starts it again
    /// (a failure before is a misconfiguration or an unreachable cluster at start: one line, exit 1).
    pub(super) started: bool,
    /// The counts of every run so far: the metrics are the process's totals.
    pub(super) counts: Counts,
    /// What the runs so far counted as trimmed input, per partition (counted once per process).
    pub(super) trimmed_through: HashMap<TopicPartition, i64>,
}

/// Runs the processor until `stop` is set, then checkpoints, leaves the group and returns. Blocks.
/// With `live`, the poll loop also answers live-state questions between batches.
///
/// A failure at start-up is returned. A transient failure after the pipeline had been running
/// ([`PipelineError::is_transient`]) starts it again in-process, within the [`RestartBudget`]: the
/// consumer, producer and state store of the failed run are closed (nothing of its work since the
/// last checkpoint is committed) and new ones resume from the last checkpoint, as a restarted
/// process would.
pub fn run(
    settings: RunSettings,
    stop: &AtomicBool,
    health: Arc<Health>,
    live: Option<LiveRun>,
) -> Result<RunReport, PipelineError> {
    // Counters of rare events exist from the start, at zero, so rates and alerts see them.
    for counter in [
        metric::PRODUCER_ERRORS,
        metric::CHECKPOINT_FAILURES,
        metric::PIPELINE_RESTARTS,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for event in ["assigned", "revoked"] {
        metrics::counter!(metric::REBALANCES, "event" => event).increment(0);
    }
    for missing_from in ["rebuild", "unread"] {
        metrics::counter!(metric::INPUT_RECORDS_TRIMMED, "missing_from" => missing_from)
            .increment(0);
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let exit_after = stall_exit_after(settings.stall_timeout);
        let (health_ref, done_ref) = (&health, &done);
        scope.spawn(move || watch_poll_loop(health_ref, done_ref, exit_after));
        let result = run_until_stopped(&settings, stop, &health, live.as_ref());
        done.store(true, Ordering::Relaxed);
        result
    })
}

/// [`run`]'s runs, one after another while they fail transiently and the budget allows.
fn run_until_stopped(
    settings: &RunSettings,
    stop: &AtomicBool,
    health: &Arc<Health>,
    live: Option<&LiveRun>,
) -> Result<RunReport, PipelineError> {
    let mut progress = Progress::default();
    let mut budget = RestartBudget::default();
    loop {
        let checkpoints_before = progress.counts.checkpoints;
        let error = match run_once(settings, stop, health, live, &mut progress) {
            // A failure while stopping (the final checkpoint) ends the process, as it always did.
            Err(error)
                if progress.started && error.is_transient() && !stop.load(Ordering::Relaxed) =>
            {
                error
            }
            finished => return finished,
        };
        let progressed = progress.counts.checkpoints > checkpoints_before;
        let Some(delay) = budget.next(progressed, Instant::now()) else {
            tracing::error!(%error, restarts = restart::MAX_RESTARTS, "the pipeline failed again, without a checkpoint committed since its last restarts: giving up");
            return Err(error);
        };
        tracing::warn!(%error, retry_in = ?delay, "the pipeline failed; starting the pipeline again from the last checkpoint");
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                // Nothing since the last checkpoint was committed: the next start redoes it.
                tracing::info!("stop requested while waiting to start the pipeline again");
                return Ok(RunReport {
                    counts: progress.counts,
                });
            }
            // Waiting on purpose is not a stalled loop.
            health.polled();
            std::thread::sleep(Duration::from_millis(50));
        }
        metrics::counter!(metric::PIPELINE_RESTARTS).increment(1);
        // The next start-up counts as live, as the first did, until its poll loop polls.
        health.starting_again();
    }
}

/// How long a stalled poll loop may stay stalled before the process exits: this many stall
/// timeouts, and at least [`STALL_EXIT_FLOOR`].
const STALL_EXIT_FACTOR: u32 = 4;
const STALL_EXIT_FLOOR: Duration = Duration::from_secs(60);

/// How long a stall lasts before the process exits (see [`watch_poll_loop`]).
fn stall_exit_after(stall_timeout: Duration) -> Duration {
    (stall_timeout * STALL_EXIT_FACTOR).max(STALL_EXIT_FLOOR)
}

/// Ends the process as a kill would, without exit handlers: RocksDB's static destructors would
/// otherwise join its background threads while another thread is stuck inside a client call. The
/// store and the transaction are crash-safe (the kill -9 tests), and the log line is written already
/// (tracing writes to stderr unbuffered).
fn exit_at_once(code: i32) -> ! {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: _exit ends the process at once; nothing of this process runs after it.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    std::process::exit(code)
}

/// The watchdog: reports (once per stall, in the log and the metrics) when the poll loop has not
/// polled for the stall timeout — a stuck broker call or a slow checkpoint that would otherwise only
/// show as a silent consumer lag — and exits the process when it stays stalled. It watches every
/// run and the steps between them (the abort after an error, leaving the group), which wait on
/// the cluster too. `/healthz` reads the same [`Health`].
fn watch_poll_loop(health: &Health, done: &AtomicBool, exit_after: Duration) {
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
        // A client call that never returns keeps the loop stalled for good: librdkafka's
        // send_offsets_to_transaction can wait without end for a coordinator that went away
        // (confluentinc/librdkafka#5456, #5511; seen on the three-node cluster after two of its
        // brokers came back). Exiting, as a liveness probe would restart the pod, commits nothing
        // after the last checkpoint: the restart resumes from it, like after a kill -9.
        if health
            .since_last_poll()
            .is_some_and(|since| since >= exit_after)
        {
            tracing::error!(stalled_for = ?health.since_last_poll(), "the poll loop has been stalled too long (a client call that does not return); exiting so the instance is restarted from its last checkpoint");
            exit_at_once(1);
        }
    }
}

//! Telemetry: the name, kind, unit and help of every metric streamagg exports (defined once, here),
//! the Prometheus recorder with explicit histogram buckets, the health the poll loop reports, and
//! the HTTP endpoint that serves `/metrics`, `/healthz` and `/readyz` ([`server`]).
//!
//! Counters of the hot path are plain integers in the processor, published as absolute values once
//! a second; only rare events (rebalances, stalls, producer errors) and per-window observations
//! touch the recorder directly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use rdkafka::statistics::Partition;

/// Metric names. Counters end in `_total`, units are base units, labels are bounded (topic,
/// partition and fixed reasons only; never a source).
pub mod metric {
    pub const RECORDS_CONSUMED: &str = "streamagg_records_consumed_total";
    pub const EVENTS_AGGREGATED: &str = "streamagg_events_aggregated_total";
    pub const EVENTS_LATE: &str = "streamagg_events_late_total";
    pub const EVENTS_LATE_ROLLED_UP: &str = "streamagg_events_late_rolled_up_total";
    pub const EVENTS_FILTERED: &str = "streamagg_events_filtered_total";
    pub const RECORDS_INVALID: &str = "streamagg_records_invalid_total";
    pub const RECORDS_REPLAYED: &str = "streamagg_records_replayed_total";
    pub const WINDOWS_EMITTED: &str = "streamagg_windows_emitted_total";
    pub const WINDOWS_POSSIBLY_SPLIT: &str = "streamagg_windows_possibly_split_total";
    pub const INPUT_PARTITIONS_ADDED: &str = "streamagg_input_partitions_added_total";
    pub const OPEN_WINDOWS: &str = "streamagg_open_windows";
    pub const ASSIGNED_PARTITIONS: &str = "streamagg_assigned_partitions";
    pub const STATE_KEYS: &str = "streamagg_state_keys";
    pub const STATE_SIZE_BYTES: &str = "streamagg_state_size_bytes";
    pub const CHECKPOINTS: &str = "streamagg_checkpoints_total";
    pub const CHECKPOINT_FAILURES: &str = "streamagg_checkpoint_failures_total";
    pub const PIPELINE_RESTARTS: &str = "streamagg_pipeline_restarts_total";
    pub const CHECKPOINT_DURATION_SECONDS: &str = "streamagg_checkpoint_duration_seconds";
    pub const TRANSACTION_ABORTS: &str = "streamagg_transaction_aborts_total";
    pub const PARTITION_RESETS: &str = "streamagg_partition_resets_total";
    pub const INPUT_RECORDS_TRIMMED: &str = "streamagg_input_records_trimmed_total";
    pub const REBALANCES: &str = "streamagg_rebalances_total";
    pub const CONSUMER_LAG_RECORDS: &str = "streamagg_consumer_lag_records";
    pub const EMIT_LATENCY_SECONDS: &str = "streamagg_emit_latency_seconds";
    pub const STREAM_TIME_SECONDS: &str = "streamagg_stream_time_seconds";
    pub const WATERMARK_LAG_SECONDS: &str = "streamagg_watermark_lag_seconds";
    pub const PRODUCER_ERRORS: &str = "streamagg_producer_errors_total";
    pub const POLL_LOOP_STALLS: &str = "streamagg_poll_loop_stalls_total";
    pub const POLL_LOOP_STALLED: &str = "streamagg_poll_loop_stalled";
    pub const READY: &str = "streamagg_ready";
    pub const BUILD_INFO: &str = "streamagg_build_info";
    // The Schema Registry (`avro-confluent`); `outcome` is `ok`, `not_found`, `retried` or `failed`.
    pub const SCHEMA_REGISTRY_REQUESTS: &str = "streamagg_schema_registry_requests_total";
    pub const WRITER_SCHEMAS_UNRESOLVABLE: &str = "streamagg_writer_schemas_unresolvable_total";
    // `streamagg ingest`, the gateway; `protocol` is `tcp` or `http`.
    pub const INGEST_EVENTS_ACCEPTED: &str = "streamagg_ingest_events_accepted_total";
    pub const INGEST_EVENTS_REJECTED: &str = "streamagg_ingest_events_rejected_total";
    pub const INGEST_EVENTS_DELIVERED: &str = "streamagg_ingest_events_delivered_total";
    pub const INGEST_DELIVERY_FAILURES: &str = "streamagg_ingest_delivery_failures_total";
    pub const INGEST_IN_FLIGHT_EVENTS: &str = "streamagg_ingest_in_flight_events";
    pub const INGEST_IN_FLIGHT_BYTES: &str = "streamagg_ingest_in_flight_bytes";
    pub const INGEST_ACK_LATENCY_SECONDS: &str = "streamagg_ingest_ack_latency_seconds";
    pub const INGEST_OPEN_CONNECTIONS: &str = "streamagg_ingest_open_connections";
    pub const INGEST_CONNECTIONS_REFUSED: &str = "streamagg_ingest_connections_refused_total";
    pub const INGEST_HTTP_RESPONSES: &str = "streamagg_ingest_http_responses_total";
    // The process's own resources ([`super::process`]), named as the Prometheus client libraries'
    // process collectors name them.
    pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
    pub const RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
    pub const VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
    pub const THREADS: &str = "process_threads";
    pub const OPEN_FDS: &str = "process_open_fds";
    pub const MAX_FDS: &str = "process_max_fds";
    pub const START_TIME_SECONDS: &str = "process_start_time_seconds";
}

/// Histogram buckets (upper bounds, seconds) of checkpoint and transaction-commit durations.
pub const CHECKPOINT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets (upper bounds, seconds) of event-time-to-emission latency: a window closes
/// `grace` after its end at the earliest, so the interesting range starts at seconds.
pub const EMIT_LATENCY_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Histogram buckets (upper bounds, seconds) of the gateway's time from handing events to the
/// producer to Kafka's acknowledgement (librdkafka batches for `linger.ms` first).
pub const ACK_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error("cannot serve metrics on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: String },
}

/// Installs the process-wide Prometheus recorder and describes every metric. Gauges that are not
/// updated for `stale_after` (e.g. lag of a partition no longer assigned) drop out of the output.
pub fn install_recorder(stale_after: Duration) -> Result<PrometheusHandle, TelemetryError> {
    let builder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(stale_after))
        .set_buckets_for_metric(
            Matcher::Full(metric::CHECKPOINT_DURATION_SECONDS.into()),
            CHECKPOINT_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(metric::EMIT_LATENCY_SECONDS.into()),
                EMIT_LATENCY_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(metric::INGEST_ACK_LATENCY_SECONDS.into()),
                ACK_LATENCY_BUCKETS,
            )
        })
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    let handle = builder
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metric::*;
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RECORDS_CONSUMED,
        Unit::Count,
        "Input records read from Kafka."
    );
    describe_counter!(
        EVENTS_AGGREGATED,
        Unit::Count,
        "Events added to an open window."
    );
    describe_counter!(
        EVENTS_LATE,
        Unit::Count,
        "Events whose window had already closed on their partition."
    );
    describe_counter!(
        EVENTS_LATE_ROLLED_UP,
        Unit::Count,
        "Late events a larger window size (--window 1m,5m,...) was still open for and took: missing only from the smaller sizes' results."
    );
    describe_counter!(
        EVENTS_FILTERED,
        Unit::Count,
        "Events dropped by --min-value before aggregation."
    );
    describe_counter!(
        RECORDS_INVALID,
        Unit::Count,
        "Undecodable or invalid records (forwarded to the DLQ topic if set)."
    );
    describe_counter!(RECORDS_REPLAYED, Unit::Count, "Records re-read to rebuild the open windows of a partition taken over without current local state.");
    describe_counter!(
        WINDOWS_EMITTED,
        Unit::Count,
        "Closed windows whose average was produced to the output topic."
    );
    describe_counter!(
        WINDOWS_POSSIBLY_SPLIT,
        Unit::Count,
        "Windows emitted with the header streamagg.possibly_split: their source is not in the partition the input partitioner puts it in now (partitions were added), so another part of the window may be emitted from its new partition."
    );
    describe_counter!(
        INPUT_PARTITIONS_ADDED,
        Unit::Count,
        "Partitions added to an input topic while this instance ran (seen at a rebalance)."
    );
    describe_gauge!(
        OPEN_WINDOWS,
        Unit::Count,
        "(window, source) aggregates currently open."
    );
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        Unit::Count,
        "Input partitions this instance owns."
    );
    describe_gauge!(
        STATE_KEYS,
        Unit::Count,
        "Estimated keys in the RocksDB state store."
    );
    describe_gauge!(
        STATE_SIZE_BYTES,
        Unit::Bytes,
        "RocksDB state store size: SST files plus memtables."
    );
    describe_counter!(
        CHECKPOINTS,
        Unit::Count,
        "Checkpoints written (exactly-once: transactions committed)."
    );
    describe_counter!(
        CHECKPOINT_FAILURES,
        Unit::Count,
        "Checkpoints that failed (the instance stops, or aborts and redoes the work)."
    );
    describe_counter!(
        PIPELINE_RESTARTS,
        Unit::Count,
        "In-process restarts of the pipeline after a transient failure (after 5 in a row without a checkpoint the process exits)."
    );
    describe_histogram!(
        CHECKPOINT_DURATION_SECONDS,
        Unit::Seconds,
        "Time to write one checkpoint: flush or transaction commit, then RocksDB."
    );
    describe_counter!(
        TRANSACTION_ABORTS,
        Unit::Count,
        "Transactions aborted and redone from the last checkpoint."
    );
    describe_counter!(
        PARTITION_RESETS,
        Unit::Count,
        "Partitions whose state was dropped and that are processed again, by reason: log_went_back (topic recreated, log truncated: from the log's beginning), group_reset (the group's offset was reset with `streamagg reset` or kafka-consumer-groups: from the reset offset)."
    );
    describe_counter!(
        INPUT_RECORDS_TRIMMED,
        Unit::Count,
        "Input records (offsets, transaction markers included) deleted by retention or DeleteRecords before this instance read them, each counted once per process, by what they are missing from: rebuild (the windows open at a hand-off, rebuilt from what is left and emitted short), unread (never processed: a resume below the log's start, or an instance that fell behind retention)."
    );
    describe_counter!(
        REBALANCES,
        Unit::Count,
        "Consumer group rebalance callbacks, by event (assigned, revoked)."
    );
    describe_gauge!(CONSUMER_LAG_RECORDS, Unit::Count, "Records between the consumer's position and the end of the partition (librdkafka statistics).");
    describe_histogram!(
        EMIT_LATENCY_SECONDS,
        Unit::Seconds,
        "Wall clock at emission minus the window's end, once per window start and partition closed."
    );
    describe_gauge!(
        STREAM_TIME_SECONDS,
        Unit::Seconds,
        "Stream time (largest event time seen) of an owned partition, Unix seconds."
    );
    describe_gauge!(
        WATERMARK_LAG_SECONDS,
        Unit::Seconds,
        "Wall clock minus the stream time of an owned partition."
    );
    describe_counter!(
        PRODUCER_ERRORS,
        Unit::Count,
        "Records the producer failed to deliver."
    );
    describe_counter!(
        POLL_LOOP_STALLS,
        Unit::Count,
        "Times the poll loop went longer than --stall-timeout without polling."
    );
    describe_gauge!(
        POLL_LOOP_STALLED,
        Unit::Count,
        "1 while the poll loop is stalled (then /healthz fails)."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 once partitions are assigned and their state restored (/readyz)."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; labels carry the version and the delivery guarantee."
    );
    describe_counter!(
        SCHEMA_REGISTRY_REQUESTS,
        Unit::Count,
        "Schema Registry requests, by outcome (ok, not_found, retried, failed)."
    );
    describe_counter!(
        WRITER_SCHEMAS_UNRESOLVABLE,
        Unit::Count,
        "Writer schema ids (registry) that cannot be read as TrafficEvent: each of their records goes to the DLQ."
    );
    describe_counter!(
        INGEST_EVENTS_ACCEPTED,
        Unit::Count,
        "Gateway: valid events handed to the producer, by protocol."
    );
    describe_counter!(
        INGEST_EVENTS_REJECTED,
        Unit::Count,
        "Gateway: lines or array elements refused, by protocol and reason."
    );
    describe_counter!(
        INGEST_EVENTS_DELIVERED,
        Unit::Count,
        "Gateway: events Kafka acknowledged, by protocol."
    );
    describe_counter!(
        INGEST_DELIVERY_FAILURES,
        Unit::Count,
        "Gateway: accepted events the producer failed to deliver, by protocol."
    );
    describe_gauge!(
        INGEST_IN_FLIGHT_EVENTS,
        Unit::Count,
        "Gateway: events handed to the producer and not yet acknowledged."
    );
    describe_gauge!(
        INGEST_IN_FLIGHT_BYTES,
        Unit::Bytes,
        "Gateway: in-flight budget in use (payload bytes plus a per-event overhead)."
    );
    describe_histogram!(
        INGEST_ACK_LATENCY_SECONDS,
        Unit::Seconds,
        "Gateway: from handing events to the producer to Kafka's acknowledgement (per HTTP request; a sample of TCP events)."
    );
    describe_gauge!(
        INGEST_OPEN_CONNECTIONS,
        Unit::Count,
        "Gateway: open client connections, by protocol."
    );
    describe_counter!(
        INGEST_CONNECTIONS_REFUSED,
        Unit::Count,
        "Gateway: connections refused because the listener had --max-connections open."
    );
    describe_counter!(
        INGEST_HTTP_RESPONSES,
        Unit::Count,
        "Gateway: HTTP responses, by status code."
    );
}

/// Liveness and readiness, fed by the poll loop and the processor, read by the HTTP endpoint.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the latest poll; 0 before the first.
    last_poll_ms: AtomicU64,
    ready: AtomicBool,
    stall_after: Duration,
}

impl Health {
    pub fn new(stall_after: Duration) -> Self {
        Health {
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stall_after,
        }
    }

    /// Called by the poll loop every time it polls.
    pub fn polled(&self) {
        self.polled_at(Instant::now());
    }

    /// [`Self::polled`], unless the poll loop's work has been waiting on a call since `since`
    /// (then the loop counts as having last polled at `since`).
    pub fn polled_unless_waiting_since(&self, since: Option<Instant>) {
        self.polled_at(since.unwrap_or_else(Instant::now));
    }

    fn polled_at(&self, at: Instant) {
        let ms = (at.saturating_duration_since(self.started).as_millis() as u64).max(1);
        self.last_poll_ms.store(ms, Ordering::Relaxed);
    }

    /// A new run of the pipeline starts: its start-up counts as live, as the first one did, until
    /// its poll loop polls.
    pub fn starting_again(&self) {
        self.last_poll_ms.store(0, Ordering::Relaxed);
    }

    /// How long since the poll loop last polled; `None` before it first did (start-up).
    pub fn since_last_poll(&self) -> Option<Duration> {
        match self.last_poll_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    /// Live unless the poll loop has gone `stall_after` without polling.
    pub fn is_live(&self) -> bool {
        self.since_last_poll()
            .is_none_or(|since| since < self.stall_after)
    }

    pub fn set_ready(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            tracing::info!(ready, "readiness changed");
        }
    }

    /// Partitions assigned and restored, and the poll loop live.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.is_live()
    }

    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }
}

/// Records behind the end of a partition, from its librdkafka statistics: the last stable offset
/// (read_committed) or high watermark, minus the position handed to the application (or the
/// committed offset before the first record). `None` for partitions not being fetched.
///
/// librdkafka's own `consumer_lag` is measured from the consumer's committed offset, which
/// transactional commits (`send_offsets_to_transaction`) do not update, so it is not used.
pub fn partition_lag(partition: &Partition) -> Option<i64> {
    if partition.partition < 0 || partition.fetch_state != "active" {
        return None;
    }
    let end = if partition.ls_offset >= 0 {
        partition.ls_offset
    } else {
        partition.hi_offset
    };
    let position = if partition.app_offset >= 0 {
        partition.app_offset
    } else {
        partition.committed_offset
    };
    (end >= 0 && position >= 0).then(|| (end - position).max(0))
}

/// Publishes the lag of every fetched partition in a librdkafka statistics report.
pub fn publish_consumer_lag(statistics: &rdkafka::Statistics) {
    for (topic, t) in &statistics.topics {
        for partition in t.partitions.values() {
            if let Some(lag) = partition_lag(partition) {
                metrics::gauge!(
                    metric::CONSUMER_LAG_RECORDS,
                    "topic" => topic.clone(),
                    "partition" => partition.partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }
}

pub mod process;
mod server;
pub mod write_deadline;
pub use server::{
    http_get, http_get_with, serve, ClientConnections, ClientSlot, Endpoint, RateLimitedWarning,
    HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_RESPONSE_BYTES,
};

#[cfg(test)]
mod tests;

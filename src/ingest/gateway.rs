//! The gateway's shared state: one producer whose delivery reports complete each event's
//! [`Pending`], the in-flight byte budget every event holds until its report, and the counts
//! published once a second.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::body::ClientBudgets;
use super::frame;
use super::settings::Limits;
use crate::codec::Format;
use crate::config::cluster::Secret;
use crate::kafka::context::{ConnectionAware, StreamaggContext};
use crate::telemetry::{metric, RateLimitedWarning};

/// Bookkeeping bytes counted per event on top of its payload against the in-flight budget.
pub(super) const EVENT_OVERHEAD_BYTES: usize = 64;

/// The two doors, as a metric label and an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp = 0,
    Http = 1,
}

impl Protocol {
    const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Http];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

/// The HTTP statuses the gateway answers with, counted by code.
pub(super) const HTTP_CODES: [u16; 9] = [200, 400, 401, 404, 405, 408, 413, 500, 503];

/// Counts kept as plain atomics on the hot path and published to the recorder once a second.
#[derive(Default)]
pub struct Stats {
    pub(super) accepted: [AtomicU64; 2],
    pub(super) delivered: [AtomicU64; 2],
    pub(super) failed: [AtomicU64; 2],
    pub(super) rejected: [[AtomicU64; Rejection::LABELS.len()]; 2],
    pub(super) open_connections: [AtomicI64; 2],
    pub(super) refused_connections: [AtomicU64; 2],
    pub(super) responses: [AtomicU64; HTTP_CODES.len()],
    pub(super) in_flight_events: AtomicI64,
}

use frame::Rejection;

impl Stats {
    pub(super) fn rejected(&self, protocol: Protocol, reason: &Rejection) {
        self.rejected[protocol as usize][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn response(&self, status: u16) {
        if let Some(i) = HTTP_CODES.iter().position(|&c| c == status) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn publish(&self, in_flight_bytes: usize) {
        for protocol in Protocol::ALL {
            let p = protocol as usize;
            let label = protocol.label();
            for (name, value) in [
                (metric::INGEST_EVENTS_ACCEPTED, &self.accepted[p]),
                (metric::INGEST_EVENTS_DELIVERED, &self.delivered[p]),
                (metric::INGEST_DELIVERY_FAILURES, &self.failed[p]),
                (
                    metric::INGEST_CONNECTIONS_REFUSED,
                    &self.refused_connections[p],
                ),
            ] {
                metrics::counter!(name, "protocol" => label)
                    .absolute(value.load(Ordering::Relaxed));
            }
            for (reason, count) in Rejection::LABELS.iter().zip(&self.rejected[p]) {
                metrics::counter!(metric::INGEST_EVENTS_REJECTED, "protocol" => label, "reason" => *reason)
                    .absolute(count.load(Ordering::Relaxed));
            }
            metrics::gauge!(metric::INGEST_OPEN_CONNECTIONS, "protocol" => label)
                .set(self.open_connections[p].load(Ordering::Relaxed) as f64);
        }
        for (code, count) in HTTP_CODES.iter().zip(&self.responses) {
            metrics::counter!(metric::INGEST_HTTP_RESPONSES, "code" => code.to_string())
                .absolute(count.load(Ordering::Relaxed));
        }
        metrics::gauge!(metric::INGEST_IN_FLIGHT_EVENTS)
            .set(self.in_flight_events.load(Ordering::Relaxed) as f64);
        metrics::gauge!(metric::INGEST_IN_FLIGHT_BYTES).set(in_flight_bytes as f64);
    }
}

/// What the producer carries with each record until its delivery report.
pub struct Pending {
    pub(super) protocol: Protocol,
    /// Released (dropped) when the delivery report arrives.
    pub(super) _budget: OwnedSemaphorePermit,
    /// The HTTP request waiting for this event.
    pub(super) ack: Option<oneshot::Sender<Result<(), DeliveryFailure>>>,
    /// Set on a sample of TCP events: their delivery latency is recorded.
    pub(super) sent_at: Option<Instant>,
}

/// The gateway producer's client context: librdkafka logs like every streamagg client, delivery
/// reports released to whoever waits, and the cluster's availability as librdkafka reports it.
pub struct GatewayContext {
    pub(super) inner: StreamaggContext,
    pub(super) stats: Arc<Stats>,
    /// Set by the monitor while the cluster does not answer a metadata request.
    pub(super) brokers_down: AtomicBool,
    /// Set when librdkafka reports a failed connection: the monitor probes the cluster.
    pub(super) suspect: AtomicBool,
    /// Set on a fatal producer error: the gateway stops.
    pub(super) fatal: std::sync::Mutex<Option<String>>,
}

impl ClientContext for GatewayContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.inner.log_line(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            // librdkafka reports every failed connection attempt; the monitor then asks the
            // cluster whether it still answers.
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                self.suspect.store(true, Ordering::Relaxed);
            }
            Some(RDKafkaErrorCode::Fatal) => {
                if let Ok(mut fatal) = self.fatal.lock() {
                    fatal.get_or_insert_with(|| format!("{error}: {reason}"));
                }
            }
            _ => {}
        }
        self.inner.log_error(error, reason);
    }
}

impl ConnectionAware for GatewayContext {
    fn mark_connected(&self) {
        self.inner.mark_connected();
    }

    fn refusal(&self) -> Option<String> {
        self.inner.refusal()
    }
}

impl ProducerContext for GatewayContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let p = pending.protocol as usize;
        self.stats.in_flight_events.fetch_sub(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(_) => {
                self.stats.delivered[p].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((error, _)) => {
                self.stats.failed[p].fetch_add(1, Ordering::Relaxed);
                Err(DeliveryFailure::from(error))
            }
        };
        if let Some(sent_at) = pending.sent_at {
            metrics::histogram!(metric::INGEST_ACK_LATENCY_SECONDS, "protocol" => pending.protocol.label())
                .record(sent_at.elapsed().as_secs_f64());
        }
        if let Some(ack) = pending.ack {
            let _ = ack.send(outcome);
        }
    }
}

/// Why Kafka did not take an event, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DeliveryFailure {
    pub(super) text: String,
    /// The event itself is refused (too large for the topic, malformed): a retry fails the same way.
    pub(super) permanent: bool,
}

impl DeliveryFailure {
    pub(super) fn transient(text: impl Into<String>) -> Self {
        DeliveryFailure {
            text: text.into(),
            permanent: false,
        }
    }
}

impl From<&KafkaError> for DeliveryFailure {
    fn from(error: &KafkaError) -> Self {
        DeliveryFailure {
            text: error.to_string(),
            permanent: is_permanent(error),
        }
    }
}

/// Whether Kafka refuses this very record, so that sending it again cannot succeed.
pub(super) fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

/// Why an event could not be handed to the producer.
pub(super) enum EnqueueError {
    /// The local queue is full: try again later.
    QueueFull,
    Other(KafkaError),
}

/// What both doors share.
pub struct Gateway {
    pub(super) producer: ThreadedProducer<GatewayContext>,
    pub(super) topic: String,
    pub(super) format: Format,
    pub(super) limits: Limits,
    pub(super) delivery_timeout: Duration,
    pub(super) token: Option<Secret>,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) bodies: Arc<Semaphore>,
    /// Held by the one request that may wait for more of `bodies` while holding some of it.
    pub(super) grow_turn: tokio::sync::Mutex<()>,
    /// Body bytes each client address holds (bounded per client).
    pub(super) clients: Arc<ClientBudgets>,
    pub(super) stats: Arc<Stats>,
    /// Every TCP event whose number is a multiple of this has its delivery latency recorded.
    pub(super) tcp_latency_sample: u64,
    pub(super) tcp_counter: AtomicU64,
    /// Failed authentications (HTTP `401`s are also counted by status), warned about at most once
    /// per interval.
    pub(super) auth_failures: AtomicU64,
    pub(super) auth_failed: RateLimitedWarning,
}

impl Gateway {
    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts a wrong or missing token from `client`, with a rate-limited warning.
    pub(super) fn failed_authentication(&self, protocol: Protocol, client: Option<IpAddr>) {
        let total = self.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.auth_failed.warn(|suppressed| {
            tracing::warn!(
                protocol = protocol.label(),
                client = ?client,
                total,
                suppressed,
                "a client presented a wrong or no token; its connection is closed"
            );
        });
    }

    /// Whether events should be refused up front: the cluster is unreachable or the producer is dead.
    pub(super) fn unavailable(&self) -> bool {
        let context = self.producer.context();
        context.brokers_down.load(Ordering::Relaxed)
            || context.fatal.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    /// The in-flight budget one event of `payload_len` bytes takes.
    pub(super) fn cost(payload_len: usize) -> u32 {
        u32::try_from(payload_len + EVENT_OVERHEAD_BYTES).unwrap_or(u32::MAX)
    }

    /// Hands one event to the producer. On failure the budget is released.
    pub(super) fn enqueue(
        &self,
        key: &[u8],
        payload: &[u8],
        protocol: Protocol,
        budget: OwnedSemaphorePermit,
        ack: Option<oneshot::Sender<Result<(), DeliveryFailure>>>,
    ) -> Result<(), EnqueueError> {
        let sent_at = match protocol {
            Protocol::Http => None,
            Protocol::Tcp => {
                let n = self.tcp_counter.fetch_add(1, Ordering::Relaxed);
                n.is_multiple_of(self.tcp_latency_sample).then(Instant::now)
            }
        };
        let pending = Box::new(Pending {
            protocol,
            _budget: budget,
            ack,
            sent_at,
        });
        let record = BaseRecord::with_opaque_to(&self.topic, pending)
            .key(key)
            .payload(payload);
        self.stats.in_flight_events.fetch_add(1, Ordering::Relaxed);
        match self.producer.send(record) {
            Ok(()) => {
                self.stats.accepted[protocol as usize].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((error, _record)) => {
                self.stats.in_flight_events.fetch_sub(1, Ordering::Relaxed);
                match error {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        Err(EnqueueError::QueueFull)
                    }
                    other => Err(EnqueueError::Other(other)),
                }
            }
        }
    }
}

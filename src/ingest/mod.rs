//! `streamagg ingest`: a gateway that turns newline-delimited JSON over TCP and `POST /v1/events` over
//! HTTP into `TrafficEvent` records on a Kafka topic, keyed by `source`, for traffic sources that
//! cannot speak Kafka.
//!
//! Events are validated with the processor's own rules ([`frame::validate_line`]), encoded with
//! [`crate::codec::encode`] and produced by one idempotent, batching, compressing producer configured
//! as [`crate::producer`]'s. Every event handed to the producer holds permits of one byte budget
//! ([`settings::Limits::max_in_flight_bytes`]) until its delivery report: when the budget is spent, TCP
//! connections stop being read and HTTP requests are answered `503`, so memory stays bounded.
//!
//! **Invariant:** an HTTP `200` (or a `400` that counts accepted events) is sent only after Kafka
//! acknowledged every accepted event of the request. TCP has no acknowledgement: it is at-most-once
//! if the gateway dies.

pub mod frame;
mod http;
pub mod settings;
mod tcp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::codec::Format;
use crate::config::cluster::Secret;
use crate::kafka::{self, ConnectionAware, KafkaSetupError, StreamaggContext};
use crate::telemetry::{metric, Health};
use settings::{IngestSettings, Limits};

/// Bookkeeping bytes counted per event on top of its payload against the in-flight budget.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// Why the gateway could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot listen on {addr} ({flag}): {cause}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("the producer failed fatally: {0}")]
    ProducerFatal(String),
    #[error("the gateway's runtime failed: {0}")]
    Runtime(String),
}

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
const HTTP_CODES: [u16; 9] = [200, 400, 401, 404, 405, 408, 413, 500, 503];

/// Counts kept as plain atomics on the hot path and published to the recorder once a second.
#[derive(Default)]
pub struct Stats {
    accepted: [AtomicU64; 2],
    delivered: [AtomicU64; 2],
    failed: [AtomicU64; 2],
    rejected: [[AtomicU64; Rejection::LABELS.len()]; 2],
    open_connections: [AtomicI64; 2],
    refused_connections: [AtomicU64; 2],
    responses: [AtomicU64; HTTP_CODES.len()],
    in_flight_events: AtomicI64,
}

use frame::Rejection;

impl Stats {
    fn rejected(&self, protocol: Protocol, reason: &Rejection) {
        self.rejected[protocol as usize][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn response(&self, status: u16) {
        if let Some(i) = HTTP_CODES.iter().position(|&c| c == status) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn publish(&self, in_flight_bytes: usize) {
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
    protocol: Protocol,
    /// Released (dropped) when the delivery report arrives.
    _budget: OwnedSemaphorePermit,
    /// The HTTP request waiting for this event.
    ack: Option<oneshot::Sender<Result<(), String>>>,
    /// Set on a sample of TCP events: their delivery latency is recorded.
    sent_at: Option<Instant>,
}

/// The gateway producer's client context: librdkafka logs like every streamagg client, delivery
/// reports released to whoever waits, and the cluster's availability as librdkafka reports it.
pub struct GatewayContext {
    inner: StreamaggContext,
    stats: Arc<Stats>,
    /// Set by the monitor while the cluster does not answer a metadata request.
    brokers_down: AtomicBool,
    /// Set when librdkafka reports a failed connection: the monitor probes the cluster.
    suspect: AtomicBool,
    /// Set on a fatal producer error: the gateway stops.
    fatal: std::sync::Mutex<Option<String>>,
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
                Err(error.to_string())
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

/// Why an event could not be handed to the producer.
enum EnqueueError {
    /// The local queue is full: try again later.
    QueueFull,
    Other(KafkaError),
}

/// What both doors share.
pub struct Gateway {
    producer: ThreadedProducer<GatewayContext>,
    topic: String,
    format: Format,
    limits: Limits,
    delivery_timeout: Duration,
    token: Option<Secret>,
    in_flight: Arc<Semaphore>,
    bodies: Arc<Semaphore>,
    stats: Arc<Stats>,
    /// Every TCP event whose number is a multiple of this has its delivery latency recorded.
    tcp_latency_sample: u64,
    tcp_counter: AtomicU64,
}

impl Gateway {
    fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether events should be refused up front: the cluster is unreachable or the producer is dead.
    fn unavailable(&self) -> bool {
        let context = self.producer.context();
        context.brokers_down.load(Ordering::Relaxed)
            || context.fatal.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    /// The in-flight budget one event of `payload_len` bytes takes.
    fn cost(payload_len: usize) -> u32 {
        u32::try_from(payload_len + EVENT_OVERHEAD_BYTES).unwrap_or(u32::MAX)
    }

    /// Hands one event to the producer. On failure the budget is released.
    fn enqueue(
        &self,
        key: &[u8],
        payload: &[u8],
        protocol: Protocol,
        budget: OwnedSemaphorePermit,
        ack: Option<oneshot::Sender<Result<(), String>>>,
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

/// Binds the listeners, connects the producer (the cluster must answer within `kafka.timeout` and
/// the topic must exist), then serves until `shutdown` resolves: stops accepting, lets open
/// requests finish, flushes the producer. `health` turns ready once serving.
pub async fn run(
    settings: IngestSettings,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), IngestError> {
    let bind = |flag: &'static str, addr: SocketAddr| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|cause| IngestError::Bind { flag, addr, cause })
    };
    let tcp_listener = settings
        .listen_tcp
        .map(|addr| bind("--listen-tcp", addr))
        .transpose()?;
    let http_listener = settings
        .listen_http
        .map(|addr| bind("--listen-http", addr))
        .transpose()?;

    let stats = Arc::new(Stats::default());
    let producer = {
        let settings = settings.clone();
        let stats = Arc::clone(&stats);
        tokio::task::spawn_blocking(move || connect(&settings, stats))
            .await
            .map_err(|e| IngestError::Runtime(e.to_string()))??
    };
    let gateway = Arc::new(Gateway {
        producer,
        topic: settings.topic.clone(),
        format: settings.format,
        in_flight: Arc::new(Semaphore::new(settings.limits.max_in_flight_bytes)),
        bodies: Arc::new(Semaphore::new(settings.limits.max_buffered_body_bytes)),
        limits: settings.limits.clone(),
        delivery_timeout: settings.delivery_timeout,
        token: settings.http_token.clone(),
        stats,
        tcp_latency_sample: 64,
        tcp_counter: AtomicU64::new(0),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; when all are gone, recv() returns None.
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut bound = Vec::new();
    if let Some(listener) = tcp_listener {
        bound.push(format!("tcp={}", local_addr(&listener)));
        tokio::spawn(tcp::serve(
            listener,
            Arc::clone(&gateway),
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }
    if let Some(listener) = http_listener {
        bound.push(format!("http={}", local_addr(&listener)));
        tokio::spawn(http::serve(
            listener,
            Arc::clone(&gateway),
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }
    drop(alive_tx);
    let monitor = tokio::spawn(monitor(Arc::clone(&gateway), Arc::clone(&health)));
    health.polled();
    health.set_ready(true);
    tracing::info!(
        topic = %settings.topic,
        format = ?settings.format,
        "ingest gateway ready: {}",
        bound.join(" ")
    );

    let fatal = tokio::select! {
        () = shutdown => None,
        fatal = wait_fatal(&gateway) => Some(fatal),
    };
    health.set_ready(false);
    tracing::info!("stopping: no new connections; finishing open requests");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(settings.shutdown_timeout, alive_rx.recv()).await;
    if drained.is_err() {
        tracing::warn!(
            waited = ?settings.shutdown_timeout,
            "connections still open at the shutdown timeout; closing them"
        );
    }
    monitor.abort();
    let flush = {
        let gateway = Arc::clone(&gateway);
        let timeout = settings.shutdown_timeout;
        tokio::task::spawn_blocking(move || gateway.producer.flush(timeout))
            .await
            .map_err(|e| IngestError::Runtime(e.to_string()))?
    };
    gateway.stats().publish(0);
    if let Some(fatal) = fatal {
        return Err(IngestError::ProducerFatal(fatal));
    }
    if let Err(error) = flush {
        tracing::warn!(%error, "events still undelivered at exit (TCP events are best effort)");
    }
    tracing::info!("stopped");
    Ok(())
}

fn local_addr(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("?({e})"), |a| a.to_string())
}

/// The producer, configured as [`crate::producer`]'s, with deliveries bounded by `delivery_timeout`;
/// fails unless the cluster answers within `kafka.timeout` and has the topic. Blocks.
fn connect(
    settings: &IngestSettings,
    stats: Arc<Stats>,
) -> Result<ThreadedProducer<GatewayContext>, KafkaSetupError> {
    let mut config =
        crate::producer::producer_config(&settings.kafka, "streamagg-ingest", &BTreeMap::new());
    config
        .set(
            "message.timeout.ms",
            settings.delivery_timeout.as_millis().to_string(),
        )
        // A request waits for its acknowledgements: batch for a little less long than the generator.
        .set("linger.ms", "5");
    for (key, value) in &settings.producer_properties {
        config.set(key, value);
    }
    let context = GatewayContext {
        inner: StreamaggContext::default(),
        stats,
        brokers_down: AtomicBool::new(false),
        suspect: AtomicBool::new(false),
        fatal: std::sync::Mutex::new(None),
    };
    let producer: ThreadedProducer<GatewayContext> = config
        .create_with_context(context)
        .map_err(KafkaSetupError::Config)?;
    if kafka::partition_count(&producer, &settings.kafka, &settings.topic)?.is_none() {
        return Err(KafkaSetupError::TopicMissing(settings.topic.clone()));
    }
    Ok(producer)
}

/// Once a second: publish the counts, keep `/healthz` fed, and after librdkafka reported a failed
/// connection (and then every second until it answers) ask the cluster for metadata: while it does
/// not answer, HTTP requests are refused with `503` up front instead of waiting for delivery timeouts.
async fn monitor(gateway: Arc<Gateway>, health: Arc<Health>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        health.polled();
        let in_flight = gateway.limits.max_in_flight_bytes - gateway.in_flight.available_permits();
        gateway.stats().publish(in_flight);
        let context = gateway.producer.context();
        if context.suspect.swap(false, Ordering::Relaxed)
            || context.brokers_down.load(Ordering::Relaxed)
        {
            let probe = Arc::clone(&gateway);
            let answered = tokio::task::spawn_blocking(move || {
                probe
                    .producer
                    .client()
                    .fetch_metadata(Some(&probe.topic), Duration::from_secs(1))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            let was_down = context.brokers_down.swap(!answered, Ordering::Relaxed);
            match (was_down, answered) {
                (false, false) => {
                    tracing::warn!("Kafka does not answer: HTTP requests get 503 until it does")
                }
                (true, true) => tracing::info!("Kafka answers again: accepting events"),
                _ => {}
            }
        }
        health.set_ready(!gateway.unavailable());
    }
}

/// Resolves with the reason once the producer has failed fatally.
async fn wait_fatal(gateway: &Gateway) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(fatal) = gateway.producer.context().fatal.lock() {
            if let Some(reason) = fatal.as_ref() {
                return reason.clone();
            }
        }
    }
}

/// The accept loop both listeners share: accepts connections until `stop` turns true, at most
/// `max_connections` at once; one beyond the limit is counted, sent `refusal` (at most for a second)
/// and closed; each accepted one runs `serve_one` on a task of its own, counted in the protocol's
/// open connections and holding a clone of `alive` until it ends.
async fn accept_connections<Serve, Served>(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    protocol: Protocol,
    stop: watch::Receiver<bool>,
    alive: tokio::sync::mpsc::Sender<()>,
    refusal: impl Fn(&Gateway) -> Vec<u8>,
    serve_one: Serve,
) where
    Serve: Fn(tokio::net::TcpStream, Arc<Gateway>, watch::Receiver<bool>) -> Served,
    Served: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(gateway.limits.max_connections));
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopping.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, typically: back off instead of spinning.
                tracing::warn!(%error, protocol = protocol.label(), "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            gateway.stats.refused_connections[protocol as usize].fetch_add(1, Ordering::Relaxed);
            tokio::spawn(tcp::refuse(stream, refusal(&gateway)));
            continue;
        };
        let served = serve_one(stream, Arc::clone(&gateway), stop.clone());
        let gateway = Arc::clone(&gateway);
        let alive = alive.clone();
        tokio::spawn(async move {
            let open = &gateway.stats.open_connections[protocol as usize];
            open.fetch_add(1, Ordering::Relaxed);
            served.await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop((slot, alive));
        });
    }
}

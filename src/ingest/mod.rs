//! `streamagg ingest`: a gateway that turns newline-delimited JSON over TCP and `POST /v1/events` over
//! HTTP into `TrafficEvent` records on a Kafka topic, keyed by `source`, for traffic sources that
//! cannot speak Kafka.
//!
//! Events are validated with the processor's own rules ([`frame::validate_line`]), encoded with
//! [`crate::codec::encode`] and produced by one idempotent, batching, compressing producer configured
//! as [`crate::produce`]'s. Every event handed to the producer holds permits of one byte budget
//! ([`Limits::max_in_flight_bytes`]) until its delivery report: when the budget is spent, TCP
//! connections stop being read and HTTP requests are answered `503`, so memory stays bounded.
//!
//! **Invariant:** an HTTP `200` (or a `400` that counts accepted events) is sent only after Kafka
//! acknowledged every accepted event of the request. TCP has no acknowledgement: it is at-most-once
//! if the gateway dies.

pub mod frame;
mod http;
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
use crate::config::{
    listen_addr, ConfigError, KafkaOptions, MANAGED_CONNECTION_KEYS, MANAGED_PRODUCER_KEYS,
};
use crate::kafka::{
    self, ConnectionAware, KafkaSettings, KafkaSetupError, Secret, StreamaggContext,
};
use crate::telemetry::{metric, Health};

/// The default port of the gateway's `/metrics`, `/healthz` and `/readyz`: one above the processor's
/// ([`crate::config::DEFAULT_METRICS_PORT`]), so both run on one host with their defaults.
pub const DEFAULT_METRICS_PORT: u16 = 9465;

/// Bookkeeping bytes counted per event on top of its payload against the in-flight budget.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// The limits that keep the gateway's memory and connections bounded.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Limits {
    /// Longest event line in bytes (TCP, and NDJSON bodies), without its newline.
    #[arg(long, env = "STREAMAGG_MAX_LINE_BYTES", default_value_t = 65_536)]
    pub max_line_bytes: usize,
    /// Largest HTTP body in bytes; larger ones get `413`.
    #[arg(long, env = "STREAMAGG_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Open connections per listener; more are refused with one line (TCP) or a `503` (HTTP).
    #[arg(long, env = "STREAMAGG_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Close a TCP connection that completes no line, or an HTTP one that sends no complete head or
    /// body, for this long.
    #[arg(long, env = "STREAMAGG_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Bytes of events (+ a small per-event overhead) handed to Kafka and not yet acknowledged; when
    /// spent, TCP is not read and HTTP answers 503.
    #[arg(long, env = "STREAMAGG_MAX_IN_FLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,
    /// Bytes of HTTP bodies held in memory at once.
    #[arg(long, env = "STREAMAGG_MAX_BUFFERED_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_buffered_body_bytes: usize,
    /// How long an HTTP request waits for room in those budgets before a 503.
    #[arg(long, env = "STREAMAGG_QUEUE_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub queue_wait: Duration,
}

/// `streamagg ingest`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSettings {
    pub kafka: KafkaSettings,
    pub topic: String,
    /// Payload format on the topic.
    pub format: Format,
    pub listen_tcp: Option<SocketAddr>,
    pub listen_http: Option<SocketAddr>,
    pub limits: Limits,
    /// How long the producer keeps trying to deliver an event (`message.timeout.ms`); an HTTP request
    /// whose events are not acknowledged by then gets `503`.
    pub delivery_timeout: Duration,
    /// On SIGTERM, how long in-flight requests and deliveries may take before the gateway exits anyway.
    pub shutdown_timeout: Duration,
    /// Bearer token `POST /v1/events` requires, if any.
    pub http_token: Option<Secret>,
    /// librdkafka producer properties, applied over the defaults.
    pub producer_properties: BTreeMap<String, String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

/// `streamagg ingest` as given by flags and environment (each flag also reads `STREAMAGG_` + its
/// name in upper snake case), before validation.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestOptions {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// Topic to write events to (it must exist).
    #[arg(long, env = "STREAMAGG_TOPIC")]
    pub topic: String,
    /// Payload format on the topic (clients always send JSON).
    #[arg(long, env = "STREAMAGG_FORMAT", value_enum, default_value = "json")]
    pub format: Format,
    /// NDJSON over TCP on this ip:port, or `off`.
    #[arg(long, env = "STREAMAGG_LISTEN_TCP", default_value = "127.0.0.1:8080")]
    pub listen_tcp: String,
    /// HTTP (`POST /v1/events`) on this ip:port, or `off`.
    #[arg(long, env = "STREAMAGG_LISTEN_HTTP", default_value = "127.0.0.1:8081")]
    pub listen_http: String,
    #[command(flatten)]
    pub limits: Limits,
    /// How long the producer tries to deliver an event; an HTTP request not acknowledged by then
    /// gets 503.
    #[arg(long, env = "STREAMAGG_DELIVERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,
    /// On SIGTERM, how long open requests and deliveries may take before exiting anyway.
    #[arg(long, env = "STREAMAGG_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// File holding the bearer token `POST /v1/events` requires (none: no authentication).
    #[arg(long, env = "STREAMAGG_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<std::path::PathBuf>,
    /// The token itself, read from `http_token_file` at the binary's edge; never a flag.
    #[arg(skip)]
    pub http_token: Option<String>,
    /// librdkafka producer property key=value (repeatable; `;` separates several in the
    /// environment variable, since values such as `debug=msg,eos` hold commas), e.g.
    /// compression.type=zstd.
    #[arg(
        long = "producer-property",
        env = "STREAMAGG_PRODUCER_PROPERTIES",
        value_delimiter = ';'
    )]
    pub producer_properties: Vec<String>,
    /// Serve /metrics, /healthz and /readyz on this ip:port, or `off` [default: 127.0.0.1:9465, one
    /// above the processor's default port, so both run on one host].
    #[arg(long, env = "STREAMAGG_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl TryFrom<IngestOptions> for IngestSettings {
    type Error = ConfigError;

    fn try_from(options: IngestOptions) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        let kafka = options.kafka.validate()?;
        let topic = crate::config::topic("topic", options.topic)?;
        let listen_tcp = listen_addr("listen_tcp", &options.listen_tcp)?;
        let listen_http = listen_addr("listen_http", &options.listen_http)?;
        let metrics_addr = match options.metrics_addr.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            Some(text) => listen_addr("metrics_addr", text)?,
        };
        if listen_tcp.is_none() && listen_http.is_none() {
            return Err(invalid(
                "listen_tcp",
                "both listeners are off: nothing to serve".into(),
            ));
        }
        let limits = options.limits;
        for (key, value) in [
            ("max_line_bytes", limits.max_line_bytes),
            ("max_body_bytes", limits.max_body_bytes),
            ("max_connections", limits.max_connections),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        // A whole request's events must fit the in-flight budget, or it could never be sent.
        let body_budget = limits.max_body_bytes.saturating_mul(4);
        if limits.max_in_flight_bytes < body_budget {
            return Err(invalid(
                "max_in_flight_bytes",
                format!("must be at least 4 x max_body_bytes ({body_budget})"),
            ));
        }
        if limits.max_buffered_body_bytes < limits.max_body_bytes {
            return Err(invalid(
                "max_buffered_body_bytes",
                "must be at least max_body_bytes".into(),
            ));
        }
        // Semaphores count at most u32::MAX permits per acquisition.
        if limits.max_in_flight_bytes > u32::MAX as usize
            || limits.max_buffered_body_bytes > u32::MAX as usize
        {
            return Err(invalid(
                "max_in_flight_bytes",
                "budgets are limited to 4 GiB".into(),
            ));
        }
        for (key, value) in [
            ("read_timeout", limits.read_timeout),
            ("delivery_timeout", options.delivery_timeout),
            ("shutdown_timeout", options.shutdown_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero".into()));
            }
        }
        let http_token = match options.http_token {
            Some(token) if token.is_empty() => {
                return Err(invalid("http_token_file", "the token is empty".into()))
            }
            token => token.map(Secret::new),
        };
        let mut producer_properties = BTreeMap::new();
        for pair in options.producer_properties {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(
                    "producer_property",
                    format!("'{pair}' is not key=value"),
                ));
            };
            let key = key.trim();
            if MANAGED_PRODUCER_KEYS.contains(&key)
                || MANAGED_CONNECTION_KEYS.contains(&key)
                || key == "message.timeout.ms"
            {
                return Err(ConfigError::Managed {
                    table: "producer",
                    key: key.to_owned(),
                });
            }
            producer_properties.insert(key.to_owned(), value.trim().to_owned());
        }
        Ok(IngestSettings {
            kafka,
            topic,
            format: options.format,
            listen_tcp,
            listen_http,
            limits,
            delivery_timeout: options.delivery_timeout,
            shutdown_timeout: options.shutdown_timeout,
            http_token,
            producer_properties,
            metrics_addr,
        })
    }
}

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

/// The producer, configured as [`crate::produce`]'s, with deliveries bounded by `delivery_timeout`;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults, as the command line gives them, with a topic and one producer property.
    fn options() -> IngestOptions {
        use clap::{Args, FromArgMatches};
        let flags = IngestOptions::augment_args(clap::Command::new("ingest"))
            .try_get_matches_from([
                "ingest",
                "--brokers",
                "b:9092",
                "--topic",
                "traffic",
                "--producer-property",
                "compression.type=zstd",
            ])
            .expect("flags parse");
        IngestOptions::from_arg_matches(&flags).expect("options")
    }

    #[test]
    fn defaults_validate() {
        let settings = IngestSettings::try_from(options()).expect("valid");
        assert_eq!(settings.format, Format::Json);
        assert_eq!(settings.limits.max_line_bytes, 65_536);
        assert_eq!(settings.limits.max_body_bytes, 8 << 20);
        assert_eq!(
            settings.listen_tcp,
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            settings
                .producer_properties
                .get("compression.type")
                .map(String::as_str),
            Some("zstd")
        );
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        type Edit = fn(&mut IngestOptions);
        let cases: &[(&str, Edit, &str)] = &[
            ("bad topic", |o| o.topic = "a b".into(), "'topic'"),
            ("no brokers", |o| o.kafka.brokers = " ".into(), "'brokers'"),
            (
                "SASL without a password",
                |o| {
                    o.kafka.security.security_protocol = Some("SASL_SSL".into());
                    o.kafka.security.sasl_mechanism = Some("PLAIN".into());
                    o.kafka.security.sasl_username = Some("u".into());
                },
                "'sasl_password'",
            ),
            (
                "bad listen",
                |o| o.listen_tcp = "localhost".into(),
                "'listen_tcp'",
            ),
            (
                "both off",
                |o| {
                    o.listen_tcp = "off".into();
                    o.listen_http = "off".into();
                },
                "nothing to serve",
            ),
            (
                "zero line",
                |o| o.limits.max_line_bytes = 0,
                "'max_line_bytes'",
            ),
            (
                "budget below bodies",
                |o| o.limits.max_in_flight_bytes = 1 << 20,
                "'max_in_flight_bytes'",
            ),
            (
                "zero timeout",
                |o| o.limits.read_timeout = Duration::ZERO,
                "'read_timeout'",
            ),
            (
                "empty token",
                |o| o.http_token = Some(String::new()),
                "token is empty",
            ),
            (
                "managed key",
                |o| o.producer_properties = vec!["enable.idempotence=false".into()],
                "enable.idempotence",
            ),
            (
                "delivery timeout has its own flag",
                |o| o.producer_properties = vec!["message.timeout.ms=1".into()],
                "message.timeout.ms",
            ),
            (
                "not a pair",
                |o| o.producer_properties = vec!["linger.ms".into()],
                "key=value",
            ),
        ];
        for (name, edit, expected) in cases {
            let mut o = options();
            edit(&mut o);
            let error = IngestSettings::try_from(o).expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
        let mut off = options();
        off.listen_tcp = "off".into();
        assert_eq!(
            IngestSettings::try_from(off)
                .expect("one listener")
                .listen_tcp,
            None
        );
    }
}

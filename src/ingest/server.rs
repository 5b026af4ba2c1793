//! The gateway's life: the start-up checks (descriptor limit, exposure without a token), binding,
//! connecting the producer, the shared accept loop, the once-a-second monitor, and the drain on
//! shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{Producer, ThreadedProducer};
use tokio::sync::{watch, Semaphore};

use super::body::ClientBudgets;
use super::gateway::{Gateway, GatewayContext, Protocol, Stats};
use super::settings::IngestSettings;
use super::{http, tcp};
use crate::kafka::context::StreamaggContext;
use crate::kafka::{self, KafkaSetupError};
use crate::telemetry::{self, ClientConnections, Health, RateLimitedWarning};

/// Descriptors the process needs beside client connections: the runtime, librdkafka's broker
/// sockets and wake-up pipes, the log, the listeners.
const RESERVED_DESCRIPTORS: u64 = 128;

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
    #[error(
        "the file-descriptor limit ({limit}) is below what the connection limits need ({needed}: \
         max_connections per listener, the metrics server's connections and {RESERVED_DESCRIPTORS} \
         for the process); raise it (ulimit -n) or lower --max-connections"
    )]
    DescriptorLimit { limit: u64, needed: u64 },
}

/// Binds the listeners, connects the producer (the cluster must answer within `kafka.timeout` and
/// the topic must exist), then serves until `shutdown` resolves: stops accepting, lets open
/// requests finish, flushes the producer. `health` turns ready once serving.
pub async fn run(
    settings: IngestSettings,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), IngestError> {
    ensure_descriptors(descriptors_needed(&settings))?;
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
        grow_turn: tokio::sync::Mutex::new(()),
        clients: ClientBudgets::new(settings.limits.per_client_body_bytes()),
        limits: settings.limits.clone(),
        delivery_timeout: settings.delivery_timeout,
        token: settings.http_token.clone(),
        stats,
        tcp_latency_sample: 64,
        tcp_counter: AtomicU64::new(0),
        auth_failures: AtomicU64::new(0),
        auth_failed: RateLimitedWarning::new(Duration::from_secs(10)),
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
    warn_if_exposed(&settings);
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

/// Warns for each gateway listener that binds beyond loopback while no token is configured: anyone
/// who reaches it can write to the topic (and send what the limits allow).
fn warn_if_exposed(settings: &IngestSettings) {
    if settings.http_token.is_some() {
        return;
    }
    for (flag, addr) in [
        ("--listen-tcp", settings.listen_tcp),
        ("--listen-http", settings.listen_http),
    ] {
        if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                %addr,
                "{flag} binds beyond loopback without a token: anyone who reaches it can write to \
                 the topic; set --http-token-file (it guards TCP too) and restrict who can connect"
            );
        }
    }
}

/// File descriptors the configured connection limits can take at once.
fn descriptors_needed(settings: &IngestSettings) -> u64 {
    let listeners =
        u64::from(settings.listen_tcp.is_some()) + u64::from(settings.listen_http.is_some());
    let metrics = if settings.metrics_addr.is_some() {
        telemetry::MAX_CONNECTIONS as u64
    } else {
        0
    };
    listeners * settings.limits.max_connections as u64 + metrics + RESERVED_DESCRIPTORS
}

/// Raises the soft descriptor limit towards `needed` (up to the hard limit); fails if it stays below.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn ensure_descriptors(needed: u64) -> Result<(), IngestError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(()); // unknown: nothing to check against
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: needed.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit.rlim_cur = raised.rlim_cur;
    }
    if limit.rlim_cur < needed {
        return Err(IngestError::DescriptorLimit {
            limit: limit.rlim_cur,
            needed,
        });
    }
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn ensure_descriptors(_needed: u64) -> Result<(), IngestError> {
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
        .map_err(KafkaSetupError::config)?;
    if kafka::admin::partition_count(&producer, &settings.kafka, &settings.topic)?.is_none() {
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
/// `max_connections` at once and `connections_per_client` from one address; one beyond a limit
/// is counted, sent `refusal` with the reason (at most for a second) and closed; each accepted one
/// runs `serve_one` on a task of its own, counted in the protocol's open connections and holding a
/// clone of `alive` until it ends.
pub(super) async fn accept_connections<Serve, Served>(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    protocol: Protocol,
    stop: watch::Receiver<bool>,
    alive: tokio::sync::mpsc::Sender<()>,
    refusal: impl Fn(&Gateway, &str) -> Vec<u8>,
    serve_one: Serve,
) where
    Serve: Fn(tokio::net::TcpStream, Arc<Gateway>, watch::Receiver<bool>) -> Served,
    Served: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(gateway.limits.max_connections));
    let clients = ClientConnections::new(gateway.limits.connections_per_client());
    let over_client_limit = RateLimitedWarning::new(Duration::from_secs(10));
    let accept_failed = RateLimitedWarning::new(Duration::from_secs(10));
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopping.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: back off instead of spinning.
                accept_failed.warn(|suppressed| {
                    tracing::warn!(%error, protocol = protocol.label(), suppressed, "accepting a connection failed");
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let refused = &gateway.stats.refused_connections[protocol as usize];
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "too many connections (limit {})",
                gateway.limits.max_connections
            );
            tokio::spawn(tcp::refuse(stream, refusal(&gateway, &reason)));
            continue;
        };
        let Some(client_slot) = clients.try_take(peer.ip()) else {
            refused.fetch_add(1, Ordering::Relaxed);
            over_client_limit.warn(|suppressed| {
                tracing::warn!(
                    client = %peer.ip(),
                    protocol = protocol.label(),
                    suppressed,
                    "{} connections open from one address: refusing its new ones",
                    clients.limit()
                );
            });
            let reason = format!(
                "too many connections from this address (limit {})",
                clients.limit()
            );
            tokio::spawn(tcp::refuse(stream, refusal(&gateway, &reason)));
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
            drop((slot, client_slot, alive));
        });
    }
}

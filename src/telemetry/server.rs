//! The HTTP endpoint of `/metrics`, `/healthz` and `/readyz`, on a thread and runtime of its own,
//! bounded so that no client can make the probes unreachable: at most [`MAX_CONNECTIONS`] open at
//! once and [`MAX_CONNECTIONS_PER_CLIENT`] from one address (more are closed as soon as accepted, so
//! they never pile up descriptors, and one client cannot take the slots the kubelet's probes need), a
//! complete request head within [`HEADER_READ_TIMEOUT`] (idle keep-alive connections included) and
//! [`MAX_HEAD_BYTES`], and failures to accept warned about at most once per interval
//! ([`RateLimitedWarning`]). With the live-state endpoint on, it also answers
//! `GET /v1/windows/{source}` ([`crate::live::service`]) to requests carrying its bearer token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::write_deadline::WriteDeadline;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use super::{Health, TelemetryError};

/// Connections the endpoint serves at once (a scraper and a few probes need a handful).
pub const MAX_CONNECTIONS: usize = 64;

/// Connections one client address may hold (the kubelet's probes and a scraper need one or two each).
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 8;

/// How long a connection may take to send a complete request head, or stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The read buffer of a connection (hyper's minimum): a request head must fit.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Open connections per client address, each at most `limit`: a slot is held by a [`ClientSlot`].
#[derive(Debug)]
pub struct ClientConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
    limit: usize,
}

/// One connection counted against its client address until dropped.
#[derive(Debug)]
pub struct ClientSlot {
    connections: Arc<ClientConnections>,
    client: IpAddr,
}

impl ClientConnections {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ClientConnections {
            open: Mutex::new(HashMap::new()),
            limit,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for one more connection from `client`, unless it already holds `limit`.
    pub fn try_take(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(client).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            connections: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock() {
            if let Some(count) = open.get_mut(&self.client) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.client);
                }
            }
        }
    }
}

/// A warning logged at most once per `every`; the occurrences in between are counted and reported
/// with the next one that is logged.
#[derive(Debug)]
pub struct RateLimitedWarning {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedWarning {
    pub fn new(every: Duration) -> Self {
        RateLimitedWarning {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Calls `log` with the number of occurrences not logged since the last call that logged, if
    /// `every` has passed since then; otherwise only counts this one.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let due = match self.last.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|at| at.elapsed() >= self.every);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An endpoint served beside the probes under a path prefix, answering authorized requests with
/// JSON: the live-state endpoint (`crate::live::service`), which depends on this module, not the
/// other way round.
pub trait Endpoint: Send + Sync {
    /// The paths it answers start with this.
    fn prefix(&self) -> &'static str;
    /// Whether a request with this `Authorization` header value may ask.
    fn authorized(&self, authorization: Option<&[u8]>) -> bool;
    /// The answer to an authorized `GET` of `path`: status and JSON body.
    fn answer<'a>(
        &'a self,
        path: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)> + Send + 'a>>;
}

/// Threads that may run blocking work (the live-state endpoint's cluster requests) at once.
const BLOCKING_THREADS: usize = 2;

/// Serves `/metrics` (when `metrics` is given), `/healthz`, `/readyz` and (when `live` is given)
/// `/v1/windows/{source}` on `addr` from a thread of its own, for the life of the process. Returns
/// the bound address (`addr` may ask for port 0).
pub fn serve(
    addr: SocketAddr,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
    live: Option<Arc<dyn Endpoint>>,
) -> Result<SocketAddr, TelemetryError> {
    let bind_error = |cause: std::io::Error| TelemetryError::Bind {
        addr,
        cause: cause.to_string(),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(bind_error)?;
    std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || runtime.block_on(accept_loop(listener, metrics, health, live)))
        .map_err(bind_error)?;
    Ok(bound)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
    live: Option<Arc<dyn Endpoint>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the telemetry endpoint cannot listen");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = ClientConnections::new(MAX_CONNECTIONS_PER_CLIENT);
    let accept_failed = RateLimitedWarning::new(Duration::from_secs(10));
    let over_limit = RateLimitedWarning::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed.warn(|suppressed| {
                    tracing::warn!(%error, suppressed, "accepting a telemetry connection failed");
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            over_limit.warn(|suppressed| {
                tracing::warn!(
                    suppressed,
                    "{MAX_CONNECTIONS} telemetry connections open: closing new ones"
                );
            });
            drop(stream);
            continue;
        };
        let Some(client_slot) = clients.try_take(peer.ip()) else {
            over_limit.warn(|suppressed| {
                tracing::warn!(
                    client = %peer.ip(),
                    suppressed,
                    "{MAX_CONNECTIONS_PER_CLIENT} telemetry connections open from one address: \
                     closing its new ones"
                );
            });
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let health = Arc::clone(&health);
        let live = live.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<_>| {
                // Everything the live answer needs is taken from the request here, so the
                // future holds no reference to it.
                let live = live
                    .clone()
                    .filter(|live| request.uri().path().starts_with(live.prefix()))
                    .map(|live| {
                        let header = request.headers().get(AUTHORIZATION);
                        let authorized = live.authorized(header.map(HeaderValue::as_bytes));
                        let get = request.method() == Method::GET;
                        (live, authorized, get, request.uri().path().to_owned())
                    });
                let response = match live {
                    Some(_) => None,
                    None => Some(respond(request.uri().path(), metrics.as_ref(), &health)),
                };
                async move {
                    Ok::<_, Infallible>(match (response, live) {
                        (Some(response), _) => response,
                        (None, Some((live, authorized, get, path))) => {
                            respond_live(live.as_ref(), authorized, get, &path).await
                        }
                        (None, None) => text_response(StatusCode::NOT_FOUND, String::new()),
                    })
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let _ = builder
                .serve_connection(
                    TokioIo::new(WriteDeadline::new(stream, HEADER_READ_TIMEOUT)),
                    service,
                )
                .await;
            drop((slot, client_slot));
        });
    }
}

/// A response with `body`, marked `nosniff`.
fn text_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /v1/windows/{source}`: `401` (closing the connection, so each guess costs one) without
/// the bearer token, `405` for other methods, else the live-state answer as JSON.
async fn respond_live(
    live: &dyn Endpoint,
    authorized: bool,
    get: bool,
    path: &str,
) -> Response<Full<Bytes>> {
    if !authorized {
        let mut response = text_response(
            StatusCode::UNAUTHORIZED,
            "{\"error\":\"missing or wrong bearer token\"}".into(),
        );
        let headers = response.headers_mut();
        headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let (status, body) = if get {
        live.answer(path).await
    } else {
        (405, "{\"error\":\"only GET\"}".into())
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = text_response(status, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn respond(
    path: &str,
    metrics: Option<&PrometheusHandle>,
    health: &Health,
) -> Response<Full<Bytes>> {
    let text = text_response;
    let probe = |ok: bool, what: &str| {
        if ok {
            text(StatusCode::OK, "ok\n".into())
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{what}\n"))
        }
    };
    match (path, metrics) {
        ("/metrics", Some(handle)) => {
            handle.run_upkeep();
            let mut response = text(StatusCode::OK, handle.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        ("/healthz", _) => probe(health.is_live(), "the poll loop is stalled"),
        ("/readyz", _) => probe(
            health.is_ready(),
            "not ready: partitions not yet assigned and restored, or the poll loop is stalled",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// The largest response [`http_get`] reads (head and body): a peer cannot make a client hold more.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A plain HTTP/1.0 GET on `addr`: (status code, body), the whole exchange within `timeout` and the
/// response within [`MAX_RESPONSE_BYTES`]. What `streamagg probe` (the container's health check),
/// `streamagg query` and the tests use; an unspecified address (`0.0.0.0`) means this host.
pub fn http_get(
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    http_get_with(addr, path_and_query, None, timeout)
}

/// [`http_get`] with a bearer token (`streamagg query`).
pub fn http_get_with(
    addr: SocketAddr,
    path_and_query: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    let authorization = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{authorization}\r\n"
    )?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no complete answer within {}",
                    humantime::format_duration(timeout)
                ),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        if response.len() + read > MAX_RESPONSE_BYTES {
            return Err(std::io::Error::other(format!(
                "the answer is larger than {} MiB",
                MAX_RESPONSE_BYTES / (1024 * 1024)
            )));
        }
        response.extend_from_slice(&chunk[..read]);
    }
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:.80}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn a_client_address_holds_at_most_its_connections_and_frees_them() {
        let connections = ClientConnections::new(2);
        let (a, b): (IpAddr, IpAddr) = (
            "127.0.0.1".parse().expect("ip"),
            "127.0.0.2".parse().expect("ip"),
        );
        let first = connections.try_take(a).expect("first");
        let second = connections.try_take(a).expect("second");
        assert!(connections.try_take(a).is_none(), "over the limit");
        let other = connections
            .try_take(b)
            .expect("another address has its own");
        drop(first);
        let again = connections.try_take(a).expect("a freed slot is reused");
        drop((second, again, other));
        assert!(
            connections.open.lock().expect("lock").is_empty(),
            "no entry left behind"
        );
    }

    /// A listener on loopback that answers one request with `head` and then `body_bytes` bytes,
    /// written in chunks `pause` apart.
    fn one_answer(head: &'static str, body_bytes: usize, pause: Duration) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            // The whole request head: unread bytes left at close would make the kernel reset the
            // connection, and the client would see that instead of the answer.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = stream.write_all(head.as_bytes());
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = body_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n;
                std::thread::sleep(pause);
            }
        });
        addr
    }

    #[test]
    fn a_client_reads_at_most_its_limit_and_within_its_time() {
        let head = "HTTP/1.0 200 OK\r\n\r\n";
        let small = one_answer(head, 1000, Duration::ZERO);
        let (status, body) = http_get(small, "/", Duration::from_secs(5)).expect("small answer");
        assert_eq!((status, body.len()), (200, 1000));

        let large = one_answer(head, MAX_RESPONSE_BYTES + 1, Duration::ZERO);
        let error = http_get(large, "/", Duration::from_secs(5)).expect_err("too large");
        assert!(error.to_string().contains("larger than 4 MiB"), "{error}");

        // A peer that keeps sending a little, never finishing, is cut off at the timeout in total,
        // not per read.
        let slow = one_answer(head, 64 * 1024 * 40, Duration::from_millis(100));
        let started = Instant::now();
        let error = http_get(slow, "/", Duration::from_millis(500)).expect_err("too slow");
        assert!(started.elapsed() < Duration::from_secs(2), "{error}");
    }
}

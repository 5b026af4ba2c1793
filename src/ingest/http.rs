//! The HTTP door: `POST /v1/events` with a JSON array or NDJSON body.
//!
//! The answer waits for Kafka: `200 {"accepted":N,"rejected":0}` once every event is acknowledged;
//! `400` with `errors: [{"item", "reason"}]` when some items were refused (the valid ones were still
//! delivered and acknowledged first, and `accepted` counts them); `401` without the bearer token;
//! `413` for a body over the size or event-count limit, or one whose events can never fit the memory
//! budget; `408` for a body not received within the
//! read timeout; `400` also for events Kafka refuses for good (e.g. too large for the topic: a retry
//! cannot help); `503` with `Retry-After` when the budgets are full or Kafka is unavailable or did not
//! acknowledge in time — then some of the request's events may have been delivered, so a retry can
//! duplicate them (at-least-once). Every answer says `X-Content-Type-Options: nosniff`.
//!
//! A request goes through [`post_events`] in four steps, each a function: [`authorize`], [`receive`]
//! (the body, under the memory budgets of [`super::body`]), [`encode`], [`send_and_await`].

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::telemetry::write_deadline::WriteDeadline;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::body::{self, BodyBudget, BodyReadError, NoRoom};
use super::frame::{self, bearer_matches, BodyError, BodyLimits, Item};
use super::gateway::{is_permanent, DeliveryFailure};
use super::response::{error_body, events_response, Refusals};
use super::{EnqueueError, Gateway, Protocol};
use crate::telemetry::metric;

const PROTOCOL: Protocol = Protocol::Http;

/// Seconds a client should wait before retrying when the gateway is saturated / Kafka unavailable.
const RETRY_AFTER_SATURATED: &str = "1";
const RETRY_AFTER_UNAVAILABLE: &str = "5";

/// A connection's read buffer: request heads must fit (more is answered `431` and closed), so a
/// connection that never completes its head holds at most this much.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Accepts connections until `stop` turns true, then asks each open connection to finish its
/// current request and close; each connection task holds a clone of `alive`.
pub(super) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let refusal = |gateway: &Gateway, reason: &str| {
        gateway.stats.response(503);
        let body = error_body(reason, &[]);
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             x-content-type-options: nosniff\r\n\
             retry-after: {RETRY_AFTER_SATURATED}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let serve_one = |stream: TcpStream, gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>| async move {
        let _ = stream.set_nodelay(true);
        let client = stream
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let service_gateway = Arc::clone(&gateway);
        let service = hyper::service::service_fn(move |request| {
            let gateway = Arc::clone(&service_gateway);
            async move { Ok::<_, Infallible>(handle(request, &gateway, client).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Also bounds idle keep-alive connections: the timer runs while waiting for a head.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(gateway.limits.read_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        // A client that stops reading the answers is closed after the same timeout.
        let stream = WriteDeadline::new(stream, gateway.limits.read_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let stopping = tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
                false
            }
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    };
    super::server::accept_connections(listener, gateway, PROTOCOL, stop, alive, refusal, serve_one)
        .await;
}

async fn handle(
    request: Request<Incoming>,
    gateway: &Gateway,
    client: IpAddr,
) -> Response<Full<Bytes>> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/events") => post_events(request, gateway, client).await,
        (_, "/v1/events") => {
            let mut response = json(StatusCode::METHOD_NOT_ALLOWED, error_body("use POST", &[]));
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            response
        }
        _ => json(
            StatusCode::NOT_FOUND,
            error_body("not found: events go to POST /v1/events", &[]),
        ),
    };
    gateway.stats.response(response.status().as_u16());
    response
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn unavailable(retry_after: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = json(StatusCode::SERVICE_UNAVAILABLE, body);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

/// `POST /v1/events`: authorize, receive the body, encode its valid events, send them and wait for
/// Kafka; the memory budget of the request is held until the answer is built.
async fn post_events(
    request: Request<Incoming>,
    gateway: &Gateway,
    client: IpAddr,
) -> Response<Full<Bytes>> {
    if let Some(refused) = authorize(&request, gateway, client) {
        return refused;
    }
    let (body, mut budget) = match receive(request, gateway, client).await {
        Ok(received) => received,
        Err(refused) => return refused,
    };
    let limits = BodyLimits {
        max_line: gateway.limits.max_line_bytes,
        max_items: gateway.limits.max_items_per_request,
    };
    let items = match frame::parse_body(&body, limits) {
        Ok(items) => items,
        Err(error @ BodyError::TooManyItems { .. }) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(&error.to_string(), &[]),
            )
        }
        Err(error) => return json(StatusCode::BAD_REQUEST, error_body(&error.to_string(), &[])),
    };
    // The reservation moves from the body to its events, then to their encoding: grown only by
    // what one form needs beyond the last (see `BodyBudget::resize`).
    drop(body);
    let deadline = tokio::time::Instant::now() + gateway.limits.queue_wait;
    if let Err(no_room) = budget
        .resize(gateway, frame::heap_bytes(&items), deadline)
        .await
    {
        return saturated(no_room, gateway);
    }
    let encoded = encode(items, gateway);
    if let Err(no_room) = budget.resize(gateway, encoded.heap_bytes(), deadline).await {
        return saturated(no_room, gateway);
    }
    if encoded.events.is_empty() {
        let (_, body) = events_response(0, &encoded.refused);
        return json(StatusCode::BAD_REQUEST, body);
    }
    let response = send_and_await(encoded, gateway).await;
    drop(budget);
    response
}

/// The `401` answer, unless the request carries the bearer token (or none is set). It closes the
/// connection, so that guesses cost a connection each (and meet the per-client connection limit).
fn authorize(
    request: &Request<Incoming>,
    gateway: &Gateway,
    client: IpAddr,
) -> Option<Response<Full<Bytes>>> {
    let token = gateway.token.as_ref()?;
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if bearer_matches(header, token.expose().as_bytes()) {
        return None;
    }
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        error_body("missing or wrong bearer token", &[]),
    );
    let headers = response.headers_mut();
    headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    gateway.failed_authentication(PROTOCOL, Some(client));
    Some(response)
}

/// The whole body, read within the read timeout under the request's memory budget (returned, to be
/// held until the answer is built); `Err` with the answer if it is too large, too slow, or finds no
/// room, or if Kafka is known to be unavailable.
async fn receive(
    request: Request<Incoming>,
    gateway: &Gateway,
    client: IpAddr,
) -> Result<(Bytes, BodyBudget), Response<Full<Bytes>>> {
    let limits = &gateway.limits;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(too_large(gateway));
    }
    if gateway.unavailable() {
        return Err(unavailable(
            RETRY_AFTER_UNAVAILABLE,
            error_body("Kafka is unavailable", &[]),
        ));
    }
    let mut budget = BodyBudget::new(gateway, client);
    let deadline = tokio::time::Instant::now() + limits.read_timeout;
    match body::read(request.into_body(), gateway, &mut budget, deadline).await {
        Ok(body) => Ok((body, budget)),
        Err(BodyReadError::TooLarge) => Err(too_large(gateway)),
        Err(BodyReadError::Timeout) => Err(json(
            StatusCode::REQUEST_TIMEOUT,
            error_body("body not received within the read timeout", &[]),
        )),
        Err(BodyReadError::NoRoom(no_room)) => Err(saturated(no_room, gateway)),
        Err(BodyReadError::Read(error)) => Err(json(
            StatusCode::BAD_REQUEST,
            error_body(&format!("cannot read the body: {error}"), &[]),
        )),
    }
}

fn too_large(gateway: &Gateway) -> Response<Full<Bytes>> {
    let limit = gateway.limits.max_body_bytes;
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        error_body(&format!("body larger than {limit} bytes"), &[]),
    )
}

/// `503` + `Retry-After` while the budget is taken by others; `413` if the request can never fit.
fn saturated(no_room: NoRoom, gateway: &Gateway) -> Response<Full<Bytes>> {
    let reason = match no_room {
        NoRoom::Client => "this client has too many request bodies in memory",
        NoRoom::Shared => "too many request bodies in memory",
        NoRoom::Never => {
            let reason = format!(
                "the request's events need more memory than the gateway's body budget \
                 (--max-buffered-body-bytes {}) holds; send fewer events per request",
                gateway.limits.max_buffered_body_bytes
            );
            return json(StatusCode::PAYLOAD_TOO_LARGE, error_body(&reason, &[]));
        }
    };
    unavailable(RETRY_AFTER_SATURATED, error_body(reason, &[]))
}

/// A request's valid events encoded one after another in one buffer, and what was refused.
struct Encoded {
    payloads: Vec<u8>,
    /// (item number, key, range of `payloads`) per valid event.
    events: Vec<(u64, String, Range<usize>)>,
    refused: Refusals,
}

impl Encoded {
    fn heap_bytes(&self) -> usize {
        self.payloads.capacity()
            + self.events.capacity() * std::mem::size_of::<(u64, String, Range<usize>)>()
            + self.refused.heap_bytes()
    }
}

/// Encodes the valid items in the topic's format; counts and keeps (the first of) the refused ones.
fn encode(items: Vec<Item>, gateway: &Gateway) -> Encoded {
    let mut encoded = Encoded {
        payloads: Vec::new(),
        events: Vec::with_capacity(items.iter().filter(|i| i.event.is_ok()).count()),
        refused: Refusals::default(),
    };
    for item in items {
        match item.event {
            Ok(event) => {
                let start = encoded.payloads.len();
                crate::codec::encode(&event, gateway.format, &mut encoded.payloads);
                let range = start..encoded.payloads.len();
                encoded.events.push((item.number, event.source, range));
            }
            Err(reason) => {
                gateway.stats.rejected(PROTOCOL, &reason);
                encoded.refused.push(item.number, &reason);
            }
        }
    }
    encoded.payloads.shrink_to_fit();
    encoded
}

/// What became of a request's events once handed to the producer.
#[derive(Default)]
struct Acks {
    delivered: u64,
    /// Why the rest could not be handed to the producer (it stopped at the first).
    not_sent: Option<String>,
    /// Events not acknowledged for a reason that may pass, and the first reason.
    transient: u64,
    first_transient: Option<String>,
}

/// Hands the events to the producer under the in-flight budget, waits for every delivery report,
/// and builds the answer: events Kafka refuses for good are refused items (`400`); anything a
/// retry may cure is a `503` with `Retry-After`.
async fn send_and_await(mut encoded: Encoded, gateway: &Gateway) -> Response<Full<Bytes>> {
    let cost: u64 = encoded
        .events
        .iter()
        .map(|(_, _, range)| u64::from(Gateway::cost(range.len())))
        .sum();
    let Ok(Ok(mut budget)) = tokio::time::timeout(
        gateway.limits.queue_wait,
        Arc::clone(&gateway.in_flight).acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX)),
    )
    .await
    else {
        return unavailable(
            RETRY_AFTER_SATURATED,
            error_body("the producer is saturated", &[]),
        );
    };
    let started = Instant::now();
    let total = encoded.events.len() as u64;
    let mut acks = Acks::default();
    let mut waiting = Vec::with_capacity(encoded.events.len());
    for (number, source, range) in &encoded.events {
        let Some(share) = budget.split(Gateway::cost(range.len()) as usize) else {
            acks.not_sent = Some("internal error: in-flight budget miscounted".into());
            break;
        };
        let (tx, rx) = oneshot::channel();
        let payload = &encoded.payloads[range.clone()];
        match gateway.enqueue(source.as_bytes(), payload, PROTOCOL, share, Some(tx)) {
            Ok(()) => waiting.push((*number, rx)),
            Err(EnqueueError::QueueFull) => {
                acks.not_sent = Some("the producer queue is full".into());
                break;
            }
            Err(EnqueueError::Other(error)) if is_permanent(&error) => {
                encoded
                    .refused
                    .push(*number, &format!("Kafka refuses the event: {error}"));
            }
            Err(EnqueueError::Other(error)) => {
                acks.not_sent = Some(format!("cannot produce: {error}"));
                break;
            }
        }
    }
    drop(encoded.payloads);
    await_acks(waiting, gateway, &mut acks, &mut encoded.refused).await;
    tracing::debug!(total, acks.delivered, acks.transient, ?acks.not_sent, elapsed = ?started.elapsed(), "request acknowledged");
    metrics::histogram!(metric::INGEST_ACK_LATENCY_SECONDS, "protocol" => PROTOCOL.label())
        .record(started.elapsed().as_secs_f64());
    answer(total, acks, &encoded.refused)
}

/// Waits (at most the delivery timeout plus a margin) for each delivery report.
async fn await_acks(
    waiting: Vec<(u64, oneshot::Receiver<Result<(), DeliveryFailure>>)>,
    gateway: &Gateway,
    acks: &mut Acks,
    refused: &mut Refusals,
) {
    // librdkafka reports every event by `delivery_timeout`; the margin only guards against a bug.
    let deadline = tokio::time::Instant::now() + gateway.delivery_timeout + Duration::from_secs(5);
    for (number, ack) in waiting {
        let failure = match tokio::time::timeout_at(deadline, ack).await {
            Ok(Ok(Ok(()))) => {
                acks.delivered += 1;
                continue;
            }
            Ok(Ok(Err(failure))) => failure,
            Ok(Err(_)) => DeliveryFailure::transient("the delivery report was lost"),
            Err(_) => DeliveryFailure::transient("no delivery report in time"),
        };
        if failure.permanent {
            refused.push(
                number,
                &format!("Kafka refuses the event: {}", failure.text),
            );
        } else {
            acks.transient += 1;
            acks.first_transient.get_or_insert(failure.text);
        }
    }
}

/// The answer once every report is in: `503` if anything may succeed on a retry, else `200`/`400`.
fn answer(total: u64, acks: Acks, refused: &Refusals) -> Response<Full<Bytes>> {
    let counts = [
        ("delivered", acks.delivered),
        ("not_delivered", total - acks.delivered),
    ];
    if let Some(reason) = acks.not_sent {
        return unavailable(RETRY_AFTER_SATURATED, error_body(&reason, &counts));
    }
    if acks.transient > 0 {
        let reason = format!(
            "Kafka did not acknowledge {} of {total} events: {}",
            acks.transient,
            acks.first_transient.unwrap_or_default()
        );
        return unavailable(RETRY_AFTER_UNAVAILABLE, error_body(&reason, &counts));
    }
    let (status, body) = events_response(acks.delivered, refused);
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

//! The HTTP door: `POST /v1/events` with a JSON array or NDJSON body.
//!
//! The answer waits for Kafka: `200 {"accepted":N,"rejected":0}` once every event is acknowledged;
//! `400` with `errors: [{"item", "reason"}]` when some items were refused (the valid ones were still
//! delivered and acknowledged first, and `accepted` counts them); `401` without the bearer token;
//! `413` for a body over the limit; `408` for a body not received within the read timeout; `503`
//! with `Retry-After` when the budgets are full or Kafka is unavailable or did not acknowledge in
//! time — then some of the request's events may have been delivered, so a retry can duplicate them
//! (at-least-once).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::{self, bearer_matches, error_body, events_response};
use super::{EnqueueError, Gateway, Protocol};
use crate::codec::encode;
use crate::telemetry::metric;

const PROTOCOL: Protocol = Protocol::Http;

/// Seconds a client should wait before retrying when the gateway is saturated / Kafka unavailable.
const RETRY_AFTER_SATURATED: &str = "1";
const RETRY_AFTER_UNAVAILABLE: &str = "5";

/// Accepts connections until `stop` turns true, then asks each open connection to finish its
/// current request and close; each connection task holds a clone of `alive`.
pub(super) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let refusal = |gateway: &Gateway| {
        gateway.stats.response(503);
        let body = error_body(
            &format!(
                "too many connections (limit {})",
                gateway.limits.max_connections
            ),
            &[],
        );
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: {RETRY_AFTER_SATURATED}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let serve_one = |stream: TcpStream, gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>| async move {
        let _ = stream.set_nodelay(true);
        let service_gateway = Arc::clone(&gateway);
        let service = hyper::service::service_fn(move |request| {
            let gateway = Arc::clone(&service_gateway);
            async move { Ok::<_, Infallible>(handle(request, &gateway).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Also bounds idle keep-alive connections: the timer runs while waiting for a head.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(gateway.limits.read_timeout);
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
    super::accept_connections(listener, gateway, PROTOCOL, stop, alive, refusal, serve_one).await;
}

async fn handle(request: Request<Incoming>, gateway: &Gateway) -> Response<Full<Bytes>> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/events") => post_events(request, gateway).await,
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
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn unavailable(retry_after: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = json(StatusCode::SERVICE_UNAVAILABLE, body);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(retry_after));
    response
}

async fn post_events(request: Request<Incoming>, gateway: &Gateway) -> Response<Full<Bytes>> {
    let limits = &gateway.limits;
    if let Some(token) = &gateway.token {
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !bearer_matches(header, token.expose().as_bytes()) {
            let mut response = json(
                StatusCode::UNAUTHORIZED,
                error_body("missing or wrong bearer token", &[]),
            );
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let too_large = || {
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_body(
                &format!("body larger than {} bytes", limits.max_body_bytes),
                &[],
            ),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return too_large();
    }
    if gateway.unavailable() {
        return unavailable(
            RETRY_AFTER_UNAVAILABLE,
            error_body("Kafka is unavailable", &[]),
        );
    }

    // Room for the body in memory first, then read it (bounded in size and time).
    let reserve = declared
        .map_or(limits.max_body_bytes, |len| len as usize)
        .max(1);
    let Ok(Ok(body_budget)) = tokio::time::timeout(
        limits.queue_wait,
        Arc::clone(&gateway.bodies).acquire_many_owned(reserve as u32),
    )
    .await
    else {
        return unavailable(
            RETRY_AFTER_SATURATED,
            error_body("too many request bodies in memory", &[]),
        );
    };
    let body = Limited::new(request.into_body(), limits.max_body_bytes);
    let body = match tokio::time::timeout(limits.read_timeout, body.collect()).await {
        Err(_) => {
            return json(
                StatusCode::REQUEST_TIMEOUT,
                error_body("body not received within the read timeout", &[]),
            )
        }
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(error)) => {
            return json(
                StatusCode::BAD_REQUEST,
                error_body(&format!("cannot read the body: {error}"), &[]),
            )
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let items = match frame::parse_body(&body, limits.max_line_bytes) {
        Ok(items) => items,
        Err(error) => return json(StatusCode::BAD_REQUEST, error_body(&error.to_string(), &[])),
    };

    // Encode the valid events into one buffer; the body can go.
    let mut payloads = Vec::with_capacity(body.len());
    let mut accepted = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for item in items {
        match item.event {
            Ok(event) => {
                let start = payloads.len();
                encode(&event, gateway.format, &mut payloads);
                accepted.push((event.source, start..payloads.len()));
            }
            Err(reason) => {
                gateway.stats.rejected(PROTOCOL, &reason);
                rejected.push((item.number, reason));
            }
        }
    }
    drop(body);
    drop(body_budget);
    if accepted.is_empty() {
        let (_, body) = events_response(0, &rejected);
        return json(StatusCode::BAD_REQUEST, body);
    }

    let cost: u64 = accepted
        .iter()
        .map(|(_, range)| u64::from(Gateway::cost(range.len())))
        .sum();
    let Ok(Ok(mut budget)) = tokio::time::timeout(
        limits.queue_wait,
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
    let total = accepted.len() as u64;
    let mut acks = Vec::with_capacity(accepted.len());
    let mut not_sent: Option<String> = None;
    for (source, range) in &accepted {
        let Some(share) = budget.split(Gateway::cost(range.len()) as usize) else {
            not_sent = Some("internal error: in-flight budget miscounted".into());
            break;
        };
        let (tx, rx) = oneshot::channel();
        match gateway.enqueue(
            source.as_bytes(),
            &payloads[range.clone()],
            PROTOCOL,
            share,
            Some(tx),
        ) {
            Ok(()) => acks.push(rx),
            Err(EnqueueError::QueueFull) => {
                not_sent = Some("the producer queue is full".into());
                break;
            }
            Err(EnqueueError::Other(error)) => {
                not_sent = Some(format!("cannot produce: {error}"));
                break;
            }
        }
    }
    drop(payloads);

    // librdkafka reports every event by `delivery_timeout`; the margin only guards against a bug.
    let deadline = tokio::time::Instant::now() + gateway.delivery_timeout + Duration::from_secs(5);
    let (mut delivered, mut failed) = (0_u64, 0_u64);
    let mut first_error = None;
    for ack in acks {
        match tokio::time::timeout_at(deadline, ack).await {
            Ok(Ok(Ok(()))) => delivered += 1,
            Ok(Ok(Err(error))) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
            Ok(Err(_)) => {
                failed += 1;
                first_error.get_or_insert_with(|| "the delivery report was lost".to_owned());
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert_with(|| "no delivery report in time".to_owned());
            }
        }
    }
    tracing::debug!(total, delivered, failed, ?not_sent, ?first_error, elapsed = ?started.elapsed(), "request acknowledged");
    metrics::histogram!(metric::INGEST_ACK_LATENCY_SECONDS, "protocol" => PROTOCOL.label())
        .record(started.elapsed().as_secs_f64());

    if let Some(reason) = not_sent {
        let body = error_body(
            &reason,
            &[
                ("delivered", delivered),
                ("not_delivered", total - delivered),
            ],
        );
        return unavailable(RETRY_AFTER_SATURATED, body);
    }
    if failed > 0 {
        let reason = format!(
            "Kafka did not acknowledge {failed} of {total} events: {}",
            first_error.unwrap_or_default()
        );
        let body = error_body(
            &reason,
            &[
                ("delivered", delivered),
                ("not_delivered", total - delivered),
            ],
        );
        return unavailable(RETRY_AFTER_UNAVAILABLE, body);
    }
    let (status, body) = events_response(delivered as usize, &rejected);
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

//! The TCP door: newline-delimited JSON `TrafficEvent`s, one connection per task.
//!
//! A client gets a line back only for what is refused: `rejected line N: <reason>` per refused line,
//! `error: …` before the gateway closes the connection (too many connections, no complete line
//! within the read timeout, shutdown). Accepted lines get no answer: TCP has no acknowledgement, and
//! an event accepted but not yet delivered is lost if the gateway dies (at-most-once). When the
//! in-flight budget is spent, the connection is simply not read until there is room again.
//!
//! When a token is configured, the first line must be `AUTH <token>`, within [`AUTH_TIMEOUT`] and
//! at most [`AUTH_LINE_SLACK`] bytes longer than the token (so an unauthenticated connection holds
//! little memory and its slot briefly); anything else is answered `error: authentication required…`
//! and the connection is closed before any event is read.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::frame::{self, tcp_auth_matches, Frame, LineSplitter};
use super::response::tcp_rejection;
use super::{EnqueueError, Gateway, Protocol};
use crate::codec::encode;

const PROTOCOL: Protocol = Protocol::Tcp;

/// How long a connection may take to authenticate (when a token is set), at most the read timeout.
pub(super) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of the `AUTH` line beyond the token's (the word, spaces, `\r`).
pub(super) const AUTH_LINE_SLACK: usize = 64;

/// The read buffer of a TCP connection.
pub(super) const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Accepts connections until `stop` turns true; each connection task holds a clone of `alive`.
pub(super) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let refusal =
        |_: &Gateway, reason: &str| format!("error: {reason}, try again later\n").into_bytes();
    let serve_one = |stream, gateway: Arc<Gateway>, stop| async move {
        if let Err(error) = connection(stream, &gateway, stop).await {
            tracing::debug!(%error, "TCP connection ended with an error");
        }
    };
    super::server::accept_connections(listener, gateway, PROTOCOL, stop, alive, refusal, serve_one)
        .await;
}

/// Writes `message` (at most for a second) and closes the connection.
pub(super) async fn refuse(mut stream: TcpStream, message: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&message).await?;
        stream.shutdown().await
    })
    .await;
}

/// What one frame asks the connection to do next.
enum Step {
    Nothing,
    /// Produce the event whose payload is in the connection's buffer.
    Send {
        source: String,
    },
    Answer(String),
    /// Say this and close the connection.
    Close(&'static str),
}

const AUTHENTICATION_REQUIRED: &str =
    "error: authentication required: the first line must be `AUTH <token>`\n";

async fn connection(
    stream: TcpStream,
    gateway: &Gateway,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = &gateway.limits;
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read);
    let mut authenticated = gateway.token.is_none();
    // Until authenticated: a short line within a short time.
    let (mut splitter, mut window) = match &gateway.token {
        None => (
            LineSplitter::new(limits.max_line_bytes),
            limits.read_timeout,
        ),
        Some(token) => (
            LineSplitter::new(token.expose().len() + AUTH_LINE_SLACK),
            limits.read_timeout.min(AUTH_TIMEOUT),
        ),
    };
    let mut awaiting_auth = !authenticated;
    let mut payload = Vec::with_capacity(256);
    let mut deadline = Instant::now() + window;
    loop {
        if *stop.borrow() {
            say(
                &mut write,
                "error: the gateway is shutting down\n",
                limits.read_timeout,
            )
            .await;
            return Ok(());
        }
        let filled = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => continue,
            filled = tokio::time::timeout_at(deadline, reader.fill_buf()) => filled,
        };
        let (step, end) = match filled {
            Err(_) => {
                let message = format!(
                    "error: no complete line within {}, closing\n",
                    humantime::format_duration(window)
                );
                say(&mut write, &message, Duration::from_secs(1)).await;
                return Ok(());
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok([])) => {
                let frame = splitter.finish();
                let step = frame.map_or(Step::Nothing, |f| {
                    next_step(f, gateway, &mut authenticated, &mut payload)
                });
                (step, true)
            }
            Ok(Ok(buffered)) => {
                let (used, frame) = splitter.feed(buffered);
                let step = frame.map_or(Step::Nothing, |f| {
                    next_step(f, gateway, &mut authenticated, &mut payload)
                });
                reader.consume(used);
                (step, false)
            }
        };
        if awaiting_auth && authenticated {
            awaiting_auth = false;
            splitter.set_max(limits.max_line_bytes);
            window = limits.read_timeout;
            deadline = Instant::now() + window;
        }
        match step {
            Step::Nothing => {}
            Step::Close(line) => {
                if line == AUTHENTICATION_REQUIRED {
                    gateway.failed_authentication(PROTOCOL, peer);
                }
                say(&mut write, line, Duration::from_secs(1)).await;
                let _ = write.shutdown().await;
                return Ok(());
            }
            Step::Answer(line) => {
                deadline = Instant::now() + window;
                if !say(&mut write, &line, limits.read_timeout).await {
                    return Ok(());
                }
            }
            Step::Send { source } => {
                if !send(gateway, &source, &payload, &mut stop).await {
                    return Ok(());
                }
                // Time spent waiting for room in the budget is not the client's.
                deadline = Instant::now() + window;
            }
        }
        if end {
            let _ = write.shutdown().await;
            return Ok(());
        }
    }
}

/// What a frame asks for: until the connection is `authenticated`, the frame must be the `AUTH`
/// line; after that it is an event.
fn next_step(
    frame: Frame<'_>,
    gateway: &Gateway,
    authenticated: &mut bool,
    payload: &mut Vec<u8>,
) -> Step {
    if *authenticated {
        return classify(frame, gateway, payload);
    }
    let token = gateway.token.as_ref().map(|t| t.expose().as_bytes());
    match (frame, token) {
        (Frame::Line { bytes, .. }, Some(token)) if tcp_auth_matches(bytes, token) => {
            *authenticated = true;
            Step::Nothing
        }
        (Frame::Line { bytes, .. }, _) if frame::is_blank(bytes) => Step::Nothing,
        _ => Step::Close(AUTHENTICATION_REQUIRED),
    }
}

/// Validates a frame: a valid event is encoded into `payload`.
fn classify(frame: Frame<'_>, gateway: &Gateway, payload: &mut Vec<u8>) -> Step {
    let Some(item) = frame::item(frame, gateway.limits.max_line_bytes) else {
        return Step::Nothing;
    };
    match item.event {
        Ok(event) => {
            payload.clear();
            encode(&event, gateway.format, payload);
            Step::Send {
                source: event.source,
            }
        }
        Err(reason) => {
            gateway.stats.rejected(PROTOCOL, &reason);
            Step::Answer(tcp_rejection(item.number, &reason))
        }
    }
}

/// Hands one event to the producer, waiting (and so not reading the socket) while the in-flight
/// budget or the producer's queue is full. `false` if the connection should end.
async fn send(
    gateway: &Gateway,
    source: &str,
    payload: &[u8],
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let cost = Gateway::cost(payload.len());
    loop {
        let budget = tokio::select! {
            budget = Arc::clone(&gateway.in_flight).acquire_many_owned(cost) => budget,
            // Shutting down while the budget is spent: this line is dropped (TCP is best effort).
            _ = stop.wait_for(|s| *s) => return false,
        };
        let Ok(budget) = budget else {
            return false; // the semaphore is never closed
        };
        match gateway.enqueue(source.as_bytes(), payload, PROTOCOL, budget, None) {
            Ok(()) => return true,
            Err(EnqueueError::QueueFull) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(EnqueueError::Other(error)) => {
                tracing::warn!(%error, "cannot hand a TCP event to the producer");
                return false;
            }
        }
    }
}

/// Writes one line to the client within `timeout`; `false` if it could not.
async fn say(write: &mut OwnedWriteHalf, line: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, write.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

//! The client context of every streamagg client: librdkafka's logs routed into `tracing`, a refused
//! connection (failed login, untrusted certificate) told apart from an unreachable cluster, and a
//! producer's delivery reports counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;

/// The client context of every streamagg client: librdkafka's own log lines go to `tracing` (target
/// `librdkafka`) at debug level until the cluster has answered once, so an unreachable cluster is
/// reported once by the caller, not by a screenful of retries; afterwards warnings and errors are
/// logged as such, because then they mean something changed.
#[derive(Default)]
pub struct StreamaggContext {
    connected: AtomicBool,
    /// The first refused connection librdkafka reported (see [`ConnectionAware::refusal`]).
    refusal: Mutex<Option<String>>,
    /// Delivery reports of a producer using this context.
    pub deliveries: DeliveryStats,
}

/// Counts of a producer's delivery reports.
#[derive(Default)]
pub struct DeliveryStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryStats {
    /// The first delivery error seen, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl ProducerContext for StreamaggContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.deliveries.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                let purged = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                if !purged {
                    metrics::counter!(crate::telemetry::metric::PRODUCER_ERRORS).increment(1);
                }
                if self.deliveries.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Ok(mut first) = self.deliveries.first_error.lock() {
                        *first = Some(format!("to '{}': {error}", message.topic()));
                    }
                }
            }
        }
    }
}

/// A client context that knows whether the cluster has answered yet.
pub trait ConnectionAware: ClientContext {
    /// Marks the cluster as reached: from now on librdkafka warnings and errors are logged at their level.
    fn mark_connected(&self);

    /// Why a broker refused the connection (failed SASL authentication or TLS handshake), if
    /// librdkafka has reported that, as its one-line reason. It carries no secret: librdkafka
    /// names the broker, the mechanism and the failure, never the password.
    fn refusal(&self) -> Option<String>;
}

impl ConnectionAware for StreamaggContext {
    fn mark_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }

    fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// Whether a librdkafka error event (with its reason text) means the brokers refuse this client's
/// credentials or TLS settings, rather than being unreachable. A broker that rejects the client's
/// certificate (mutual TLS) answers with a TLS alert, which librdkafka reports as a transport failure
/// naming the alert: alerts about certificates and the handshake count as refusals.
pub fn is_refusal(error: &KafkaError, reason: &str) -> bool {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::SaslAuthenticationFailed,
        ) => true,
        Some(RDKafkaErrorCode::BrokerTransportFailure) => tls_alert(reason).is_some_and(|alert| {
            // handshake_failure, bad_certificate, certificate_revoked, certificate_expired,
            // certificate_unknown, unknown_ca, access_denied, certificate_required (RFC 8446 §6).
            matches!(alert, 40 | 42 | 44 | 45 | 46 | 48 | 49 | 116)
        }),
        _ => false,
    }
}

/// The TLS alert number in an OpenSSL error text ("… SSL alert number 42 …"), if any.
fn tls_alert(reason: &str) -> Option<u16> {
    let (_, after) = reason.split_once("SSL alert number ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether a Kafka error means this client's principal is not allowed to do what it asked (an ACL
/// is missing): retrying cannot help.
pub fn is_not_authorized(error: &KafkaError) -> bool {
    error
        .rdkafka_error_code()
        .is_some_and(is_authorization_code)
}

/// The broker error codes of a missing ACL.
pub fn is_authorization_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::DelegationTokenAuthorizationFailed
    )
}

/// A librdkafka client that the calling thread may serve, so that librdkafka's queued log and
/// error events (which rust-rdkafka hands to the context only from `poll`) arrive while it waits
/// for the cluster.
pub trait ServedClient {
    type Context: ConnectionAware;

    fn client(&self) -> &Client<Self::Context>;

    /// Serves queued events for up to `wait`; never takes a record from the application.
    fn serve_events(&self, wait: Duration);
}

impl<C: ConnectionAware + ProducerContext> ServedClient for BaseProducer<C> {
    type Context = C;

    fn client(&self) -> &Client<C> {
        Producer::client(self)
    }

    fn serve_events(&self, wait: Duration) {
        self.poll(wait);
    }
}

/// A bare client (e.g. an admin client's): its events are not served from here.
impl<C: ConnectionAware> ServedClient for Client<C> {
    type Context = C;

    fn client(&self) -> &Client<C> {
        self
    }

    fn serve_events(&self, wait: Duration) {
        std::thread::sleep(wait);
    }
}

/// A threaded producer's own thread serves its events.
impl<C: ConnectionAware + ProducerContext + 'static> ServedClient for ThreadedProducer<C> {
    type Context = C;

    fn client(&self) -> &Client<C> {
        Producer::client(self)
    }

    fn serve_events(&self, wait: Duration) {
        std::thread::sleep(wait);
    }
}

impl<C: ConnectionAware + ConsumerContext> ServedClient for BaseConsumer<C> {
    type Context = C;

    fn client(&self) -> &Client<C> {
        Consumer::client(self)
    }

    /// Polls only while nothing is assigned (a poll could return a record otherwise, which this
    /// would drop); before that, a poll serves logs, errors and rebalance callbacks only.
    fn serve_events(&self, wait: Duration) {
        if self.assignment().is_ok_and(|a| a.count() == 0) {
            let _ = self.poll(wait);
        } else {
            std::thread::sleep(wait);
        }
    }
}

impl StreamaggContext {
    /// Logs one librdkafka log line (shared by contexts that wrap this one).
    pub fn log_line(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let loud = self.connected.load(Ordering::Relaxed);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
                if loud =>
            {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning if loud => {
                tracing::warn!(target: "librdkafka", facility, "{message}")
            }
            _ => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    /// Logs one librdkafka error event (shared by contexts that wrap this one), and remembers the
    /// first refused connection.
    pub fn log_error(&self, error: KafkaError, reason: &str) {
        if is_refusal(&error, reason) {
            if let Ok(mut refusal) = self.refusal.lock() {
                refusal.get_or_insert_with(|| reason.to_owned());
            }
        }
        if self.connected.load(Ordering::Relaxed) {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        } else {
            tracing::debug!(target: "librdkafka", %error, "{reason}");
        }
    }
}

impl ClientContext for StreamaggContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log_line(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log_error(error, reason);
    }
}

/// Plain consumers (no group, explicit assignment) need no rebalance handling.
impl ConsumerContext for StreamaggContext {}

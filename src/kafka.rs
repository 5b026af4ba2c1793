//! The edge to Kafka shared by every command: connection settings, the librdkafka client context that
//! routes librdkafka's logs into `tracing`, the start-up reachability check that turns an unreachable
//! cluster into one clear error, and topic administration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::cluster::{KafkaSettings, Secret};

impl KafkaSettings {
    /// The librdkafka properties every client of this cluster shares.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Connection failures surface through our own start-up check as one line; keep
            // librdkafka from also printing its own stack of them.
            .set("log.connection.close", "false")
            .set_log_level(RDKafkaLogLevel::Info);
        let security = &self.security;
        for (key, value) in [
            ("security.protocol", security.protocol.as_deref()),
            ("sasl.mechanism", security.sasl_mechanism.as_deref()),
            ("sasl.username", security.sasl_username.as_deref()),
            (
                "sasl.password",
                security.sasl_password.as_ref().map(Secret::expose),
            ),
            ("ssl.ca.location", security.ssl_ca_location.as_deref()),
            (
                "ssl.certificate.location",
                security.ssl_certificate_location.as_deref(),
            ),
            ("ssl.key.location", security.ssl_key_location.as_deref()),
            (
                "ssl.key.password",
                security.ssl_key_password.as_ref().map(Secret::expose),
            ),
        ] {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
        config
    }
}

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot reach Kafka at {brokers} within {}: {cause}", humantime::format_duration(*.waited))]
    Unreachable {
        brokers: String,
        waited: Duration,
        cause: KafkaError,
    },
    /// The brokers answered but refused the connection: failed SASL authentication, or a TLS
    /// handshake that failed (e.g. a broker certificate the CA does not verify). Retrying cannot help.
    #[error("Kafka at {brokers} refused the connection: {reason}")]
    Refused { brokers: String, reason: String },
    #[error("topic '{0}' does not exist")]
    TopicMissing(String),
    #[error("cannot create topic '{topic}': {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("cannot delete topic '{topic}': {reason}")]
    DeleteTopic { topic: String, reason: String },
    #[error("invalid Kafka client configuration: {0}")]
    Config(KafkaError),
    #[error("cannot read the configuration of topic '{topic}': {reason}")]
    DescribeTopic { topic: String, reason: String },
}

impl KafkaSetupError {
    /// The cluster at `settings.brokers` did not answer within `settings.timeout`.
    pub fn unreachable(settings: &KafkaSettings, cause: KafkaError) -> Self {
        KafkaSetupError::Unreachable {
            brokers: settings.brokers.clone(),
            waited: settings.timeout,
            cause,
        }
    }
}

/// Admin operations wait for their result as long as start-up waits for the cluster.
fn admin_options(settings: &KafkaSettings) -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(settings.timeout))
        .request_timeout(Some(settings.timeout))
}

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

/// Asks the cluster for metadata (of `topic` only, if given), waiting at most `settings.timeout`.
/// Blocks the calling thread.
///
/// The wait is cut into growing slices, between which the client's queued events are served: a
/// broker that refuses the connection (wrong password, untrusted certificate) ends the wait at once
/// with librdkafka's reason ([`KafkaSetupError::Refused`]) instead of a timeout that names none.
pub fn fetch_metadata<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topic: Option<&str>,
) -> Result<Metadata, KafkaSetupError> {
    let client = kafka.client();
    let deadline = Instant::now() + settings.timeout;
    let mut slice = Duration::from_millis(100);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.fetch_metadata(topic, slice.min(left)) {
            Ok(metadata) => {
                client.context().mark_connected();
                return Ok(metadata);
            }
            Err(cause) => {
                kafka.serve_events(Duration::from_millis(20));
                if let Some(reason) = client.context().refusal() {
                    return Err(KafkaSetupError::Refused {
                        brokers: settings.brokers.clone(),
                        reason,
                    });
                }
                if !is_transient(&cause) || Instant::now() >= deadline {
                    return Err(KafkaSetupError::unreachable(settings, cause));
                }
            }
        }
        slice *= 2;
    }
}

/// The number of partitions of `topic`, or `None` if the cluster does not have it. Blocks.
pub fn partition_count<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Option<usize>, KafkaSetupError> {
    let metadata = fetch_metadata(kafka, settings, Some(topic))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// The high watermark librdkafka last saw for a partition in a fetch response (no request is made),
/// or `None` while it has none.
pub fn cached_high_watermark<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, the topic is a NUL-terminated
    // string that outlives the call, and librdkafka only writes the two offsets.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// The largest record batch the broker accepts on each of `topics` (its `max.message.bytes`), in
/// order; `None` where it does not say (or the topic does not exist: the caller's own check says
/// so). Ask only a cluster known to answer: an admin client does not tell a refused connection
/// (failed login, untrusted certificate) from a slow one.
pub fn max_message_bytes(
    settings: &KafkaSettings,
    topics: &[&str],
) -> Result<Vec<Option<usize>>, KafkaSetupError> {
    let failed = |topic: &str, reason: String| KafkaSetupError::DescribeTopic {
        topic: topic.to_owned(),
        reason,
    };
    let admin = admin_client(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(topics.join(", ").as_str(), e.to_string()))?;
    let resources: Vec<_> = topics
        .iter()
        .map(|topic| rdkafka::admin::ResourceSpecifier::Topic(topic))
        .collect();
    let results = runtime
        .block_on(admin.describe_configs(&resources, &admin_options(settings)))
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    topics
        .iter()
        .zip(
            results
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_with(|| None)),
        )
        .map(|(topic, result)| match result {
            Some(Ok(config)) => Ok(config
                .get("max.message.bytes")
                .and_then(|entry| entry.value.as_deref()?.parse().ok())),
            Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) | None => Ok(None),
            Some(Err(code)) => Err(failed(topic, code.to_string())),
        })
        .collect()
}

/// An admin client for topic management.
pub fn admin_client(
    settings: &KafkaSettings,
) -> Result<AdminClient<StreamaggContext>, KafkaSetupError> {
    settings
        .client_config("streamagg-admin")
        .create_with_context(StreamaggContext::default())
        .map_err(KafkaSetupError::Config)
}

/// Creates `topic` with `partitions` partitions (replication factor `replication`) unless it exists.
/// Returns whether it was created.
pub async fn ensure_topic(
    admin: &AdminClient<StreamaggContext>,
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<bool, KafkaSetupError> {
    let options = admin_options(settings);
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(KafkaSetupError::CreateTopic {
            topic: topic.to_owned(),
            reason: code.to_string(),
        }),
        None => Err(KafkaSetupError::CreateTopic {
            topic: topic.to_owned(),
            reason: "no result from the broker".into(),
        }),
    }
}

/// Deletes `topics`; a topic that does not exist is not an error.
pub async fn delete_topics(
    admin: &AdminClient<StreamaggContext>,
    settings: &KafkaSettings,
    topics: &[&str],
) -> Result<(), KafkaSetupError> {
    let options = admin_options(settings);
    let results = admin
        .delete_topics(topics, &options)
        .await
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::DeleteTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Whether a Kafka client error is worth trying again: the cluster is moving (rebalance, coordinator
/// or leader change, broker restart) rather than refusing.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::NetworkException
                | Code::WaitingForCoordinator
                | Code::CoordinatorNotAvailable
                | Code::NotCoordinator
                | Code::CoordinatorLoadInProgress
                | Code::RebalanceInProgress
                | Code::UnstableOffsetCommit
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
        )
    )
}

/// Exponential backoff between attempts of one operation, bounded by a total patience.
#[derive(Debug)]
pub struct Backoff {
    started: std::time::Instant,
    patience: Duration,
    delay: Duration,
}

impl Backoff {
    pub fn new(patience: Duration) -> Self {
        Backoff {
            started: std::time::Instant::now(),
            patience,
            delay: Duration::from_millis(100),
        }
    }

    /// After a failed attempt: sleeps and returns `true` if patience remains for another one,
    /// returns `false` (without sleeping) if it has run out.
    pub fn wait(&mut self, error: &dyn std::fmt::Display) -> bool {
        if self.started.elapsed() + self.delay > self.patience {
            return false;
        }
        tracing::warn!(%error, retry_in = ?self.delay, "retrying");
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
        true
    }
}

#[cfg(test)]
mod tests;

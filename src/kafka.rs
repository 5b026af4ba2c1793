//! The edge to Kafka shared by every command: connection settings, the librdkafka client context that
//! routes librdkafka's logs into `tracing`, the start-up reachability check that turns an unreachable
//! cluster into one clear error, and topic administration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// Where the cluster is, how to authenticate to it, and how long to wait for it.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// How long start-up waits for the cluster to answer a metadata request, and admin operations
    /// for their result.
    pub timeout: Duration,
    pub security: KafkaSecurity,
}

/// A secret (a password): shown as `<redacted>` by `Debug`, never by `Display`, so no log line,
/// error or settings dump can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that hands it to librdkafka.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// TLS and SASL towards the brokers; the default is PLAINTEXT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KafkaSecurity {
    /// `security.protocol`: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (`None`: librdkafka's default).
    pub protocol: Option<String>,
    /// `sasl.mechanism`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// `ssl.ca.location`: the CA certificate(s) that signed the brokers' certificates.
    pub ssl_ca_location: Option<String>,
}

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
    #[error("topic '{0}' does not exist")]
    TopicMissing(String),
    #[error("cannot create topic '{topic}': {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("cannot delete topic '{topic}': {reason}")]
    DeleteTopic { topic: String, reason: String },
    #[error("invalid Kafka client configuration: {0}")]
    Config(KafkaError),
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
            Err((error, _)) => {
                let purged = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                if !purged {
                    metrics::counter!(crate::telemetry::metric::PRODUCER_ERRORS).increment(1);
                }
                if self.deliveries.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Ok(mut first) = self.deliveries.first_error.lock() {
                        *first = Some(error.to_string());
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
}

impl ConnectionAware for StreamaggContext {
    fn mark_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
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

    /// Logs one librdkafka error event (shared by contexts that wrap this one).
    pub fn log_error(&self, error: KafkaError, reason: &str) {
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
pub fn fetch_metadata<C: ConnectionAware>(
    client: &Client<C>,
    settings: &KafkaSettings,
    topic: Option<&str>,
) -> Result<Metadata, KafkaSetupError> {
    let metadata = client
        .fetch_metadata(topic, settings.timeout)
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    client.context().mark_connected();
    Ok(metadata)
}

/// The number of partitions of `topic`, or `None` if the cluster does not have it. Blocks.
pub fn partition_count<C: ConnectionAware>(
    client: &Client<C>,
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Option<usize>, KafkaSetupError> {
    let metadata = fetch_metadata(client, settings, Some(topic))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
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
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_ones_a_moving_cluster_causes() {
        let cases = [
            (
                KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
                true,
            ),
            (
                KafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator),
                true,
            ),
            (
                KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress),
                true,
            ),
            (
                KafkaError::MetadataFetch(RDKafkaErrorCode::UnstableOffsetCommit),
                true,
            ),
            (
                KafkaError::MetadataFetch(RDKafkaErrorCode::GroupAuthorizationFailed),
                false,
            ),
            (
                KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
                false,
            ),
            (
                KafkaError::ConsumerCommit(RDKafkaErrorCode::InvalidArgument),
                false,
            ),
            (KafkaError::Canceled, false),
        ];
        for (error, expected) in cases {
            assert_eq!(is_transient(&error), expected, "{error}");
        }
    }

    #[test]
    fn secrets_reach_librdkafka_but_never_debug_output() {
        let settings = KafkaSettings {
            brokers: "b:9093".into(),
            timeout: Duration::from_secs(1),
            security: KafkaSecurity {
                protocol: Some("SASL_SSL".into()),
                sasl_mechanism: Some("SCRAM-SHA-512".into()),
                sasl_username: Some("agg".into()),
                sasl_password: Some(Secret::new("hunter2-very-secret".into())),
                ssl_ca_location: Some("/etc/ca.crt".into()),
            },
        };
        let config = settings.client_config("t");
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("agg"));
        assert_eq!(config.get("sasl.password"), Some("hunter2-very-secret"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/ca.crt"));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let plain = KafkaSettings {
            security: KafkaSecurity::default(),
            ..settings
        };
        assert_eq!(plain.client_config("t").get("security.protocol"), None);
    }

    #[test]
    fn backoff_gives_up_when_patience_runs_out() {
        assert!(!Backoff::new(Duration::ZERO).wait(&"boom"));
        let mut backoff = Backoff::new(Duration::from_millis(250));
        assert!(backoff.wait(&"boom"), "100 ms fits in 250 ms");
        assert!(!backoff.wait(&"boom"), "another 200 ms does not");
    }
}

//! The edge to Kafka shared by every command: the librdkafka properties of a cluster's clients, why
//! talking to the cluster failed, which failures are worth retrying, and the backoff between tries.
//! [`context`] is the client context every client uses (logs, refusals, delivery counts); [`admin`]
//! asks the cluster about topics and manages them; [`topics`] creates a processor's written topics
//! shaped like its inputs.

pub mod admin;
pub mod context;
pub mod topics;

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::cluster::{KafkaSettings, Secret};

impl KafkaSettings {
    /// The librdkafka properties every client of this cluster shares.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // streamagg asks about topics only to check or describe them, and creates them only
            // when told to (`topics`, `--create-topics`). librdkafka's producer default (true)
            // lets its metadata request for a missing topic create it, with the broker's default
            // shape, on a broker with `auto.create.topics.enable=true` (Apache's default): the
            // start-up check and `topics ensure` would then find a topic of the wrong shape.
            .set("allow.auto.create.topics", "false")
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

impl KafkaSettings {
    /// [`Self::client_config`] with the fetch behaviour every streamagg consumer starts from
    /// (pass-through properties set later override it).
    ///
    /// librdkafka stops fetching a partition whose local queue is over its thresholds and, by
    /// default, does not ask again for a whole second (`fetch.queue.backoff.ms`): a consumer that
    /// drains a backlog faster than that sits idle most of the time. Asking again after 10 ms keeps
    /// it fed; smaller fetches per partition and a smaller local queue keep the memory that costs
    /// below librdkafka's defaults.
    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        for (key, value) in CONSUMER_FETCH_DEFAULTS {
            config.set(*key, *value);
        }
        config
    }
}

/// The consumer fetch properties of [`KafkaSettings::consumer_config`].
pub const CONSUMER_FETCH_DEFAULTS: &[(&str, &str)] = &[
    ("fetch.queue.backoff.ms", "10"),
    ("max.partition.fetch.bytes", "262144"),
    ("queued.max.messages.kbytes", "4096"),
];

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
    /// librdkafka refused a property; the text names the key but never the value (a secret, maybe).
    #[error("invalid Kafka client configuration: {0}")]
    Config(String),
    #[error("cannot read the configuration of topic '{topic}': {reason}")]
    DescribeTopic { topic: String, reason: String },
    #[error("consumer group '{group}': {reason}")]
    Group { group: String, reason: String },
}

impl KafkaSetupError {
    /// librdkafka refused the client configuration: its reason, with the property's value taken
    /// out wherever librdkafka quoted it.
    pub fn config(error: KafkaError) -> Self {
        KafkaSetupError::Config(match error {
            KafkaError::ClientConfig(_, description, key, value) => {
                let description = if value.is_empty() {
                    description
                } else {
                    description.replace(&value, "<redacted>")
                };
                format!("property '{key}': {description}")
            }
            other => other.to_string(),
        })
    }

    /// The cluster at `settings.brokers` did not answer within `settings.timeout`.
    pub fn unreachable(settings: &KafkaSettings, cause: KafkaError) -> Self {
        KafkaSetupError::unreachable_within(settings, settings.timeout, cause)
    }

    /// The cluster at `settings.brokers` did not answer within `waited` (a call with a timeout of
    /// its own).
    pub fn unreachable_within(
        settings: &KafkaSettings,
        waited: Duration,
        cause: KafkaError,
    ) -> Self {
        KafkaSetupError::Unreachable {
            brokers: settings.brokers.clone(),
            waited,
            cause,
        }
    }
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

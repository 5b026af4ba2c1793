//! Configuration of `streamagg run`: flags, `STREAMAGG_*` environment variables and a TOML file,
//! validated once into [`RunSettings`]. Precedence: flag > environment > file > default.
//!
//! Everything downstream takes `RunSettings` and never re-checks it: cross-field rules (distinct
//! topics, positive durations, librdkafka pass-through keys that would fight settings streamagg
//! manages) are enforced here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::checkpoint::Semantics;
use crate::codec::Format;
use crate::route::RouteSettings;
use crate::window::WindowSpec;

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
    /// `ssl.certificate.location` / `ssl.key.location`: the client certificate and its private key
    /// (PEM) for brokers that require mutual TLS.
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    /// `ssl.key.password`: the passphrase of an encrypted private key.
    pub ssl_key_password: Option<Secret>,
}

/// TLS and SASL as given by flags, environment and file, before validation ([`Self::validate`]):
/// one definition for every command that talks to Kafka. In `run`'s TOML file they are top-level
/// keys of the same names; the secrets themselves are never flags nor file keys (a flag shows in
/// `ps`): they come from `STREAMAGG_SASL_PASSWORD` / `STREAMAGG_SSL_KEY_PASSWORD` or the named files,
/// read at the binary's edge.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
pub struct SecurityOptions {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: PLAINTEXT].
    #[arg(long, env = "STREAMAGG_SECURITY_PROTOCOL")]
    pub security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol).
    #[arg(long, env = "STREAMAGG_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
    /// SASL username. The password is never a flag: set STREAMAGG_SASL_PASSWORD or
    /// --sasl-password-file.
    #[arg(long, env = "STREAMAGG_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// File holding the SASL password (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "STREAMAGG_SASL_PASSWORD_FILE")]
    pub sasl_password_file: Option<PathBuf>,
    /// From `STREAMAGG_SASL_PASSWORD` or read from `sasl_password_file` at the binary's edge.
    #[arg(skip)]
    #[serde(skip)]
    pub sasl_password: Option<Secret>,
    /// CA certificate(s) that signed the brokers' certificates (with SSL or SASL_SSL).
    #[arg(long, env = "STREAMAGG_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,
    /// Client certificate (PEM) for brokers that require mutual TLS; with --ssl-key-location.
    #[arg(long, env = "STREAMAGG_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<String>,
    /// The client certificate's private key (PEM). An encrypted key's passphrase is never a flag:
    /// set STREAMAGG_SSL_KEY_PASSWORD or --ssl-key-password-file.
    #[arg(long, env = "STREAMAGG_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<String>,
    /// File holding the private key's passphrase.
    #[arg(long, env = "STREAMAGG_SSL_KEY_PASSWORD_FILE")]
    pub ssl_key_password_file: Option<PathBuf>,
    /// From `STREAMAGG_SSL_KEY_PASSWORD` or read from `ssl_key_password_file` at the binary's edge.
    #[arg(skip)]
    #[serde(skip)]
    pub ssl_key_password: Option<Secret>,
}

/// librdkafka properties every client gets from `KafkaSettings` (the cluster and how to reach it);
/// passing them through is refused for consumer and producer alike.
pub const MANAGED_CONNECTION_KEYS: &[&str] = &[
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
];

/// librdkafka consumer properties streamagg sets itself, besides the connection keys.
pub const MANAGED_CONSUMER_KEYS: &[&str] = &[
    "group.instance.id",
    "group.id",
    "group.protocol",
    "partition.assignment.strategy",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "isolation.level",
];

/// librdkafka producer properties streamagg sets itself, besides the connection keys.
pub const MANAGED_PRODUCER_KEYS: &[&str] = &[
    "enable.idempotence",
    "transactional.id",
    "acks",
    "partitioner",
];

/// The port of the metrics and health endpoint unless `metrics_addr` says otherwise (the
/// OpenTelemetry Prometheus exporter's port).
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// What streamagg promises about the output when something fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Outputs and the input offsets they reflect commit in one Kafka transaction per checkpoint:
    /// a `read_committed` consumer sees every window exactly once, whatever fails.
    ExactlyOnce,
    /// No transactions: after a crash, windows closed since the last checkpoint are emitted again,
    /// byte-identical.
    AtLeastOnce,
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EventTime {
    /// The record's `timestamp` field.
    Field,
    /// The Kafka record timestamp (CreateTime or LogAppendTime).
    Kafka,
}

/// A configuration error: one line naming the setting.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("missing setting '{0}' (flag --{1}, env STREAMAGG_{2}, or the config file)")]
    Missing(&'static str, &'static str, &'static str),
    #[error("invalid setting '{key}': {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("[kafka.{table}] may not set '{key}': streamagg manages it")]
    Managed { table: &'static str, key: String },
}

/// `streamagg run`'s settings, all optional, defined once for flags, `STREAMAGG_*` environment
/// variables (the flag in upper snake case) and keys of the TOML file (the flag in snake case).
/// Precedence: flag > environment > file ([`Self::from_file`], then clap's
/// `update_from_arg_matches`) > the defaults [`RunSettings`] fills in.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, clap::Args)]
pub struct RunOptions {
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "STREAMAGG_BROKERS")]
    pub brokers: Option<String>,
    /// Input topics, comma-separated.
    #[arg(long, env = "STREAMAGG_INPUT", value_delimiter = ',')]
    pub input: Option<Vec<String>>,
    /// Output topic for TrafficAverage records.
    #[arg(long, env = "STREAMAGG_OUTPUT")]
    pub output: Option<String>,
    /// Consumer group [default: streamagg].
    #[arg(long, env = "STREAMAGG_GROUP")]
    pub group: Option<String>,
    /// Directory of the RocksDB state store [default: ./state].
    #[arg(long, env = "STREAMAGG_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Input payload format [default: json].
    #[arg(long, env = "STREAMAGG_INPUT_FORMAT", value_enum)]
    pub input_format: Option<Format>,
    /// Output payload format [default: json].
    #[arg(long, env = "STREAMAGG_OUTPUT_FORMAT", value_enum)]
    pub output_format: Option<Format>,
    /// Event time from the record's `timestamp` field or the Kafka record timestamp [default: field].
    #[arg(long, env = "STREAMAGG_EVENT_TIME", value_enum)]
    pub event_time: Option<EventTime>,
    /// Window size [default: 60s].
    #[arg(long, env = "STREAMAGG_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub window: Option<Duration>,
    /// How long after a window's end it still accepts out-of-order events [default: 10s].
    #[arg(long, env = "STREAMAGG_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub grace: Option<Duration>,
    /// Drop events with value below this before aggregation (the threshold filter).
    #[arg(long, env = "STREAMAGG_MIN_VALUE")]
    pub min_value: Option<f64>,
    /// Forward late events here, unchanged, with headers saying why.
    #[arg(long, env = "STREAMAGG_LATE_TOPIC")]
    pub late_topic: Option<String>,
    /// Forward undecodable or invalid records here, unchanged, with headers saying why.
    #[arg(long, env = "STREAMAGG_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// How often state and offsets are checkpointed [default: 1s].
    #[arg(long, env = "STREAMAGG_CHECKPOINT_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub checkpoint_interval: Option<Duration>,
    /// How long to wait for the cluster at start-up [default: 10s].
    #[arg(long, env = "STREAMAGG_KAFKA_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub kafka_timeout: Option<Duration>,
    /// Delivery guarantee [default: exactly-once].
    #[arg(long, env = "STREAMAGG_GUARANTEE", value_enum)]
    pub guarantee: Option<Guarantee>,
    /// Stable name of this instance, part of its transactional id [default: generated once, kept in
    /// the state dir].
    #[arg(long, env = "STREAMAGG_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Join as a static group member named after the instance id (KIP-345): a restarted instance
    /// gets its partitions back at once; a stopped one keeps them until the session times out.
    #[arg(long, env = "STREAMAGG_STATIC_MEMBERSHIP", num_args = 0..=1, default_missing_value = "true")]
    pub static_membership: Option<bool>,
    /// Advance an idle partition's stream time by wall clock after this long without records, so its
    /// last windows close (trades replay determinism for latency) [default: off].
    #[arg(long, env = "STREAMAGG_IDLE_CLOSE_AFTER", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub idle_close_after: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz on this ip:port, or `off` [default: 127.0.0.1:9464;
    /// in a container use 0.0.0.0:9464].
    #[arg(long, env = "STREAMAGG_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// The poll loop counts as stalled (/healthz fails, the watchdog logs) after this long without
    /// polling [default: 30s].
    #[arg(long, env = "STREAMAGG_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde_opt")]
    pub stall_timeout: Option<Duration>,
    #[command(flatten)]
    #[serde(flatten)]
    pub security: SecurityOptions,
    /// `[kafka.consumer]` and `[kafka.producer]`: only in the file.
    #[arg(skip)]
    #[serde(default)]
    pub kafka: KafkaPassThrough,
}

/// `[kafka.consumer]` and `[kafka.producer]`: librdkafka properties passed through unchanged.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaPassThrough {
    #[serde(default)]
    pub consumer: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub producer: BTreeMap<String, toml::Value>,
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl RunOptions {
    /// Parses a TOML config file's text. Unknown keys are errors: the known ones are the flags'
    /// names (so a secret, which is never a flag, is refused too) and the `[kafka]` tables.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, ConfigError> {
        let parse_error = |reason: String| ConfigError::Parse {
            path: path.to_owned(),
            reason: reason.replace('\n', " "),
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(e.message().into()))?;
        let flags = <Self as clap::Args>::augment_args(clap::Command::new("run"));
        let known: Vec<&str> = flags
            .get_arguments()
            .map(|arg| arg.get_id().as_str())
            .chain(["kafka"])
            .collect();
        if let Some(key) = table.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(parse_error(format!(
                "unknown field `{key}`, expected one of {}",
                known.join(", ")
            )));
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.message().into()))
    }

    /// Reads and parses a TOML config file.
    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml(path, &text)
    }
}

/// Validated settings of `streamagg run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub kafka: KafkaSettings,
    pub input_topics: Vec<String>,
    pub output_topic: String,
    pub group: String,
    pub state_dir: PathBuf,
    pub input_format: Format,
    pub output_format: Format,
    pub event_time: EventTime,
    pub window: WindowSpec,
    pub min_value: Option<f64>,
    pub late_topic: Option<String>,
    pub dlq_topic: Option<String>,
    pub checkpoint_interval: Duration,
    pub guarantee: Guarantee,
    /// Names this instance in its transactional id; `None`: one generated once and kept in the state dir.
    pub instance_id: Option<String>,
    /// Join the group as a static member (`group.instance.id = streamagg-<instance id>`, KIP-345).
    pub static_membership: bool,
    /// Advance an idle partition's stream time by wall clock after this long without records.
    pub idle_close_after: Option<Duration>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: not at all.
    pub metrics_addr: Option<SocketAddr>,
    /// How long the poll loop may go without polling before it counts as stalled (`/healthz` fails).
    pub stall_timeout: Duration,
    pub consumer_properties: BTreeMap<String, String>,
    pub producer_properties: BTreeMap<String, String>,
    /// librdkafka's `transaction.timeout.ms` of the output producer (exactly-once): the coordinator
    /// aborts a transaction open longer than this.
    pub transaction_timeout: Duration,
}

/// The output producer's `transaction.timeout.ms` unless `[kafka.producer]` sets it (Kafka
/// Streams' default under exactly-once).
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

impl RunSettings {
    /// The settings that decide what a window holds (see [`Semantics`]).
    pub fn semantics(&self) -> Semantics {
        Semantics {
            window_ms: self.window.size_ms,
            grace_ms: self.window.grace_ms,
            min_value: self.min_value,
            event_time: self.event_time,
            input_format: self.input_format,
        }
    }

    /// The settings the per-record decision depends on.
    pub fn route_settings(&self) -> RouteSettings {
        RouteSettings {
            input_format: self.input_format,
            event_time: self.event_time,
            min_value: self.min_value,
        }
    }
}

/// The transaction timeout `producer_properties` configure, and under exactly-once the check that a
/// checkpoint interval fits in it: a transaction is open for one interval plus its commit, and one the
/// coordinator aborts for its age fences the producer (the instance would crash-loop).
fn transaction_timeout(
    producer_properties: &BTreeMap<String, String>,
    guarantee: Guarantee,
    checkpoint_interval: Duration,
) -> Result<Duration, ConfigError> {
    let timeout = match producer_properties.get("transaction.timeout.ms") {
        None => DEFAULT_TRANSACTION_TIMEOUT,
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| ConfigError::Invalid {
                key: "transaction.timeout.ms",
                reason: format!("'{text}' is not a positive number of milliseconds"),
            })?,
    };
    if guarantee == Guarantee::ExactlyOnce && checkpoint_interval * 2 > timeout {
        return Err(ConfigError::Invalid {
            key: "checkpoint_interval",
            reason: format!(
                "{} is more than half of transaction.timeout.ms ({}): under exactly-once a \
                 transaction lasts one interval plus its commit, and the coordinator aborts it after \
                 that timeout; lower the interval or raise [kafka.producer] transaction.timeout.ms",
                humantime::format_duration(checkpoint_interval),
                humantime::format_duration(timeout)
            ),
        });
    }
    Ok(timeout)
}

fn millis(key: &'static str, duration: Duration) -> Result<i64, ConfigError> {
    i64::try_from(duration.as_millis()).map_err(|_| ConfigError::Invalid {
        key,
        reason: "too long".into(),
    })
}

pub(crate) fn topic(key: &'static str, name: String) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(name)
    } else {
        Err(ConfigError::Invalid {
            key,
            reason: format!("'{name}' is not a valid Kafka topic name"),
        })
    }
}

fn pass_through(
    table: &'static str,
    values: BTreeMap<String, toml::Value>,
    managed: &[&str],
) -> Result<BTreeMap<String, String>, ConfigError> {
    values
        .into_iter()
        .map(|(key, value)| {
            if managed.contains(&key.as_str()) || MANAGED_CONNECTION_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Managed { table, key });
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::Invalid {
                        key: "kafka",
                        reason: format!(
                            "[kafka.{table}] '{key}' must be a string, number or boolean, not {}",
                            other.type_str()
                        ),
                    })
                }
            };
            Ok((key, value))
        })
        .collect()
}

impl KafkaSettings {
    /// The cluster settings every command shares, validated once: a non-empty broker list, a
    /// positive timeout, and TLS/SASL by [`SecurityOptions::validate`].
    pub fn validate(
        brokers: String,
        timeout: Duration,
        security: &SecurityOptions,
    ) -> Result<Self, ConfigError> {
        if brokers.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "brokers",
                reason: "is empty".into(),
            });
        }
        if timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "kafka_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        Ok(KafkaSettings {
            brokers,
            timeout,
            security: security.validate()?,
        })
    }
}

/// Where the cluster is and how to reach it, as flags and environment, for every command but `run`
/// (whose [`RunOptions`] also read a file).
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaOptions {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "STREAMAGG_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    /// How long to wait for the cluster to answer before giving up, e.g. 10s.
    #[arg(long, env = "STREAMAGG_KAFKA_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub kafka_timeout: Duration,
    #[command(flatten)]
    pub security: SecurityOptions,
}

impl KafkaOptions {
    /// Validated by the rules every command shares (the secrets must have been filled in).
    pub fn validate(&self) -> Result<KafkaSettings, ConfigError> {
        KafkaSettings::validate(self.brokers.clone(), self.kafka_timeout, &self.security)
    }
}

/// The bootstrap servers unless a setting names others: a broker on this host.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// A listening address setting: `ip:port`, or `off` (`None`).
pub fn listen_addr(key: &'static str, text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match text.trim() {
        "off" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| ConfigError::Invalid {
            key,
            reason: format!("'{addr}' is not an ip:port address (or 'off')"),
        }),
    }
}

impl SecurityOptions {
    /// TLS and SASL settings, checked for consistency: SASL protocols need a mechanism, a username and
    /// a password; other protocols may not have them; a CA and a client certificate only go with TLS,
    /// and a certificate with its key.
    pub fn validate(&self) -> Result<KafkaSecurity, ConfigError> {
        let options = self;
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let protocol = options
            .security_protocol
            .as_deref()
            .map(str::to_ascii_uppercase);
        let (sasl, tls) = match protocol.as_deref() {
            None | Some("PLAINTEXT") => (false, false),
            Some("SSL") => (false, true),
            Some("SASL_PLAINTEXT") => (true, false),
            Some("SASL_SSL") => (true, true),
            Some(_) => {
                return Err(invalid(
                    "security_protocol",
                    "must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                ))
            }
        };
        let mechanism = options
            .sasl_mechanism
            .as_deref()
            .map(str::to_ascii_uppercase);
        if sasl {
            match mechanism.as_deref() {
                Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {}
                Some(_) => {
                    return Err(invalid(
                        "sasl_mechanism",
                        "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    ))
                }
                None => {
                    return Err(invalid(
                        "sasl_mechanism",
                        "is required with a SASL protocol",
                    ))
                }
            }
            if options.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err(invalid("sasl_username", "is required with a SASL protocol"));
            }
            if options.sasl_password.is_none() {
                return Err(invalid(
                "sasl_password",
                "is required with a SASL protocol: set STREAMAGG_SASL_PASSWORD or sasl_password_file",
            ));
            }
        } else if mechanism.is_some()
            || options.sasl_username.is_some()
            || options.sasl_password.is_some()
        {
            return Err(invalid(
                "security_protocol",
                "SASL settings are given but the protocol is not SASL_PLAINTEXT or SASL_SSL",
            ));
        }
        for (key, given) in [
            ("ssl_ca_location", options.ssl_ca_location.is_some()),
            (
                "ssl_certificate_location",
                options.ssl_certificate_location.is_some(),
            ),
            ("ssl_key_location", options.ssl_key_location.is_some()),
        ] {
            if given && !tls {
                return Err(invalid(
                    key,
                    "only applies with security_protocol SSL or SASL_SSL",
                ));
            }
        }
        match (&options.ssl_certificate_location, &options.ssl_key_location) {
            (Some(_), None) => {
                return Err(invalid(
                    "ssl_key_location",
                    "is required with ssl_certificate_location",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "ssl_certificate_location",
                    "is required with ssl_key_location",
                ))
            }
            _ => {}
        }
        if options.ssl_key_password.is_some() && options.ssl_key_location.is_none() {
            return Err(invalid(
                "ssl_key_password",
                "is given but ssl_key_location is not",
            ));
        }
        Ok(KafkaSecurity {
            protocol,
            sasl_mechanism: mechanism,
            sasl_username: options.sasl_username.clone(),
            sasl_password: options.sasl_password.clone(),
            ssl_ca_location: options.ssl_ca_location.clone(),
            ssl_certificate_location: options.ssl_certificate_location.clone(),
            ssl_key_location: options.ssl_key_location.clone(),
            ssl_key_password: options.ssl_key_password.clone(),
        })
    }
}

impl TryFrom<RunOptions> for RunSettings {
    type Error = ConfigError;

    fn try_from(options: RunOptions) -> Result<Self, ConfigError> {
        let kafka = KafkaSettings::validate(
            options
                .brokers
                .clone()
                .unwrap_or_else(|| DEFAULT_BROKERS.to_owned()),
            options.kafka_timeout.unwrap_or(Duration::from_secs(10)),
            &options.security,
        )?;
        let input_topics: Vec<String> = options
            .input
            .ok_or(ConfigError::Missing("input", "input", "INPUT"))?
            .into_iter()
            .map(|t| topic("input", t))
            .collect::<Result<_, _>>()?;
        if input_topics.is_empty() {
            return Err(ConfigError::Missing("input", "input", "INPUT"));
        }
        let output_topic = topic(
            "output",
            options
                .output
                .ok_or(ConfigError::Missing("output", "output", "OUTPUT"))?,
        )?;
        let late_topic = options
            .late_topic
            .map(|t| topic("late_topic", t))
            .transpose()?;
        let dlq_topic = options
            .dlq_topic
            .map(|t| topic("dlq_topic", t))
            .transpose()?;
        let mut written = vec![("output", &output_topic)];
        written.extend(late_topic.iter().map(|t| ("late_topic", t)));
        written.extend(dlq_topic.iter().map(|t| ("dlq_topic", t)));
        for (key, name) in &written {
            if input_topics.contains(name) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("'{name}' is also an input topic"),
                });
            }
        }
        let mut sorted_inputs = input_topics.clone();
        sorted_inputs.sort();
        sorted_inputs.dedup();
        if sorted_inputs.len() != input_topics.len() {
            return Err(ConfigError::Invalid {
                key: "input",
                reason: "names a topic twice".into(),
            });
        }

        let group = options.group.unwrap_or_else(|| "streamagg".to_owned());
        if group.is_empty() {
            return Err(ConfigError::Invalid {
                key: "group",
                reason: "is empty".into(),
            });
        }
        let size_ms = millis("window", options.window.unwrap_or(Duration::from_secs(60)))?;
        if size_ms <= 0 {
            return Err(ConfigError::Invalid {
                key: "window",
                reason: "must be at least 1ms".into(),
            });
        }
        let grace_ms = millis("grace", options.grace.unwrap_or(Duration::from_secs(10)))?;
        let checkpoint_interval = options
            .checkpoint_interval
            .unwrap_or(Duration::from_secs(1));
        if checkpoint_interval < Duration::from_millis(10) {
            return Err(ConfigError::Invalid {
                key: "checkpoint_interval",
                reason: "must be at least 10ms".into(),
            });
        }
        if let Some(min) = options.min_value {
            if !min.is_finite() {
                return Err(ConfigError::Invalid {
                    key: "min_value",
                    reason: "must be a finite number".into(),
                });
            }
        }
        if let Some(id) = &options.instance_id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(ConfigError::Invalid {
                    key: "instance_id",
                    reason: "use letters, digits, '.', '_' and '-'".into(),
                });
            }
        }
        if options.idle_close_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Invalid {
                key: "idle_close_after",
                reason: "must be greater than zero".into(),
            });
        }
        let metrics_addr = match options.metrics_addr.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            Some(text) => listen_addr("metrics_addr", text)?,
        };
        let stall_timeout = options.stall_timeout.unwrap_or(Duration::from_secs(30));
        if stall_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "stall_timeout",
                reason: "must be at least 100ms".into(),
            });
        }
        let guarantee = options.guarantee.unwrap_or(Guarantee::ExactlyOnce);
        let producer_properties =
            pass_through("producer", options.kafka.producer, MANAGED_PRODUCER_KEYS)?;
        let transaction_timeout =
            transaction_timeout(&producer_properties, guarantee, checkpoint_interval)?;
        Ok(RunSettings {
            kafka,
            input_topics,
            output_topic,
            group,
            state_dir: options
                .state_dir
                .unwrap_or_else(|| PathBuf::from("./state")),
            input_format: options.input_format.unwrap_or(Format::Json),
            output_format: options.output_format.unwrap_or(Format::Json),
            event_time: options.event_time.unwrap_or(EventTime::Field),
            window: WindowSpec { size_ms, grace_ms },
            min_value: options.min_value,
            late_topic,
            dlq_topic,
            checkpoint_interval,
            guarantee,
            instance_id: options.instance_id,
            static_membership: options.static_membership.unwrap_or(false),
            idle_close_after: options.idle_close_after,
            metrics_addr,
            stall_timeout,
            consumer_properties: pass_through(
                "consumer",
                options.kafka.consumer,
                MANAGED_CONSUMER_KEYS,
            )?,
            producer_properties,
            transaction_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> RunOptions {
        RunOptions {
            input: Some(vec!["traffic".into()]),
            output: Some("averages".into()),
            ..RunOptions::default()
        }
    }

    #[test]
    fn defaults_fill_what_is_not_set() {
        let settings = RunSettings::try_from(minimal()).expect("valid");
        assert_eq!(settings.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(settings.group, "streamagg");
        assert_eq!(
            settings.window,
            WindowSpec {
                size_ms: 60_000,
                grace_ms: 10_000
            }
        );
        assert_eq!(settings.checkpoint_interval, Duration::from_secs(1));
        assert_eq!(settings.input_format, Format::Json);
        assert_eq!(settings.event_time, EventTime::Field);
        assert_eq!(settings.state_dir, PathBuf::from("./state"));
        assert_eq!(settings.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(settings.idle_close_after, None);
        assert!(!settings.static_membership);
        assert_eq!(
            settings.metrics_addr,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
        assert_eq!(settings.stall_timeout, Duration::from_secs(30));
        assert_eq!(settings.transaction_timeout, DEFAULT_TRANSACTION_TIMEOUT);
    }

    #[test]
    fn the_checkpoint_interval_must_fit_in_the_transaction_timeout_under_exactly_once_only() {
        let interval = |secs, guarantee, timeout_ms: Option<&str>| RunOptions {
            checkpoint_interval: Some(Duration::from_secs(secs)),
            guarantee: Some(guarantee),
            kafka: KafkaPassThrough {
                producer: timeout_ms
                    .map(|ms| {
                        BTreeMap::from([(
                            "transaction.timeout.ms".to_owned(),
                            toml::Value::String(ms.into()),
                        )])
                    })
                    .unwrap_or_default(),
                ..Default::default()
            },
            ..minimal()
        };
        let cases = [
            (5, Guarantee::ExactlyOnce, None, Some(10)),
            (6, Guarantee::ExactlyOnce, None, None),
            (10, Guarantee::AtLeastOnce, None, Some(10)),
            (10, Guarantee::ExactlyOnce, Some("60000"), Some(60)),
            (31, Guarantee::ExactlyOnce, Some("60000"), None),
        ];
        for (secs, guarantee, timeout_ms, accepted_timeout) in cases {
            let settings = RunSettings::try_from(interval(secs, guarantee, timeout_ms));
            assert_eq!(
                settings.ok().map(|s| s.transaction_timeout),
                accepted_timeout.map(Duration::from_secs),
                "{secs}s {guarantee:?} {timeout_ms:?}"
            );
        }
    }

    #[test]
    fn sasl_over_tls_is_accepted_and_its_password_never_shown() {
        let settings = RunSettings::try_from(RunOptions {
            security: SecurityOptions {
                security_protocol: Some("sasl_ssl".into()),
                sasl_mechanism: Some("scram-sha-512".into()),
                sasl_username: Some("agg".into()),
                sasl_password: Some(Secret::new("s3cr3t-pw".into())),
                ssl_ca_location: Some("/etc/streamagg/ca.crt".into()),
                ..SecurityOptions::default()
            },
            ..minimal()
        })
        .expect("valid");
        let security = &settings.kafka.security;
        assert_eq!(security.protocol.as_deref(), Some("SASL_SSL"));
        assert_eq!(security.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(
            security.sasl_password.as_ref().map(Secret::expose),
            Some("s3cr3t-pw")
        );
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        for secret_key in ["sasl_password", "ssl_key_password"] {
            let in_file = RunOptions::from_toml("f.toml", &format!("{secret_key} = \"x\"\n"));
            assert!(in_file.is_err(), "{secret_key} is not a file key");
        }
    }

    #[test]
    fn the_metrics_endpoint_can_move_or_be_turned_off() {
        let cases = [
            ("0.0.0.0:9464", Some("0.0.0.0:9464")),
            ("127.0.0.1:0", Some("127.0.0.1:0")),
            ("[::1]:9000", Some("[::1]:9000")),
            ("off", None),
        ];
        for (text, expected) in cases {
            let settings = RunSettings::try_from(RunOptions {
                metrics_addr: Some(text.into()),
                ..minimal()
            })
            .expect("valid");
            assert_eq!(
                settings.metrics_addr,
                expected.map(|e| e.parse().expect("addr")),
                "{text}"
            );
        }
    }

    #[test]
    fn the_file_parses_with_durations_and_pass_through_tables() {
        let text = r#"
            brokers = "10.0.0.1:9092"
            input = ["a", "b"]
            output = "out"
            window = "30s"
            grace = "2s"
            input_format = "avro"
            event_time = "kafka"
            min_value = 0.5
            guarantee = "at-least-once"
            instance_id = "node-1"
            static_membership = true
            idle_close_after = "30s"
            [kafka.consumer]
            "fetch.max.bytes" = 1048576
            "auto.offset.reset" = "latest"
            [kafka.producer]
            "linger.ms" = "5"
        "#;
        let settings =
            RunSettings::try_from(RunOptions::from_toml("f.toml", text).expect("parses"))
                .expect("valid");
        assert_eq!(settings.input_topics, ["a", "b"]);
        assert_eq!(
            settings.window,
            WindowSpec {
                size_ms: 30_000,
                grace_ms: 2_000
            }
        );
        assert_eq!(settings.input_format, Format::Avro);
        assert_eq!(settings.event_time, EventTime::Kafka);
        assert_eq!(settings.min_value, Some(0.5));
        assert_eq!(settings.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(settings.instance_id.as_deref(), Some("node-1"));
        assert!(settings.static_membership);
        assert_eq!(settings.idle_close_after, Some(Duration::from_secs(30)));
        assert_eq!(settings.consumer_properties["fetch.max.bytes"], "1048576");
        assert_eq!(settings.consumer_properties["auto.offset.reset"], "latest");
        assert_eq!(settings.producer_properties["linger.ms"], "5");
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let file = RunOptions {
            group: Some("from-file".into()),
            grace: Some(Duration::from_secs(3)),
            ..minimal()
        };
        let mut options = file;
        let flags = <RunOptions as clap::Args>::augment_args(clap::Command::new("run"))
            .try_get_matches_from(["run", "--group", "from-flag"])
            .expect("flags parse");
        clap::FromArgMatches::update_from_arg_matches(&mut options, &flags).expect("update");
        let settings = RunSettings::try_from(options).expect("valid");
        assert_eq!(settings.group, "from-flag");
        assert_eq!(settings.window.grace_ms, 3_000);
    }

    #[test]
    fn invalid_settings_are_refused_with_the_key_named() {
        let cases: Vec<(&str, RunOptions, &str)> = vec![
            ("no input", RunOptions { input: None, ..minimal() }, "missing setting 'input' (flag --input, env STREAMAGG_INPUT, or the config file)"),
            ("no output", RunOptions { output: None, ..minimal() }, "missing setting 'output' (flag --output, env STREAMAGG_OUTPUT, or the config file)"),
            ("bad topic", RunOptions { output: Some("a b".into()), ..minimal() }, "invalid setting 'output': 'a b' is not a valid Kafka topic name"),
            ("loop", RunOptions { output: Some("traffic".into()), ..minimal() }, "invalid setting 'output': 'traffic' is also an input topic"),
            ("dup input", RunOptions { input: Some(vec!["x".into(), "x".into()]), ..minimal() }, "invalid setting 'input': names a topic twice"),
            ("zero window", RunOptions { window: Some(Duration::ZERO), ..minimal() }, "invalid setting 'window': must be at least 1ms"),
            ("tiny checkpoint", RunOptions { checkpoint_interval: Some(Duration::from_millis(1)), ..minimal() }, "invalid setting 'checkpoint_interval': must be at least 10ms"),
            ("nan min", RunOptions { min_value: Some(f64::NAN), ..minimal() }, "invalid setting 'min_value': must be a finite number"),
            ("bad instance id", RunOptions { instance_id: Some("a b".into()), ..minimal() }, "invalid setting 'instance_id': use letters, digits, '.', '_' and '-'"),
            ("zero idle close", RunOptions { idle_close_after: Some(Duration::ZERO), ..minimal() }, "invalid setting 'idle_close_after': must be greater than zero"),
            ("bad metrics addr", RunOptions { metrics_addr: Some("localhost".into()), ..minimal() }, "invalid setting 'metrics_addr': 'localhost' is not an ip:port address (or 'off')"),
            ("tiny stall timeout", RunOptions { stall_timeout: Some(Duration::from_millis(5)), ..minimal() }, "invalid setting 'stall_timeout': must be at least 100ms"),
            ("bad protocol", RunOptions { security: SecurityOptions { security_protocol: Some("TLS".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'security_protocol': must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
            ("sasl without mechanism", RunOptions { security: SecurityOptions { security_protocol: Some("SASL_SSL".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'sasl_mechanism': is required with a SASL protocol"),
            ("bad mechanism", RunOptions { security: SecurityOptions { security_protocol: Some("SASL_SSL".into()), sasl_mechanism: Some("GSSAPI".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'sasl_mechanism': must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
            ("sasl without user", RunOptions { security: SecurityOptions { security_protocol: Some("sasl_ssl".into()), sasl_mechanism: Some("PLAIN".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'sasl_username': is required with a SASL protocol"),
            ("sasl without password", RunOptions { security: SecurityOptions { security_protocol: Some("SASL_SSL".into()), sasl_mechanism: Some("PLAIN".into()), sasl_username: Some("u".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'sasl_password': is required with a SASL protocol: set STREAMAGG_SASL_PASSWORD or sasl_password_file"),
            ("user without sasl", RunOptions { security: SecurityOptions { sasl_username: Some("u".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'security_protocol': SASL settings are given but the protocol is not SASL_PLAINTEXT or SASL_SSL"),
            ("ca without tls", RunOptions { security: SecurityOptions { ssl_ca_location: Some("/ca".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'ssl_ca_location': only applies with security_protocol SSL or SASL_SSL"),
            ("client cert without tls", RunOptions { security: SecurityOptions { ssl_certificate_location: Some("/c".into()), ssl_key_location: Some("/k".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'ssl_certificate_location': only applies with security_protocol SSL or SASL_SSL"),
            ("cert without key", RunOptions { security: SecurityOptions { security_protocol: Some("SSL".into()), ssl_certificate_location: Some("/c".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'ssl_key_location': is required with ssl_certificate_location"),
            ("key without cert", RunOptions { security: SecurityOptions { security_protocol: Some("SSL".into()), ssl_key_location: Some("/k".into()), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'ssl_certificate_location': is required with ssl_key_location"),
            ("key password without key", RunOptions { security: SecurityOptions { security_protocol: Some("SSL".into()), ssl_key_password: Some(Secret::new("p".into())), ..SecurityOptions::default() }, ..minimal() }, "invalid setting 'ssl_key_password': is given but ssl_key_location is not"),
            ("checkpoint interval past the transaction timeout", RunOptions { checkpoint_interval: Some(Duration::from_secs(10)), ..minimal() }, "invalid setting 'checkpoint_interval': 10s is more than half of transaction.timeout.ms (10s): under exactly-once a transaction lasts one interval plus its commit, and the coordinator aborts it after that timeout; lower the interval or raise [kafka.producer] transaction.timeout.ms"),
            ("bad transaction timeout", RunOptions { kafka: KafkaPassThrough { producer: BTreeMap::from([("transaction.timeout.ms".to_owned(), toml::Value::String("soon".into()))]), ..Default::default() }, ..minimal() }, "invalid setting 'transaction.timeout.ms': 'soon' is not a positive number of milliseconds"),
        ];
        for (name, options, message) in cases {
            assert_eq!(
                RunSettings::try_from(options)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(message.to_owned()),
                "{name}"
            );
        }
    }

    #[test]
    fn managed_librdkafka_keys_and_unknown_file_keys_are_refused() {
        let managed = RunOptions::from_toml("f.toml", "[kafka.consumer]\n\"group.id\" = \"x\"\n")
            .expect("parses");
        assert_eq!(
            RunSettings::try_from(RunOptions {
                kafka: managed.kafka,
                ..minimal()
            })
            .map(|_| ())
            .map_err(|e| e.to_string()),
            Err("[kafka.consumer] may not set 'group.id': streamagg manages it".to_owned())
        );
        let unknown = RunOptions::from_toml("f.toml", "input = [\"a\"]\nwindwo = \"1m\"\n")
            .map_err(|e| e.to_string());
        assert!(
            matches!(&unknown, Err(m) if m.starts_with("config file f.toml: unknown field `windwo`")),
            "{unknown:?}"
        );
        let bad_duration =
            RunOptions::from_toml("f.toml", "grace = \"soon\"\n").map_err(|e| e.to_string());
        assert!(bad_duration.is_err());
    }
}

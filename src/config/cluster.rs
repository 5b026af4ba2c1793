//! The cluster settings every command shares: where the brokers are ([`KafkaOptions`] as flags,
//! `run`'s in [`super::RunOptions`]), TLS and SASL ([`SecurityOptions`]), validated once into
//! [`KafkaSettings`]; secrets in [`Secret`]; and the listening-address setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

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

/// Where the cluster is, how to reach it and how long to wait for it: one definition for the flags,
/// `STREAMAGG_*` environment variables and (for `run`) the config file's top-level keys of every
/// command. Unset fields take their defaults in [`Self::validate`], so that a flag's default never
/// hides a value from `run`'s file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
pub struct KafkaOptions {
    /// Kafka bootstrap servers, comma-separated host:port [default: 127.0.0.1:9092].
    #[arg(long, env = "STREAMAGG_BROKERS")]
    pub brokers: Option<String>,
    /// How long to wait for the cluster to answer before giving up [default: 10s].
    #[arg(long, env = "STREAMAGG_KAFKA_TIMEOUT", value_parser = super::duration::parse)]
    #[serde(default, with = "super::duration::optional")]
    pub kafka_timeout: Option<Duration>,
    /// Accept librdkafka properties that switch off TLS certificate or host-name verification
    /// (`enable.ssl.certificate.verification`, `ssl.endpoint.identification.algorithm`); without
    /// this they are refused. For test clusters only: it lets a man in the middle in.
    #[arg(long, env = "STREAMAGG_ALLOW_INSECURE_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_tls: Option<bool>,
    #[command(flatten)]
    #[serde(flatten)]
    pub security: SecurityOptions,
}

impl KafkaOptions {
    /// Validated by the rules every command shares (the secrets must have been filled in).
    pub fn validate(&self) -> Result<KafkaSettings, ConfigError> {
        KafkaSettings::validate(
            self.brokers
                .clone()
                .unwrap_or_else(|| DEFAULT_BROKERS.to_owned()),
            self.kafka_timeout.unwrap_or(DEFAULT_KAFKA_TIMEOUT),
            &self.security,
        )
    }
}

/// How long start-up waits for the cluster unless a setting says otherwise.
pub const DEFAULT_KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Whether `text` is a `host:port` others can reach and an HTTP client can use: a non-empty host of
/// printable characters without `@`, `/`, `?` or `#`, and a port above 0 (the query endpoint's
/// advertised address, published in the consumer's `client.id`).
pub fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '@' | '/' | '?' | '#'))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The `/metrics`, `/healthz` and `/readyz` address setting (key `metrics_addr`): `ip:port`, `off`,
/// or, when not given, this host's loopback on `default_port`.
pub fn metrics_addr(
    text: Option<&str>,
    default_port: u16,
) -> Result<Option<SocketAddr>, ConfigError> {
    match text {
        None => Ok(Some(SocketAddr::from(([127, 0, 0, 1], default_port)))),
        Some(text) => listen_addr("metrics_addr", text),
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

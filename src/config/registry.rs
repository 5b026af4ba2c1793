//! The Schema Registry settings of the `avro-confluent` format, shared by `run`, `produce` and
//! `consume`: where the registry is, its basic-auth user (the password only from
//! `STREAMAGG_SCHEMA_REGISTRY_PASSWORD` or a file, like the Kafka secrets), the CA of an `https`
//! registry, the subject the output schema is registered under, and how long a request is retried.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::cluster::Secret;
use super::{duration, ConfigError};

/// How long registry requests are retried before the command stops, unless set.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);

/// The subject a schema is registered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SubjectStrategy {
    /// `<topic>-value` (Confluent's TopicNameStrategy).
    Topic,
    /// The record's full name, `streamagg.TrafficAverage` (RecordNameStrategy).
    Record,
}

impl SubjectStrategy {
    /// The subject of the value schema of `record` (its full name) on `topic`.
    pub fn subject(self, topic: &str, record: &str) -> String {
        match self {
            SubjectStrategy::Topic => format!("{topic}-value"),
            SubjectStrategy::Record => record.to_owned(),
        }
    }
}

/// The registry options, as flags, `STREAMAGG_*` environment and (for `run`) file keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
pub struct RegistryOptions {
    /// Schema Registry base URL (`http://` or `https://`), required by the avro-confluent format.
    #[arg(long, env = "STREAMAGG_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Registry basic-auth user. The password is never a flag: set
    /// STREAMAGG_SCHEMA_REGISTRY_PASSWORD or --schema-registry-password-file.
    #[arg(long, env = "STREAMAGG_SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// File holding the registry basic-auth password (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "STREAMAGG_SCHEMA_REGISTRY_PASSWORD_FILE")]
    pub schema_registry_password_file: Option<PathBuf>,
    /// From `STREAMAGG_SCHEMA_REGISTRY_PASSWORD` or read from the file at the binary's edge.
    #[arg(skip)]
    #[serde(skip)]
    pub schema_registry_password: Option<Secret>,
    /// PEM file of the CA certificates trusted for an https registry [default: the system's].
    #[arg(long, env = "STREAMAGG_SCHEMA_REGISTRY_CA_LOCATION")]
    pub schema_registry_ca_location: Option<PathBuf>,
    /// Subject of the output schema: `topic` (`<output>-value`) or `record`
    /// (`streamagg.TrafficAverage`) [default: topic].
    #[arg(long, env = "STREAMAGG_SCHEMA_REGISTRY_SUBJECT_STRATEGY", value_enum)]
    pub schema_registry_subject_strategy: Option<SubjectStrategy>,
    /// How long a registry request is retried, with backoff, before the command stops with an
    /// error (a record is never sent to the DLQ because the registry is down) [default: 60s].
    #[arg(long, env = "STREAMAGG_SCHEMA_REGISTRY_PATIENCE", value_parser = duration::parse)]
    #[serde(default, with = "duration::optional")]
    pub schema_registry_patience: Option<Duration>,
}

impl RegistrySettings {
    /// Whether basic auth goes over plain `http://` (the password readable on the wire).
    pub fn sends_password_in_clear(&self) -> bool {
        self.username.is_some() && self.url.starts_with("http://")
    }
}

/// Validated registry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// The base URL, without a trailing `/`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_location: Option<PathBuf>,
    pub subject_strategy: SubjectStrategy,
    pub patience: Duration,
}

impl RegistryOptions {
    /// The settings when `needed` (a format is avro-confluent); `None` otherwise.
    pub fn validate(&self, needed: bool) -> Result<Option<RegistrySettings>, ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        if !needed {
            return Ok(None);
        }
        let url = self
            .schema_registry_url
            .as_deref()
            .map(|url| url.trim_end_matches('/'))
            .ok_or(ConfigError::Missing(
                "schema_registry_url",
                "schema-registry-url",
                "SCHEMA_REGISTRY_URL",
            ))?;
        let https = url.starts_with("https://");
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| invalid("schema_registry_url", "must start with http:// or https://"))?;
        // Userinfo would be printed with the URL in every retry warning and error.
        let authority = host.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(invalid(
                "schema_registry_url",
                "must not hold a user or password: set schema_registry_username and \
                 STREAMAGG_SCHEMA_REGISTRY_PASSWORD or schema_registry_password_file",
            ));
        }
        if host.is_empty() || host.contains(['?', '#', ' ']) {
            return Err(invalid(
                "schema_registry_url",
                "must be http(s)://host[:port][/path]",
            ));
        }
        match (
            &self.schema_registry_username,
            &self.schema_registry_password,
        ) {
            (Some(_), None) => {
                return Err(invalid(
                    "schema_registry_password",
                    "is required with schema_registry_username: set \
                     STREAMAGG_SCHEMA_REGISTRY_PASSWORD or schema_registry_password_file",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "schema_registry_username",
                    "is required with a registry password",
                ))
            }
            _ => {}
        }
        if self.schema_registry_ca_location.is_some() && !https {
            return Err(invalid(
                "schema_registry_ca_location",
                "only goes with an https:// registry",
            ));
        }
        let patience = self.schema_registry_patience.unwrap_or(DEFAULT_PATIENCE);
        if patience.is_zero() {
            return Err(invalid(
                "schema_registry_patience",
                "must be greater than zero",
            ));
        }
        Ok(Some(RegistrySettings {
            url: url.to_owned(),
            username: self.schema_registry_username.clone(),
            password: self.schema_registry_password.clone(),
            ca_location: self.schema_registry_ca_location.clone(),
            subject_strategy: self
                .schema_registry_subject_strategy
                .unwrap_or(SubjectStrategy::Topic),
            patience,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> RegistryOptions {
        RegistryOptions {
            schema_registry_url: Some(url.to_owned()),
            ..RegistryOptions::default()
        }
    }

    #[test]
    fn settings_are_checked_only_when_a_format_needs_the_registry() {
        assert_eq!(RegistryOptions::default().validate(false), Ok(None));
        assert_eq!(
            RegistryOptions::default().validate(true),
            Err(ConfigError::Missing(
                "schema_registry_url",
                "schema-registry-url",
                "SCHEMA_REGISTRY_URL"
            ))
        );
        let settings = options("http://127.0.0.1:8081/")
            .validate(true)
            .unwrap()
            .unwrap();
        assert_eq!(settings.url, "http://127.0.0.1:8081");
        assert_eq!(settings.subject_strategy, SubjectStrategy::Topic);
        assert_eq!(settings.patience, DEFAULT_PATIENCE);
        let with_user = RegistryOptions {
            schema_registry_username: Some("u".into()),
            schema_registry_password: Some(Secret::new("p".into())),
            schema_registry_ca_location: Some("ca.pem".into()),
            ..options("https://registry.example:443/ctx")
        };
        assert!(with_user.validate(true).is_ok());
    }

    #[test]
    fn each_bad_setting_is_refused_with_its_key() {
        let cases = [
            ("ftp://x", options("ftp://x"), "schema_registry_url"),
            ("http://", options("http://"), "schema_registry_url"),
            (
                "user and password in the URL",
                options("https://user:pass@registry.example/ctx"),
                "schema_registry_url",
            ),
            (
                "user in the URL",
                options("http://user@x:8081"),
                "schema_registry_url",
            ),
            (
                "user without password",
                RegistryOptions {
                    schema_registry_username: Some("u".into()),
                    ..options("https://x")
                },
                "schema_registry_password",
            ),
            (
                "password without user",
                RegistryOptions {
                    schema_registry_password: Some(Secret::new("p".into())),
                    ..options("https://x")
                },
                "schema_registry_username",
            ),
            (
                "CA with http",
                RegistryOptions {
                    schema_registry_ca_location: Some("ca.pem".into()),
                    ..options("http://x")
                },
                "schema_registry_ca_location",
            ),
            (
                "no patience",
                RegistryOptions {
                    schema_registry_patience: Some(Duration::ZERO),
                    ..options("http://x")
                },
                "schema_registry_patience",
            ),
        ];
        for (name, options, key) in cases {
            match options.validate(true) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_being_shown() {
        let error = options("https://user:s3cret@registry.example")
            .validate(true)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("schema_registry_username") && !error.contains("s3cret"),
            "{error}"
        );
        // An `@` in the path is not userinfo.
        assert!(options("http://x:8081/a@b").validate(true).is_ok());
    }

    #[test]
    fn basic_auth_over_plain_http_is_flagged_not_refused() {
        let with_user = |url: &str| RegistryOptions {
            schema_registry_username: Some("u".into()),
            schema_registry_password: Some(Secret::new("p".into())),
            ..options(url)
        };
        let cases = [
            ("auth over http", with_user("http://x:8081"), true),
            ("auth over https", with_user("https://x"), false),
            ("no auth over http", options("http://x"), false),
        ];
        for (name, options, expected) in cases {
            let settings = options.validate(true).unwrap().unwrap();
            assert_eq!(settings.sends_password_in_clear(), expected, "{name}");
        }
    }

    #[test]
    fn subjects_follow_the_strategy() {
        assert_eq!(
            SubjectStrategy::Topic.subject("averages", "streamagg.TrafficAverage"),
            "averages-value"
        );
        assert_eq!(
            SubjectStrategy::Record.subject("averages", "streamagg.TrafficAverage"),
            "streamagg.TrafficAverage"
        );
    }
}

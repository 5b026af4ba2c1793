//! The gateway's settings: [`IngestOptions`] as flags and environment (defined once, with clap),
//! validated once into [`IngestSettings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::Format;
use crate::config::cluster::{listen_addr, metrics_addr, KafkaOptions, KafkaSettings, Secret};
use crate::config::passthrough::{self, Client};
use crate::config::ConfigError;

/// The default port of the gateway's `/metrics`, `/healthz` and `/readyz`: one above the processor's
/// ([`crate::config::DEFAULT_METRICS_PORT`]), so both run on one host with their defaults.
pub const DEFAULT_METRICS_PORT: u16 = 9465;

/// The limits that keep the gateway's memory and connections bounded.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Limits {
    /// Longest event line in bytes (TCP, and NDJSON bodies), without its newline.
    #[arg(long, env = "STREAMAGG_MAX_LINE_BYTES", default_value_t = 65_536)]
    pub max_line_bytes: usize,
    /// Largest HTTP body in bytes; larger ones get `413`.
    #[arg(long, env = "STREAMAGG_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most events (lines or array elements) in one HTTP request; a body with more gets `413`
    /// before any is sent.
    #[arg(
        long,
        env = "STREAMAGG_MAX_ITEMS_PER_REQUEST",
        default_value_t = 10_000
    )]
    pub max_items_per_request: usize,
    /// Open connections per listener; more are refused with one line (TCP) or a `503` (HTTP).
    #[arg(long, env = "STREAMAGG_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections one client address may hold per listener [default: a quarter of
    /// --max-connections]. Behind a proxy or load balancer every client has its address: raise it
    /// to what the proxy opens.
    #[arg(long, env = "STREAMAGG_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// Close a TCP connection that completes no line, or an HTTP one that sends no complete head or
    /// body, for this long.
    #[arg(long, env = "STREAMAGG_READ_TIMEOUT", default_value = "30s", value_parser = crate::config::duration::parse)]
    pub read_timeout: Duration,
    /// Bytes of events (+ a small per-event overhead) handed to Kafka and not yet acknowledged; when
    /// spent, TCP is not read and HTTP answers 503.
    #[arg(long, env = "STREAMAGG_MAX_IN_FLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,
    /// Bytes of HTTP bodies (and the events parsed from them) held in memory at once, reserved as
    /// the bytes arrive.
    #[arg(long, env = "STREAMAGG_MAX_BUFFERED_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_buffered_body_bytes: usize,
    /// Of those, the most one client address may hold (capped at --max-buffered-body-bytes).
    #[arg(long, env = "STREAMAGG_MAX_BUFFERED_BODY_BYTES_PER_CLIENT", default_value_t = 16 * 1024 * 1024)]
    pub max_buffered_body_bytes_per_client: usize,
    /// How long an HTTP request waits for room in those budgets before a 503.
    #[arg(long, env = "STREAMAGG_QUEUE_WAIT", default_value = "1s", value_parser = crate::config::duration::parse)]
    pub queue_wait: Duration,
}

impl Limits {
    /// The connections one client address may hold on each listener (at most all of them).
    pub fn connections_per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or(self.max_connections / 4)
            .clamp(1, self.max_connections.max(1))
    }

    /// The body bytes one client address may hold.
    pub fn per_client_body_bytes(&self) -> usize {
        self.max_buffered_body_bytes_per_client
            .min(self.max_buffered_body_bytes)
    }
}

/// `streamagg ingest`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSettings {
    pub kafka: KafkaSettings,
    pub topic: String,
    /// Payload format on the topic.
    pub format: Format,
    pub listen_tcp: Option<SocketAddr>,
    pub listen_http: Option<SocketAddr>,
    pub limits: Limits,
    /// How long the producer keeps trying to deliver an event (`message.timeout.ms`); an HTTP request
    /// whose events are not acknowledged by then gets `503`.
    pub delivery_timeout: Duration,
    /// On SIGTERM, how long in-flight requests and deliveries may take before the gateway exits anyway.
    pub shutdown_timeout: Duration,
    /// Token clients must present, if any: `Authorization: Bearer <token>` on HTTP, a first line
    /// `AUTH <token>` on TCP.
    pub http_token: Option<Secret>,
    /// librdkafka producer properties, applied over the defaults.
    pub producer_properties: BTreeMap<String, String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

/// `streamagg ingest` as given by flags and environment (each flag also reads `STREAMAGG_` + its
/// name in upper snake case), before validation.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestOptions {
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// Topic to write events to (it must exist).
    #[arg(long, env = "STREAMAGG_TOPIC")]
    pub topic: String,
    /// Payload format on the topic (clients always send JSON).
    #[arg(long, env = "STREAMAGG_FORMAT", value_enum, default_value = "json")]
    pub format: Format,
    /// NDJSON over TCP on this ip:port, or `off`.
    #[arg(long, env = "STREAMAGG_LISTEN_TCP", default_value = "127.0.0.1:8080")]
    pub listen_tcp: String,
    /// HTTP (`POST /v1/events`) on this ip:port, or `off`.
    #[arg(long, env = "STREAMAGG_LISTEN_HTTP", default_value = "127.0.0.1:8081")]
    pub listen_http: String,
    #[command(flatten)]
    pub limits: Limits,
    /// How long the producer tries to deliver an event; an HTTP request not acknowledged by then
    /// gets 503.
    #[arg(long, env = "STREAMAGG_DELIVERY_TIMEOUT", default_value = "30s", value_parser = crate::config::duration::parse)]
    pub delivery_timeout: Duration,
    /// On SIGTERM, how long open requests and deliveries may take before exiting anyway.
    #[arg(long, env = "STREAMAGG_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = crate::config::duration::parse)]
    pub shutdown_timeout: Duration,
    /// File holding the token clients must present: `Authorization: Bearer <token>` on HTTP, a
    /// first line `AUTH <token>` on TCP (none: no authentication).
    #[arg(long, visible_alias = "token-file", env = "STREAMAGG_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<std::path::PathBuf>,
    /// The token itself, read from `http_token_file` at the binary's edge; never a flag.
    #[arg(skip)]
    pub http_token: Option<String>,
    /// librdkafka producer property key=value (repeatable; `;` separates several in the
    /// environment variable, since values such as `debug=msg,eos` hold commas), e.g.
    /// compression.type=zstd.
    #[arg(
        long = "producer-property",
        env = "STREAMAGG_PRODUCER_PROPERTIES",
        value_delimiter = ';'
    )]
    pub producer_properties: Vec<String>,
    /// Serve /metrics, /healthz and /readyz on this ip:port, or `off` [default: 127.0.0.1:9465, one
    /// above the processor's default port, so both run on one host].
    #[arg(long, env = "STREAMAGG_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl TryFrom<IngestOptions> for IngestSettings {
    type Error = ConfigError;

    fn try_from(options: IngestOptions) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        let kafka = options.kafka.validate()?;
        let topic = crate::config::topic("topic", options.topic)?;
        let listen_tcp = listen_addr("listen_tcp", &options.listen_tcp)?;
        let listen_http = listen_addr("listen_http", &options.listen_http)?;
        let metrics_addr = metrics_addr(options.metrics_addr.as_deref(), DEFAULT_METRICS_PORT)?;
        if options.format == Format::AvroConfluent {
            return Err(invalid(
                "format",
                "avro-confluent is not written by the gateway (it registers no schema): use json or avro".into(),
            ));
        }
        if listen_tcp.is_none() && listen_http.is_none() {
            return Err(invalid(
                "listen_tcp",
                "both listeners are off: nothing to serve".into(),
            ));
        }
        let limits = options.limits;
        for (key, value) in [
            ("max_line_bytes", limits.max_line_bytes),
            ("max_body_bytes", limits.max_body_bytes),
            ("max_connections", limits.max_connections),
            ("max_items_per_request", limits.max_items_per_request),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        // A whole request's events must fit the in-flight budget, or it could never be sent.
        let body_budget = limits.max_body_bytes.saturating_mul(4);
        if limits.max_in_flight_bytes < body_budget {
            return Err(invalid(
                "max_in_flight_bytes",
                format!("must be at least 4 x max_body_bytes ({body_budget})"),
            ));
        }
        // The largest request allowed must fit the memory budgets, or it would be refused forever.
        let largest = crate::ingest::frame::largest_request_bytes(
            limits.max_body_bytes,
            limits.max_items_per_request,
        );
        for (key, budget) in [
            ("max_buffered_body_bytes", limits.max_buffered_body_bytes),
            (
                "max_buffered_body_bytes_per_client",
                limits.max_buffered_body_bytes_per_client,
            ),
        ] {
            if budget < largest {
                return Err(invalid(
                    key,
                    format!(
                        "must be at least {largest}: the largest request allowed (max_body_bytes \
                         plus its max_items_per_request events in memory)"
                    ),
                ));
            }
        }
        if limits.max_connections_per_client == Some(0) {
            return Err(invalid(
                "max_connections_per_client",
                "must be at least 1".into(),
            ));
        }
        // Semaphores count at most u32::MAX permits per acquisition.
        if limits.max_in_flight_bytes > u32::MAX as usize
            || limits.max_buffered_body_bytes > u32::MAX as usize
        {
            return Err(invalid(
                "max_in_flight_bytes",
                "budgets are limited to 4 GiB".into(),
            ));
        }
        for (key, value) in [
            ("read_timeout", limits.read_timeout),
            ("delivery_timeout", options.delivery_timeout),
            ("shutdown_timeout", options.shutdown_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero".into()));
            }
        }
        let http_token = match options.http_token {
            Some(token) if token.is_empty() => {
                return Err(invalid("http_token_file", "the token is empty".into()))
            }
            // Clients send it in a header line and an `AUTH` line, both trimmed: a token with
            // spaces, control characters or beyond a header's size could never match.
            Some(token) if !token.bytes().all(|b| b.is_ascii_graphic()) || token.len() > 4096 => {
                return Err(invalid(
                    "http_token_file",
                    "the token must be 1 to 4096 printable ASCII characters without spaces".into(),
                ))
            }
            token => token.map(Secret::new),
        };
        let mut producer_properties = BTreeMap::new();
        for pair in options.producer_properties {
            let Some((key, value)) = pair.split_once('=') else {
                // The text may hold a secret (a mistyped `key:value`): never echo it.
                return Err(invalid(
                    "producer_property",
                    "a value is not key=value (not shown: it may hold a secret)".into(),
                ));
            };
            let (key, value) = passthrough::check(
                Client::Producer,
                key,
                value.trim().to_owned(),
                &["message.timeout.ms"],
                options.kafka.allow_insecure_tls.unwrap_or(false),
            )?;
            if producer_properties.insert(key.clone(), value).is_some() {
                return Err(invalid(
                    "producer_property",
                    format!("sets '{key}' twice (once by an alias)"),
                ));
            }
        }
        Ok(IngestSettings {
            kafka,
            topic,
            format: options.format,
            listen_tcp,
            listen_http,
            limits,
            delivery_timeout: options.delivery_timeout,
            shutdown_timeout: options.shutdown_timeout,
            http_token,
            producer_properties,
            metrics_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults, as the command line gives them, with a topic and one producer property.
    fn options() -> IngestOptions {
        use clap::{Args, FromArgMatches};
        let flags = IngestOptions::augment_args(clap::Command::new("ingest"))
            .try_get_matches_from([
                "ingest",
                "--brokers",
                "b:9092",
                "--topic",
                "traffic",
                "--producer-property",
                "compression.type=zstd",
            ])
            .expect("flags parse");
        IngestOptions::from_arg_matches(&flags).expect("options")
    }

    #[test]
    fn the_gateway_refuses_the_registry_framing_it_cannot_register() {
        let framed = IngestOptions {
            format: Format::AvroConfluent,
            ..options()
        };
        match IngestSettings::try_from(framed) {
            Err(ConfigError::Invalid { key: "format", .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_validate() {
        let settings = IngestSettings::try_from(options()).expect("valid");
        assert_eq!(settings.format, Format::Json);
        assert_eq!(settings.limits.max_line_bytes, 65_536);
        assert_eq!(settings.limits.max_body_bytes, 8 << 20);
        assert_eq!(
            settings.listen_tcp,
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            settings
                .producer_properties
                .get("compression.type")
                .map(String::as_str),
            Some("zstd")
        );
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        type Edit = fn(&mut IngestOptions);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "a budget the largest request cannot fit",
                |o| o.limits.max_buffered_body_bytes = o.limits.max_body_bytes,
                "'max_buffered_body_bytes': must be at least",
            ),
            (
                "a per-client budget the largest request cannot fit",
                |o| o.limits.max_buffered_body_bytes_per_client = o.limits.max_body_bytes,
                "'max_buffered_body_bytes_per_client': must be at least",
            ),
            (
                "no connection per client",
                |o| o.limits.max_connections_per_client = Some(0),
                "'max_connections_per_client'",
            ),
            ("bad topic", |o| o.topic = "a b".into(), "'topic'"),
            (
                "a token no client can send",
                |o| o.http_token = Some("s3cret \t".into()),
                "'http_token_file': the token must be",
            ),
            (
                "no brokers",
                |o| o.kafka.brokers = Some(" ".into()),
                "'brokers'",
            ),
            (
                "SASL without a password",
                |o| {
                    o.kafka.security.security_protocol = Some("SASL_SSL".into());
                    o.kafka.security.sasl_mechanism = Some("PLAIN".into());
                    o.kafka.security.sasl_username = Some("u".into());
                },
                "'sasl_password'",
            ),
            (
                "bad listen",
                |o| o.listen_tcp = "localhost".into(),
                "'listen_tcp'",
            ),
            (
                "both off",
                |o| {
                    o.listen_tcp = "off".into();
                    o.listen_http = "off".into();
                },
                "nothing to serve",
            ),
            (
                "zero line",
                |o| o.limits.max_line_bytes = 0,
                "'max_line_bytes'",
            ),
            (
                "budget below bodies",
                |o| o.limits.max_in_flight_bytes = 1 << 20,
                "'max_in_flight_bytes'",
            ),
            (
                "zero items",
                |o| o.limits.max_items_per_request = 0,
                "'max_items_per_request'",
            ),
            (
                "client share below a body",
                |o| o.limits.max_buffered_body_bytes_per_client = 1,
                "'max_buffered_body_bytes_per_client'",
            ),
            (
                "zero timeout",
                |o| o.limits.read_timeout = Duration::ZERO,
                "'read_timeout'",
            ),
            (
                "empty token",
                |o| o.http_token = Some(String::new()),
                "token is empty",
            ),
            (
                "managed key",
                |o| o.producer_properties = vec!["enable.idempotence=false".into()],
                "enable.idempotence",
            ),
            (
                "delivery timeout has its own flag",
                |o| o.producer_properties = vec!["message.timeout.ms=1".into()],
                "message.timeout.ms",
            ),
            (
                "not a pair",
                |o| o.producer_properties = vec!["linger.ms".into()],
                "key=value",
            ),
        ];
        for (name, edit, expected) in cases {
            let mut o = options();
            edit(&mut o);
            let error = IngestSettings::try_from(o).expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
        let mut off = options();
        off.listen_tcp = "off".into();
        assert_eq!(
            IngestSettings::try_from(off)
                .expect("one listener")
                .listen_tcp,
            None
        );
    }

    #[test]
    fn a_client_may_hold_a_quarter_of_the_connections_unless_set() {
        let limits = |max, per: Option<usize>| {
            let mut options = options();
            options.limits.max_connections = max;
            options.limits.max_connections_per_client = per;
            IngestSettings::try_from(options).expect("valid").limits
        };
        assert_eq!(limits(1024, None).connections_per_client(), 256);
        assert_eq!(limits(3, None).connections_per_client(), 1);
        assert_eq!(limits(1024, Some(1000)).connections_per_client(), 1000);
        assert_eq!(limits(16, Some(64)).connections_per_client(), 16);
    }
}

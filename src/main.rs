//! The `streamagg` binary: parses the command line into validated settings, runs the subcommand, and
//! turns any error into one line on stderr and a non-zero exit code.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use streamagg::codec::{decode, Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};
use streamagg::config::{RunOptions, RunSettings, SecurityOptions};
use streamagg::consume::{read_to_end, Isolation};
use streamagg::generate::GeneratorConfig;
use streamagg::ingest::{IngestOptions, IngestSettings, Limits};
use streamagg::kafka::{KafkaSettings, Secret};
use streamagg::model::{TrafficAverage, TrafficEvent};
use streamagg::produce::{generate_to_topic, now_ms, Pace, ProduceSettings};
use streamagg::telemetry::{self, Health};

#[derive(Parser)]
#[command(
    name = "streamagg",
    version,
    about = "Per-minute event-time traffic averages from Apache Kafka"
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log collectors.
    #[arg(
        long,
        global = true,
        env = "STREAMAGG_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProbeKind {
    /// Alive: the poll loop polls.
    Healthz,
    /// Ready: partitions assigned and restored.
    Readyz,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processor: consume traffic, aggregate per source and event-time window, emit averages.
    Run(Box<RunArgs>),
    /// Write synthetic TrafficEvents to a topic, keyed by source (creates the topic if missing).
    Produce(ProduceArgs),
    /// Run the ingest gateway: TrafficEvents from NDJSON over TCP and `POST /v1/events` over HTTP
    /// to a topic, keyed by source; an HTTP 200 means Kafka acknowledged every accepted event.
    Ingest(Box<IngestArgs>),
    /// Print the records of a topic, from the beginning to its current end, as JSON lines.
    Consume(ConsumeArgs),
    /// Show how far a consumer group is behind on topics (exit code 0 whether or not it lags).
    Lag {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topics, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        topic: Vec<String>,
        /// Print only the total lag, as one number.
        #[arg(long)]
        total: bool,
    },
    /// Create or delete topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Ask a running processor's endpoint whether it is healthy or ready: exit 0 if so, 1 if not
    /// (the container's health check).
    Probe {
        /// Which probe.
        #[arg(value_enum, default_value = "healthz")]
        probe: ProbeKind,
        /// The processor's metrics address (`0.0.0.0` means this host).
        #[arg(long, env = "STREAMAGG_METRICS_ADDR", default_value = "127.0.0.1:9464")]
        metrics_addr: std::net::SocketAddr,
    },
    /// Print an embedded Avro schema.
    Schema {
        #[arg(value_enum)]
        record: RecordKind,
    },
}

#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "STREAMAGG_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// How long to wait for the cluster to answer before giving up, e.g. 10s.
    #[arg(long, env = "STREAMAGG_KAFKA_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    kafka_timeout: Duration,
    #[command(flatten)]
    security: SecurityArgs,
}

impl KafkaArgs {
    fn settings(&self) -> Result<KafkaSettings> {
        if self.brokers.trim().is_empty() {
            bail!("--brokers is empty");
        }
        if self.kafka_timeout.is_zero() {
            bail!("--kafka-timeout must be greater than zero");
        }
        Ok(KafkaSettings {
            brokers: self.brokers.clone(),
            timeout: self.kafka_timeout,
            security: self.security.settings()?,
        })
    }
}

/// TLS and SASL towards the brokers, for every command that talks to Kafka.
#[derive(Args)]
struct SecurityArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: PLAINTEXT].
    #[arg(long, env = "STREAMAGG_SECURITY_PROTOCOL")]
    security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol).
    #[arg(long, env = "STREAMAGG_SASL_MECHANISM")]
    sasl_mechanism: Option<String>,
    /// SASL username. The password is never a flag: set STREAMAGG_SASL_PASSWORD or
    /// --sasl-password-file.
    #[arg(long, env = "STREAMAGG_SASL_USERNAME")]
    sasl_username: Option<String>,
    /// File holding the SASL password (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "STREAMAGG_SASL_PASSWORD_FILE")]
    sasl_password_file: Option<std::path::PathBuf>,
    /// CA certificate(s) that signed the brokers' certificates (with SSL or SASL_SSL).
    #[arg(long, env = "STREAMAGG_SSL_CA_LOCATION")]
    ssl_ca_location: Option<String>,
    /// Client certificate (PEM) for brokers that require mutual TLS; with --ssl-key-location.
    #[arg(long, env = "STREAMAGG_SSL_CERTIFICATE_LOCATION")]
    ssl_certificate_location: Option<String>,
    /// The client certificate's private key (PEM). An encrypted key's passphrase is never a flag:
    /// set STREAMAGG_SSL_KEY_PASSWORD or --ssl-key-password-file.
    #[arg(long, env = "STREAMAGG_SSL_KEY_LOCATION")]
    ssl_key_location: Option<String>,
    /// File holding the private key's passphrase.
    #[arg(long, env = "STREAMAGG_SSL_KEY_PASSWORD_FILE")]
    ssl_key_password_file: Option<std::path::PathBuf>,
}

impl SecurityArgs {
    /// As given; of the secrets only those from the environment (files are read by
    /// [`read_secret_files`], after a config file may have named them).
    fn options(&self) -> SecurityOptions {
        SecurityOptions {
            security_protocol: self.security_protocol.clone(),
            sasl_mechanism: self.sasl_mechanism.clone(),
            sasl_username: self.sasl_username.clone(),
            sasl_password_file: self.sasl_password_file.clone(),
            sasl_password: secret_from_env("STREAMAGG_SASL_PASSWORD"),
            ssl_ca_location: self.ssl_ca_location.clone(),
            ssl_certificate_location: self.ssl_certificate_location.clone(),
            ssl_key_location: self.ssl_key_location.clone(),
            ssl_key_password_file: self.ssl_key_password_file.clone(),
            ssl_key_password: secret_from_env("STREAMAGG_SSL_KEY_PASSWORD"),
        }
    }

    /// With the secret files read, validated with the processor's rules.
    fn settings(&self) -> Result<streamagg::kafka::KafkaSecurity> {
        Ok(read_secret_files(self.options())?.validate()?)
    }
}

/// A secret from environment variable `name`, if set and not empty: a secret is never a flag (it
/// would show in `ps`).
fn secret_from_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new)
}

/// Fills each secret the environment did not give from its file, if one is named.
fn read_secret_files(mut options: SecurityOptions) -> Result<SecurityOptions> {
    for (secret, file, what) in [
        (
            &mut options.sasl_password,
            &options.sasl_password_file,
            "sasl_password_file",
        ),
        (
            &mut options.ssl_key_password,
            &options.ssl_key_password_file,
            "ssl_key_password_file",
        ),
    ] {
        if let (None, Some(path)) = (&*secret, file) {
            *secret = Some(Secret::new(read_secret_file(path, what)?));
        }
    }
    Ok(options)
}

/// `streamagg run` flags. Each has an environment variable (`STREAMAGG_` + the flag in upper snake
/// case) and a key in the TOML file (the flag in snake case); precedence: flag > env > file > default.
#[derive(Args)]
struct RunArgs {
    /// TOML config file; unknown keys are errors.
    #[arg(long, env = "STREAMAGG_CONFIG")]
    config: Option<String>,
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "STREAMAGG_BROKERS")]
    brokers: Option<String>,
    /// Input topics, comma-separated.
    #[arg(long, env = "STREAMAGG_INPUT", value_delimiter = ',')]
    input: Option<Vec<String>>,
    /// Output topic for TrafficAverage records.
    #[arg(long, env = "STREAMAGG_OUTPUT")]
    output: Option<String>,
    /// Consumer group [default: streamagg].
    #[arg(long, env = "STREAMAGG_GROUP")]
    group: Option<String>,
    /// Directory of the RocksDB state store [default: ./state].
    #[arg(long, env = "STREAMAGG_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Input payload format [default: json].
    #[arg(long, env = "STREAMAGG_INPUT_FORMAT", value_enum)]
    input_format: Option<Format>,
    /// Output payload format [default: json].
    #[arg(long, env = "STREAMAGG_OUTPUT_FORMAT", value_enum)]
    output_format: Option<Format>,
    /// Event time from the record's `timestamp` field or the Kafka record timestamp [default: field].
    #[arg(long, env = "STREAMAGG_EVENT_TIME", value_enum)]
    event_time: Option<streamagg::config::EventTime>,
    /// Window size [default: 60s].
    #[arg(long, env = "STREAMAGG_WINDOW", value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// How long after a window's end it still accepts out-of-order events [default: 10s].
    #[arg(long, env = "STREAMAGG_GRACE", value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    /// Drop events with value below this before aggregation (the threshold filter).
    #[arg(long, env = "STREAMAGG_MIN_VALUE")]
    min_value: Option<f64>,
    /// Forward late events here, unchanged, with headers saying why.
    #[arg(long, env = "STREAMAGG_LATE_TOPIC")]
    late_topic: Option<String>,
    /// Forward undecodable or invalid records here, unchanged, with headers saying why.
    #[arg(long, env = "STREAMAGG_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    /// How often state and offsets are checkpointed [default: 1s].
    #[arg(long, env = "STREAMAGG_CHECKPOINT_INTERVAL", value_parser = humantime::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// How long to wait for the cluster at start-up [default: 10s].
    #[arg(long, env = "STREAMAGG_KAFKA_TIMEOUT", value_parser = humantime::parse_duration)]
    kafka_timeout: Option<Duration>,
    /// Delivery guarantee [default: exactly-once].
    #[arg(long, env = "STREAMAGG_GUARANTEE", value_enum)]
    guarantee: Option<streamagg::config::Guarantee>,
    /// Stable name of this instance, part of its transactional id [default: generated once, kept in
    /// the state dir].
    #[arg(long, env = "STREAMAGG_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Join as a static group member named after the instance id (KIP-345): a restarted instance
    /// gets its partitions back at once; a stopped one keeps them until the session times out.
    #[arg(long, env = "STREAMAGG_STATIC_MEMBERSHIP", num_args = 0..=1, default_missing_value = "true")]
    static_membership: Option<bool>,
    /// Advance an idle partition's stream time by wall clock after this long without records, so its
    /// last windows close (trades replay determinism for latency) [default: off].
    #[arg(long, env = "STREAMAGG_IDLE_CLOSE_AFTER", value_parser = humantime::parse_duration)]
    idle_close_after: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz on this ip:port, or `off` [default: 127.0.0.1:9464;
    /// in a container use 0.0.0.0:9464].
    #[arg(long, env = "STREAMAGG_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// The poll loop counts as stalled (/healthz fails, the watchdog logs) after this long without
    /// polling [default: 30s].
    #[arg(long, env = "STREAMAGG_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
    stall_timeout: Option<Duration>,
    #[command(flatten)]
    security: SecurityArgs,
}

impl RunArgs {
    fn settings(self) -> Result<RunSettings> {
        let file = match &self.config {
            Some(path) => RunOptions::from_file(path)?,
            None => RunOptions::default(),
        };
        let flags = RunOptions {
            brokers: self.brokers,
            input: self.input,
            output: self.output,
            group: self.group,
            state_dir: self.state_dir,
            input_format: self.input_format,
            output_format: self.output_format,
            event_time: self.event_time,
            window: self.window,
            grace: self.grace,
            min_value: self.min_value,
            late_topic: self.late_topic,
            dlq_topic: self.dlq_topic,
            checkpoint_interval: self.checkpoint_interval,
            kafka_timeout: self.kafka_timeout,
            guarantee: self.guarantee,
            instance_id: self.instance_id,
            static_membership: self.static_membership,
            idle_close_after: self.idle_close_after,
            metrics_addr: self.metrics_addr,
            stall_timeout: self.stall_timeout,
            ..RunOptions::default()
        }
        .with_security(self.security.options());
        let options = flags.or(file);
        // The secret files are read once the config file could have named them.
        let security = read_secret_files(options.security_options())?;
        Ok(RunSettings::try_from(options.with_security(security))?)
    }
}

/// `streamagg ingest` flags; each also reads `STREAMAGG_` + the flag in upper snake case.
#[derive(Args)]
struct IngestArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic to write events to (it must exist).
    #[arg(long, env = "STREAMAGG_TOPIC")]
    topic: String,
    /// Payload format on the topic (clients always send JSON).
    #[arg(long, env = "STREAMAGG_FORMAT", value_enum, default_value = "json")]
    format: Format,
    /// NDJSON over TCP on this ip:port, or `off`.
    #[arg(long, env = "STREAMAGG_LISTEN_TCP", default_value = "127.0.0.1:8080")]
    listen_tcp: String,
    /// HTTP (`POST /v1/events`) on this ip:port, or `off`.
    #[arg(long, env = "STREAMAGG_LISTEN_HTTP", default_value = "127.0.0.1:8081")]
    listen_http: String,
    /// Longest event line in bytes (TCP, and NDJSON bodies).
    #[arg(long, env = "STREAMAGG_MAX_LINE_BYTES", default_value_t = 65_536)]
    max_line_bytes: usize,
    /// Largest HTTP body in bytes (larger: 413).
    #[arg(long, env = "STREAMAGG_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Open connections per listener; more are refused.
    #[arg(long, env = "STREAMAGG_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Close a TCP connection that completes no line, or an HTTP one that sends no complete head or
    /// body, for this long.
    #[arg(long, env = "STREAMAGG_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    read_timeout: Duration,
    /// Bytes of events handed to Kafka and not yet acknowledged; when spent, TCP is not read and
    /// HTTP answers 503.
    #[arg(long, env = "STREAMAGG_MAX_IN_FLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_in_flight_bytes: usize,
    /// Bytes of HTTP bodies held in memory at once.
    #[arg(long, env = "STREAMAGG_MAX_BUFFERED_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_buffered_body_bytes: usize,
    /// How long an HTTP request waits for room in those budgets before a 503.
    #[arg(long, env = "STREAMAGG_QUEUE_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    queue_wait: Duration,
    /// How long the producer tries to deliver an event; an HTTP request not acknowledged by then
    /// gets 503.
    #[arg(long, env = "STREAMAGG_DELIVERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    delivery_timeout: Duration,
    /// On SIGTERM, how long open requests and deliveries may take before exiting anyway.
    #[arg(long, env = "STREAMAGG_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
    /// File holding the bearer token `POST /v1/events` requires (none: no authentication).
    #[arg(long, env = "STREAMAGG_HTTP_TOKEN_FILE")]
    http_token_file: Option<std::path::PathBuf>,
    /// librdkafka producer property key=value (repeatable; `;` separates several in the
    /// environment variable, since values such as `debug=msg,eos` hold commas), e.g.
    /// compression.type=zstd.
    #[arg(
        long = "producer-property",
        env = "STREAMAGG_PRODUCER_PROPERTIES",
        value_delimiter = ';'
    )]
    producer_properties: Vec<String>,
    /// Serve /metrics, /healthz and /readyz on this ip:port, or `off` (one above the processor's
    /// default port, so both run on one host).
    #[arg(long, env = "STREAMAGG_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    metrics_addr: String,
}

/// A secret from a file, without its trailing newline.
fn read_secret_file(path: &std::path::Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

impl IngestArgs {
    fn settings(self) -> Result<(IngestSettings, Option<std::net::SocketAddr>)> {
        let metrics_addr = match self.metrics_addr.trim() {
            "off" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("invalid setting 'metrics_addr': '{addr}' is not ip:port or off")
            })?),
        };
        let http_token = self
            .http_token_file
            .as_deref()
            .map(|path| read_secret_file(path, "http_token_file"))
            .transpose()?;
        let options = IngestOptions {
            brokers: self.kafka.brokers,
            kafka_timeout: self.kafka.kafka_timeout,
            security: read_secret_files(self.kafka.security.options())?,
            topic: self.topic,
            format: Some(self.format),
            listen_tcp: self.listen_tcp,
            listen_http: self.listen_http,
            limits: Limits {
                max_line_bytes: self.max_line_bytes,
                max_body_bytes: self.max_body_bytes,
                max_connections: self.max_connections,
                read_timeout: self.read_timeout,
                max_in_flight_bytes: self.max_in_flight_bytes,
                max_buffered_body_bytes: self.max_buffered_body_bytes,
                queue_wait: self.queue_wait,
            },
            delivery_timeout: self.delivery_timeout,
            shutdown_timeout: self.shutdown_timeout,
            http_token,
            producer_properties: self.producer_properties,
        };
        Ok((IngestSettings::try_from(options)?, metrics_addr))
    }
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create topics that do not exist yet.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Delete topics; a topic that does not exist is not an error.
    Delete {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic to write to.
    #[arg(long)]
    topic: String,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Number of distinct sources.
    #[arg(long, default_value_t = 100)]
    sources: u32,
    /// Events per second, with the wall clock as event time (runs until --count or Ctrl-C).
    #[arg(long)]
    rate: Option<f64>,
    /// Number of events; without --rate they are written as fast as possible, with event times spread
    /// evenly over --span ending now.
    #[arg(long)]
    count: Option<u64>,
    /// Event-time span of a preload (--count without --rate), e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    span: Duration,
    /// Event-time start of a preload in epoch milliseconds (default: now minus --span, on a minute).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Payload format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Each event's timestamp lags its clock by up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    out_of_order_ms: u64,
    /// Fraction of events whose timestamp lags a further --late-by-ms (late for the processor).
    #[arg(long, default_value_t = 0.0)]
    late_fraction: f64,
    /// How far late events lag.
    #[arg(long, default_value_t = 120_000)]
    late_by_ms: u64,
    /// RNG seed; the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// After the events, write one event 15 minutes later in event time to every partition (source
    /// `streamagg.seal`), so every window of the preload closes and its result is emitted.
    #[arg(long)]
    seal: bool,
}

impl ProduceArgs {
    fn settings(&self) -> Result<ProduceSettings> {
        if self.topic.is_empty() {
            bail!("--topic is empty");
        }
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        if self.sources < 1 {
            bail!("--sources must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            bail!(
                "--late-fraction must be within [0, 1], got {}",
                self.late_fraction
            );
        }
        let span_ms = i64::try_from(self.span.as_millis()).context("--span is too long")?;
        let pace = match (self.rate, self.count) {
            (Some(rate), count) if rate.is_finite() && rate > 0.0 => Pace::Rate {
                per_second: rate,
                count,
            },
            (Some(rate), _) => bail!("--rate must be a positive number, got {rate}"),
            (None, Some(count)) => {
                let start_ms = self
                    .start_ms
                    .unwrap_or_else(|| (now_ms() - span_ms) / 60_000 * 60_000);
                Pace::Preload {
                    count,
                    start_ms,
                    span_ms,
                }
            }
            (None, None) => bail!("give --count, --rate, or both"),
        };
        Ok(ProduceSettings {
            kafka: self.kafka.settings()?,
            topic: self.topic.clone(),
            partitions: self.partitions,
            format: self.format,
            generator: GeneratorConfig {
                sources: self.sources,
                seed: self.seed,
                out_of_order_ms: self.out_of_order_ms,
                late_fraction: self.late_fraction,
                late_by_ms: self.late_by_ms,
            },
            pace,
            progress_every: Duration::from_secs(5),
            seal: self.seal,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum RecordKind {
    /// TrafficEvent, the input record.
    Event,
    /// TrafficAverage, the output record.
    Average,
}

#[derive(Args)]
struct ConsumeArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Which record the topic holds.
    #[arg(long, value_enum, default_value = "average")]
    record: RecordKind,
    /// Payload format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Also show records of open or aborted transactions.
    #[arg(long)]
    read_uncommitted: bool,
    /// Print each record as `{"partition":P,"offset":O,"record":{…}}`.
    #[arg(long)]
    positions: bool,
    /// Give up if the end of the topic is not reached within this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

/// Malloc arenas the process may use unless `MALLOC_ARENA_MAX` says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas, before any thread starts. glibc gives each thread that contends for
/// the allocator an arena of its own, up to 8 per core; librdkafka's broker threads and RocksDB's
/// flush threads each then keep freed memory in their own arena. With the default, an instance with
/// 1M open windows peaked 37 MiB (21 %) higher in `bench/run --k-curve 1000000` (212 vs 175 MiB),
/// at no cost in throughput. An explicit `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        // Colour only on a terminal: logs collected from files and containers stay plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("streamagg: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_processor(args.settings()?),
        Command::Produce(args) => produce(args.settings()?),
        Command::Ingest(args) => {
            let (settings, metrics_addr) = args.settings()?;
            ingest(settings, metrics_addr)
        }
        Command::Consume(args) => consume(&args),
        Command::Topics { action } => topics(action),
        Command::Lag {
            kafka,
            group,
            topic,
            total,
        } => lag(&kafka.settings()?, &group, &topic, total),
        Command::Probe {
            probe,
            metrics_addr,
        } => {
            let path = match probe {
                ProbeKind::Healthz => "/healthz",
                ProbeKind::Readyz => "/readyz",
            };
            let (status, body) = telemetry::http_get(metrics_addr, path, Duration::from_secs(5))
                .with_context(|| format!("cannot reach {metrics_addr}{path}"))?;
            if status != 200 {
                bail!("{path} answered {status}: {}", body.trim());
            }
            println!("{}", body.trim());
            Ok(())
        }
        Command::Schema { record } => {
            print!(
                "{}",
                match record {
                    RecordKind::Event => TRAFFIC_EVENT_SCHEMA,
                    RecordKind::Average => TRAFFIC_AVERAGE_SCHEMA,
                }
            );
            Ok(())
        }
    }
}

/// Sets the returned flag on SIGINT or SIGTERM, so long runs stop cleanly and deliver what they queued.
fn stop_on_signal(runtime: &tokio::runtime::Runtime) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    runtime.spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut sigterm) => {
                    sigterm.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        tracing::info!("stop requested: finishing in-flight work");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

/// Runs `work` on its own thread with a stop flag that SIGINT/SIGTERM set, and returns its result.
fn until_signalled<T: Send>(name: &str, work: impl FnOnce(&AtomicBool) -> T + Send) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = stop_on_signal(&runtime);
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| work(&stop));
        // Keep the signal task running on this thread while the work runs on its own.
        runtime.block_on(async {
            while !worker.is_finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))
    })
}

fn run_processor(settings: RunSettings) -> Result<()> {
    let health = Arc::new(Health::new(settings.stall_timeout));
    if let Some(addr) = settings.metrics_addr {
        // Gauges of partitions this instance no longer owns drop out after two minutes.
        let metrics = telemetry::install_recorder(Duration::from_secs(120))?;
        let bound = telemetry::serve(addr, Some(metrics), Arc::clone(&health))?;
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    }
    until_signalled("processor", |stop| {
        streamagg::pipeline::run(settings, stop, health)
    })??;
    Ok(())
}

fn ingest(settings: IngestSettings, metrics_addr: Option<std::net::SocketAddr>) -> Result<()> {
    // Liveness: the gateway's monitor task ticks every second; 30 s without a tick is a wedged runtime.
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    if let Some(addr) = metrics_addr {
        let metrics = telemetry::install_recorder(Duration::from_secs(120))?;
        let bound = telemetry::serve(addr, Some(metrics), Arc::clone(&health))?;
        tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ingest")
        .build()?;
    runtime.block_on(streamagg::ingest::run(settings, health, signalled()))?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn signalled() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("stop requested");
}

fn produce(settings: ProduceSettings) -> Result<()> {
    let report = until_signalled("producer", |stop| generate_to_topic(&settings, stop))??;
    println!(
        "produced {} events to '{}' in {:.2}s ({:.0} events/s)",
        report.delivered,
        settings.topic,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
    Ok(())
}

fn consume(args: &ConsumeArgs) -> Result<()> {
    let settings = args.kafka.settings()?;
    let isolation = if args.read_uncommitted {
        Isolation::ReadUncommitted
    } else {
        Isolation::ReadCommitted
    };
    let records = read_to_end(&settings, &args.topic, isolation, args.deadline)?;
    let mut undecodable = 0_u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for record in &records {
        let payload = record.payload.as_deref().unwrap_or_default();
        let line = match args.record {
            RecordKind::Event => {
                decode::<TrafficEvent>(payload, args.format).map(|r| serde_json::to_string(&r))
            }
            RecordKind::Average => {
                decode::<TrafficAverage>(payload, args.format).map(|r| serde_json::to_string(&r))
            }
        };
        let written = match line {
            Ok(Ok(line)) if args.positions => writeln!(
                out,
                r#"{{"partition":{},"offset":{},"record":{line}}}"#,
                record.partition, record.offset
            ),
            Ok(Ok(line)) => writeln!(out, "{line}"),
            _ => {
                undecodable += 1;
                Ok(())
            }
        };
        // A reader that stopped early (`| head`) is not an error: stop writing, quietly.
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing to stdout")?,
    }
    if undecodable > 0 {
        eprintln!(
            "streamagg: {undecodable} of {} records did not decode as {:?}",
            records.len(),
            args.format
        );
    }
    Ok(())
}

fn topics(action: TopicsAction) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match action {
        TopicsAction::Create {
            kafka: args,
            names,
            partitions,
            replication,
        } => {
            let settings = args.settings()?;
            if partitions < 1 || replication < 1 {
                bail!("--partitions and --replication must be at least 1");
            }
            let admin = streamagg::kafka::admin_client(&settings)?;
            for name in &names {
                let created = runtime.block_on(streamagg::kafka::ensure_topic(
                    &admin,
                    &settings,
                    name,
                    partitions,
                    replication,
                ))?;
                println!("{name}: {}", if created { "created" } else { "exists" });
            }
        }
        TopicsAction::Delete { kafka: args, names } => {
            let settings = args.settings()?;
            let admin = streamagg::kafka::admin_client(&settings)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            runtime.block_on(streamagg::kafka::delete_topics(&admin, &settings, &names))?;
            println!("deleted {}", names.join(", "));
        }
    }
    Ok(())
}

fn lag(settings: &KafkaSettings, group: &str, topics: &[String], total_only: bool) -> Result<()> {
    let lags = streamagg::consume::group_lag(settings, group, topics)?;
    let total: i64 = lags.iter().map(|l| l.lag()).sum();
    if total_only {
        println!("{total}");
        return Ok(());
    }
    println!(
        "{:<40} {:>9} {:>12} {:>12} {:>10}",
        "topic", "partition", "committed", "end", "lag"
    );
    for l in &lags {
        let committed = l.committed.map_or("-".to_owned(), |c| c.to_string());
        println!(
            "{:<40} {:>9} {:>12} {:>12} {:>10}",
            l.topic,
            l.partition,
            committed,
            l.end,
            l.lag()
        );
    }
    println!("total lag: {total}");
    Ok(())
}

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
use crate::route::{EventTime, RouteSettings};
use crate::window::{Rollups, WindowSpec};

pub mod cluster;
pub mod duration;
pub mod passthrough;
pub mod percentiles;
mod query;
pub mod registry;
pub mod windows;

use crate::partitioner::Partitioner;
use crate::window::sketch::SketchSpec;
use cluster::{metrics_addr, KafkaOptions, KafkaSettings};
use passthrough::Client;
pub use query::QuerySettings;

/// The port of the metrics and health endpoint unless `metrics_addr` says otherwise (the
/// OpenTelemetry Prometheus exporter's port).
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// The Kafka timestamp of an output record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OutputTimestamp {
    /// The time the result was sent, like today's records of most producers. Safe with any
    /// retention: a replay of old input writes records the broker keeps.
    #[default]
    WallClock,
    /// The window's last instant (`window_end - 1`), the same at every re-emission: what
    /// event-time consumers downstream want. Time-based retention then counts from event time, so
    /// results of input older than the output topic's `retention.ms` are deleted at once.
    WindowEnd,
}

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
    #[error("[kafka.{table}] may not set '{key}': {reason}")]
    Refused {
        table: &'static str,
        key: String,
        reason: &'static str,
    },
}

/// `streamagg run`'s settings, all optional, defined once for flags, `STREAMAGG_*` environment
/// variables (the flag in upper snake case) and keys of the TOML file (the flag in snake case).
/// Precedence: flag > environment > file ([`Self::from_file`], then clap's
/// `update_from_arg_matches`) > the defaults [`RunSettings`] fills in.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, clap::Args)]
pub struct RunOptions {
    #[command(flatten)]
    #[serde(flatten)]
    pub cluster: KafkaOptions,
    /// Input topics, comma-separated.
    #[arg(long, env = "STREAMAGG_INPUT", value_delimiter = ',')]
    pub input: Option<Vec<String>>,
    /// Output topic for TrafficAverage records.
    #[arg(long, env = "STREAMAGG_OUTPUT")]
    pub output: Option<String>,
    /// With several window sizes: one topic per larger size, in order (`--window 1m,5m,1h
    /// --rollup-outputs traffic-5m,traffic-1h`); without, every size goes to `--output`.
    #[arg(long, env = "STREAMAGG_ROLLUP_OUTPUTS", value_delimiter = ',')]
    pub rollup_outputs: Option<Vec<String>>,
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
    /// How the producers of the input chose a record's partition from its key, the source:
    /// murmur2 (Java clients, Kafka Streams, streamagg), crc32 (librdkafka's default:
    /// confluent-kafka-python and -go, kcat) or unknown. A window of a source that is not where
    /// this puts it (partitions were added) is emitted with the header `streamagg.possibly_split`
    /// [default: murmur2].
    #[arg(long, env = "STREAMAGG_INPUT_PARTITIONER", value_enum)]
    pub input_partitioner: Option<Partitioner>,
    /// With `--input-format avro`: the Avro schema (.avsc) the producers write raw datums with,
    /// when it is not streamagg's own; read by schema resolution [default: schemas/traffic_event.avsc].
    #[arg(long, env = "STREAMAGG_INPUT_WRITER_SCHEMA")]
    pub input_writer_schema: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub registry: registry::RegistryOptions,
    /// Event time from the record's `timestamp` field or the Kafka record timestamp [default: field].
    #[arg(long, env = "STREAMAGG_EVENT_TIME", value_enum)]
    pub event_time: Option<EventTime>,
    /// Window size, or several sizes from one state, smallest first, each dividing the next
    /// (`1m,5m,1h`: the larger ones are rolled up from the closed smaller ones) [default: 60s].
    #[arg(long, env = "STREAMAGG_WINDOW")]
    #[serde(default)]
    pub window: Option<windows::WindowSizes>,
    /// Align windows of an hour or more to this IANA time zone's clock (days start at local
    /// midnight, 23 or 25 h long across DST changes); shorter windows stay aligned to UTC
    /// [default: none, UTC].
    #[arg(long, env = "STREAMAGG_TIME_ZONE")]
    pub time_zone: Option<String>,
    /// How long after a window's end it still accepts out-of-order events [default: 10s].
    #[arg(long, env = "STREAMAGG_GRACE", value_parser = duration::parse)]
    #[serde(default, with = "duration::optional")]
    pub grace: Option<Duration>,
    /// Drop events with value below this before aggregation (the threshold filter).
    #[arg(long, env = "STREAMAGG_MIN_VALUE")]
    pub min_value: Option<f64>,
    #[command(flatten)]
    #[serde(flatten)]
    pub percentiles: percentiles::PercentileOptions,
    /// The Kafka timestamp of output records: the time they were sent, or their window's last
    /// instant (see the README before choosing window-end: retention) [default: wall-clock].
    #[arg(long, env = "STREAMAGG_OUTPUT_TIMESTAMP", value_enum)]
    pub output_timestamp: Option<OutputTimestamp>,
    /// Forward late events here, unchanged, with headers saying why.
    #[arg(long, env = "STREAMAGG_LATE_TOPIC")]
    pub late_topic: Option<String>,
    /// Forward undecodable or invalid records here, unchanged, with headers saying why.
    #[arg(long, env = "STREAMAGG_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// How often state and offsets are checkpointed [default: 1s].
    #[arg(long, env = "STREAMAGG_CHECKPOINT_INTERVAL", value_parser = duration::parse)]
    #[serde(default, with = "duration::optional")]
    pub checkpoint_interval: Option<Duration>,
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
    #[arg(long, env = "STREAMAGG_IDLE_CLOSE_AFTER", value_parser = duration::parse)]
    #[serde(default, with = "duration::optional")]
    pub idle_close_after: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz on this ip:port, or `off` [default: 127.0.0.1:9464;
    /// in a container use 0.0.0.0:9464].
    #[arg(long, env = "STREAMAGG_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// The poll loop counts as stalled (/healthz fails, the watchdog logs) after this long without
    /// polling [default: 30s].
    #[arg(long, env = "STREAMAGG_STALL_TIMEOUT", value_parser = duration::parse)]
    #[serde(default, with = "duration::optional")]
    pub stall_timeout: Option<Duration>,
    /// File holding the bearer token of the live-state endpoint `GET /v1/windows/{source}` on
    /// `metrics_addr`; the endpoint is served only with a token (`STREAMAGG_QUERY_TOKEN` in the
    /// environment wins over the file) [default: off].
    #[arg(long, env = "STREAMAGG_QUERY_TOKEN_FILE")]
    pub query_token_file: Option<PathBuf>,
    /// The token itself, read at the binary's edge; never a flag or a file key.
    #[arg(skip)]
    #[serde(skip)]
    pub query_token: Option<String>,
    /// host:port where clients and the other instances reach this instance's live-state endpoint,
    /// published in its consumer `client.id` (`streamagg@<host:port>`) [default: the metrics address
    /// as bound, unless it is 0.0.0.0].
    #[arg(long, env = "STREAMAGG_ADVERTISED_ADDRESS")]
    pub advertised_address: Option<String>,
    /// Before starting, create the output, late and DLQ topics that are missing, shaped like the
    /// input (as `streamagg topics ensure` does) [default: false: missing topics are refused].
    #[arg(long, env = "STREAMAGG_CREATE_TOPICS", num_args = 0..=1, default_missing_value = "true")]
    pub create_topics: Option<bool>,
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
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                // Values are checked after the text is parsed, so the error has no position: the
                // key is the first one that fails on its own (every key is optional).
                let key =
                    table
                        .iter()
                        .map(|(key, value)| (key, value.clone()))
                        .find(|(key, value)| {
                            let alone = toml::Table::from_iter([((*key).clone(), value.clone())]);
                            toml::Value::Table(alone).try_into::<Self>().is_err()
                        });
                parse_error(match key {
                    Some((key, _)) => format!("'{key}': {}", e.message()),
                    None => e.message().into(),
                })
            })
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
    /// One topic per larger window size (`rollups`), or empty: every size to `output_topic`.
    pub rollup_outputs: Vec<String>,
    pub group: String,
    pub state_dir: PathBuf,
    pub input_format: Format,
    pub output_format: Format,
    /// How the input's producers partition by source ([`Partitioner::home_of`]).
    pub input_partitioner: Partitioner,
    /// The schema file raw Avro input is written with, if not streamagg's own.
    pub input_writer_schema: Option<PathBuf>,
    /// The Schema Registry, when a format is `avro-confluent`.
    pub registry: Option<registry::RegistrySettings>,
    pub event_time: EventTime,
    /// The smallest window size (with grace and zone).
    pub window: WindowSpec,
    /// The larger window sizes, rolled up from the smallest.
    pub rollups: Rollups,
    pub min_value: Option<f64>,
    /// With percentiles on, the sketch every window keeps.
    pub percentiles: Option<SketchSpec>,
    /// The Kafka timestamp of output records.
    pub output_timestamp: OutputTimestamp,
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
    /// The live-state endpoint, if enabled.
    pub query: Option<QuerySettings>,
    /// Create missing output, late and DLQ topics at start-up, shaped like the input.
    pub create_topics: bool,
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
            rollups: self.rollups,
            zone: self.window.zone,
            min_value: self.min_value,
            event_time: self.event_time,
            input_format: self.input_format,
            percentiles: self.percentiles,
        }
    }

    /// The topic results of window size `level` (0: the smallest) go to.
    pub fn output_of(&self, level: usize) -> &str {
        level
            .checked_sub(1)
            .and_then(|i| self.rollup_outputs.get(i))
            .unwrap_or(&self.output_topic)
    }

    /// Every topic results go to: the output topic, then the rollup outputs.
    pub fn output_topics(&self) -> Vec<&String> {
        std::iter::once(&self.output_topic)
            .chain(&self.rollup_outputs)
            .collect()
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

impl TryFrom<RunOptions> for RunSettings {
    type Error = ConfigError;

    fn try_from(options: RunOptions) -> Result<Self, ConfigError> {
        let kafka = options.cluster.validate()?;
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
        let rollup_outputs: Vec<String> = options
            .rollup_outputs
            .unwrap_or_default()
            .into_iter()
            .map(|t| topic("rollup_outputs", t))
            .collect::<Result<_, _>>()?;
        let mut written = vec![("output", &output_topic)];
        written.extend(rollup_outputs.iter().map(|t| ("rollup_outputs", t)));
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
        let (window, rollups) = windows::validate(
            options.window.as_ref(),
            options.grace,
            options.time_zone.as_deref(),
        )?;
        if !rollup_outputs.is_empty() && rollup_outputs.len() != rollups.sizes().len() {
            return Err(ConfigError::Invalid {
                key: "rollup_outputs",
                reason: format!(
                    "names {} topics for {} larger window sizes: one per size after the first, in order",
                    rollup_outputs.len(),
                    rollups.sizes().len()
                ),
            });
        }
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
        let metrics_addr = metrics_addr(options.metrics_addr.as_deref(), DEFAULT_METRICS_PORT)?;
        let stall_timeout = options.stall_timeout.unwrap_or(Duration::from_secs(30));
        if stall_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                key: "stall_timeout",
                reason: "must be at least 100ms".into(),
            });
        }
        let query = query::settings(
            options.query_token,
            options.advertised_address,
            metrics_addr.is_some(),
        )?;
        let guarantee = options.guarantee.unwrap_or(Guarantee::ExactlyOnce);
        let allow_insecure_tls = options.cluster.allow_insecure_tls.unwrap_or(false);
        let producer_properties =
            passthrough::from_table(Client::Producer, options.kafka.producer, allow_insecure_tls)?;
        let transaction_timeout =
            transaction_timeout(&producer_properties, guarantee, checkpoint_interval)?;
        let consumer_properties =
            passthrough::from_table(Client::Consumer, options.kafka.consumer, allow_insecure_tls)?;
        query::check_consumer_properties(query.as_ref(), &consumer_properties)?;
        let input_format = options.input_format.unwrap_or(Format::Json);
        let output_format = options.output_format.unwrap_or(Format::Json);
        if options.input_writer_schema.is_some() && input_format != Format::Avro {
            return Err(ConfigError::Invalid {
                key: "input_writer_schema",
                reason:
                    "only goes with input_format avro (avro-confluent records name their schema)"
                        .into(),
            });
        }
        let registry = options.registry.validate(
            input_format == Format::AvroConfluent || output_format == Format::AvroConfluent,
        )?;
        Ok(RunSettings {
            kafka,
            input_topics,
            output_topic,
            rollup_outputs,
            group,
            state_dir: options
                .state_dir
                .unwrap_or_else(|| PathBuf::from("./state")),
            input_format,
            output_format,
            input_writer_schema: options.input_writer_schema,
            input_partitioner: options.input_partitioner.unwrap_or_default(),
            registry,
            event_time: options.event_time.unwrap_or(EventTime::Field),
            window,
            rollups,
            min_value: options.min_value,
            percentiles: options.percentiles.validate()?,
            output_timestamp: options.output_timestamp.unwrap_or_default(),
            late_topic,
            dlq_topic,
            checkpoint_interval,
            guarantee,
            instance_id: options.instance_id,
            static_membership: options.static_membership.unwrap_or(false),
            idle_close_after: options.idle_close_after,
            metrics_addr,
            stall_timeout,
            query,
            create_topics: options.create_topics.unwrap_or(false),
            consumer_properties,
            producer_properties,
            transaction_timeout,
        })
    }
}

#[cfg(test)]
mod tests;

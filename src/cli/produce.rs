//! `streamagg produce`: synthetic TrafficEvents for demos, tests and benchmarks.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use streamagg::codec::Format;
use streamagg::codec::TRAFFIC_EVENT_SCHEMA;
use streamagg::config::cluster::KafkaOptions;
use streamagg::config::registry::RegistryOptions;
use streamagg::generate::to_topic::{generate_to_topic, Pace, ProduceSettings};
use streamagg::generate::GeneratorConfig;
use streamagg::producer::now_ms;
use streamagg::registry::RegistryClient;

use super::process::until_signalled;
use super::secrets::{kafka_settings, with_registry_secret};

#[derive(Args)]
pub(super) struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaOptions,
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
    #[arg(long, default_value = "10m", value_parser = streamagg::config::duration::parse)]
    span: Duration,
    /// Event-time start of a preload in epoch milliseconds (default: now minus --span, on a minute).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Payload format; `avro-confluent` registers the event schema (subject `<topic>-value`, or
    /// `streamagg.TrafficEvent` with `--schema-registry-subject-strategy record`) and frames every event.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    #[command(flatten)]
    registry: RegistryOptions,
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
    pub(super) fn settings(&self) -> Result<ProduceSettings> {
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
        let kafka = kafka_settings(&self.kafka)?;
        let registry = with_registry_secret(self.registry.clone())?
            .validate(self.format == Format::AvroConfluent)?;
        let schema_id = match registry {
            Some(registry) => {
                let subject = registry
                    .subject_strategy
                    .subject(&self.topic, "streamagg.TrafficEvent");
                Some(RegistryClient::new(&registry)?.register(&subject, TRAFFIC_EVENT_SCHEMA)?)
            }
            None => None,
        };
        Ok(ProduceSettings {
            kafka,
            topic: self.topic.clone(),
            partitions: self.partitions,
            format: self.format,
            schema_id,
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

/// Writes the synthetic events and prints how fast they went.
pub(super) fn produce(settings: ProduceSettings) -> Result<()> {
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

//! The operator's small commands: `topics`, `lag` and `probe`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use streamagg::config::cluster::{KafkaOptions, KafkaSettings};
use streamagg::kafka::topics::{EnsureReport, TopicSet};
use streamagg::telemetry;

use super::secrets::kafka_settings;

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum ProbeKind {
    /// Alive: the poll loop polls.
    Healthz,
    /// Ready: partitions assigned and restored.
    Readyz,
}

#[derive(Subcommand)]
pub(super) enum TopicsAction {
    /// Create topics that do not exist yet (existing ones are left as they are).
    Create {
        #[command(flatten)]
        kafka: KafkaOptions,
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Replicas of each partition.
        #[arg(long, alias = "replication", default_value_t = 1)]
        replication_factor: i32,
        /// A topic config `key=value` (e.g. `retention.ms=604800000`); repeat for more.
        #[arg(long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// Create the output, late and DLQ topics a processor writes to, if missing, with the input's
    /// partition count and replication factor, lz4 compression and a week's retention (two for the
    /// DLQ); leave existing ones alone. Mismatches (an existing topic with fewer partitions or
    /// replicas than the input, an input retention shorter than a rebuild needs) are warnings on
    /// stderr, exit 0; with `--strict`, exit 1. A missing input topic is an error.
    Ensure {
        #[command(flatten)]
        kafka: KafkaOptions,
        /// Input topics, comma-separated (they must exist).
        #[arg(long, value_delimiter = ',', required = true)]
        input: Vec<String>,
        /// Output topic.
        #[arg(long)]
        output: String,
        /// Late topic.
        #[arg(long)]
        late: Option<String>,
        /// DLQ topic.
        #[arg(long)]
        dlq: Option<String>,
        /// The processor's window and grace: the input must keep at least their sum (and an hour).
        #[arg(long, default_value = "60s", value_parser = streamagg::config::duration::parse)]
        window: Duration,
        #[arg(long, default_value = "10s", value_parser = streamagg::config::duration::parse)]
        grace: Duration,
        /// A config `key=value` for the topics created, over the defaults; repeat for more.
        #[arg(long = "config", value_parser = parse_config)]
        configs: Vec<(String, String)>,
        /// Exit 1 if any warning was printed.
        #[arg(long)]
        strict: bool,
    },
    /// Delete topics; a topic that does not exist is not an error.
    Delete {
        #[command(flatten)]
        kafka: KafkaOptions,
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Creates, ensures or deletes topics.
pub(super) fn topics(action: TopicsAction) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match action {
        TopicsAction::Create {
            kafka: args,
            names,
            partitions,
            replication_factor,
            configs,
        } => {
            let settings = kafka_settings(&args)?;
            if partitions < 1 || replication_factor < 1 {
                bail!("--partitions and --replication-factor must be at least 1");
            }
            let admin = streamagg::kafka::admin::admin_client(&settings)?;
            for name in &names {
                let created = runtime.block_on(streamagg::kafka::admin::create_topic(
                    &admin,
                    &settings,
                    name,
                    partitions,
                    replication_factor,
                    &configs,
                ))?;
                println!("{name}: {}", if created { "created" } else { "exists" });
            }
        }
        TopicsAction::Ensure {
            kafka,
            input,
            output,
            late,
            dlq,
            window,
            grace,
            configs,
            strict,
        } => {
            let settings = kafka_settings(&kafka)?;
            let topics = TopicSet {
                inputs: input,
                outputs: vec![output],
                late,
                dlq,
                rebuild_span: window + grace,
                configs,
            };
            let report = streamagg::kafka::topics::ensure(&settings, &topics)?;
            print_ensured(&report);
            if strict && !report.warnings.is_empty() {
                bail!("{} warnings (--strict)", report.warnings.len());
            }
        }
        TopicsAction::Delete { kafka: args, names } => {
            let settings = kafka_settings(&args)?;
            let admin = streamagg::kafka::admin::admin_client(&settings)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            runtime.block_on(streamagg::kafka::admin::delete_topics(
                &admin, &settings, &names,
            ))?;
            println!("deleted {}", names.join(", "));
        }
    }
    Ok(())
}

/// Prints what `topics ensure` created and found: one line per topic on stdout, one per warning on
/// stderr.
pub(super) fn print_ensured(report: &EnsureReport) {
    for (role, topic, partitions, replication) in &report.created {
        println!(
            "{topic}: created ({} topic, {partitions} partitions, replication factor {replication})",
            role.name()
        );
    }
    for (role, topic) in &report.existing {
        println!("{topic}: exists ({} topic)", role.name());
    }
    for warning in &report.warnings {
        eprintln!("streamagg: warning: {warning}");
    }
}

/// A topic config `key=value`.
fn parse_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("'{text}' is not key=value")),
    }
}

/// Prints a group's lag per partition, or only the total.
pub(super) fn lag(
    settings: &KafkaSettings,
    group: &str,
    topics: &[String],
    total_only: bool,
) -> Result<()> {
    let lags = streamagg::reader::group_lag(settings, group, topics)?;
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

/// Asks a running instance's endpoint: exit 0 with its answer if healthy/ready, else one line and 1.
pub(super) fn probe(probe: ProbeKind, metrics_addr: SocketAddr) -> Result<()> {
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

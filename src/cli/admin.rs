//! The operator's small commands: `topics`, `lag` and `probe`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use streamagg::config::cluster::{KafkaOptions, KafkaSettings};
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
    /// Create topics that do not exist yet.
    Create {
        #[command(flatten)]
        kafka: KafkaOptions,
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
        kafka: KafkaOptions,
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Creates or deletes topics.
pub(super) fn topics(action: TopicsAction) -> Result<()> {
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
            let settings = kafka_settings(&args)?;
            if partitions < 1 || replication < 1 {
                bail!("--partitions and --replication must be at least 1");
            }
            let admin = streamagg::kafka::admin::admin_client(&settings)?;
            for name in &names {
                let created = runtime.block_on(streamagg::kafka::admin::ensure_topic(
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

//! `streamagg dlq replay`: re-inject DLQ or late-topic records once their cause is fixed.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use streamagg::config::cluster::KafkaOptions;
use streamagg::replay::{Decision, Replay};

use super::process::until_signalled;
use super::secrets::kafka_settings;

#[derive(Subcommand)]
pub(super) enum DlqAction {
    /// Produce the records of a DLQ (or late topic), as far as it reaches when this starts, to a
    /// topic: same key and value bytes, the record's own headers, plus `streamagg.replayed-from:
    /// <topic>/<partition>/<offset>`. Exit 1 unless every record is delivered.
    Replay {
        #[command(flatten)]
        kafka: KafkaOptions,
        /// The DLQ or late topic to read.
        #[arg(long)]
        from_topic: String,
        /// The topic to produce to (usually the processor's input).
        #[arg(long)]
        to_topic: String,
        /// Replay only records whose `streamagg.error` header contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Print what would be replayed (one JSON line per record) and the counts; produce nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long reading the DLQ, and then waiting for the deliveries, may each take.
        #[arg(long, default_value = "60s", value_parser = streamagg::config::duration::parse)]
        deadline: Duration,
    },
}

/// Runs a `dlq` action.
pub(super) fn dlq(action: DlqAction) -> Result<()> {
    let DlqAction::Replay {
        kafka,
        from_topic,
        to_topic,
        reason,
        dry_run,
        deadline,
    } = action;
    let settings = kafka_settings(&kafka)?;
    if from_topic == to_topic {
        bail!("--from-topic and --to-topic are both '{from_topic}': a replay would feed itself");
    }
    let replay = Replay {
        from_topic,
        to_topic,
        reason,
        dry_run,
        deadline,
    };
    let counts = until_signalled("replay", |stop| {
        replay.run(&settings, stop, |partition, offset, decision| {
            if dry_run && decision == Decision::Replay {
                println!(r#"{{"partition":{partition},"offset":{offset},"replay":true}}"#);
            }
        })
    })??;
    println!(
        "{} {} of '{}' to '{}'; skipped {} with another reason, {} markers of records too large for the DLQ",
        if dry_run { "would replay" } else { "replayed" },
        counts.replayed,
        replay.from_topic,
        replay.to_topic,
        counts.other_reason,
        counts.markers
    );
    Ok(())
}

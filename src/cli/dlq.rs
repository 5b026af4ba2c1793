//! `streamagg dlq replay`: re-inject DLQ or late-topic records once their cause is fixed, keeping
//! the progress in a consumer group so that a re-run continues where the last one stopped.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use streamagg::config::cluster::KafkaOptions;
use streamagg::replay::{default_group, Decision, Replay};

use super::process::until_signalled;
use super::secrets::kafka_settings;

#[derive(Subcommand)]
pub(super) enum DlqAction {
    /// Produce the records of a DLQ (or late topic), as far as it reaches when this starts, to a
    /// topic: same key and value bytes, the record's own headers, plus `streamagg.replayed-from:
    /// <topic>/<partition>/<offset>`. Starts where the last replay of the same group stopped, and
    /// commits its progress there once its records are delivered. Exit 1 unless every record is
    /// delivered.
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
        /// Print what would be replayed (one JSON line per record) and the counts; produce and
        /// commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long reading the DLQ, and then waiting for the deliveries, may each take (the
        /// deliveries at least --kafka-timeout).
        #[arg(long, default_value = "60s", value_parser = streamagg::config::duration::parse)]
        deadline: Duration,
        /// The consumer group whose committed offsets on the DLQ keep the progress (never joined;
        /// no instance may be in it) [default: streamagg-replay.<from-topic>.<to-topic>].
        #[arg(long)]
        group: Option<String>,
        /// Start at the DLQ's beginning, ignoring earlier progress (replays again what earlier
        /// runs replayed); the group's progress is then overwritten.
        #[arg(long)]
        restart: bool,
        /// Scan at most this many records (replayed or skipped); a re-run continues after them.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_records: Option<u64>,
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
        group,
        restart,
        max_records,
    } = action;
    let settings = kafka_settings(&kafka)?;
    if from_topic == to_topic {
        bail!("--from-topic and --to-topic are both '{from_topic}': a replay would feed itself");
    }
    let group = group.unwrap_or_else(|| default_group(&from_topic, &to_topic));
    if group.is_empty() {
        bail!("--group must not be empty");
    }
    let replay = Replay {
        from_topic,
        to_topic,
        reason,
        dry_run,
        deadline,
        group,
        restart,
        max_records,
    };
    let report = until_signalled("replay", |stop| {
        replay.run(&settings, stop, |partition, offset, decision| {
            if dry_run && decision == Decision::Replay {
                println!(r#"{{"partition":{partition},"offset":{offset},"replay":true}}"#);
            }
        })
    })??;
    let counts = report.counts;
    println!(
        "{} {} of '{}' to '{}'; skipped {} with another reason, {} markers of records too large for the DLQ",
        if dry_run { "would replay" } else { "replayed" },
        counts.replayed,
        replay.from_topic,
        replay.to_topic,
        counts.other_reason,
        counts.markers
    );
    let from = if restart {
        "from the beginning (--restart)"
    } else {
        "from its progress"
    };
    if dry_run {
        println!(
            "dry run {from} in group '{}': nothing produced, nothing committed",
            replay.group
        );
    } else if !report.committed.is_empty() {
        println!(
            "progress committed to group '{}' ({from}): a re-run replays only what was added since",
            replay.group
        );
    }
    if report.stopped_at_max {
        println!(
            "stopped after --max-records {}: run again to continue",
            counts.scanned()
        );
    }
    Ok(())
}

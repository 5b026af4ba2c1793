//! `streamagg reset`: moves a stopped consumer group's offsets on an input topic (to its earliest
//! records, a point in time or an offset) and starts a new generation, so that every instance's
//! local state for it is obsolete on its next start and the input is processed again from there.
//! Refuses while the group has members. `--dry-run` prints the plan and commits nothing.

use anyhow::{bail, Context, Result};
use clap::Args;
use streamagg::checkpoint::CommitMetadata;
use streamagg::config::cluster::KafkaOptions;
use streamagg::kafka::admin::GroupOffsets;
use streamagg::reset::{plan_reset, PartitionNow, ResetPlan, ResetTo};

use super::secrets::kafka_settings;

#[derive(Args)]
pub(super) struct ResetArgs {
    #[command(flatten)]
    kafka: KafkaOptions,
    /// The processor's consumer group (`run --group`).
    #[arg(long)]
    group: String,
    /// The input topic whose offsets are reset (every partition of it).
    #[arg(long)]
    input: String,
    #[command(flatten)]
    position: Position,
    /// Print the plan (`topic[partition]: current → new`) and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Reset even though the group has no committed offset on the input (a group that never ran;
    /// without this, that is taken for a mistyped group name and refused).
    #[arg(long)]
    allow_new_group: bool,
}

/// Where the offsets go: exactly one.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Position {
    /// To the first record each partition still holds.
    #[arg(long)]
    to_earliest: bool,
    /// To the first record whose Kafka timestamp is at or after this time (RFC 3339, UTC, e.g.
    /// 2026-12-04T10:00:00Z); the log end where there is none.
    #[arg(long, value_name = "RFC3339")]
    to_datetime: Option<String>,
    /// To this offset on every partition (kept within what each partition holds).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
}

impl Position {
    fn validate(&self) -> Result<ResetTo> {
        match (self.to_earliest, &self.to_datetime, self.to_offset) {
            (true, None, None) => Ok(ResetTo::Earliest),
            (false, Some(text), None) => {
                let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
                    anyhow::anyhow!(
                        "--to-datetime {text:?}: {e} (expected RFC 3339 in UTC, e.g. 2026-12-04T10:00:00Z)"
                    )
                })?;
                let ms = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .with_context(|| format!("--to-datetime {text:?} is before 1970"))?;
                Ok(ResetTo::Datetime(ms))
            }
            (false, None, Some(offset)) if offset >= 0 => Ok(ResetTo::Offset(offset)),
            (false, None, Some(offset)) => bail!("--to-offset must be at least 0, not {offset}"),
            _ => bail!("give exactly one of --to-earliest, --to-datetime, --to-offset"),
        }
    }
}

/// Plans the reset, and unless `--dry-run`, commits it once the group is known to have no members.
pub(super) fn reset(args: &ResetArgs) -> Result<()> {
    let settings = kafka_settings(&args.kafka)?;
    let to = args.position.validate()?;
    let (group_name, topic) = (&args.group, &args.input);
    let group = GroupOffsets::open(&settings, group_name)?;
    let members = group.describe()?.members;
    let busy = (!members.is_empty()).then(|| {
        format!(
            "group '{group_name}' has {} active member(s): {}; stop every instance of it first",
            members.len(),
            members.join(", ")
        )
    });
    if let (Some(busy), false) = (&busy, args.dry_run) {
        bail!("{busy}");
    }
    let plan = current_plan(&group, topic, to)?;
    if !args.allow_new_group && plan.partitions.iter().all(|p| p.current.is_none()) {
        bail!(
            "group '{group_name}' has no committed offsets on '{topic}': is the group name right? \
             (`--allow-new-group` resets a group that never ran)"
        );
    }
    let position = match to {
        ResetTo::Earliest => "the earliest records".to_owned(),
        ResetTo::Datetime(_) => args.position.to_datetime.clone().unwrap_or_default(),
        ResetTo::Offset(offset) => format!("offset {offset}"),
    };
    println!(
        "group '{group_name}', topic '{topic}': to {position}, generation {}",
        plan.generation
    );
    print!("{plan}");
    if args.dry_run {
        match busy {
            Some(busy) => {
                println!("dry run, nothing committed; the reset would be refused: {busy}")
            }
            None => println!("dry run, nothing committed"),
        }
        return Ok(());
    }
    let offsets: Vec<(i32, i64, String)> = plan
        .partitions
        .iter()
        .map(|p| (p.partition, p.new, p.metadata.encode()))
        .collect();
    group.commit(topic, &offsets)?;
    // The commit's answer does not always carry per-partition refusals: read it back.
    let committed = group.committed(topic, plan.partitions.len() as i32)?;
    for ((partition, offset, metadata), now) in offsets.iter().zip(&committed) {
        if now.as_ref() != Some(&(*offset, metadata.clone())) {
            bail!(
                "the reset of {topic}[{partition}] did not take: the group's commit is {now:?}; \
                 is an instance running? Stop every instance and run the reset again"
            );
        }
    }
    println!(
        "committed: on their next start, instances drop their local state of '{topic}' for this \
         group and process it again from these offsets (windows from there are emitted again)"
    );
    Ok(())
}

/// What the cluster says now, planned.
fn current_plan(group: &GroupOffsets, topic: &str, to: ResetTo) -> Result<ResetPlan> {
    let count = group.partition_count(topic)?;
    let committed = group.committed(topic, count)?;
    let at_time = match to {
        ResetTo::Datetime(ms) => group.offsets_at(topic, count, ms)?,
        _ => vec![None; committed.len()],
    };
    let mut partitions = Vec::new();
    for ((partition, committed), at_time) in (0..count).zip(committed).zip(at_time) {
        let (log_start, log_end) = group.log_bounds(topic, partition)?;
        partitions.push(PartitionNow {
            partition,
            committed: committed.map(|(offset, text)| (offset, CommitMetadata::parse(&text))),
            log_start,
            log_end,
            at_time,
        });
    }
    Ok(plan_reset(
        topic,
        to,
        &partitions,
        streamagg::producer::now_ms(),
    ))
}

//! Topics as code: `streamagg topics ensure` and `run --create-topics` create the output, late and
//! DLQ topics a processor writes to with the input's partition count and replication factor and
//! sane configs, leave existing ones alone, and report what does not fit: an existing topic with
//! fewer partitions or replicas than the input, an input whose retention is shorter than a rebuild
//! needs. What to create and what to report is decided by pure functions ([`plan_new`],
//! [`check_existing`], [`check_input_retention`]); [`ensure`] asks the cluster and acts.

use std::time::Duration;

use super::admin::{admin_client, create_topic, describe_topic, TopicDescription};
use super::KafkaSetupError;
use crate::config::cluster::KafkaSettings;

/// The shortest input retention that is not warned about, whatever the windows: README asks for
/// "hours, not minutes" so that a hand-off after a stall can still rebuild its open windows.
pub const MIN_INPUT_RETENTION: Duration = Duration::from_secs(3600);

/// What a processor writes to, and what its inputs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSet {
    pub inputs: Vec<String>,
    /// The output topic, then one per larger window size if named (`--rollup-outputs`).
    pub outputs: Vec<String>,
    pub late: Option<String>,
    pub dlq: Option<String>,
    /// Window plus grace: how much input history rebuilding a partition's open windows re-reads.
    pub rebuild_span: Duration,
    /// Topic configs for created topics, over the defaults of [`default_configs`].
    pub configs: Vec<(String, String)>,
}

/// The part a written topic plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Output,
    Late,
    Dlq,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Output => "output",
            Role::Late => "late",
            Role::Dlq => "DLQ",
        }
    }
}

/// The shape created topics copy from the inputs (the largest of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub partitions: usize,
    pub replication: usize,
}

const DAY_MS: u64 = 86_400_000;

/// The configs a created topic of `role` gets: lz4 compression (what streamagg's producers send,
/// kept as is), a week of retention (two for the DLQ: time to fix a cause and replay), and with
/// three or more replicas `min.insync.replicas` = 2 so an acknowledged write survives one broker.
pub fn default_configs(role: Role, replication: usize) -> Vec<(String, String)> {
    let retention_days = match role {
        Role::Output | Role::Late => 7,
        Role::Dlq => 14,
    };
    let mut configs = vec![
        ("compression.type".to_owned(), "lz4".to_owned()),
        (
            "retention.ms".to_owned(),
            (retention_days * DAY_MS).to_string(),
        ),
    ];
    if replication >= 3 {
        configs.push(("min.insync.replicas".to_owned(), "2".to_owned()));
    }
    configs
}

/// The configs of a new topic: the defaults, with `overrides` replacing or adding keys.
pub fn plan_new(role: Role, shape: Shape, overrides: &[(String, String)]) -> Vec<(String, String)> {
    let mut configs = default_configs(role, shape.replication);
    for (key, value) in overrides {
        match configs.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => old.clone_from(value),
            None => configs.push((key.clone(), value.clone())),
        }
    }
    configs
}

/// What does not fit about an existing written topic, one line each.
pub fn check_existing(
    role: Role,
    topic: &str,
    found: &TopicDescription,
    input: Shape,
) -> Vec<String> {
    let mut problems = Vec::new();
    if found.partitions < input.partitions {
        problems.push(format!(
            "{} topic '{topic}' has {} partitions, fewer than the input's {}: its consumers get \
             less parallelism than the input has",
            role.name(),
            found.partitions,
            input.partitions
        ));
    }
    if found.replication < input.replication {
        problems.push(format!(
            "{} topic '{topic}' has {} replicas, fewer than the input's {}: it is less durable \
             than the input",
            role.name(),
            found.replication,
            input.replication
        ));
    }
    problems
}

/// Warnings if `topic` may not keep what a rebuild needs: a `retention.ms` shorter than
/// `rebuild_span` (and at least [`MIN_INPUT_RETENTION`]), or any `retention.bytes` limit (how much
/// time it keeps then depends on the input's rate, and a burst trims the history of open windows).
/// `-1` (no limit) and an unknown value are not warned about.
pub fn check_input_retention(
    topic: &str,
    found: &TopicDescription,
    rebuild_span: Duration,
) -> Vec<String> {
    let setting = |key: &str| -> Option<i64> { found.configs.get(key)?.trim().parse().ok() };
    let needed = rebuild_span.max(MIN_INPUT_RETENTION);
    let needed_ms = i64::try_from(needed.as_millis()).unwrap_or(i64::MAX);
    let mut warnings = Vec::new();
    if let Some(retention_ms) = setting("retention.ms").filter(|&ms| ms >= 0 && ms < needed_ms) {
        warnings.push(format!(
            "input topic '{topic}' keeps records for {}, less than {}: an instance that takes over \
             a partition after a stall may not find the history to rebuild its open windows \
             (README: Retention)",
            humantime::format_duration(Duration::from_millis(retention_ms as u64)),
            humantime::format_duration(needed)
        ));
    }
    if let Some(bytes) = setting("retention.bytes").filter(|&bytes| bytes >= 0) {
        warnings.push(format!(
            "input topic '{topic}' keeps at most {bytes} bytes per partition (retention.bytes): \
             how much time that is depends on the input's rate, and a burst can delete the history \
             an instance that takes over a partition needs to rebuild its open windows of the last \
             {} (README: Retention)",
            humantime::format_duration(rebuild_span)
        ));
    }
    warnings
}

/// What [`ensure`] did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnsureReport {
    /// `(role, topic, partitions, replication)` of each topic created.
    pub created: Vec<(Role, String, usize, usize)>,
    /// `(role, topic)` of each topic that existed.
    pub existing: Vec<(Role, String)>,
    /// Mismatches of existing topics and short input retention, one line each.
    pub warnings: Vec<String>,
}

/// Creates the missing output, late and DLQ topics of `topics` shaped like the inputs; reports
/// existing ones and what does not fit. A missing input topic is an error. Blocks.
pub fn ensure(
    settings: &KafkaSettings,
    topics: &TopicSet,
) -> Result<EnsureReport, KafkaSetupError> {
    let admin = admin_client(settings)?;
    let mut report = EnsureReport::default();
    let mut shape = Shape {
        partitions: 0,
        replication: 0,
    };
    for input in &topics.inputs {
        let found = describe_topic(&admin, settings, input)?
            .ok_or_else(|| KafkaSetupError::TopicMissing(input.clone()))?;
        shape.partitions = shape.partitions.max(found.partitions);
        shape.replication = shape.replication.max(found.replication);
        report
            .warnings
            .extend(check_input_retention(input, &found, topics.rebuild_span));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaSetupError::CreateTopic {
            topic: topics.outputs.join(","),
            reason: e.to_string(),
        })?;
    let written = topics
        .outputs
        .iter()
        .map(|t| (Role::Output, Some(t)))
        .chain([
            (Role::Late, topics.late.as_ref()),
            (Role::Dlq, topics.dlq.as_ref()),
        ]);
    for (role, topic) in written {
        let Some(topic) = topic else { continue };
        if let Some(found) = describe_topic(&admin, settings, topic)? {
            report
                .warnings
                .extend(check_existing(role, topic, &found, shape));
            report.existing.push((role, topic.clone()));
            continue;
        }
        let configs = plan_new(role, shape, &topics.configs);
        let created = runtime.block_on(create_topic(
            &admin,
            settings,
            topic,
            i32::try_from(shape.partitions).unwrap_or(i32::MAX),
            i32::try_from(shape.replication).unwrap_or(i32::MAX),
            &configs,
        ))?;
        if created {
            report
                .created
                .push((role, topic.clone(), shape.partitions, shape.replication));
        } else {
            // Created by someone else in the meantime: an existing topic, then.
            report.existing.push((role, topic.clone()));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(partitions: usize, replication: usize, retention: Option<&str>) -> TopicDescription {
        found_with(
            partitions,
            replication,
            &retention
                .map(|r| ("retention.ms", r))
                .into_iter()
                .collect::<Vec<_>>(),
        )
    }

    fn found_with(
        partitions: usize,
        replication: usize,
        configs: &[(&str, &str)],
    ) -> TopicDescription {
        TopicDescription {
            partitions,
            replication,
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn new_topics_get_compression_retention_and_with_three_replicas_two_in_sync() {
        let one = Shape {
            partitions: 4,
            replication: 1,
        };
        let three = Shape {
            partitions: 4,
            replication: 3,
        };
        let cases = [
            (
                Role::Output,
                one,
                vec![],
                pairs(&[("compression.type", "lz4"), ("retention.ms", "604800000")]),
            ),
            (
                Role::Dlq,
                three,
                vec![],
                pairs(&[
                    ("compression.type", "lz4"),
                    ("retention.ms", "1209600000"),
                    ("min.insync.replicas", "2"),
                ]),
            ),
            (
                Role::Late,
                one,
                pairs(&[("retention.ms", "1000"), ("cleanup.policy", "delete")]),
                pairs(&[
                    ("compression.type", "lz4"),
                    ("retention.ms", "1000"),
                    ("cleanup.policy", "delete"),
                ]),
            ),
        ];
        for (index, (role, shape, overrides, expected)) in cases.into_iter().enumerate() {
            assert_eq!(plan_new(role, shape, &overrides), expected, "case {index}");
        }
    }

    #[test]
    fn existing_topics_smaller_than_the_input_are_reported_and_equal_or_larger_ones_not() {
        let input = Shape {
            partitions: 4,
            replication: 3,
        };
        let cases = [
            (found(4, 3, None), vec![]),
            (found(8, 5, None), vec![]),
            (
                found(2, 3, None),
                vec!["has 2 partitions, fewer than the input's 4"],
            ),
            (
                found(4, 1, None),
                vec!["has 1 replicas, fewer than the input's 3"],
            ),
            (
                found(1, 1, None),
                vec!["has 1 partitions", "has 1 replicas"],
            ),
        ];
        for (index, (existing, expected)) in cases.into_iter().enumerate() {
            let problems = check_existing(Role::Dlq, "d", &existing, input);
            assert_eq!(problems.len(), expected.len(), "case {index}: {problems:?}");
            for (problem, wanted) in problems.iter().zip(expected) {
                assert!(problem.contains(wanted), "case {index}: {problem}");
                assert!(problem.starts_with("DLQ topic 'd' "), "{problem}");
            }
        }
    }

    #[test]
    fn input_retention_shorter_than_a_rebuild_or_an_hour_or_limited_by_size_is_warned_about() {
        let span = Duration::from_secs(70);
        let week = ("retention.ms", "604800000");
        // (topic configs, rebuild span, warnings)
        type Case<'a> = (&'a [(&'a str, &'a str)], Duration, usize);
        let cases: [Case; 13] = [
            (&[], span, 0),
            (&[("retention.ms", "-1")], span, 0),
            (&[week], span, 0),
            (&[("retention.ms", "3600000")], span, 0),
            (&[("retention.ms", "3599999")], span, 1),
            (&[("retention.ms", "600000")], span, 1),
            (
                &[("retention.ms", "7200000")],
                Duration::from_secs(3 * 3600),
                1,
            ),
            (&[("retention.ms", "not a number")], span, 0),
            (&[week, ("retention.bytes", "-1")], span, 0),
            (&[week, ("retention.bytes", "1073741824")], span, 1),
            (&[week, ("retention.bytes", "0")], span, 1),
            (
                &[("retention.ms", "600000"), ("retention.bytes", "1")],
                span,
                2,
            ),
            (&[week, ("retention.bytes", "lots")], span, 0),
        ];
        for (index, (configs, span, warnings)) in cases.into_iter().enumerate() {
            let found = check_input_retention("in", &found_with(1, 1, configs), span);
            assert_eq!(found.len(), warnings, "case {index}: {found:?}");
        }
    }
}

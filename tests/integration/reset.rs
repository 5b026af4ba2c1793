//! Replay after a group offset reset, against the real broker: a reset made with Kafka's own
//! `kafka-consumer-groups --reset-offsets` and one made with `streamagg reset` are each followed by
//! the processor on its old state dirs, which must process the input again from the reset position
//! and emit every window again (exactly once more under exactly-once; identical copies allowed under
//! at-least-once), with the late and DLQ copies forwarded again. `streamagg reset` is refused while
//! the group has a member, and `--dry-run` commits nothing.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use streamagg::codec::Format;
use streamagg::reader::{group_lag, RawRecord};

use crate::common::{brokers, kafka_settings, read_all, streamagg, wait_for_records};
use crate::dataset::index_of;
use crate::oracle::{assert_output_matches, Delivery};
use crate::scenario::{check_alive, wait_until_assigned, Scenario};

/// The records of `topic` that are not in `before` (an earlier read of it).
fn records_since(topic: &str, before: &[RawRecord]) -> Vec<RawRecord> {
    let seen: BTreeSet<(i32, i64)> = before.iter().map(|r| (r.partition, r.offset)).collect();
    read_all(topic)
        .into_iter()
        .filter(|r| !seen.contains(&(r.partition, r.offset)))
        .collect()
}

/// The group's committed offset on each partition of `topic` (`None`: no commit).
fn committed(group: &str, topic: &str) -> Vec<Option<i64>> {
    group_lag(&kafka_settings(), group, &[topic.to_owned()])
        .unwrap_or_else(|e| panic!("the offsets of {group}: {e}"))
        .iter()
        .map(|l| l.committed)
        .collect()
}

/// Kafka's own `kafka-consumer-groups.sh` (its `ConsumerGroupCommand`), from the distribution
/// `scripts/kafka` installed: `$STREAMAGG_CACHE` (default `~/.cache/streamagg`) `/kafka-<version>`.
fn kafka_consumer_groups(args: &[&str]) -> Output {
    let cache = std::env::var("STREAMAGG_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/streamagg",
            std::env::var("HOME").expect("HOME is set")
        )
    });
    let version = std::env::var("KAFKA_VERSION").unwrap_or_else(|_| "4.1.1".to_owned());
    let libs = format!("{cache}/kafka-{version}/libs");
    assert!(
        std::path::Path::new(&libs).is_dir(),
        "Kafka's tools are not in {libs} (`scripts/kafka up` installs them)"
    );
    Command::new("java")
        .args(["-Xmx256m", "-cp", &format!("{libs}/*")])
        .arg("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
        .args(["--bootstrap-server", &brokers()])
        .args(args)
        .output()
        .expect("java runs")
}

/// Runs the first pass over the whole dataset with the instances `instances` (one state dir
/// each), stops them, and checks it against the oracle; returns the output as read.
fn first_pass(scenario: &Scenario, instances: &[&str], delivery: Delivery) -> Vec<RawRecord> {
    scenario.preload(scenario.all());
    let mut running: Vec<_> = instances.iter().map(|i| scenario.start(i)).collect();
    for process in &mut running {
        wait_until_assigned(process, Duration::from_secs(60));
    }
    scenario.wait_for_all(
        &mut running.iter_mut().collect::<Vec<_>>(),
        Duration::from_secs(90),
    );
    for process in &mut running {
        process.stop_gracefully();
    }
    let output = read_all(&scenario.topics.output.name);
    assert_output_matches(scenario.format, &output, &scenario.expected(), delivery);
    output
}

/// After the reset: `instances` start again on their old state dirs, one after the other; the
/// output gains every
/// window of the oracle once more (identical copies allowed under at-least-once), and the late and
/// DLQ topics gain their copies again. Returns the logs.
fn replay_emits_every_window_again(
    scenario: &Scenario,
    instances: &[&str],
    before: &[RawRecord],
    delivery: Delivery,
) -> Vec<String> {
    let topics = &scenario.topics;
    let (late_before, dlq_before) = (read_all(&topics.late.name), read_all(&topics.dlq.name));
    let expected = scenario.expected();
    // One after the other: the first takes every partition, the next ones what the group moves.
    let mut running: Vec<_> = instances
        .iter()
        .map(|i| scenario.start_assigned(i, Duration::from_secs(60)))
        .collect();
    let output = wait_for_records(
        &topics.output.name,
        before.len() + expected.windows.len(),
        Duration::from_secs(90),
        || check_alive(&mut running.iter_mut().collect::<Vec<_>>()),
    );
    let mut resets = 0.0;
    for process in &mut running {
        // Counters are published once a second.
        std::thread::sleep(Duration::from_millis(1_200));
        let addr = process.telemetry_addr(Duration::from_secs(10));
        resets += crate::common::metric_sum(addr, "streamagg_partition_resets_total");
    }
    let logs: Vec<String> = running.iter().map(|p| p.log()).collect();
    for process in &mut running {
        process.stop_gracefully();
    }
    assert!(
        output.len() >= before.len() + expected.windows.len(),
        "{} windows after the reset, {} expected: the reset was not processed again; logs:\n{}",
        output.len() - before.len(),
        expected.windows.len(),
        logs.join("\n---\n")
    );
    let again = records_since(&topics.output.name, before);
    assert_output_matches(scenario.format, &again, &expected, delivery);
    for (topic, before, expected) in [
        (&topics.late.name, &late_before, &expected.late),
        (&topics.dlq.name, &dlq_before, &expected.invalid),
    ] {
        let got: Vec<usize> = records_since(topic, before).iter().map(index_of).collect();
        let distinct: BTreeSet<usize> = got.iter().copied().collect();
        assert_eq!(&distinct, expected, "{topic} after the reset");
        if delivery == Delivery::ExactlyOnce {
            assert_eq!(got.len(), expected.len(), "{topic}: duplicates {got:?}");
        }
    }
    assert!(resets >= 1.0, "streamagg_partition_resets_total = {resets}");
    logs
}

fn a_reset_with_kafkas_own_tool(guarantee: &str, delivery: Delivery, seed: u64) {
    let mut scenario = Scenario::new(&format!("kreset-{guarantee}"), Format::Json, 2, seed, 1_500);
    scenario.set("--guarantee", guarantee);
    let first = first_pass(&scenario, &["s"], delivery);
    let input = scenario.topics.input.name.clone();
    assert!(committed(&scenario.group, &input)
        .iter()
        .all(|c| c > &Some(0)));

    let reset = kafka_consumer_groups(&[
        "--group",
        &scenario.group,
        "--topic",
        &input,
        "--reset-offsets",
        "--to-earliest",
        "--execute",
    ]);
    assert!(
        reset.status.success(),
        "kafka-consumer-groups --reset-offsets: {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert_eq!(committed(&scenario.group, &input), [Some(0), Some(0)]);

    let logs = replay_emits_every_window_again(&scenario, &["s"], &first, delivery);
    assert!(
        logs[0].contains("resume=\"replay\"")
            && logs[0].contains("forget_local: true, by: Foreign")
            && logs[0].contains("was not committed by streamagg"),
        "the instance saw a commit it did not write behind its state, and dropped the state; log:\n{}",
        logs[0]
    );
}

#[test]
fn a_group_reset_with_kafkas_own_tool_is_processed_again_not_overridden_by_local_state() {
    a_reset_with_kafkas_own_tool("exactly-once", Delivery::ExactlyOnce, 211);
}

#[test]
fn a_group_reset_with_kafkas_own_tool_is_processed_again_under_at_least_once() {
    a_reset_with_kafkas_own_tool("at-least-once", Delivery::AtLeastOnce, 212);
}

/// `streamagg reset` on a group of two instances, each with local state of the first pass: on
/// their next start both drop it, wherever the group hands their partitions.
fn streamagg_reset(guarantee: &str, delivery: Delivery, seed: u64) {
    let mut scenario = Scenario::new(&format!("sreset-{guarantee}"), Format::Avro, 4, seed, 3_000);
    scenario.set("--guarantee", guarantee);
    let first = first_pass(&scenario, &["a", "b"], delivery);
    let input = scenario.topics.input.name.clone();
    let before = committed(&scenario.group, &input);
    assert!(before.iter().all(|c| c > &Some(0)), "{before:?}");

    let args = [
        "reset",
        "--brokers",
        &brokers(),
        "--group",
        &scenario.group,
        "--input",
        &input,
    ];
    let dry = streamagg(&[&args[..], &["--to-earliest", "--dry-run"]].concat());
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    for (partition, offset) in before.iter().enumerate() {
        let line = format!("{input}[{partition}]: {} → 0", offset.expect("committed"));
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    assert_eq!(
        committed(&scenario.group, &input),
        before,
        "a dry run commits nothing"
    );

    let reset = streamagg(&[&args[..], &["--to-earliest"]].concat());
    assert!(
        reset.status.success(),
        "streamagg reset: {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert_eq!(committed(&scenario.group, &input), [Some(0); 4]);

    let logs = replay_emits_every_window_again(&scenario, &["a", "b"], &first, delivery);
    let all = logs.join("\n");
    // `a` starts first and takes every partition: it drops its state of the (at least two) it
    // owned at the end of the first pass. `b` then gets some of them back: its state of them is of
    // the generation before the reset, whatever the group commit's offset, and is never continued.
    let dropped = logs[0].matches("forget_local: true, by: Streamagg").count();
    assert!(
        dropped >= 2 && logs[0].contains("the group was reset by `streamagg reset`"),
        "a saw the reset and dropped its old state ({dropped} partitions); logs:\n{all}"
    );
    assert!(
        !crate::scenario::assigned_partitions(&logs[1]).is_empty()
            && !logs[1].contains("resume=\"local\""),
        "b continued none of its old state; log:\n{}",
        logs[1]
    );
}

#[test]
fn streamagg_reset_makes_every_instances_state_obsolete_and_replays_exactly_once() {
    streamagg_reset("exactly-once", Delivery::ExactlyOnce, 213);
}

#[test]
fn streamagg_reset_replays_under_at_least_once() {
    streamagg_reset("at-least-once", Delivery::AtLeastOnce, 214);
}

#[test]
fn streamagg_reset_is_refused_while_the_group_has_a_member_and_a_dry_run_commits_nothing() {
    let scenario = Scenario::new("reset-busy", Format::Json, 2, 215, 600);
    scenario.preload(scenario.all());
    let input = scenario.topics.input.name.clone();
    let mut running = scenario.start_assigned("s", Duration::from_secs(60));
    wait_for_records(
        &scenario.topics.output.name,
        1,
        Duration::from_secs(60),
        || check_alive(&mut [&mut running]),
    );
    // Let at least one checkpoint reach the group.
    std::thread::sleep(Duration::from_secs(2));
    let before = committed(&scenario.group, &input);
    let args = [
        "reset",
        "--brokers",
        &brokers(),
        "--group",
        &scenario.group,
        "--input",
        &input,
    ];

    let refused = streamagg(&[&args[..], &["--to-earliest"]].concat());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("streamagg: error:"))
        .collect();
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&scenario.group)
            && errors[0].contains("1 active member")
            && errors[0].contains("streamagg@"),
        "the refusal names the group and its member: {stderr}"
    );

    // A dry run shows the plan while the group runs, and says it would be refused.
    let dry = streamagg(&[&args[..], &["--to-offset", "3", "--dry-run"]].concat());
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        text.contains(&format!("{input}[0]: ")) && text.contains(" → 3\n"),
        "{text}"
    );
    assert!(text.contains("would be refused"), "{text}");
    running.stop_gracefully();
    let stopped = committed(&scenario.group, &input);
    assert!(
        stopped.iter().zip(&before).all(|(now, then)| now >= then),
        "the refused reset moved nothing back: {before:?} then {stopped:?}"
    );

    // Stopped: a dry run to a time after every record plans the log ends, and commits nothing.
    let ends: Vec<i64> = group_lag(
        &kafka_settings(),
        &scenario.group,
        std::slice::from_ref(&input),
    )
    .expect("lag")
    .iter()
    .map(|l| l.end)
    .collect();
    let dry = streamagg(
        &[
            &args[..],
            &["--to-datetime", "2100-01-01T00:00:00Z", "--dry-run"],
        ]
        .concat(),
    );
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    for (partition, (end, now)) in ends.iter().zip(&stopped).enumerate() {
        let now = now.map_or("-".to_owned(), |c| c.to_string());
        let line = format!("{input}[{partition}]: {now} → {end}\n");
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    assert!(!text.contains("refused"), "{text}");
    assert_eq!(committed(&scenario.group, &input), stopped);

    // Misconfiguration: one line and exit 1, nothing committed.
    for bad in [
        vec!["--to-offset", "-1"],
        vec!["--to-datetime", "yesterday"],
        vec!["--to-earliest", "--to-offset", "3"],
    ] {
        let out = streamagg(&[&args[..], &bad[..]].concat());
        assert!(
            matches!(out.status.code(), Some(code) if code != 0),
            "{bad:?} is refused"
        );
        assert_eq!(committed(&scenario.group, &input), stopped, "{bad:?}");
    }
    let missing = streamagg(&[
        "reset",
        "--brokers",
        &brokers(),
        "--group",
        &scenario.group,
        "--input",
        "it-no-such-topic-reset",
        "--to-earliest",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // A mistyped group (no commit on the input) is refused, not "reset" into a new group while
    // the real one goes on from its local state.
    let typo = format!("{}-typo", scenario.group);
    let mistyped = streamagg(&[
        "reset",
        "--brokers",
        &brokers(),
        "--group",
        &typo,
        "--input",
        &input,
        "--to-earliest",
    ]);
    let stderr = String::from_utf8_lossy(&mistyped.stderr);
    assert_eq!(mistyped.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&typo) && stderr.contains("no committed offsets"),
        "{stderr}"
    );
    assert!(
        committed(&typo, &input).iter().all(Option::is_none),
        "nothing committed for the mistyped group"
    );
}

//! One source of truth for deployment: the config file the Helm chart renders (with the settings a
//! user would give it) and the one docker/compose.yaml mounts each drive a real processor through the
//! real broker, and its output equals the oracle. `scripts/check-helm` holds the rest of the chart
//! to its promises.

use std::process::Command;
use std::time::Duration;

use streamagg::codec::Format;

use crate::common::{brokers, ProcessorProcess};
use crate::oracle::{Delivery, MIN_VALUE};
use crate::scenario::Scenario;

/// The `streamagg.toml` of the chart's ConfigMap, rendered by `helm template` for `release`.
fn rendered_config(helm: &str, release: &str, sets: &[String]) -> String {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/streamagg");
    let mut command = Command::new(helm);
    command.args([
        "template",
        release,
        chart,
        "--show-only",
        "templates/configmap.yaml",
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("helm runs");
    assert!(output.status.success(), "helm template: {output:?}");
    let manifest = String::from_utf8(output.stdout).expect("utf8");
    // The file is the block scalar under `streamagg.toml: |`, indented by four spaces.
    manifest
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("streamagg.toml:"))
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_config_file_the_helm_chart_renders_runs_a_real_processor() {
    let helm = std::env::var("STREAMAGG_TEST_HELM").unwrap_or_else(|_| {
        format!(
            "{}/.cache/streamagg/bin/helm",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&helm).exists(),
        "helm not found at {helm} (scripts/test builds it)"
    );
    let scenario = Scenario::new("chart", Format::Json, 4, 401, 6_000);
    scenario.preload(scenario.all());
    let topics = &scenario.topics;

    // The release names the consumer group: a random one, like every test's group.
    let release = format!("it{:08x}", rand::random::<u32>());
    let config = rendered_config(
        &helm,
        &release,
        &[
            format!("kafka.brokers={}", brokers()),
            format!("processor.input={{{}}}", topics.input.name),
            format!("processor.output={}", topics.output.name),
            format!("processor.lateTopic={}", topics.late.name),
            format!("processor.dlqTopic={}", topics.dlq.name),
            format!("processor.minValue={MIN_VALUE}"),
            "processor.checkpointInterval=200ms".into(),
        ],
    );
    assert!(config.contains("static_membership = true"), "{config}");
    assert!(
        config.contains(&format!("group = \"{release}-streamagg\"")),
        "{config}"
    );
    let path = scenario.dir.path().join("streamagg.toml");
    std::fs::write(&path, &config).expect("config written");
    // What the pod adds: its name as the instance id, and a state dir (the chart's is the volume).
    let instance = format!("{release}-streamagg-0");
    let processor = ProcessorProcess::start(&[
        "--config",
        path.to_str().expect("utf8"),
        "--instance-id",
        &instance,
        "--state-dir",
        &scenario.state_dir("state"),
    ]);
    run_and_match_the_oracle(&scenario, processor);
}

/// The processor of `docker/compose.yaml` runs from `docker/streamagg.toml`: that very file, with
/// the test's broker, topics, group and state dir as flags over it.
#[test]
fn the_config_file_of_docker_compose_runs_a_real_processor() {
    let mut scenario = Scenario::new("compose", Format::Json, 4, 402, 6_000);
    scenario.preload(scenario.all());
    // The oracle's settings (filter, window, grace) and the test's topics, as flags over the file.
    scenario.set(
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/docker/streamagg.toml"),
    );
    let processor = scenario.start("state");
    run_and_match_the_oracle(&scenario, processor);
}

/// Lets `processor` run until it has emitted every window the oracle expects, stops it, and holds
/// the output, late and DLQ topics to the oracle (exactly once).
fn run_and_match_the_oracle(scenario: &Scenario, mut processor: ProcessorProcess) {
    let output = scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(120));
    processor.stop_gracefully();
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
}

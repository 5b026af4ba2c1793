//! Failover on a replicated cluster (`scripts/kafka --cluster`: three KRaft nodes, replication 3,
//! `min.insync.replicas` 2): the leader of an input partition, the transaction coordinator and the
//! group coordinator killed with -9 at the moment that hurts, two of three nodes stopped (below the
//! minimum in-sync replicas), and a rolling restart of every node. Each under exactly-once, the
//! output read `read_committed` and held to the oracle: every window once, nothing else.
//!
//! These run apart from the other tests, against the cluster: `scripts/test` starts it and runs
//! `cargo test --test integration cluster:: -- --ignored` with `STREAMAGG_TEST_BROKERS` set to the
//! cluster and `STREAMAGG_TEST_REPLICATION_FACTOR=3`. Run against anything else they fail at once.

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use streamagg::codec::Format;

use crate::common::{brokers, replication_factor};
use crate::oracle::Delivery;
use crate::scenario::{check_alive, Scenario, FAST_FAILOVER};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-cluster");

/// The cluster the tests run against, checked to be the one `scripts/kafka --cluster` runs.
struct Cluster;

impl Cluster {
    fn checked() -> Cluster {
        let env = Command::new(SCRIPT)
            .arg("env")
            .output()
            .expect("scripts/kafka-cluster runs");
        let env = String::from_utf8_lossy(&env.stdout);
        let cluster = env
            .lines()
            .find_map(|line| line.strip_prefix("export STREAMAGG_TEST_CLUSTER_BROKERS="))
            .expect("scripts/kafka-cluster env names the cluster");
        assert_eq!(
            brokers(),
            cluster,
            "the cluster tests need STREAMAGG_TEST_BROKERS={cluster} (scripts/kafka --cluster up; see scripts/test)"
        );
        assert_eq!(
            replication_factor(),
            3,
            "the cluster tests need STREAMAGG_TEST_REPLICATION_FACTOR=3"
        );
        let status = Command::new(SCRIPT)
            .arg("status")
            .status()
            .expect("scripts/kafka-cluster runs");
        assert!(status.success(), "all three nodes must run at the start");
        Cluster
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(SCRIPT)
            .args(args)
            .output()
            .expect("scripts/kafka-cluster runs");
        assert!(
            output.status.success(),
            "scripts/kafka-cluster {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn node(&self, action: &str, node: i32) {
        self.run(&[action, &node.to_string()]);
    }

    /// The node that leads `topic`'s `partition`, from the cluster's metadata.
    fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("metadata client");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(20))
            .expect("metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .expect("the partition is in the metadata")
    }

    /// The node that coordinates transactional id `id` or group `id` (`kind`: transaction, group).
    fn coordinator(&self, kind: &str, id: &str) -> i32 {
        let answer = self.run(&["coordinator", kind, id]);
        answer
            .parse()
            .unwrap_or_else(|_| panic!("coordinator of {kind} {id}: '{answer}'"))
    }

    /// Every node running again (a test that failed half-way must not leave one down).
    fn restore(&self) {
        for node in 1..=3 {
            self.node("start", node);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=3 {
            let _ = Command::new(SCRIPT)
                .args(["resume", &node.to_string()])
                .output();
            let _ = Command::new(SCRIPT)
                .args(["start", &node.to_string()])
                .output();
        }
    }
}

/// A four-partition scenario of 12,000 events under exactly-once with fast failover, its traffic
/// spread over `seconds` so that faults land mid-stream.
fn scenario(purpose: &str, seed: u64) -> Scenario {
    let mut scenario = Scenario::new(purpose, Format::Avro, 4, seed, 12_000);
    scenario
        .config(FAST_FAILOVER)
        .set("--guarantee", "exactly-once");
    scenario
}

/// Waits for every window, then stops the processors and holds the output to the oracle.
fn finish(scenario: &Scenario, mut processors: Vec<crate::common::ProcessorProcess>) {
    let mut running: Vec<&mut crate::common::ProcessorProcess> = processors.iter_mut().collect();
    let output = scenario.wait_for_all(&mut running, Duration::from_secs(240));
    for processor in processors.iter_mut() {
        processor.stop_gracefully();
        // What the processor went through (shown with --nocapture, and on failure).
        for line in processor.log().lines() {
            if line.contains("WARN streamagg") || line.contains("stopped counts") {
                eprintln!("{line}");
            }
        }
    }
    scenario.assert_matches(Delivery::ExactlyOnce, &output);
}

#[test]
#[ignore = "cluster: scripts/test runs it against scripts/kafka --cluster"]
fn cluster_exactly_once_survives_kill_9_of_an_input_partition_leader() {
    let cluster = Cluster::checked();
    let scenario = scenario("cl-leader", 161);
    let traffic = scenario.traffic(scenario.all(), 30, Duration::from_millis(300));
    let processor = scenario.start_assigned("a", Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(3));
    let leader = cluster.leader_of(&scenario.topics.input.name, 0);
    cluster.node("kill", leader);
    std::thread::sleep(Duration::from_secs(4));
    cluster.node("start", leader);
    traffic.join().expect("traffic written");
    finish(&scenario, vec![processor]);
    cluster.restore();
}

#[test]
#[ignore = "cluster: scripts/test runs it against scripts/kafka --cluster"]
fn cluster_exactly_once_survives_kill_9_of_the_transaction_coordinator_mid_transaction() {
    let cluster = Cluster::checked();
    let mut scenario = scenario("cl-txn", 162);
    scenario.set("--instance-id", "txn-a");
    let traffic = scenario.traffic(scenario.all(), 30, Duration::from_millis(300));
    let processor = scenario.start_assigned("a", Duration::from_secs(90));
    // Traffic flows, so a transaction is open nearly all the time (one per checkpoint interval).
    std::thread::sleep(Duration::from_secs(3));
    let id = format!("streamagg-{}-txn-a", scenario.group);
    let coordinator = cluster.coordinator("transaction", &id);
    cluster.node("kill", coordinator);
    std::thread::sleep(Duration::from_secs(4));
    cluster.node("start", coordinator);
    traffic.join().expect("traffic written");
    finish(&scenario, vec![processor]);
    cluster.restore();
}

#[test]
#[ignore = "cluster: scripts/test runs it against scripts/kafka --cluster"]
fn cluster_exactly_once_survives_kill_9_of_the_group_coordinator_during_a_rebalance() {
    let cluster = Cluster::checked();
    let scenario = scenario("cl-group", 163);
    let traffic = scenario.traffic(scenario.all(), 30, Duration::from_millis(300));
    let first = scenario.start_assigned("a", Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(2));
    let coordinator = cluster.coordinator("group", &scenario.group);
    // A second instance joins: the group rebalances; the coordinator dies in the middle of it.
    let second = scenario.start("b");
    std::thread::sleep(Duration::from_millis(300));
    cluster.node("kill", coordinator);
    std::thread::sleep(Duration::from_secs(4));
    cluster.node("start", coordinator);
    traffic.join().expect("traffic written");
    finish(&scenario, vec![first, second]);
    cluster.restore();
}

#[test]
#[ignore = "cluster: scripts/test runs it against scripts/kafka --cluster"]
fn cluster_below_min_insync_replicas_the_processor_waits_and_resumes() {
    let cluster = Cluster::checked();
    let scenario = scenario("cl-isr", 164);
    let half = scenario.inputs.len() / 2;
    scenario
        .traffic(0..half, 10, Duration::from_millis(200))
        .join()
        .expect("first half written");
    let mut processor = scenario.start_assigned("a", Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(2));
    // Two of three nodes down: no partition has two in-sync replicas, so no write is acknowledged.
    cluster.node("stop", 2);
    cluster.node("stop", 3);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(20) {
        check_alive(&mut [&mut processor]);
        std::thread::sleep(Duration::from_secs(1));
    }
    cluster.node("start", 2);
    cluster.node("start", 3);
    scenario
        .traffic(half..scenario.inputs.len(), 10, Duration::from_millis(200))
        .join()
        .expect("second half written");
    finish(&scenario, vec![processor]);
    cluster.restore();
}

#[test]
#[ignore = "cluster: scripts/test runs it against scripts/kafka --cluster"]
fn cluster_exactly_once_through_a_rolling_restart_of_every_node() {
    let cluster = Cluster::checked();
    let scenario = scenario("cl-rolling", 165);
    let traffic = scenario.traffic(scenario.all(), 60, Duration::from_millis(300));
    let processor = scenario.start_assigned("a", Duration::from_secs(90));
    for node in 1..=3 {
        std::thread::sleep(Duration::from_secs(2));
        cluster.node("stop", node);
        cluster.node("start", node);
    }
    traffic.join().expect("traffic written");
    finish(&scenario, vec![processor]);
    cluster.restore();
}

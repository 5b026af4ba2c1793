//! Observability against real parts: a real Prometheus (Debian's `prometheus`) scrapes a real
//! processor working through the real broker, and every PromQL expression of the Grafana dashboard
//! must be valid and return series; the alert rules must load and evaluate. The probes: `/readyz`
//! waits for the assignment, and `/healthz` fails while the poll loop is stalled by a frozen broker.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamagg::codec::Format;

use crate::common::{http_get, kafka, streamagg, ProcessorProcess, TestTopic};
use crate::scenario::random_group;
use crate::scenario::Scenario;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A Prometheus server on a free loopback port, stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, with the project's alert rules loaded.
    fn start(target: SocketAddr) -> Prometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "prometheus is installed (scripts/test installs Debian's `prometheus` package)",
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {REPO}/docker/prometheus/rules.yml\n\
                 scrape_configs:\n  - job_name: streamagg\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config written");
        let addr = free_loopback_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let started = Instant::now();
        while !matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "prometheus on {addr} not ready within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// Evaluates an instant query: Ok(number of series) or Err(why it failed).
    fn query(&self, expr: &str) -> Result<usize, String> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr)))
            .map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body:.200}"))?;
        if json["status"] != "success" {
            return Err(format!("HTTP {status}: {}", json["error"]));
        }
        Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound")
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters pass).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the dashboard, with Grafana's variables filled in as Grafana would
/// for "all jobs, all instances" at a 1 s scrape interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = format!("{REPO}/docker/grafana/dashboards/streamagg.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard readable"))
            .expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let filled = expr
                .replace("$__rate_interval", "30s")
                .replace("$job", ".+")
                .replace("$instance", ".+");
            assert!(!filled.contains('$'), "unknown variable in {expr}");
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            queries.push((title, filled));
        }
    }
    queries
}

#[test]
fn a_real_prometheus_gets_series_for_every_dashboard_query_and_loads_the_alert_rules() {
    let mut scenario = Scenario::new("observe", Format::Json, 4, 301, 6_000);
    scenario.preload(scenario.all());
    // Lag statistics every second instead of every 5 s, so the test need not wait for them.
    scenario.config("[kafka.consumer]\n\"statistics.interval.ms\" = 1000\n");
    let mut processor = scenario.start("state");
    let target = processor.telemetry_addr(Duration::from_secs(30));
    let prometheus = Prometheus::start(target);
    scenario.wait_for_all(&mut [&mut processor], Duration::from_secs(120));
    // Enough scrapes after the work for every rate() over 30 s to have samples.
    let started = Instant::now();
    while prometheus.query("count_over_time(streamagg_windows_emitted_total[30s]) >= 5") != Ok(1) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "prometheus did not scrape the processor at {target}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard has its panels");
    let failures: Vec<String> = queries
        .iter()
        .filter_map(|(panel, expr)| match prometheus.query(expr) {
            Ok(0) => Some(format!("{panel}: no series: {expr}")),
            Ok(_) => None,
            Err(e) => Some(format!("{panel}: invalid: {expr}: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "dashboard queries that fail against real metrics:\n{}",
        failures.join("\n")
    );

    let (_, rules) = http_get(prometheus.addr, "/api/v1/rules").expect("rules API");
    let rules: serde_json::Value = serde_json::from_str(&rules).expect("rules JSON");
    let loaded: Vec<(&str, &str)> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["health"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(loaded.len() >= 8, "every alert rule loaded: {loaded:?}");
    // Evaluated at least once, without errors, against the real series.
    let started = Instant::now();
    loop {
        let (_, rules) = http_get(prometheus.addr, "/api/v1/rules").expect("rules API");
        let rules: serde_json::Value = serde_json::from_str(&rules).expect("rules JSON");
        let healths: Vec<String> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .map(|r| format!("{}={}", r["name"], r["health"]))
            .collect();
        if healths.iter().all(|h| h.ends_with("=\"ok\"")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "alert rules do not all evaluate cleanly: {healths:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let (status, metrics) = http_get(target, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("streamagg_emit_latency_seconds_bucket{le=\"0.5\"}"),
        "histograms have explicit buckets, not summaries"
    );
    processor.stop_gracefully();
}

/// The value of an unlabelled metric on `addr`'s `/metrics`; 0 while it is not exported yet.
fn metric_value(addr: SocketAddr, name: &str) -> f64 {
    let (_, metrics) = http_get(addr, "/metrics").expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Status codes of `path` until `until` returns true for one, or the deadline passes.
fn watch_probe(
    addr: SocketAddr,
    path: &str,
    deadline: Duration,
    until: impl Fn(u16) -> bool,
) -> Vec<u16> {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        if let Ok((status, _)) = http_get(addr, path) {
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if until(status) {
                return seen;
            }
        }
        assert!(
            started.elapsed() < deadline,
            "{path} on {addr} never reached the expected state; saw {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn readyz_answers_only_once_partitions_are_assigned() {
    let scenario = Scenario::with_inputs("ready", Format::Json, 2, Vec::new());
    let mut processor = scenario.start("state");
    let addr = processor.telemetry_addr(Duration::from_secs(30));
    let seen = watch_probe(addr, "/readyz", Duration::from_secs(60), |s| s == 200);
    assert_eq!(seen, vec![503, 200], "not ready, then ready");
    assert!(
        processor.log().contains("assigned"),
        "ready implies assigned:\n{}",
        processor.log()
    );
    assert_eq!(http_get(addr, "/healthz").expect("healthz").0, 200);
    // The container's health check is the binary itself.
    let probe = streamagg(&["probe", "readyz", "--metrics-addr", &addr.to_string()]);
    assert!(probe.status.success(), "probe readyz: {probe:?}");
    processor.stop_gracefully();
    let gone = streamagg(&["probe", "healthz", "--metrics-addr", &addr.to_string()]);
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(!gone.status.success(), "nothing serves {addr} any more");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("streamagg: error: cannot reach"),
        "{stderr}"
    );
}

/// Freezes the shared broker, so `scripts/test` runs it on its own after the other tests.
/// A processor working through a backlog under at-least-once with `stall_timeout`, once records
/// flow; with its telemetry address and what must live as long as it.
fn processor_with_records_flowing(
    stall_timeout: &str,
) -> (
    ProcessorProcess,
    SocketAddr,
    [TestTopic; 2],
    tempfile::TempDir,
) {
    let input = TestTopic::create("stall-in", 4);
    let output = TestTopic::create("stall-out", 4);
    // A backlog, so the processor has work in flight when the broker freezes: its next checkpoint
    // (a transaction commit) then blocks, and with it the poll loop.
    let produced = streamagg(&[
        "produce",
        "--brokers",
        &crate::common::brokers(),
        "--topic",
        &input.name,
        "--count",
        "1000000",
        "--sources",
        "1000",
        "--format",
        "avro",
    ]);
    assert!(produced.status.success(), "preload: {produced:?}");
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state");
    let mut processor = ProcessorProcess::start(&[
        "--brokers",
        &crate::common::brokers(),
        "--input",
        &input.name,
        "--output",
        &output.name,
        "--group",
        &random_group(),
        "--state-dir",
        state.to_str().expect("utf8"),
        "--input-format",
        "avro",
        // Checkpoints far apart compared with processing: whenever the broker freezes, records
        // processed since the last checkpoint are waiting, and the next checkpoint blocks on them.
        // At-least-once checkpoints on the interval only; exactly-once also commits as soon as a
        // caught-up instance has closed windows, which may leave nothing waiting at the freeze.
        "--guarantee",
        "at-least-once",
        "--checkpoint-interval",
        "2s",
        "--stall-timeout",
        stall_timeout,
    ]);
    let addr = processor.telemetry_addr(Duration::from_secs(30));
    watch_probe(addr, "/readyz", Duration::from_secs(60), |s| s == 200);
    // Ready means assigned, not yet fetching: freeze the broker only once records flow (then the
    // consumer's prefetched queue keeps the processor changing state after the freeze).
    let started = Instant::now();
    while metric_value(addr, "streamagg_records_consumed_total") < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no record consumed within 60 s; log:\n{}",
            processor.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    (processor, addr, [input, output], dir)
}

/// `/readyz`'s answer asked between two `/healthz` answers of 503 less than `stall_timeout` apart.
/// The loop did not poll in between (a poll makes it live, and it counts as stalled again only a
/// whole stall timeout later), so `/readyz` was asked while the loop was stalled. With the broker
/// frozen the loop may still poll now and then: a bounded wait inside a checkpoint (the 2 s
/// partition-count probe) returns, the loop polls once and stalls again on the next call. So the
/// question is asked again until one falls inside a stall, within `deadline`.
fn readyz_while_stalled(addr: SocketAddr, stall_timeout: Duration, deadline: Duration) -> u16 {
    let started = Instant::now();
    let status = |path| http_get(addr, path).map(|(status, _)| status).ok();
    loop {
        let asked = Instant::now();
        let before = status("/healthz");
        let ready = status("/readyz");
        let after = status("/healthz");
        if let (Some(503), Some(ready), Some(503)) = (before, ready, after) {
            if asked.elapsed() < stall_timeout {
                return ready;
            }
        }
        assert!(
            started.elapsed() < deadline,
            "no /readyz answer fell between two /healthz answers of 503 within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "freezes the shared broker: scripts/test runs it alone, after the others"]
fn exclusive_healthz_fails_while_a_frozen_broker_stalls_the_poll_loop() {
    let (mut processor, addr, _topics, _dir) = processor_with_records_flowing("2s");
    kafka("pause");
    let stalled = std::panic::catch_unwind(|| {
        let seen = watch_probe(addr, "/healthz", Duration::from_secs(30), |s| s == 503);
        // Keep the broker frozen until the watchdog (which looks every 200 ms) has reported it too.
        let started = Instant::now();
        while !processor.log().contains("the poll loop is stalled") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the watchdog reports the stall"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Asked while still stalled: once the broker thaws, the loop polls and is ready again
        // within milliseconds.
        let ready = readyz_while_stalled(addr, Duration::from_secs(2), Duration::from_secs(20));
        (seen, ready)
    });
    kafka("resume");
    let (seen, ready) = stalled.unwrap_or_else(|_| {
        panic!(
            "/healthz kept answering 200 with the broker frozen; log:\n{}",
            processor.log()
        )
    });
    assert_eq!(seen.last(), Some(&503));
    assert_eq!(ready, 503, "a stalled instance is not ready either");
    watch_probe(addr, "/healthz", Duration::from_secs(90), |s| s == 200);
    assert!(
        metric_value(addr, "streamagg_poll_loop_stalls_total") >= 1.0,
        "the stall was counted"
    );
    assert!(processor.log().contains("the poll loop is stalled"));
    processor.stop_gracefully();
}

/// A poll loop that stays stalled (here: the broker frozen for longer than 4 stall timeouts and the
/// 60 s floor) makes the process exit rather than hang for good: librdkafka's
/// `send_offsets_to_transaction` has been seen to wait forever for a coordinator that went away
/// (the three-node cluster tests). The restart resumes from the last checkpoint.
#[test]
#[ignore = "exclusive: freezes the shared broker; scripts/test runs it alone"]
fn exclusive_a_poll_loop_stalled_for_good_exits_the_process() {
    let (mut processor, addr, _topics, _dir) = processor_with_records_flowing("1s");
    kafka("pause");
    let exited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        watch_probe(addr, "/healthz", Duration::from_secs(30), |s| s == 503);
        processor.wait(Duration::from_secs(120))
    }));
    kafka("resume");
    let status = exited.unwrap_or_else(|_| panic!("it did not exit; log:\n{}", processor.log()));
    assert_eq!(status.code(), Some(1), "exit 1; log:\n{}", processor.log());
    assert!(
        processor
            .log()
            .contains("the poll loop has been stalled too long"),
        "it says why; log:\n{}",
        processor.log()
    );
}

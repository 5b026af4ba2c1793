//! The harness of the Schema Registry tests: the venv's python, the stand-in registry process,
//! Confluent's Python client, and the generated events with their writer schemas and oracle.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use streamagg::codec::TRAFFIC_EVENT_SCHEMA;

/// The venv python with confluent-kafka, or a failure saying how to get it.
pub fn python() -> String {
    let python = std::env::var("STREAMAGG_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/streamagg/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let works = Command::new(&python)
        .args(["-c", "import confluent_kafka.schema_registry.avro"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "no python with confluent-kafka at {python}: run scripts/test, or set STREAMAGG_TEST_PYTHON \
         to the python `source scripts/lib.sh; ensure_tools_venv` prints"
    );
    python
}

pub fn script(name: &str) -> String {
    format!("{}/tests/registry/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The stand-in registry, on a free loopback port; killed on drop.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    scheme: &'static str,
}

impl Registry {
    pub fn start(python: &str, state: Option<&std::path::Path>) -> Registry {
        Registry::start_with(python, state, None)
    }

    /// With basic auth: `user` and its password.
    pub fn start_with(
        python: &str,
        state: Option<&std::path::Path>,
        auth: Option<(&str, &str)>,
    ) -> Registry {
        Registry::launch(python, state, auth, None)
    }

    /// Over https with the PEM certificate and key `tls`.
    pub fn start_tls(python: &str, tls: (&std::path::Path, &std::path::Path)) -> Registry {
        Registry::launch(python, None, None, Some(tls))
    }

    fn launch(
        python: &str,
        state: Option<&std::path::Path>,
        auth: Option<(&str, &str)>,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Registry {
        let mut command = Command::new(python);
        command.arg(script("registry.py")).args(["--port", "0"]);
        if let Some((cert, key)) = tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if let Some((user, password)) = auth {
            command
                .args(["--user", user])
                .env("REGISTRY_PASSWORD", password);
        }
        if let Some(state) = state {
            command.arg("--state").arg(state);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("the registry starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        // Bounded: the line comes at once, or the process died (EOF).
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("registry output");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("registry did not start: {line:?}"));
        let scheme = if tls.is_some() { "https" } else { "http" };
        Registry {
            child,
            addr,
            scheme,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body) =
            streamagg::telemetry::http_get(self.addr, path, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("registry GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("registry JSON")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The writer schemas upstream evolves through, by name: the original (streamagg's own), + an
/// optional field, + fields reordered and `value` written as `float` (promoted to `double` when
/// read); and an incompatible one without `source`.
pub fn writer_schemas() -> Value {
    let record = |fields: Value| {
        json!({"type": "record", "name": "TrafficEvent", "namespace": "streamagg", "fields": fields})
            .to_string()
    };
    let ts = json!({"type": "long", "logicalType": "timestamp-millis"});
    let region = json!({"name": "region", "type": ["null", "string"], "default": null});
    json!({
        "v1": TRAFFIC_EVENT_SCHEMA,
        "v2": record(json!([{"name": "source", "type": "string"}, {"name": "timestamp", "type": ts},
            {"name": "value", "type": "double"}, region])),
        "v3": record(json!([{"name": "value", "type": "float"}, region,
            {"name": "source", "type": "string"}, {"name": "timestamp", "type": ts}])),
        "v4": record(json!([{"name": "link", "type": "string"}, {"name": "timestamp", "type": ts},
            {"name": "value", "type": "double"}])),
    })
}

/// One generated event: the writer schema it is written with, source, timestamp, value.
pub type Event = (&'static str, String, i64, f64);

/// Seeded events in event-time order over six minutes, mostly v1–v3, some v4.
pub fn events(seed: u64, count: i64) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = 1_764_000_000_000 / 60_000 * 60_000;
    (0..count)
        .map(|i| {
            let version = match rng.random_range(0..100) {
                0..=29 => "v1",
                30..=59 => "v2",
                60..=94 => "v3",
                _ => "v4",
            };
            let source = format!("link-{:02}", rng.random_range(0..12));
            // Quarters below 100: exact as a float, so the promoted v3 values equal the oracle's.
            let value = f64::from(rng.random_range(0..400)) * 0.25;
            (version, source, start + i * 360_000 / count, value)
        })
        .collect()
}

/// The lines `confluent_client.py produce` reads: the events, then a seal per partition 15 minutes
/// later (its window never closes; every other one does).
pub fn produce_lines(events: &[Event], partitions: i32) -> String {
    let mut lines = String::new();
    for (version, source, timestamp, value) in events {
        let name = if *version == "v4" { "link" } else { "source" };
        let mut record = json!({name: source, "timestamp": timestamp, "value": value});
        if *version != "v1" && *version != "v4" {
            record["region"] = json!("eu");
        }
        lines += &json!({"schema": version, "key": source, "value": record}).to_string();
        lines.push('\n');
    }
    let seal_at = events.last().map_or(0, |e| e.2) + 15 * 60_000;
    for partition in 0..partitions {
        let record = json!({"source": "seal", "timestamp": seal_at, "value": 0.0});
        let line = json!({"schema": "v1", "key": "seal", "value": record, "partition": partition});
        lines += &format!("{line}\n");
    }
    lines
}

/// (window_start, source) → (count, sum, min, max) of the events streamagg can read.
pub fn oracle(events: &[Event]) -> BTreeMap<(i64, String), (i64, f64, f64, f64)> {
    let mut windows = BTreeMap::new();
    for (_, source, timestamp, value) in events.iter().filter(|e| e.0 != "v4") {
        let start = timestamp / 60_000 * 60_000;
        let entry = windows.entry((start, source.clone())).or_insert((
            0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ));
        entry.0 += 1;
        entry.1 += value;
        entry.2 = entry.2.min(*value);
        entry.3 = entry.3.max(*value);
    }
    windows
}

pub fn run_python(python: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(python)
        .arg(script("confluent_client.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "confluent_client.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf8")
}

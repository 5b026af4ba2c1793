//! Helpers shared by the integration tests: the real broker's address, topics with random names that
//! are deleted when the test ends, and running the `streamagg` binary.

use std::process::{Command, Output};
use std::time::Duration;

use streamagg::config::cluster::KafkaSettings;
use streamagg::kafka;

/// The broker the tests run against: `STREAMAGG_TEST_BROKERS`, default the one `scripts/kafka up` starts.
pub fn brokers() -> String {
    std::env::var("STREAMAGG_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The replication factor of the tests' topics: `STREAMAGG_TEST_REPLICATION_FACTOR`, default 1 (the
/// single broker); the cluster tests run with 3.
pub fn replication_factor() -> i32 {
    std::env::var("STREAMAGG_TEST_REPLICATION_FACTOR")
        .ok()
        .and_then(|factor| factor.parse().ok())
        .unwrap_or(1)
}

pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings {
        brokers: brokers(),
        timeout: Duration::from_secs(20),
        security: Default::default(),
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(future)
}

/// A topic with a random name, created on the real broker and deleted on drop.
pub struct TestTopic {
    pub name: String,
    /// The cluster (and credentials) it was created with, and is deleted with.
    settings: KafkaSettings,
}

impl TestTopic {
    /// On the test broker.
    pub fn create(purpose: &str, partitions: i32) -> TestTopic {
        TestTopic::create_on(kafka_settings(), purpose, partitions)
    }

    /// On the cluster `settings` names, with its credentials.
    pub fn create_on(settings: KafkaSettings, purpose: &str, partitions: i32) -> TestTopic {
        let name = format!("it-{purpose}-{:016x}", rand::random::<u64>());
        let admin = kafka::admin::admin_client(&settings).expect("admin client");
        let created = block_on(kafka::admin::ensure_topic(
            &admin,
            &settings,
            &name,
            partitions,
            replication_factor(),
        ))
        .unwrap_or_else(|e| {
            panic!(
                "creating {name} on {} failed (is `scripts/kafka up` running?): {e}",
                settings.brokers
            )
        });
        assert!(created, "a random topic name must be new");
        TestTopic { name, settings }
    }

    /// A random topic name on the test broker that is not created here (the code under test is to
    /// create it), deleted on drop like the others.
    pub fn named(purpose: &str) -> TestTopic {
        TestTopic {
            name: format!("it-{purpose}-{:016x}", rand::random::<u64>()),
            settings: kafka_settings(),
        }
    }

    /// On the test broker, with topic configs (e.g. `("max.message.bytes", "100000")`).
    pub fn create_with_config(
        purpose: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> TestTopic {
        let settings = kafka_settings();
        let name = format!("it-{purpose}-{:016x}", rand::random::<u64>());
        match create_topic(&settings, &name, partitions, configs) {
            Ok(true) => TestTopic { name, settings },
            Ok(false) => panic!("a random topic name must be new: {name}"),
            Err(e) => panic!("creating {name} with {configs:?} failed: {e}"),
        }
    }

    /// Sets topic configs on the broker while the topic is in use (AlterConfigs: the configs set
    /// replace every config set before, so pass all the topic should keep).
    pub fn alter_config(&self, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AlterConfig, ResourceSpecifier};
        let admin = kafka::admin::admin_client(&self.settings).expect("admin client");
        let config = configs.iter().fold(
            AlterConfig::new(ResourceSpecifier::Topic(&self.name)),
            |config, (key, value)| config.set(key, value),
        );
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(self.settings.timeout));
        let results = block_on(admin.alter_configs([&config], &options))
            .unwrap_or_else(|e| panic!("altering {} to {configs:?}: {e}", self.name));
        for result in results {
            if let Err((_, code)) = result {
                panic!("altering {} to {configs:?}: {code}", self.name);
            }
        }
    }

    /// Deletes the topic and creates it again under the same name with `partitions` partitions;
    /// returns once the deletion has taken effect and the broker's metadata shows the new topic.
    pub fn recreate(&self, partitions: i32, deadline: Duration) {
        let started = std::time::Instant::now();
        let admin = kafka::admin::admin_client(&self.settings).expect("admin client");
        let partition_count = || {
            kafka::admin::partition_count(admin.inner(), &self.settings, &self.name)
                .unwrap_or_else(|e| panic!("metadata of {}: {e}", self.name))
        };
        let waited = |what: &str| {
            assert!(
                started.elapsed() < deadline,
                "recreating {}: {what} within {deadline:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        block_on(kafka::admin::delete_topics(
            &admin,
            &self.settings,
            &[&self.name],
        ))
        .unwrap_or_else(|e| panic!("deleting {}: {e}", self.name));
        while partition_count().is_some() {
            waited("the deletion did not take effect");
        }
        // The broker may still be removing the old topic: "already exists" or "marked for deletion".
        while !create_topic(&self.settings, &self.name, partitions, &[]).unwrap_or(false) {
            waited("the topic could not be created again");
        }
        while partition_count() != usize::try_from(partitions).ok() {
            waited("the new topic did not appear in the metadata");
        }
    }
}

/// Creates `name` with `configs`: `Ok(true)` if created, `Ok(false)` if it exists already.
fn create_topic(
    settings: &KafkaSettings,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<bool, String> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin = kafka::admin::admin_client(settings).map_err(|e| e.to_string())?;
    let topic = configs.iter().fold(
        NewTopic::new(
            name,
            partitions,
            TopicReplication::Fixed(replication_factor()),
        ),
        |topic, (key, value)| topic.set(key, value),
    );
    let options = AdminOptions::new().operation_timeout(Some(settings.timeout));
    let results = block_on(admin.create_topics([&topic], &options)).map_err(|e| e.to_string())?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(code.to_string()),
        None => Err("no result from the broker".into()),
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        if let Ok(admin) = kafka::admin::admin_client(&self.settings) {
            if let Err(e) = block_on(kafka::admin::delete_topics(
                &admin,
                &self.settings,
                &[&self.name],
            )) {
                eprintln!("warning: could not delete test topic {}: {e}", self.name);
            }
        }
    }
}

/// The `streamagg` binary the tests run: the one built with them, unless `STREAMAGG_TEST_BIN` names
/// another (e.g. a copy of an older build, to watch a new test fail on it).
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("STREAMAGG_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_streamagg").into())
}

/// Runs the `streamagg` binary built for these tests with `args`.
pub fn streamagg(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        // Many processors run at once: each serves its metrics on a port of its own.
        .env("STREAMAGG_METRICS_ADDR", "127.0.0.1:0")
        .output()
        .expect("the streamagg binary runs")
}

/// A `streamagg` child process (`run`, `ingest`, …); killed if still running when dropped. Its
/// stderr goes to a file so tests can read what it logged.
pub struct StreamaggProcess {
    child: std::process::Child,
    command: String,
    pub log_path: std::path::PathBuf,
    _log_dir: tempfile::TempDir,
}

/// The processor (`streamagg run`) is the child most tests start.
pub type ProcessorProcess = StreamaggProcess;

impl StreamaggProcess {
    /// `streamagg run <args>`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> StreamaggProcess {
        StreamaggProcess::spawn("run", args)
    }

    /// `streamagg <command> <args>`, logging at info level, its endpoint on a free port.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(command: &str, args: &[S]) -> StreamaggProcess {
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log_path = log_dir.path().join(format!("{command}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(binary())
            .arg(command)
            .args(args)
            .env("RUST_LOG", "info")
            .env("STREAMAGG_METRICS_ADDR", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the streamagg binary starts");
        StreamaggProcess {
            child,
            command: command.to_owned(),
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the process serves /metrics, /healthz and /readyz, as its log says (it binds port 0).
    pub fn telemetry_addr(&mut self, deadline: Duration) -> std::net::SocketAddr {
        let started = std::time::Instant::now();
        loop {
            let log = self.log();
            let addr = log
                .lines()
                .filter(|line| line.contains("serving /metrics"))
                .find_map(|line| {
                    line.split("addr=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                });
            if let Some(addr) = addr {
                return addr;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "streamagg {} exited ({status}) before serving metrics; log:\n{log}",
                    self.command
                );
            }
            assert!(
                started.elapsed() < deadline,
                "streamagg {} did not serve metrics within {deadline:?}; log:\n{log}",
                self.command
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, at most `deadline`; panics with its log otherwise.
    pub fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if started.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "streamagg {} did not exit within {deadline:?}; log:\n{}",
                    self.command,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then expect a clean exit within 30 s.
    pub fn stop_gracefully(&mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(30));
        assert!(
            status.success(),
            "graceful stop of streamagg {} failed ({status}); log:\n{}",
            self.command,
            self.log()
        );
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until the sum of the metric `name` on its `/metrics` reaches `at_least`, failing fast
    /// if it exits; panics with the log if `deadline` passes. Returns the value.
    pub fn wait_for_metric(&mut self, name: &str, at_least: f64, deadline: Duration) -> f64 {
        let started = std::time::Instant::now();
        let addr = self.telemetry_addr(deadline);
        loop {
            let value = metric_sum(addr, name);
            if value >= at_least {
                return value;
            }
            self.assert_alive();
            assert!(
                started.elapsed() < deadline,
                "{name} stayed at {value} < {at_least} for {deadline:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Expects the process to refuse to run: exit code 1 within `deadline` (it is killed and the
    /// test fails otherwise). Returns the `streamagg: error:` lines of its stderr.
    pub fn refusal_lines(&mut self, deadline: Duration) -> Vec<String> {
        let status = self.wait(deadline);
        let log = self.log();
        assert_eq!(status.code(), Some(1), "exit code; log:\n{log}");
        log.lines()
            .filter(|line| line.starts_with("streamagg: error:"))
            .map(str::to_owned)
            .collect()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "streamagg {} exited ({status}); log:\n{}",
                self.command,
                self.log()
            );
        }
    }
}

impl Drop for StreamaggProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes a processor config file (TOML) `streamagg.toml` into `dir`; returns its path as an argument.
pub fn config_file(dir: &std::path::Path, toml: &str) -> String {
    let path = dir.join("streamagg.toml");
    std::fs::write(&path, toml).expect("config file written");
    path.to_str().expect("utf8 path").to_owned()
}

/// Everything on `topic` now (committed records only), read from the beginning. A read that fails
/// (e.g. metadata not served yet by a broker just thawed) is tried again, up to 5 times in all.
pub fn read_all(topic: &str) -> Vec<streamagg::reader::RawRecord> {
    let read = || {
        streamagg::reader::read_to_end(
            &kafka_settings(),
            topic,
            streamagg::reader::Isolation::ReadCommitted,
            Duration::from_secs(30),
        )
    };
    for _ in 1..5 {
        match read() {
            Ok(records) => return records,
            Err(e) => eprintln!("reading {topic} failed, trying again in 1 s: {e}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    read().unwrap_or_else(|e| panic!("reading {topic}: {e}"))
}

/// Reads `topic` until it holds at least `count` records or `deadline` passes, calling `check`
/// between reads (e.g. to fail fast when a processor died). Returns the last read.
pub fn wait_for_records(
    topic: &str,
    count: usize,
    deadline: Duration,
    mut check: impl FnMut(),
) -> Vec<streamagg::reader::RawRecord> {
    let started = std::time::Instant::now();
    loop {
        let records = read_all(topic);
        if records.len() >= count || started.elapsed() > deadline {
            return records;
        }
        check();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A plain HTTP GET on loopback: (status code, body). Enough for probes and Prometheus' API.
pub fn http_get(
    addr: std::net::SocketAddr,
    path_and_query: &str,
) -> std::io::Result<(u16, String)> {
    streamagg::telemetry::http_get(addr, path_and_query, Duration::from_secs(10))
}

/// The sum of every sample of the metric `name` (over all its label sets) on `addr`'s `/metrics`;
/// 0 while it is not exported yet.
pub fn metric_sum(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, metrics) = http_get(addr, "/metrics").expect("/metrics");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labelled) => &labelled[labelled.find('}')? + 1..],
                None => rest,
            };
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Runs `scripts/kafka <action>` (down, up, pause, resume) on the shared broker: only exclusive
/// tests do, as `scripts/test` runs them alone.
pub fn kafka(action: &str) {
    let status = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
        .arg(action)
        .status()
        .expect("scripts/kafka runs");
    assert!(status.success(), "scripts/kafka {action} failed");
}

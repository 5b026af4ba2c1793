//! Helpers shared by the integration tests: the real broker's address, topics with random names that
//! are deleted when the test ends, and running the `streamagg` binary.

use std::process::{Command, Output};
use std::time::Duration;

use streamagg::kafka::{self, KafkaSettings};

/// The broker the tests run against: `STREAMAGG_TEST_BROKERS`, default the one `scripts/kafka up` starts.
pub fn brokers() -> String {
    std::env::var("STREAMAGG_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings {
        brokers: brokers(),
        timeout: Duration::from_secs(20),
        security: Default::default(),
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
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
        let admin = kafka::admin_client(&settings).expect("admin client");
        let created = block_on(kafka::ensure_topic(&admin, &settings, &name, partitions, 1))
            .unwrap_or_else(|e| {
                panic!(
                    "creating {name} on {} failed (is `scripts/kafka up` running?): {e}",
                    settings.brokers
                )
            });
        assert!(created, "a random topic name must be new");
        TestTopic { name, settings }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        if let Ok(admin) = kafka::admin_client(&self.settings) {
            if let Err(e) = block_on(kafka::delete_topics(&admin, &self.settings, &[&self.name])) {
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

/// Everything on `topic` now (committed records only), read from the beginning.
pub fn read_all(topic: &str) -> Vec<streamagg::consume::RawRecord> {
    streamagg::consume::read_to_end(
        &kafka_settings(),
        topic,
        streamagg::consume::Isolation::ReadCommitted,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
}

/// Reads `topic` until it holds at least `count` records or `deadline` passes, calling `check`
/// between reads (e.g. to fail fast when a processor died). Returns the last read.
pub fn wait_for_records(
    topic: &str,
    count: usize,
    deadline: Duration,
    mut check: impl FnMut(),
) -> Vec<streamagg::consume::RawRecord> {
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

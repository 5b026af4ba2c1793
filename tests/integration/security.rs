//! Against the secure broker that `scripts/kafka up --secure` runs (SASL_SSL with SCRAM users, a
//! throwaway CA, the StandardAuthorizer): a dataset processed end to end over SASL_SSL +
//! SCRAM-SHA-512 equals the oracle; a wrong password, an untrusted CA and a user without write
//! rights on the output topic each end in one non-secret error line and a non-zero exit, in bounded
//! time; and no log of the secured runs carries the password.
//!
//! The same broker's mutual-TLS listener: a dataset processed with a client certificate (its key
//! encrypted, the passphrase from a file) equals the oracle, and no certificate is one line and exit 1.
//!
//! `STREAMAGG_TEST_SECURE_BROKERS` (the SASL_SSL bootstrap), `STREAMAGG_TEST_MTLS_BROKERS` (the mTLS
//! bootstrap) and `STREAMAGG_TEST_SECURE_DIR` (the CA, the client certificate and the password files)
//! say where it is; `scripts/test` starts it and sets them. Without them these tests fail: a security
//! test that silently skips proves nothing.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use streamagg::codec::Format;
use streamagg::config::cluster::{KafkaSecurity, KafkaSettings, Secret};
use streamagg::reader::{read_to_end, Isolation, RawRecord};

use crate::common::{ProcessorProcess, TestTopic};
use crate::dataset::{Input, INDEX_HEADER};
use crate::oracle::{assert_output_matches, oracle, Delivery, SEMANTICS_ARGS};

/// The user with every right, and the one that may read but not write topics.
const ADMIN: &str = "streamagg";
const LIMITED: &str = "limited";

/// The secure broker the tests run against.
struct Secure {
    brokers: String,
    mtls_brokers: String,
    dir: PathBuf,
}

fn secure() -> Secure {
    let hint = "start the secure broker with `KAFKA_PORT=9392 scripts/kafka up --secure` and set \
                what `KAFKA_PORT=9392 scripts/kafka env --secure` prints (scripts/test does both)";
    let brokers = std::env::var("STREAMAGG_TEST_SECURE_BROKERS")
        .unwrap_or_else(|_| panic!("STREAMAGG_TEST_SECURE_BROKERS is not set: {hint}"));
    let mtls_brokers = std::env::var("STREAMAGG_TEST_MTLS_BROKERS")
        .unwrap_or_else(|_| panic!("STREAMAGG_TEST_MTLS_BROKERS is not set: {hint}"));
    let dir = PathBuf::from(
        std::env::var("STREAMAGG_TEST_SECURE_DIR")
            .unwrap_or_else(|_| panic!("STREAMAGG_TEST_SECURE_DIR is not set: {hint}")),
    );
    for file in [
        "ca.crt",
        "untrusted-ca.crt",
        "streamagg.password",
        "limited.password",
        "client.crt",
        "client.key",
        "client.key.password",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: {hint}",
            dir.join(file).display()
        );
    }
    Secure {
        brokers,
        mtls_brokers,
        dir,
    }
}

impl Secure {
    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn password(&self, user: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{user}.password")))
            .expect("password file")
            .trim()
            .to_owned()
    }

    /// Connection settings for `user` with SCRAM-SHA-512, trusting the broker's CA.
    fn settings(&self, user: &str) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers.clone(),
            timeout: Duration::from_secs(20),
            security: KafkaSecurity {
                protocol: Some("SASL_SSL".into()),
                sasl_mechanism: Some("SCRAM-SHA-512".into()),
                sasl_username: Some(user.into()),
                sasl_password: Some(Secret::new(self.password(user))),
                ssl_ca_location: Some(self.path("ca.crt")),
                ..KafkaSecurity::default()
            },
        }
    }

    /// The passphrase of the client certificate's key.
    fn key_password(&self) -> String {
        std::fs::read_to_string(self.dir.join("client.key.password"))
            .expect("key password file")
            .trim()
            .to_owned()
    }

    /// The CLI flags for the mTLS listener: SSL with the client certificate, whose key's passphrase
    /// comes from its file.
    fn mtls_flags(&self) -> Vec<String> {
        [
            "--brokers",
            &self.mtls_brokers,
            "--security-protocol",
            "SSL",
            "--ssl-ca-location",
            &self.path("ca.crt"),
            "--ssl-certificate-location",
            &self.path("client.crt"),
            "--ssl-key-location",
            &self.path("client.key"),
            "--ssl-key-password-file",
            &self.path("client.key.password"),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The CLI flags for `user` (password from its file), `mechanism` and the CA file `ca`.
    fn flags(&self, user: &str, mechanism: &str, ca: &str) -> Vec<String> {
        [
            "--brokers",
            &self.brokers,
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            mechanism,
            "--sasl-username",
            user,
            "--sasl-password-file",
            &self.path(&format!("{user}.password")),
            "--ssl-ca-location",
            &self.path(ca),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Everything on `topic`, read over SASL_SSL as the admin user.
    fn read_all(&self, topic: &str) -> Vec<RawRecord> {
        read_to_end(
            &self.settings(ADMIN),
            topic,
            Isolation::ReadCommitted,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("reading {topic} over SASL_SSL: {e}"))
    }
}

/// A topic with a random name on the secure broker, created and deleted over SASL_SSL by the admin
/// user.
fn secure_topic(secure: &Secure, purpose: &str, partitions: i32) -> TestTopic {
    TestTopic::create_on(
        secure.settings(ADMIN),
        &format!("secure-{purpose}"),
        partitions,
    )
}

/// Runs the binary with `args` and `env`, killing it if it has not exited within `deadline`.
fn run_bounded(args: &[String], env: &[(&str, &str)], deadline: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(crate::common::binary())
        .args(args)
        .envs(env.iter().copied())
        .env("STREAMAGG_METRICS_ADDR", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the streamagg binary starts");
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "streamagg {args:?} did not exit within {deadline:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (output, started.elapsed())
}

/// The one `streamagg: error:` line of a failed run; fails unless there is exactly one, the exit
/// code is non-zero, and none of `secrets` shows anywhere in its output.
fn single_error_line(what: &str, output: &Output, secrets: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{what}: must fail:\n{stderr}");
    for secret in secrets {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{what}: a password leaked:\n{stderr}"
        );
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("streamagg: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{what}: one error line:\n{stderr}");
    errors[0].to_owned()
}

/// Runs a processor the broker must refuse (`args`): one error line that says "refused the
/// connection" and names `reason`, none of `secrets`, exit 1, and at once: within 15 s, although
/// --kafka-timeout is 30 s, so a refusal is not mistaken for an unreachable cluster.
fn assert_refused_at_once(what: &str, args: &[String], secrets: &[&str], reason: &str) {
    let (out, took) = run_bounded(args, &[("RUST_LOG", "debug")], Duration::from_secs(60));
    let line = single_error_line(what, &out, secrets);
    assert!(
        line.contains("refused the connection") && line.contains(reason),
        "{what}: {line}"
    );
    assert!(
        took < Duration::from_secs(15),
        "{what}: took {took:?}: {line}"
    );
}

/// The arguments of a processor connected by `connection` reading `input` and writing `output`.
fn processor_args(
    connection: Vec<String>,
    input: &str,
    output: &str,
    state_dir: &std::path::Path,
) -> Vec<String> {
    let mut args = vec!["run".to_owned()];
    args.extend(connection);
    args.extend(
        [
            "--input",
            input,
            "--output",
            output,
            "--group",
            &crate::scenario::random_group(),
            "--state-dir",
            state_dir.to_str().expect("utf8"),
            "--kafka-timeout",
            "30s",
        ]
        .into_iter()
        .chain(SEMANTICS_ARGS)
        .map(str::to_owned),
    );
    args
}

/// `args` without `flag` and its value.
fn without_flag(args: Vec<String>, flag: &str) -> Vec<String> {
    let mut kept = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            args.next();
        } else {
            kept.push(arg);
        }
    }
    kept
}

/// Writes a seeded preload with `streamagg produce` connected by `connection`, with `env` (the
/// secrets, where the processor reads them from files).
fn produce(connection: Vec<String>, env: &[(&str, &str)], topic: &str, count: u64) -> Output {
    let mut args = vec!["produce".to_owned()];
    args.extend(connection);
    args.extend(
        [
            "--topic",
            topic,
            "--count",
            &count.to_string(),
            "--sources",
            "40",
            "--span",
            "8m",
            "--start-ms",
            "1700000000000",
            "--out-of-order-ms",
            "5000",
            "--late-fraction",
            "0.02",
            "--seed",
            "7",
            "--seal",
        ]
        .map(str::to_owned),
    );
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug"));
    let (output, _) = run_bounded(&args, &env, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "produce {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `streamagg produce` over SASL_SSL as `user` with `mechanism`, the password from the environment.
fn produce_sasl(secure: &Secure, user: &str, mechanism: &str, topic: &str, count: u64) -> Output {
    let connection = without_flag(
        secure.flags(user, mechanism, "ca.crt"),
        "--sasl-password-file",
    );
    let password = secure.password(user);
    produce(
        connection,
        &[("STREAMAGG_SASL_PASSWORD", &password)],
        topic,
        count,
    )
}

/// The oracle's view of records written by `streamagg produce`: each input record as an [`Input`]
/// and a copy carrying its index header, as the oracle expects of the datasets the tests write.
fn as_oracle_inputs(records: &[RawRecord]) -> (Vec<Input>, Vec<RawRecord>) {
    let mut inputs = Vec::with_capacity(records.len());
    let mut indexed = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        inputs.push(Input {
            source: String::from_utf8(record.key.clone().unwrap_or_default()).expect("utf8 key"),
            payload: record.payload.clone().unwrap_or_default(),
        });
        let mut copy = record.clone();
        copy.headers
            .push((INDEX_HEADER.to_owned(), index.to_string().into_bytes()));
        indexed.push(copy);
    }
    (inputs, indexed)
}

/// Runs a processor connected by `connection` from `input` to `output` until the output holds every
/// window the oracle expects of the input, then checks the output exactly once. Returns the
/// processor's log and what its `/metrics` showed.
fn process_to_the_oracle(
    secure: &Secure,
    connection: Vec<String>,
    input: &TestTopic,
    output: &TestTopic,
) -> (String, String) {
    let (inputs, indexed) = as_oracle_inputs(&secure.read_all(&input.name));
    assert!(inputs.len() >= 6_000, "{} input records", inputs.len());
    let expected = oracle(Format::Json, &inputs, &indexed);
    assert!(
        expected.windows.len() > 200,
        "{} windows",
        expected.windows.len()
    );

    let state = tempfile::tempdir().expect("state dir");
    let args = processor_args(connection, &input.name, &output.name, state.path());
    let mut processor = ProcessorProcess::start(&args[1..]);
    let metrics_addr = processor.telemetry_addr(Duration::from_secs(30));
    let started = Instant::now();
    let mut records = secure.read_all(&output.name);
    while records.len() < expected.windows.len() {
        if let Some(status) = processor.exited() {
            panic!("processor exited ({status}); log:\n{}", processor.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} of {} windows after 120 s; log:\n{}",
            records.len(),
            expected.windows.len(),
            processor.log()
        );
        std::thread::sleep(Duration::from_millis(500));
        records = secure.read_all(&output.name);
    }
    let (_, metrics) = crate::common::http_get(metrics_addr, "/metrics").expect("/metrics");
    processor.stop_gracefully();
    let records = secure.read_all(&output.name);
    assert_output_matches(Format::Json, &records, &expected, Delivery::ExactlyOnce);
    let log = processor.log();
    assert!(
        log.contains("running"),
        "the processor's log is captured:\n{log}"
    );
    (log, metrics)
}

/// Fails if `secret` shows in any of `texts` (what, text).
fn assert_not_leaked(secret: &str, texts: &[(&str, String)]) {
    for (what, text) in texts {
        assert!(!text.contains(secret), "{what} carries a secret");
    }
}

/// `streamagg <command> --help` for every command, with `env` set.
fn help_texts(env: &[(&str, &str)]) -> String {
    ["run", "produce", "ingest", "consume"]
        .iter()
        .map(|command| {
            let args = [command.to_string(), "--help".to_owned()];
            let (out, _) = run_bounded(&args, env, Duration::from_secs(30));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

#[test]
fn a_dataset_is_processed_over_sasl_ssl_with_scram_and_equals_the_oracle_without_leaking_the_password(
) {
    let secure = secure();
    let input = secure_topic(&secure, "in", 4);
    let output = secure_topic(&secure, "out", 4);
    // SCRAM-SHA-256 for the producer, SCRAM-SHA-512 for the processor: both mechanisms work.
    let produced = produce_sasl(&secure, ADMIN, "SCRAM-SHA-256", &input.name, 6_000);
    let (log, metrics) = process_to_the_oracle(
        &secure,
        secure.flags(ADMIN, "SCRAM-SHA-512", "ca.crt"),
        &input,
        &output,
    );

    // Nothing the secured runs wrote, at debug level for the producer, names the password; nor
    // does `--help` with the password in the environment.
    let password = secure.password(ADMIN);
    let help = help_texts(&[("STREAMAGG_SASL_PASSWORD", &password)]);
    assert!(help.contains("--sasl-password-file"), "{help}");
    assert_not_leaked(
        &password,
        &[
            ("processor log", log),
            (
                "produce stderr",
                String::from_utf8_lossy(&produced.stderr).into_owned(),
            ),
            (
                "produce stdout",
                String::from_utf8_lossy(&produced.stdout).into_owned(),
            ),
            ("/metrics", metrics),
            ("--help", help),
        ],
    );
}

#[test]
fn a_dataset_is_processed_over_mutual_tls_with_an_encrypted_key_and_equals_the_oracle() {
    let secure = secure();
    let input = secure_topic(&secure, "mtls-in", 4);
    let output = secure_topic(&secure, "mtls-out", 4);
    let passphrase = secure.key_password();
    // The producer gets the key's passphrase from the environment, the processor from its file.
    let produced = produce(
        without_flag(secure.mtls_flags(), "--ssl-key-password-file"),
        &[("STREAMAGG_SSL_KEY_PASSWORD", &passphrase)],
        &input.name,
        6_000,
    );
    let (log, metrics) = process_to_the_oracle(&secure, secure.mtls_flags(), &input, &output);
    let help = help_texts(&[("STREAMAGG_SSL_KEY_PASSWORD", &passphrase)]);
    assert!(help.contains("--ssl-key-password-file"), "{help}");
    assert_not_leaked(
        &passphrase,
        &[
            ("processor log", log),
            (
                "produce stderr",
                String::from_utf8_lossy(&produced.stderr).into_owned(),
            ),
            ("/metrics", metrics),
            ("--help", help),
        ],
    );
}

#[test]
fn no_client_certificate_on_the_mutual_tls_listener_is_one_line_and_exit_1() {
    let secure = secure();
    let dir = tempfile::tempdir().expect("dir");
    let connection = without_flag(
        without_flag(
            without_flag(secure.mtls_flags(), "--ssl-certificate-location"),
            "--ssl-key-location",
        ),
        "--ssl-key-password-file",
    );
    let args = processor_args(
        connection,
        "it-secure-never-in",
        "it-secure-never-out",
        &dir.path().join("state"),
    );
    assert_refused_at_once(
        "no client certificate",
        &args,
        &[&secure.key_password()],
        "alert",
    );
}

#[test]
fn a_wrong_password_is_one_line_and_exit_1_at_once() {
    let secure = secure();
    // Refused before any topic is looked at: the topics need not exist.
    let (input, output) = ("it-secure-never-in", "it-secure-never-out");
    let dir = tempfile::tempdir().expect("dir");
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    std::fs::write(dir.path().join("wrong.password"), format!("{wrong}\n")).expect("written");
    let mut args = processor_args(
        secure.flags(ADMIN, "SCRAM-SHA-512", "ca.crt"),
        input,
        output,
        &dir.path().join("state"),
    );
    let file = args
        .iter()
        .position(|a| a == "--sasl-password-file")
        .expect("flag")
        + 1;
    args[file] = dir.path().join("wrong.password").display().to_string();
    assert_refused_at_once(
        "wrong password",
        &args,
        &[&wrong, &secure.password(ADMIN)],
        "SASL authentication",
    );
}

#[test]
fn an_untrusted_ca_is_one_line_and_exit_1_at_once() {
    let secure = secure();
    // Refused before any topic is looked at: the topics need not exist.
    let (input, output) = ("it-secure-never-in", "it-secure-never-out");
    let dir = tempfile::tempdir().expect("dir");
    let args = processor_args(
        secure.flags(ADMIN, "SCRAM-SHA-512", "untrusted-ca.crt"),
        input,
        output,
        &dir.path().join("state"),
    );
    assert_refused_at_once(
        "untrusted CA",
        &args,
        &[&secure.password(ADMIN)],
        "SSL handshake failed",
    );
}

#[test]
fn a_user_without_write_rights_on_the_output_topic_is_one_line_and_exit_1_not_a_retry_loop() {
    let secure = secure();
    let input = secure_topic(&secure, "acl-in", 2);
    let output = secure_topic(&secure, "acl-out", 2);
    produce_sasl(&secure, ADMIN, "SCRAM-SHA-512", &input.name, 2_000);
    for guarantee in ["exactly-once", "at-least-once"] {
        let dir = tempfile::tempdir().expect("dir");
        let mut args = processor_args(
            secure.flags(LIMITED, "SCRAM-SHA-512", "ca.crt"),
            &input.name,
            &output.name,
            &dir.path().join("state"),
        );
        args.extend(["--guarantee".to_owned(), guarantee.to_owned()]);
        let (out, took) = run_bounded(&args, &[("RUST_LOG", "info")], Duration::from_secs(90));
        let line = single_error_line(
            &format!("{guarantee}: no ACL"),
            &out,
            &[&secure.password(LIMITED), &secure.password(ADMIN)],
        );
        assert!(
            line.contains(&format!("'{}'", output.name))
                && line.to_lowercase().contains("authorization failed"),
            "{guarantee}: {line}"
        );
        assert!(took < Duration::from_secs(60), "{guarantee}: took {took:?}");
        assert!(
            secure.read_all(&output.name).is_empty(),
            "{guarantee}: nothing may reach the output topic"
        );
    }
}

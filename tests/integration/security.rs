//! Against the secure broker that `scripts/kafka up --secure` runs (SASL_SSL with SCRAM users, a
//! throwaway CA, the StandardAuthorizer): a dataset processed end to end over SASL_SSL +
//! SCRAM-SHA-512 equals the oracle; a wrong password, an untrusted CA and a user without write
//! rights on the output topic each end in one non-secret error line and a non-zero exit, in bounded
//! time; and no log of the secured runs carries the password.
//!
//! The same broker's mutual-TLS listener: a dataset processed with a client certificate (its key
//! encrypted, the passphrase from a file) equals the oracle, and no certificate is one line and exit 1.
//!
//! The broker, its flags and settings are in `secure_broker.rs`.

use std::process::Output;
use std::time::{Duration, Instant};

use streamagg::codec::Format;
use streamagg::reader::RawRecord;

use crate::bounded::{run_bounded, single_error_line};
use crate::common::{ProcessorProcess, TestTopic};
use crate::dataset::{Input, INDEX_HEADER};
use crate::oracle::{assert_output_matches, oracle, Delivery};
use crate::scenario::{random_group, semantics, Flags};
use crate::secure_broker::{secure, Secure, ADMIN, LIMITED};

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

/// The flags of a processor connected by `connection` reading `input` and writing `output`, its
/// state in `state_dir`.
fn processor_flags(
    connection: Flags,
    input: &str,
    output: &str,
    state_dir: &std::path::Path,
) -> Flags {
    let mut flags = connection;
    flags.extend(&Flags::of(&[
        ("--input", input),
        ("--output", output),
        ("--group", &random_group()),
        ("--state-dir", state_dir.to_str().expect("utf8")),
        ("--kafka-timeout", "30s"),
    ]));
    flags.extend(&semantics());
    flags
}

/// `streamagg run` with `flags`.
fn run_args(flags: &Flags) -> Vec<String> {
    let mut args = vec!["run".to_owned()];
    args.extend(flags.args());
    args
}

/// Writes a seeded preload with `streamagg produce` connected by `connection`, with `env` (the
/// secrets, where the processor reads them from files).
fn produce(connection: Flags, env: &[(&str, &str)], topic: &str, count: u64) -> Output {
    let mut flags = connection;
    flags.extend(&Flags::of(&[
        ("--topic", topic),
        ("--count", &count.to_string()),
        ("--sources", "40"),
        ("--span", "8m"),
        ("--start-ms", "1700000000000"),
        ("--out-of-order-ms", "5000"),
        ("--late-fraction", "0.02"),
        ("--seed", "7"),
    ]));
    let mut args = vec!["produce".to_owned()];
    args.extend(flags.args());
    args.push("--seal".to_owned());
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
    let mut connection = secure.flags(user, mechanism, "ca.crt");
    connection.unset("--sasl-password-file");
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
    connection: Flags,
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
    let flags = processor_flags(connection, &input.name, &output.name, state.path());
    let mut processor = ProcessorProcess::start(&flags.args());
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
    let input = secure.topic("in", 4);
    let output = secure.topic("out", 4);
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
    let input = secure.topic("mtls-in", 4);
    let output = secure.topic("mtls-out", 4);
    let passphrase = secure.key_password();
    // The producer gets the key's passphrase from the environment, the processor from its file.
    let mut connection = secure.mtls_flags();
    connection.unset("--ssl-key-password-file");
    let produced = produce(
        connection,
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
    let mut connection = secure.mtls_flags();
    connection
        .unset("--ssl-certificate-location")
        .unset("--ssl-key-location")
        .unset("--ssl-key-password-file");
    let args = run_args(&processor_flags(
        connection,
        "it-secure-never-in",
        "it-secure-never-out",
        &dir.path().join("state"),
    ));
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
    let mut flags = processor_flags(
        secure.flags(ADMIN, "SCRAM-SHA-512", "ca.crt"),
        input,
        output,
        &dir.path().join("state"),
    );
    let wrong_file = dir.path().join("wrong.password").display().to_string();
    let args = run_args(flags.set("--sasl-password-file", &wrong_file));
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
    let args = run_args(&processor_flags(
        secure.flags(ADMIN, "SCRAM-SHA-512", "untrusted-ca.crt"),
        input,
        output,
        &dir.path().join("state"),
    ));
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
    let input = secure.topic("acl-in", 2);
    let output = secure.topic("acl-out", 2);
    produce_sasl(&secure, ADMIN, "SCRAM-SHA-512", &input.name, 2_000);
    for guarantee in ["exactly-once", "at-least-once"] {
        let dir = tempfile::tempdir().expect("dir");
        let mut flags = processor_flags(
            secure.flags(LIMITED, "SCRAM-SHA-512", "ca.crt"),
            &input.name,
            &output.name,
            &dir.path().join("state"),
        );
        let args = run_args(flags.set("--guarantee", guarantee));
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

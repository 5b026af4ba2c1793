//! Settings that would weaken the deployment are refused by the binary itself, in one line naming the
//! key and never its value: librdkafka pass-through keys under an alias or another case, keys that
//! load code or carry key material inline, switching off TLS verification without the explicit
//! `allow_insecure_tls` (which, when given, is logged loudly); a world-readable secret file is used
//! with a warning.

use std::time::Duration;

use crate::bounded::{run_bounded, single_error_line};
use crate::common::{brokers, config_file, streamagg, StreamaggProcess, TestTopic};

/// The one `streamagg: error:` line of a refused start, which must carry no `secret`.
fn refused(args: &[&str], secret: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let (output, _) = run_bounded(&args, &[("RUST_LOG", "warn")], Duration::from_secs(30));
    single_error_line(&args.join(" "), &output, &[secret])
}

const SECRET: &str = "s3cr3t-v4lue";

#[test]
fn pass_through_keys_that_weaken_the_client_are_refused_by_run_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[kafka.consumer]\n\"metadata.broker.list\" = \"evil:9092\"",
            "may not set 'bootstrap.servers': streamagg manages it",
        ),
        (
            "[kafka.producer]\n\"delivery.timeout.ms\" = 1\n\"request.required.acks\" = 0",
            "may not set 'acks': streamagg manages it",
        ),
        (
            "[kafka.producer]\n\"SASL.PASSWORD\" = \"s3cr3t-v4lue\"",
            "may not set 'sasl.password': streamagg manages it",
        ),
        (
            "[kafka.consumer]\n\"plugin.library.paths\" = \"/tmp/s3cr3t-v4lue.so\"",
            "may not set 'plugin.library.paths': it loads code",
        ),
        (
            "[kafka.producer]\n\"ssl.key.pem\" = \"s3cr3t-v4lue\"",
            "may not set 'ssl.key.pem': it holds key material",
        ),
        (
            "[kafka.consumer]\n\"enable.ssl.certificate.verification\" = false",
            "may not set 'enable.ssl.certificate.verification': it switches off TLS verification",
        ),
        (
            "[kafka.producer]\n\"ssl.endpoint.identification.algorithm\" = \"none\"",
            "set allow_insecure_tls to allow it",
        ),
    ];
    for (index, (table, expected)) in cases.into_iter().enumerate() {
        let file = config_file(
            dir.path(),
            &format!("input = [\"in-{index}\"]\noutput = \"out\"\n{table}\n"),
        );
        let line = refused(&["run", "--config", &file], SECRET);
        assert!(line.contains(expected), "{table}: {line}");
    }
}

#[test]
fn the_gateway_refuses_the_same_keys_and_never_echoes_a_value_librdkafka_rejects() {
    let base = [
        "ingest",
        "--topic",
        "t",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-http",
        "127.0.0.1:0",
        "--brokers",
        "127.0.0.1:1",
        "--kafka-timeout",
        "2s",
        "--producer-property",
    ];
    let cases = [
        (
            "SASL.PASSWORD=s3cr3t-v4lue",
            "may not set 'sasl.password': streamagg manages it",
        ),
        (
            "delivery.timeout.ms=1",
            "may not set 'message.timeout.ms': streamagg manages it",
        ),
        (
            "ssl.engine.location=/tmp/s3cr3t-v4lue.so",
            "may not set 'ssl.engine.location'",
        ),
        (
            "enable.ssl.certificate.verification=false",
            "allow_insecure_tls",
        ),
        // Not ours to know: librdkafka refuses it, and its complaint would quote the value.
        ("linger.ms=s3cr3t-v4lue", "property 'linger.ms'"),
        (
            "no.such.property=s3cr3t-v4lue",
            "property 'no.such.property'",
        ),
        ("ssl.key.password:s3cr3t-v4lue", "is not key=value"),
        (
            "topic.partitioner=random",
            "may not set 'topic.partitioner': streamagg manages it",
        ),
        (
            "topic.delivery.timeout.ms=0",
            "may not set 'topic.delivery.timeout.ms'",
        ),
    ];
    for (property, expected) in cases {
        let mut args = base.to_vec();
        args.push(property);
        let line = refused(&args, SECRET);
        assert!(line.contains(expected), "{property}: {line}");
    }
}

#[test]
fn allow_insecure_tls_accepts_switching_verification_off_and_says_so_loudly() {
    let topic = TestTopic::create("insecure-tls", 1);
    let brokers = brokers();
    let mut gateway = StreamaggProcess::spawn(
        "ingest",
        &[
            "--brokers",
            &brokers,
            "--topic",
            &topic.name,
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--allow-insecure-tls",
            "--producer-property",
            "enable.ssl.certificate.verification=false",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = gateway.log();
        if log.contains("TLS VERIFICATION IS OFF") && log.contains("http=") {
            break;
        }
        if let Some(status) = gateway.exited() {
            panic!("the gateway exited ({status}); log:\n{log}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning and no start within 60 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gateway.stop_gracefully();
}

#[test]
fn a_secret_file_every_user_may_read_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let password = dir.path().join("password");
    std::fs::write(&password, SECRET).expect("write");
    let run = |mode: u32| {
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let output = streamagg(&[
            "lag",
            "--brokers",
            "127.0.0.1:1",
            "--kafka-timeout",
            "1s",
            "--group",
            "g",
            "--topic",
            "t",
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "u",
            "--sasl-password-file",
            password.to_str().expect("utf8"),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains(SECRET), "the password leaked:\n{stderr}");
        assert!(
            stderr.contains("cannot reach Kafka at 127.0.0.1:1"),
            "read and used:\n{stderr}"
        );
        stderr
    };
    let readable = run(0o644);
    assert!(
        readable.contains("is readable by every user of this host") && readable.contains("644"),
        "{readable}"
    );
    let private = run(0o600);
    assert!(!private.contains("readable by every user"), "{private}");
}

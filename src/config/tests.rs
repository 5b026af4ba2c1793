//! `streamagg run`'s settings: layering, defaults and every refusal, table-tested.

use super::cluster::{Secret, SecurityOptions};
use super::*;

fn minimal() -> RunOptions {
    RunOptions {
        input: Some(vec!["traffic".into()]),
        output: Some("averages".into()),
        ..RunOptions::default()
    }
}

#[test]
fn defaults_fill_what_is_not_set() {
    let settings = RunSettings::try_from(minimal()).expect("valid");
    assert_eq!(settings.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(settings.group, "streamagg");
    assert_eq!(settings.window, WindowSpec::epoch(60_000, 10_000));
    assert_eq!(settings.checkpoint_interval, Duration::from_secs(1));
    assert_eq!(settings.input_format, Format::Json);
    assert_eq!(settings.event_time, EventTime::Field);
    assert_eq!(settings.state_dir, PathBuf::from("./state"));
    assert_eq!(settings.guarantee, Guarantee::ExactlyOnce);
    assert_eq!(settings.idle_close_after, None);
    assert!(!settings.static_membership);
    assert_eq!(
        settings.metrics_addr,
        Some("127.0.0.1:9464".parse().expect("addr"))
    );
    assert_eq!(settings.stall_timeout, Duration::from_secs(30));
    assert_eq!(settings.transaction_timeout, DEFAULT_TRANSACTION_TIMEOUT);
    assert_eq!(settings.query, None, "the live-state endpoint is off");
}

#[test]
fn the_live_state_endpoint_is_on_with_a_token_and_the_token_is_never_a_file_key() {
    let settings = RunSettings::try_from(RunOptions {
        query_token: Some("s3cret".into()),
        advertised_address: Some("streamagg-0.streamagg:9464".into()),
        ..minimal()
    })
    .expect("valid");
    let query = settings.query.expect("on");
    assert_eq!(query.token, Secret::new("s3cret".into()));
    assert_eq!(
        query.advertised_address.as_deref(),
        Some("streamagg-0.streamagg:9464")
    );
    assert!(!format!("{query:?}").contains("s3cret"));
    let file = "input = [\"traffic\"]\noutput = \"averages\"\nquery_token = \"s3cret\"\n";
    let error = RunOptions::from_toml("f.toml", file).expect_err("a secret in the file");
    assert!(
        error.to_string().contains("unknown field `query_token`"),
        "{error}"
    );
}

#[test]
fn the_checkpoint_interval_must_fit_in_the_transaction_timeout_under_exactly_once_only() {
    let interval = |secs, guarantee, timeout_ms: Option<&str>| RunOptions {
        checkpoint_interval: Some(Duration::from_secs(secs)),
        guarantee: Some(guarantee),
        kafka: KafkaPassThrough {
            producer: timeout_ms
                .map(|ms| {
                    BTreeMap::from([(
                        "transaction.timeout.ms".to_owned(),
                        toml::Value::String(ms.into()),
                    )])
                })
                .unwrap_or_default(),
            ..Default::default()
        },
        ..minimal()
    };
    let cases = [
        (5, Guarantee::ExactlyOnce, None, Some(10)),
        (6, Guarantee::ExactlyOnce, None, None),
        (10, Guarantee::AtLeastOnce, None, Some(10)),
        (10, Guarantee::ExactlyOnce, Some("60000"), Some(60)),
        (31, Guarantee::ExactlyOnce, Some("60000"), None),
    ];
    for (secs, guarantee, timeout_ms, accepted_timeout) in cases {
        let settings = RunSettings::try_from(interval(secs, guarantee, timeout_ms));
        assert_eq!(
            settings.ok().map(|s| s.transaction_timeout),
            accepted_timeout.map(Duration::from_secs),
            "{secs}s {guarantee:?} {timeout_ms:?}"
        );
    }
}

#[test]
fn sasl_over_tls_is_accepted_and_its_password_never_shown() {
    let settings = RunSettings::try_from(RunOptions {
        cluster: KafkaOptions {
            security: SecurityOptions {
                security_protocol: Some("sasl_ssl".into()),
                sasl_mechanism: Some("scram-sha-512".into()),
                sasl_username: Some("agg".into()),
                sasl_password: Some(Secret::new("s3cr3t-pw".into())),
                ssl_ca_location: Some("/etc/streamagg/ca.crt".into()),
                ..SecurityOptions::default()
            },
            ..KafkaOptions::default()
        },
        ..minimal()
    })
    .expect("valid");
    let security = &settings.kafka.security;
    assert_eq!(security.protocol.as_deref(), Some("SASL_SSL"));
    assert_eq!(security.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
    assert_eq!(
        security.sasl_password.as_ref().map(Secret::expose),
        Some("s3cr3t-pw")
    );
    assert!(!format!("{settings:?}").contains("s3cr3t"));
    for secret_key in ["sasl_password", "ssl_key_password"] {
        let in_file = RunOptions::from_toml("f.toml", &format!("{secret_key} = \"x\"\n"));
        assert!(in_file.is_err(), "{secret_key} is not a file key");
    }
}

#[test]
fn the_metrics_endpoint_can_move_or_be_turned_off() {
    let cases = [
        ("0.0.0.0:9464", Some("0.0.0.0:9464")),
        ("127.0.0.1:0", Some("127.0.0.1:0")),
        ("[::1]:9000", Some("[::1]:9000")),
        ("off", None),
    ];
    for (text, expected) in cases {
        let settings = RunSettings::try_from(RunOptions {
            metrics_addr: Some(text.into()),
            ..minimal()
        })
        .expect("valid");
        assert_eq!(
            settings.metrics_addr,
            expected.map(|e| e.parse().expect("addr")),
            "{text}"
        );
    }
}

#[test]
fn the_file_parses_with_durations_and_pass_through_tables() {
    let text = r#"
        brokers = "10.0.0.1:9092"
        kafka_timeout = "3s"
        input = ["a", "b"]
        output = "out"
        window = "30s"
        grace = "2s"
        input_format = "avro"
        event_time = "kafka"
        min_value = 0.5
        guarantee = "at-least-once"
        instance_id = "node-1"
        static_membership = true
        idle_close_after = "30s"
        [kafka.consumer]
        "fetch.max.bytes" = 1048576
        "auto.offset.reset" = "latest"
        [kafka.producer]
        "linger.ms" = "5"
    "#;
    let settings = RunSettings::try_from(RunOptions::from_toml("f.toml", text).expect("parses"))
        .expect("valid");
    assert_eq!(settings.input_topics, ["a", "b"]);
    assert_eq!(settings.kafka.brokers, "10.0.0.1:9092");
    assert_eq!(settings.kafka.timeout, Duration::from_secs(3));
    assert_eq!(settings.window, WindowSpec::epoch(30_000, 2_000));
    assert_eq!(settings.input_format, Format::Avro);
    assert_eq!(settings.event_time, EventTime::Kafka);
    assert_eq!(settings.min_value, Some(0.5));
    assert_eq!(settings.guarantee, Guarantee::AtLeastOnce);
    assert_eq!(settings.instance_id.as_deref(), Some("node-1"));
    assert!(settings.static_membership);
    assert_eq!(settings.idle_close_after, Some(Duration::from_secs(30)));
    assert_eq!(settings.consumer_properties["fetch.max.bytes"], "1048576");
    assert_eq!(settings.consumer_properties["auto.offset.reset"], "latest");
    assert_eq!(settings.producer_properties["linger.ms"], "5");
}

#[test]
fn flags_and_environment_win_over_the_file() {
    let file = RunOptions {
        group: Some("from-file".into()),
        grace: Some(Duration::from_secs(3)),
        ..minimal()
    };
    let mut options = file;
    let flags = <RunOptions as clap::Args>::augment_args(clap::Command::new("run"))
        .try_get_matches_from(["run", "--group", "from-flag"])
        .expect("flags parse");
    clap::FromArgMatches::update_from_arg_matches(&mut options, &flags).expect("update");
    let settings = RunSettings::try_from(options).expect("valid");
    assert_eq!(settings.group, "from-flag");
    assert_eq!(settings.window.grace_ms, 3_000);
}

#[test]
fn invalid_settings_are_refused_with_the_key_named() {
    let cases: Vec<(&str, RunOptions, &str)> = vec![
        ("no input", RunOptions { input: None, ..minimal() }, "missing setting 'input' (flag --input, env STREAMAGG_INPUT, or the config file)"),
        ("no output", RunOptions { output: None, ..minimal() }, "missing setting 'output' (flag --output, env STREAMAGG_OUTPUT, or the config file)"),
        ("bad topic", RunOptions { output: Some("a b".into()), ..minimal() }, "invalid setting 'output': 'a b' is not a valid Kafka topic name"),
        ("loop", RunOptions { output: Some("traffic".into()), ..minimal() }, "invalid setting 'output': 'traffic' is also an input topic"),
        ("dup input", RunOptions { input: Some(vec!["x".into(), "x".into()]), ..minimal() }, "invalid setting 'input': names a topic twice"),
        ("zero window", RunOptions { window: Some("0s".parse().expect("a duration")), ..minimal() }, "invalid setting 'window': must be at least 1ms"),
        ("rollup outputs without rollups", RunOptions { rollup_outputs: Some(vec!["t5".into()]), ..minimal() }, "invalid setting 'rollup_outputs': names 1 topics for 0 larger window sizes: one per size after the first, in order"),
        ("rollup output is an input", RunOptions { window: Some("1m,5m".parse().expect("sizes")), rollup_outputs: Some(vec!["traffic".into()]), ..minimal() }, "invalid setting 'rollup_outputs': 'traffic' is also an input topic"),
        ("tiny checkpoint", RunOptions { checkpoint_interval: Some(Duration::from_millis(1)), ..minimal() }, "invalid setting 'checkpoint_interval': must be at least 10ms"),
        ("nan min", RunOptions { min_value: Some(f64::NAN), ..minimal() }, "invalid setting 'min_value': must be a finite number"),
        ("bad instance id", RunOptions { instance_id: Some("a b".into()), ..minimal() }, "invalid setting 'instance_id': use letters, digits, '.', '_' and '-'"),
        ("zero idle close", RunOptions { idle_close_after: Some(Duration::ZERO), ..minimal() }, "invalid setting 'idle_close_after': must be greater than zero"),
        ("bad metrics addr", RunOptions { metrics_addr: Some("localhost".into()), ..minimal() }, "invalid setting 'metrics_addr': 'localhost' is not an ip:port address (or 'off')"),
        ("empty query token", RunOptions { query_token: Some(" \n".into()), ..minimal() }, "invalid setting 'query_token_file': the token is empty"),
        ("query without metrics", RunOptions { query_token: Some("t".into()), metrics_addr: Some("off".into()), ..minimal() }, "invalid setting 'query_token_file': the live-state endpoint is served on metrics_addr, which is off"),
        ("advertised without query", RunOptions { advertised_address: Some("h:1".into()), ..minimal() }, "invalid setting 'advertised_address': only used by the live-state endpoint: set query_token_file too"),
        ("bad advertised", RunOptions { query_token: Some("t".into()), advertised_address: Some("http://h:1".into()), ..minimal() }, "invalid setting 'advertised_address': 'http://h:1' is not a host:port clients can reach"),
        ("tiny stall timeout", RunOptions { stall_timeout: Some(Duration::from_millis(5)), ..minimal() }, "invalid setting 'stall_timeout': must be at least 100ms"),
        ("bad protocol", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("TLS".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'security_protocol': must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
        ("sasl without mechanism", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("SASL_SSL".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'sasl_mechanism': is required with a SASL protocol"),
        ("bad mechanism", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("SASL_SSL".into()), sasl_mechanism: Some("GSSAPI".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'sasl_mechanism': must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
        ("sasl without user", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("sasl_ssl".into()), sasl_mechanism: Some("PLAIN".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'sasl_username': is required with a SASL protocol"),
        ("sasl without password", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("SASL_SSL".into()), sasl_mechanism: Some("PLAIN".into()), sasl_username: Some("u".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'sasl_password': is required with a SASL protocol: set STREAMAGG_SASL_PASSWORD or sasl_password_file"),
        ("user without sasl", RunOptions { cluster: KafkaOptions { security: SecurityOptions { sasl_username: Some("u".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'security_protocol': SASL settings are given but the protocol is not SASL_PLAINTEXT or SASL_SSL"),
        ("ca without tls", RunOptions { cluster: KafkaOptions { security: SecurityOptions { ssl_ca_location: Some("/ca".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'ssl_ca_location': only applies with security_protocol SSL or SASL_SSL"),
        ("client cert without tls", RunOptions { cluster: KafkaOptions { security: SecurityOptions { ssl_certificate_location: Some("/c".into()), ssl_key_location: Some("/k".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'ssl_certificate_location': only applies with security_protocol SSL or SASL_SSL"),
        ("cert without key", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("SSL".into()), ssl_certificate_location: Some("/c".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'ssl_key_location': is required with ssl_certificate_location"),
        ("key without cert", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("SSL".into()), ssl_key_location: Some("/k".into()), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'ssl_certificate_location': is required with ssl_key_location"),
        ("key password without key", RunOptions { cluster: KafkaOptions { security: SecurityOptions { security_protocol: Some("SSL".into()), ssl_key_password: Some(Secret::new("p".into())), ..SecurityOptions::default() }, ..KafkaOptions::default() }, ..minimal() }, "invalid setting 'ssl_key_password': is given but ssl_key_location is not"),
        ("checkpoint interval past the transaction timeout", RunOptions { checkpoint_interval: Some(Duration::from_secs(10)), ..minimal() }, "invalid setting 'checkpoint_interval': 10s is more than half of transaction.timeout.ms (10s): under exactly-once a transaction lasts one interval plus its commit, and the coordinator aborts it after that timeout; lower the interval or raise [kafka.producer] transaction.timeout.ms"),
        ("client.id with the live-state endpoint", RunOptions { query_token: Some("t".into()), kafka: KafkaPassThrough { consumer: BTreeMap::from([("Client.ID".to_owned(), toml::Value::String("billing".into()))]), ..Default::default() }, ..minimal() }, "[kafka.consumer] may not set 'client.id': with the live-state endpoint on (query_token_file), the consumer's client.id publishes this instance's address (streamagg@<advertised_address>); unset one of the two"),
        ("bad transaction timeout", RunOptions { kafka: KafkaPassThrough { producer: BTreeMap::from([("transaction.timeout.ms".to_owned(), toml::Value::String("soon".into()))]), ..Default::default() }, ..minimal() }, "invalid setting 'transaction.timeout.ms': 'soon' is not a positive number of milliseconds"),
    ];
    for (name, options, message) in cases {
        assert_eq!(
            RunSettings::try_from(options)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(message.to_owned()),
            "{name}"
        );
    }
}

#[test]
fn managed_librdkafka_keys_and_unknown_file_keys_are_refused() {
    let managed = RunOptions::from_toml("f.toml", "[kafka.consumer]\n\"group.id\" = \"x\"\n")
        .expect("parses");
    assert_eq!(
        RunSettings::try_from(RunOptions {
            kafka: managed.kafka,
            ..minimal()
        })
        .map(|_| ())
        .map_err(|e| e.to_string()),
        Err("[kafka.consumer] may not set 'group.id': streamagg manages it".to_owned())
    );
    // Without the live-state endpoint the consumer's client.id is the user's to set.
    let client_id = RunSettings::try_from(RunOptions {
        kafka: KafkaPassThrough {
            consumer: BTreeMap::from([("client.id".to_owned(), toml::Value::String("b".into()))]),
            ..Default::default()
        },
        ..minimal()
    })
    .expect("valid");
    assert_eq!(client_id.consumer_properties["client.id"], "b");
    let unknown = RunOptions::from_toml("f.toml", "input = [\"a\"]\nwindwo = \"1m\"\n")
        .map_err(|e| e.to_string());
    assert!(
        matches!(&unknown, Err(m) if m.starts_with("config file f.toml: unknown field `windwo`")),
        "{unknown:?}"
    );
    let bad_duration =
        RunOptions::from_toml("f.toml", "grace = \"soon\"\n").map_err(|e| e.to_string());
    assert!(bad_duration.is_err());
}

#[test]
fn a_bad_value_in_the_file_names_its_key_and_what_was_given() {
    let cases = [
        (
            "window = \"soon\"",
            "config file f.toml: 'window': 'soon' is not a duration like 500ms, 10s or 1m",
        ),
        (
            "input = [\"a\"]\nkafka_timeout = \"10\"\noutput = \"b\"",
            "config file f.toml: 'kafka_timeout': '10' is not a duration like 500ms, 10s or 1m",
        ),
        (
            "min_value = \"low\"",
            "config file f.toml: 'min_value': invalid type: string \"low\", expected f64",
        ),
    ];
    for (text, expected) in cases {
        let error = RunOptions::from_toml("f.toml", text)
            .expect_err(text)
            .to_string();
        assert!(error.starts_with(expected), "{text}: {error}");
    }
}

#[test]
fn registry_settings_come_from_the_file_and_are_needed_only_by_avro_confluent() {
    let text = r#"
        input = ["traffic"]
        output = "averages"
        input_format = "avro-confluent"
        schema_registry_url = "https://registry:8081/"
        schema_registry_username = "streamagg"
        schema_registry_subject_strategy = "record"
        schema_registry_patience = "5s"
    "#;
    let mut options = RunOptions::from_toml("f.toml", text).expect("parses");
    // The password is never a file key; the binary's edge fills it in from env or its file.
    options.registry.schema_registry_password = Some(Secret::new("p".into()));
    let settings = RunSettings::try_from(options).expect("valid");
    assert_eq!(settings.input_format, Format::AvroConfluent);
    let registry = settings.registry.expect("registry settings");
    assert_eq!(registry.url, "https://registry:8081");
    assert_eq!(registry.subject_strategy, registry::SubjectStrategy::Record);
    assert_eq!(registry.patience, Duration::from_secs(5));
    assert!(matches!(
        RunOptions::from_toml("f.toml", "schema_registry_password = \"x\""),
        Err(ConfigError::Parse { .. })
    ));

    let framed_output = RunOptions {
        output_format: Some(Format::AvroConfluent),
        ..minimal()
    };
    assert_eq!(
        RunSettings::try_from(framed_output),
        Err(ConfigError::Missing(
            "schema_registry_url",
            "schema-registry-url",
            "SCHEMA_REGISTRY_URL"
        ))
    );
    let json_with_url = RunOptions {
        registry: registry::RegistryOptions {
            schema_registry_url: Some("http://r".into()),
            ..Default::default()
        },
        ..minimal()
    };
    assert_eq!(
        RunSettings::try_from(json_with_url).map(|s| s.registry),
        Ok(None)
    );
    let writer_schema_with_json = RunOptions {
        input_writer_schema: Some("old.avsc".into()),
        ..minimal()
    };
    assert!(matches!(
        RunSettings::try_from(writer_schema_with_json),
        Err(ConfigError::Invalid {
            key: "input_writer_schema",
            ..
        })
    ));
}

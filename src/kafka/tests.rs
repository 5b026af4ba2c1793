//! Tests of [`super`] (kafka).

use super::context::{is_not_authorized, is_refusal, ConnectionAware, StreamaggContext};
use super::*;
use crate::config::cluster::KafkaSecurity;

#[test]
fn transient_errors_are_the_ones_a_moving_cluster_causes() {
    let cases = [
        (
            KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
            true,
        ),
        (
            KafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator),
            true,
        ),
        (
            KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress),
            true,
        ),
        (
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnstableOffsetCommit),
            true,
        ),
        (
            KafkaError::MetadataFetch(RDKafkaErrorCode::GroupAuthorizationFailed),
            false,
        ),
        (
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
            false,
        ),
        (
            KafkaError::ConsumerCommit(RDKafkaErrorCode::InvalidArgument),
            false,
        ),
        (KafkaError::Canceled, false),
    ];
    for (error, expected) in cases {
        assert_eq!(is_transient(&error), expected, "{error}");
    }
}

#[test]
fn secrets_reach_librdkafka_but_never_debug_output() {
    let settings = KafkaSettings {
        brokers: "b:9093".into(),
        timeout: Duration::from_secs(1),
        security: KafkaSecurity {
            protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("agg".into()),
            sasl_password: Some(Secret::new("hunter2-very-secret".into())),
            ssl_ca_location: Some("/etc/ca.crt".into()),
            ssl_certificate_location: Some("/etc/client.crt".into()),
            ssl_key_location: Some("/etc/client.key".into()),
            ssl_key_password: Some(Secret::new("key-passphrase-secret".into())),
        },
    };
    let config = settings.client_config("t");
    assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(config.get("sasl.username"), Some("agg"));
    assert_eq!(config.get("sasl.password"), Some("hunter2-very-secret"));
    assert_eq!(config.get("ssl.ca.location"), Some("/etc/ca.crt"));
    assert_eq!(
        config.get("ssl.certificate.location"),
        Some("/etc/client.crt")
    );
    assert_eq!(config.get("ssl.key.location"), Some("/etc/client.key"));
    assert_eq!(
        config.get("ssl.key.password"),
        Some("key-passphrase-secret")
    );
    let shown = format!("{settings:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("passphrase-secret"), "{shown}");
    assert!(shown.contains("<redacted>"));
    let plain = KafkaSettings {
        security: KafkaSecurity::default(),
        ..settings
    };
    assert_eq!(plain.client_config("t").get("security.protocol"), None);
}

#[test]
fn refusals_and_missing_acls_are_told_apart_from_an_unreachable_cluster() {
    use RDKafkaErrorCode as Code;
    let cases = [
        (KafkaError::Global(Code::Authentication), true, false),
        (KafkaError::Global(Code::SSL), true, false),
        (
            KafkaError::Global(Code::SaslAuthenticationFailed),
            true,
            false,
        ),
        (
            KafkaError::Global(Code::BrokerTransportFailure),
            false,
            false,
        ),
        (
            KafkaError::MetadataFetch(Code::OperationTimedOut),
            false,
            false,
        ),
        (
            KafkaError::MessageProduction(Code::TopicAuthorizationFailed),
            false,
            true,
        ),
        (
            KafkaError::ConsumerCommit(Code::GroupAuthorizationFailed),
            false,
            true,
        ),
        (
            KafkaError::MetadataFetch(Code::TransactionalIdAuthorizationFailed),
            false,
            true,
        ),
    ];
    for (error, refusal, not_authorized) in cases {
        assert_eq!(is_refusal(&error, "connection refused"), refusal, "{error}");
        assert_eq!(is_not_authorized(&error), not_authorized, "{error}");
        assert!(
            !is_transient(&error) || !(refusal || not_authorized),
            "{error}"
        );
    }
}

#[test]
fn a_tls_alert_about_the_certificate_is_a_refusal_other_transport_failures_are_not() {
    let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
    let cases = [
        ("ssl://b:9095/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after 1ms in state APIVERSION_QUERY)", true),
        ("Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert number 116", true),
        ("SSL alert number 48", true),
        ("Receive failed: SSL alert number 0", false),
        ("Connect to ipv4#127.0.0.1:9095 failed: Connection refused", false),
        ("Receive failed: Disconnected", false),
        ("SSL alert number ", false),
    ];
    for (reason, refusal) in cases {
        assert_eq!(is_refusal(&transport, reason), refusal, "{reason}");
    }
    let timeout = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
    assert!(!is_refusal(&timeout, "SSL alert number 42"));
}

#[test]
fn the_first_refusal_is_kept_and_other_errors_are_not_refusals() {
    let context = StreamaggContext::default();
    context.log_error(
        KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
        "connection refused",
    );
    assert_eq!(context.refusal(), None);
    context.log_error(
        KafkaError::Global(RDKafkaErrorCode::Authentication),
        "SASL authentication error: invalid credentials",
    );
    context.log_error(
        KafkaError::Global(RDKafkaErrorCode::SSL),
        "SSL handshake failed",
    );
    assert_eq!(
        context.refusal().as_deref(),
        Some("SASL authentication error: invalid credentials")
    );
}

#[test]
fn backoff_gives_up_when_patience_runs_out() {
    assert!(!Backoff::new(Duration::ZERO).wait(&"boom"));
    let mut backoff = Backoff::new(Duration::from_millis(250));
    assert!(backoff.wait(&"boom"), "100 ms fits in 250 ms");
    assert!(!backoff.wait(&"boom"), "another 200 ms does not");
}

#[test]
fn a_refused_client_property_never_shows_its_value() {
    let secret = "s3cr3t-v4lue";
    for (key, value) in [
        ("SASL.PASSWORD", secret),
        ("linger.ms", secret),
        ("no.such.property", secret),
    ] {
        let refused = rdkafka::config::ClientConfig::new()
            .set(key, value)
            .create::<rdkafka::producer::BaseProducer>()
            .err()
            .unwrap_or_else(|| panic!("librdkafka accepted {key}"));
        let error = KafkaSetupError::config(refused).to_string();
        assert!(!error.contains(secret), "{key}: {error}");
        assert!(error.contains(key), "the key is named: {error}");
    }
}

/// librdkafka's producer default `allow.auto.create.topics=true` makes a metadata request for a
/// missing topic create it on a broker with `auto.create.topics.enable=true`: every client streamagg
/// builds (admin, start-up checks, discovery, readers, producers, the processor's consumer) says
/// false, and librdkafka takes the property for each client type.
#[test]
fn no_client_asks_the_broker_to_create_the_topics_it_looks_up() {
    use rdkafka::admin::AdminClient;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;
    let settings = KafkaSettings {
        brokers: "127.0.0.1:1".into(),
        timeout: Duration::from_secs(1),
        security: KafkaSecurity::default(),
    };
    let configs = [
        ("client", settings.client_config("t")),
        ("consumer", settings.consumer_config("t")),
        (
            "producer",
            crate::producer::producer_config(&settings, "t", &Default::default()),
        ),
    ];
    for (what, config) in &configs {
        assert_eq!(
            config.get("allow.auto.create.topics"),
            Some("false"),
            "{what}"
        );
        let native = config.create_native_config().expect("librdkafka takes it");
        assert_eq!(
            native.get("allow.auto.create.topics").ok().as_deref(),
            Some("false"),
            "{what}"
        );
    }
    let producer: BaseProducer = configs[2].1.create().expect("a producer takes it");
    let consumer: BaseConsumer = configs[1].1.create().expect("a consumer takes it");
    let admin: AdminClient<StreamaggContext> =
        crate::kafka::admin::admin_client(&settings).expect("an admin client takes it");
    drop((producer, consumer, admin));
}

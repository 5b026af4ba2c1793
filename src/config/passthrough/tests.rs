//! Tests of [`super`] (the librdkafka pass-through check).

use super::*;

fn checked(client: Client, key: &str, value: &str, insecure: bool) -> Result<String, String> {
    check(client, key, value.to_owned(), &[], insecure)
        .map(|(key, _)| key)
        .map_err(|e| e.to_string())
}

#[test]
fn aliases_and_case_cannot_slip_past_the_managed_keys() {
    let cases = [
        (
            Client::Producer,
            "metadata.broker.list",
            "bootstrap.servers",
        ),
        (Client::Producer, "request.required.acks", "acks"),
        (Client::Producer, "SASL.PASSWORD", "sasl.password"),
        (Client::Producer, "sasl.mechanisms", "sasl.mechanism"),
        (Client::Consumer, "auto.commit.enable", "enable.auto.commit"),
        (Client::Consumer, " Group.Id ", "group.id"),
        (Client::Producer, "topic.partitioner", "topic.partitioner"),
        (
            Client::Producer,
            "Allow.Auto.Create.Topics",
            "allow.auto.create.topics",
        ),
        (
            Client::Consumer,
            "allow.auto.create.topics",
            "allow.auto.create.topics",
        ),
        (
            Client::Producer,
            "topic.request.required.acks",
            "topic.request.required.acks",
        ),
    ];
    for (client, key, canonical_key) in cases {
        let error = checked(client, key, "x", false).expect_err(key);
        assert!(
            error.ends_with(&format!(
                "may not set '{canonical_key}': streamagg manages it"
            )),
            "{key}: {error}"
        );
    }
}

#[test]
fn code_loading_and_inline_secrets_are_refused_and_the_value_is_never_shown() {
    let value = "s3cr3t-value";
    for key in [
        "plugin.library.paths",
        "ssl.engine.location",
        "ssl.providers",
        "sasl.kerberos.kinit.cmd",
        "ssl.key.pem",
        "ssl.ca.pem",
        "ssl.certificate.pem",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.oauthbearer.assertion.private.key.passphrase",
    ] {
        for client in [Client::Consumer, Client::Producer] {
            let error = checked(client, key, value, true).expect_err(key);
            assert!(error.contains("may not set"), "{key}: {error}");
            assert!(!error.contains(value), "{key}: the value is shown: {error}");
        }
    }
}

#[test]
fn switching_off_tls_verification_needs_the_explicit_setting() {
    let cases = [
        ("enable.ssl.certificate.verification", "false", true),
        ("enable.ssl.certificate.verification", "0", true),
        ("enable.ssl.certificate.verification", "FALSE", true),
        ("enable.ssl.certificate.verification", "true", false),
        ("ssl.endpoint.identification.algorithm", "none", true),
        ("ssl.endpoint.identification.algorithm", "", true),
        ("ssl.endpoint.identification.algorithm", "https", false),
        ("linger.ms", "5", false),
    ];
    for (key, value, insecure) in cases {
        let strict = checked(Client::Producer, key, value, false);
        assert_eq!(strict.is_err(), insecure, "{key}={value}: {strict:?}");
        if insecure {
            let error = strict.unwrap_err();
            assert!(error.contains("allow_insecure_tls"), "{error}");
            assert!(!error.contains(&format!("={value}")), "{error}");
        }
        assert_eq!(
            checked(Client::Producer, key, value, true).as_deref(),
            Ok(key),
            "{key}={value} with allow_insecure_tls"
        );
        assert_eq!(disables_tls_verification(key, value), insecure);
    }
}

#[test]
fn a_key_set_twice_through_an_alias_is_refused() {
    let table = BTreeMap::from([
        ("linger.ms".to_owned(), toml::Value::Integer(5)),
        (
            "queue.buffering.max.ms".to_owned(),
            toml::Value::Integer(50),
        ),
    ]);
    let error = from_table(Client::Producer, table, false)
        .expect_err("twice")
        .to_string();
    assert!(error.contains("sets 'linger.ms' twice"), "{error}");
    let table = BTreeMap::from([("Linger.MS".to_owned(), toml::Value::Integer(5))]);
    assert_eq!(
        from_table(Client::Producer, table, false),
        Ok(BTreeMap::from([("linger.ms".to_owned(), "5".to_owned())]))
    );
}

#[test]
fn a_topic_prefix_reaches_the_same_checks_but_real_topic_dot_keys_pass() {
    let extra = ["message.timeout.ms"];
    let refused = check(
        Client::Producer,
        "topic.delivery.timeout.ms",
        "0".into(),
        &extra,
        false,
    );
    assert!(refused.is_err(), "{refused:?}");
    // Global properties whose own name starts with `topic.` are not managed.
    assert_eq!(
        check(
            Client::Consumer,
            "topic.metadata.refresh.interval.ms",
            "1000".into(),
            &[],
            false
        ),
        Ok((
            "topic.metadata.refresh.interval.ms".to_owned(),
            "1000".to_owned()
        ))
    );
}

//! librdkafka properties passed through unchanged (`[kafka.consumer]` / `[kafka.producer]` in
//! `run`'s file, `--producer-property` of `ingest`), checked once before any client sees them.
//!
//! A key is first made canonical (librdkafka's aliases, any case) so that no spelling slips past the
//! checks. Refused are: the keys streamagg sets itself, keys that load code into the process or run
//! commands, keys that carry key material or secrets inline (use the `*_location` / `*_file`
//! settings), and — unless `allow_insecure_tls` is on — keys that switch off TLS verification.
//! Errors name the key, never the value: a value may be a secret.

use std::collections::BTreeMap;

use super::ConfigError;

/// librdkafka properties every client gets from `KafkaSettings`: the cluster, how to reach it, and
/// that asking about a topic never creates it (`allow.auto.create.topics`).
pub const MANAGED_CONNECTION_KEYS: &[&str] = &[
    "allow.auto.create.topics",
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
];

/// librdkafka consumer properties streamagg sets itself, besides the connection keys.
pub const MANAGED_CONSUMER_KEYS: &[&str] = &[
    "group.instance.id",
    "group.id",
    "group.protocol",
    "partition.assignment.strategy",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "isolation.level",
];

/// librdkafka producer properties streamagg sets itself, besides the connection keys.
pub const MANAGED_PRODUCER_KEYS: &[&str] = &[
    "enable.idempotence",
    "transactional.id",
    "acks",
    "partitioner",
];

/// librdkafka's aliases (`CONFIGURATION.md`: "Alias for …"), each with the name used here.
const ALIASES: &[(&str, &str)] = &[
    ("metadata.broker.list", "bootstrap.servers"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oauthbearer.client.id",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.client.secret",
    ),
    ("fetch.message.max.bytes", "max.partition.fetch.bytes"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("message.send.max.retries", "retries"),
    ("compression.codec", "compression.type"),
    ("request.required.acks", "acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("auto.commit.enable", "enable.auto.commit"),
];

/// Keys that load code into the process or run a command.
const CODE_LOADING_KEYS: &[&str] = &[
    "plugin.library.paths",
    "ssl.engine.location",
    "ssl.engine.id",
    "ssl.providers",
    "sasl.kerberos.kinit.cmd",
];

/// Keys that carry key material or a secret inline, where a config file or a flag would show it.
const INLINE_SECRET_KEYS: &[&str] = &[
    "ssl.key.pem",
    "ssl.certificate.pem",
    "ssl.ca.pem",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.assertion.private.key.passphrase",
];

/// Which client the properties are for, and where they were written (for the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Consumer,
    Producer,
}

impl Client {
    fn table(self) -> &'static str {
        match self {
            Client::Consumer => "consumer",
            Client::Producer => "producer",
        }
    }

    fn managed(self) -> &'static [&'static str] {
        match self {
            Client::Consumer => MANAGED_CONSUMER_KEYS,
            Client::Producer => MANAGED_PRODUCER_KEYS,
        }
    }
}

/// The name librdkafka knows a property by: lower case, aliases resolved.
pub fn canonical(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| (*name).to_owned())
}

/// Whether a property (canonical key) switches off the TLS checks that keep a man in the middle out:
/// certificate verification or host-name verification.
pub fn disables_tls_verification(key: &str, value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    match key {
        "enable.ssl.certificate.verification" => !matches!(value.as_str(), "true" | "t" | "1"),
        "ssl.endpoint.identification.algorithm" => value != "https",
        _ => false,
    }
}

/// Checks one property for `client`, with `extra_managed` keys the caller sets too; returns it
/// with its canonical key.
pub fn check(
    client: Client,
    key: &str,
    value: String,
    extra_managed: &[&str],
    allow_insecure_tls: bool,
) -> Result<(String, String), ConfigError> {
    let table = client.table();
    let key = canonical(key);
    // librdkafka hands a key it does not know globally to the default topic configuration, which
    // strips a `topic.` prefix: `topic.partitioner` sets `partitioner`. Both names are checked.
    let names = [Some(key.clone()), key.strip_prefix("topic.").map(canonical)];
    let is = |list: &[&str]| {
        names
            .iter()
            .flatten()
            .any(|name| list.contains(&name.as_str()))
    };
    let refused = |reason: &'static str| ConfigError::Refused {
        table,
        key: key.clone(),
        reason,
    };
    if is(client.managed()) || is(MANAGED_CONNECTION_KEYS) || is(extra_managed) {
        return Err(ConfigError::Managed { table, key });
    }
    if is(CODE_LOADING_KEYS) {
        return Err(refused("it loads code into the process or runs a command"));
    }
    if is(INLINE_SECRET_KEYS) {
        return Err(refused(
            "it holds key material or a secret inline; use the *_location and *_file settings",
        ));
    }
    let insecure = names
        .iter()
        .flatten()
        .any(|name| disables_tls_verification(name, &value));
    if !allow_insecure_tls && insecure {
        return Err(refused(
            "it switches off TLS verification, which lets a man in the middle read and change \
             the traffic; set allow_insecure_tls to allow it (test clusters only)",
        ));
    }
    Ok((key, value))
}

/// `[kafka.consumer]` or `[kafka.producer]` of `run`'s file: values as strings, each key checked.
pub fn from_table(
    client: Client,
    values: BTreeMap<String, toml::Value>,
    allow_insecure_tls: bool,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let table = client.table();
    values
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::Invalid {
                        key: "kafka",
                        reason: format!(
                            "[kafka.{table}] '{key}' must be a string, number or boolean, not {}",
                            other.type_str()
                        ),
                    })
                }
            };
            check(client, &key, value, &[], allow_insecure_tls)
        })
        .try_fold(BTreeMap::new(), |mut properties, checked| {
            let (key, value) = checked?;
            if properties.contains_key(&key) {
                return Err(ConfigError::Invalid {
                    key: "kafka",
                    reason: format!("[kafka.{table}] sets '{key}' twice (once by an alias)"),
                });
            }
            properties.insert(key, value);
            Ok(properties)
        })
}

#[cfg(test)]
mod tests;

//! The secure broker that `scripts/kafka up --secure` runs (SASL_SSL with SCRAM users, a throwaway
//! CA, the StandardAuthorizer, and a mutual-TLS listener), as the security tests reach it: its
//! connection flags for the binary, its connection settings for the tests' own clients, and topics
//! created on it.
//!
//! `STREAMAGG_TEST_SECURE_BROKERS` (the SASL_SSL bootstrap), `STREAMAGG_TEST_MTLS_BROKERS` (the mTLS
//! bootstrap) and `STREAMAGG_TEST_SECURE_DIR` (the CA, the client certificate and the password files)
//! say where it is; `scripts/test` starts it and sets them. Without them these tests fail: a security
//! test that silently skips proves nothing.

use std::path::PathBuf;
use std::time::Duration;

use streamagg::config::cluster::{KafkaSecurity, KafkaSettings, Secret};
use streamagg::reader::{read_to_end, Isolation, RawRecord};

use crate::common::TestTopic;
use crate::scenario::Flags;

/// The user with every right, and the one that may read but not write topics.
pub const ADMIN: &str = "streamagg";
pub const LIMITED: &str = "limited";

/// The secure broker the tests run against.
pub struct Secure {
    brokers: String,
    mtls_brokers: String,
    dir: PathBuf,
}

pub fn secure() -> Secure {
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
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    pub fn password(&self, user: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{user}.password")))
            .expect("password file")
            .trim()
            .to_owned()
    }

    /// Connection settings for `user` with SCRAM-SHA-512, trusting the broker's CA.
    pub fn settings(&self, user: &str) -> KafkaSettings {
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
    pub fn key_password(&self) -> String {
        std::fs::read_to_string(self.dir.join("client.key.password"))
            .expect("key password file")
            .trim()
            .to_owned()
    }

    /// The CLI flags for the mTLS listener: SSL with the client certificate, whose key's passphrase
    /// comes from its file.
    pub fn mtls_flags(&self) -> Flags {
        Flags::of(&[
            ("--brokers", &self.mtls_brokers),
            ("--security-protocol", "SSL"),
            ("--ssl-ca-location", &self.path("ca.crt")),
            ("--ssl-certificate-location", &self.path("client.crt")),
            ("--ssl-key-location", &self.path("client.key")),
            ("--ssl-key-password-file", &self.path("client.key.password")),
        ])
    }

    /// The CLI flags for `user` (password from its file), `mechanism` and the CA file `ca`.
    pub fn flags(&self, user: &str, mechanism: &str, ca: &str) -> Flags {
        Flags::of(&[
            ("--brokers", &self.brokers),
            ("--security-protocol", "SASL_SSL"),
            ("--sasl-mechanism", mechanism),
            ("--sasl-username", user),
            (
                "--sasl-password-file",
                &self.path(&format!("{user}.password")),
            ),
            ("--ssl-ca-location", &self.path(ca)),
        ])
    }

    /// Everything on `topic`, read over SASL_SSL as the admin user.
    pub fn read_all(&self, topic: &str) -> Vec<RawRecord> {
        read_to_end(
            &self.settings(ADMIN),
            topic,
            Isolation::ReadCommitted,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("reading {topic} over SASL_SSL: {e}"))
    }

    /// A topic with a random name on the secure broker, created and deleted over SASL_SSL by the
    /// admin user.
    pub fn topic(&self, purpose: &str, partitions: i32) -> TestTopic {
        TestTopic::create_on(
            self.settings(ADMIN),
            &format!("secure-{purpose}"),
            partitions,
        )
    }
}

//! Integration tests against a real Apache Kafka broker (`scripts/kafka up`) and the real binary.
//! One test binary, so the crate links once.
//!
//! - Pure logic (`codec`, `window`, `checkpoint`, `config`, `generate`, `encoding`) is
//!   unit-tested, table-driven, with independent oracles (`apache-avro` for the wire format, the
//!   standard library's float parser for JSON numbers). `window` also has property tests (proptest)
//!   against an oracle that groups events with its own arithmetic: any in-grace arrival order gives the
//!   same windows in `(window_start, source)` order; under any order every event is in exactly one
//!   window or counted late; checkpoint-and-restore at any point changes nothing.
//! - `fuzz/` runs every target for 20 s in `scripts/test` (`scripts/fuzz --seconds N` for longer), and
//!   `scripts/supply-chain` checks `deny.toml`.
//! - `store` is tested on a real RocksDB in a temp dir, including reopening.
//! - `tests/integration/` is one test binary run against a real broker (`STREAMAGG_TEST_BROKERS`, default
//!   `127.0.0.1:9092`, started by `scripts/test` when none runs) and the real binary. The processor tests
//!   compare the output, late and DLQ topics with an oracle computed independently (serde_json /
//!   `apache-avro` decoding, a direct re-statement of the semantics: `oracle.rs`) from the input as it
//!   sits in the topic (seeded datasets, encoded by the test itself: `dataset.rs`) — for JSON and Avro,
//!   across a SIGTERM restart, and with two instances splitting partitions.
//!   Processor tests are told as scenarios (`scenario.rs`: topics, dataset, group, instances, wait,
//!   compare with the oracle); faults are the test's own lines between those steps.
//!   `faults.rs` holds the harsh ones: ten seeded `kill -9`s under both guarantees, three instances
//!   joining, leaving, dying and coming back cold, a SIGSTOPped zombie, and a broker restart (which runs
//!   alone, after the rest, because it restarts the shared broker).
//!   `hostile_input.rs` (an oversized source, side outputs too large for their topic, a burst of
//!   DLQ copies, headers a producer cannot copy) and `hostile_operations.rs` (a recreated input
//!   topic, changed semantics, idle close and hand-off, a transaction timeout, abort and redo,
//!   another group's state dir) hold each outcome to the oracle or to exact expectations;
//!   `trimmed_input.rs` deletes records before they are read (a short rebuild, a resume below the
//!   log's start) and holds the counts of what was lost to offsets read from the broker.
//!   `reset.rs` resets a group's offsets with Kafka's own `kafka-consumer-groups` and with
//!   `streamagg reset`, under both guarantees, and holds the replay to the oracle: every window
//!   emitted once more, the old state dirs dropped; `streamagg reset` refuses a group with members.
//!   `ingest.rs` drives the gateway binary: a load of 32 HTTP clients plus TCP connections whose every
//!   acknowledged event must be on the topic exactly once, as sent (read back with `apache-avro`), a
//!   `kill -9` under load (no acknowledged event lost), hostile clients with the gateway's RSS sampled
//!   against a limit, start-up errors, and a broker stop under load (exclusive, like the broker restart).
//!   `operator_tools.rs` holds the operator's commands to the broker: `consume` (keys, headers,
//!   positions, raw bytes, seeking by time, following), `dlq replay` (records whose cause was fixed
//!   aggregate like the oracle after the replay; re-runs, a stopped run and a record that fails
//!   again replay each record once; null keys and values stay null), `topics create`/`ensure` and `run --create-topics`
//!   (a lookup never creates a topic, also on a broker with auto-creation on),
//!   completions and the man page.
//!   `security.rs` runs against the secure broker (`scripts/kafka up --secure`,
//!   `STREAMAGG_TEST_SECURE_BROKERS`/`_MTLS_BROKERS`/`_DIR`): `produce` and `run` over SASL_SSL + SCRAM
//!   and over mutual TLS with an encrypted client key equal the oracle, and no log, `/metrics` or
//!   `--help` carries the password or the passphrase; a wrong password, an untrusted CA, no client
//!   certificate and a user without write rights on the output topic each end in one error line and
//!   exit 1, in bounded time (`bounded.rs`); the broker's flags and settings are in `secure_broker.rs`.
//!   `live_state.rs` queries `GET /v1/windows/{source}`: an open window equal to the oracle (its
//!   partition as Kafka placed the records), `401` without the token, answers that never go back
//!   while a backlog is processed, two instances naming each other as owners, which
//!   `streamagg query` follows, and a rogue group member's made-up owner address, which `query`
//!   names but never sends the token to unless told with `--peer`.
//!   `cluster.rs` runs on the replicated cluster (`scripts/kafka --cluster`, three nodes, replication
//!   3, min ISR 2; `scripts/test` brings it up and runs these after the rest): kill
//!   -9 of an input partition's leader, of the transaction coordinator mid-transaction and of the
//!   group coordinator mid-rebalance, two of three nodes stopped, a rolling restart, and the
//!   gateway through a leader kill, each held to the oracle (exited instances are restarted).
//!   `repartition.rs` adds partitions to a live input topic (3 → 5): the new ones are picked up
//!   without a restart, every window part equals the oracle run per partition, the parts add up to
//!   the whole window, and one part of every split window carries `streamagg.possibly_split`
//!   (producers switching after and before the processor knows); streamagg's murmur2 and crc32
//!   equal librdkafka's partitioners.
//!   `percentiles.rs` holds `--percentiles` to exact rank values computed from the oracle's windows
//!   (straight, across `kill -9`s, across a hand-off that rebuilds); `output_timestamps.rs` an
//!   output topic that refuses old timestamps (every oracle comparison also checks that output
//!   records carry their window's last instant and side copies their input's timestamp).
//!   `schema_registry.rs` holds the `avro-confluent` format to the reference client: Confluent's
//!   `confluent-kafka` `AvroSerializer` (three evolving writer schemas and an incompatible one) and
//!   `AvroDeserializer` (the output, read_committed) against the stand-in `tests/registry/registry.py`,
//!   equal to the oracle; an unreachable registry stops the run with no DLQ record and a restart
//!   resumes; basic auth never shows the password; raw Avro of another writer schema
//!   (`--input-writer-schema`). It needs `STREAMAGG_TEST_PYTHON` (the tools venv) and fails without it.
//!   Every test creates topics with random names and deletes them; an unreachable broker fails the
//!   tests, it never skips them.
//! - Everything builds in the release profile (tests, clippy, the binary) so RocksDB and librdkafka are
//!   compiled once, into `~/.cache/streamagg/target`.

mod bounded;
mod cluster;
mod common;
mod dataset;
mod deployment;
mod faults;
mod foundation;
mod gateway_client;
mod gateway_hostile;
mod gateway_limits;
mod hostile_input;
mod hostile_operations;
mod ingest;
mod live_state;
mod observability;
mod operator_tools;
mod oracle;
mod output_timestamps;
mod percentiles;
mod processor;
mod repartition;
mod repartition_review;
mod repartition_review2;
mod reset;
mod rollups;
mod scenario;
mod schema_registry;
mod secure_broker;
mod security;
mod settings;
mod trimmed_input;

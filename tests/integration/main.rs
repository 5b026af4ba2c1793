//! Integration tests against a real Apache Kafka broker (`scripts/kafka up`) and the real binary.
//! One test binary, so the crate links once.

mod common;
mod deployment;
mod faults;
mod foundation;
mod hostile;
mod ingest;
mod observability;
mod oracle;
mod processor;
mod security;

//! Live state over HTTP: `GET /v1/windows/{source}` answers with the still-open windows of a source
//! this instance owns, or with the partition the source maps to and the instance that owns it.
//!
//! The flow: the telemetry server ([`crate::telemetry`]) checks the bearer token and decodes the
//! source ([`answer`]); [`discovery`] maps it to its input partitions (Java's murmur2 partitioner,
//! [`crate::partitioner`]) and, from a briefly cached description of the consumer group ([`assignment`]),
//! to their owners; the question then goes over a bounded channel ([`queries`]) to the poll loop,
//! which answers it between two batches of records from its own windows — so a read never waits on a
//! lock the poll loop holds, and never sees half of a record applied.
//!
//! `streamagg query` follows an owner only to an address the user trusts ([`follow`]).
//!
//! `assignment`, `answer` and `follow` are pure; `queries` and `discovery` are the
//! runtime edge.

pub mod answer;
pub mod assignment;
#[cfg(feature = "runtime")]
pub mod discovery;
pub mod follow;
#[cfg(feature = "runtime")]
pub mod queries;
#[cfg(feature = "runtime")]
pub mod service;

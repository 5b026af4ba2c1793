//! `streamagg ingest`: a gateway that turns newline-delimited JSON over TCP and `POST /v1/events` over
//! HTTP into `TrafficEvent` records on a Kafka topic, keyed by `source`, for traffic sources that
//! cannot speak Kafka.
//!
//! Events are validated with the processor's own rules ([`frame::validate_line`]), encoded with
//! [`crate::codec::encode`] and produced by one idempotent, batching, compressing producer configured
//! as [`crate::producer`]'s. Every event handed to the producer holds permits of one byte budget
//! ([`settings::Limits::max_in_flight_bytes`]) until its delivery report: when the budget is spent, TCP
//! connections stop being read and HTTP requests are answered `503`, so memory stays bounded.
//!
//! **Invariant:** an HTTP `200` (or a `400` that counts accepted events) is sent only after Kafka
//! acknowledged every accepted event of the request. TCP has no acknowledgement: it is at-most-once
//! if the gateway dies.

pub mod frame;
pub mod response;
#[cfg(feature = "runtime")]
pub mod settings;

#[cfg(feature = "runtime")]
mod body;
#[cfg(feature = "runtime")]
mod gateway;
#[cfg(feature = "runtime")]
mod http;
#[cfg(feature = "runtime")]
mod server;
#[cfg(feature = "runtime")]
mod tcp;

#[cfg(feature = "runtime")]
use gateway::{EnqueueError, Gateway, Protocol};
#[cfg(feature = "runtime")]
pub use server::{run, IngestError};

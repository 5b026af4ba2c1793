//! streamagg: per-minute event-time traffic averages from Apache Kafka.
//!
//! The modules follow the data: [`generate`] and [`produce`] write traffic to Kafka; [`pipeline`]
//! runs the processor — records are decoded by [`codec`] into [`model`] records, assigned to windows
//! by [`window`], kept in [`store`] with the offsets [`checkpoint`] decides on, and emitted by
//! [`sink`]. [`config`] validates the processor's settings, [`consume`] reads topics back, and
//! [`kafka`] is the shared edge to the cluster. [`telemetry`] names the metrics and serves them with
//! the health probes. [`ingest`] is the gateway that turns TCP and HTTP traffic into input events.
//! See `ARCHITECTURE.md` for the whole map.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod consume;
pub mod generate;
pub mod ingest;
pub mod kafka;
pub mod model;
pub mod pipeline;
pub mod produce;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod window;

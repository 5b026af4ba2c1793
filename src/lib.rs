//! streamagg: per-minute event-time traffic averages from Apache Kafka.
//!
//! The modules follow the data: [`generate`] makes traffic and [`producer`] writes it to Kafka; [`pipeline`]
//! runs the processor — records are decoded by [`codec`] into [`model`] records, assigned to windows
//! by [`window`], kept in [`store`] with the offsets [`checkpoint`] decides on, and emitted by
//! [`sink`]. [`config`] validates the processor's settings, [`reader`] reads topics back, and
//! [`kafka`] is the shared edge to the cluster. [`telemetry`] names the metrics and serves them with
//! the health probes. [`ingest`] is the gateway that turns TCP and HTTP traffic into input events.
//! See `ARCHITECTURE.md` for the whole map.
//!
//! The pure core (codecs, windows, the store's byte layout, config validation, checkpoint decisions)
//! builds without the `runtime` feature, i.e. without librdkafka and RocksDB: that is what `fuzz/`
//! links against.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod encoding;
pub mod generate;
#[cfg(feature = "runtime")]
pub mod ingest;
#[cfg(feature = "runtime")]
pub mod kafka;
pub mod model;
#[cfg(feature = "runtime")]
pub mod pipeline;
pub mod process_metrics;
#[cfg(feature = "runtime")]
pub mod processor;
#[cfg(feature = "runtime")]
pub mod producer;
#[cfg(feature = "runtime")]
pub mod reader;
pub mod route;
#[cfg(feature = "runtime")]
pub mod sink;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "runtime")]
pub mod telemetry;
pub mod window;

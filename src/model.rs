//! The two records of the public contract: `TrafficEvent` (what upstream producers write) and
//! `TrafficAverage` (what streamagg emits per source and window). Field names match `schemas/*.avsc`;
//! in JSON, timestamps are integer epoch milliseconds.

use serde::{Deserialize, Serialize};

/// One traffic measurement. Kafka key: `source`, UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficEvent {
    /// The link, interface or sensor the measurement is from.
    pub source: String,
    /// Event time, epoch milliseconds.
    pub timestamp: i64,
    /// The traffic measurement.
    pub value: f64,
}

/// The aggregate of one source over the event-time window `[window_start, window_end)`.
/// Kafka key: `source`, UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficAverage {
    pub source: String,
    /// Inclusive, epoch milliseconds.
    pub window_start: i64,
    /// Exclusive, epoch milliseconds.
    pub window_end: i64,
    pub count: i64,
    pub sum: f64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    /// Percentiles of `value` over the window (`--percentiles`), each within the run's relative
    /// accuracy of the exact value at its rank; absent (`null` in Avro, left out of JSON) when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

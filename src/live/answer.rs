//! The shapes of `GET /v1/windows/{source}`: the source from the path, and the JSON answer. Pure.
//!
//! ```json
//! {"source": "link-1", "owned": true, "partitions": [
//!   {"topic": "traffic", "partition": 3, "owned": true, "rebuilding": false, "stream_time": 1700000075000,
//!    "windows": [{"source": "link-1", "window_start": 1700000040000, "window_end": 1700000100000,
//!                 "count": 12, "sum": 840.0, "avg": 70.0, "min": 12.5, "max": 99.0, "final": false}]}]}
//! ```
//!
//! One entry per input topic. A partition this instance does not own has `"owned": false` and, when
//! the group description names it, `"owner": {"client_id", "client_host", "address"}` (`address`:
//! where that instance serves this endpoint, if it publishes one).

use serde::{Deserialize, Serialize};

use super::assignment::Owner;
use crate::window::Aggregate;

/// The path prefix of the endpoint.
pub const PATH_PREFIX: &str = "/v1/windows/";

/// The longest source the endpoint looks up, as the processor accepts (bytes).
pub const MAX_SOURCE_BYTES: usize = 1024;

/// Why a path does not name a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not found: try {PATH_PREFIX}<source>")]
    NotThisEndpoint,
    #[error("the source is empty, not UTF-8 after percent-decoding, or longer than {MAX_SOURCE_BYTES} bytes")]
    BadSource,
}

/// The source a request path names: the rest of the path after [`PATH_PREFIX`], percent-decoded.
pub fn source_of(path: &str) -> Result<String, PathError> {
    let encoded = path
        .strip_prefix(PATH_PREFIX)
        .ok_or(PathError::NotThisEndpoint)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2).ok_or(PathError::BadSource)?;
            let text = std::str::from_utf8(hex).map_err(|_| PathError::BadSource)?;
            bytes.push(u8::from_str_radix(text, 16).map_err(|_| PathError::BadSource)?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    let source = String::from_utf8(bytes).map_err(|_| PathError::BadSource)?;
    if source.is_empty() || source.len() > MAX_SOURCE_BYTES {
        return Err(PathError::BadSource);
    }
    Ok(source)
}

/// `source` percent-encoded for a path segment (what [`source_of`] decodes).
pub fn encode_source(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for byte in source.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One window of a source: the fields of `TrafficAverage`, and whether it is final (closed and
/// emitted) or still open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveWindow {
    pub source: String,
    pub window_start: i64,
    pub window_end: i64,
    pub count: i64,
    pub sum: f64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl LiveWindow {
    /// The still-open window of `source` starting at `window_start`, `size_ms` long.
    pub fn open(source: &str, window_start: i64, size_ms: i64, aggregate: &Aggregate) -> Self {
        LiveWindow {
            source: source.to_owned(),
            window_start,
            window_end: window_start.saturating_add(size_ms),
            count: i64::try_from(aggregate.count).unwrap_or(i64::MAX),
            sum: aggregate.sum,
            avg: aggregate.sum / aggregate.count.max(1) as f64,
            min: aggregate.min,
            max: aggregate.max,
            is_final: false,
        }
    }
}

/// What the poll loop knows of one partition it owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedPartition {
    /// Still replaying records to rebuild its windows: they are not complete yet.
    pub rebuilding: bool,
    pub stream_time: Option<i64>,
    pub windows: Vec<LiveWindow>,
}

/// One input topic's partition of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionAnswer {
    pub topic: String,
    pub partition: i32,
    pub owned: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub state: Option<OwnedPartition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowsAnswer {
    pub source: String,
    /// Whether this instance owns any of the source's partitions.
    pub owned: bool,
    pub partitions: Vec<PartitionAnswer>,
}

impl WindowsAnswer {
    pub fn new(source: String, partitions: Vec<PartitionAnswer>) -> Self {
        WindowsAnswer {
            owned: partitions.iter().any(|p| p.owned),
            source,
            partitions,
        }
    }

    /// Where to ask instead, when this instance owns none of the source's partitions: the first
    /// published address of an owner.
    pub fn redirect(&self) -> Option<&str> {
        if self.owned {
            return None;
        }
        self.partitions
            .iter()
            .find_map(|p| p.owner.as_ref()?.address.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_percent_decoded_from_the_path() {
        for (path, expected) in [
            ("/v1/windows/link-1", Ok("link-1".to_owned())),
            ("/v1/windows/a%20b%2Fc", Ok("a b/c".to_owned())),
            ("/v1/windows/caf%C3%A9", Ok("café".to_owned())),
            ("/v1/windows/", Err(PathError::BadSource)),
            ("/v1/windows/%zz", Err(PathError::BadSource)),
            ("/v1/windows/%4", Err(PathError::BadSource)),
            ("/v1/windows/%FF", Err(PathError::BadSource)),
            ("/v1/window/x", Err(PathError::NotThisEndpoint)),
        ] {
            assert_eq!(source_of(path), expected, "{path}");
        }
        let long = format!("/v1/windows/{}", "x".repeat(MAX_SOURCE_BYTES + 1));
        assert_eq!(source_of(&long), Err(PathError::BadSource));
        for source in [
            "plain",
            "a b/c?d#e%f",
            "café ☃",
            "x".repeat(MAX_SOURCE_BYTES).as_str(),
        ] {
            let path = format!("{PATH_PREFIX}{}", encode_source(source));
            assert_eq!(source_of(&path).as_deref(), Ok(source));
        }
    }

    #[test]
    fn answers_carry_traffic_average_fields_and_final_false() {
        let aggregate = Aggregate {
            count: 4,
            sum: 10.0,
            min: 1.0,
            max: 4.0,
            first_offset: 7,
        };
        let window = LiveWindow::open("s", 60_000, 60_000, &aggregate);
        let owned = PartitionAnswer {
            topic: "in".into(),
            partition: 1,
            owned: true,
            state: Some(OwnedPartition {
                rebuilding: false,
                stream_time: Some(90_000),
                windows: vec![window],
            }),
            owner: None,
        };
        let answer = WindowsAnswer::new("s".into(), vec![owned]);
        let json: serde_json::Value = serde_json::to_value(&answer).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"source": "s", "owned": true, "partitions": [
                {"topic": "in", "partition": 1, "owned": true, "rebuilding": false,
                 "stream_time": 90_000, "windows": [
                    {"source": "s", "window_start": 60_000, "window_end": 120_000, "count": 4,
                     "sum": 10.0, "avg": 2.5, "min": 1.0, "max": 4.0, "final": false}]}]})
        );
        // The window's fields are exactly TrafficAverage's plus `final`.
        let mut fields: Vec<String> = json["partitions"][0]["windows"][0]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        fields.retain(|f| f != "final");
        let average = crate::model::TrafficAverage {
            source: "s".into(),
            window_start: 0,
            window_end: 0,
            count: 0,
            sum: 0.0,
            avg: 0.0,
            min: 0.0,
            max: 0.0,
        };
        let mut expected: Vec<String> = serde_json::to_value(&average)
            .expect("json")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        fields.sort();
        expected.sort();
        assert_eq!(fields, expected);
        assert_eq!(answer.redirect(), None);
        let back: WindowsAnswer = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, answer);
    }

    #[test]
    fn an_answer_for_a_source_owned_elsewhere_points_at_its_owner() {
        let elsewhere = |address: Option<&str>| PartitionAnswer {
            topic: "in".into(),
            partition: 0,
            owned: false,
            state: None,
            owner: Some(Owner {
                client_id: "streamagg@h:1".into(),
                client_host: "10.0.0.9".into(),
                address: address.map(str::to_owned),
            }),
        };
        let answer = WindowsAnswer::new("s".into(), vec![elsewhere(None), elsewhere(Some("h:1"))]);
        assert!(!answer.owned);
        assert_eq!(answer.redirect(), Some("h:1"));
        let json = serde_json::to_value(&answer).expect("json");
        assert_eq!(json["partitions"][0]["owner"]["client_host"], "10.0.0.9");
        assert!(json["partitions"][0].get("windows").is_none());
        let back: WindowsAnswer = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, answer);
    }
}

//! The shapes of `GET /v1/windows/{source}`: the source from the path, and the JSON answer. Pure.
//!
//! ```json
//! {"source": "link-1", "owned": true, "complete": true, "partitions": [
//!   {"topic": "traffic", "partition": 3, "owned": true, "rebuilding": false, "stream_time": 1700000075000,
//!    "windows": [{"source": "link-1", "window_start": 1700000040000, "window_end": 1700000100000,
//!                 "count": 12, "sum": 840.0, "avg": 70.0, "min": 12.5, "max": 99.0, "final": false}]}]}
//! ```
//!
//! One entry per input topic. A partition this instance does not own has `"owned": false` and, when
//! the group description names it, `"owner": {"client_id", "client_host", "address"}` (`address`:
//! where that instance serves this endpoint, if it publishes one). `owned` says whether this
//! instance owns any of them, `complete` whether it owns all of them (with several input topics an
//! answer can be partial), and `elsewhere` lists, once each, the published addresses of the owners
//! of the missing ones.

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
    /// When the window may be one part of a window split between two partitions by partitions
    /// added to the input: the `streamagg.possibly_split` header's value (`partition=<p>
    /// home=<q> partitions=<n>`); the answer is then not `complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possibly_split: Option<String>,
}

impl LiveWindow {
    /// The still-open window `[window_start, window_end)` of `source`.
    pub fn open(source: &str, window_start: i64, window_end: i64, aggregate: &Aggregate) -> Self {
        LiveWindow {
            source: source.to_owned(),
            window_start,
            window_end,
            count: i64::try_from(aggregate.count).unwrap_or(i64::MAX),
            sum: aggregate.sum,
            avg: aggregate.sum / aggregate.count.max(1) as f64,
            min: aggregate.min,
            max: aggregate.max,
            is_final: false,
            possibly_split: None,
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
    /// Whether this answer holds any of the source's partitions.
    pub owned: bool,
    /// Whether it holds every one of them: when `false`, the windows of the partitions with
    /// `"owned": false` are missing from it, or a window may be one part of a window split by
    /// partitions added to the input (its `possibly_split` says so).
    #[serde(default)]
    pub complete: bool,
    /// The published addresses of the owners of the missing partitions, each once, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elsewhere: Vec<String>,
    pub partitions: Vec<PartitionAnswer>,
}

impl WindowsAnswer {
    pub fn new(source: String, partitions: Vec<PartitionAnswer>) -> Self {
        let mut answer = WindowsAnswer {
            source,
            owned: false,
            complete: false,
            elsewhere: Vec::new(),
            partitions,
        };
        answer.recount();
        answer
    }

    /// Sets `owned`, `complete` and `elsewhere` from the partitions.
    pub fn recount(&mut self) {
        self.owned = self.partitions.iter().any(|p| p.owned);
        self.complete = !self.partitions.is_empty()
            && self.partitions.iter().all(|p| p.owned)
            && self
                .partitions
                .iter()
                .flat_map(|p| p.state.iter().flat_map(|s| &s.windows))
                .all(|w| w.possibly_split.is_none());
        let mut elsewhere: Vec<String> = Vec::new();
        for partition in self.partitions.iter().filter(|p| !p.owned) {
            if let Some(address) = partition.owner.as_ref().and_then(|o| o.address.as_ref()) {
                if !elsewhere.contains(address) {
                    elsewhere.push(address.clone());
                }
            }
        }
        self.elsewhere = elsewhere;
    }

    /// Takes from `other` (another instance's answer for the same source) each partition this
    /// answer lacks and `other` holds, then recounts. Returns how many it took.
    pub fn fill_from(&mut self, other: &WindowsAnswer) -> usize {
        if other.source != self.source {
            return 0;
        }
        let mut taken = 0;
        for partition in self.partitions.iter_mut().filter(|p| !p.owned) {
            if let Some(found) = other.partitions.iter().find(|o| {
                o.owned && o.topic == partition.topic && o.partition == partition.partition
            }) {
                *partition = found.clone();
                taken += 1;
            }
        }
        self.recount();
        taken
    }

    /// The partitions this answer lacks, as `topic[partition]`.
    pub fn missing(&self) -> Vec<String> {
        self.partitions
            .iter()
            .filter(|p| !p.owned)
            .map(|p| format!("{}[{}]", p.topic, p.partition))
            .collect()
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
            sketch: None,
        };
        let window = LiveWindow::open("s", 60_000, 120_000, &aggregate);
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
            serde_json::json!({"source": "s", "owned": true, "complete": true, "partitions": [
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
            p50: None,
            p90: None,
            p95: None,
            p99: None,
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
        assert!(answer.elsewhere.is_empty());
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
        assert!(!answer.owned && !answer.complete);
        assert_eq!(answer.elsewhere, ["h:1"]);
        let json = serde_json::to_value(&answer).expect("json");
        assert_eq!(json["partitions"][0]["owner"]["client_host"], "10.0.0.9");
        assert!(json["partitions"][0].get("windows").is_none());
        let back: WindowsAnswer = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, answer);
    }

    /// Per input topic: `(owned here, owner's published address)`.
    fn answer_of(parts: &[(bool, Option<&str>)]) -> WindowsAnswer {
        let partitions = parts
            .iter()
            .enumerate()
            .map(|(i, &(owned, address))| PartitionAnswer {
                topic: format!("in-{i}"),
                partition: i as i32,
                owned,
                state: owned.then(|| OwnedPartition {
                    rebuilding: false,
                    stream_time: Some(i as i64),
                    windows: Vec::new(),
                }),
                owner: (!owned).then(|| Owner {
                    client_id: format!("streamagg@{}", address.unwrap_or("-")),
                    client_host: "10.0.0.9".into(),
                    address: address.map(str::to_owned),
                }),
            })
            .collect();
        WindowsAnswer::new("s".into(), partitions)
    }

    #[test]
    fn an_answer_holding_only_some_input_topics_says_it_is_partial_and_where_the_rest_is() {
        /// (per input topic: owned here and the owner's address; owned, complete, elsewhere,
        /// missing)
        type Case<'a> = (
            &'a [(bool, Option<&'a str>)],
            bool,
            bool,
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (&[(true, None), (true, None)], true, true, &[], &[]),
            (
                &[(true, None), (false, Some("b:1"))],
                true,
                false,
                &["b:1"],
                &["in-1[1]"],
            ),
            (
                &[
                    (false, Some("b:1")),
                    (false, Some("c:1")),
                    (false, Some("b:1")),
                ],
                false,
                false,
                &["b:1", "c:1"],
                &["in-0[0]", "in-1[1]", "in-2[2]"],
            ),
            (
                &[(true, None), (false, None)],
                true,
                false,
                &[],
                &["in-1[1]"],
            ),
            (&[], false, false, &[], &[]),
        ];
        for (parts, owned, complete, elsewhere, missing) in cases {
            let answer = answer_of(parts);
            assert_eq!(
                (answer.owned, answer.complete),
                (*owned, *complete),
                "{parts:?}"
            );
            assert_eq!(answer.elsewhere, *elsewhere, "{parts:?}");
            assert_eq!(answer.missing(), *missing, "{parts:?}");
            let json = serde_json::to_value(&answer).expect("json");
            assert_eq!(json["complete"], *complete, "{parts:?}");
            assert_eq!(json.get("elsewhere").is_some(), !elsewhere.is_empty());
            let back: WindowsAnswer = serde_json::from_value(json).expect("reads back");
            assert_eq!(back, answer);
        }
    }

    #[test]
    fn a_window_that_may_be_one_part_of_a_split_one_makes_the_answer_incomplete() {
        let mut answer = answer_of(&[(true, None), (true, None)]);
        assert!(answer.complete);
        let aggregate = crate::window::Aggregate::of(60.0, 0);
        let whole = LiveWindow::open("s", 0, 60_000, &aggregate);
        let part = LiveWindow {
            possibly_split: Some("partition=1 home=0 partitions=3".into()),
            ..whole.clone()
        };
        for (windows, complete) in [(vec![whole.clone()], true), (vec![whole, part], false)] {
            if let Some(state) = answer.partitions[1].state.as_mut() {
                state.windows = windows;
            }
            answer.recount();
            assert_eq!(answer.complete, complete);
            let json = serde_json::to_value(&answer).expect("json");
            assert_eq!(json.to_string().contains("possibly_split"), !complete);
            assert_eq!(
                serde_json::from_value::<WindowsAnswer>(json).expect("back"),
                answer
            );
        }
    }

    #[test]
    fn a_partial_answer_is_completed_from_the_owners_answers() {
        let mut here = answer_of(&[(true, None), (false, Some("b:1")), (false, Some("c:1"))]);
        let at_b = answer_of(&[(false, Some("a:1")), (true, None), (false, Some("c:1"))]);
        let at_c = answer_of(&[(false, Some("a:1")), (false, Some("b:1")), (true, None)]);
        let mut other_source = at_c.clone();
        other_source.source = "t".into();
        assert_eq!(here.fill_from(&other_source), 0, "another source's answer");
        assert_eq!(here.fill_from(&here.clone()), 0, "nothing new");
        assert_eq!(here.fill_from(&at_b), 1);
        assert!(!here.complete);
        assert_eq!(here.elsewhere, ["c:1"]);
        assert_eq!(here.partitions[1], at_b.partitions[1]);
        assert_eq!(here.fill_from(&at_c), 1);
        assert!(here.complete && here.owned);
        assert!(here.elsewhere.is_empty() && here.missing().is_empty());
        assert_eq!(here.partitions[2], at_c.partitions[2]);
    }
}

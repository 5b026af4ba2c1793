//! `streamagg dlq replay`: re-injects the records of a DLQ (or late topic) into a topic once their
//! cause is fixed. Reads the DLQ up to its end as of the start, keeps each record's key and value
//! bytes and its own headers, drops the DLQ's `streamagg.*` provenance headers, adds
//! `streamagg.replayed-from: <topic>/<partition>/<offset>`, and produces through the idempotent
//! [`RecordProducer`], waiting for every delivery. What to replay is decided by [`decide`], pure.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::message::{Header, Message, OwnedHeaders};

use crate::config::cluster::KafkaSettings;
use crate::producer::{ProduceError, RecordProducer};
use crate::reader::{header_list, Isolation, ReadError, Scan, StartAt, Until};
// A marker (a record too large for the DLQ) carries the original size instead of the payload.
use crate::sink::{HEADER_ERROR, HEADER_ORIGINAL_BYTES};

/// The header a replayed record carries: where in the DLQ it came from.
pub const HEADER_REPLAYED_FROM: &str = "streamagg.replayed-from";
/// The prefix of the headers streamagg adds to DLQ and late records (dropped on replay).
const STREAMAGG_PREFIX: &str = "streamagg.";

/// Why replaying failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(Box<ReadError>),
    #[error(transparent)]
    Produce(Box<ProduceError>),
}

impl From<ReadError> for ReplayError {
    fn from(error: ReadError) -> Self {
        ReplayError::Read(Box::new(error))
    }
}

impl From<ProduceError> for ReplayError {
    fn from(error: ProduceError) -> Self {
        ReplayError::Produce(Box::new(error))
    }
}

/// What happens to one DLQ record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Replay,
    /// Its `streamagg.error` does not contain the `--reason` substring (or it has none).
    OtherReason,
    /// A marker for a record too large for the DLQ: the payload was dropped, nothing to replay.
    Marker,
}

/// Whether a DLQ record with `headers` is replayed, given the `--reason` substring.
pub fn decide(headers: &[(String, Option<Vec<u8>>)], reason: Option<&str>) -> Decision {
    if headers.iter().any(|(key, _)| key == HEADER_ORIGINAL_BYTES) {
        return Decision::Marker;
    }
    let Some(wanted) = reason else {
        return Decision::Replay;
    };
    let matches = headers.iter().any(|(key, value)| {
        key == HEADER_ERROR
            && value
                .as_deref()
                .is_some_and(|v| String::from_utf8_lossy(v).contains(wanted))
    });
    if matches {
        Decision::Replay
    } else {
        Decision::OtherReason
    }
}

/// The headers of the replayed record: the record's own (everything but `streamagg.*`), in order,
/// then [`HEADER_REPLAYED_FROM`].
pub fn replay_headers(
    headers: &[(String, Option<Vec<u8>>)],
    topic: &str,
    partition: i32,
    offset: i64,
) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .filter(|(key, _)| !key.starts_with(STREAMAGG_PREFIX))
        .cloned()
        .chain([(
            HEADER_REPLAYED_FROM.to_owned(),
            Some(format!("{topic}/{partition}/{offset}").into_bytes()),
        )])
        .collect()
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Records produced to the target (or that would be, in a dry run).
    pub replayed: u64,
    /// Records left alone because their reason did not match.
    pub other_reason: u64,
    /// Markers of records too large for the DLQ: nothing to replay.
    pub markers: u64,
}

/// A replay from one topic to another.
#[derive(Debug, Clone)]
pub struct Replay {
    pub from_topic: String,
    pub to_topic: String,
    /// Replay only records whose `streamagg.error` contains this.
    pub reason: Option<String>,
    /// Count, do not produce.
    pub dry_run: bool,
    /// How long reading the DLQ to its end, and then the deliveries, may each take.
    pub deadline: Duration,
}

impl Replay {
    /// Runs the replay, calling `each` with every record's (partition, offset, decision); returns
    /// the counts once every produced record is delivered. Blocks.
    pub fn run(
        &self,
        settings: &KafkaSettings,
        stop: &AtomicBool,
        mut each: impl FnMut(i32, i64, Decision),
    ) -> Result<ReplayCounts, ReplayError> {
        let mut producer = if self.dry_run {
            None
        } else {
            Some(
                RecordProducer::connect(settings, "streamagg-replay", &Default::default())
                    .map_err(ProduceError::from)?,
            )
        };
        let scan = Scan {
            isolation: Isolation::ReadCommitted,
            start: StartAt::Beginning,
            until: Until::End {
                deadline: self.deadline,
            },
            max_records: None,
        };
        let mut counts = ReplayCounts::default();
        let mut failure = None;
        scan.run(settings, &self.from_topic, &[], stop, |message| {
            let headers = header_list(message);
            let decision = decide(&headers, self.reason.as_deref());
            each(message.partition(), message.offset(), decision);
            match decision {
                Decision::Marker => counts.markers += 1,
                Decision::OtherReason => counts.other_reason += 1,
                Decision::Replay => {
                    counts.replayed += 1;
                    if let Some(producer) = producer.as_mut() {
                        let replayed = replay_headers(
                            &headers,
                            &self.from_topic,
                            message.partition(),
                            message.offset(),
                        );
                        let sent = producer.send(
                            &self.to_topic,
                            message.key().unwrap_or_default(),
                            message.payload().unwrap_or_default(),
                            Some(owned(&replayed)),
                        );
                        if let Err(error) = sent {
                            failure = Some(error);
                            return ControlFlow::Break(());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        })?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        if let Some(producer) = producer.as_mut() {
            producer.flush(self.deadline)?;
        }
        Ok(counts)
    }
}

fn owned(headers: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    headers
        .iter()
        .fold(OwnedHeaders::new(), |owned, (key, value)| {
            owned.insert(Header {
                key,
                value: value.as_deref(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn records_are_replayed_by_reason_and_markers_never() {
        let bad_json = headers(&[("it.index", "3"), ("streamagg.error", "invalid JSON: eof")]);
        let marker = headers(&[
            ("streamagg.error", "invalid JSON; record too large"),
            ("streamagg.original_bytes", "300000"),
        ]);
        let no_reason = headers(&[("it.index", "4")]);
        let cases = [
            (&bad_json, None, Decision::Replay),
            (&bad_json, Some("invalid JSON"), Decision::Replay),
            (&bad_json, Some("non-finite"), Decision::OtherReason),
            (&marker, None, Decision::Marker),
            (&marker, Some("invalid JSON"), Decision::Marker),
            (&no_reason, None, Decision::Replay),
            (&no_reason, Some("invalid"), Decision::OtherReason),
        ];
        for (index, (headers, reason, expected)) in cases.into_iter().enumerate() {
            assert_eq!(decide(headers, reason), expected, "case {index}");
        }
    }

    #[test]
    fn replayed_records_keep_their_own_headers_and_say_where_they_came_from() {
        let dlq = vec![
            ("it.index".to_owned(), Some(b"3".to_vec())),
            ("empty".to_owned(), None),
            ("streamagg.error".to_owned(), Some(b"late".to_vec())),
            ("streamagg.topic".to_owned(), Some(b"in".to_vec())),
            ("streamagg.window_start".to_owned(), Some(b"0".to_vec())),
        ];
        assert_eq!(
            replay_headers(&dlq, "dlq", 2, 41),
            vec![
                ("it.index".to_owned(), Some(b"3".to_vec())),
                ("empty".to_owned(), None),
                (
                    "streamagg.replayed-from".to_owned(),
                    Some(b"dlq/2/41".to_vec())
                ),
            ]
        );
    }
}

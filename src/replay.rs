//! `streamagg dlq replay`: re-injects the records of a DLQ (or late topic) into a topic once their
//! cause is fixed. Reads the DLQ up to its end as of the start, keeps each record's key and value
//! bytes (a null key or value stays null) and its own headers, drops the DLQ's `streamagg.*`
//! provenance headers, adds `streamagg.replayed-from: <topic>/<partition>/<offset>`, and produces
//! through the idempotent [`RecordProducer`]. What to replay is decided by [`decide`], pure.
//!
//! Progress is kept as the committed offsets of a consumer group on the DLQ, read and written
//! without joining it ([`GroupOffsets`]): a run starts each partition at the group's offset (the
//! beginning without one, or with `restart`), and on every way out — the end, `max_records`, a
//! signal, a read or produce error, the deadline — first waits for what it produced, then, if all
//! of it was delivered, commits the offset after every record it scanned (replayed or skipped). A
//! re-run so replays only what no earlier run finished; a record that fails again is a new DLQ
//! record after the committed position, replayed once by the next run. A crash between the last
//! delivery and the commit leaves the commit behind: a re-run produces those records again.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, Message, OwnedHeaders};

use crate::config::cluster::KafkaSettings;
use crate::kafka::admin::GroupOffsets;
use crate::kafka::KafkaSetupError;
use crate::producer::{ProduceError, RecordProducer};
use crate::reader::{header_list, Isolation, ReadError, Scan, StartAt, Until};
// A marker (a record too large for the DLQ) carries the original size instead of the payload.
use crate::sink::{HEADER_ERROR, HEADER_ORIGINAL_BYTES};

/// The header a replayed record carries: where in the DLQ it came from.
pub const HEADER_REPLAYED_FROM: &str = "streamagg.replayed-from";
/// The prefix of the headers streamagg adds to DLQ and late records (dropped on replay).
const STREAMAGG_PREFIX: &str = "streamagg.";

/// The consumer group that keeps the progress of replays from `from_topic` to `to_topic`, unless
/// one is given.
pub fn default_group(from_topic: &str, to_topic: &str) -> String {
    format!("streamagg-replay.{from_topic}.{to_topic}")
}

/// Why replaying failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(Box<ReadError>),
    #[error(transparent)]
    Produce(Box<ProduceError>),
    #[error(transparent)]
    Group(Box<KafkaSetupError>),
    #[error(
        "group '{group}' has {} active member(s): {}; the replay's progress needs a group nothing \
         else uses (stop them, or give another --group)",
        .members.len(),
        .members.join(", ")
    )]
    GroupBusy { group: String, members: Vec<String> },
    #[error("the commit of the progress to group '{group}' did not take on partition {partition}: the group's offset is {now:?}, not {wanted}")]
    CommitLost {
        group: String,
        partition: i32,
        wanted: i64,
        now: Option<i64>,
    },
    #[error("stopped by a signal")]
    Interrupted,
    /// Stopped after scanning some records: why, and how far it got.
    #[error("{cause}; {}", stopped_summary(.counts, .kept))]
    Stopped {
        cause: Box<ReplayError>,
        counts: ReplayCounts,
        kept: Kept,
    },
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

impl From<KafkaSetupError> for ReplayError {
    fn from(error: KafkaSetupError) -> Self {
        ReplayError::Group(Box::new(error))
    }
}

/// What became of the progress of a replay that stopped part-way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Everything produced was delivered, and `group` committed the offsets after the records
    /// scanned.
    Committed { group: String },
    /// Nothing committed (`because`: why, when that is not the error reported already).
    NotCommitted {
        group: String,
        because: Option<String>,
    },
    /// A dry run commits nothing.
    DryRun,
}

/// How far a replay that stopped got, and what a re-run does.
pub fn stopped_summary(counts: &ReplayCounts, kept: &Kept) -> String {
    let scanned = counts.scanned();
    match kept {
        Kept::Committed { group } => format!(
            "it scanned {scanned} records and replayed {} (all delivered) before it stopped; \
             group '{group}' committed them: a re-run continues after them",
            counts.replayed
        ),
        Kept::NotCommitted { group, because } => format!(
            "it scanned {scanned} records and produced {} before it stopped, but committed no \
             progress to group '{group}'{}: a re-run starts where this one did and may produce \
             some of them again",
            counts.replayed,
            because
                .as_ref()
                .map(|why| format!(" ({why})"))
                .unwrap_or_default()
        ),
        Kept::DryRun => format!(
            "it scanned {scanned} records ({} to replay) before it stopped; a dry run commits nothing",
            counts.replayed
        ),
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

impl ReplayCounts {
    /// Every record scanned, replayed or skipped.
    pub fn scanned(&self) -> u64 {
        self.replayed + self.other_reason + self.markers
    }
}

/// How far a replay got: per DLQ partition, the offset after the last record it is done with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    next: BTreeMap<i32, i64>,
}

impl Progress {
    /// The record at `partition`/`offset` is done with (delivered once produced, or skipped).
    pub fn done(&mut self, partition: i32, offset: i64) {
        let next = self.next.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// (partition, offset to start the next run at), by partition.
    pub fn offsets(&self) -> Vec<(i32, i64)> {
        self.next.iter().map(|(&p, &o)| (p, o)).collect()
    }
}

/// A replay that ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub counts: ReplayCounts,
    /// Whether it stopped at `max_records` rather than at the end (a re-run continues).
    pub stopped_at_max: bool,
    /// The offsets it committed: (partition, where the next run starts); empty in a dry run.
    pub committed: Vec<(i32, i64)>,
}

/// A replay from one topic to another.
#[derive(Debug, Clone)]
pub struct Replay {
    pub from_topic: String,
    pub to_topic: String,
    /// Replay only records whose `streamagg.error` contains this.
    pub reason: Option<String>,
    /// Count, do not produce, commit nothing.
    pub dry_run: bool,
    /// How long reading the DLQ to its end may take, and the deliveries (at least the cluster
    /// timeout).
    pub deadline: Duration,
    /// The consumer group whose committed offsets on `from_topic` keep the progress.
    pub group: String,
    /// Start at the beginning of the DLQ whatever the group's progress.
    pub restart: bool,
    /// Scan at most this many records (a re-run continues after them).
    pub max_records: Option<u64>,
}

impl Replay {
    /// Runs the replay, calling `each` with every record's (partition, offset, decision); returns
    /// once every produced record is delivered and the progress committed. Blocks.
    pub fn run(
        &self,
        settings: &KafkaSettings,
        stop: &AtomicBool,
        mut each: impl FnMut(i32, i64, Decision),
    ) -> Result<ReplayReport, ReplayError> {
        let group = GroupOffsets::open_as(settings, &self.group, "streamagg-replay")?;
        if !self.dry_run {
            let members = group.describe()?.members;
            if !members.is_empty() {
                return Err(ReplayError::GroupBusy {
                    group: self.group.clone(),
                    members,
                });
            }
        }
        let resume: Vec<Option<i64>> = if self.restart {
            Vec::new()
        } else {
            let partitions = group.partition_count(&self.from_topic)?;
            group
                .committed(&self.from_topic, partitions)?
                .into_iter()
                .map(|committed| committed.map(|(offset, _)| offset))
                .collect()
        };
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
            max_records: self.max_records,
        };
        let mut counts = ReplayCounts::default();
        let mut progress = Progress::default();
        let mut failure = None;
        let scanned =
            scan.run_resuming(settings, &self.from_topic, &[], &resume, stop, |message| {
                let (partition, offset) = (message.partition(), message.offset());
                let headers = header_list(message);
                let decision = decide(&headers, self.reason.as_deref());
                match decision {
                    Decision::Marker => counts.markers += 1,
                    Decision::OtherReason => counts.other_reason += 1,
                    Decision::Replay => {
                        if let Some(producer) = producer.as_mut() {
                            let replayed =
                                replay_headers(&headers, &self.from_topic, partition, offset);
                            let sent = producer.send_nullable(
                                &self.to_topic,
                                message.key(),
                                message.payload(),
                                Some(owned(&replayed)),
                            );
                            if let Err(error) = sent {
                                failure = Some(error);
                                return ControlFlow::Break(());
                            }
                        }
                        counts.replayed += 1;
                    }
                }
                each(partition, offset, decision);
                progress.done(partition, offset);
                ControlFlow::Continue(())
            });
        let cause: Option<ReplayError> = match (scanned, failure) {
            (Err(error), _) => Some(error.into()),
            (Ok(_), Some(error)) => Some(error.into()),
            (Ok(_), None) if stop.load(Ordering::Relaxed) => Some(ReplayError::Interrupted),
            (Ok(_), None) => None,
        };
        // Whatever stopped it: wait for what was produced, then keep the progress.
        // Waiting for the deliveries gets the deadline, but at least the cluster timeout: a run
        // stopped by a short deadline still keeps what it produced.
        let patience = self.deadline.max(settings.timeout);
        let (kept, keep_error) = self.keep(&group, producer.as_mut(), patience, &progress);
        let (error, kept) = match (cause, keep_error, kept) {
            (None, None, _) => {
                return Ok(ReplayReport {
                    counts,
                    stopped_at_max: self.max_records.is_some_and(|max| counts.scanned() >= max),
                    committed: if self.dry_run {
                        Vec::new()
                    } else {
                        progress.offsets()
                    },
                })
            }
            (Some(cause), _, kept) => (cause, kept),
            // The error that kept the progress from being committed is the one reported.
            (None, Some(error), Kept::NotCommitted { group, .. }) => (
                error,
                Kept::NotCommitted {
                    group,
                    because: None,
                },
            ),
            (None, Some(error), kept) => (error, kept),
        };
        if counts.scanned() == 0 {
            return Err(error);
        }
        Err(ReplayError::Stopped {
            cause: Box::new(error),
            counts,
            kept,
        })
    }

    /// Waits for every record `producer` was given, then commits `progress` to the group; what was
    /// kept, and the error that kept it from being committed.
    fn keep(
        &self,
        group: &GroupOffsets,
        producer: Option<&mut RecordProducer>,
        patience: Duration,
        progress: &Progress,
    ) -> (Kept, Option<ReplayError>) {
        let not_committed = |error: ReplayError| {
            (
                Kept::NotCommitted {
                    group: self.group.clone(),
                    because: Some(error.to_string()),
                },
                Some(error),
            )
        };
        let Some(producer) = producer else {
            return (Kept::DryRun, None);
        };
        if let Err(error) = producer.flush(patience) {
            return not_committed(error.into());
        }
        let offsets = progress.offsets();
        if !offsets.is_empty() {
            let with_metadata: Vec<(i32, i64, String)> = offsets
                .iter()
                .map(|&(p, o)| (p, o, String::new()))
                .collect();
            if let Err(error) = group.commit(&self.from_topic, &with_metadata) {
                return not_committed(error.into());
            }
            // The commit's answer does not always carry per-partition refusals: read it back.
            if let Err(error) = self.check_committed(group, &offsets) {
                return not_committed(error);
            }
        }
        (
            Kept::Committed {
                group: self.group.clone(),
            },
            None,
        )
    }

    fn check_committed(
        &self,
        group: &GroupOffsets,
        offsets: &[(i32, i64)],
    ) -> Result<(), ReplayError> {
        let count = offsets.iter().map(|&(p, _)| p + 1).max().unwrap_or(0);
        let now = group.committed(&self.from_topic, count)?;
        for &(partition, wanted) in offsets {
            let found = now
                .get(partition as usize)
                .cloned()
                .flatten()
                .map(|(offset, _)| offset);
            if found != Some(wanted) {
                return Err(ReplayError::CommitLost {
                    group: self.group.clone(),
                    partition,
                    wanted,
                    now: found,
                });
            }
        }
        Ok(())
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

    #[test]
    fn progress_is_the_offset_after_the_last_record_done_with_on_each_partition() {
        let mut progress = Progress::default();
        assert!(
            progress.offsets().is_empty(),
            "nothing scanned, nothing to commit"
        );
        // Fetch order interleaves partitions; offsets skip (compaction, transaction markers).
        for (partition, offset) in [(1, 7), (0, 3), (1, 8), (0, 5), (2, 0)] {
            progress.done(partition, offset);
        }
        assert_eq!(progress.offsets(), vec![(0, 6), (1, 9), (2, 1)]);
    }

    #[test]
    fn a_stopped_replay_says_how_far_it_got_and_what_a_rerun_does() {
        let counts = ReplayCounts {
            replayed: 3,
            other_reason: 1,
            markers: 1,
        };
        let group = || "g".to_owned();
        let cases = [
            (
                Kept::Committed { group: group() },
                "it scanned 5 records and replayed 3 (all delivered) before it stopped; group 'g' \
                 committed them: a re-run continues after them",
            ),
            (
                Kept::NotCommitted {
                    group: group(),
                    because: Some("flush timed out".to_owned()),
                },
                "it scanned 5 records and produced 3 before it stopped, but committed no progress \
                 to group 'g' (flush timed out): a re-run starts where this one did and may \
                 produce some of them again",
            ),
            (
                Kept::NotCommitted {
                    group: group(),
                    because: None,
                },
                "it scanned 5 records and produced 3 before it stopped, but committed no progress \
                 to group 'g': a re-run starts where this one did and may produce some of them \
                 again",
            ),
            (
                Kept::DryRun,
                "it scanned 5 records (3 to replay) before it stopped; a dry run commits nothing",
            ),
        ];
        for (kept, expected) in cases {
            assert_eq!(stopped_summary(&counts, &kept), expected);
        }
        assert_eq!(default_group("dlq", "in"), "streamagg-replay.dlq.in");
    }
}

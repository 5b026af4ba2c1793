//! Questions to the cluster and topic management: metadata with a start-up wait that reports a
//! refused connection at once, partition counts, the broker's record-size limit, describing topics,
//! creating (with configs) and deleting them, and a consumer group's members and committed offsets
//! ([`GroupOffsets`], for `streamagg reset`).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;

use super::context::{ConnectionAware, ServedClient, StreamaggContext};
use super::{is_transient, KafkaSetupError};
use crate::config::cluster::KafkaSettings;

/// Admin operations wait for their result as long as start-up waits for the cluster.
fn admin_options(settings: &KafkaSettings) -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(settings.timeout))
        .request_timeout(Some(settings.timeout))
}
/// Asks the cluster for metadata (of `topic` only, if given), waiting at most `settings.timeout`.
/// Blocks the calling thread.
///
/// The wait is cut into growing slices, between which the client's queued events are served: a
/// broker that refuses the connection (wrong password, untrusted certificate) ends the wait at once
/// with librdkafka's reason ([`KafkaSetupError::Refused`]) instead of a timeout that names none.
pub fn fetch_metadata<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topic: Option<&str>,
) -> Result<Metadata, KafkaSetupError> {
    fetch_metadata_within(kafka, settings, topic, settings.timeout)
}

/// [`fetch_metadata`], waiting at most `timeout`.
pub fn fetch_metadata_within<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata, KafkaSetupError> {
    let client = kafka.client();
    let deadline = Instant::now() + timeout;
    let mut slice = Duration::from_millis(100);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.fetch_metadata(topic, slice.min(left)) {
            Ok(metadata) => {
                client.context().mark_connected();
                return Ok(metadata);
            }
            Err(cause) => {
                kafka.serve_events(Duration::from_millis(20));
                if let Some(reason) = client.context().refusal() {
                    return Err(KafkaSetupError::Refused {
                        brokers: settings.brokers.clone(),
                        reason,
                    });
                }
                if !is_transient(&cause) || Instant::now() >= deadline {
                    // How long this call waited, not the settings' usual timeout.
                    return Err(KafkaSetupError::unreachable_within(
                        settings, timeout, cause,
                    ));
                }
            }
        }
        slice *= 2;
    }
}

/// The number of partitions of `topic`, or `None` if the cluster does not have it. Blocks.
pub fn partition_count<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Option<usize>, KafkaSetupError> {
    partition_count_within(kafka, settings, topic, settings.timeout)
}

/// [`partition_count`], waiting at most `timeout`.
pub fn partition_count_within<K: ServedClient>(
    kafka: &K,
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, KafkaSetupError> {
    let metadata = fetch_metadata_within(kafka, settings, Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// The high watermark librdkafka last saw for a partition in a fetch response (no request is made),
/// or `None` while it has none.
pub fn cached_high_watermark<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    cached_watermarks(consumer, topic, partition)
        .map(|(_, high)| high)
        .filter(|&high| high >= 0)
}

/// The log start offset (low watermark) librdkafka last saw for a partition in a fetch response
/// (no request is made), or `None` while it has none.
pub fn cached_log_start<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    cached_watermarks(consumer, topic, partition)
        .map(|(low, _)| low)
        .filter(|&low| low >= 0)
}

/// (low, high) watermarks as librdkafka last saw them in a fetch response; -1 for one it has not.
fn cached_watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, the topic is a NUL-terminated
    // string that outlives the call, and librdkafka only writes the two offsets.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then_some((low, high))
}

/// The largest record batch the broker accepts on each of `topics` (its `max.message.bytes`), in
/// order; `None` where it does not say (or the topic does not exist: the caller's own check says
/// so). Ask only a cluster known to answer: an admin client does not tell a refused connection
/// (failed login, untrusted certificate) from a slow one.
pub fn max_message_bytes(
    settings: &KafkaSettings,
    topics: &[&str],
) -> Result<Vec<Option<usize>>, KafkaSetupError> {
    let failed = |topic: &str, reason: String| KafkaSetupError::DescribeTopic {
        topic: topic.to_owned(),
        reason,
    };
    let admin = admin_client(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(topics.join(", ").as_str(), e.to_string()))?;
    let resources: Vec<_> = topics
        .iter()
        .map(|topic| rdkafka::admin::ResourceSpecifier::Topic(topic))
        .collect();
    let results = runtime
        .block_on(admin.describe_configs(&resources, &admin_options(settings)))
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    topics
        .iter()
        .zip(
            results
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_with(|| None)),
        )
        .map(|(topic, result)| match result {
            Some(Ok(config)) => Ok(config
                .get("max.message.bytes")
                .and_then(|entry| entry.value.as_deref()?.parse().ok())),
            Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) | None => Ok(None),
            Some(Err(code)) => Err(failed(topic, code.to_string())),
        })
        .collect()
}

/// An admin client for topic management.
pub fn admin_client(
    settings: &KafkaSettings,
) -> Result<AdminClient<StreamaggContext>, KafkaSetupError> {
    settings
        .client_config("streamagg-admin")
        .create_with_context(StreamaggContext::default())
        .map_err(KafkaSetupError::config)
}

/// Creates `topic` with `partitions` partitions (replication factor `replication`) unless it exists.
/// Returns whether it was created.
pub async fn ensure_topic(
    admin: &AdminClient<StreamaggContext>,
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<bool, KafkaSetupError> {
    create_topic(admin, settings, topic, partitions, replication, &[]).await
}

/// [`ensure_topic`] with topic configs (`retention.ms`, `compression.type`, …) for a new topic; an
/// existing topic is left as it is. Returns whether it was created.
pub async fn create_topic(
    admin: &AdminClient<StreamaggContext>,
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(String, String)],
) -> Result<bool, KafkaSetupError> {
    let options = admin_options(settings);
    let new_topic = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)),
        |new_topic, (key, value)| new_topic.set(key, value),
    );
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(KafkaSetupError::CreateTopic {
            topic: topic.to_owned(),
            reason: code.to_string(),
        }),
        None => Err(KafkaSetupError::CreateTopic {
            topic: topic.to_owned(),
            reason: "no result from the broker".into(),
        }),
    }
}

/// What the cluster says about an existing topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub partitions: usize,
    /// Replicas of its first partition.
    pub replication: usize,
    /// Its configs as the broker reports them (defaults included), e.g. `retention.ms`.
    pub configs: std::collections::BTreeMap<String, String>,
}

/// Describes `topic`, or `None` if the cluster does not have it. Blocks.
pub fn describe_topic(
    admin: &AdminClient<StreamaggContext>,
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Option<TopicDescription>, KafkaSetupError> {
    let metadata = fetch_metadata(admin.inner(), settings, Some(topic))?;
    let Some(found) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    let failed = |reason: String| KafkaSetupError::DescribeTopic {
        topic: topic.to_owned(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let results = runtime
        .block_on(admin.describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic(topic)],
            &admin_options(settings),
        ))
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    let configs = match results.into_iter().next() {
        Some(Ok(resource)) => resource
            .entries
            .into_iter()
            .filter_map(|entry| Some((entry.name, entry.value?)))
            .collect(),
        Some(Err(code)) => return Err(failed(code.to_string())),
        None => return Err(failed("no result from the broker".into())),
    };
    Ok(Some(TopicDescription {
        partitions: found.partitions().len(),
        replication: found.partitions()[0].replicas().len(),
        configs,
    }))
}

/// Deletes `topics`; a topic that does not exist is not an error.
pub async fn delete_topics(
    admin: &AdminClient<StreamaggContext>,
    settings: &KafkaSettings,
    topics: &[&str],
) -> Result<(), KafkaSetupError> {
    let options = admin_options(settings);
    let results = admin
        .delete_topics(topics, &options)
        .await
        .map_err(|cause| KafkaSetupError::unreachable(settings, cause))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::DeleteTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// A consumer group's state and members, as the group coordinator describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// `Empty`, `Stable`, `PreparingRebalance`, …; `Dead` for a group the cluster does not know.
    pub state: String,
    /// Each member as `client id@host (member id)`.
    pub members: Vec<String>,
}

/// A client of one consumer group's offsets that never joins the group: it describes the group,
/// reads the committed offsets and commits new ones (which the coordinator accepts only while the
/// group has no members). Blocking.
pub struct GroupOffsets {
    consumer: BaseConsumer<StreamaggContext>,
    settings: KafkaSettings,
    group: String,
}

impl GroupOffsets {
    /// Connects (waiting at most the settings' timeout for the cluster to answer).
    pub fn open(settings: &KafkaSettings, group: &str) -> Result<GroupOffsets, KafkaSetupError> {
        GroupOffsets::open_as(settings, group, "streamagg-reset")
    }

    /// [`GroupOffsets::open`] with the client id the cluster sees.
    pub fn open_as(
        settings: &KafkaSettings,
        group: &str,
        client_id: &str,
    ) -> Result<GroupOffsets, KafkaSetupError> {
        let consumer: BaseConsumer<StreamaggContext> = settings
            .client_config(client_id)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .create_with_context(StreamaggContext::default())
            .map_err(KafkaSetupError::config)?;
        fetch_metadata(&consumer, settings, None)?;
        Ok(GroupOffsets {
            consumer,
            settings: settings.clone(),
            group: group.to_owned(),
        })
    }

    fn failed(&self, cause: impl std::fmt::Display) -> KafkaSetupError {
        KafkaSetupError::Group {
            group: self.group.clone(),
            reason: cause.to_string(),
        }
    }

    /// The group's state and members.
    pub fn describe(&self) -> Result<GroupDescription, KafkaSetupError> {
        let list = self
            .consumer
            .fetch_group_list(Some(&self.group), self.settings.timeout)
            .map_err(|e| self.failed(e))?;
        let Some(group) = list.groups().iter().find(|g| g.name() == self.group) else {
            return Ok(GroupDescription {
                state: "Dead".to_owned(),
                members: Vec::new(),
            });
        };
        Ok(GroupDescription {
            state: group.state().to_owned(),
            members: group
                .members()
                .iter()
                .map(|m| format!("{}@{} ({})", m.client_id(), m.client_host(), m.id()))
                .collect(),
        })
    }

    /// The number of partitions of `topic`.
    pub fn partition_count(&self, topic: &str) -> Result<i32, KafkaSetupError> {
        partition_count(&self.consumer, &self.settings, topic)?
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| KafkaSetupError::TopicMissing(topic.to_owned()))
    }

    /// The group's committed offset and metadata on each of `topic`'s partitions `0..count`, in
    /// order (`None`: no commit). Offsets still pending in an open transaction (a running
    /// exactly-once instance between two checkpoints, or one that died with a transaction open)
    /// are asked again for up to the settings' timeout, then an error, never "no commit".
    pub fn committed(
        &self,
        topic: &str,
        count: i32,
    ) -> Result<Vec<Option<(i64, String)>>, KafkaSetupError> {
        let mut list = TopicPartitionList::new();
        for partition in 0..count {
            list.add_partition(topic, partition);
        }
        let mut backoff = super::Backoff::new(self.settings.timeout);
        let committed = loop {
            let committed = self
                .consumer
                .committed_offsets(list.clone(), self.settings.timeout)
                .map_err(|e| self.failed(e))?;
            let pending = committed.elements().iter().find_map(|e| match e.error() {
                Err(error)
                    if error.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::UnstableOffsetCommit) =>
                {
                    Some(error)
                }
                _ => None,
            });
            match pending {
                Some(error) if backoff.wait(&error) => {}
                _ => break committed,
            }
        };
        (0..count)
            .map(|partition| {
                let element = committed
                    .find_partition(topic, partition)
                    .ok_or_else(|| self.failed(format!("no answer for {topic}[{partition}]")))?;
                element
                    .error()
                    .map_err(|e| self.failed(format!("{topic}[{partition}]: {e}")))?;
                Ok(match element.offset() {
                    Offset::Offset(offset) => Some((offset, element.metadata().to_owned())),
                    _ => None,
                })
            })
            .collect()
    }

    /// The first offset `topic[partition]` still holds and its end (low and high watermarks).
    pub fn log_bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaSetupError> {
        self.consumer
            .fetch_watermarks(topic, partition, self.settings.timeout)
            .map_err(|cause| KafkaSetupError::unreachable(&self.settings, cause))
    }

    /// For each of `topic`'s partitions `0..count`, the offset of its first record with a timestamp
    /// at or after `timestamp_ms` (`None`: no such record yet).
    pub fn offsets_at(
        &self,
        topic: &str,
        count: i32,
        timestamp_ms: i64,
    ) -> Result<Vec<Option<i64>>, KafkaSetupError> {
        let mut list = TopicPartitionList::new();
        for partition in 0..count {
            list.add_partition_offset(topic, partition, Offset::Offset(timestamp_ms))
                .map_err(|e| self.failed(e))?;
        }
        let answer = self
            .consumer
            .offsets_for_times(list, self.settings.timeout)
            .map_err(|cause| KafkaSetupError::unreachable(&self.settings, cause))?;
        (0..count)
            .map(|partition| {
                let element = answer
                    .find_partition(topic, partition)
                    .ok_or_else(|| self.failed(format!("no answer for {topic}[{partition}]")))?;
                element
                    .error()
                    .map_err(|e| self.failed(format!("{topic}[{partition}]: {e}")))?;
                Ok(match element.offset() {
                    Offset::Offset(offset) if offset >= 0 => Some(offset),
                    _ => None,
                })
            })
            .collect()
    }

    /// Commits `(partition, offset, metadata)` for `topic` in one request. The coordinator refuses
    /// it while the group has members.
    pub fn commit(
        &self,
        topic: &str,
        offsets: &[(i32, i64, String)],
    ) -> Result<(), KafkaSetupError> {
        let mut list = TopicPartitionList::new();
        for (partition, offset, metadata) in offsets {
            let mut element = list.add_partition(topic, *partition);
            element
                .set_offset(Offset::Offset(*offset))
                .map_err(|e: KafkaError| self.failed(e))?;
            element.set_metadata(metadata.as_str());
        }
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| self.failed(format!("committing the new offsets failed: {e}")))
    }
}

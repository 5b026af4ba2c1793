//! Questions to the cluster and topic management: metadata with a start-up wait that reports a
//! refused connection at once, partition counts, the broker's record-size limit, describing topics,
//! and creating (with configs) and deleting them.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

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
    let client = kafka.client();
    let deadline = Instant::now() + settings.timeout;
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
                    return Err(KafkaSetupError::unreachable(settings, cause));
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
    let metadata = fetch_metadata(kafka, settings, Some(topic))?;
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
    (error == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
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

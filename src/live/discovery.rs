//! Where a source lives: its partition in each input topic (from the topics' partition counts) and
//! who owns those partitions (from the consumer group's description), asked of the cluster by a
//! client of its own — never by the poll loop — and cached for [`CACHE_FOR`], so a burst of queries
//! costs the cluster one metadata request per input topic and one `DescribeGroups`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::assignment::{owners, Member, Owner};
use crate::config::cluster::KafkaSettings;
use crate::kafka::context::StreamaggContext;
use crate::kafka::KafkaSetupError;
use crate::partitioner::Partitioner;

/// How long a description of the topics and the group is used before it is asked for again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);

/// How long one request to the cluster may take (an HTTP client is waiting).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the cluster could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("cannot describe the input topics or the group: {0}")]
pub struct DiscoveryError(String);

/// The input topics' partition counts and the group's owners, as of `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Per input topic, in the order of the settings: its partition count, if it has partitions.
    pub partition_counts: Vec<(String, Option<usize>)>,
    /// How the producers partition by source (`--input-partitioner`).
    pub partitioner: Partitioner,
    pub owners: BTreeMap<(String, i32), Owner>,
}

impl Snapshot {
    /// The `(topic, partition)` of `source` in each input topic that has partitions.
    pub fn partitions_of(&self, source: &str) -> Vec<(String, i32)> {
        self.partition_counts
            .iter()
            .filter_map(|(topic, count)| {
                Some((
                    topic.clone(),
                    self.partitioner
                        .partition_of(source.as_bytes(), (*count)?)?,
                ))
            })
            .collect()
    }
}

/// The cluster client and the cache.
pub struct Discovery {
    client: BaseConsumer<StreamaggContext>,
    group: String,
    inputs: Vec<String>,
    partitioner: Partitioner,
    cache: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl Discovery {
    /// A client (no group: it only describes) for `group` reading `inputs`.
    pub fn new(
        kafka: &KafkaSettings,
        group: &str,
        inputs: &[String],
        partitioner: Partitioner,
    ) -> Result<Self, KafkaSetupError> {
        let client = kafka
            .client_config("streamagg-query")
            .create_with_context(StreamaggContext::default())
            .map_err(KafkaSetupError::config)?;
        Ok(Discovery {
            client,
            group: group.to_owned(),
            inputs: inputs.to_vec(),
            partitioner,
            cache: Mutex::new(None),
        })
    }

    /// The cached snapshot, or a new one if it is older than [`CACHE_FOR`]. Blocks for up to a few
    /// [`REQUEST_TIMEOUT`]s: call it off any async runtime's worker (`spawn_blocking`).
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, DiscoveryError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, snapshot)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return Ok(Arc::clone(snapshot));
            }
        }
        let snapshot = Arc::new(self.describe()?);
        *cache = Some((Instant::now(), Arc::clone(&snapshot)));
        Ok(snapshot)
    }

    fn describe(&self) -> Result<Snapshot, DiscoveryError> {
        let failed = |error: rdkafka::error::KafkaError| DiscoveryError(error.to_string());
        let mut partition_counts = Vec::with_capacity(self.inputs.len());
        for topic in &self.inputs {
            let metadata = self
                .client
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(failed)?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
                .filter(|&count| count > 0);
            partition_counts.push((topic.clone(), count));
        }
        let groups = self
            .client
            .fetch_group_list(Some(&self.group), REQUEST_TIMEOUT)
            .map_err(failed)?;
        let members = groups
            .groups()
            .iter()
            .filter(|g| g.name() == self.group)
            .flat_map(|g| g.members())
            .map(|m| Member {
                client_id: m.client_id(),
                client_host: m.client_host(),
                assignment: m.assignment(),
            });
        Ok(Snapshot {
            partitioner: self.partitioner,
            owners: owners(members),
            partition_counts,
        })
    }
}

//! Partitions added to a live input topic. librdkafka notices a subscribed topic's new partition
//! count on its periodic metadata refresh (`topic.metadata.refresh.interval.ms`, 10 s by
//! streamagg's default) and rejoins the group, which hands out the new partitions; they are read
//! from their first record (`auto.offset.reset=earliest`), so nothing written to them is skipped.
//!
//! Producers then send a source whose key hashes elsewhere under the new count to its new
//! partition. Its window around the change is split: the part before it in the old partition, the
//! rest in the new one. Both parts are emitted as results of the same source and window, and their
//! counts and sums add up to the whole. This module makes that visible instead of silent:
//! - each assignment compares the input topics' partition counts with the last ones seen, and an
//!   increase is logged and counted (`streamagg_input_partitions_added_total`);
//! - every window emitted for a source that is not in the partition the input's partitioner
//!   (`--input-partitioner`) puts it in under the topic's current count carries the header
//!   `streamagg.possibly_split` and is counted (`streamagg_windows_possibly_split_total`). That is
//!   the old part of every split window, and conservatively older windows of moved sources still
//!   being emitted (a backlog from before the change). A consumer that sees the header merges the
//!   records of that source and window (counts and sums add; min of mins, max of maxes).
//!
//! The count is learnt at the rebalance the refresh causes: a split window whose old part closes
//! before this instance learns it (a producer that refreshed its metadata sooner) is not marked.
//! The README's "Adding input partitions" says how to avoid that window.

use std::collections::{HashMap, HashSet};

use crate::partitioner::Partitioner;

/// The input topics' partition counts as last seen, and where a split was already logged.
#[derive(Debug)]
pub(super) struct InputPartitions {
    partitioner: Partitioner,
    counts: HashMap<String, usize>,
    /// Partitions that already logged a possibly split window (once per partition and process).
    warned: HashMap<String, HashSet<i32>>,
}

/// A window result's source is not where the partitioner puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Displaced {
    /// The header value: `from=<partition> home=<partition> partitions=<count>`.
    pub header: String,
    /// Whether this is the partition's first such window (log it).
    pub first: bool,
}

impl InputPartitions {
    pub(super) fn new(partitioner: Partitioner) -> Self {
        InputPartitions {
            partitioner,
            counts: HashMap::new(),
            warned: HashMap::new(),
        }
    }

    /// Records that `topic` has `count` partitions; returns the previous count if this is more
    /// (partitions were added since it was last seen). The first count seen is no change.
    pub(super) fn update(&mut self, topic: &str, count: usize) -> Option<usize> {
        match self.counts.insert(topic.to_owned(), count) {
            Some(before) if before < count => Some(before),
            _ => None,
        }
    }

    /// Whether a window of `source` read from `topic`'s `partition` is not where the partitioner
    /// puts `source` under the topic's current count: then it may be one part of a split window.
    pub(super) fn displaced(
        &mut self,
        topic: &str,
        partition: i32,
        source: &str,
    ) -> Option<Displaced> {
        let count = *self.counts.get(topic)?;
        let home = self
            .partitioner
            .home_of(source.as_bytes(), partition, count)?;
        let first = match self.warned.get_mut(topic) {
            Some(partitions) => partitions.insert(partition),
            None => {
                self.warned
                    .insert(topic.to_owned(), HashSet::from([partition]));
                true
            }
        };
        Some(Displaced {
            header: format!("from={partition} home={home} partitions={count}"),
            first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::partition_of;

    #[test]
    fn only_a_larger_count_than_the_last_seen_is_an_addition() {
        let mut inputs = InputPartitions::new(Partitioner::Murmur2);
        let steps = [
            ("first count seen", "a", 2, None),
            ("unchanged", "a", 2, None),
            ("two added", "a", 4, Some(2)),
            ("another topic's first count", "b", 8, None),
            ("fewer: the topic was recreated, not grown", "a", 3, None),
            ("grown again from the recreated count", "a", 5, Some(3)),
        ];
        for (name, topic, count, expected) in steps {
            assert_eq!(inputs.update(topic, count), expected, "{name}");
        }
    }

    #[test]
    fn a_window_is_displaced_when_its_source_hashes_to_another_partition_now() {
        // Sources and their murmur2 partitions under 2 and 4 partitions, computed here.
        let sources: Vec<String> = (0..64).map(|i| format!("sensor-{i}")).collect();
        let moved = sources
            .iter()
            .find(|s| partition_of(s.as_bytes(), 2) != partition_of(s.as_bytes(), 4))
            .expect("a source that moves");
        let stayed = sources
            .iter()
            .find(|s| partition_of(s.as_bytes(), 2) == partition_of(s.as_bytes(), 4))
            .expect("a source that stays");
        let old_home = |s: &String| partition_of(s.as_bytes(), 2).expect("keyed");
        let new_home = |s: &String| partition_of(s.as_bytes(), 4).expect("keyed");

        let mut inputs = InputPartitions::new(Partitioner::Murmur2);
        assert_eq!(inputs.displaced("t", 0, moved), None, "count not known yet");
        inputs.update("t", 2);
        assert_eq!(
            inputs.displaced("t", old_home(moved), moved),
            None,
            "at home"
        );
        inputs.update("t", 4);
        let displaced = inputs
            .displaced("t", old_home(moved), moved)
            .expect("moved away");
        assert_eq!(
            displaced.header,
            format!(
                "from={} home={} partitions=4",
                old_home(moved),
                new_home(moved)
            )
        );
        assert!(displaced.first);
        let again = inputs
            .displaced("t", old_home(moved), moved)
            .expect("still");
        assert!(!again.first, "logged once per partition");
        assert_eq!(
            inputs.displaced("t", new_home(moved), moved),
            None,
            "its new home"
        );
        assert_eq!(
            inputs.displaced("t", old_home(stayed), stayed),
            None,
            "stayed"
        );
        assert_eq!(inputs.displaced("other", 0, moved), None, "unknown topic");
        let mut unknown = InputPartitions::new(Partitioner::Unknown);
        unknown.update("t", 4);
        assert_eq!(
            unknown.displaced("t", old_home(moved), moved),
            None,
            "no partitioner"
        );
    }
}

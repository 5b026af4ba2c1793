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

use smol_str::SmolStr;

use crate::partitioner::Partitioner;

/// The input topics' partition counts as last seen, the counts before an increase, the sources
/// that moved in and were already marked, and where a split was already logged.
#[derive(Debug)]
pub(super) struct InputPartitions {
    partitioner: Partitioner,
    counts: HashMap<String, usize>,
    /// Per topic, its earlier counts (each increase seen, here or by the state dir), oldest first.
    before: HashMap<String, Vec<usize>>,
    /// Per topic and partition, the `(source, window size)`s that moved in and whose first window
    /// there was marked and checkpointed. Only moved sources, and only after an increase: a
    /// deployment whose producers partition otherwise keeps nothing here.
    arrived: HashMap<String, HashMap<i32, HashSet<(SmolStr, usize)>>>,
    /// Marked since the last checkpoint: a checkpoint keeps them ([`InputPartitions::checkpointed`]),
    /// an abort drops them ([`InputPartitions::rewound`]), so a redone window is marked again.
    pending: Vec<(String, i32, SmolStr, usize)>,
    /// Partitions that already logged a possibly split window (once per partition and process).
    warned: HashMap<String, HashSet<i32>>,
}

/// A window result's source is not where the partitioner puts it, or has just moved there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Displaced {
    /// The header value: `partition=<p> home=<q> partitions=<n>`: the window was read from
    /// partition `p`, and with `n` partitions its source belongs in `q` (the current count for an
    /// old part, the count before the increase for a new part).
    pub header: String,
    /// Whether this is the partition's first such window (log it).
    pub first: bool,
    /// For the partition's first such window: another partitioner that puts the source where it
    /// was read, under the current count (the producers probably use that one).
    pub fits: Option<Partitioner>,
}

impl InputPartitions {
    pub(super) fn new(partitioner: Partitioner) -> Self {
        InputPartitions {
            partitioner,
            counts: HashMap::new(),
            before: HashMap::new(),
            arrived: HashMap::new(),
            pending: Vec::new(),
            warned: HashMap::new(),
        }
    }

    /// The counts [`InputPartitions::encode`] wrote (a process restarted with its state dir), or
    /// none if `recorded` is not in that form (nothing is lost but the knowledge of an increase).
    pub(super) fn restore(partitioner: Partitioner, recorded: &str) -> Self {
        let mut inputs = InputPartitions::new(partitioner);
        for line in recorded.lines() {
            let mut fields = line.split(' ');
            let (Some(topic), Some(Ok(count))) = (fields.next(), fields.next().map(str::parse))
            else {
                return InputPartitions::new(partitioner);
            };
            inputs.counts.insert(topic.to_owned(), count);
            if let Some(earlier) = fields.next() {
                let earlier: Option<Vec<usize>> =
                    earlier.split(',').map(|n| n.parse().ok()).collect();
                match earlier {
                    Some(earlier)
                        if earlier.windows(2).all(|w| w[0] < w[1])
                            && earlier.last().is_some_and(|&last| last < count) =>
                    {
                        inputs.before.insert(topic.to_owned(), earlier);
                    }
                    _ => return InputPartitions::new(partitioner),
                }
            }
            if fields.next().is_some() {
                return InputPartitions::new(partitioner);
            }
        }
        inputs
    }

    /// The counts as text for the store: a line `topic count [earlier,counts]` per topic, sorted.
    pub(super) fn encode(&self) -> String {
        let mut lines: Vec<String> = self
            .counts
            .iter()
            .map(
                |(topic, count)| match self.before.get(topic).filter(|e| !e.is_empty()) {
                    Some(earlier) => {
                        let earlier: Vec<String> = earlier.iter().map(usize::to_string).collect();
                        format!("{topic} {count} {}", earlier.join(","))
                    }
                    None => format!("{topic} {count}"),
                },
            )
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Whether a still open window of size `level` of `source` in `topic`'s `partition` may be one
    /// part of a split window, by [`InputPartitions::displaced`]'s rules (changing nothing): the
    /// header value it would be emitted with.
    pub(super) fn open_part(
        &self,
        topic: &str,
        partition: i32,
        source: &str,
        level: usize,
    ) -> Option<String> {
        let (header, moved_in) = self.elsewhere(topic, partition, source)?;
        (!(moved_in && self.marked(topic, partition, source, level))).then_some(header)
    }

    /// Whether the first window of size `level` of `source`, which moved into `topic`'s
    /// `partition`, was marked (checkpointed, or since the last checkpoint).
    fn marked(&self, topic: &str, partition: i32, source: &str, level: usize) -> bool {
        self.arrived
            .get(topic)
            .and_then(|parts| parts.get(&partition))
            .is_some_and(|arrived| arrived.contains(&(SmolStr::new(source), level)))
            || self
                .pending
                .iter()
                .any(|(t, p, s, l)| t == topic && *p == partition && s == source && *l == level)
    }

    /// A checkpoint committed the windows marked since the last one.
    pub(super) fn checkpointed(&mut self) {
        for (topic, partition, source, level) in self.pending.drain(..) {
            self.arrived
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_default()
                .insert((source, level));
        }
    }

    /// The work since the last checkpoint is redone: its marks are to be made again.
    pub(super) fn rewound(&mut self) {
        self.pending.clear();
    }

    /// The header value if `source` is not at home in `topic`'s `partition` under the current
    /// count, or was not under an earlier count (then `true`: it moved in at an increase).
    fn elsewhere(&self, topic: &str, partition: i32, source: &str) -> Option<(String, bool)> {
        let count = *self.counts.get(topic)?;
        let key = source.as_bytes();
        let (home, partitions, moved_in) = match self.partitioner.home_of(key, partition, count) {
            Some(home) => (home, count, false),
            None => {
                // Moved in at some increase: elsewhere under an earlier count (the latest such).
                let (home, before) = self.before.get(topic)?.iter().rev().find_map(|&before| {
                    Some((self.partitioner.home_of(key, partition, before)?, before))
                })?;
                (home, before, true)
            }
        };
        Some((
            format!("partition={partition} home={home} partitions={partitions}"),
            moved_in,
        ))
    }

    /// `topic`'s earlier counts, oldest first (empty before any increase).
    pub(super) fn earlier(&self, topic: &str) -> &[usize] {
        self.before.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Learns earlier counts of `topic` from a group commit (its committer saw the increases):
    /// they join the ones known here, below the current count if known.
    pub(super) fn learn_earlier(&mut self, topic: &str, earlier: &[usize]) {
        let count = self.counts.get(topic).copied();
        let known = self.before.entry(topic.to_owned()).or_default();
        for &before in earlier {
            if count.is_none_or(|count| before < count) && !known.contains(&before) {
                known.push(before);
            }
        }
        known.sort_unstable();
        if known.is_empty() {
            self.before.remove(topic);
        }
    }

    /// Whether the count of each of `topics` is known.
    pub(super) fn knows_all(&self, topics: &[String]) -> bool {
        topics.iter().all(|topic| self.counts.contains_key(topic))
    }

    /// Forgets `topic` (deleted): a topic created again under its name starts anew, and is no
    /// increase.
    pub(super) fn forget(&mut self, topic: &str) -> bool {
        self.before.remove(topic);
        self.arrived.remove(topic);
        self.pending.retain(|(t, ..)| t != topic);
        self.counts.remove(topic).is_some()
    }

    /// Records that `topic` has `count` partitions; returns the previous count if this is more
    /// (partitions were added since it was last seen). The first count seen is no change.
    pub(super) fn update(&mut self, topic: &str, count: usize) -> Option<usize> {
        if let Some(earlier) = self.before.get_mut(topic) {
            earlier.retain(|&before| before < count); // learnt from a commit, or a recreated topic
        }
        match self.counts.insert(topic.to_owned(), count) {
            Some(before) if before < count => {
                self.before
                    .entry(topic.to_owned())
                    .or_default()
                    .push(before);
                Some(before)
            }
            _ => None,
        }
    }

    /// Whether the window of size `level` of `source` read from `topic`'s `partition` may be one
    /// part of a window split by an increase of the topic's partitions:
    /// - the old part: `source` is not where the partitioner puts it under the current count
    ///   (every such window is marked, so a backlog from before the change is too);
    /// - the new part, when this process saw the increase: `source` was elsewhere under the count
    ///   before it, and this is its first window of that size here since the increase was seen
    ///   (the one that straddles the moment its producer moved it, or a whole one if the split one
    ///   was marked as not at home before). This closes the gap of an old part emitted before the
    ///   increase was seen: one part of every split window is marked.
    ///
    /// Either way the header says the same of a part: where it was read, and where its source
    /// belongs with the count that makes it a part.
    pub(super) fn displaced(
        &mut self,
        topic: &str,
        partition: i32,
        source: &str,
        level: usize,
    ) -> Option<Displaced> {
        let (header, moved_in) = self.elsewhere(topic, partition, source)?;
        if moved_in {
            if self.marked(topic, partition, source, level) {
                return None; // its first window here was marked already
            }
            self.pending
                .push((topic.to_owned(), partition, SmolStr::new(source), level));
        }
        let first = match self.warned.get_mut(topic) {
            Some(partitions) => partitions.insert(partition),
            None => {
                self.warned
                    .insert(topic.to_owned(), HashSet::from([partition]));
                true
            }
        };
        // Only the partition's first such window is logged, so only its hint is worked out.
        let count = self.counts.get(topic).copied().unwrap_or(0);
        let fits = [Partitioner::Murmur2, Partitioner::Crc32]
            .into_iter()
            .filter(|&other| first && other != self.partitioner)
            .find(|other| other.partition_of(source.as_bytes(), count) == Some(partition));
        Some(Displaced {
            header,
            first,
            fits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::partition_of;

    #[test]
    fn a_source_where_the_other_partitioner_puts_it_names_that_one() {
        let source = (0..)
            .map(|i| format!("sensor-{i}"))
            .find(|s| {
                let crc = Partitioner::Crc32.partition_of(s.as_bytes(), 3);
                crc != partition_of(s.as_bytes(), 3)
            })
            .expect("a source the partitioners disagree on");
        let crc = Partitioner::Crc32
            .partition_of(source.as_bytes(), 3)
            .expect("keyed");
        let mut inputs = InputPartitions::new(Partitioner::Murmur2);
        inputs.update("t", 3);
        let displaced = inputs
            .displaced("t", crc, &source, 0)
            .expect("not murmur2's");
        assert_eq!(displaced.fits, Some(Partitioner::Crc32));
        let elsewhere = (0..3).find(|&p| p != crc && Some(p) != partition_of(source.as_bytes(), 3));
        if let Some(p) = elsewhere {
            assert_eq!(
                inputs
                    .displaced("t", p, &source, 0)
                    .expect("displaced")
                    .fits,
                None
            );
        }
    }

    #[test]
    fn counts_survive_a_restart_through_their_text() {
        let mut inputs = InputPartitions::new(Partitioner::Murmur2);
        inputs.update("b", 8);
        inputs.update("a", 3);
        inputs.update("a", 5);
        let text = inputs.encode();
        assert_eq!(text, "a 5 3\nb 8");
        let mut restored = InputPartitions::restore(Partitioner::Murmur2, &text);
        assert_eq!(restored.encode(), text);
        assert_eq!(restored.update("a", 5), None, "no change since");
        assert_eq!(
            restored.update("b", 9),
            Some(8),
            "an increase while it was down"
        );
        restored.update("a", 7);
        assert_eq!(restored.encode(), "a 7 3,5\nb 9 8");
        let again = InputPartitions::restore(Partitioner::Murmur2, &restored.encode());
        assert_eq!(
            again.encode(),
            restored.encode(),
            "every earlier count kept"
        );
        restored.update("a", 5);
        for foreign in [
            "a",
            "a x",
            "a 5 x",
            "a 5 7",
            "a 5 3\nb",
            "a 7 5,3",
            "a 7 3,5 9",
            "a 7 3,",
        ] {
            assert_eq!(
                InputPartitions::restore(Partitioner::Murmur2, foreign).encode(),
                "",
                "{foreign:?} is not ours: start knowing nothing"
            );
        }
        assert_eq!(
            InputPartitions::restore(Partitioner::Murmur2, "").encode(),
            ""
        );
        assert!(restored.forget("a"));
        assert_eq!(
            restored.update("a", 7),
            None,
            "a recreated topic is no increase"
        );
    }

    #[test]
    fn a_new_part_is_marked_again_when_its_work_is_redone_and_after_a_second_increase() {
        let home = |s: &str, n| partition_of(s.as_bytes(), n).expect("keyed");
        let moved = (0..)
            .map(|i| format!("sensor-{i}"))
            .find(|s| home(s, 3) != home(s, 5) && home(s, 5) == home(s, 7))
            .expect("a source that moves at 3 → 5 and stays at 5 → 7");
        let (old, new) = (home(&moved, 3), home(&moved, 5));
        let mark = format!("partition={new} home={old} partitions=3");
        let mut inputs = InputPartitions::new(Partitioner::Murmur2);
        inputs.update("t", 3);
        inputs.update("t", 5);
        inputs.update("t", 7);
        let header = |i: &mut InputPartitions| i.displaced("t", new, &moved, 0).map(|d| d.header);
        assert_eq!(
            header(&mut inputs),
            Some(mark.clone()),
            "moved in at the first increase"
        );
        assert_eq!(header(&mut inputs), None, "once");
        inputs.rewound();
        assert_eq!(
            header(&mut inputs),
            Some(mark.clone()),
            "the redone window is marked again"
        );
        inputs.checkpointed();
        inputs.rewound();
        assert_eq!(header(&mut inputs), None, "a checkpointed mark stays made");
    }

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
    fn both_parts_of_a_moved_source_are_marked_and_nothing_else() {
        // Sources and their murmur2 partitions under 3 and 5 partitions, computed here.
        let home = |s: &str, n| partition_of(s.as_bytes(), n).expect("keyed");
        let sources: Vec<String> = (0..64).map(|i| format!("sensor-{i}")).collect();
        let moved = sources
            .iter()
            .find(|s| home(s, 3) != home(s, 5))
            .expect("a source that moves");
        let stayed = sources
            .iter()
            .find(|s| home(s, 3) == home(s, 5))
            .expect("a source that stays");
        let (old, new) = (home(moved, 3), home(moved, 5));
        let old_part = format!("partition={old} home={new} partitions=5");
        let new_part = format!("partition={new} home={old} partitions=3");

        let mut inputs = InputPartitions::new(Partitioner::Murmur2);
        let mut unknown = InputPartitions::new(Partitioner::Unknown);
        assert_eq!(
            inputs.displaced("t", old, moved, 0),
            None,
            "count not known"
        );
        assert_eq!(inputs.update("t", 3), None);
        unknown.update("t", 3);
        assert_eq!(inputs.displaced("t", old, moved, 0), None, "at home");
        assert_eq!(inputs.update("t", 5), Some(3));
        unknown.update("t", 5);
        // (what, partition, source, size, expected header, first for its partition)
        let steps = [
            ("old part", old, moved, 0, Some(&old_part), true),
            (
                "old part, any window",
                old,
                moved,
                0,
                Some(&old_part),
                false,
            ),
            (
                "old part, larger size",
                old,
                moved,
                1,
                Some(&old_part),
                false,
            ),
            (
                "new part: the first window there",
                new,
                moved,
                0,
                Some(&new_part),
                true,
            ),
            ("the next window there is whole", new, moved, 0, None, false),
            (
                "new part of the larger size",
                new,
                moved,
                1,
                Some(&new_part),
                false,
            ),
            (
                "a source that stayed",
                home(stayed, 5),
                stayed,
                0,
                None,
                false,
            ),
        ];
        for (what, partition, source, level, header, first) in steps {
            let open = inputs.open_part("t", partition, source, level);
            assert_eq!(open.as_ref(), header, "{what}: an open window says so too");
            let got = inputs.displaced("t", partition, source, level);
            assert_eq!(got.as_ref().map(|d| &d.header), header, "{what}");
            if let Some(got) = got {
                assert_eq!(got.first, first, "{what}: logged once per partition");
            }
            assert_eq!(
                unknown.displaced("t", partition, source, level),
                None,
                "{what}: unknown partitioner"
            );
        }
        assert_eq!(
            inputs.displaced("other", old, moved, 0),
            None,
            "unknown topic"
        );

        // Records of a moved source in its new partition before the increase is seen: marked as
        // not at home; once it is seen, its next window there is marked once more (possibly
        // whole), then no more.
        let mut late = InputPartitions::new(Partitioner::Murmur2);
        late.update("t", 3);
        for _ in 0..2 {
            let early = late
                .displaced("t", new, moved, 0)
                .expect("not at home with 3");
            assert_eq!(early.header, new_part);
        }
        late.update("t", 5);
        let next = late
            .displaced("t", new, moved, 0)
            .expect("first since the increase");
        assert_eq!(next.header, new_part);
        assert_eq!(
            late.displaced("t", new, moved, 0),
            None,
            "marked once since"
        );

        // A process that first saw the topic with 5 partitions knows no move in: only old parts.
        let mut later = InputPartitions::new(Partitioner::Murmur2);
        later.update("t", 5);
        assert_eq!(later.displaced("t", new, moved, 0), None);
        assert!(later.displaced("t", old, moved, 0).is_some());
    }
}

//! At-least-once group commits, in order, the periodic ones off the poll loop.
//!
//! Under at-least-once a checkpoint's group commit is advisory (RocksDB is the instance's truth; the
//! commit is where another owner starts), and waiting for the coordinator's answer held up the poll
//! loop for 7–12 ms a second. So the periodic checkpoint hands its offsets to a committer thread
//! ([`GroupCommits::run`]) and goes on. A hand-over, a reset or a stop first settles the thread
//! ([`GroupCommits::settle`]: the commit on the wire answered, what waits and what failed taken
//! back to be committed again from the current state) and then commits on its own thread and waits
//! ([`GroupCommits::wait`]).
//!
//! Order is the point. librdkafka retries a failed commit request on its own, so two commits on
//! the wire at once could land in either order and leave the group at the older offsets. Here one
//! commit is on the wire at a time, waiting offsets are merged (the newer per partition), and a
//! commit that waits goes out only once the thread has settled: a later commit never lands before
//! an earlier one, and none is dropped unnoticed (a failed one is handed back, and its partitions
//! are committed again at the next checkpoint).
//!
//! Before each commit the store's write-ahead log is synced (the checkpoints themselves are written
//! without an fsync, see [`crate::store`]): the group never points past what the local store
//! would still hold after a power loss.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::store::db::{StateStore, StoreError};

/// The committer thread's inbox and the one-at-a-time rule, shared by the poll loop's thread and
/// the committer thread.
#[derive(Default)]
pub(crate) struct GroupCommits {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Offsets waiting for the committer thread: every background commit not yet sent, merged.
    waiting: Option<TopicPartitionList>,
    /// Since when a commit is on the wire (from either thread).
    on_the_wire_since: Option<Instant>,
    /// Background commits that failed, for the next checkpoint to commit again.
    failed: Vec<TopicPartitionList>,
    /// Settles under way: the committer thread starts no commit meanwhile, so what waits when a
    /// settle begins is taken back by it, not sent.
    settling: usize,
    /// The committer thread sends what waits and then ends.
    stopping: bool,
}

/// Why a group commit did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    #[error("committing offsets to the group failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("syncing the state store's log before committing offsets to the group failed: {0}")]
    Store(#[from] StoreError),
}

/// [`GroupCommits::settle`] gave up waiting for the commit on the wire; what waited and what
/// failed are taken back all the same.
#[derive(Debug, thiserror::Error)]
#[error("a group commit sent {} ago is still unanswered", humantime::format_duration(*.on_the_wire_for))]
pub(crate) struct Unsettled {
    pub on_the_wire_for: Duration,
    pub taken: Vec<TopicPartitionList>,
}

impl GroupCommits {
    /// Hands `offsets` to the committer thread and returns at once.
    pub(crate) fn in_background(&self, offsets: TopicPartitionList) {
        let mut state = self.lock();
        state.waiting = Some(match state.waiting.take() {
            Some(older) => merged(&older, &offsets),
            None => offsets,
        });
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for the commit on the wire to be answered, then takes back what waits
    /// for the thread and what failed: the caller commits those partitions again, from their
    /// current state, with [`Self::wait`] (which must follow before the next background commit).
    /// If the commit on the wire stays unanswered, they are taken back all the same (so that none
    /// goes out after a hand-over), in the error.
    pub(crate) fn settle(&self, timeout: Duration) -> Result<Vec<TopicPartitionList>, Unsettled> {
        let mut state = self.lock();
        state.settling += 1;
        let deadline = Instant::now() + timeout;
        let mut unanswered = None;
        while let Some(since) = state.on_the_wire_since {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                unanswered = Some(since.elapsed());
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .map(|(state, _)| state)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        state.settling -= 1;
        let mut taken = std::mem::take(&mut state.failed);
        taken.extend(state.waiting.take());
        drop(state);
        self.changed.notify_all();
        match unanswered {
            None => Ok(taken),
            Some(on_the_wire_for) => Err(Unsettled {
                on_the_wire_for,
                taken,
            }),
        }
    }

    /// Commits `offsets` on the calling thread and returns the answer, after syncing `store`'s log.
    /// Call it after [`Self::settle`].
    pub(crate) fn wait<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        store: &StateStore,
        offsets: &TopicPartitionList,
    ) -> Result<(), CommitError> {
        self.wait_with(offsets, |list| commit(consumer, store, list))
    }

    /// Drops what waits for the committer thread: after an error nothing more is committed.
    pub(crate) fn discard_waiting(&self) {
        self.lock().waiting = None;
    }

    /// The committer thread's body: commits what [`Self::in_background`] handed over, one commit
    /// at a time, until [`Self::stop`] (sending what still waits first).
    pub(crate) fn run<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, store: &StateStore) {
        self.run_with(|list| commit(consumer, store, list))
    }

    /// Since when the commit on the wire has been waiting for its answer, if one is.
    pub(crate) fn on_the_wire_since(&self) -> Option<Instant> {
        self.lock().on_the_wire_since
    }

    /// Ends [`Self::run`] once what waits is sent.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    /// [`Self::stop`] when dropped: a run that unwinds ends its committer thread too (else the
    /// thread scope would wait for it for ever).
    pub(crate) fn stop_on_drop(&self) -> impl Drop + '_ {
        StopOnDrop(self)
    }

    /// Background commits that failed since the last call: their partitions are to be committed
    /// again.
    pub(crate) fn take_failed(&self) -> Vec<TopicPartitionList> {
        std::mem::take(&mut self.lock().failed)
    }

    fn wait_with<E>(
        &self,
        offsets: &TopicPartitionList,
        commit: impl FnOnce(&TopicPartitionList) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        while state.on_the_wire_since.is_some() {
            state = self.wait_for_change(state);
        }
        state.on_the_wire_since = Some(Instant::now());
        drop(state);
        let _answered = Answered(self);
        commit(offsets)
    }

    fn run_with(&self, mut commit: impl FnMut(&TopicPartitionList) -> Result<(), CommitError>) {
        loop {
            let mut state = self.lock();
            while state.on_the_wire_since.is_some()
                || state.settling > 0
                || (state.waiting.is_none() && !state.stopping)
            {
                state = self.wait_for_change(state);
            }
            let Some(list) = state.waiting.take() else {
                return; // stopping, and nothing waits
            };
            state.on_the_wire_since = Some(Instant::now());
            drop(state);
            let answered = Answered(self);
            if let Err(error) = commit(&list) {
                tracing::warn!(%error, "retrying at the next checkpoint");
                // Handed back before the commit counts as answered: a settle sees it.
                self.lock().failed.push(list);
            }
            drop(answered);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_for_change<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Marks the commit on the wire answered when dropped, also when the commit panicked, so that
/// nobody waits for it for ever.
struct Answered<'a>(&'a GroupCommits);

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        self.0.lock().on_the_wire_since = None;
        self.0.changed.notify_all();
    }
}

struct StopOnDrop<'a>(&'a GroupCommits);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// One group commit: the store's log synced first, then the offsets committed and the answer
/// waited for.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    store: &StateStore,
    offsets: &TopicPartitionList,
) -> Result<(), CommitError> {
    store.sync_log()?;
    consumer.commit(offsets, CommitMode::Sync)?;
    Ok(())
}

/// `newer`'s partitions as they are, and `older`'s that `newer` does not have.
fn merged(older: &TopicPartitionList, newer: &TopicPartitionList) -> TopicPartitionList {
    let mut list = newer.clone();
    for element in older.elements() {
        if list
            .find_partition(element.topic(), element.partition())
            .is_none()
        {
            let mut added = list.add_partition(element.topic(), element.partition());
            // The offset came from a list that held it, so it is one a list can hold.
            let _ = added.set_offset(element.offset());
            added.set_metadata(element.metadata());
        }
    }
    list
}

#[cfg(test)]
mod tests;

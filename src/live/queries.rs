//! The bounded channel between the HTTP handlers and the poll loop. A handler [`Asker::ask`]s for a
//! source's partitions and waits (up to a timeout) for the answer; the poll loop, between two batches
//! of records, takes the waiting questions with [`Inbox::answer_waiting`] and answers each from its
//! windows — one lookup per question, with the processor in a consistent state. Nothing here
//! blocks the poll loop: taking from the channel never waits, and answering is a `oneshot` send.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use super::answer::OwnedPartition;

/// Questions that may wait for the poll loop at once; more are answered `503` at once.
pub const CAPACITY: usize = 64;

/// One question: the source and the `(topic, partition)`s it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub source: String,
    pub partitions: Vec<(String, i32)>,
}

/// The poll loop's answer, per partition of the question: its state if this instance owns it.
pub type Reply = Vec<Option<OwnedPartition>>;

/// Why a question got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{CAPACITY} queries are already waiting for the processor")]
    Busy,
    #[error(
        "the processor did not answer within {0:?} (a checkpoint or rebalance may be under way)"
    )]
    Timeout(Duration),
    #[error("the processor is not running")]
    Stopped,
}

type Question = (Query, tokio::sync::oneshot::Sender<Reply>);

/// The handlers' end.
#[derive(Debug, Clone)]
pub struct Asker {
    questions: SyncSender<Question>,
}

/// The poll loop's end.
#[derive(Debug)]
pub struct Inbox {
    questions: Receiver<Question>,
}

/// A channel holding at most [`CAPACITY`] questions.
pub fn channel() -> (Asker, Inbox) {
    let (questions, inbox) = sync_channel(CAPACITY);
    (Asker { questions }, Inbox { questions: inbox })
}

impl Asker {
    /// Puts `query` to the poll loop and waits at most `timeout` for its answer.
    pub async fn ask(&self, query: Query, timeout: Duration) -> Result<Reply, QueryError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.questions
            .try_send((query, reply))
            .map_err(|error| match error {
                TrySendError::Full(_) => QueryError::Busy,
                TrySendError::Disconnected(_) => QueryError::Stopped,
            })?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(QueryError::Stopped),
            Err(_) => Err(QueryError::Timeout(timeout)),
        }
    }
}

impl Inbox {
    /// Answers every question waiting now (at most [`CAPACITY`]) with `answer`; returns how many.
    /// Never waits: with none waiting this is one `try_recv`.
    pub fn answer_waiting(&self, mut answer: impl FnMut(&Query) -> Reply) -> usize {
        let mut answered = 0;
        while answered < CAPACITY {
            let Ok((query, reply)) = self.questions.try_recv() else {
                break;
            };
            // A handler that gave up has dropped its end: nothing to do.
            let _ = reply.send(answer(&query));
            answered += 1;
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(source: &str) -> Query {
        Query {
            source: source.into(),
            partitions: vec![("in".into(), 0)],
        }
    }

    #[tokio::test]
    async fn a_question_is_answered_by_the_inbox_and_times_out_without_it() {
        let (asker, inbox) = channel();
        let waiting = tokio::spawn({
            let asker = asker.clone();
            async move { asker.ask(query("a"), Duration::from_secs(5)).await }
        });
        let mut answered = 0;
        for _ in 0..500 {
            answered += inbox.answer_waiting(|q| {
                assert_eq!(q.source, "a");
                vec![None]
            });
            if answered > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(answered, 1);
        assert_eq!(waiting.await.expect("joined"), Ok(vec![None]));
        let timeout = Duration::from_millis(50);
        assert_eq!(
            asker.ask(query("b"), timeout).await,
            Err(QueryError::Timeout(timeout))
        );
        // The late question is still in the inbox; answering it harms nobody.
        assert_eq!(inbox.answer_waiting(|_| vec![None]), 1);
        drop(inbox);
        assert_eq!(
            asker.ask(query("c"), timeout).await,
            Err(QueryError::Stopped)
        );
    }

    #[tokio::test]
    async fn questions_beyond_the_capacity_are_refused_at_once() {
        let (asker, inbox) = channel();
        let mut pending = Vec::new();
        for _ in 0..CAPACITY {
            let asker = asker.clone();
            pending.push(tokio::spawn(async move {
                asker.ask(query("x"), Duration::from_secs(5)).await
            }));
        }
        // On the test's current-thread runtime, yielding lets every spawned question be sent.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            asker.ask(query("y"), Duration::from_millis(1)).await,
            Err(QueryError::Busy)
        );
        assert_eq!(inbox.answer_waiting(|_| vec![]), CAPACITY);
        for task in pending {
            assert_eq!(task.await.expect("joined"), Ok(vec![]));
        }
    }
}

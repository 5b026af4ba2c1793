//! When a caught-up exactly-once instance commits its results before the checkpoint interval is up.
//! Pure: the poll loop asks once per batch.
//!
//! Under exactly-once, results become visible only when the checkpoint's transaction commits, so
//! waiting for the interval (1 s by default) would put up to a second on every result. Once results
//! wait, the loop commits as soon as
//! - **the close is complete**: every owned partition has closed what they closed (its stream
//!   time has reached the stream time they were emitted at), so one transaction carries the whole
//!   close; or [`EARLY_COMMIT_DELAY`] has passed, for partitions that are idle or far behind;
//! - **and the commit costs no throughput that matters**: the batch drained everything fetched, or
//!   the last early commit is [`EARLY_COMMIT_MIN_GAP`] old. Catching up on a backlog, windows close
//!   often and results are late anyway; the gap bounds the extra transactions to ten a second
//!   (Kafka Streams' exactly-once commit interval). Live at high load the loop is rarely drained for
//!   long; without the gap a close that meets a short backlog (a slow commit just before it) would
//!   wait until the backlog is gone.

use std::time::Duration;

use crate::processor::WaitingResults;

/// How long results wait for the other partitions to close theirs, at most.
pub(crate) const EARLY_COMMIT_DELAY: Duration = Duration::from_millis(20);

/// How long after the last early commit another may be made while the loop is behind.
pub(crate) const EARLY_COMMIT_MIN_GAP: Duration = Duration::from_millis(100);

/// Whether to commit now; see the module doc.
pub(crate) fn commit_early(
    results: Option<WaitingResults>,
    drained: bool,
    since_last_early_commit: Duration,
) -> bool {
    let Some(results) = results else {
        return false;
    };
    let complete = results.close_complete || results.waited >= EARLY_COMMIT_DELAY;
    complete && (drained || since_last_early_commit >= EARLY_COMMIT_MIN_GAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_committed_once_their_close_is_complete_and_it_costs_no_throughput() {
        let ms = Duration::from_millis;
        let waiting = |waited, close_complete| {
            Some(WaitingResults {
                waited: ms(waited),
                close_complete,
            })
        };
        #[rustfmt::skip]
        let cases = [
            ("no results", None, true, ms(5_000), false),
            ("every partition closed, drained", waiting(1, true), true, ms(0), true),
            ("a partition still open, drained", waiting(19, false), true, ms(5_000), false),
            ("a partition idle: the delay decides", waiting(20, false), true, ms(0), true),
            ("behind, the last early commit recent", waiting(50, true), false, ms(99), false),
            ("behind, the last early commit long ago", waiting(1, true), false, ms(100), true),
            ("behind, a partition still open", waiting(5, false), false, ms(5_000), false),
            ("behind, the delay passed", waiting(20, false), false, ms(100), true),
        ];
        for (name, results, drained, since, expected) in cases {
            assert_eq!(commit_early(results, drained, since), expected, "{name}");
        }
    }
}

//! When an exactly-once instance commits its results before the checkpoint interval is up. Pure:
//! the poll loop asks once per batch.
//!
//! Under exactly-once, results become visible only when the checkpoint's transaction commits, so
//! waiting for the interval (1 s by default) would put up to a second on every result. Results wait
//! for an early commit in one of two ways:
//! - **Live results** (the newest closed [`LIVE_WITHIN`] or less before the wall clock): committed
//!   as soon as every owned partition has closed the same window ends (its stream time has reached
//!   their close time), so one transaction carries the whole close; for a partition that is idle,
//!   has seen no valid record or is far behind, after [`EARLY_COMMIT_DELAY`] at most. Whether the
//!   loop has drained what was fetched does not matter: at high load it rarely has for long, and a
//!   close that met a short backlog (a slow commit just before it) would wait until it was gone.
//!   Live windows close once per window end, so this adds about one transaction per window end.
//! - **Results of older data** (catching up on a backlog, where windows close often and results
//!   are late anyway): committed once they have waited [`EARLY_COMMIT_DELAY`] and the batch drained
//!   everything fetched; otherwise on the interval, so a backlog is not drained one transaction per
//!   window end.

use std::time::Duration;

use crate::processor::WaitingResults;

/// How long results wait for the other partitions to close theirs, at most.
pub(crate) const EARLY_COMMIT_DELAY: Duration = Duration::from_millis(20);

/// How far before the wall clock the newest results may have closed and still count as live. Wide
/// enough for a loop a few seconds behind and for producers' clocks a little off; far below any
/// backlog worth draining fast.
pub(crate) const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// Whether to commit now; see the module doc.
pub(crate) fn commit_early(results: Option<WaitingResults>, drained: bool) -> bool {
    let Some(results) = results else {
        return false;
    };
    let waited = results.waited >= EARLY_COMMIT_DELAY;
    if results.closed_before_now <= LIVE_WITHIN {
        results.close_complete || waited
    } else {
        drained && waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_results_commit_once_their_close_is_complete_older_ones_once_the_loop_drained() {
        let ms = Duration::from_millis;
        let waiting = |waited, close_complete, closed_before_now| {
            Some(WaitingResults {
                waited: ms(waited),
                close_complete,
                closed_before_now: ms(closed_before_now),
            })
        };
        #[rustfmt::skip]
        let cases = [
            ("no results", None, true, false),
            ("live, every partition closed", waiting(1, true, 5), false, true),
            ("live, a partition still open", waiting(19, false, 30), true, false),
            ("live, a partition idle: the delay decides", waiting(20, false, 30), false, true),
            ("live, closed seconds ago by a loop behind", waiting(1, true, 10_000), false, true),
            ("older data, drained, waited", waiting(20, true, 10_001), true, true),
            ("older data, drained, not waited", waiting(19, true, 60_000), true, false),
            ("older data, not drained", waiting(5_000, true, 60_000), false, false),
        ];
        for (name, results, drained, expected) in cases {
            assert_eq!(commit_early(results, drained), expected, "{name}");
        }
    }
}

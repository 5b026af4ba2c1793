//! The processor's restart strategy: whether a pipeline that failed after it had been running is
//! started again in-process, and how long it waits first.
//!
//! A transaction coordinator that stays away past the transaction timeout, the producer epoch it
//! then bumps, an unreachable broker: the cluster's state, not the settings. Flink restarts the
//! job from its last checkpoint (`restart-strategy: exponential-delay`); Kafka Streams replaces a
//! fenced producer and rejoins. Exiting instead would leave it to Kubernetes, whose crash-loop
//! back-off grows to five minutes and pages whoever watches restarts. Starting again in-process
//! takes the same path as a restarted process (state from RocksDB, offsets from the group), so the
//! guarantees are those proven under kill -9; only the process stays.
//!
//! The budget keeps a failure that does not go away from looping: a run that committed a
//! checkpoint made progress and clears it, and so does a failure [`FORGET_AFTER`] after the one
//! before (a quiet input commits nothing for hours, and its failures are not one failure); after
//! [`MAX_RESTARTS`] restarts in a row without either, the error ends the process. The waits are
//! 1 s, 2 s, 4 s, … (at most [`MAX_DELAY`]): a failure met again at the same place (a record the
//! cluster refuses, a coordinator still away) fails every run before its first checkpoint, and the
//! process exits within a few minutes.

use std::time::{Duration, Instant};

/// The most restarts in a row without a checkpoint committed in between.
pub const MAX_RESTARTS: u32 = 5;

/// The wait before the first restart after progress; it doubles with each further one.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// The longest wait before a restart (below the default stall timeout of 30 s).
pub const MAX_DELAY: Duration = Duration::from_secs(16);

/// A failure this long after the one before starts the count afresh.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Restarts since the last run that committed a checkpoint, and when the last failure was.
#[derive(Debug, Default)]
pub struct RestartBudget {
    in_a_row: u32,
    last_failure: Option<Instant>,
}

impl RestartBudget {
    /// After a run that failed at `now` (`progressed`: it committed a checkpoint): how long to wait
    /// before starting again, or `None` when [`MAX_RESTARTS`] restarts in a row made no progress.
    pub fn next(&mut self, progressed: bool, now: Instant) -> Option<Duration> {
        let long_after = self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) >= FORGET_AFTER);
        self.last_failure = Some(now);
        if progressed || long_after {
            self.in_a_row = 0;
        }
        if self.in_a_row >= MAX_RESTARTS {
            return None;
        }
        let delay = FIRST_DELAY
            .saturating_mul(1 << self.in_a_row.min(16))
            .min(MAX_DELAY);
        self.in_a_row += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case: its name, each failed run's (minutes since the start, whether it committed a
    /// checkpoint), and the waits that gives in seconds (`None`: give up).
    type Case = (&'static str, &'static [(u64, bool)], &'static [Option<u64>]);

    /// Five restarts, waiting longer each time, then giving up.
    const GIVING_UP: &[Option<u64>] = &[Some(1), Some(2), Some(4), Some(8), Some(16), None];

    #[test]
    fn restarts_back_off_and_give_up_after_five_in_a_row_without_progress() {
        let cases: &[Case] = &[
            ("one failure", &[(0, true)], &[Some(1)]),
            (
                "a failure met again before any checkpoint",
                &[
                    (0, true),
                    (1, false),
                    (2, false),
                    (3, false),
                    (4, false),
                    (5, false),
                ],
                GIVING_UP,
            ),
            (
                "the first run failing before its first checkpoint counts too",
                &[
                    (0, false),
                    (1, false),
                    (2, false),
                    (3, false),
                    (4, false),
                    (5, false),
                ],
                GIVING_UP,
            ),
            (
                "progress in between clears the count",
                &[
                    (0, false),
                    (1, false),
                    (2, false),
                    (3, false),
                    (4, true),
                    (5, false),
                ],
                &[Some(1), Some(2), Some(4), Some(8), Some(1), Some(2)],
            ),
            (
                "failures with progress between them always wait a second",
                &[
                    (0, true),
                    (1, true),
                    (2, true),
                    (3, true),
                    (4, true),
                    (5, true),
                    (6, true),
                ],
                &[Some(1); 7],
            ),
            (
                "a quiet input's failures hours apart are not one failure",
                &[
                    (0, false),
                    (60, false),
                    (120, false),
                    (180, false),
                    (240, false),
                    (300, false),
                ],
                &[Some(1); 6],
            ),
            (
                "ten minutes after the last failure the count starts afresh",
                &[
                    (0, false),
                    (1, false),
                    (2, false),
                    (3, false),
                    (4, false),
                    (14, false),
                    (15, false),
                ],
                &[
                    Some(1),
                    Some(2),
                    Some(4),
                    Some(8),
                    Some(16),
                    Some(1),
                    Some(2),
                ],
            ),
        ];
        for (case, failures, expected) in cases {
            let start = Instant::now();
            let mut budget = RestartBudget::default();
            let waits: Vec<Option<u64>> = failures
                .iter()
                .map(|&(minute, progressed)| {
                    let at = start + Duration::from_secs(minute * 60);
                    budget.next(progressed, at).map(|d| d.as_secs())
                })
                .collect();
            assert_eq!(&waits, expected, "{case}");
        }
    }
}

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
//! checkpoint made progress and clears it; after [`MAX_RESTARTS`] restarts in a row without one,
//! the error ends the process. The waits are 1 s, 2 s, 4 s, … (at most [`MAX_DELAY`]): a failure
//! met again at the same place (a record the cluster refuses, a coordinator still away) fails
//! every run before its first checkpoint, and the process exits within about a minute.

use std::time::Duration;

/// The most restarts in a row without a checkpoint committed in between.
pub const MAX_RESTARTS: u32 = 5;

/// The wait before the first restart after progress; it doubles with each further one.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// The longest wait before a restart (below the default stall timeout of 30 s).
pub const MAX_DELAY: Duration = Duration::from_secs(16);

/// Restarts since the last run that committed a checkpoint.
#[derive(Debug, Default)]
pub struct RestartBudget {
    in_a_row: u32,
}

impl RestartBudget {
    /// After a failed run (`progressed`: it committed a checkpoint): how long to wait before
    /// starting again, or `None` when [`MAX_RESTARTS`] restarts in a row made no progress.
    pub fn next(&mut self, progressed: bool) -> Option<Duration> {
        if progressed {
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

    /// A case: its name, whether each failed run had committed a checkpoint, and the waits that
    /// gives in seconds (`None`: give up).
    type Case = (&'static str, &'static [bool], &'static [Option<u64>]);

    #[test]
    fn restarts_back_off_and_give_up_after_five_in_a_row_without_progress() {
        let cases: &[Case] = &[
            ("one failure", &[true], &[Some(1)]),
            (
                "a failure met again before any checkpoint",
                &[true, false, false, false, false, false],
                &[Some(1), Some(2), Some(4), Some(8), Some(16), None],
            ),
            (
                "the first run failing before its first checkpoint counts too",
                &[false, false, false, false, false, false],
                &[Some(1), Some(2), Some(4), Some(8), Some(16), None],
            ),
            (
                "progress in between clears the count",
                &[false, false, false, false, true, false],
                &[Some(1), Some(2), Some(4), Some(8), Some(1), Some(2)],
            ),
            (
                "failures with progress between them always wait a second",
                &[true, true, true, true, true, true, true],
                &[Some(1); 7],
            ),
        ];
        for (case, progressed, expected) in cases {
            let mut budget = RestartBudget::default();
            let waits: Vec<Option<u64>> = progressed
                .iter()
                .map(|&p| budget.next(p).map(|d| d.as_secs()))
                .collect();
            assert_eq!(&waits, expected, "{case}");
        }
    }
}

//! The processor's restart strategy: how often a pipeline that failed after it had been running is
//! started again in-process, and how long it waits first.
//!
//! A transaction coordinator that stays away past the transaction timeout, a producer epoch the
//! coordinator bumped, a consumer error: the cluster's state, not the settings. Flink restarts the
//! job from its last checkpoint (`restart-strategy: exponential-delay`); Kafka Streams replaces a
//! fenced producer and rejoins. Exiting instead would leave it to Kubernetes, whose crash-loop
//! back-off grows to five minutes and pages whoever watches restarts. Starting again in-process
//! takes the same path as a restarted process (state from RocksDB, offsets from the group), so the
//! guarantees are those proven under kill -9; only the process stays.
//!
//! The budget keeps a failure that does not go away from looping: at most [`MAX_RESTARTS`] in any
//! [`BUDGET_WINDOW`], waiting 1 s, 2 s, 4 s, … (at most [`MAX_DELAY`]) as failures crowd; past it,
//! the error ends the process.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most in-process restarts in any [`BUDGET_WINDOW`].
pub const MAX_RESTARTS: usize = 5;

/// The span over which restarts are counted.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(600);

/// The wait before the first restart in a [`BUDGET_WINDOW`]; it doubles with each further one.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// The longest wait before a restart (below the default stall timeout of 30 s).
pub const MAX_DELAY: Duration = Duration::from_secs(16);

/// The restarts of the last [`BUDGET_WINDOW`].
#[derive(Debug, Default)]
pub struct RestartBudget {
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// After a failure at `now`: how long to wait before starting again, or `None` when
    /// [`MAX_RESTARTS`] restarts already happened in the last [`BUDGET_WINDOW`].
    pub fn next(&mut self, now: Instant) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= BUDGET_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= MAX_RESTARTS {
            return None;
        }
        let delay = FIRST_DELAY
            .saturating_mul(1 << self.recent.len().min(16))
            .min(MAX_DELAY);
        self.recent.push_back(now);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case: its name, failures at these seconds after a start, the waits they give (`None`:
    /// give up).
    type Case = (&'static str, &'static [u64], &'static [Option<u64>]);

    #[test]
    fn restarts_back_off_and_stop_at_the_budget_until_old_ones_age_out() {
        let cases: &[Case] = &[
            ("one failure", &[0], &[Some(1)]),
            (
                "failures crowding in",
                &[0, 5, 10, 20, 40, 60],
                &[Some(1), Some(2), Some(4), Some(8), Some(16), None],
            ),
            (
                "the wait is capped",
                &[0, 1, 2, 3, 4],
                &[Some(1), Some(2), Some(4), Some(8), Some(16)],
            ),
            (
                "an old failure ages out of the window",
                &[0, 100, 200, 300, 400, 600, 601],
                &[Some(1), Some(2), Some(4), Some(8), Some(16), Some(16), None],
            ),
            (
                "failures ten minutes apart always wait a second",
                &[0, 600, 1200, 1800, 2400, 3000, 3600],
                &[Some(1); 7],
            ),
        ];
        for (case, failures, expected) in cases {
            let start = Instant::now();
            let mut budget = RestartBudget::default();
            let waits: Vec<Option<u64>> = failures
                .iter()
                .map(|&s| {
                    budget
                        .next(start + Duration::from_secs(s))
                        .map(|d| d.as_secs())
                })
                .collect();
            assert_eq!(&waits, expected, "{case}");
        }
    }
}

//! Synthetic traffic: a seeded, reproducible stream of [`TrafficEvent`]s over a fixed set of sources,
//! with optional bounded out-of-orderness and a fraction of deliberately late events. Pure: the caller
//! supplies the event-time base for each event (a synthetic clock when preloading, the wall clock when
//! producing at a rate), so the same seed and bases always give the same events.

#[cfg(feature = "runtime")]
pub mod to_topic;

use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::model::TrafficEvent;

/// How the synthetic traffic looks.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Number of distinct sources; events pick one uniformly at random.
    pub sources: u32,
    /// RNG seed: the same seed gives the same events for the same bases.
    pub seed: u64,
    /// Each event's timestamp is its base minus a uniform jitter in `[0, out_of_order_ms]`.
    pub out_of_order_ms: u64,
    /// Fraction of events, in `[0, 1]`, whose timestamp is pushed back a further `late_by_ms`.
    pub late_fraction: f64,
    /// How far a late event lags its base; beyond window + grace makes it late for the processor.
    pub late_by_ms: u64,
}

/// The name of source number `index`: fixed width, so names sort like their numbers.
pub fn source_name(index: u32) -> String {
    format!("source-{index:07}")
}

/// A reproducible stream of traffic events.
pub struct TrafficGenerator {
    config: GeneratorConfig,
    names: Vec<String>,
    rng: SmallRng,
}

impl TrafficGenerator {
    /// `config.sources` must be at least 1 and `config.late_fraction` within `[0, 1]`
    /// (the CLI validates both before it gets here).
    pub fn new(config: GeneratorConfig) -> Self {
        let names = (0..config.sources.max(1)).map(source_name).collect();
        let rng = SmallRng::seed_from_u64(config.seed);
        TrafficGenerator { config, names, rng }
    }

    /// The next event, with event time derived from `base_ms`.
    pub fn next_event(&mut self, base_ms: i64) -> TrafficEvent {
        let source = &self.names[self.rng.random_range(0..self.names.len())];
        let jitter = if self.config.out_of_order_ms > 0 {
            self.rng.random_range(0..=self.config.out_of_order_ms)
        } else {
            0
        };
        let late = self.config.late_fraction > 0.0
            && self
                .rng
                .random_bool(self.config.late_fraction.clamp(0.0, 1.0));
        let lag = jitter + if late { self.config.late_by_ms } else { 0 };
        // Measurements are non-negative rates with three decimals, as a link counter would report them.
        let value = (self.rng.random_range(0.0..1000.0_f64) * 1000.0).round() / 1000.0;
        TrafficEvent {
            source: source.clone(),
            timestamp: base_ms.saturating_sub(lag as i64),
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sources: u32, out_of_order_ms: u64, late_fraction: f64) -> GeneratorConfig {
        GeneratorConfig {
            sources,
            seed: 42,
            out_of_order_ms,
            late_fraction,
            late_by_ms: 120_000,
        }
    }

    fn take(config: GeneratorConfig, n: i64) -> Vec<TrafficEvent> {
        let mut generator = TrafficGenerator::new(config);
        (0..n)
            .map(|i| generator.next_event(1_000_000 + i * 10))
            .collect()
    }

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let a = take(config(10, 500, 0.1), 1000);
        assert_eq!(a, take(config(10, 500, 0.1), 1000));
        let other = take(
            GeneratorConfig {
                seed: 43,
                ..config(10, 500, 0.1)
            },
            1000,
        );
        assert_ne!(a, other);
    }

    #[test]
    fn in_order_when_no_jitter_and_no_late_events() {
        let events = take(config(5, 0, 0.0), 1000);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.timestamp, 1_000_000 + i as i64 * 10);
        }
    }

    #[test]
    fn jitter_stays_within_bound_and_late_events_lag_by_late_by() {
        let cases = [
            (0_u64, 0.0_f64),
            (250, 0.0),
            (250, 0.05),
            (5_000, 0.5),
            (0, 1.0),
        ];
        for (out_of_order_ms, late_fraction) in cases {
            let events = take(config(50, out_of_order_ms, late_fraction), 20_000);
            let mut late = 0;
            for (i, e) in events.iter().enumerate() {
                let lag = (1_000_000 + i as i64 * 10) - e.timestamp;
                assert!(lag >= 0, "never ahead of the base");
                if lag > out_of_order_ms as i64 {
                    assert!(
                        lag >= 120_000 && lag <= 120_000 + out_of_order_ms as i64,
                        "lag {lag}"
                    );
                    late += 1;
                }
            }
            let observed = late as f64 / events.len() as f64;
            assert!(
                (observed - late_fraction).abs() < 0.02,
                "late fraction {observed} vs {late_fraction}"
            );
        }
    }

    #[test]
    fn uses_every_source_and_only_those() {
        let events = take(config(20, 0, 0.0), 5_000);
        let mut seen: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        let expected: Vec<String> = (0..20).map(source_name).collect();
        assert_eq!(
            seen,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(events
            .iter()
            .all(|e| e.value.is_finite() && (0.0..=1000.0).contains(&e.value)));
    }
}

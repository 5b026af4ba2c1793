//! The percentile settings of `streamagg run` (`--percentiles`, `--percentile-accuracy`,
//! `--percentile-max-bins`), flattened into [`super::RunOptions`] and validated once into the
//! [`SketchSpec`] every window keeps, or `None` when off.

use serde::Deserialize;

use super::ConfigError;
use crate::window::sketch::{SketchSpec, MIN_ACCURACY};

/// The relative accuracy unless `--percentile-accuracy` says otherwise: 1 %.
pub const DEFAULT_ACCURACY: f64 = 0.01;
/// The bound on a window's sketch bins unless `--percentile-max-bins` says otherwise.
pub const DEFAULT_MAX_BINS: usize = 2048;
/// The largest bound accepted: 8-byte bins, so at most 512 KiB per window.
const MAX_MAX_BINS: usize = 65_536;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, clap::Args)]
pub struct PercentileOptions {
    /// Add p50, p90, p95 and p99 of `value` to every output record, from a per-window sketch
    /// [default: false].
    #[arg(long, env = "STREAMAGG_PERCENTILES", num_args = 0..=1, default_missing_value = "true")]
    pub percentiles: Option<bool>,
    /// Relative accuracy of the percentiles: each is within this fraction of the exact value at
    /// its rank [default: 0.01].
    #[arg(long, env = "STREAMAGG_PERCENTILE_ACCURACY")]
    pub percentile_accuracy: Option<f64>,
    /// Most bins a window's sketch keeps (8 bytes each); beyond, the lowest merge [default: 2048].
    #[arg(long, env = "STREAMAGG_PERCENTILE_MAX_BINS")]
    pub percentile_max_bins: Option<usize>,
}

impl PercentileOptions {
    /// The sketch each window keeps, or `None` with percentiles off. Accuracy and bins are checked
    /// even when off, so a typo is found before the day percentiles are turned on.
    pub fn validate(&self) -> Result<Option<SketchSpec>, ConfigError> {
        let accuracy = self.percentile_accuracy.unwrap_or(DEFAULT_ACCURACY);
        if !(MIN_ACCURACY..1.0).contains(&accuracy) {
            return Err(ConfigError::Invalid {
                key: "percentile_accuracy",
                reason: format!("{accuracy} is not between {MIN_ACCURACY} and 1 (exclusive)"),
            });
        }
        let max_bins = self.percentile_max_bins.unwrap_or(DEFAULT_MAX_BINS);
        if !(2..=MAX_MAX_BINS).contains(&max_bins) {
            return Err(ConfigError::Invalid {
                key: "percentile_max_bins",
                reason: format!("{max_bins} is not between 2 and {MAX_MAX_BINS}"),
            });
        }
        let spec = SketchSpec::new(accuracy, max_bins).ok_or(ConfigError::Invalid {
            key: "percentile_accuracy",
            reason: format!("{accuracy} is not a valid accuracy"),
        })?;
        Ok(self.percentiles.unwrap_or(false).then_some(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(on: Option<bool>, accuracy: Option<f64>, bins: Option<usize>) -> PercentileOptions {
        PercentileOptions {
            percentiles: on,
            percentile_accuracy: accuracy,
            percentile_max_bins: bins,
        }
    }

    #[test]
    fn percentiles_are_off_by_default_and_validated_once() {
        assert_eq!(options(None, None, None).validate(), Ok(None));
        assert_eq!(options(Some(false), Some(0.05), None).validate(), Ok(None));
        assert_eq!(
            options(Some(true), None, None).validate(),
            Ok(SketchSpec::new(0.01, 2048))
        );
        assert_eq!(
            options(Some(true), Some(0.001), Some(512)).validate(),
            Ok(SketchSpec::new(0.001, 512))
        );
        for (accuracy, bins, key) in [
            (Some(0.0), None, "percentile_accuracy"),
            (Some(1.0), None, "percentile_accuracy"),
            (Some(-0.5), None, "percentile_accuracy"),
            (Some(f64::NAN), None, "percentile_accuracy"),
            (Some(1e-9), None, "percentile_accuracy"),
            (None, Some(1), "percentile_max_bins"),
            (None, Some(1 << 20), "percentile_max_bins"),
        ] {
            for on in [Some(true), None] {
                match options(on, accuracy, bins).validate() {
                    Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                    other => panic!("{accuracy:?} {bins:?}: {other:?}"),
                }
            }
        }
    }
}

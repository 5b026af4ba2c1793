//! The quantile sketch of one window's values — pure, no I/O: a DDSketch (Masson, Rim, Lee, VLDB
//! 2019) with a logarithmic index and sparse sorted bins.
//!
//! A value `v > 0` falls into bin `k = ⌈ln v / ln γ⌉` with `γ = (1 + α) / (1 − α)`, which covers
//! `(γ^(k−1), γ^k]`; the bin's estimate `2γ^k / (γ + 1)` is within relative error `α` of every
//! value in it. Negative values mirror that, and values of magnitude below `f64::MIN_POSITIVE`
//! (zero among them) share one bin that reports `0`. A quantile `q` of `n` values is the value at
//! 0-based rank `⌊q · (n − 1)⌋` of the sorted values (the "lower" rank); the sketch reports that
//! value's bin estimate, so it is within `α · |value|` of it while the bins are at most `max_bins`.
//! Beyond that the lowest two bins merge (DDSketch's collapsing-lowest store): memory stays bounded
//! and the high quantiles — the ones traffic is watched for — stay exact to `α`. At `α = 1 %`,
//! 2,048 bins span values over a ratio of `γ^2048 ≈ 10^17`, so real traffic never collapses.
//!
//! Why not the `sketches-ddsketch` crate: its dense store allocates bins in chunks of 128 `u64`s
//! (1 KiB for the first value of each sign) plus ~170 bytes of struct per sketch; most windows
//! see a few dozen events in a handful of bins, and at 100,000 sources that is over 100 MB more
//! state. Here a bin is 8 bytes, only bins that hold values exist, and the sketch has a compact
//! byte form for the store. Sketches merge exactly (bin counts add), so windows can be rolled up.

/// A sketch's parameters: the relative accuracy `α` and the bound on bins. Validated by config:
/// `MIN_ACCURACY ≤ α < 1`, `max_bins ≥ 2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SketchSpec {
    accuracy: f64,
    max_bins: usize,
    /// `ln γ`.
    gamma_ln: f64,
    /// `ln(2 / (γ + 1))`: a bin's estimate is `exp(k · ln γ + this)`.
    estimate_ln: f64,
}

/// The smallest relative accuracy accepted: it keeps every bin index of an `f64` within `i32`.
pub const MIN_ACCURACY: f64 = 1e-6;
/// Bin indices of positive values are offset by this (negative ones are the negated offset
/// index), so one sorted `i32` orders negative values, zero and positive values as numbers.
const INDEX_OFFSET: i32 = 1 << 30;

impl SketchSpec {
    /// `None` unless `MIN_ACCURACY ≤ accuracy < 1` and `max_bins ≥ 2`.
    pub fn new(accuracy: f64, max_bins: usize) -> Option<SketchSpec> {
        if !(MIN_ACCURACY..1.0).contains(&accuracy) || max_bins < 2 {
            return None;
        }
        let gamma = (1.0 + accuracy) / (1.0 - accuracy);
        Some(SketchSpec {
            accuracy,
            max_bins,
            gamma_ln: (2.0 * accuracy / (1.0 - accuracy)).ln_1p(),
            estimate_ln: (2.0 / (gamma + 1.0)).ln(),
        })
    }

    pub fn accuracy(&self) -> f64 {
        self.accuracy
    }

    pub fn max_bins(&self) -> usize {
        self.max_bins
    }

    /// The bin index of `value` (finite): value order is index order.
    fn index_of(&self, value: f64) -> i32 {
        let magnitude = value.abs();
        if magnitude < f64::MIN_POSITIVE {
            return 0;
        }
        // |k| ≤ 745 / ln γ < 2^30 for α ≥ MIN_ACCURACY, so the casts cannot saturate.
        let k = (magnitude.ln() / self.gamma_ln).ceil() as i32;
        if value > 0.0 {
            k + INDEX_OFFSET
        } else {
            -(k + INDEX_OFFSET)
        }
    }

    /// The estimate a bin reports.
    fn value_of(&self, index: i32) -> f64 {
        if index == 0 {
            return 0.0;
        }
        let k = index.abs() - INDEX_OFFSET;
        // The top bin's estimate may lie beyond f64::MAX; MAX lies between it and every value in
        // the bin, so it is at least as close to each.
        let magnitude = (f64::from(k) * self.gamma_ln + self.estimate_ln)
            .exp()
            .min(f64::MAX);
        magnitude.copysign(f64::from(index))
    }
}

/// One bin: its index and how many values fell into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bin {
    index: i32,
    count: u32,
}

/// The bins of one window's values, sorted by index. Empty until a value is added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    bins: Vec<Bin>,
}

/// Version byte of [`Sketch::encode`]'s form.
const ENCODING_VERSION: u8 = 1;

impl Sketch {
    /// Adds a finite `value`.
    pub fn add(&mut self, spec: &SketchSpec, value: f64) {
        self.add_to_bin(spec, spec.index_of(value), 1);
    }

    fn add_to_bin(&mut self, spec: &SketchSpec, index: i32, count: u32) {
        match self.bins.binary_search_by_key(&index, |bin| bin.index) {
            // A bin saturates at u32::MAX values, more than a window of one source ever sees.
            Ok(at) => self.bins[at].count = self.bins[at].count.saturating_add(count),
            Err(at) => {
                if self.bins.len() >= spec.max_bins {
                    // At the cap a new bin is merged away at once: one slot more, not a doubling
                    // of the allocation that would stay with the window.
                    self.bins.reserve_exact(1);
                }
                self.bins.insert(at, Bin { index, count });
                self.collapse(spec);
            }
        }
    }

    /// Merges the lowest bins until at most `spec.max_bins` remain.
    fn collapse(&mut self, spec: &SketchSpec) {
        if self.bins.len() <= spec.max_bins {
            return;
        }
        let excess = self.bins.len() - spec.max_bins;
        let merged: u32 = self.bins[..=excess]
            .iter()
            .fold(0_u32, |sum, bin| sum.saturating_add(bin.count));
        self.bins[excess].count = merged;
        self.bins.drain(..excess);
    }

    /// Adds every value of `other` (made with the same spec): the sketch of both windows' values.
    pub fn merge(&mut self, spec: &SketchSpec, other: &Sketch) {
        for bin in &other.bins {
            self.add_to_bin(spec, bin.index, bin.count);
        }
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|bin| u64::from(bin.count)).sum()
    }

    /// The estimate of the value at 0-based rank `⌊q · (n − 1)⌋` of the sorted values, `q` in
    /// `[0, 1]`; `None` when empty.
    pub fn quantile(&self, spec: &SketchSpec, q: f64) -> Option<f64> {
        let count = self.count();
        let last = count.checked_sub(1)?;
        let rank = (q.clamp(0.0, 1.0) * last as f64).floor() as u64;
        let mut below = 0_u64;
        for bin in &self.bins {
            below += u64::from(bin.count);
            if below > rank {
                return Some(spec.value_of(bin.index));
            }
        }
        None
    }

    /// `bin count (u32 LE) ‖ (index i32 LE ‖ count u32 LE)*`, after a version byte.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(5 + 8 * self.bins.len());
        out.push(ENCODING_VERSION);
        // At most `max_bins` bins, validated far below u32::MAX.
        out.extend_from_slice(&(self.bins.len() as u32).to_le_bytes());
        for bin in &self.bins {
            out.extend_from_slice(&bin.index.to_le_bytes());
            out.extend_from_slice(&bin.count.to_le_bytes());
        }
    }

    /// Reads [`Sketch::encode`]'s form; `None` for anything else (another version, a damaged disk):
    /// wrong length, bins out of order or empty.
    pub fn decode(bytes: &[u8]) -> Option<Sketch> {
        let (&version, rest) = bytes.split_first()?;
        let (len, mut rest) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if version != ENCODING_VERSION || rest.len() != len.checked_mul(8)? {
            return None;
        }
        let mut bins = Vec::with_capacity(len);
        while let Some((index, after)) = rest.split_first_chunk::<4>() {
            let (count, after) = after.split_first_chunk::<4>()?;
            let bin = Bin {
                index: i32::from_le_bytes(*index),
                count: u32::from_le_bytes(*count),
            };
            let ordered = bins.last().is_none_or(|last: &Bin| last.index < bin.index);
            if !ordered || bin.count == 0 {
                return None;
            }
            bins.push(bin);
            rest = after;
        }
        Some(Sketch { bins })
    }
}

#[cfg(test)]
mod tests;

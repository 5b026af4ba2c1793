use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

const QUANTILES: [f64; 7] = [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0];

/// The oracle: the value at 0-based rank ⌊q · (n − 1)⌋ of the sorted values.
fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

fn sketch_of(spec: &SketchSpec, values: &[f64]) -> Sketch {
    let mut sketch = Sketch::default();
    for &v in values {
        sketch.add(spec, v);
    }
    sketch
}

fn assert_within_accuracy(spec: &SketchSpec, values: &[f64], what: &str) {
    let sketch = sketch_of(spec, values);
    assert_eq!(sketch.count(), values.len() as u64);
    for q in QUANTILES {
        let exact = exact_quantile(values, q);
        let reported = sketch.quantile(spec, q).expect("not empty");
        // The bound is α · |exact|, plus 1e-12 · |exact| for the float arithmetic of the bin
        // estimate (`exp` of `k · ln γ`, whose rounding is relative to the value, not to α).
        let bound = (spec.accuracy() + 1e-12) * exact.abs();
        assert!(
            (reported - exact).abs() <= bound,
            "{what}, α {}: q {q}: reported {reported}, exact {exact}",
            spec.accuracy()
        );
    }
}

#[test]
fn every_quantile_is_within_the_relative_accuracy_of_the_exact_rank_value() {
    let mut rng = SmallRng::seed_from_u64(20);
    let datasets: Vec<(&str, Vec<f64>)> = vec![
        ("one value", vec![42.0]),
        ("two values", vec![1.0, 1000.0]),
        (
            "uniform 50..150",
            (0..1000).map(|_| rng.random_range(50.0..150.0)).collect(),
        ),
        (
            "heavy tail",
            (0..5000)
                .map(|_| 1.0 / rng.random_range(1e-6..1.0_f64))
                .collect(),
        ),
        (
            "negatives and zeros",
            (0..999)
                .map(|i| match i % 3 {
                    0 => 0.0,
                    1 => -rng.random_range(1.0..1e6),
                    _ => rng.random_range(1e-3..1.0),
                })
                .collect(),
        ),
        (
            "extremes",
            vec![
                f64::MAX,
                -f64::MAX,
                f64::MIN_POSITIVE,
                -f64::MIN_POSITIVE,
                1e-300,
                0.0,
                -0.0,
            ],
        ),
        ("ties", vec![7.5; 100]),
    ];
    // The bound holds while no bins collapse: at most 5,000 distinct values here.
    for accuracy in [0.01, 0.001, 0.05, 0.5, MIN_ACCURACY] {
        let spec = SketchSpec::new(accuracy, 8192).expect("valid");
        for (what, values) in &datasets {
            assert_within_accuracy(&spec, values, what);
        }
    }
}

#[test]
fn specs_outside_the_accepted_range_are_refused() {
    for (accuracy, bins) in [
        (0.0, 2048),
        (1.0, 2048),
        (-0.1, 2048),
        (f64::NAN, 2048),
        (1e-7, 2048),
        (0.01, 1),
    ] {
        assert_eq!(SketchSpec::new(accuracy, bins), None, "{accuracy} {bins}");
    }
    assert!(SketchSpec::new(0.999, 2).is_some());
}

#[test]
fn an_empty_sketch_has_no_quantile() {
    let spec = SketchSpec::new(0.01, 2048).expect("valid");
    assert_eq!(Sketch::default().quantile(&spec, 0.5), None);
    assert_eq!(Sketch::default().count(), 0);
}

#[test]
fn merging_equals_the_sketch_of_both_windows_values() {
    let spec = SketchSpec::new(0.01, 2048).expect("valid");
    let mut rng = SmallRng::seed_from_u64(7);
    let a: Vec<f64> = (0..500).map(|_| rng.random_range(-100.0..1e4)).collect();
    let b: Vec<f64> = (0..300).map(|_| rng.random_range(0.5..2e5)).collect();
    let mut merged = sketch_of(&spec, &a);
    merged.merge(&spec, &sketch_of(&spec, &b));
    let both: Vec<f64> = a.iter().chain(&b).copied().collect();
    assert_eq!(merged, sketch_of(&spec, &both));
    assert_within_accuracy(&spec, &both, "merged");
}

#[test]
fn bins_stay_bounded_and_the_high_quantiles_stay_accurate() {
    let spec = SketchSpec::new(0.01, 64).expect("valid");
    // 10^0 .. 10^6 over 1,000 values: ~700 bins at 1 %, collapsed to 64.
    let values: Vec<f64> = (0..1000).map(|i| 10_f64.powf(i as f64 * 0.006)).collect();
    let sketch = sketch_of(&spec, &values);
    assert_eq!(sketch.bins.len(), 64);
    assert!(
        sketch.bins.capacity() <= 65,
        "a bin over the cap costs one slot, not a doubling: capacity {}",
        sketch.bins.capacity()
    );
    assert_eq!(sketch.count(), 1000);
    for q in [0.95, 0.99, 1.0] {
        let exact = exact_quantile(&values, q);
        let reported = sketch.quantile(&spec, q).expect("not empty");
        assert!(
            (reported - exact).abs() <= (0.01 + 1e-12) * exact,
            "q {q}: {reported} vs {exact}"
        );
    }
    // The lowest values were merged upwards: the median is reported too high.
    assert!(sketch.quantile(&spec, 0.5).expect("not empty") > exact_quantile(&values, 0.5) * 1.01);
}

#[test]
fn the_byte_form_round_trips_and_refuses_anything_else() {
    let spec = SketchSpec::new(0.01, 2048).expect("valid");
    let sketch = sketch_of(&spec, &[-3.0, 0.0, 1.0, 1.0, 250.0]);
    let mut bytes = Vec::new();
    sketch.encode(&mut bytes);
    assert_eq!(bytes.len(), 5 + 8 * 4);
    assert_eq!(Sketch::decode(&bytes), Some(sketch.clone()));
    let mut empty = Vec::new();
    Sketch::default().encode(&mut empty);
    assert_eq!(Sketch::decode(&empty), Some(Sketch::default()));
    assert_eq!(Sketch::decode(&bytes[..bytes.len() - 1]), None, "truncated");
    assert_eq!(Sketch::decode(&[]), None);
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 9;
    assert_eq!(Sketch::decode(&wrong_version), None);
    let mut unordered = bytes.clone();
    unordered[5..9].copy_from_slice(&i32::MAX.to_le_bytes());
    assert_eq!(Sketch::decode(&unordered), None, "bins out of order");
    let mut zero_count = bytes;
    zero_count[9..13].copy_from_slice(&0_u32.to_le_bytes());
    assert_eq!(Sketch::decode(&zero_count), None, "an empty bin");
}

#[test]
fn windows_with_percentiles_sketch_every_aggregated_value_and_none_without() {
    use crate::window::{Observed, PartitionWindows, WindowSpec};
    let spec = SketchSpec::new(0.01, 2048).expect("valid");
    let minute = WindowSpec::epoch(60_000, 0);
    let events = [
        ("a", 1_000, 5.0),
        ("a", 2_000, 7.0),
        ("b", 3_000, -1.0),
        ("a", 61_000, 1.0),
    ];
    let mut on = PartitionWindows::new(minute).keeping_percentiles(Some(spec));
    let mut off = PartitionWindows::new(minute);
    for (offset, (source, timestamp, value)) in events.into_iter().enumerate() {
        assert_eq!(
            on.observe(source, timestamp, value, offset as i64),
            Observed::Aggregated
        );
        assert_eq!(
            off.observe(source, timestamp, value, offset as i64),
            Observed::Aggregated
        );
    }
    // What a checkpoint stores carries the sketch too.
    let dirty = on.take_dirty();
    let stored_a = dirty[0]
        .iter()
        .find(|(start, source, _)| *start == 0 && source == "a");
    assert_eq!(
        stored_a.and_then(|(_, _, a)| a.sketch.as_deref()),
        Some(&sketch_of(&spec, &[5.0, 7.0]))
    );
    let closed = on.close_due();
    assert_eq!(closed.len(), 2);
    assert_eq!(
        closed[0].aggregate.sketch.as_deref(),
        Some(&sketch_of(&spec, &[5.0, 7.0]))
    );
    assert_eq!(
        closed[1].aggregate.sketch.as_deref(),
        Some(&sketch_of(&spec, &[-1.0]))
    );
    assert!(off.close_due().iter().all(|w| w.aggregate.sketch.is_none()));
    // Merging the closed windows of one source is the aggregate of all their values.
    let mut merged = closed[0].aggregate.clone();
    let mut later = crate::window::Aggregate::of(1.0, 3);
    later.sketch = Some(Box::new(sketch_of(&spec, &[1.0])));
    merged.merge(&later, Some(&spec));
    assert_eq!(
        (merged.count, merged.sum, merged.min, merged.max),
        (3, 13.0, 1.0, 7.0)
    );
    assert_eq!(
        merged.sketch.as_deref(),
        Some(&sketch_of(&spec, &[5.0, 7.0, 1.0]))
    );
}

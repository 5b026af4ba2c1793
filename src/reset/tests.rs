//! Tests of [`super`] (reset).

use super::*;
use crate::checkpoint::Semantics;
use crate::codec::Format;
use crate::route::EventTime;
use crate::window::Rollups;

const MINUTE: Semantics = Semantics {
    window_ms: 60_000,
    grace_ms: 10_000,
    min_value: None,
    event_time: EventTime::Field,
    input_format: Format::Json,
    percentiles: None,
    rollups: Rollups::NONE,
    zone: None,
};
const NOW: i64 = 1_764_800_000_000;

fn ours(offset: i64, generation: u64) -> Option<(i64, Option<CommitMetadata>)> {
    Some((
        offset,
        Some(CommitMetadata {
            stream_time: Some(5),
            rebuild_offset: offset,
            semantics: Some(MINUTE),
            generation: Generation(generation),
            reset: false,
            earlier_counts: Default::default(),
        }),
    ))
}

fn partition(
    partition: i32,
    committed: Option<(i64, Option<CommitMetadata>)>,
    log: (i64, i64),
    at_time: Option<i64>,
) -> PartitionNow {
    PartitionNow {
        partition,
        committed,
        log_start: log.0,
        log_end: log.1,
        at_time,
    }
}

#[test]
fn each_partition_goes_where_the_position_says_within_its_records() {
    let partitions = [
        partition(0, ours(500, 0), (0, 800), Some(120)),
        partition(1, None, (40, 900), None),
        partition(2, Some((70, None)), (10, 70), Some(10)),
    ];
    // (position) → new offsets (clamped) of partitions 0, 1, 2
    let cases = [
        (ResetTo::Earliest, [(0, false), (40, false), (10, false)]),
        (
            ResetTo::Datetime(NOW - 3_600_000),
            [(120, false), (900, false), (10, false)],
        ),
        (ResetTo::Offset(50), [(50, false), (50, false), (50, false)]),
        (ResetTo::Offset(20), [(20, false), (40, true), (20, false)]),
        (
            ResetTo::Offset(850),
            [(800, true), (850, false), (70, true)],
        ),
    ];
    for (to, expected) in cases {
        let plan = plan_reset("t", to, &partitions, NOW);
        let got: Vec<(i64, bool)> = plan.partitions.iter().map(|p| (p.new, p.clamped)).collect();
        assert_eq!(got, expected, "{to:?}");
        for p in &plan.partitions {
            assert_eq!(
                p.metadata,
                CommitMetadata::reset_marker(p.new, plan.generation, Some(MINUTE)),
                "{to:?}: every marker carries the group's semantics, even where the commit had none"
            );
        }
        let currents: Vec<Option<i64>> = plan.partitions.iter().map(|p| p.current).collect();
        assert_eq!(currents, [Some(500), None, Some(70)]);
    }
}

#[test]
fn the_new_generation_is_later_than_every_one_the_group_names() {
    let cases = [
        (
            "first reset",
            vec![ours(1, 0), ours(2, 0)],
            Generation(NOW as u64),
        ),
        (
            "one made later by a clock ahead",
            vec![ours(1, NOW as u64 + 9), ours(2, 3)],
            Generation(NOW as u64 + 10),
        ),
        (
            "no streamagg commit",
            vec![None, Some((3, None))],
            Generation(NOW as u64),
        ),
    ];
    for (name, committed, expected) in cases {
        let partitions: Vec<PartitionNow> = committed
            .into_iter()
            .enumerate()
            .map(|(i, c)| partition(i as i32, c, (0, 10), None))
            .collect();
        let plan = plan_reset("t", ResetTo::Earliest, &partitions, NOW);
        assert_eq!(plan.generation, expected, "{name}");
        assert!(plan
            .partitions
            .iter()
            .all(|p| p.metadata.generation == expected));
    }
    // Without any streamagg commit the markers say nothing about the semantics.
    let plan = plan_reset(
        "t",
        ResetTo::Earliest,
        &[partition(0, None, (0, 1), None)],
        NOW,
    );
    assert_eq!(plan.partitions[0].metadata.semantics, None);
}

#[test]
fn the_dry_run_shows_current_and_new_offsets() {
    let partitions = [
        partition(0, ours(500, 0), (0, 800), None),
        partition(1, None, (40, 900), None),
    ];
    let plan = plan_reset("traffic", ResetTo::Offset(30), &partitions, NOW);
    assert_eq!(
        plan.to_string(),
        "traffic[0]: 500 → 30\n\
         traffic[1]: - → 40 (the requested offset is outside the partition's records)\n"
    );
}

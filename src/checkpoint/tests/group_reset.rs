//! Tests of [`crate::checkpoint`]: the resume decisions and generations a group offset reset adds.

use super::*;

/// The decisions a group offset reset adds: Kafka's own tool commits without streamagg metadata,
/// `streamagg reset` commits a marker of a new generation; local state either way is obsolete,
/// except where it was made after the reset (same generation), as after an at-least-once crash
/// between RocksDB and the group commit.
#[test]
fn resume_plans_after_a_group_reset() {
    const G1: Generation = Generation(1_764_000_000_000);
    let local = |next_offset, generation| {
        Some(PartitionCheckpoint {
            next_offset,
            stream_time: Some(100),
            generation,
        })
    };
    let ours = |offset, rebuild_offset, generation| {
        Some((
            offset,
            Some(CommitMetadata {
                stream_time: Some(100),
                rebuild_offset,
                semantics: Some(MINUTE),
                generation,
                reset: false,
                earlier_counts: Default::default(),
            }),
        ))
    };
    let marker = |offset, generation| {
        Some((
            offset,
            Some(CommitMetadata::reset_marker(
                offset,
                generation,
                Some(MINUTE),
            )),
        ))
    };
    let replay = |from, forget_local, by| ResumePlan::Replay {
        from,
        forget_local,
        by,
    };
    let by_streamagg = GroupReset::Streamagg { generation: G1 };
    let cases = [
        (
            "foreign commit behind local: Kafka's tool reset the group",
            local(500, G0),
            Some((0, None)),
            600,
            replay(0, true, GroupReset::Foreign),
        ),
        (
            "foreign commit behind local, the log recreated too: the commit is where to start",
            local(500, G0),
            Some((0, None)),
            125,
            replay(0, true, GroupReset::Foreign),
        ),
        (
            "foreign commit at local's position: nothing to redo",
            local(500, G0),
            Some((500, None)),
            600,
            ResumePlan::Local {
                from: 500,
                generation: G0,
            },
        ),
        (
            "ours behind local, same generation: at-least-once crash before the group commit",
            local(500, G0),
            ours(450, 400, G0),
            600,
            ResumePlan::Local {
                from: 500,
                generation: G0,
            },
        ),
        (
            "reset marker, no local state",
            None,
            marker(0, G1),
            600,
            replay(0, false, by_streamagg),
        ),
        (
            "reset marker behind local state of the older generation",
            local(500, G0),
            marker(0, G1),
            600,
            replay(0, true, by_streamagg),
        ),
        (
            "reset marker ahead of local state of the older generation (--to-offset)",
            local(100, G0),
            marker(300, G1),
            600,
            replay(300, true, by_streamagg),
        ),
        (
            "reset marker at local's position, older generation: still obsolete",
            local(300, G0),
            marker(300, G1),
            600,
            replay(300, true, by_streamagg),
        ),
        (
            "reset marker behind local state made after it (at-least-once crash before the commit)",
            local(80, G1),
            marker(0, G1),
            600,
            ResumePlan::Local {
                from: 80,
                generation: G1,
            },
        ),
        (
            "another owner checkpointed after the reset; this state dir predates it",
            local(500, G0),
            ours(120, 90, G1),
            600,
            ResumePlan::Rebuild {
                from: 90,
                replay_until: 120,
                stream_time: Some(100),
                generation: G1,
                forget_local: true,
            },
        ),
        (
            "an obsolete checkpoint past the log end is no reason to reset to the log start",
            local(900, G0),
            marker(200, G1),
            600,
            replay(200, true, by_streamagg),
        ),
        (
            "a current checkpoint past the log end still is",
            local(900, G1),
            ours(900, 850, G1),
            600,
            ResumePlan::Reset {
                checkpointed: 900,
                log_end: 600,
            },
        ),
    ];
    for (name, local, committed, log_end, expected) in cases {
        assert_eq!(
            plan_resume(local, committed, Some(log_end)),
            expected,
            "{name}"
        );
        if !matches!(expected, ResumePlan::Reset { .. }) {
            assert_eq!(
                plan_resume(local, committed, None),
                expected,
                "{name}, log end unknown"
            );
        }
    }
}

#[test]
fn generations_continue_or_begin_anew() {
    let g = Generation(5);
    let cases = [
        (
            ResumePlan::Local {
                from: 1,
                generation: g,
            },
            Some(g),
        ),
        (
            ResumePlan::Rebuild {
                from: 1,
                replay_until: 2,
                stream_time: None,
                generation: g,
                forget_local: true,
            },
            Some(g),
        ),
        (
            ResumePlan::Replay {
                from: 0,
                forget_local: true,
                by: GroupReset::Streamagg { generation: g },
            },
            Some(g),
        ),
        (
            ResumePlan::Replay {
                from: 0,
                forget_local: true,
                by: GroupReset::Foreign,
            },
            None,
        ),
        (
            ResumePlan::CommittedOnly {
                from: 0,
                forget_local: false,
            },
            None,
        ),
        (ResumePlan::Fresh, None),
        (
            ResumePlan::Reset {
                checkpointed: 9,
                log_end: 0,
            },
            None,
        ),
    ];
    for (plan, expected) in cases {
        assert_eq!(plan.generation(), expected, "{plan:?}");
    }
    // A new generation is the clock's, unless one seen is not older.
    assert_eq!(Generation::new_after(1_000, []), Generation(1_000));
    assert_eq!(
        Generation::new_after(1_000, [Generation(3), Generation(0)]),
        Generation(1_000)
    );
    assert_eq!(
        Generation::new_after(1_000, [Generation(1_000)]),
        Generation(1_001)
    );
    assert_eq!(Generation::new_after(-5, []), Generation(1));
}

//! Tests of [`super`] (processor).

use super::*;
use crate::window::WindowSpec;

#[test]
fn a_checkpoint_commits_a_partition_only_with_new_records_and_no_rebuild_under_way() {
    let spec = WindowSpec::epoch(60_000, 0);
    // (next offset, replay until, changed since the last checkpoint) → committed offset
    let cases = [
        ("fresh, nothing processed", None, 0, false, None),
        ("processed records", Some(50), 0, true, Some(50)),
        (
            "nothing new since the last checkpoint",
            Some(50),
            0,
            false,
            None,
        ),
        (
            "mid-rebuild: the commit stays where it was",
            Some(45),
            60,
            true,
            None,
        ),
        ("rebuild just complete", Some(60), 60, true, Some(60)),
        ("past the rebuild", Some(61), 60, true, Some(61)),
    ];
    for (name, next_offset, replay_until, changed, expected) in cases {
        let state = PartitionState {
            replay_until,
            changed,
            ..PartitionState::empty(PartitionWindows::new(spec), next_offset, Generation(0))
        };
        assert_eq!(state.checkpoint_offset(), expected, "{name}");
    }
}

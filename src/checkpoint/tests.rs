//! Tests of [`super`] (checkpoint); what group offset resets add is in [`group_reset`].

mod group_reset;

use super::*;

/// The first generation: every partition's until a reset.
const G0: Generation = Generation(0);

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

#[test]
fn metadata_round_trips_and_foreign_metadata_is_ignored() {
    let filtered = Semantics {
        min_value: Some(-2.5),
        event_time: EventTime::Kafka,
        input_format: Format::Avro,
        ..MINUTE
    };
    let framed = Semantics {
        input_format: Format::AvroConfluent,
        ..MINUTE
    };
    for (stream_time, rebuild_offset, semantics, generation, reset) in [
        (Some(9), 1, Some(framed), 0, false),
        (Some(1_700_000_000_000), 42, Some(MINUTE), 0, false),
        (Some(-5), 0, Some(filtered), 0, false),
        (None, 7, Some(MINUTE), 0, false),
        (Some(3), 7, None, 0, false),
        (Some(3), 7, Some(MINUTE), 1_764_000_000_000, false),
        (None, 7, Some(filtered), 1_764_000_000_000, true),
        (None, 7, None, 1_764_000_000_000, true),
        (Some(3), 7, None, 9, false),
    ] {
        let meta = CommitMetadata {
            stream_time,
            rebuild_offset,
            semantics,
            generation: Generation(generation),
            reset,
            earlier_counts: Default::default(),
        };
        assert_eq!(CommitMetadata::parse(&meta.encode()), Some(meta));
        // With earlier partition counts (after an increase), in every form.
        let earlier_counts = EarlierCounts::of(&[3, 5]).expect("ascending");
        let with = CommitMetadata {
            earlier_counts,
            ..meta
        };
        assert!(with.encode().ends_with(" pc=3,5"), "{}", with.encode());
        assert_eq!(CommitMetadata::parse(&with.encode()), Some(with));
    }
    // In the first generation the older forms are written, byte for byte, so that instances of
    // streamagg before generations (in a rolling upgrade) still read them.
    let first = CommitMetadata {
        stream_time: Some(1),
        rebuild_offset: 2,
        semantics: Some(MINUTE),
        generation: Generation(0),
        reset: false,
        earlier_counts: Default::default(),
    };
    assert_eq!(
        first.encode(),
        "streamagg/2 st=1 rb=2 w=60000 g=10000 min=- et=field in=json"
    );
    assert_eq!(
        CommitMetadata::reset_marker(5, Generation(77), Some(MINUTE)).encode(),
        "streamagg/3 gen=77 reset st=- rb=5 w=60000 g=10000 min=- et=field in=json"
    );
    // What streamagg wrote before it recorded the semantics, or generations, is still read.
    for (old, semantics) in [
        ("streamagg/1 st=1 rb=2", None),
        (
            "streamagg/2 st=1 rb=2 w=60000 g=10000 min=- et=field in=json",
            Some(MINUTE),
        ),
    ] {
        assert_eq!(
            CommitMetadata::parse(old),
            Some(CommitMetadata { semantics, ..first })
        );
    }
    for foreign in [
        "",
        "hello",
        "streamagg/3 st=1 rb=2",
        "streamagg/1 st=x rb=2",
        "streamagg/1 st=1",
        "streamagg/1 st=1 rb=2 extra",
        "streamagg/2 st=1 rb=2",
        "streamagg/2 st=1 rb=2 w=60000 g=0 min=- et=field in=xml",
        "streamagg/2 st=1 rb=2 w=60000 g=0 min=NaN et=field in=json",
        "streamagg/2 st=1 rb=2 w=60000 g=0 min=- et=field in=json extra",
        "streamagg/4 gen=1 st=1 rb=2",
        "streamagg/3 st=1 rb=2",
        "streamagg/3 gen=-1 st=1 rb=2",
        "streamagg/3 gen=x st=1 rb=2",
        "streamagg/3 gen=1 reset reset st=- rb=2",
        "streamagg/3 gen=1 st=1 rb=2 reset",
        "streamagg/3 gen=1 st=1 rb=2 w=60000",
        "streamagg/3 gen=1 st=1 rb=2 w=60000 g=0 min=- et=field in=json extra",
    ] {
        assert_eq!(CommitMetadata::parse(foreign), None, "{foreign:?}");
    }
}

#[test]
fn percentiles_are_recorded_only_when_on_and_a_change_is_named() {
    let spec = SketchSpec::new(0.01, 2048).expect("valid");
    let with = Semantics {
        percentiles: Some(spec),
        ..MINUTE
    };
    assert_eq!(
        with.encode(),
        "w=60000 g=10000 min=- et=field in=json pct=0.01/2048"
    );
    assert_eq!(Semantics::parse(&with.encode()), Some(with));
    // Off: the text versions without percentiles write (and read).
    assert_eq!(MINUTE.encode(), "w=60000 g=10000 min=- et=field in=json");
    for generation in [0, 9] {
        let meta = CommitMetadata {
            stream_time: Some(1),
            rebuild_offset: 2,
            semantics: Some(with),
            generation: Generation(generation),
            reset: false,
            earlier_counts: Default::default(),
        };
        assert_eq!(CommitMetadata::parse(&meta.encode()), Some(meta));
    }
    assert_eq!(
        CommitMetadata::parse(
            "streamagg/2 st=1 rb=2 w=60000 g=10000 min=- et=field in=json pct=0.05/64"
        )
        .and_then(|m| m.semantics)
        .and_then(|s| s.percentiles),
        SketchSpec::new(0.05, 64)
    );
    for foreign in [
        "w=60000 g=10000 min=- et=field in=json pct=",
        "w=60000 g=10000 min=- et=field in=json pct=0.01",
        "w=60000 g=10000 min=- et=field in=json pct=1/2048",
        "w=60000 g=10000 min=- et=field in=json pct=0.01/1",
        "w=60000 g=10000 min=- et=field in=json pct=0.01/2048 extra",
    ] {
        assert_eq!(Semantics::parse(foreign), None, "{foreign:?}");
    }
    let finer = Semantics {
        percentiles: SketchSpec::new(0.001, 2048),
        ..MINUTE
    };
    assert_eq!(
        MINUTE.differences(&with),
        "percentiles off (now on (accuracy 0.01, at most 2048 bins))"
    );
    assert_eq!(
        with.differences(&finer),
        "percentiles on (accuracy 0.01, at most 2048 bins) (now on (accuracy 0.001, at most 2048 bins))"
    );
}

#[test]
fn rollups_and_a_zone_are_recorded_only_when_on_and_a_change_is_named() {
    let zone = Zone::named("Europe/Berlin").expect("a zone");
    let rolled = Semantics {
        rollups: Rollups::new(&[300_000, 3_600_000]).expect("two"),
        zone: Some(zone),
        percentiles: SketchSpec::new(0.01, 2048),
        ..MINUTE
    };
    assert_eq!(
        rolled.encode(),
        "w=60000 g=10000 min=- et=field in=json pct=0.01/2048 roll=300000,3600000 tz=Europe/Berlin"
    );
    assert_eq!(Semantics::parse(&rolled.encode()), Some(rolled));
    let meta = CommitMetadata {
        stream_time: Some(1),
        rebuild_offset: 2,
        semantics: Some(rolled),
        generation: Generation(4),
        reset: false,
        earlier_counts: Default::default(),
    };
    assert_eq!(CommitMetadata::parse(&meta.encode()), Some(meta));
    for foreign in [
        "w=60000 g=10000 min=- et=field in=json roll=",
        "w=60000 g=10000 min=- et=field in=json roll=0",
        "w=60000 g=10000 min=- et=field in=json roll=1,2,3,4,5",
        "w=60000 g=10000 min=- et=field in=json tz=Not/AZone",
        "w=60000 g=10000 min=- et=field in=json tz=UTC roll=300000",
    ] {
        assert_eq!(Semantics::parse(foreign), None, "{foreign:?}");
    }
    assert_eq!(
        MINUTE.differences(&rolled),
        "window 1m (now 1m,5m,1h), percentiles off (now on (accuracy 0.01, at most 2048 bins)), \
         time_zone none (UTC) (now Europe/Berlin)"
    );
}

#[test]
fn semantics_name_every_difference_with_old_and_new_values() {
    let cases = [
        (MINUTE, MINUTE, ""),
        (
            MINUTE,
            Semantics {
                window_ms: 300_000,
                ..MINUTE
            },
            "window 1m (now 5m)",
        ),
        (
            Semantics {
                min_value: Some(50.0),
                ..MINUTE
            },
            Semantics {
                grace_ms: 0,
                min_value: Some(10.0),
                input_format: Format::Avro,
                ..MINUTE
            },
            "grace 10s (now 0s), min_value 50 (now 10), input_format json (now avro)",
        ),
        (
            MINUTE,
            Semantics {
                event_time: EventTime::Kafka,
                min_value: Some(0.5),
                ..MINUTE
            },
            "min_value none (now 0.5), event_time field (now kafka)",
        ),
    ];
    for (old, new, expected) in cases {
        assert_eq!(old.differences(&new), expected);
        assert_eq!(Semantics::parse(&old.encode()), Some(old));
    }
}

#[test]
fn resume_plans() {
    let local = |next_offset, stream_time| {
        Some(PartitionCheckpoint {
            next_offset,
            stream_time: Some(stream_time),
            generation: G0,
        })
    };
    let meta = |rebuild_offset, stream_time| {
        Some(CommitMetadata {
            stream_time: Some(stream_time),
            rebuild_offset,
            semantics: Some(MINUTE),
            generation: G0,
            reset: false,
            earlier_counts: Default::default(),
        })
    };
    let cases = [
        ("nothing anywhere", None, None, 0, ResumePlan::Fresh),
        (
            "local only",
            local(50, 9),
            None,
            50,
            ResumePlan::Local {
                from: 50,
                generation: G0,
            },
        ),
        (
            "local equals commit",
            local(50, 100),
            Some((50, meta(40, 100))),
            80,
            ResumePlan::Local {
                from: 50,
                generation: G0,
            },
        ),
        (
            "local ahead of commit (crash before commit)",
            local(60, 9),
            Some((50, meta(40, 100))),
            60,
            ResumePlan::Local {
                from: 60,
                generation: G0,
            },
        ),
        (
            "same offset, commit's stream time ahead (another owner idle-closed windows)",
            local(50, 99),
            Some((50, meta(40, 130))),
            50,
            ResumePlan::Rebuild {
                from: 40,
                replay_until: 50,
                stream_time: Some(130),
                generation: G0,
                forget_local: true,
            },
        ),
        (
            "same offset, local stream time ahead (at-least-once, commit failed)",
            local(50, 131),
            Some((50, meta(40, 130))),
            50,
            ResumePlan::Local {
                from: 50,
                generation: G0,
            },
        ),
        (
            "commit ahead of local: stale local state",
            local(30, 9),
            Some((50, meta(40, 100))),
            90,
            ResumePlan::Rebuild {
                from: 40,
                replay_until: 50,
                stream_time: Some(100),
                generation: G0,
                forget_local: true,
            },
        ),
        (
            "no local state: rebuild from the commit",
            None,
            Some((50, meta(40, 100))),
            50,
            ResumePlan::Rebuild {
                from: 40,
                replay_until: 50,
                stream_time: Some(100),
                generation: G0,
                forget_local: false,
            },
        ),
        (
            "rebuild offset never after the commit",
            None,
            Some((50, meta(70, 100))),
            50,
            ResumePlan::Rebuild {
                from: 50,
                replay_until: 50,
                stream_time: Some(100),
                generation: G0,
                forget_local: false,
            },
        ),
        (
            "foreign commit",
            None,
            Some((50, None)),
            50,
            ResumePlan::CommittedOnly {
                from: 50,
                forget_local: false,
            },
        ),
        (
            "foreign commit ahead of local",
            local(10, 9),
            Some((50, None)),
            50,
            ResumePlan::CommittedOnly {
                from: 50,
                forget_local: true,
            },
        ),
        (
            "local checkpoint past the log end: the topic was recreated",
            local(494, 9),
            Some((494, meta(400, 100))),
            125,
            ResumePlan::Reset {
                checkpointed: 494,
                log_end: 125,
            },
        ),
        (
            "group commit past the log end, no local state",
            None,
            Some((494, None)),
            0,
            ResumePlan::Reset {
                checkpointed: 494,
                log_end: 0,
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
fn metadata_that_cannot_be_ours_for_its_commit_is_implausible() {
    let window = WindowSpec::epoch(60_000, 10_000);
    let meta = |stream_time, rebuild_offset| CommitMetadata {
        stream_time,
        rebuild_offset,
        semantics: Some(MINUTE),
        generation: G0,
        reset: false,
        earlier_counts: Default::default(),
    };
    let marker = |generation, stream_time, rebuild_offset| CommitMetadata {
        stream_time,
        generation: Generation(generation),
        ..CommitMetadata::reset_marker(rebuild_offset, Generation(generation), None)
    };
    let not_where_it_starts = Some(
        "a reset marker at 42 must have no stream time, rebuild offset 42 and a generation after \
         the first",
    );
    let cases = [
        // (metadata, committed offset, implausible because)
        (meta(Some(1_700_000_000_000), 40), 42, None),
        (meta(None, 0), 0, None),
        (meta(Some(-5), 42), 42, None),
        (
            meta(Some(1), -1),
            42,
            Some("rebuild offset -1 is outside 0..=42"),
        ),
        (
            meta(Some(1), -2),
            42,
            Some("rebuild offset -2 is outside 0..=42"),
        ),
        (
            meta(Some(1), 43),
            42,
            Some("rebuild offset 43 is outside 0..=42"),
        ),
        (
            meta(Some(i64::MAX), 0),
            42,
            Some("stream time 9223372036854775807 lies beyond any window"),
        ),
        (
            meta(Some(i64::MIN), 0),
            42,
            Some("stream time -9223372036854775808 lies beyond any window"),
        ),
        (marker(7, None, 42), 42, None),
        (marker(7, Some(1), 42), 42, not_where_it_starts),
        (marker(7, None, 40), 42, not_where_it_starts),
        (marker(0, None, 42), 42, not_where_it_starts),
    ];
    for (metadata, committed, expected) in cases {
        assert_eq!(
            metadata.implausible(committed, &window).as_deref(),
            expected,
            "{metadata:?} at {committed}"
        );
    }
}

#[test]
fn earlier_partition_counts_keep_the_latest_four_and_foreign_words_are_refused() {
    assert_eq!(
        EarlierCounts::of(&[1, 2, 3, 5, 8, 13]).map(|e| e.as_vec()),
        Some(vec![3, 5, 8, 13])
    );
    assert_eq!(EarlierCounts::of(&[]).map(|e| e.is_empty()), Some(true));
    for refused in [&[5, 3][..], &[3, 3], &[0, 2]] {
        assert_eq!(EarlierCounts::of(refused), None, "{refused:?}");
    }
    let base = "streamagg/2 st=1 rb=2 w=60000 g=10000 min=- et=field in=json";
    assert!(CommitMetadata::parse(&format!("{base} pc=3")).is_some());
    for foreign in [
        "pc=",
        "pc=x",
        "pc=5,3",
        "pc=0",
        "pc=1,2,3,4,5",
        "pc=3 pc=4",
        "pc=3 extra",
    ] {
        assert_eq!(
            CommitMetadata::parse(&format!("{base} {foreign}")),
            None,
            "{foreign}"
        );
    }
    let v3 = "streamagg/3 gen=7 st=1 rb=2 pc=3,5";
    let parsed = CommitMetadata::parse(v3).expect("v3 without semantics");
    assert_eq!(parsed.earlier_counts.as_vec(), vec![3, 5]);
    assert_eq!(parsed.encode(), v3);
}

#[test]
fn trimmed_offsets_split_at_the_replay_end_and_are_counted_once() {
    let trimmed = |from_rebuild, unread| Trimmed {
        from_rebuild,
        unread,
    };
    // (from, to, replay_until, counted_through, trimmed)
    let cases = [
        (100, 100, 300, None, trimmed(0, 0)),
        (100, 90, 300, None, trimmed(0, 0)),
        (100, 101, 300, None, trimmed(1, 0)),
        (100, 250, 300, None, trimmed(150, 0)),
        (100, 300, 300, None, trimmed(200, 0)),
        (100, 350, 300, None, trimmed(200, 50)),
        (300, 320, 300, None, trimmed(0, 20)),
        (400, 450, 300, None, trimmed(0, 50)),
        // Met again after an abort or a reassignment: nothing new.
        (100, 250, 300, Some(250), trimmed(0, 0)),
        // The log start moved on since: only the new part.
        (100, 280, 300, Some(250), trimmed(30, 0)),
        (100, 350, 300, Some(250), trimmed(50, 50)),
        (300, 320, 300, Some(400), trimmed(0, 0)),
    ];
    for (index, (from, to, replay_until, counted, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            Trimmed::between(from, to, replay_until, counted),
            expected,
            "case {index}: [{from}, {to}) replaying to {replay_until}, counted through {counted:?}"
        );
    }
}

#[test]
fn only_a_gap_up_to_a_log_start_past_the_expected_offset_is_trimmed_input() {
    // (expected, offset, log start, end of the deleted part)
    let cases = [
        // Retention overtook the consumer; the reset policy moved it to the log start.
        (100, 150, 150, Some(150)),
        // … and transaction markers follow the log start.
        (100, 152, 150, Some(150)),
        // No gap.
        (100, 100, 150, None),
        // Transaction markers, the log start far behind.
        (100, 102, 0, None),
        (100, 102, 100, None),
        // Fetched before the log was trimmed past it: the gap is markers, not deleted records.
        (100, 102, 150, None),
        (100, 149, 150, None),
    ];
    for (index, (expected, offset, log_start, end)) in cases.into_iter().enumerate() {
        assert_eq!(
            Trimmed::gap_end(expected, offset, log_start),
            end,
            "case {index}: expected {expected}, record at {offset}, log start {log_start}"
        );
    }
}

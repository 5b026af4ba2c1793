use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;

use super::*;

fn list(entries: &[(&str, i32, i64, &str)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for &(topic, partition, offset, metadata) in entries {
        let mut element = list.add_partition(topic, partition);
        element.set_offset(Offset::Offset(offset)).expect("offset");
        element.set_metadata(metadata);
    }
    list
}

fn entries(list: &TopicPartitionList) -> BTreeMap<(String, i32), (Offset, String)> {
    list.elements()
        .iter()
        .map(|e| {
            (
                (e.topic().to_owned(), e.partition()),
                (e.offset(), e.metadata().to_owned()),
            )
        })
        .collect()
}

#[test]
fn a_merge_keeps_the_newer_offsets_and_the_partitions_only_the_older_has() {
    let older = list(&[("a", 0, 5, "old"), ("a", 1, 7, "kept"), ("b", 0, 1, "b")]);
    let newer = list(&[("a", 0, 9, "new"), ("c", 2, 3, "c")]);
    let expected = list(&[
        ("a", 0, 9, "new"),
        ("a", 1, 7, "kept"),
        ("b", 0, 1, "b"),
        ("c", 2, 3, "c"),
    ]);
    assert_eq!(entries(&merged(&older, &newer)), entries(&expected));
    assert_eq!(entries(&merged(&newer, &newer)), entries(&newer));
    assert_eq!(
        entries(&merged(&TopicPartitionList::new(), &newer)),
        entries(&newer)
    );
}

/// The poll loop hands over checkpoints and, now and then, waits for one, while a slow
/// coordinator answers the committer thread: one commit is on the wire at a time, no partition's
/// committed offset ever goes back, and the last commit of each partition is its last checkpoint.
#[test]
fn commits_land_one_at_a_time_in_checkpoint_order_and_none_is_lost() {
    let commits = Arc::new(GroupCommits::default());
    let on_the_wire = Arc::new(AtomicUsize::new(0));
    let landed: Arc<Mutex<Vec<TopicPartitionList>>> = Arc::default();
    let commit = {
        let (on_the_wire, landed) = (Arc::clone(&on_the_wire), Arc::clone(&landed));
        move |list: &TopicPartitionList| {
            assert_eq!(
                on_the_wire.fetch_add(1, Ordering::SeqCst),
                0,
                "two commits at once"
            );
            std::thread::sleep(Duration::from_micros(300));
            landed.lock().expect("lock").push(list.clone());
            on_the_wire.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    };
    let committer = {
        let (commits, commit) = (Arc::clone(&commits), commit.clone());
        std::thread::spawn(move || commits.run_with(commit))
    };
    let mut last = BTreeMap::new();
    for checkpoint in 1..=400i64 {
        // Each checkpoint commits the partitions that changed since the one before.
        let changed: Vec<(&str, i32, i64, &str)> = (0..4)
            .filter(|p| (checkpoint + p) % (p + 2) == 0)
            .map(|p| ("t", p as i32, checkpoint * 10 + i64::from(p as i32), ""))
            .collect();
        for &(_, partition, offset, _) in &changed {
            last.insert(partition, offset);
        }
        let offsets = list(&changed);
        if checkpoint % 50 == 0 {
            // As a checkpoint that commits itself: settle, then commit the partitions taken back
            // too (at their current offsets, which are at least as new as those taken back).
            let mut offsets = offsets;
            for taken in commits.settle(Duration::from_secs(10)).expect("settled") {
                offsets = merged(&taken, &offsets);
            }
            commits.wait_with(&offsets, commit.clone()).expect("commit");
        } else {
            commits.in_background(offsets);
        }
        if checkpoint % 7 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    commits.stop();
    committer.join().expect("committer");

    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    for list in landed.lock().expect("lock").iter() {
        for element in list.elements() {
            let Offset::Offset(offset) = element.offset() else {
                panic!("offset {:?}", element.offset());
            };
            let before = committed.insert(element.partition(), offset);
            assert!(
                before.is_none_or(|before| before <= offset),
                "partition {} went back from {before:?} to {offset}",
                element.partition()
            );
        }
    }
    assert_eq!(committed, last);
}

#[test]
fn a_failed_background_commit_is_handed_back_and_stop_sends_what_waits() {
    let commits = Arc::new(GroupCommits::default());
    let attempts = Arc::new(AtomicUsize::new(0));
    commits.in_background(list(&[("t", 0, 5, "m")]));
    commits.stop();
    let committer = {
        let (commits, attempts) = (Arc::clone(&commits), Arc::clone(&attempts));
        std::thread::spawn(move || {
            commits.run_with(|_| {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(CommitError::Kafka(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::RebalanceInProgress,
                )))
            })
        })
    };
    committer.join().expect("committer");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let failed = commits.take_failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(entries(&failed[0]), entries(&list(&[("t", 0, 5, "m")])));
    assert!(commits.take_failed().is_empty());
}

/// A checkpoint that commits itself first settles the committer thread: it waits for the commit
/// on the wire, then takes back what waits and what failed, whose partitions it commits itself
/// (from their current state); nothing is left for the thread to send after it.
#[test]
fn settling_waits_for_the_commit_on_the_wire_and_takes_back_what_waits_and_failed() {
    let commits = Arc::new(GroupCommits::default());
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent) = std::sync::mpsc::channel();
    let committer = {
        let commits = Arc::clone(&commits);
        std::thread::spawn(move || {
            let mut first = true;
            commits.run_with(|l| {
                sent_tx.send(entries(l)).expect("send");
                if std::mem::take(&mut first) {
                    gate.recv().expect("released");
                    return Err(CommitError::Kafka(KafkaError::ConsumerCommit(
                        RDKafkaErrorCode::RequestTimedOut,
                    )));
                }
                Ok(())
            })
        })
    };
    commits.in_background(list(&[("t", 0, 10, "a")]));
    assert_eq!(
        sent.recv().expect("first"),
        entries(&list(&[("t", 0, 10, "a")]))
    );
    commits.in_background(list(&[("t", 1, 20, "b")]));
    assert!(commits.on_the_wire_since().is_some());
    // Unanswered: what waits is taken back all the same, so that it cannot go out after the
    // partitions are handed over.
    let unsettled = commits
        .settle(Duration::from_millis(50))
        .expect_err("the commit on the wire is unanswered");
    assert_eq!(
        unsettled.taken.iter().map(entries).collect::<Vec<_>>(),
        vec![entries(&list(&[("t", 1, 20, "b")]))]
    );
    commits.in_background(list(&[("t", 2, 30, "c")]));
    // The settle runs before the thread can take "c" (the first commit answers meanwhile, failed).
    let settling = {
        let commits = Arc::clone(&commits);
        std::thread::spawn(move || commits.settle(Duration::from_secs(10)))
    };
    let begun = std::time::Instant::now();
    while commits.lock().settling == 0 {
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "the settle began"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    release.send(()).expect("release");
    let taken = settling.join().expect("settle").expect("settled");
    assert_eq!(
        taken.iter().map(entries).collect::<Vec<_>>(),
        vec![
            entries(&list(&[("t", 0, 10, "a")])),
            entries(&list(&[("t", 2, 30, "c")]))
        ],
        "the failed commit and the waiting one"
    );
    commits.stop();
    committer.join().expect("committer");
    assert!(sent.try_recv().is_err(), "nothing left for the thread");
}

#[test]
fn after_an_error_what_waits_is_not_sent() {
    let commits = GroupCommits::default();
    commits.in_background(list(&[("t", 0, 10, "a")]));
    commits.discard_waiting();
    commits.stop();
    commits.run_with(|l| panic!("sent: {:?}", entries(l)));
}

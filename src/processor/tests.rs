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

#[test]
fn only_errors_of_the_clusters_state_start_the_pipeline_again() {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let send = |code| {
        PipelineError::from(ProduceError::Send {
            topic: "out".into(),
            cause: KafkaError::MessageProduction(code),
        })
    };
    let transaction = |code| {
        PipelineError::from(ProduceError::Transaction {
            stage: "send offsets",
            cause: KafkaError::Flush(code),
            kind: TransactionErrorKind::Retriable,
        })
    };
    let cases = [
        (
            "a commit timed out",
            transaction(Code::OperationTimedOut),
            true,
        ),
        (
            "a broker went away",
            send(Code::BrokerTransportFailure),
            true,
        ),
        (
            "the epoch was bumped",
            transaction(Code::InvalidProducerEpoch),
            true,
        ),
        (
            "a consumer error",
            PipelineError::Consumer(KafkaError::Global(Code::AllBrokersDown)),
            true,
        ),
        ("no group metadata", PipelineError::NoGroupMetadata, true),
        (
            "fenced by a newer instance (librdkafka)",
            transaction(Code::Fenced),
            false,
        ),
        (
            "fenced by a newer instance (broker)",
            send(Code::ProducerFenced),
            false,
        ),
        (
            "no write on the output",
            send(Code::TopicAuthorizationFailed),
            false,
        ),
        (
            "no read on the group",
            PipelineError::Consumer(KafkaError::Global(Code::GroupAuthorizationFailed)),
            false,
        ),
        (
            "the input topic was deleted",
            PipelineError::InputMissing("in".into()),
            false,
        ),
        (
            "aborts in a row",
            PipelineError::TooManyAborts(10, Box::new(transaction(Code::OperationTimedOut))),
            false,
        ),
    ];
    for (case, error, transient) in cases {
        assert_eq!(error.is_transient(), transient, "{case}: {error}");
    }
}

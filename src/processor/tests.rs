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
    let transaction = |code, kind| {
        PipelineError::from(ProduceError::Transaction {
            stage: "send offsets",
            cause: KafkaError::Flush(code),
            kind,
        })
    };
    let timed_out = || transaction(Code::OperationTimedOut, TransactionErrorKind::Retriable);
    let fenced = || transaction(Code::Fenced, TransactionErrorKind::Fatal);
    let expired = PipelineError::TransactionExpired {
        open_for: Duration::from_secs(11),
        cause: Box::new(fenced()),
    };
    let unreachable = KafkaSetupError::Unreachable {
        brokers: "b".into(),
        waited: Duration::from_secs(10),
        cause: KafkaError::Global(Code::AllBrokersDown),
    };
    let refused = KafkaSetupError::Refused {
        brokers: "b".into(),
        reason: "SASL authentication failed".into(),
    };
    let cases = [
        ("a commit that ran out of patience", timed_out(), true),
        (
            "a broker went away",
            send(Code::BrokerTransportFailure),
            true,
        ),
        ("an expired transaction's fence", expired, true),
        (
            "a consumer error",
            PipelineError::Consumer(KafkaError::Global(Code::AllBrokersDown)),
            true,
        ),
        ("no group metadata", PipelineError::NoGroupMetadata, true),
        (
            "the cluster unreachable at the next start",
            PipelineError::from(unreachable),
            true,
        ),
        (
            "records still undelivered at a flush",
            PipelineError::from(ProduceError::FlushTimeout {
                pending: 3,
                waited: Duration::from_secs(60),
            }),
            true,
        ),
        ("fenced by another instance (librdkafka)", fenced(), false),
        (
            "fenced by another instance (broker)",
            send(Code::ProducerFenced),
            false,
        ),
        (
            "credentials refused at the next start",
            PipelineError::from(refused),
            false,
        ),
        (
            "authentication failed",
            PipelineError::Consumer(KafkaError::Global(Code::Authentication)),
            false,
        ),
        (
            "TLS refused",
            PipelineError::Consumer(KafkaError::Global(Code::SSL)),
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
            "a delivery failed (a refusal cannot be told from a timeout)",
            PipelineError::from(ProduceError::Delivery {
                failed: 1,
                total: 9,
                first_error: "x".into(),
            }),
            false,
        ),
        (
            "the input topic was deleted",
            PipelineError::InputMissing("in".into()),
            false,
        ),
        (
            "aborts in a row",
            PipelineError::TooManyAborts(10, Box::new(timed_out())),
            false,
        ),
    ];
    for (case, error, transient) in cases {
        assert_eq!(error.is_transient(), transient, "{case}: {error}");
    }
}

#[test]
fn a_fence_is_the_coordinators_only_when_the_transaction_outlived_its_timeout() {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let timeout = Duration::from_secs(10);
    let fenced = || {
        PipelineError::from(ProduceError::Transaction {
            stage: "commit",
            cause: KafkaError::Flush(Code::Fenced),
            kind: TransactionErrorKind::Fatal,
        })
    };
    let other = || PipelineError::InputMissing("in".into());
    let secs = |s| Some(Duration::from_secs(s));
    // (case, error, how long the transaction was open) → expired (so transient)
    let cases = [
        ("open past the timeout", fenced(), secs(12), true),
        ("open exactly the timeout", fenced(), secs(10), true),
        (
            "a young transaction: another instance",
            fenced(),
            secs(3),
            false,
        ),
        ("no transaction open", fenced(), None, false),
        ("not a fence", other(), secs(30), false),
    ];
    for (case, error, open_for, expired) in cases {
        let classified = error.expired_if_fenced(open_for, timeout);
        assert_eq!(
            matches!(classified, PipelineError::TransactionExpired { .. }),
            expired,
            "{case}: {classified}"
        );
        assert_eq!(classified.is_transient(), expired, "{case}");
    }
}

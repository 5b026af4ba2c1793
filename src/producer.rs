//! Writing records to Kafka: [`RecordProducer`], a tuned idempotent (optionally transactional)
//! producer that waits instead of failing when its queue is full, accounts for every delivery and
//! classifies errors as retriable, abortable or fatal. The sink, the gateway and the traffic
//! generator ([`crate::generate::to_topic`]) write through it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::config::cluster::KafkaSettings;
use crate::kafka::context::StreamaggContext;
use crate::kafka::{self, Backoff, KafkaSetupError};

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("cannot produce to '{topic}': {cause}")]
    Send { topic: String, cause: KafkaError },
    #[error("{failed} of {total} records were not delivered; first error: {first_error}")]
    Delivery {
        failed: u64,
        total: u64,
        first_error: String,
    },
    #[error("{pending} records were still undelivered after waiting {}", humantime::format_duration(*.waited))]
    FlushTimeout { pending: i32, waited: Duration },
    #[error("transaction {stage} failed: {cause}")]
    Transaction {
        stage: &'static str,
        cause: KafkaError,
        kind: TransactionErrorKind,
    },
}

/// What a failed transaction step leaves us to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionErrorKind {
    /// Try the same step again.
    Retriable,
    /// Abort the transaction and redo its work.
    Abortable,
    /// The producer cannot go on (fenced by a newer instance, not authorized, …).
    Fatal,
}

impl ProduceError {
    fn transaction(stage: &'static str, cause: KafkaError) -> Self {
        let classified = match &cause {
            KafkaError::Transaction(e) => Some(e),
            _ => None,
        };
        let kind = match classified {
            // A missing ACL (e.g. no write on the output topic) is abortable for librdkafka, but
            // redoing the work would only meet it again: the producer cannot go on.
            Some(e) if kafka::context::is_authorization_code(e.code()) => {
                TransactionErrorKind::Fatal
            }
            Some(e) if e.is_fatal() => TransactionErrorKind::Fatal,
            Some(e) if e.txn_requires_abort() => TransactionErrorKind::Abortable,
            Some(e) if e.is_retriable() => TransactionErrorKind::Retriable,
            // The commit flushes first; when a failed delivery put the transaction into the state
            // that needs an abort, what is left is never sent and the flush times out before
            // librdkafka says why. Nothing was committed: aborting and redoing is safe.
            None if stage == "commit" && matches!(cause, KafkaError::Flush(_)) => {
                TransactionErrorKind::Abortable
            }
            // Errors without librdkafka's classification (e.g. local state errors) are not safe to retry.
            _ => TransactionErrorKind::Fatal,
        };
        ProduceError::Transaction { stage, cause, kind }
    }

    /// Whether the cluster's ACLs refused the operation (retrying cannot help).
    pub fn is_not_authorized(&self) -> bool {
        match self {
            ProduceError::Send { cause, .. } | ProduceError::Transaction { cause, .. } => {
                kafka::context::is_not_authorized(cause)
            }
            ProduceError::Setup(_)
            | ProduceError::Delivery { .. }
            | ProduceError::FlushTimeout { .. } => false,
        }
    }

    /// Whether a newer producer with the same `transactional.id` fenced this one: another instance
    /// runs under this instance's id, and starting again would only fence it back.
    pub fn is_fenced(&self) -> bool {
        let cause = match self {
            ProduceError::Send { cause, .. } | ProduceError::Transaction { cause, .. } => cause,
            ProduceError::Setup(_)
            | ProduceError::Delivery { .. }
            | ProduceError::FlushTimeout { .. } => return false,
        };
        matches!(
            cause.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
        )
    }

    /// The transaction error kind, if this is a transaction error.
    pub fn transaction_kind(&self) -> Option<TransactionErrorKind> {
        match self {
            ProduceError::Transaction { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// An idempotent, batching, compressing producer. Keys are hashed with Java's murmur2 partitioner,
/// so a key lands on the same partition as it would from a Java producer.
pub struct RecordProducer {
    producer: BaseProducer<StreamaggContext>,
    sent: u64,
    /// `Some(open)` for a transactional producer: whether a transaction is open.
    transaction: Option<bool>,
    /// When the open transaction began.
    opened_at: Option<Instant>,
    timeout: Duration,
}

impl RecordProducer {
    /// Creates the producer and checks that the cluster answers within `settings.timeout`.
    /// `properties` are librdkafka pass-through settings applied over the defaults here.
    pub fn connect(
        settings: &KafkaSettings,
        client_id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self, KafkaSetupError> {
        let producer = Self::create(settings, client_id, properties, None)?;
        Ok(RecordProducer {
            producer,
            sent: 0,
            transaction: None,
            opened_at: None,
            timeout: settings.timeout,
        })
    }

    /// A transactional producer with `transactional_id`: connects, then fences any older producer
    /// with the same id and aborts what it left open (`init_transactions`).
    pub fn connect_transactional(
        settings: &KafkaSettings,
        client_id: &str,
        properties: &BTreeMap<String, String>,
        transactional_id: &str,
    ) -> Result<Self, ProduceError> {
        let producer = Self::create(settings, client_id, properties, Some(transactional_id))?;
        producer
            .init_transactions(settings.timeout)
            .map_err(|e| ProduceError::transaction("init", e))?;
        Ok(RecordProducer {
            producer,
            sent: 0,
            transaction: Some(false),
            opened_at: None,
            timeout: settings.timeout,
        })
    }

    fn create(
        settings: &KafkaSettings,
        client_id: &str,
        properties: &BTreeMap<String, String>,
        transactional_id: Option<&str>,
    ) -> Result<BaseProducer<StreamaggContext>, KafkaSetupError> {
        let mut config = producer_config(settings, client_id, &BTreeMap::new());
        if let Some(id) = transactional_id {
            // Kafka Streams' default under exactly-once: a crashed instance's open transaction blocks
            // read_committed consumers for at most this long.
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", "10000");
        }
        for (key, value) in properties {
            config.set(key, value);
        }
        let producer: BaseProducer<StreamaggContext> = config
            .create_with_context(StreamaggContext::default())
            .map_err(KafkaSetupError::config)?;
        kafka::admin::fetch_metadata(&producer, settings, None)?;
        Ok(producer)
    }

    /// The underlying producer, for metadata requests.
    pub fn client(&self) -> &BaseProducer<StreamaggContext> {
        &self.producer
    }

    /// Queues one record, partitioned by its key; when the local queue is full, serves delivery
    /// reports until there is room.
    pub fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), ProduceError> {
        self.send_to(topic, None, key, payload, headers)
    }

    /// [`RecordProducer::send_nullable`] with the record's Kafka timestamp set to `timestamp` (epoch
    /// milliseconds) instead of the wall clock at sending.
    pub fn send_at(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        timestamp: Option<i64>,
    ) -> Result<(), ProduceError> {
        self.send_record(topic, None, key, payload, headers, timestamp)
    }

    /// [`RecordProducer::send`] to an explicit partition, or partitioned by key when `None`.
    pub fn send_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), ProduceError> {
        self.send_record(topic, partition, Some(key), Some(payload), headers, None)
    }

    /// [`RecordProducer::send`] with a key and a payload that may be null (absent), as opposed to
    /// empty: a record copied as it was. A null key is spread over the partitions, an empty one is
    /// hashed like any other key.
    pub fn send_nullable(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), ProduceError> {
        self.send_record(topic, None, key, payload, headers, None)
    }

    fn send_record(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        timestamp: Option<i64>,
    ) -> Result<(), ProduceError> {
        self.begin_if_transactional()?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(10));
                }
                // A transaction that failed (e.g. the output topic's ACL refused it being added)
                // refuses every record with a bare state error; librdkafka gives the reason to
                // the next transaction call, and `begin` changes nothing in that state.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::State), _))
                    if self.transaction == Some(true) =>
                {
                    return Err(match self.producer.begin_transaction() {
                        Err(reason) => ProduceError::transaction("produce", reason),
                        Ok(()) => ProduceError::Send {
                            topic: topic.to_owned(),
                            cause: KafkaError::MessageProduction(RDKafkaErrorCode::State),
                        },
                    });
                }
                Err((cause, _)) => {
                    return Err(ProduceError::Send {
                        topic: topic.to_owned(),
                        cause,
                    })
                }
            }
        }
        self.sent += 1;
        // Serve delivery reports regularly so their queue does not grow with the run.
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn begin_if_transactional(&mut self) -> Result<(), ProduceError> {
        if self.transaction == Some(false) {
            self.producer
                .begin_transaction()
                .map_err(|e| ProduceError::transaction("begin", e))?;
            self.transaction = Some(true);
            self.opened_at = Some(Instant::now());
        }
        Ok(())
    }

    /// How long the open transaction has been open, if one is.
    pub fn open_transaction_age(&self) -> Option<Duration> {
        self.opened_at.map(|at| at.elapsed())
    }

    /// Everything of a commit but the commit itself: opens a transaction if none is open, adds the
    /// consumer `offsets` of `group` to it and waits for its records. The caller may still abort
    /// ([`RecordProducer::abort_transaction`]) or commit ([`RecordProducer::commit_prepared`]).
    /// Retriable failures are retried with backoff for up to `patience`, shared with the commit;
    /// other failures are returned with their [`TransactionErrorKind`].
    pub fn prepare_commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        patience: Duration,
    ) -> Result<PreparedCommit, ProduceError> {
        self.begin_if_transactional()?;
        let mut backoff = Backoff::new(patience);
        while let Err(e) = self
            .producer
            .send_offsets_to_transaction(offsets, group, self.timeout)
        {
            retry_or_fail(&mut backoff, ProduceError::transaction("send offsets", e))?;
        }
        // rust-rdkafka's commit_transaction flushes first, and its flush polls in steps of up to
        // 100 ms that each run to the end: ~100 ms per commit with records in flight. Flush here
        // in 1 ms steps, so its flush finds nothing left.
        self.fast_flush(self.timeout);
        Ok(PreparedCommit { backoff })
    }

    /// Commits the transaction [`RecordProducer::prepare_commit`] prepared: its records and offsets
    /// become visible together.
    pub fn commit_prepared(&mut self, prepared: PreparedCommit) -> Result<(), ProduceError> {
        let PreparedCommit { mut backoff } = prepared;
        while let Err(e) = self.producer.commit_transaction(self.timeout) {
            retry_or_fail(&mut backoff, ProduceError::transaction("commit", e))?;
        }
        self.transaction = Some(false);
        self.opened_at = None;
        Ok(())
    }

    /// Aborts the open transaction, if any: its records are never visible to read_committed consumers.
    pub fn abort_transaction(&mut self) -> Result<(), ProduceError> {
        if self.transaction == Some(true) {
            // librdkafka's abort waits for the delivery reports of every outstanding record, which
            // only a poll serves: purge them, and poll the purge reports out, first.
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            let _ = self.producer.flush(Duration::from_secs(1));
            self.producer
                .abort_transaction(self.timeout)
                .map_err(|e| ProduceError::transaction("abort", e))?;
            self.transaction = Some(false);
            self.opened_at = None;
            // The purged records failed on purpose; they are redone, not lost.
            self.producer
                .context()
                .deliveries
                .failed
                .store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// (delivered, failed) so far.
    pub fn delivery_counts(&self) -> (u64, u64) {
        let stats = &self.producer.context().deliveries;
        (
            stats.delivered.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
        )
    }

    /// Waits up to `timeout` for every record in flight, serving delivery reports in 1 ms steps
    /// (rust-rdkafka's own `flush` polls in steps of 100 ms that each run to their end).
    fn fast_flush(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(1));
        }
    }

    /// Waits until every queued record is delivered or failed, for at most `timeout`. Fails unless
    /// every record sent so far was delivered.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), ProduceError> {
        self.fast_flush(timeout);
        // Nothing is left in flight unless the wait above ran out: then this reports the timeout.
        if self.producer.flush(Duration::ZERO).is_err() {
            return Err(ProduceError::FlushTimeout {
                pending: self.producer.in_flight_count(),
                waited: timeout,
            });
        }
        let (_, failed) = self.delivery_counts();
        if failed > 0 {
            let first_error = self
                .producer
                .context()
                .deliveries
                .first_error()
                .unwrap_or_default();
            return Err(ProduceError::Delivery {
                failed,
                total: self.sent,
                first_error,
            });
        }
        Ok(())
    }
}

/// Every producer's `batch.size`: large batches for throughput (the broker's default limit is ~1 MiB).
pub const BATCH_BYTES: usize = 1_000_000;

/// The librdkafka configuration of every streamagg producer: idempotent, keyed with Java's murmur2
/// partitioner, lz4-compressed, batching, with a deep local queue; `properties` (librdkafka
/// pass-through) are applied over it.
pub fn producer_config(
    settings: &KafkaSettings,
    client_id: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = settings.client_config(client_id);
    config
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", BATCH_BYTES.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// A transaction whose offsets are added and whose records are delivered, waiting to be committed
/// or aborted; it carries what is left of the commit's patience.
#[must_use = "a prepared transaction is committed or aborted"]
#[derive(Debug)]
pub struct PreparedCommit {
    backoff: Backoff,
}

/// Sleeps and returns `Ok` if `error` is retriable and `backoff` has patience left; otherwise returns it.
fn retry_or_fail(backoff: &mut Backoff, error: ProduceError) -> Result<(), ProduceError> {
    if error.transaction_kind() == Some(TransactionErrorKind::Retriable) && backoff.wait(&error) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

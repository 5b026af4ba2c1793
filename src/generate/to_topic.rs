//! `streamagg produce`: generated traffic written to a topic through a [`RecordProducer`], as a
//! preload (as fast as possible, event times spread over a span) or at a rate (wall-clock event
//! times).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::codec::{encode, Format};
use crate::config::cluster::KafkaSettings;
use crate::generate::{GeneratorConfig, TrafficGenerator};
use crate::kafka::{self, KafkaSetupError};
use crate::model::TrafficEvent;
use crate::producer::{now_ms, ProduceError, RecordProducer};

/// What `streamagg produce` writes, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceSettings {
    pub kafka: KafkaSettings,
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    pub partitions: i32,
    pub format: Format,
    /// With [`Format::AvroConfluent`]: the registry id of the event schema, framing every payload.
    pub schema_id: Option<u32>,
    pub generator: GeneratorConfig,
    pub pace: Pace,
    /// How often progress is logged.
    pub progress_every: Duration,
    /// After the events, one [`SEAL_SOURCE`] event per partition [`SEAL_AFTER_MS`] after the latest
    /// one in event time, so that every window of a preload closes (benchmarks and demos that must
    /// see all results).
    pub seal: bool,
}

/// The source of the events `--seal` writes; their own windows never close, so they never show
/// up in any output.
pub const SEAL_SOURCE: &str = "streamagg.seal";

/// How far the seal events are ahead: beyond any window's size + grace up to 15 minutes, and not
/// so far that a processor writing event-time timestamps (Kafka Streams' changelogs) is refused by
/// a broker's `log.message.timestamp.after.max.ms` (one hour by default since Kafka 4.0).
pub const SEAL_AFTER_MS: i64 = 15 * 60_000;

/// How many events, how fast, and which event time they carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Pace {
    /// As fast as possible, `count` events whose event time advances evenly from `start_ms` over
    /// `span_ms` (a preload for tests and benchmarks).
    Preload {
        count: u64,
        start_ms: i64,
        span_ms: i64,
    },
    /// `per_second` events a second with the wall clock as event time, until `count` (if any) or stop.
    Rate { per_second: f64, count: Option<u64> },
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceReport {
    pub delivered: u64,
    pub elapsed: Duration,
}

impl ProduceReport {
    pub fn events_per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `linger.ms` of a generator producing at a rate (see [`generate_to_topic`]).
const LIVE_LINGER_MS: &str = "5";

/// Writes generated traffic to `settings.topic` (created if missing), keyed by source, until the
/// pace's count is reached or `stop` is set; then waits for every delivery. Blocks.
pub fn generate_to_topic(
    settings: &ProduceSettings,
    stop: &AtomicBool,
) -> Result<ProduceReport, ProduceError> {
    // At a rate the generator stands for live sources, whose records should not wait for a batch
    // to fill: librdkafka's default linger (5 ms, as the gateway's) instead of the preload's 20 ms.
    let properties = match settings.pace {
        Pace::Rate { .. } => BTreeMap::from([("linger.ms".to_owned(), LIVE_LINGER_MS.to_owned())]),
        Pace::Preload { .. } => BTreeMap::new(),
    };
    let mut producer = RecordProducer::connect(&settings.kafka, "streamagg-produce", &properties)?;
    if kafka::admin::partition_count(producer.client(), &settings.kafka, &settings.topic)?.is_none()
    {
        let admin = kafka::admin::admin_client(&settings.kafka)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| KafkaSetupError::CreateTopic {
                topic: settings.topic.clone(),
                reason: e.to_string(),
            })?;
        if runtime.block_on(kafka::admin::ensure_topic(
            &admin,
            &settings.kafka,
            &settings.topic,
            settings.partitions,
            1,
        ))? {
            tracing::info!(topic = %settings.topic, partitions = settings.partitions, "created topic");
        }
    }

    let mut generator = TrafficGenerator::new(settings.generator.clone());
    let mut payload = Vec::with_capacity(128);
    let started = Instant::now();
    let mut last_progress = started;
    let mut produced: u64 = 0;
    let mut latest_ms = i64::MIN;
    let limit = match settings.pace {
        Pace::Preload { count, .. } => Some(count),
        Pace::Rate { count, .. } => count,
    };
    while limit.is_none_or(|limit| produced < limit) && !stop.load(Ordering::Relaxed) {
        let base_ms = match settings.pace {
            Pace::Preload {
                count,
                start_ms,
                span_ms,
            } => {
                start_ms
                    + (i128::from(span_ms) * i128::from(produced) / i128::from(count.max(1))) as i64
            }
            Pace::Rate { per_second, .. } => {
                let due = started + Duration::from_secs_f64(produced as f64 / per_second);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                now_ms()
            }
        };
        let event = generator.next_event(base_ms);
        latest_ms = latest_ms.max(event.timestamp);
        payload.clear();
        if let Some(id) = settings.schema_id {
            crate::codec::confluent::write_header(id, &mut payload);
        }
        encode(&event, settings.format, &mut payload);
        producer.send(&settings.topic, event.source.as_bytes(), &payload, None)?;
        produced += 1;
        if last_progress.elapsed() >= settings.progress_every {
            last_progress = Instant::now();
            let (delivered, failed) = producer.delivery_counts();
            let rate = produced as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                produced,
                delivered,
                failed,
                rate = format!("{rate:.0}/s"),
                "producing"
            );
        }
    }
    if settings.seal && produced > 0 && !stop.load(Ordering::Relaxed) {
        let partitions =
            kafka::admin::partition_count(producer.client(), &settings.kafka, &settings.topic)?
                .unwrap_or(0);
        let seal = TrafficEvent {
            source: SEAL_SOURCE.to_owned(),
            timestamp: latest_ms.saturating_add(SEAL_AFTER_MS),
            value: 0.0,
        };
        payload.clear();
        if let Some(id) = settings.schema_id {
            crate::codec::confluent::write_header(id, &mut payload);
        }
        encode(&seal, settings.format, &mut payload);
        for partition in 0..partitions as i32 {
            producer.send_to(
                &settings.topic,
                Some(partition),
                seal.source.as_bytes(),
                &payload,
                None,
            )?;
        }
    }
    producer.flush(Duration::from_secs(60).max(settings.kafka.timeout))?;
    let (delivered, _) = producer.delivery_counts();
    Ok(ProduceReport {
        delivered,
        elapsed: started.elapsed(),
    })
}

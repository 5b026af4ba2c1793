//! The processor's event decoder for its input format: JSON, raw Avro (of the reader's schema, or
//! resolved from `--input-writer-schema`), or registry-framed Avro resolved per writer schema id.
//! Pure: the writer schemas of registry ids are handed in by the caller ([`InputDecoder::learn`])
//! after it fetched them; the plans are kept in a bounded cache.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Schema ids come from input records, but a colliding id costs a lookup, not a DoS of note (at
/// most [`PLAN_CACHE_IDS`] entries): a fast hash, as per record it is on the hot path.
type FastHash = foldhash::fast::RandomState;

use super::resolve::Plan;
use super::{confluent, decode_event, DecodeError, EventView, Format, TRAFFIC_EVENT_SCHEMA};

/// How many writer schema ids keep their plan; the oldest learned is forgotten first.
pub const PLAN_CACHE_IDS: usize = 1_000;

/// How long an id the registry does not know is answered from the cache before it is asked
/// again (a schema registered since, or a follower that caught up, is then read).
pub const UNKNOWN_ID_TTL: Duration = Duration::from_secs(30);

/// The longest reason kept for a writer schema id (it is a DLQ header on each of its records and
/// a log line; apache-avro's errors may quote a whole schema or default).
pub const MAX_REASON_BYTES: usize = 512;

/// `reason`, cut to at most [`MAX_REASON_BYTES`] on a char boundary, ending in `…` if cut. Pure.
pub fn bounded_reason(mut reason: String) -> String {
    const MORE: char = '…';
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut cut = MAX_REASON_BYTES - MORE.len_utf8();
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason.truncate(cut);
    reason.push(MORE);
    reason
}

/// What decodes the input records of one run.
#[derive(Debug)]
pub enum InputDecoder {
    Json,
    /// Raw datums of one writer schema.
    Avro(Plan),
    /// Registry-framed datums, each of the writer schema its id names.
    Confluent(PlanCache),
}

impl InputDecoder {
    /// The decoder of `format`; `writer_plan` is the `--input-writer-schema` plan of raw Avro.
    pub fn new(format: Format, writer_plan: Option<Plan>) -> InputDecoder {
        match format {
            Format::Json => InputDecoder::Json,
            Format::Avro => InputDecoder::Avro(writer_plan.unwrap_or(Plan::DIRECT)),
            Format::AvroConfluent => InputDecoder::Confluent(PlanCache::new(PLAN_CACHE_IDS)),
        }
    }

    /// The schema id of `payload` when its plan is not known yet: fetch it and [`Self::learn`] it
    /// before [`Self::decode`].
    pub fn missing_schema(&self, payload: &[u8]) -> Option<u32> {
        match self {
            InputDecoder::Confluent(cache) => confluent::split(payload)
                .ok()
                .map(|(id, _)| id)
                .filter(|id| !cache.contains(*id)),
            _ => None,
        }
    }

    /// Records the writer schema of `id`: its Avro JSON, or why there is none (e.g. the registry
    /// does not know the id). A schema that does not resolve is remembered as its reason, which is
    /// returned: each record of that id will go to the DLQ with it.
    pub fn learn(&mut self, id: u32, writer: Result<&str, String>) -> Result<(), String> {
        let plan = writer.and_then(|schema| {
            Plan::compile_str(schema, TRAFFIC_EVENT_SCHEMA).map_err(|e| e.to_string())
        });
        let plan = plan.map_err(bounded_reason);
        let result = plan.as_ref().map(|_| ()).map_err(Clone::clone);
        if let InputDecoder::Confluent(cache) = self {
            cache.insert(id, plan);
        }
        result
    }

    /// Records that the registry does not know `id` (yet): its records go to the DLQ with
    /// `reason` until `until`, then the id is fetched again.
    pub fn learn_unknown(&mut self, id: u32, reason: String, until: Instant) {
        if let InputDecoder::Confluent(cache) = self {
            cache.insert_until(id, Err(bounded_reason(reason)), Some(until));
        }
    }

    /// Decodes and validates one event.
    pub fn decode<'a>(&self, payload: &'a [u8]) -> Result<EventView<'a>, DecodeError> {
        let event = match self {
            InputDecoder::Json => return decode_event(payload, Format::Json),
            InputDecoder::Avro(plan) => plan
                .decode(payload)
                .map_err(|error| explain_framed(payload, error))?,
            InputDecoder::Confluent(cache) => {
                let (id, datum) = confluent::split(payload)?;
                match cache.get(id) {
                    Some(Ok(plan)) => plan.decode(datum)?,
                    Some(Err(reason)) => {
                        return Err(DecodeError::WriterSchema {
                            id,
                            reason: reason.clone(),
                        })
                    }
                    None => {
                        return Err(DecodeError::WriterSchema {
                            id,
                            reason: "its schema was not fetched".into(),
                        })
                    }
                }
            }
        };
        event.validate()?;
        Ok(event)
    }
}

/// A raw Avro record that failed to decode but is a registry-framed event of the reader's schema
/// gets a reason saying so. (A raw datum of the reader's schema never starts with byte 0: that
/// would be an empty `source`.)
fn explain_framed(payload: &[u8], error: DecodeError) -> DecodeError {
    match confluent::split(payload) {
        Ok((id, datum)) if Plan::DIRECT.decode(datum).is_ok() => DecodeError::RegistryFramed(id),
        _ => error,
    }
}

/// Plans (or why there is none) by writer schema id, at most `capacity` of them.
#[derive(Debug)]
pub struct PlanCache {
    /// With the instant an entry expires (an unknown id), if it does.
    plans: HashMap<u32, (Result<Plan, String>, Option<Instant>), FastHash>,
    order: VecDeque<u32>,
    capacity: usize,
}

impl PlanCache {
    pub fn new(capacity: usize) -> PlanCache {
        PlanCache {
            plans: HashMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `id` has a plan, or a reason that has not expired.
    pub fn contains(&self, id: u32) -> bool {
        self.plans
            .get(&id)
            .is_some_and(|(_, until)| until.is_none_or(|until| Instant::now() < until))
    }

    pub fn get(&self, id: u32) -> Option<&Result<Plan, String>> {
        self.plans.get(&id).map(|(plan, _)| plan)
    }

    pub fn len(&self) -> usize {
        self.plans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    pub fn insert(&mut self, id: u32, plan: Result<Plan, String>) {
        self.insert_until(id, plan, None)
    }

    /// Inserts an entry that expires at `until` (if given).
    pub fn insert_until(&mut self, id: u32, plan: Result<Plan, String>, until: Option<Instant>) {
        if self.plans.insert(id, (plan, until)).is_none() {
            self.order.push_back(id);
        }
        while self.plans.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.plans.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;

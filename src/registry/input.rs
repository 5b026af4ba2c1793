//! The processor's event decoder ([`InputDecoder`]) with what it needs from outside: the
//! `--input-writer-schema` file, read and planned once at start-up, and, for `avro-confluent`,
//! the writer schema of each new id, fetched from the registry before its first record is decoded.

use std::path::PathBuf;

use std::time::Instant;

use super::{Fetched, NoSchema, RegistryClient, RegistryError};
use crate::codec::input::{bounded_reason, InputDecoder, UNKNOWN_ID_TTL};
use crate::codec::resolve::Plan;
use crate::codec::{DecodeError, EventView, Format, TRAFFIC_EVENT_SCHEMA};
use crate::config::RunSettings;
use crate::telemetry::metric;

/// Why the input cannot be decoded at all (the run stops).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("input_writer_schema {path}: {reason}")]
    WriterSchema { path: PathBuf, reason: String },
}

/// Hands what the registry answered for `id` to `decoder`: the reason its records go to the DLQ,
/// if they do. An unknown id is remembered for [`UNKNOWN_ID_TTL`] only, then asked again.
pub fn learn_fetched(decoder: &mut InputDecoder, id: u32, fetched: Fetched) -> Result<(), String> {
    match fetched {
        Ok(schema) => decoder.learn(id, Ok(&schema)),
        Err(NoSchema::Unknown(reason)) => {
            let reason = bounded_reason(reason);
            decoder.learn_unknown(id, reason.clone(), Instant::now() + UNKNOWN_ID_TTL);
            Err(reason)
        }
        Err(NoSchema::NotAvro(reason)) => decoder.learn(id, Err(reason)),
    }
}

/// Decodes input events, fetching writer schemas as new ids appear.
pub struct EventInput {
    decoder: InputDecoder,
    registry: Option<RegistryClient>,
}

impl EventInput {
    /// The decoder of `settings`' input format. Refuses a writer schema file that cannot be read
    /// or resolved (misconfiguration, before any data moves).
    pub fn new(settings: &RunSettings) -> Result<EventInput, InputError> {
        let writer_plan = match &settings.input_writer_schema {
            None => None,
            Some(path) => {
                let refuse = |reason: String| InputError::WriterSchema {
                    path: path.clone(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
                let plan = Plan::compile_str(&text, TRAFFIC_EVENT_SCHEMA).map_err(|e| {
                    refuse(format!("cannot be read as streamagg.TrafficEvent: {e}"))
                })?;
                Some(plan)
            }
        };
        let registry = match (&settings.registry, settings.input_format) {
            (Some(registry), Format::AvroConfluent) => Some(RegistryClient::new(registry)?),
            _ => None,
        };
        Ok(EventInput {
            decoder: InputDecoder::new(settings.input_format, writer_plan),
            registry,
        })
    }

    /// Makes sure `payload` can be decoded: fetches its writer schema if its id is new. An id the
    /// registry does not know, or a schema that does not resolve, is learned as a DLQ reason (and
    /// counted); an unavailable registry is an error, and nothing is learned.
    pub fn prepare(&mut self, payload: &[u8]) -> Result<(), RegistryError> {
        let (Some(id), Some(registry)) = (self.decoder.missing_schema(payload), &self.registry)
        else {
            return Ok(());
        };
        let fetched = registry.schema_by_id(id)?;
        if let Err(reason) = learn_fetched(&mut self.decoder, id, fetched) {
            metrics::counter!(metric::WRITER_SCHEMAS_UNRESOLVABLE).increment(1);
            tracing::warn!(schema_id = id, %reason, "records of this writer schema go to the DLQ");
        } else {
            tracing::info!(schema_id = id, "writer schema fetched and planned");
        }
        Ok(())
    }

    /// Decodes and validates one event (after [`Self::prepare`]).
    pub fn decode<'a>(&self, payload: &'a [u8]) -> Result<EventView<'a>, DecodeError> {
        self.decoder.decode(payload)
    }
}

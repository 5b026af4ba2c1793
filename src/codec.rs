//! Bytes ↔ records: the wire formats of [`TrafficEvent`] and [`TrafficAverage`] — JSON, the raw
//! Avro binary datum (no container) of the schemas in `schemas/`, and that datum in the Confluent
//! Schema Registry framing ([`confluent`]). Events written with another Avro schema are read
//! through a [`resolve::Plan`]; [`input::InputDecoder`] picks the decoder per record. Pure: no I/O.
//!
//! The Avro datum of these flat records is the concatenation of their fields (strings and longs as
//! zig-zag varints, doubles as 8 little-endian bytes), so it is written and read here directly into the
//! fixed structs, without building a generic `apache_avro::types::Value` tree per record: this is the
//! hot path. Optional fields are `["null", "double"]` unions (a branch index, then the double if
//! any); a `TrafficAverage` datum that ends before them (written before they existed) reads them as
//! null, the schema's default. The `.avsc` files stay the single source of truth: they are embedded in the binary
//! ([`TRAFFIC_EVENT_SCHEMA`], [`TRAFFIC_AVERAGE_SCHEMA`]), and the tests hold this codec byte-for-byte
//! equal to `apache-avro`'s generic encoder and decoder for those schemas.

use std::borrow::Cow;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::model::{TrafficAverage, TrafficEvent};

pub mod confluent;
pub mod input;
pub mod resolve;

/// `schemas/traffic_event.avsc`, embedded at build time.
pub const TRAFFIC_EVENT_SCHEMA: &str = include_str!("../schemas/traffic_event.avsc");
/// `schemas/traffic_average.avsc`, embedded at build time.
pub const TRAFFIC_AVERAGE_SCHEMA: &str = include_str!("../schemas/traffic_average.avsc");
/// The full name of [`TRAFFIC_AVERAGE_SCHEMA`]'s record (its RecordNameStrategy subject).
pub const TRAFFIC_AVERAGE_NAME: &str = "streamagg.TrafficAverage";

/// A record's wire format on a topic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per record; unknown fields are ignored when reading.
    Json,
    /// The raw Avro binary datum of the record's schema.
    Avro,
    /// The Avro datum in the Confluent Schema Registry wire format: magic byte 0, the 4-byte
    /// big-endian schema id, the datum written with that schema.
    #[value(name = "avro-confluent")]
    #[serde(rename = "avro-confluent")]
    AvroConfluent,
}

/// The longest `source` accepted, in UTF-8 bytes. A source names a window and keys the output record,
/// so an unbounded one could make the output record too large for the broker — and under
/// exactly-once one refused output aborts every window of the transaction. Longer ones are invalid
/// input (DLQ), in the processor and the ingest gateway alike.
pub const MAX_SOURCE_BYTES: usize = 1024;

/// Why a record could not be decoded. The text is what goes into the DLQ header `streamagg.error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid Avro datum: {0}")]
    Avro(&'static str),
    #[error("empty source")]
    EmptySource,
    #[error("source is longer than {MAX_SOURCE_BYTES} bytes")]
    SourceTooLong,
    #[error("non-finite value")]
    NonFiniteValue,
    #[error("field `{0}` is null (a union's null branch) but a value is required")]
    NullField(&'static str),
    #[error("{0}")]
    Resolution(String),
    #[error("writer schema id {id} cannot be read as streamagg.TrafficEvent: {reason}")]
    WriterSchema { id: u32, reason: String },
    #[error("the record is in the Confluent Schema Registry wire format (magic byte 0, schema id {0}): read it with --input-format avro-confluent")]
    RegistryFramed(u32),
    #[error(
        "not in the Confluent Schema Registry wire format (magic byte 0 and a 4-byte schema id)"
    )]
    NotFramed,
}

/// A record with a JSON and an Avro form.
pub trait WireRecord: Serialize + DeserializeOwned + Sized {
    /// Appends the record's Avro datum to `out`.
    fn write_avro(&self, out: &mut Vec<u8>);
    /// Reads the record's fields, in schema order, from `reader`.
    fn read_avro(reader: &mut AvroReader<'_>) -> Result<Self, DecodeError>;
    /// Rules beyond the schema that a record must meet to be processed.
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// Appends `record` in `format` to `out` (which is not cleared, so one buffer can be reused). For
/// [`Format::AvroConfluent`] this is the datum only: the caller, which knows the schema id, writes
/// the header first ([`confluent::write_header`]).
pub fn encode<R: WireRecord>(record: &R, format: Format, out: &mut Vec<u8>) {
    match format {
        // Serializing plain structs of strings and numbers into a Vec cannot fail.
        Format::Json => serde_json::to_writer(&mut *out, record).unwrap_or_default(),
        Format::Avro | Format::AvroConfluent => record.write_avro(out),
    }
}

/// `record` in `format`, as a new buffer.
pub fn encode_to_vec<R: WireRecord>(record: &R, format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode(record, format, &mut out);
    out
}

/// `bytes` if they hold a JSON object. serde reads a struct from an array of its field values too
/// (`["a",1700000001000,7.0]`), which is not how records are written: refused like other bad input.
fn json_object(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    // Anything else but an object serde refuses with its own words.
    match bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        Some(b'[') => Err(DecodeError::Json(
            "an array, not a JSON object (a record is one object with its fields by name)"
                .to_owned(),
        )),
        _ => Ok(bytes),
    }
}

/// Decodes one record in `format` from the whole of `bytes`, and validates it. Registry-framed
/// records are read as written with the record's own schema, whatever their schema id.
pub fn decode<R: WireRecord>(bytes: &[u8], format: Format) -> Result<R, DecodeError> {
    let (bytes, format) = match format {
        Format::AvroConfluent => (confluent::split(bytes)?.1, Format::Avro),
        other => (bytes, other),
    };
    let record = match format {
        Format::Json => serde_json::from_slice::<R>(json_object(bytes)?)
            .map_err(|e| DecodeError::Json(e.to_string()))?,
        Format::Avro | Format::AvroConfluent => {
            let mut reader = AvroReader { rest: bytes };
            let record = R::read_avro(&mut reader)?;
            if !reader.rest.is_empty() {
                return Err(DecodeError::Avro("trailing bytes after the record"));
            }
            record
        }
    };
    record.validate()?;
    Ok(record)
}

/// A [`TrafficEvent`] read in place from the bytes it was decoded from: the processor's per-record
/// decode, which allocates nothing (a JSON `source` with escape sequences is the one exception:
/// its unescaped text is owned). Same fields, same rules and same errors as [`TrafficEvent`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename = "TrafficEvent", expecting = "struct TrafficEvent")]
pub struct EventView<'a> {
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    pub timestamp: i64,
    pub value: f64,
}

impl<'a> EventView<'a> {
    fn read_avro(reader: &mut AvroReader<'a>) -> Result<Self, DecodeError> {
        Ok(EventView {
            source: Cow::Borrowed(reader.string()?),
            timestamp: reader.long()?,
            value: reader.double()?,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        if self.source.is_empty() {
            return Err(DecodeError::EmptySource);
        }
        if self.source.len() > MAX_SOURCE_BYTES {
            return Err(DecodeError::SourceTooLong);
        }
        if !self.value.is_finite() {
            return Err(DecodeError::NonFiniteValue);
        }
        Ok(())
    }

    /// The owned record.
    pub fn into_owned(self) -> TrafficEvent {
        TrafficEvent {
            source: self.source.into_owned(),
            timestamp: self.timestamp,
            value: self.value,
        }
    }
}

/// Decodes one [`TrafficEvent`] in `format` from the whole of `bytes`, in place, and validates it.
/// Registry-framed events are read as written with the reader's schema, whatever their schema id
/// (the processor resolves them by id: [`input::InputDecoder`]).
pub fn decode_event(bytes: &[u8], format: Format) -> Result<EventView<'_>, DecodeError> {
    let (bytes, format) = match format {
        Format::AvroConfluent => (confluent::split(bytes)?.1, Format::Avro),
        other => (bytes, other),
    };
    let event = match format {
        Format::Json => serde_json::from_slice::<EventView<'_>>(json_object(bytes)?)
            .map_err(|e| DecodeError::Json(e.to_string()))?,
        Format::Avro | Format::AvroConfluent => {
            let mut reader = AvroReader { rest: bytes };
            let event = EventView::read_avro(&mut reader)?;
            if !reader.rest.is_empty() {
                return Err(DecodeError::Avro("trailing bytes after the record"));
            }
            event
        }
    };
    event.validate()?;
    Ok(event)
}

impl WireRecord for TrafficEvent {
    fn write_avro(&self, out: &mut Vec<u8>) {
        put_string(out, &self.source);
        put_long(out, self.timestamp);
        put_double(out, self.value);
    }

    fn read_avro(reader: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        EventView::read_avro(reader).map(EventView::into_owned)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        EventView {
            source: Cow::Borrowed(&self.source),
            timestamp: self.timestamp,
            value: self.value,
        }
        .validate()
    }
}

impl WireRecord for TrafficAverage {
    fn write_avro(&self, out: &mut Vec<u8>) {
        put_string(out, &self.source);
        put_long(out, self.window_start);
        put_long(out, self.window_end);
        put_long(out, self.count);
        put_double(out, self.sum);
        put_double(out, self.avg);
        put_double(out, self.min);
        put_double(out, self.max);
        for percentile in [self.p50, self.p90, self.p95, self.p99] {
            put_optional_double(out, percentile);
        }
    }

    fn read_avro(reader: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        let mut average = TrafficAverage {
            source: reader.string()?.to_owned(),
            window_start: reader.long()?,
            window_end: reader.long()?,
            count: reader.long()?,
            sum: reader.double()?,
            avg: reader.double()?,
            min: reader.double()?,
            max: reader.double()?,
            p50: None,
            p90: None,
            p95: None,
            p99: None,
        };
        // A record written before the percentile fields ends here: they are null, as the schema's
        // defaults say.
        if !reader.rest.is_empty() {
            average.p50 = reader.optional_double()?;
            average.p90 = reader.optional_double()?;
            average.p95 = reader.optional_double()?;
            average.p99 = reader.optional_double()?;
        }
        Ok(average)
    }
}

fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    put_long(out, value.len() as i64);
    out.extend_from_slice(value.as_bytes());
}

fn put_double(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// A `["null", "double"]` union: the branch index (a long), then the double if any.
fn put_optional_double(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        None => put_long(out, 0),
        Some(value) => {
            put_long(out, 1);
            put_double(out, value);
        }
    }
}

/// Reads Avro primitives from the front of a byte slice, refusing truncated or malformed input.
pub struct AvroReader<'a> {
    rest: &'a [u8],
}

impl<'a> AvroReader<'a> {
    fn long(&mut self) -> Result<i64, DecodeError> {
        let mut zigzag: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or(DecodeError::Avro("truncated long"))?;
            self.rest = rest;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::Avro("long overflows 64 bits"));
            }
            zigzag |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64));
            }
        }
        Err(DecodeError::Avro("long overflows 64 bits"))
    }

    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::try_from(self.long()?)
            .map_err(|_| DecodeError::Avro("negative string length"))?;
        if len > self.rest.len() {
            return Err(DecodeError::Avro("truncated string"));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Avro("string is not UTF-8"))
    }

    fn double(&mut self) -> Result<f64, DecodeError> {
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or(DecodeError::Avro("truncated double"))?;
        self.rest = rest;
        Ok(f64::from_le_bytes(*bytes))
    }

    /// A `["null", "double"]` union.
    fn optional_double(&mut self) -> Result<Option<f64>, DecodeError> {
        match self.long()? {
            0 => Ok(None),
            1 => self.double().map(Some),
            _ => Err(DecodeError::Avro("union branch out of range")),
        }
    }
}

#[cfg(test)]
mod tests;

//! The gateway's pure input half: splitting a byte stream into bounded lines, telling a JSON-array
//! body from an NDJSON one (both bounded in item size and count), validating each event with the
//! processor's own rules, and comparing tokens in constant time. No I/O; builds without the
//! `runtime` feature, so `fuzz/` reaches it.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::response::truncate_echo;

pub use crate::auth::{bearer_matches, constant_time_eq};

use crate::codec::{decode, DecodeError, Format};
use crate::model::TrafficEvent;
use crate::window::WindowSpec;

/// The widest window (+ grace) the gateway guards for: an event whose window under this spec cannot be
/// represented in `i64` milliseconds is refused as `timestamp out of range`, with the very check the
/// processor applies ([`WindowSpec::start_of`]). Any processor with window + grace up to two days
/// accepts every event the gateway accepts.
pub const RANGE_GUARD: WindowSpec = WindowSpec::epoch(86_400_000, 86_400_000);

/// Why one line (or array element) was refused. The text is what the client is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid JSON: {0}")]
    MissingField(String),
    #[error("empty source")]
    EmptySource,
    #[error("non-finite value")]
    NonFiniteValue,
    #[error("timestamp out of range")]
    TimestampOutOfRange,
    #[error("source is longer than {} bytes", crate::codec::MAX_SOURCE_BYTES)]
    SourceTooLong,
}

impl Rejection {
    /// Every `reason` label value, in [`Rejection::index`] order.
    pub const LABELS: [&'static str; 8] = [
        "line_too_long",
        "invalid_utf8",
        "invalid_json",
        "missing_field",
        "empty_source",
        "non_finite_value",
        "timestamp_out_of_range",
        "source_too_long",
    ];

    /// Position of this reason in [`Rejection::LABELS`] (a bounded metric label).
    pub fn index(&self) -> usize {
        match self {
            Rejection::LineTooLong { .. } => 0,
            Rejection::InvalidUtf8 => 1,
            Rejection::InvalidJson(_) => 2,
            Rejection::MissingField(_) => 3,
            Rejection::EmptySource => 4,
            Rejection::NonFiniteValue => 5,
            Rejection::TimestampOutOfRange => 6,
            Rejection::SourceTooLong => 7,
        }
    }
}

impl From<DecodeError> for Rejection {
    fn from(error: DecodeError) -> Self {
        match error {
            // serde's own wording for an absent field (`serde::de::Error::missing_field`).
            // serde quotes the offending input: only its beginning is kept (and told the client).
            DecodeError::Json(text) if text.starts_with("missing field") => {
                Rejection::MissingField(truncate_echo(&text).into_owned())
            }
            DecodeError::Json(text) => Rejection::InvalidJson(truncate_echo(&text).into_owned()),
            DecodeError::Avro(text) => Rejection::InvalidJson(text.to_owned()),
            // Only JSON is decoded here: the Avro resolution and framing errors cannot occur.
            other @ (DecodeError::NullField(_)
            | DecodeError::Resolution(_)
            | DecodeError::WriterSchema { .. }
            | DecodeError::RegistryFramed(_)
            | DecodeError::NotFramed) => Rejection::InvalidJson(other.to_string()),
            DecodeError::EmptySource => Rejection::EmptySource,
            DecodeError::NonFiniteValue => Rejection::NonFiniteValue,
            DecodeError::SourceTooLong => Rejection::SourceTooLong,
        }
    }
}

/// One JSON `TrafficEvent`, validated exactly as the processor validates its input: it decodes
/// (all fields present, right types), its source is not empty, its value is finite, and its window
/// fits in time ([`RANGE_GUARD`]).
pub fn validate_line(line: &[u8]) -> Result<TrafficEvent, Rejection> {
    std::str::from_utf8(line).map_err(|_| Rejection::InvalidUtf8)?;
    let event = decode::<TrafficEvent>(line, Format::Json)?;
    RANGE_GUARD
        .start_of(event.timestamp)
        .ok_or(Rejection::TimestampOutOfRange)?;
    Ok(event)
}

/// Whether a line holds nothing but whitespace (skipped, not refused).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// What [`LineSplitter::feed`] found: a complete line (its number counts from 1, blank lines
/// included), or a line that went past the limit (its bytes were dropped as they came).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Line { number: u64, bytes: &'a [u8] },
    TooLong { number: u64 },
}

/// Splits a byte stream into `\n`-terminated lines (a trailing `\r` is dropped) of at most `max`
/// bytes, holding at most `max` bytes of a partial line: a longer line is discarded as it arrives
/// and reported once its newline comes.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    partial: Vec<u8>,
    discarding: bool,
    /// `partial` holds the line last returned: clear it on the next call.
    returned: bool,
    line: u64,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            max,
            partial: Vec::new(),
            discarding: false,
            returned: false,
            line: 0,
        }
    }

    /// Changes the longest line kept from the next line on (a line being received keeps the old).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Takes bytes from the front of `chunk` up to and including the first newline (or all of it if
    /// there is none). Returns how many bytes it took, and the line they completed, if any.
    pub fn feed<'a>(&'a mut self, chunk: &'a [u8]) -> (usize, Option<Frame<'a>>) {
        if std::mem::take(&mut self.returned) {
            self.partial.clear();
        }
        let newline = chunk.iter().position(|&b| b == b'\n');
        let (taken, content) = match newline {
            Some(at) => (at + 1, &chunk[..at]),
            None => (chunk.len(), chunk),
        };
        if !self.discarding && self.partial.len() + content.len() > self.max + 1 {
            // One byte of slack: a `\r` before the newline does not count against the limit.
            self.discarding = true;
            self.partial = Vec::new();
        }
        if newline.is_none() {
            if !self.discarding {
                self.partial.extend_from_slice(content);
            }
            return (taken, None);
        }
        self.line += 1;
        let number = self.line;
        if std::mem::take(&mut self.discarding) {
            return (taken, Some(Frame::TooLong { number }));
        }
        let bytes = if self.partial.is_empty() {
            content
        } else {
            self.partial.extend_from_slice(content);
            &self.partial[..]
        };
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        // The frame may borrow `partial`: the next call clears it.
        self.returned = true;
        if bytes.len() > self.max {
            return (taken, Some(Frame::TooLong { number }));
        }
        (taken, Some(Frame::Line { number, bytes }))
    }

    /// At the end of the stream: the last line if it had no newline.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        if self.discarding {
            self.discarding = false;
            self.line += 1;
            return Some(Frame::TooLong { number: self.line });
        }
        if std::mem::take(&mut self.returned) {
            self.partial.clear();
        }
        if self.partial.is_empty() {
            return None;
        }
        self.line += 1;
        self.returned = true;
        let bytes = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        if bytes.len() > self.max {
            return Some(Frame::TooLong { number: self.line });
        }
        Some(Frame::Line {
            number: self.line,
            bytes,
        })
    }
}

/// One event of a request body: its position (NDJSON line number, or array element number, from
/// 1) and the event or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub number: u64,
    pub event: Result<TrafficEvent, Rejection>,
}

/// Bytes `items` take in memory: the list, each event's source and each kept rejection text.
pub fn heap_bytes(items: &[Item]) -> usize {
    let text = |item: &Item| match &item.event {
        Ok(event) => event.source.capacity(),
        Err(Rejection::InvalidJson(text) | Rejection::MissingField(text)) => text.capacity(),
        Err(_) => 0,
    };
    std::mem::size_of_val(items) + items.iter().map(text).sum::<usize>()
}

/// The most memory one request within the limits can need at once, bounding each of its forms: the
/// raw body (`max_body_bytes`), its parsed events (the list, their sources, which come from the
/// body's bytes, and each refused item's reason, which quotes at most
/// [`super::response::MAX_ECHO_BYTES`] of input) and their encoded payloads (the body's values plus a
/// fixed overhead per event).
pub fn largest_request_bytes(max_body_bytes: usize, max_items: usize) -> usize {
    // A reason's own words and the slack of its allocation, beyond the quoted input.
    const REASON_SLACK: usize = 64;
    let per_item = std::mem::size_of::<Item>() + super::response::MAX_ECHO_BYTES + REASON_SLACK;
    max_body_bytes.saturating_add(max_items.saturating_mul(per_item))
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("the body holds no events")]
    Empty,
    #[error("invalid JSON array: {0}")]
    InvalidArray(String),
    #[error("more than {limit} events in one request; split it")]
    TooManyItems { limit: usize },
}

/// What bounds one body's parse: the longest line or array element (bytes), and the most events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub max_line: usize,
    pub max_items: usize,
}

/// Parses a request body: a JSON array of events if its first non-blank byte is `[`, otherwise
/// NDJSON (one event per line, blank lines skipped). A line or element longer than `max_line` is
/// refused on its own; more than `max_items` events refuse the whole body, found before more are
/// parsed.
pub fn parse_body(body: &[u8], limits: BodyLimits) -> Result<Vec<Item>, BodyError> {
    let mut items = Vec::new();
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {}
        Some(b'[') => {
            let mut over = false;
            let mut each = |raw: &RawValue| {
                if items.len() == limits.max_items {
                    over = true;
                    return false;
                }
                let number = items.len() as u64 + 1;
                let text = raw.get().as_bytes();
                let event = if text.len() > limits.max_line {
                    Err(Rejection::LineTooLong {
                        limit: limits.max_line,
                    })
                } else {
                    validate_line(text)
                };
                items.push(Item { number, event });
                true
            };
            let parsed = for_each_element(body, &mut each);
            if over {
                return Err(BodyError::TooManyItems {
                    limit: limits.max_items,
                });
            }
            parsed
                .map_err(|e| BodyError::InvalidArray(truncate_echo(&e.to_string()).into_owned()))?;
        }
        Some(_) => {
            let mut splitter = LineSplitter::new(limits.max_line);
            let mut rest = body;
            while !rest.is_empty() {
                let (taken, frame) = splitter.feed(rest);
                rest = &rest[taken..];
                push_item(
                    &mut items,
                    frame.and_then(|f| item(f, limits.max_line)),
                    limits,
                )?;
            }
            let last = splitter.finish().and_then(|f| item(f, limits.max_line));
            push_item(&mut items, last, limits)?;
        }
    }
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(items)
}

/// Appends `item` (if any) unless `items` already holds `limits.max_items`.
fn push_item(
    items: &mut Vec<Item>,
    item: Option<Item>,
    limits: BodyLimits,
) -> Result<(), BodyError> {
    if let Some(item) = item {
        if items.len() == limits.max_items {
            return Err(BodyError::TooManyItems {
                limit: limits.max_items,
            });
        }
        items.push(item);
    }
    Ok(())
}

/// Calls `each` on every element of the JSON array `body` in order, without collecting them,
/// until it returns `false` (then stops early with an error); fails if `body` is not one array.
fn for_each_element(
    body: &[u8],
    each: &mut dyn FnMut(&RawValue) -> bool,
) -> Result<(), serde_json::Error> {
    struct Elements<'f>(&'f mut dyn FnMut(&RawValue) -> bool);
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                if !(self.0)(raw) {
                    return Err(A::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde::Deserializer::deserialize_seq(&mut deserializer, Elements(each))?;
    deserializer.end()
}

/// The item a frame of a splitter with limit `max_line` makes: `None` for a blank line.
pub fn item(frame: Frame<'_>, max_line: usize) -> Option<Item> {
    match frame {
        Frame::Line { bytes, .. } if is_blank(bytes) => None,
        Frame::Line { number, bytes } => Some(Item {
            number,
            event: validate_line(bytes),
        }),
        Frame::TooLong { number } => Some(Item {
            number,
            event: Err(Rejection::LineTooLong { limit: max_line }),
        }),
    }
}

/// Whether a TCP connection's first line authenticates it: `AUTH <token>` (surrounding blanks
/// ignored), compared in constant time.
pub fn tcp_auth_matches(line: &[u8], token: &[u8]) -> bool {
    let line = line.trim_ascii();
    let Some((word, credentials)) = line.split_at_checked(5) else {
        return false;
    };
    word == b"AUTH " && constant_time_eq(credentials.trim_ascii(), token)
}

#[cfg(test)]
mod tests;

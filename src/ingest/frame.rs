//! The gateway's pure half: splitting a byte stream into bounded lines, telling a JSON-array body from
//! an NDJSON one, validating each event with the processor's own rules, building the HTTP answer, and
//! comparing bearer tokens in constant time. No I/O.

use serde_json::value::RawValue;

use crate::codec::{decode, DecodeError, Format};
use crate::model::TrafficEvent;
use crate::window::WindowSpec;

/// The widest window (+ grace) the gateway guards for: an event whose window under this spec cannot be
/// represented in `i64` milliseconds is refused as `timestamp out of range`, with the very check the
/// processor applies ([`WindowSpec::start_of`]). Any processor with window + grace up to two days
/// accepts every event the gateway accepts.
pub const RANGE_GUARD: WindowSpec = WindowSpec {
    size_ms: 86_400_000,
    grace_ms: 86_400_000,
};

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
            DecodeError::Json(text) if text.starts_with("missing field") => {
                Rejection::MissingField(text)
            }
            DecodeError::Json(text) => Rejection::InvalidJson(text),
            DecodeError::Avro(text) => Rejection::InvalidJson(text.to_owned()),
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

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("the body holds no events")]
    Empty,
    #[error("invalid JSON array: {0}")]
    InvalidArray(String),
}

/// Parses a request body: a JSON array of events if its first non-blank byte is `[`, otherwise
/// NDJSON (one event per line, blank lines skipped, lines of at most `max_line` bytes).
pub fn parse_body(body: &[u8], max_line: usize) -> Result<Vec<Item>, BodyError> {
    let items = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Vec::new(),
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(body)
            .map_err(|e| BodyError::InvalidArray(e.to_string()))?
            .into_iter()
            .zip(1..)
            .map(|(raw, number)| Item {
                number,
                event: validate_line(raw.get().as_bytes()),
            })
            .collect(),
        Some(_) => {
            let mut items = Vec::new();
            let mut splitter = LineSplitter::new(max_line);
            let mut rest = body;
            while !rest.is_empty() {
                let (taken, frame) = splitter.feed(rest);
                items.extend(frame.and_then(|f| item(f, max_line)));
                rest = &rest[taken..];
            }
            items.extend(splitter.finish().and_then(|f| item(f, max_line)));
            items
        }
    };
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(items)
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

/// The JSON body of an answer to `POST /v1/events` whose accepted events were all delivered:
/// status 200 if nothing was refused, 400 with the refused items otherwise.
pub fn events_response(accepted: usize, rejected: &[(u64, Rejection)]) -> (u16, String) {
    let status = if rejected.is_empty() { 200 } else { 400 };
    let errors: Vec<serde_json::Value> = rejected
        .iter()
        .map(|(item, reason)| serde_json::json!({"item": item, "reason": reason.to_string()}))
        .collect();
    let mut body = serde_json::json!({"accepted": accepted, "rejected": rejected.len()});
    if !errors.is_empty() {
        body["errors"] = serde_json::Value::Array(errors);
    }
    (status, format!("{body}\n"))
}

/// A JSON error body: `{"error": "..."}` plus any extra fields.
pub fn error_body(error: &str, extra: &[(&str, u64)]) -> String {
    let mut body = serde_json::json!({ "error": error });
    for (key, value) in extra {
        body[*key] = serde_json::Value::from(*value);
    }
    format!("{body}\n")
}

/// The line a TCP client gets for a refused line.
pub fn tcp_rejection(number: u64, reason: &Rejection) -> String {
    format!("rejected line {number}: {reason}\n")
}

/// Whether two byte strings are equal, taking the same time wherever they differ (the time depends
/// only on the longer length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

/// Whether an `Authorization` header value carries `token` as a bearer token.
pub fn bearer_matches(header: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(value) = header else {
        return false;
    };
    let Some((scheme, credentials)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && constant_time_eq(credentials.trim_ascii(), token)
}

#[cfg(test)]
mod tests;

//! How `streamagg consume` shows a record: one JSON object per line, the decoded record alone (as
//! it always was) or, when positions, keys, headers or raw bytes are asked for, an envelope with
//! those fields and the decoded record under `record`. A record that does not decode is never
//! skipped: it is shown with `error` and its value's bytes. Pure: no Kafka, no I/O.

use serde_json::{json, Map, Value};

use crate::codec::{decode, DecodeError, EventView, Format};
use crate::model::{TrafficAverage, TrafficEvent};

/// Which record the values hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordKind {
    /// TrafficEvent, the input record.
    Event,
    /// TrafficAverage, the output record.
    Average,
    /// No decoding: the value's bytes only.
    Raw,
}

/// How bytes that are not (or may not be) text are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Encoding {
    /// Standard base64 with padding (RFC 4648 §4): field `value_base64`.
    #[default]
    Base64,
    /// Lower-case hexadecimal: field `value_hex`.
    Hex,
}

impl Encoding {
    /// The field that holds a value's bytes in this encoding.
    pub fn value_field(self) -> &'static str {
        match self {
            Encoding::Base64 => "value_base64",
            Encoding::Hex => "value_hex",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
        }
    }

    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Base64 => base64(bytes),
            Encoding::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// What to show of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Show {
    pub record: RecordKind,
    pub format: Format,
    /// `partition`, `offset` and `timestamp` (the Kafka record timestamp, epoch ms).
    pub positions: bool,
    pub keys: bool,
    pub headers: bool,
    /// The value's bytes in this encoding, for every record; undecodable records always carry them
    /// (in this encoding, else base64).
    pub raw: Option<Encoding>,
}

/// One record as read.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
    pub value: Option<&'a [u8]>,
}

/// The record's JSON line (without the newline), and whether it decoded.
pub fn render(record: &Shown<'_>, show: &Show) -> (String, bool) {
    let value = record.value.unwrap_or_default();
    let decoded = match show.record {
        RecordKind::Event => Some(decode::<TrafficEvent>(value, show.format).map(to_json)),
        RecordKind::Average => Some(decode::<TrafficAverage>(value, show.format).map(to_json)),
        RecordKind::Raw => None,
    };
    render_decoded(record, show, decoded)
}

/// An event decoded by the caller (with the writer schema its registry id names), as JSON.
pub fn event_json(event: Result<EventView<'_>, DecodeError>) -> Result<Value, DecodeError> {
    event.map(|event| to_json(event.into_owned()))
}

/// [`render`] of a record the caller decoded (`None`: not decoded, `--record raw`).
pub fn render_decoded(
    record: &Shown<'_>,
    show: &Show,
    decoded: Option<Result<Value, DecodeError>>,
) -> (String, bool) {
    let envelope = show.positions || show.keys || show.headers || show.raw.is_some();
    if let (Some(Ok(decoded)), false) = (&decoded, envelope) {
        return (decoded.to_string(), true);
    }
    let encoding = show.raw.unwrap_or_default();
    let mut fields = Map::new();
    let failed = matches!(decoded, Some(Err(_)));
    if show.positions || failed {
        fields.insert("partition".into(), json!(record.partition));
        fields.insert("offset".into(), json!(record.offset));
    }
    if show.positions {
        fields.insert("timestamp".into(), json!(record.timestamp));
    }
    if show.keys {
        fields.insert(
            "key".into(),
            record.key.map_or(Value::Null, |k| bytes(k, encoding)),
        );
    }
    if show.headers {
        let headers = record
            .headers
            .iter()
            .map(|(key, value)| json!([key, value.as_deref().map(|v| bytes(v, encoding))]))
            .collect();
        fields.insert("headers".into(), Value::Array(headers));
    }
    let with_bytes = show.raw.is_some() || decoded.as_ref().is_none_or(Result::is_err);
    if with_bytes {
        let field = encoding.value_field();
        fields.insert(
            field.into(),
            record
                .value
                .map_or(Value::Null, |v| json!(encoding.encode(v))),
        );
    }
    match decoded {
        Some(Ok(decoded)) => {
            fields.insert("record".into(), decoded);
        }
        Some(Err(error)) => {
            fields.insert("error".into(), json!(error.to_string()));
        }
        None => {}
    }
    (Value::Object(fields).to_string(), !failed)
}

fn to_json<T: serde::Serialize>(record: T) -> Value {
    serde_json::to_value(record).unwrap_or(Value::Null)
}

/// Bytes as a JSON string when they are UTF-8 text, else `{"<encoding>": "…"}`.
fn bytes(data: &[u8], encoding: Encoding) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => json!(text),
        Err(_) => json!({ encoding.name(): encoding.encode(data) }),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_match_the_rfc_4648_test_vectors() {
        let cases = [
            ("", "", ""),
            ("f", "Zg==", "66"),
            ("fo", "Zm8=", "666f"),
            ("foo", "Zm9v", "666f6f"),
            ("foob", "Zm9vYg==", "666f6f62"),
            ("fooba", "Zm9vYmE=", "666f6f6261"),
            ("foobar", "Zm9vYmFy", "666f6f626172"),
        ];
        for (input, b64, hex) in cases {
            assert_eq!(Encoding::Base64.encode(input.as_bytes()), b64, "{input}");
            assert_eq!(Encoding::Hex.encode(input.as_bytes()), hex, "{input}");
        }
        assert_eq!(Encoding::Base64.encode(&[0xff, 0x00, 0xfe]), "/wD+");
    }

    fn show(record: RecordKind) -> Show {
        Show {
            record,
            format: Format::Json,
            positions: false,
            keys: false,
            headers: false,
            raw: None,
        }
    }

    fn parsed(line: &str) -> Value {
        serde_json::from_str(line).expect("each line is JSON")
    }

    #[test]
    fn records_show_alone_or_in_an_envelope_and_undecodable_ones_with_their_bytes() {
        let event = br#"{"source":"s","timestamp":60000,"value":1.5}"#;
        let bad = b"\xff\x00not json";
        let headers = vec![
            ("streamagg.error".to_owned(), Some(b"invalid JSON".to_vec())),
            ("bin".to_owned(), Some(vec![0xff])),
            ("none".to_owned(), None),
        ];
        let record = |value: &'static [u8]| Shown {
            partition: 2,
            offset: 7,
            timestamp: Some(123),
            key: Some(b"s".as_slice()),
            headers: &headers,
            value: Some(value),
        };
        let alone = json!({"source": "s", "timestamp": 60000, "value": 1.5});
        let everything = Show {
            positions: true,
            keys: true,
            headers: true,
            raw: Some(Encoding::Hex),
            ..show(RecordKind::Event)
        };
        let cases: Vec<(Show, &'static [u8], Value, bool)> = vec![
            (show(RecordKind::Event), event, alone.clone(), true),
            (
                everything,
                event,
                json!({"partition": 2, "offset": 7, "timestamp": 123, "key": "s",
                       "headers": [["streamagg.error", "invalid JSON"], ["bin", {"hex": "ff"}], ["none", null]],
                       "value_hex": Encoding::Hex.encode(event), "record": alone}),
                true,
            ),
            (
                show(RecordKind::Event),
                bad,
                json!({"partition": 2, "offset": 7, "value_base64": "/wBub3QganNvbg==",
                       "error": "invalid JSON: expected value at line 1 column 1"}),
                false,
            ),
            (
                Show {
                    keys: true,
                    raw: Some(Encoding::Hex),
                    ..show(RecordKind::Average)
                },
                bad,
                json!({"partition": 2, "offset": 7, "key": "s", "value_hex": "ff006e6f74206a736f6e",
                       "error": "invalid JSON: expected value at line 1 column 1"}),
                false,
            ),
            (
                show(RecordKind::Raw),
                bad,
                json!({"value_base64": "/wBub3QganNvbg=="}),
                true,
            ),
        ];
        for (index, (show, value, expected, ok)) in cases.into_iter().enumerate() {
            let (line, decoded) = render(&record(value), &show);
            assert!(!line.contains('\n'), "case {index}: one line");
            assert_eq!(parsed(&line), expected, "case {index}: {line}");
            assert_eq!(decoded, ok, "case {index}");
        }
    }
}

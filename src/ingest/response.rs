//! The gateway's pure output half: the JSON answers of `POST /v1/events` and the lines a TCP client
//! gets, bounded in size whatever the input — at most [`Refusals::LISTED`] refused items are spelled
//! out (the rest only counted) and echoed input is cut to [`MAX_ECHO_BYTES`]. No I/O; builds without
//! the `runtime` feature, so `fuzz/` reaches it.

use std::borrow::Cow;
use std::fmt::Display;

/// The most bytes of a client's input an error text repeats back (serde quotes offending values).
pub const MAX_ECHO_BYTES: usize = 160;

/// `text` cut to at most [`MAX_ECHO_BYTES`] bytes (on a character boundary), marked with `…` when cut.
pub fn truncate_echo(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_ECHO_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// The items of one request that were refused: every one counted, the first
/// [`Refusals::LISTED`] with their reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    listed: Vec<(u64, String)>,
    count: u64,
}

impl Refusals {
    /// How many refused items an answer spells out.
    pub const LISTED: usize = 100;

    /// Counts item `number`, refused for `reason`; keeps the reason while fewer than
    /// [`Refusals::LISTED`] are kept.
    pub fn push(&mut self, number: u64, reason: &dyn Display) {
        self.count += 1;
        if self.listed.len() < Self::LISTED {
            let text = reason.to_string();
            self.listed
                .push((number, truncate_echo(&text).into_owned()));
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Heap bytes the kept reasons take (what the request's memory budget counts).
    pub fn heap_bytes(&self) -> usize {
        self.listed.capacity() * std::mem::size_of::<(u64, String)>()
            + self.listed.iter().map(|(_, r)| r.capacity()).sum::<usize>()
    }
}

/// The JSON body of an answer to `POST /v1/events` whose accepted events were all delivered:
/// status 200 if nothing was refused, 400 with the (first) refused items otherwise, and
/// `errors_omitted` counting the refused items not listed.
pub fn events_response(accepted: u64, refused: &Refusals) -> (u16, String) {
    let status = if refused.is_empty() { 200 } else { 400 };
    let mut body = serde_json::json!({"accepted": accepted, "rejected": refused.count});
    if !refused.is_empty() {
        let errors: Vec<serde_json::Value> = refused
            .listed
            .iter()
            .map(|(item, reason)| serde_json::json!({"item": item, "reason": reason}))
            .collect();
        body["errors"] = serde_json::Value::Array(errors);
        let omitted = refused.count - refused.listed.len() as u64;
        if omitted > 0 {
            body["errors_omitted"] = serde_json::Value::from(omitted);
        }
    }
    (status, format!("{body}\n"))
}

/// A JSON error body: `{"error": "..."}` (echoed input cut short) plus any extra fields.
pub fn error_body(error: &str, extra: &[(&str, u64)]) -> String {
    let mut body = serde_json::json!({ "error": truncate_echo(error) });
    for (key, value) in extra {
        body[*key] = serde_json::Value::from(*value);
    }
    format!("{body}\n")
}

/// The line a TCP client gets for a refused line.
pub fn tcp_rejection(number: u64, reason: &dyn Display) -> String {
    let reason = reason.to_string();
    format!("rejected line {number}: {}\n", truncate_echo(&reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_stay_small_whatever_was_refused() {
        let mut refused = Refusals::default();
        for n in 1..=10_000 {
            refused.push(n, &"x".repeat(70_000));
        }
        let (status, body) = events_response(5, &refused);
        assert_eq!(status, 400);
        assert!(body.len() < 32 * 1024, "{} bytes", body.len());
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["accepted"], 5);
        assert_eq!(json["rejected"], 10_000);
        assert_eq!(
            json["errors"].as_array().map(Vec::len),
            Some(Refusals::LISTED)
        );
        assert_eq!(json["errors_omitted"], 10_000 - Refusals::LISTED as u64);
        assert_eq!(json["errors"][0]["item"], 1);
    }

    #[test]
    fn echoes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_echo("short"), "short");
        let long = "é".repeat(200);
        let cut = truncate_echo(&long);
        assert!(cut.len() <= MAX_ECHO_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert!(tcp_rejection(3, &"y".repeat(1_000)).len() < 200);
        assert!(error_body(&"z".repeat(1_000), &[]).len() < 200);
    }
}

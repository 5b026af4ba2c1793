//! Any bytes as a gateway request body, under any small limits: parsing never panics, never yields
//! more than `max_items` events, numbers them in increasing order, accepts only events the
//! processor accepts; feeding the same bytes to the line splitter in any chunks gives the same
//! lines; and the answer built from the result is JSON of bounded size whatever was refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamagg::codec::{decode, Format, MAX_SOURCE_BYTES};
use streamagg::ingest::frame::{parse_body, BodyError, BodyLimits, Frame, LineSplitter};
use streamagg::ingest::response::{events_response, tcp_rejection, Refusals, MAX_ECHO_BYTES};
use streamagg::model::TrafficEvent;

/// Every frame of `data` split in chunks of `chunk` bytes, as (number, Some(line) or None if too long).
fn frames(data: &[u8], max: usize, chunk: usize) -> Vec<(u64, Option<Vec<u8>>)> {
    let mut splitter = LineSplitter::new(max);
    let mut out = Vec::new();
    let own = |frame: Frame<'_>| match frame {
        Frame::Line { number, bytes } => (number, Some(bytes.to_vec())),
        Frame::TooLong { number } => (number, None),
    };
    for piece in data.chunks(chunk.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let (taken, frame) = splitter.feed(rest);
            assert!(taken > 0, "the splitter makes progress");
            out.extend(frame.map(own));
            rest = &rest[taken..];
        }
    }
    out.extend(splitter.finish().map(own));
    out
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, body @ ..] = data else {
        return;
    };
    let limits = BodyLimits {
        max_line: 1 + usize::from(*a) * 8,
        max_items: 1 + usize::from(*b % 64),
    };
    let whole = frames(body, limits.max_line, body.len());
    assert_eq!(whole, frames(body, limits.max_line, usize::from(*c)));
    for (_, line) in &whole {
        assert!(line.as_ref().is_none_or(|l| l.len() <= limits.max_line));
    }

    let mut refused = Refusals::default();
    let mut accepted = 0;
    match parse_body(body, limits) {
        Ok(items) => {
            assert!(!items.is_empty() && items.len() <= limits.max_items);
            assert!(items.windows(2).all(|w| w[0].number < w[1].number));
            for item in items {
                match item.event {
                    Ok(event) => {
                        assert!(event.source.len() <= MAX_SOURCE_BYTES);
                        let json = serde_json::to_vec(&event).expect("an event serializes");
                        assert!(decode::<TrafficEvent>(&json, Format::Json).is_ok());
                        accepted += 1;
                    }
                    Err(reason) => {
                        assert!(tcp_rejection(item.number, &reason).len() < 64 + MAX_ECHO_BYTES);
                        refused.push(item.number, &reason);
                    }
                }
            }
        }
        Err(BodyError::TooManyItems { limit }) => assert_eq!(limit, limits.max_items),
        Err(_) => {}
    }
    let (status, answer) = events_response(accepted, &refused);
    assert_eq!(status == 200, refused.is_empty());
    let json: serde_json::Value = serde_json::from_str(&answer).expect("the answer is JSON");
    assert_eq!(json["rejected"].as_u64(), Some(refused.count()));
    assert!(answer.len() < 256 + Refusals::LISTED * (64 + 2 * MAX_ECHO_BYTES));
});

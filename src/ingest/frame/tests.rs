//! Tests of [`super`] (frame).

use super::*;
use crate::ingest::response::{error_body, events_response, tcp_rejection, Refusals};

fn frames(max: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut splitter = LineSplitter::new(max);
    let mut out = Vec::new();
    let show = |frame: Frame<'_>| match frame {
        Frame::Line { number, bytes } => {
            format!("{number}:{}", String::from_utf8_lossy(bytes))
        }
        Frame::TooLong { number } => format!("{number}:TOO LONG"),
    };
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let (taken, frame) = splitter.feed(rest);
            assert!(taken > 0, "feed always makes progress");
            out.extend(frame.map(show));
            rest = &rest[taken..];
        }
    }
    out.extend(splitter.finish().map(show));
    out
}

#[test]
fn lines_are_split_and_bounded() {
    type Case<'a> = (&'a str, usize, &'a [&'a [u8]], &'a [&'a str]);
    let cases: &[Case] = &[
        ("one line", 8, &[b"abc\n"], &["1:abc"]),
        ("two in one chunk", 8, &[b"a\nb\n"], &["1:a", "2:b"]),
        (
            "split across chunks",
            8,
            &[b"ab", b"cd\ne"],
            &["1:abcd", "2:e"],
        ),
        ("crlf", 8, &[b"abc\r\n"], &["1:abc"]),
        ("blank lines count", 8, &[b"\n\nx\n"], &["1:", "2:", "3:x"]),
        ("exactly the limit", 4, &[b"abcd\n"], &["1:abcd"]),
        ("limit with crlf", 4, &[b"abcd\r\n"], &["1:abcd"]),
        ("one over", 4, &[b"abcde\nok\n"], &["1:TOO LONG", "2:ok"]),
        (
            "over across chunks, then recovers",
            4,
            &[b"ab", b"cd", b"ef", b"gh\nok\n"],
            &["1:TOO LONG", "2:ok"],
        ),
        ("unterminated last line", 8, &[b"a\nbc"], &["1:a", "2:bc"]),
        (
            "unterminated and too long",
            2,
            &[b"abcdef"],
            &["1:TOO LONG"],
        ),
        ("nothing", 8, &[b""], &[]),
    ];
    for (name, max, chunks, expected) in cases {
        assert_eq!(frames(*max, chunks), *expected, "{name}");
    }
}

#[test]
fn a_long_line_never_buffers_past_the_limit() {
    let mut splitter = LineSplitter::new(16);
    let chunk = [b'x'; 1000];
    for _ in 0..100 {
        splitter.feed(&chunk);
        assert!(splitter.partial.capacity() <= 1024, "bounded");
    }
    assert!(splitter.partial.is_empty());
}

#[test]
fn events_are_validated_by_the_processors_rules() {
    let ok = TrafficEvent {
        source: "r1".into(),
        timestamp: 1_700_000_000_000,
        value: 2.5,
    };
    let cases: &[(&str, &[u8], Result<TrafficEvent, &str>)] = &[
        (
            "valid",
            br#"{"source":"r1","timestamp":1700000000000,"value":2.5}"#,
            Ok(ok.clone()),
        ),
        (
            "unknown fields ignored",
            br#"{"unit":"x","source":"r1","timestamp":1700000000000,"value":2.5}"#,
            Ok(ok),
        ),
        (
            "missing field",
            br#"{"source":"r1","timestamp":1}"#,
            Err("missing_field"),
        ),
        ("not JSON", b"hello", Err("invalid_json")),
        (
            "invalid utf-8",
            b"{\"source\":\"\xff\"}",
            Err("invalid_utf8"),
        ),
        (
            "empty source",
            br#"{"source":"","timestamp":1,"value":1}"#,
            Err("empty_source"),
        ),
        (
            "non-finite",
            br#"{"source":"s","timestamp":1,"value":1e999}"#,
            Err("invalid_json"),
        ),
        (
            "end of time",
            br#"{"source":"s","timestamp":9223372036854775807,"value":1}"#,
            Err("timestamp_out_of_range"),
        ),
        (
            "start of time",
            br#"{"source":"s","timestamp":-9223372036854775808,"value":1}"#,
            Err("timestamp_out_of_range"),
        ),
    ];
    for (name, line, expected) in cases {
        let got = validate_line(line).map_err(|r| Rejection::LABELS[r.index()]);
        assert_eq!(got, expected.clone(), "{name}");
    }
}

#[test]
fn bodies_are_arrays_or_ndjson() {
    type Summary = (u64, Result<String, &'static str>);
    let e = |s: &str| r#"{"source":"S","timestamp":1,"value":1}"#.replace('S', s);
    let array = format!("  [{}, {}, {{\"source\":\"\"}}]", e("a"), e("b"));
    let ndjson = format!("{}\n\n{}\r\nnope\n{}", e("a"), e("b"), e("c"));
    let summary = |body: &str, max: usize| -> Result<Vec<Summary>, BodyError> {
        let limits = BodyLimits {
            max_line: max,
            max_items: 4,
        };
        Ok(parse_body(body.as_bytes(), limits)?
            .into_iter()
            .map(|i| {
                (
                    i.number,
                    i.event
                        .map(|e| e.source)
                        .map_err(|r| Rejection::LABELS[r.index()]),
                )
            })
            .collect())
    };
    assert_eq!(
        summary(&array, 100),
        Ok(vec![
            (1, Ok("a".into())),
            (2, Ok("b".into())),
            (3, Err("missing_field")),
        ])
    );
    assert_eq!(
        summary(&ndjson, 100),
        Ok(vec![
            (1, Ok("a".into())),
            (3, Ok("b".into())),
            (4, Err("invalid_json")),
            (5, Ok("c".into())),
        ])
    );
    assert_eq!(
        summary(&format!("{}\n{}\n", e("a"), e(&"x".repeat(50))), 45),
        Ok(vec![(1, Ok("a".into())), (2, Err("line_too_long"))])
    );
    assert_eq!(summary("", 100), Err(BodyError::Empty));
    assert_eq!(summary(" \n\n ", 100), Err(BodyError::Empty));
    assert_eq!(summary("[]", 100), Err(BodyError::Empty));
    assert!(matches!(
        summary("[{\"source\":", 100),
        Err(BodyError::InvalidArray(_))
    ));
    // An array element is bounded like a line.
    assert_eq!(
        summary(&format!("[{},{}]", e("a"), e(&"x".repeat(50))), 45),
        Ok(vec![(1, Ok("a".into())), (2, Err("line_too_long"))])
    );
    // More events than the limit refuse the body, blank lines not counted.
    let too_many = Err(BodyError::TooManyItems { limit: 4 });
    assert_eq!(summary("1\n\n1\n1\n1\n1\n", 100), too_many);
    assert_eq!(summary("[1,1,1,1,1]", 100), too_many);
    assert_eq!(summary("1\n1\n\n1\n1\n\n", 100).map(|v| v.len()), Ok(4));
    assert_eq!(summary("[1,1,1,1]", 100).map(|v| v.len()), Ok(4));
}

#[test]
fn responses_say_what_was_refused() {
    assert_eq!(
        events_response(3, &Refusals::default()),
        (200, "{\"accepted\":3,\"rejected\":0}\n".to_owned())
    );
    let mut refused = Refusals::default();
    refused.push(2, &Rejection::EmptySource);
    refused.push(4, &Rejection::LineTooLong { limit: 10 });
    let (status, body) = events_response(1, &refused);
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({"accepted": 1, "rejected": 2, "errors": [
            {"item": 2, "reason": "empty source"},
            {"item": 4, "reason": "line longer than 10 bytes"},
        ]})
    );
    assert_eq!(
        error_body("queue full", &[("delivered", 3)]),
        "{\"delivered\":3,\"error\":\"queue full\"}\n"
    );
    assert_eq!(
        tcp_rejection(7, &Rejection::NonFiniteValue),
        "rejected line 7: non-finite value\n"
    );
}

#[test]
fn tokens_compare_equal_only_when_equal() {
    let cases: &[(&[u8], &[u8], bool)] = &[
        (b"secret", b"secret", true),
        (b"secret", b"secreT", false),
        (b"secret", b"secret2", false),
        (b"secret2", b"secret", false),
        (b"", b"", true),
        (b"", b"x", false),
        (b"\x01", b"\x00\x01", false),
    ];
    for (a, b, equal) in cases {
        assert_eq!(constant_time_eq(a, b), *equal, "{a:?} vs {b:?}");
    }
    let header_cases: &[(Option<&[u8]>, bool)] = &[
        (Some(b"Bearer tok"), true),
        (Some(b"bearer tok"), true),
        (Some(b"Bearer  tok "), true),
        (Some(b"Bearer tok2"), false),
        (Some(b"Basic tok"), false),
        (Some(b"Bearer"), false),
        (Some(b"tok"), false),
        (None, false),
    ];
    for (header, ok) in header_cases {
        assert_eq!(bearer_matches(*header, b"tok"), *ok, "{header:?}");
    }
    let line_cases: &[(&[u8], bool)] = &[
        (b"AUTH tok", true),
        (b"AUTH  tok \r", true),
        (b"AUTH tok2", false),
        (b"auth tok", false),
        (b"AUTH", false),
        (b"AUTHtok", false),
        (b"{\"source\":\"tok\"}", false),
    ];
    for (line, ok) in line_cases {
        assert_eq!(tcp_auth_matches(line, b"tok"), *ok, "{line:?}");
    }
}

#[test]
fn the_largest_request_bound_holds_for_the_costliest_bodies() {
    let n = 10_000;
    let limits = BodyLimits {
        max_line: 65_536,
        max_items: n,
    };
    let long_source = format!(
        "{{\"source\":\"{}\",\"timestamp\":1,\"value\":1}}\n",
        "s".repeat(1_000)
    );
    let bodies = [
        "1\n".repeat(n),
        "\"a string that is no event\"\n".repeat(n),
        "{\"source\":\"a\",\"timestamp\":1,\"value\":1}\n".repeat(n),
        "{\"source\":\"a\"}\n".repeat(n),
        long_source.repeat(50),
        format!("[{}]", vec!["1"; n].join(",")),
    ];
    for body in bodies {
        let items = parse_body(body.as_bytes(), limits).expect("parsed");
        let held = heap_bytes(&items);
        let bound = largest_request_bytes(body.len(), n);
        assert!(held <= bound, "{held} > {bound} for {:.40}", body);
    }
}

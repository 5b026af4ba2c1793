//! Any `Authorization` header and TCP first line against any token: the constant-time checks agree
//! with a plain re-statement of the rules (`Bearer <token>`, scheme in any case; `AUTH <token>`;
//! blanks around the token ignored) and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamagg::ingest::frame::{bearer_matches, constant_time_eq, tcp_auth_matches};

fuzz_target!(|data: &[u8]| {
    // The token is everything before the first NUL, the presented value everything after it.
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (token, presented) = (&data[..split], &data[split + 1..]);
    assert_eq!(constant_time_eq(token, presented), token == presented);

    let bearer = presented.len() >= 7
        && presented[..7].eq_ignore_ascii_case(b"bearer ")
        && presented[7..].trim_ascii() == token;
    assert_eq!(bearer_matches(Some(presented), token), bearer);
    assert!(!bearer_matches(None, token));

    let line = presented.trim_ascii();
    let auth = line.starts_with(b"AUTH ") && line[5..].trim_ascii() == token;
    assert_eq!(tcp_auth_matches(presented, token), auth);
});

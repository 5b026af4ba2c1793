//! Credentials presented by clients, compared with a configured token in constant time: the
//! gateway's and the query endpoint's bearer tokens. Pure.

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

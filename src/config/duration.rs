//! Durations as settings are written (`500ms`, `10s`, `1m`, `1h 30m`): one parser for flags,
//! environment variables and the config file, whose error says what was given and what is expected.

use std::time::Duration;

/// Parses a human-written duration; the error names the text and shows the expected form.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("'{text}' is not a duration like 500ms, 10s or 1m ({e})"))
}

/// Serde (de)serialisation of an optional duration setting written as text.
pub mod optional {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| super::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_what_was_given() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse(" 500ms "), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        let error = parse("soon").unwrap_err();
        assert!(
            error.starts_with("'soon' is not a duration like 500ms"),
            "{error}"
        );
        assert!(parse("10").is_err(), "a bare number has no unit");
    }
}

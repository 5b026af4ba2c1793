//! Parsing where a read starts (`consume --from`): `beginning`, `end`, epoch milliseconds or an
//! RFC 3339 time. Pure.

use super::StartAt;

impl std::str::FromStr for StartAt {
    type Err = String;

    /// `beginning`, `end`, epoch milliseconds, or an RFC 3339 time (`2026-12-04T12:00:00Z`, with
    /// an optional fraction and a `Z` or `±HH:MM` offset).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text {
            "beginning" => return Ok(StartAt::Beginning),
            "end" => return Ok(StartAt::End),
            _ => {}
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(StartAt::Time)
                .map_err(|_| format!("'{text}' is too large for epoch milliseconds"));
        }
        rfc3339_ms(text).map(StartAt::Time).ok_or_else(|| {
            format!(
                "'{text}' is not beginning, end, epoch milliseconds or an RFC 3339 time \
                 (e.g. 2026-12-04T12:00:00Z)"
            )
        })
    }
}

/// Epoch milliseconds of an RFC 3339 time with a `Z` or `±HH:MM` offset.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let (local, offset_minutes) = match text.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0_i64),
        None => {
            let split = text.len().checked_sub(6)?;
            let (local, offset) = (text.get(..split)?, text.get(split..)?);
            let sign = match offset.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = offset.get(1..)?.split_once(':')?;
            let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (local, sign * (hours * 60 + minutes))
        }
    };
    // humantime takes the date and time only in UTC ('Z').
    let utc = humantime::parse_rfc3339_weak(&format!("{local}Z")).ok()?;
    let ms = match utc.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_millis()).ok()?,
    };
    Some(ms - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_points_parse_from_names_epoch_milliseconds_and_rfc3339() {
        // 2026-12-04T12:00:00Z, computed independently: 20,791 days after 1970-01-01, plus 12 h.
        let noon = (20_791 * 86_400 + 12 * 3_600) * 1_000;
        let cases: &[(&str, Option<StartAt>)] = &[
            ("beginning", Some(StartAt::Beginning)),
            ("end", Some(StartAt::End)),
            ("0", Some(StartAt::Time(0))),
            ("1764849600000", Some(StartAt::Time(1_764_849_600_000))),
            ("2026-12-04T12:00:00Z", Some(StartAt::Time(noon))),
            ("2026-12-04T12:00:00.250Z", Some(StartAt::Time(noon + 250))),
            ("2026-12-04T14:30:00+02:30", Some(StartAt::Time(noon))),
            ("2026-12-04T07:00:00-05:00", Some(StartAt::Time(noon))),
            ("2026-12-04 12:00:00Z", Some(StartAt::Time(noon))),
            ("99999999999999999999", None),
            ("-5", None),
            ("yesterday", None),
            ("2026-12-04T12:00:00", None),
            ("2026-12-04T12:00:00+25:00", None),
            ("2026-13-04T12:00:00Z", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<StartAt>().ok(), *expected, "{text}");
        }
    }
}

//! Where a read starts: parsing `consume --from` (`beginning`, `end`, epoch milliseconds or an
//! RFC 3339 time), and the first offset of a partition given that and where an earlier read
//! stopped (`dlq replay`'s progress). Pure.

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

/// The first offset to read of a partition holding `low..high`: `resumed` (where an earlier read
/// stopped) if given, else what `start` names (`at_time`: the broker's answer for
/// [`StartAt::Time`], `None` when no record is that recent). A resumed offset below `low` (records
/// deleted by retention since) starts at `low`; one past `high` was kept for another log (the topic
/// was recreated since), none of whose records were read: it starts at `low` too.
pub(super) fn first_offset(
    start: StartAt,
    low: i64,
    high: i64,
    at_time: Option<i64>,
    resumed: Option<i64>,
) -> i64 {
    let high = high.max(low);
    match (resumed, start) {
        (Some(offset), _) if offset > high => low,
        (Some(offset), _) => offset.max(low),
        (None, StartAt::Beginning) => low,
        (None, StartAt::End) => high,
        (None, StartAt::Time(_)) => at_time.unwrap_or(high).clamp(low, high),
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

    #[test]
    fn a_read_resumes_where_an_earlier_one_stopped_within_what_the_partition_holds() {
        // (start, low, high, at_time, resumed) → first offset
        let cases = [
            (StartAt::Beginning, 5, 20, None, None, 5),
            (StartAt::End, 5, 20, None, None, 20),
            (StartAt::Time(1), 5, 20, Some(12), None, 12),
            (StartAt::Time(1), 5, 20, None, None, 20),
            (StartAt::Time(1), 5, 20, Some(3), None, 5),
            (StartAt::Beginning, 5, 20, None, Some(9), 9),
            (StartAt::Beginning, 5, 20, None, Some(20), 20),
            (StartAt::End, 5, 20, None, Some(9), 9),
            // Deleted by retention since: from the first record still there.
            (StartAt::Beginning, 5, 20, None, Some(2), 5),
            // Past the end: kept for a log that was since recreated; this one is read whole.
            (StartAt::Beginning, 0, 3, None, Some(9), 0),
            (StartAt::End, 2, 3, None, Some(9), 2),
            (StartAt::Beginning, 0, 0, None, None, 0),
        ];
        for (index, (start, low, high, at_time, resumed, expected)) in cases.into_iter().enumerate()
        {
            assert_eq!(
                first_offset(start, low, high, at_time, resumed),
                expected,
                "case {index}"
            );
        }
    }
}

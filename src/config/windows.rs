//! The window settings of `streamagg run` — `--window` (one size, or several from one state:
//! `1m,5m,1h`), `--grace` and `--time-zone` — validated once into the smallest size's
//! [`WindowSpec`] and the larger sizes' [`Rollups`].

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{duration, ConfigError};
use crate::window::zone::{Zone, DAY_MS, HOUR_MS};
use crate::window::{Rollups, WindowSpec, MAX_ROLLUPS};

/// `--window`'s value: one or more durations separated by commas, smallest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSizes(pub Vec<Duration>);

impl std::str::FromStr for WindowSizes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(duration::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(WindowSizes)
    }
}

impl<'de> Deserialize<'de> for WindowSizes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Windows of sizes under an hour stay epoch-aligned; mixed with zoned ones they must divide this,
/// the finest step of any zone's offset today (UTC+05:45, +08:45, +12:45), so they nest.
const ZONE_OFFSET_STEP_MS: i64 = 15 * 60_000;

/// The smallest window and the larger sizes rolled up from it.
pub fn validate(
    sizes: Option<&WindowSizes>,
    grace: Option<Duration>,
    time_zone: Option<&str>,
) -> Result<(WindowSpec, Rollups), ConfigError> {
    let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
    let sizes = match sizes {
        Some(WindowSizes(sizes)) => sizes.clone(),
        None => vec![Duration::from_secs(60)],
    };
    let mut millis = Vec::with_capacity(sizes.len());
    for size in &sizes {
        let ms = super::millis("window", *size)?;
        if ms <= 0 {
            return Err(invalid("window", "must be at least 1ms".into()));
        }
        millis.push(ms);
    }
    if millis.len() > MAX_ROLLUPS + 1 {
        return Err(invalid(
            "window",
            format!("names {} sizes; at most {}", millis.len(), MAX_ROLLUPS + 1),
        ));
    }
    for pair in millis.windows(2) {
        if pair[1] <= pair[0] || pair[1] % pair[0] != 0 {
            return Err(invalid(
                "window",
                format!(
                    "{} is not a multiple of {} larger than it: list sizes smallest first, each dividing the next (like 1m,5m,1h)",
                    show(pair[1]),
                    show(pair[0])
                ),
            ));
        }
    }
    let grace_ms = super::millis("grace", grace.unwrap_or(Duration::from_secs(10)))?;
    let zone = match time_zone {
        None => None,
        Some(name) => {
            let zone = Zone::named(name).map_err(|reason| invalid("time_zone", reason))?;
            for &ms in &millis {
                if ms >= HOUR_MS && DAY_MS % ms != 0 {
                    return Err(invalid(
                        "window",
                        format!("{} does not divide a day: with --time-zone, windows of an hour or more must (1h, 2h, 3h, 4h, 6h, 8h, 12h or 1d)", show(ms)),
                    ));
                }
            }
            if millis[millis.len() - 1] >= HOUR_MS {
                if let Some(&ms) = millis
                    .iter()
                    .find(|&&ms| ms < HOUR_MS && ZONE_OFFSET_STEP_MS % ms != 0)
                {
                    return Err(invalid(
                        "window",
                        format!("{} does not divide 15m: under an hour, windows stay aligned to UTC, and to roll up into windows aligned to {name} they must (1m, 5m or 15m, for example)", show(ms)),
                    ));
                }
            }
            Some(zone)
        }
    };
    let base = WindowSpec {
        size_ms: millis[0],
        grace_ms,
        zone,
    };
    let rollups =
        Rollups::new(&millis[1..]).ok_or_else(|| invalid("window", "too many sizes".into()))?;
    Ok((base, rollups))
}

fn show(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(text: &str) -> WindowSizes {
        text.parse().expect("durations")
    }

    #[test]
    fn one_size_or_several_each_dividing_the_next() {
        let (base, rollups) = validate(Some(&sizes("1m,5m,1h")), None, None).expect("valid");
        assert_eq!(base, WindowSpec::epoch(60_000, 10_000));
        assert_eq!(rollups.sizes(), &[300_000, 3_600_000]);
        let (base, rollups) = validate(None, Some(Duration::from_secs(3)), None).expect("valid");
        assert_eq!(base, WindowSpec::epoch(60_000, 3_000));
        assert!(rollups.is_empty());
        let table: &[(&str, &str)] = &[
            ("5m,1m", "1m is not a multiple of 5m"),
            ("1m,90s", "1m 30s is not a multiple of 1m"),
            ("1m,1m", "1m is not a multiple of 1m larger"),
            ("1s,2s,4s,8s,16s,32s", "names 6 sizes; at most 5"),
            ("0s", "at least 1ms"),
        ];
        for (text, expected) in table {
            let error = validate(Some(&sizes(text)), None, None)
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!("1m,soon".parse::<WindowSizes>().is_err());
    }

    #[test]
    fn a_time_zone_needs_sizes_that_nest_in_its_days() {
        let (base, rollups) =
            validate(Some(&sizes("1m,1h,1d")), None, Some("Asia/Kathmandu")).expect("valid");
        assert_eq!(base.zone.map(Zone::name), Some("Asia/Kathmandu"));
        assert_eq!(rollups.sizes(), &[3_600_000, 86_400_000]);
        let table: &[(&str, &str, &str)] = &[
            ("1m,7d", "Europe/Berlin", "7days does not divide a day"),
            ("1h,5h", "Europe/Berlin", "5h does not divide a day"),
            ("30m,1h", "Asia/Kathmandu", "30m does not divide 15m"),
            ("1m", "Mars/Olympus", "'Mars/Olympus' is not a time zone"),
        ];
        for (text, zone, expected) in table {
            let error = validate(Some(&sizes(text)), None, Some(zone))
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text} {zone}: {error}");
        }
        // Under an hour alone, a zone changes nothing and any size goes.
        assert!(validate(Some(&sizes("7m")), None, Some("Europe/Berlin")).is_ok());
    }
}

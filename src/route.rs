//! The per-record decision, pure: decode → event time → threshold filter → window, and where the
//! record goes. The processor does what the [`Route`] says (count, forward to the late topic or
//! the DLQ); nothing here does I/O.

use serde::Deserialize;

use crate::codec::{decode_event, DecodeError, EventView, Format};
use crate::window::{Observed, PartitionWindows};

/// What one input record became.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Added to its source's open window.
    Aggregated,
    /// Below `min_value`: dropped before aggregation.
    Filtered,
    /// Its (smallest) window had already closed on this partition: to the late topic. With
    /// `rolled_up`, a larger window size still took it.
    Late { window_start: i64, rolled_up: bool },
    /// Not a valid event (the reason becomes the DLQ header): to the DLQ.
    Invalid(String),
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EventTime {
    /// The record's `timestamp` field.
    Field,
    /// The Kafka record timestamp (CreateTime or LogAppendTime).
    Kafka,
}

/// The settings the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteSettings {
    pub input_format: Format,
    pub event_time: EventTime,
    pub min_value: Option<f64>,
}

/// Decides one record at input `offset` (its payload and its Kafka timestamp, if any), observing
/// it in `windows` when it is aggregated. Filtered, late and invalid records change nothing.
pub fn route(
    settings: &RouteSettings,
    windows: &mut PartitionWindows,
    payload: &[u8],
    kafka_timestamp: Option<i64>,
    offset: i64,
) -> Route {
    let event = decode_event(payload, settings.input_format);
    route_event(settings, windows, event, kafka_timestamp, offset)
}

/// [`route`] of a record the caller decoded (the processor's decoder resolves writer schemas).
pub fn route_event(
    settings: &RouteSettings,
    windows: &mut PartitionWindows,
    event: Result<EventView<'_>, DecodeError>,
    kafka_timestamp: Option<i64>,
    offset: i64,
) -> Route {
    let event = match event {
        Ok(event) => event,
        Err(error) => return Route::Invalid(error.to_string()),
    };
    let timestamp = match settings.event_time {
        EventTime::Field => event.timestamp,
        EventTime::Kafka => match kafka_timestamp {
            Some(timestamp) => timestamp,
            None => return Route::Invalid("record has no Kafka timestamp".to_owned()),
        },
    };
    if settings.min_value.is_some_and(|min| event.value < min) {
        return Route::Filtered;
    }
    match windows.observe(&event.source, timestamp, event.value, offset) {
        Observed::Aggregated => Route::Aggregated,
        Observed::Late {
            window_start,
            rolled_up,
        } => Route::Late {
            window_start,
            rolled_up,
        },
        Observed::OutOfRange => Route::Invalid("timestamp out of range".to_owned()),
        Observed::NotNested => Route::Invalid(
            "timestamp out of range: its windows of different sizes do not nest in the time zone at that time"
                .to_owned(),
        ),
        Observed::ValueOutOfRange => Route::Invalid(
            "value out of range: its window's sum would not be a finite number".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowSpec;

    const MINUTE: i64 = 60_000;

    fn json(source: &str, timestamp: i64, value: f64) -> Vec<u8> {
        format!(r#"{{"source":"{source}","timestamp":{timestamp},"value":{value}}}"#).into_bytes()
    }

    fn settings(event_time: EventTime, min_value: Option<f64>) -> RouteSettings {
        RouteSettings {
            input_format: Format::Json,
            event_time,
            min_value,
        }
    }

    /// Windows of one minute, no grace, whose stream time is already at 10 minutes.
    fn windows_at_ten_minutes() -> PartitionWindows {
        let mut windows = PartitionWindows::new(WindowSpec::epoch(MINUTE, 0));
        windows.observe("earlier", 10 * MINUTE, 1.0, 0);
        windows
    }

    /// A case: name, settings, payload, Kafka timestamp, expected route.
    type Case = (&'static str, RouteSettings, Vec<u8>, Option<i64>, Route);

    #[test]
    fn each_kind_of_record_takes_its_route() {
        let field = settings(EventTime::Field, None);
        let kafka = settings(EventTime::Kafka, None);
        let filtered = settings(EventTime::Field, Some(5.0));
        let cases: Vec<Case> = vec![
            (
                "on time",
                field,
                json("a", 10 * MINUTE + 1, 3.0),
                None,
                Route::Aggregated,
            ),
            (
                "late",
                field,
                json("a", 2 * MINUTE + 5, 3.0),
                None,
                Route::Late {
                    window_start: 2 * MINUTE,
                    rolled_up: false,
                },
            ),
            (
                "below the threshold",
                filtered,
                json("a", 10 * MINUTE, 4.0),
                None,
                Route::Filtered,
            ),
            (
                "at the threshold",
                filtered,
                json("a", 10 * MINUTE, 5.0),
                None,
                Route::Aggregated,
            ),
            (
                "late but filtered first",
                filtered,
                json("a", MINUTE, 1.0),
                None,
                Route::Filtered,
            ),
            (
                "not JSON",
                field,
                b"{".to_vec(),
                None,
                Route::Invalid(String::new()),
            ),
            (
                "empty source",
                field,
                json("", 10 * MINUTE, 1.0),
                None,
                Route::Invalid(String::new()),
            ),
            (
                "Kafka time",
                kafka,
                json("a", 0, 1.0),
                Some(10 * MINUTE + 2),
                Route::Aggregated,
            ),
            (
                "Kafka time, late",
                kafka,
                json("a", 10 * MINUTE, 1.0),
                Some(MINUTE),
                Route::Late {
                    window_start: MINUTE,
                    rolled_up: false,
                },
            ),
            (
                "no Kafka timestamp",
                kafka,
                json("a", 10 * MINUTE, 1.0),
                None,
                Route::Invalid("record has no Kafka timestamp".to_owned()),
            ),
            (
                "the ends of time",
                field,
                json("a", i64::MIN + 1, 1.0),
                None,
                Route::Invalid("timestamp out of range".to_owned()),
            ),
            (
                "a sum that overflows",
                field,
                json("a", 10 * MINUTE, f64::MAX),
                None,
                Route::Aggregated,
            ),
        ];
        for (name, settings, payload, kafka_timestamp, expected) in cases {
            let mut windows = windows_at_ten_minutes();
            let got = route(&settings, &mut windows, &payload, kafka_timestamp, 7);
            match (&expected, &got) {
                // Decoding's own reasons are the codec's to word; here only the route matters.
                (Route::Invalid(want), Route::Invalid(reason)) if want.is_empty() => {
                    assert!(!reason.is_empty(), "{name}")
                }
                _ => assert_eq!(got, expected, "{name}"),
            }
        }
    }

    #[test]
    fn only_aggregated_records_change_the_windows() {
        let settings = settings(EventTime::Field, Some(5.0));
        for (payload, changes) in [
            (json("a", 10 * MINUTE + 1, 6.0), true),
            (json("a", 11 * MINUTE, 1.0), false), // filtered: stream time stays
            (json("a", MINUTE, 6.0), false),      // late
            (b"nope".to_vec(), false),            // invalid
        ] {
            let mut windows = windows_at_ten_minutes();
            let before = windows.clone();
            route(&settings, &mut windows, &payload, None, 7);
            assert_eq!(
                windows != before,
                changes,
                "{}",
                String::from_utf8_lossy(&payload)
            );
        }
    }

    #[test]
    fn a_value_that_would_overflow_its_window_is_invalid() {
        let settings = settings(EventTime::Field, None);
        let mut windows = windows_at_ten_minutes();
        let payload = json("a", 10 * MINUTE, f64::MAX);
        assert_eq!(
            route(&settings, &mut windows, &payload, None, 1),
            Route::Aggregated
        );
        let Route::Invalid(reason) = route(&settings, &mut windows, &payload, None, 2) else {
            panic!("a second f64::MAX in the same window must be refused");
        };
        assert!(reason.starts_with("value out of range"), "{reason}");
    }
}

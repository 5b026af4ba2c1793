//! Any bytes as a JSON `TrafficEvent` / `TrafficAverage`: decoding never panics, and whatever it
//! accepts survives a round trip through the encoder unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamagg::codec::{decode, encode_to_vec, Format, WireRecord};
use streamagg::model::{TrafficAverage, TrafficEvent};

fn round_trips<R: WireRecord + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(record) = decode::<R>(data, Format::Json) {
        let encoded = encode_to_vec(&record, Format::Json);
        // JSON has no NaN or infinity: a record holding one is written as null and refused on the
        // way back, which is the documented behaviour for the output record; events never hold one.
        match decode::<R>(&encoded, Format::Json) {
            Ok(again) => assert_eq!(again, record, "JSON round trip changed the record"),
            Err(error) => assert!(
                std::str::from_utf8(&encoded).is_ok_and(|text| text.contains("null")),
                "re-encoded record refused: {error}"
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trips::<TrafficEvent>(data);
    round_trips::<TrafficAverage>(data);
});

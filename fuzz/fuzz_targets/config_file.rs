//! Any text as a `streamagg run` TOML config file: parsing and validation never panic, and every
//! refusal is one line (what the binary prints before exiting non-zero).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamagg::config::{RunOptions, RunSettings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let outcome = RunOptions::from_toml("fuzz.toml", text).and_then(RunSettings::try_from);
    if let Err(error) = outcome {
        let message = error.to_string();
        assert!(!message.contains('\n'), "multi-line error: {message:?}");
    }
});

//! Any text as a group commit's metadata (anyone allowed to commit for the group can write it):
//! parsing never panics, and whatever it accepts is written back by `encode` in a form that parses
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamagg::checkpoint::CommitMetadata;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(metadata) = CommitMetadata::parse(text) {
        let again = CommitMetadata::parse(&metadata.encode());
        assert_eq!(again, Some(metadata), "{text:?} does not round-trip");
    }
});

//! Export decoding never panics, whatever the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = arbiter_events::fuzzing::read_export(data);
});

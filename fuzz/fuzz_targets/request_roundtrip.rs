#![no_main]
//! See `ringway_fuzz::request_roundtrip` (fuzz/src/lib.rs) for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::request_roundtrip(data));

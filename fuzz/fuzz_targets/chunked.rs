#![no_main]
//! See `ringway_fuzz::chunked` (fuzz/src/lib.rs) for what this target checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringway_fuzz::chunked(data));

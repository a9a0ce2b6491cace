#![no_main]
//! See `ringway_fuzz::config` (fuzz/src/lib.rs) for what this target checks.
//!
//! `Config::parse` resolves `host:port` server and listen addresses with `getaddrinfo`
//! (std's `ToSocketAddrs`). Fuzzed names must not become DNS queries from this machine,
//! so this binary defines `getaddrinfo` itself: the linker takes the executable's own
//! definition over libc's, and every name fails to resolve (`EAI_NONAME`), as it would
//! on a host without DNS. Literal addresses (`127.0.0.1:9001`, `[::1]:80`) never reach
//! it: `resolve` parses those first.

use std::os::raw::{c_char, c_int, c_void};

/// Calls made to the stub, so a test run can show it is the one linked.
pub static STUB_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[no_mangle]
pub extern "C" fn getaddrinfo(
    _node: *const c_char,
    _service: *const c_char,
    _hints: *const c_void,
    res: *mut *mut c_void,
) -> c_int {
    STUB_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !res.is_null() {
        // SAFETY: the caller passes a valid out-pointer.
        unsafe { *res = std::ptr::null_mut() };
    }
    const EAI_NONAME: c_int = -2;
    EAI_NONAME
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringway_fuzz::config(data);
    if std::env::var_os("RINGWAY_FUZZ_SHOW_STUB").is_some() {
        eprintln!(
            "getaddrinfo stub calls so far: {}",
            STUB_CALLS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
});

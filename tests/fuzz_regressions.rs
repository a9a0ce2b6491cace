//! Inputs from fuzzing (fuzz/, run with `cargo +nightly fuzz`; see fuzz/README.md), fed on
//! stable to the very checks the fuzz targets run: fuzz/src/lib.rs is included here as
//! a module. Seeds show the checks hold for realistic traffic; the inputs the fuzzers
//! found stay here as byte literals, so each finding keeps being tested once fixed.
//!
//! A bug fuzzing finds that is not fixed yet gets a test marked `#[ignore = "bug: ..."]`
//! (`cargo test --test fuzz_regressions -- --ignored` shows it failing); the `ignore`
//! goes with the fix. The two below were fixed in 5e81d20.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use ringway::http::request::{self, Limits};
use ringway::http::rewrite::{write_upstream_request, Forward, Peer};
use ringway::http::MAX_HEADER_SLOTS;
use std::mem::MaybeUninit;

const LIMITS: Limits = checks::LIMITS;

// --- Seeds (fuzz/corpus/*/seed-*) -------------------------------------------------------

const BROWSER_GET: &[u8] = b"GET /products/8841/reviews?sort=recent&page=2 HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive\r\nsec-ch-ua-mobile: ?0\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nSec-Fetch-Mode: navigate\r\nReferer: https://shop.example.com/products/8841\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nCookie: _ga=GA1.2.1873926520.1712345678; session_id=7f3c9a1e5b2d; tz=Europe%2FBerlin\r\n\r\n";

const CHUNKED_POST: &[u8] = b"POST /api/upload?id=7 HTTP/1.1\r\nHost: api.example.com:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nX-Forwarded-For: 198.51.100.2\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

const REQUEST_SEEDS: &[&[u8]] = &[
    BROWSER_GET,
    CHUNKED_POST,
    b"PUT /a/../b/%7Euser//x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nForwarded: for=192.0.2.60;proto=http\r\nVia: 1.0 fred\r\n\r\nhello world",
    b"GET http://Example.COM:8080?q=1 HTTP/1.1\r\nHost: other\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n",
    b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: Wget/1.21\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nIf-None-Match: \"x\"\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
];

const RESPONSE_SEEDS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 01 May 2024 09:14:07 GMT\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 18342\r\nConnection: keep-alive\r\nVary: Accept-Encoding\r\nETag: \"66320b1f-47a6\"\r\n\r\n<html>",
    b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Wed, 01 May 2024 09:14:07 GMT\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\nTrailer: X-Sum\r\n\r\n7\r\n{\"a\":1}\r\n0\r\nX-Sum: 9\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nContent-Length: 1234\r\nCache-Control: max-age=60\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x\r\nX: y\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
];

/// `chunked` inputs: a cut count, that many u16 LE cut points, then the body.
const CHUNKED_SEEDS: &[&[u8]] = &[
    b"\x00\x35;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
    b"\x03\x03\x00\x0e\x00\x1e\x005;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
    b"\x02\x01\x00\x28\x001a\r\nabcdefghijklmnopqrstuvwxyz\r\n10;ext=\"q\"\t\r\n0123456789ABCDEF\r\n0\r\n\r\n",
    b"\x01\x05\x00ffffffffffffffff\r\nab",
];

#[test]
fn request_seeds_pass_the_head_and_roundtrip_checks() {
    for seed in REQUEST_SEEDS {
        checks::request_head(seed);
        checks::request_roundtrip(seed);
    }
}

#[test]
fn response_seeds_pass_the_response_checks() {
    for seed in RESPONSE_SEEDS {
        checks::response_head(seed);
    }
}

#[test]
fn chunked_seeds_pass_the_decoder_checks() {
    for seed in CHUNKED_SEEDS {
        checks::chunked(seed);
    }
}

#[test]
fn the_shipped_config_passes_the_config_check() {
    checks::config(include_bytes!("../config.toml"));
}

// --- Found by fuzzing -------------------------------------------------------------------

fn parse_survives(raw: &[u8]) -> Result<String, String> {
    std::panic::catch_unwind(|| {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
        format!(
            "{:?}",
            request::parse(raw, &mut slots, &LIMITS).map(|r| r.map(|r| r.path))
        )
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic".into())
    })
}

/// request_roundtrip, 30 s in (fixed in 5e81d20): a target that starts with neither `/`
/// nor `*` and has a multi-byte UTF-8 character across byte 7 (or 8) made
/// `split_target` slice `raw[..7]` (`raw[..8]`) off a char boundary
/// (src/http/request.rs:329 at eba537b). One such request, no Host needed, panicked
/// the worker, and a worker panic exits the process with status 70: checked against
/// `ringway run`, the next connection was refused.
#[test]
fn a_non_ascii_request_target_is_refused_without_panicking() {
    for raw in [
        // Smallest form.
        &b"GET \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 HTTP/1.1\r\n\r\n"[..],
        // As the fuzzer found it.
        b"GLT http:/\xd3\xbaxax-forwarded-rootp HTTP/1.1\r\n\r\n",
        // Byte 8, in the `https://` comparison.
        b"GET https:/\xc3\xa9 HTTP/1.0\r\n\r\n",
        b"GET abcdefg\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        checks::request_head(raw);
        checks::request_roundtrip(raw);
        let got = parse_survives(raw);
        assert!(
            got.as_ref().is_ok_and(|r| r.starts_with("Err(")),
            "{:?}: {got:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// request_roundtrip, from the HTTP/1.0 seed (fixed in 5e81d20): a request without
/// Host (HTTP/1.0 allows it) is forwarded as HTTP/1.1 with `Host: ` (empty, as RFC 9112
/// §3.2 says a client must send when the target has no authority), and
/// `request::parse` refused exactly that head: 400 "invalid Host" (`validate`,
/// src/http/request.rs:259 at eba537b). So a ringway behind another ringway answered
/// such clients 400. RFC 9112 §3.2 has a server refuse a missing or repeated Host, or an
/// invalid value; an empty one is valid (reg-name may be empty).
#[test]
fn an_http10_request_without_host_is_forwarded_with_a_head_the_proxy_accepts() {
    let raw =
        b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: Wget/1.21\r\n\r\n";
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
    let req = request::parse(raw, &mut slots, &LIMITS).unwrap().unwrap();
    let fwd = Forward {
        scheme: "http",
        path: [req.path.as_bytes(), b"", b""],
        query: req.query.as_bytes(),
        edits: None,
        request_id: None,
        strip_conditionals: false,
        upgrade: None,
    };
    let mut out = Vec::new();
    let peer = Peer::new("203.0.113.7:51234".parse().unwrap());
    write_upstream_request(&mut out, &req, &peer, req.body, &fwd);
    assert!(out.starts_with(b"GET /index.html HTTP/1.1\r\nUser-Agent: Wget/1.21\r\nHost: \r\n"));
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
    let again = request::parse(&out, &mut slots, &LIMITS);
    assert!(
        matches!(again, Ok(Some(_))),
        "{again:?} for {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// request_head, 10 s in: a path whose normal form keeps an escape (`%8E` is not an
/// unreserved character) is "not normal" for the quick scan, so normalizing it again
/// rewrites it, byte for byte the same. Not a bug: the checks compare the bytes.
#[test]
fn a_normal_path_that_keeps_an_escape_is_a_fixed_point() {
    let raw = b"PUT /a/../b/%8Euser//x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\nhello world";
    checks::request_head(raw);
    checks::request_roundtrip(raw);
    let mut out = Vec::new();
    assert_eq!(
        ringway::http::path::normalize("/b/%8Euser/x", &mut out),
        Ok(true)
    );
    assert_eq!(out, b"/b/%8Euser/x");
}

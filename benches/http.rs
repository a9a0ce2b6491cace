//! Decides whether the per-request head work (parse, rewrite, serialize) deserves more
//! optimisation: compare these times with the ~15 µs of CPU per proxied request the
//! loadtest measured (README, "Performance"); if they are a small share, look elsewhere.
//!
//! Fixtures are what a browser and a typical origin send: a Chrome navigation with a
//! ~600-byte Cookie, and an nginx-like 200 with cache headers. Everything runs on one
//! thread, exactly as the proxy's `prepare` / `prepare_response` do: header slots on the
//! stack, output written into one reused `Vec`.

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use ringway::http::path;
use ringway::http::request::{self, Limits, Request};
use ringway::http::response;
use ringway::http::rewrite::{
    write_client_response, write_upstream_request, ClientHead, Forward, Peer,
};
use ringway::http::{Framing, Version, MAX_HEADER_SLOTS};
use std::mem::MaybeUninit;

mod fixtures;
use fixtures::{BROWSER_REQUEST, ORIGIN_RESPONSE};

fn main() {
    check_fixtures();
    divan::main();
}

/// The `[server]` defaults, as the proxy uses them.
const LIMITS: Limits = Limits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
    max_request_line: 8 * 1024,
};

fn peer() -> Peer {
    Peer::new("203.0.113.7:51234".parse().unwrap())
}

/// What the proxy's `prepare` does after parsing, for a route with no prefix rewrite
/// and no header edits: normalize the path (a scan: the fixture's path is already
/// normal), then write the upstream head.
fn rewrite(out: &mut Vec<u8>, normalized: &mut Vec<u8>, req: &Request<'_, '_>, peer: &Peer) {
    let path = match path::normalize(req.path, normalized) {
        Ok(false) => req.path.as_bytes(),
        Ok(true) => normalized.as_slice(),
        Err(_) => unreachable!("the fixture's path is valid"),
    };
    let fwd = Forward {
        upgrade: None,
        scheme: "http",
        path: [path, b"", b""],
        query: req.query.as_bytes(),
        edits: None,
        request_id: None,
        strip_conditionals: false,
    };
    out.clear();
    write_upstream_request(out, req, peer, req.body, &fwd);
}

/// `request::parse` alone: httparse plus the framing, Host and target checks.
#[divan::bench]
fn request_parse(bencher: Bencher) {
    bencher
        .counter(BytesCount::of_slice(BROWSER_REQUEST))
        .bench_local(|| {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
            let req = request::parse(black_box(BROWSER_REQUEST), &mut slots, &LIMITS)
                .unwrap()
                .unwrap();
            black_box(req.head_len)
        });
}

/// Parse, normalize the path, then write the upstream head (hop-by-hop dropped,
/// forwarding headers added) into a reused buffer: the client-side head work of a
/// request, routing aside (see the `route` bench).
#[divan::bench]
fn request_parse_and_rewrite(bencher: Bencher) {
    let peer = peer();
    let mut out = Vec::with_capacity(4096);
    let mut normalized = Vec::new();
    bencher
        .counter(BytesCount::of_slice(BROWSER_REQUEST))
        .bench_local(|| {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
            let req = request::parse(black_box(BROWSER_REQUEST), &mut slots, &LIMITS)
                .unwrap()
                .unwrap();
            rewrite(&mut out, &mut normalized, &req, &peer);
            black_box(out.len())
        });
}

/// Parse the origin's response head and write the client's head into a reused buffer.
#[divan::bench]
fn response_parse_and_rewrite(bencher: Bencher) {
    let mut out = Vec::with_capacity(4096);
    bencher
        .counter(BytesCount::of_slice(ORIGIN_RESPONSE))
        .bench_local(|| {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
            let resp = response::parse(black_box(ORIGIN_RESPONSE), &mut slots, false)
                .unwrap()
                .unwrap();
            out.clear();
            let head = ClientHead {
                upgrade: None,
                body: resp.body,
                version: Version::Http11,
                close: false,
                edits: None,
                date: b"Sun, 06 Nov 1994 08:49:37 GMT",
                x_cache: None,
            };
            write_client_response(&mut out, &resp, &head);
            black_box(out.len())
        });
}

/// Checks the fixtures once before any bench, so none measures an error path.
fn check_fixtures() {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
    let req = request::parse(BROWSER_REQUEST, &mut slots, &LIMITS)
        .unwrap()
        .unwrap();
    assert_eq!(req.head_len, BROWSER_REQUEST.len());
    assert_eq!(req.headers.len(), 16);
    assert_eq!(req.host, "shop.example.com");
    let cookie = req.headers.iter().find(|h| h.name == "Cookie").unwrap();
    assert!(
        (550..700).contains(&cookie.value.len()),
        "{}",
        cookie.value.len()
    );
    let (mut out, mut normalized) = (Vec::new(), Vec::new());
    rewrite(&mut out, &mut normalized, &req, &peer());
    assert!(out.starts_with(b"GET /products/8841/reviews?sort=recent&page=2 HTTP/1.1\r\n"));
    assert!(
        normalized.is_empty(),
        "the fixture's path needed normalizing"
    );
    assert!(out.ends_with(b"Via: 1.1 ringway\r\n\r\n"));
    assert!(!out.windows(11).any(|w| w == b"Connection:"));

    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
    let resp = response::parse(ORIGIN_RESPONSE, &mut slots, false)
        .unwrap()
        .unwrap();
    assert_eq!(
        (resp.status, resp.body, resp.head_len),
        (200, Framing::Length(18342), ORIGIN_RESPONSE.len())
    );
}

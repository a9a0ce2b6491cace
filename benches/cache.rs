//! Decides whether a cache hit's lookup is cheap enough to beat nginx's `proxy_cache`
//! per core, and stays so as the cache grows: building the key from a browser-like
//! request, reading its directives, finding the entry in a worker's index (with a
//! `Vary: Accept-Encoding` check), and judging its freshness should cost well under a
//! microsecond, the same with 100 or 100,000 entries.
//!
//! Each index holds N entries `/static/asset{i}.js` (a few hundred bytes each); the
//! request asks for the last one inserted.

use divan::{black_box, Bencher};
use ringway::cache::entry::{Freshness, Stored, VaryField};
use ringway::cache::index::Index;
use ringway::cache::request::{self, KeyInput};
use ringway::config::KeyPart;
use std::mem::MaybeUninit;
use std::sync::Arc;

fn main() {
    divan::main();
}

/// Entry counts: a small site, a busy one, a large cache.
const ENTRIES: &[usize] = &[100, 10_000, 100_000];

/// The default key: method, host, path, query.
const KEY: [KeyPart; 4] = [
    KeyPart::Method,
    KeyPart::Host,
    KeyPart::Path,
    KeyPart::Query,
];

/// A browser-like request for `/static/asset{n}.js`.
fn raw_request(n: usize) -> Vec<u8> {
    format!(
        "GET /static/asset{n}.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
         Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
         Referer: https://www.example.com/\r\n\
         Cookie: session=0123456789abcdef0123456789abcdef; theme=dark; consent=yes\r\n\r\n"
    )
    .into_bytes()
}

/// An index of `n` entries, stored as a worker stores them.
fn index(n: usize) -> Index {
    let ix = Index::default();
    let mut scratch = Vec::new();
    for i in 0..n {
        let raw = raw_request(i);
        let mut slots = [const { MaybeUninit::uninit() }; 32];
        let mut req = httparse::Request::new(&mut []);
        req.parse_with_uninit_headers(&raw, &mut slots)
            .expect("the fixture parses");
        let built = request::build(
            &KEY,
            &KeyInput {
                method: "GET",
                host: "www.example.com",
                path: &format!("/static/asset{i}.js"),
                query: "v=3",
                headers: req.headers,
            },
            &mut scratch,
        );
        let (key, host, target) = built.parts(&scratch);
        ix.insert(Arc::new(Stored {
            id: i as u64,
            hash: built.hash,
            key: key.into(),
            host: host.into(),
            target: target.into(),
            vary: vec![VaryField {
                name: "accept-encoding".into(),
                value: request::joined(&raw, "accept-encoding"),
            }]
            .into_boxed_slice(),
            status: 200,
            head: b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\nCache-Control: max-age=3600\r\nETag: \"abc\"\r\nDate: Wed, 02 Dec 2026 10:00:00 GMT\r\n"[..].into(),
            body: bytes::Bytes::from_static(&[b'x'; 300]),
            etag: Some(b"\"abc\""[..].into()),
            last_modified: None,
            last_modified_raw: None,
            freshness: Freshness {
                response_time: 1_800_000_000,
                lifetime: 3600,
                ..Freshness::default()
            },
            shared_with_auth: false,
        }));
    }
    ix
}

/// Key, directives, lookup with the Vary check, freshness: a hit without the I/O.
#[divan::bench(args = ENTRIES)]
fn hit(bencher: Bencher, n: usize) {
    let ix = index(n);
    let raw = raw_request(n - 1);
    let path = format!("/static/asset{}.js", n - 1);
    let mut scratch = Vec::with_capacity(256);
    let mut slots = [const { MaybeUninit::uninit() }; 32];
    let mut req = httparse::Request::new(&mut []);
    req.parse_with_uninit_headers(&raw, &mut slots)
        .expect("the fixture parses");
    let headers = req.headers;
    bencher.bench_local(|| {
        let facts = request::facts(headers);
        let built = request::build(
            &KEY,
            &KeyInput {
                method: "GET",
                host: "www.example.com",
                path: &path,
                query: "v=3",
                headers,
            },
            &mut scratch,
        );
        let (key, _, _) = built.parts(&scratch);
        let slot = ix
            .lookup(built.hash, key, |s| request::vary_matches(&raw, &s.vary))
            .expect("the entry is there");
        black_box(
            slot.stored
                .freshness
                .judge(&facts.directives, 1_800_000_100),
        )
    });
}

/// A miss: the same work, for a key that is not there.
#[divan::bench(args = ENTRIES)]
fn miss(bencher: Bencher, n: usize) {
    let ix = index(n);
    let raw = raw_request(n + 1);
    let path = format!("/static/asset{}.js", n + 1);
    let mut scratch = Vec::with_capacity(256);
    let mut slots = [const { MaybeUninit::uninit() }; 32];
    let mut req = httparse::Request::new(&mut []);
    req.parse_with_uninit_headers(&raw, &mut slots)
        .expect("the fixture parses");
    let headers = req.headers;
    bencher.bench_local(|| {
        let built = request::build(
            &KEY,
            &KeyInput {
                method: "GET",
                host: "www.example.com",
                path: &path,
                query: "v=3",
                headers,
            },
            &mut scratch,
        );
        let (key, _, _) = built.parts(&scratch);
        black_box(
            ix.lookup(built.hash, key, |s| request::vary_matches(&raw, &s.vary))
                .is_none(),
        )
    });
}

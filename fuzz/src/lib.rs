//! The checks the fuzz targets run, one function per target.
//!
//! Kept apart from the libFuzzer entry points so the same code runs on stable:
//! `tests/fuzz_regressions.rs` includes this file with `#[path]` and feeds it the inputs
//! the fuzzers found. It uses only `ringway`'s public API and `httparse`, both of which
//! are dependencies of the root package too.
//!
//! Every check panics (an `assert!`) on a property violation; an input the code under
//! test rejects with an error is fine, as long as rejecting it does not panic.

use ringway::config::Config;
use ringway::http::chunked::{write_chunk_header, ChunkedDecoder, Step, LAST_CHUNK};
use ringway::http::edits::{HeaderEdits, Template};
use ringway::http::request::{self, Limits, Request};
use ringway::http::response::{self, Response, MAX_RESPONSE_HEAD};
use ringway::http::rewrite::{
    write_client_response, write_interim_response, write_upstream_request, ClientHead, Edits,
    Forward, Peer, Vars, VIA,
};
use ringway::http::{
    is_hop_by_hop, listed_in_connection, path, strip_port, trim, Framing, Version, MAX_HEADER_SLOTS,
};
use std::mem::MaybeUninit;

/// The `[server]` defaults, as the proxy parses client heads with them.
pub const LIMITS: Limits = Limits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
    max_request_line: 8 * 1024,
};

/// Limits for re-parsing what the proxy wrote: the forwarding headers it adds may take
/// a head that fit the client limits past them, which is not what is being tested.
const WIDE: Limits = Limits {
    max_header_bytes: 1 << 20,
    max_headers: MAX_HEADER_SLOTS,
    max_request_line: 1 << 20,
};

/// The `Date` value handed to `write_client_response`.
const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

/// FNV-1a over the input: the knobs a target varies (limits, peer, edits) are taken
/// from it, so seeds stay plain HTTP and every input still reaches every variant.
fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADER_SLOTS] {
    [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS]
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn peers() -> [Peer; 2] {
    [
        Peer::new("203.0.113.7:51234".parse().unwrap()),
        Peer::new("[2001:db8::1]:443".parse().unwrap()),
    ]
}

/// Header edits like a config would give (names pass `check_name`), for the
/// `[server]` scope and a route's.
fn edits_scopes() -> (HeaderEdits, HeaderEdits) {
    let t = |s: &str| Template::parse(s, false).unwrap();
    let global = HeaderEdits {
        set: vec![("X-Real-IP".into(), t("$remote_addr"))],
        add: vec![("X-Client".into(), t("$remote_addr:$remote_port $$"))],
        remove: vec!["Cookie".into(), "X-Forwarded-For".into()],
    };
    let route = HeaderEdits {
        set: vec![
            ("X-Real-IP".into(), t("route $host")),
            ("Via".into(), t("edge")),
        ],
        add: vec![("X-Trace".into(), t("$scheme/$request_id"))],
        remove: vec!["Forwarded".into(), "host".into()],
    };
    (global, route)
}

/// What a normalized path must look like: `/`-rooted, no empty, `.` or `..` segment
/// (but a trailing `/`), escapes only for reserved bytes, upper-case hex, and a fixed
/// point of `normalize`.
fn assert_normal(p: &[u8], from: &str) {
    assert!(p.starts_with(b"/"), "normalized {from:?} to {:?}", show(p));
    let inner = &p[1..];
    for (i, seg) in inner.split(|&b| b == b'/').enumerate() {
        let last = i == inner.split(|&b| b == b'/').count() - 1;
        assert!(
            (last || !seg.is_empty()) && seg != b"." && seg != b"..",
            "normalized {from:?} to {:?}: segment {:?} left",
            show(p),
            show(seg)
        );
    }
    let text = std::str::from_utf8(p)
        .unwrap_or_else(|_| panic!("normalized {from:?} to invalid UTF-8 {p:?}"));
    // A fixed point: normalizing again changes nothing (a path with escapes left is
    // rewritten to `out` again, byte for byte the same).
    let mut again = Vec::new();
    match path::normalize(text, &mut again) {
        Ok(false) => {}
        Ok(true) => assert_eq!(
            show(&again),
            text,
            "normalize is not idempotent: {from:?} -> {text:?} -> {:?}",
            show(&again)
        ),
        Err(e) => panic!("normalize refuses its own output: {from:?} -> {text:?}: {e:?}"),
    }
}

/// Header fields as owned `(name, value)` pairs, for comparing two parses.
fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

/// The fields of a request parse that a prefix or a re-parse must agree on.
fn summary(r: &Request<'_, '_>) -> String {
    format!(
        "{} {}{} {:?} host={:?} from_target={} body={:?} ka={} expect={} conn={} len={} upgrade={:?} headers={:?}",
        r.method,
        r.path,
        r.query,
        r.version,
        r.host,
        r.host_from_target,
        r.body,
        r.keep_alive,
        r.expect_continue,
        r.has_connection,
        r.head_len,
        r.upgrade.map(show),
        owned(r.headers)
    )
}

/// Cut points inside a head worth re-parsing: around every line end, the middle and
/// one byte short. Bounded, so long inputs cost a few dozen parses at most.
fn cuts(head: &[u8]) -> Vec<usize> {
    let mut v: Vec<usize> = head
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n' || b == b'\r' || b == b' ')
        .flat_map(|(i, _)| [i, i + 1])
        .take(48)
        .collect();
    v.extend([0, 1, head.len() / 2, head.len().saturating_sub(1)]);
    v.retain(|&c| c < head.len());
    v.sort_unstable();
    v.dedup();
    v
}

/// The path `head.rs` forwards: `*` as is, else normalized; `None` when the proxy
/// answers 400 (a malformed escape).
fn forwarded_path<'a>(req: &Request<'_, 'a>, buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    if req.path == "*" {
        return Some(req.path.as_bytes());
    }
    match path::normalize(req.path, buf) {
        Ok(false) => {
            assert_normal(req.path.as_bytes(), req.path);
            Some(req.path.as_bytes())
        }
        Ok(true) => {
            assert_normal(buf, req.path);
            Some(&buf[..])
        }
        Err(_) => {
            assert!(
                req.path.contains('%'),
                "a path without `%` was refused as a bad escape: {:?}",
                req.path
            );
            None
        }
    }
}

/// Asserts a written head is one head: CRLF lines, one blank line, at the very end.
fn assert_one_head(out: &[u8], what: &str) {
    assert!(
        out.ends_with(b"\r\n\r\n"),
        "{what} does not end a head: {:?}",
        show(out)
    );
    let first_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(
        first_end + 4,
        out.len(),
        "{what} ends early (a second head inside): {:?}",
        show(out)
    );
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && out[i - 1] == b'\r',
                "{what}: bare LF at {i}: {:?}",
                show(out)
            );
        }
        if b == b'\r' {
            assert_eq!(
                out.get(i + 1),
                Some(&b'\n'),
                "{what}: bare CR at {i}: {:?}",
                show(out)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// request_head

/// Target `request_head`: `request::parse` (default or input-derived tight limits), its
/// invariants, prefixes of the head, path normalization, and `write_upstream_request`
/// under several `Forward`s (header edits, rewrites, upgrade, request id). Nothing may
/// panic; the written head must be exactly one well-formed head.
pub fn request_head(data: &[u8]) {
    let h = fnv(data);
    let limits = if h & 3 == 0 {
        Limits {
            max_header_bytes: 16 + (h >> 8) as usize % 2048,
            max_headers: (h >> 24) as usize % 24,
            max_request_line: 4 + (h >> 32) as usize % 512,
        }
    } else {
        LIMITS
    };
    let mut s = slots();
    let req = match request::parse(data, &mut s, &limits) {
        Ok(Some(r)) => r,
        Ok(None) => {
            assert!(
                data.len() < limits.max_header_bytes,
                "{} bytes still incomplete under a {}-byte limit",
                data.len(),
                limits.max_header_bytes
            );
            return;
        }
        Err(e) => {
            let _ = (e.status(), e.to_string());
            return;
        }
    };
    assert!(req.head_len <= data.len() && req.head_len <= limits.max_header_bytes);
    assert!(req.headers.len() <= limits.max_headers);
    assert!(data[..req.head_len].ends_with(b"\n"));
    assert!(
        req.path.starts_with('/') || req.path == "*",
        "path {:?}",
        req.path
    );
    assert!(req.query.is_empty() || req.query.starts_with('?'));
    assert!(!req.path.contains('?'));
    assert!(!matches!(req.body, Framing::Length(0) | Framing::Close));
    if req.version == Version::Http10 {
        assert_ne!(req.body, Framing::Chunked);
    }
    let whole = summary(&req);

    // The proxy parses whatever has arrived: the head alone gives the same request,
    // and any shorter prefix of it is "read more", never an answer of its own.
    let mut s2 = slots();
    let again = request::parse(&data[..req.head_len], &mut s2, &limits);
    match again {
        Ok(Some(r)) => assert_eq!(summary(&r), whole, "the head alone parses differently"),
        other => panic!("the head alone gives {other:?}, the whole input {whole}"),
    }
    for cut in cuts(&data[..req.head_len]) {
        let mut s3 = slots();
        match request::parse(&data[..cut], &mut s3, &limits) {
            Ok(None) => {}
            other => panic!(
                "prefix of {cut} of a {}-byte head gives {other:?} (whole: {whole})",
                req.head_len
            ),
        }
    }

    let mut buf = Vec::new();
    let Some(target) = forwarded_path(&req, &mut buf) else {
        return;
    };
    let [p4, p6] = peers();
    let (global, route) = edits_scopes();
    let empty = HeaderEdits::default();
    let host = strip_port(req.host);
    let mut out = Vec::new();
    for variant in 0..4u8 {
        let peer = if (h >> (40 + variant)) & 1 == 0 {
            &p4
        } else {
            &p6
        };
        let scheme = if variant & 1 == 0 { "http" } else { "https" };
        let vars = Vars {
            peer,
            scheme,
            host: host.as_bytes(),
            request_id: b"0123456789abcdef",
            upstream: None,
        };
        let (path, edits) = match variant {
            0 => ([target, &b""[..], &b""[..]], None),
            1 => (
                [&b"/v2"[..], &b"/"[..], target.get(1..).unwrap_or_default()],
                Some(Edits {
                    scopes: [&global, &empty],
                    vars,
                }),
            ),
            2 => (
                [&b"/"[..], target.get(1..).unwrap_or_default(), &b""[..]],
                Some(Edits {
                    scopes: [&global, &route],
                    vars,
                }),
            ),
            _ => (
                [target, &b""[..], &b""[..]],
                Some(Edits {
                    scopes: [&empty, &route],
                    vars,
                }),
            ),
        };
        let fwd = Forward {
            scheme,
            path,
            query: req.query.as_bytes(),
            edits,
            request_id: (variant >= 2).then_some(&b"0123456789abcdef"[..]),
            strip_conditionals: variant & 1 == 1,
            upgrade: req
                .upgrade
                .filter(|_| variant != 0 && req.body == Framing::None),
        };
        out.clear();
        write_upstream_request(&mut out, &req, peer, req.body, &fwd);
        let line = format!("{} ", req.method);
        assert!(out.starts_with(line.as_bytes()), "{:?}", show(&out));
        assert_one_head(&out, "the upstream request");
    }
}

// ---------------------------------------------------------------------------------------
// request_roundtrip

/// Target `request_roundtrip`: for every request `parse` accepts (and whose path the
/// proxy would forward), the upstream head written with no header edits must parse
/// again to the same method, the same normalized target, the same framing and host,
/// and the same header fields: those kept, in order and byte for byte, followed by
/// exactly the ones the proxy adds.
///
/// Kept: every field but the hop-by-hop ones (`is_hop_by_hop`), those a `Connection`
/// header names (when it names more than `close` / `keep-alive`), `X-Forwarded-For`,
/// `X-Forwarded-Host`, `X-Forwarded-Proto`, `Forwarded`, and `Host` when the target
/// was absolute-form. Added, in this order: `Host` (when none was kept),
/// `X-Forwarded-For` (earlier values, then the peer), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` (when there is a host), `Forwarded`, `Via`, then the framing
/// header (`Content-Length: n` or `Transfer-Encoding: chunked`).
pub fn request_roundtrip(data: &[u8]) {
    let mut s = slots();
    let Ok(Some(req)) = request::parse(data, &mut s, &LIMITS) else {
        return;
    };
    let mut buf = Vec::new();
    let Some(target) = forwarded_path(&req, &mut buf) else {
        return;
    };
    let [p4, p6] = peers();
    let v6 = fnv(data) & 1 == 1;
    let peer = if v6 { &p6 } else { &p4 };
    let fwd = Forward {
        scheme: "http",
        path: [target, b"", b""],
        query: req.query.as_bytes(),
        edits: None,
        request_id: None,
        strip_conditionals: false,
        upgrade: None,
    };
    let mut out = Vec::new();
    write_upstream_request(&mut out, &req, peer, req.body, &fwd);
    assert_one_head(&out, "the upstream request");

    // The model of what is kept.
    let hop = |name: &str| {
        is_hop_by_hop(name) || (req.has_connection && listed_in_connection(req.headers, name))
    };
    let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
    let mut xff_seen = false;
    let mut fwd_seen = false;
    let mut host_kept = false;
    for h in req.headers {
        if hop(h.name) {
            continue;
        }
        let lower = h.name.to_ascii_lowercase();
        match lower.as_str() {
            "host" if req.host_from_target => continue,
            "host" => host_kept = true,
            "x-forwarded-for" => {
                xff_seen = true;
                continue;
            }
            "forwarded" => {
                fwd_seen = true;
                continue;
            }
            "x-forwarded-host" | "x-forwarded-proto" => continue,
            _ => {}
        }
        kept.push((h.name.to_string(), h.value.to_vec()));
    }
    let earlier = |name: &str, seen: bool| -> Vec<u8> {
        let mut v = Vec::new();
        if seen {
            for h in req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
            {
                let t = trim(h.value);
                if !t.is_empty() {
                    v.extend_from_slice(t);
                    v.extend_from_slice(b", ");
                }
            }
        }
        v
    };
    let mut added: Vec<(String, Vec<u8>)> = Vec::new();
    if !host_kept {
        added.push(("Host".into(), req.host.as_bytes().to_vec()));
    }
    let mut xff = earlier("x-forwarded-for", xff_seen);
    xff.extend_from_slice(peer.ip());
    added.push(("X-Forwarded-For".into(), xff));
    added.push(("X-Forwarded-Proto".into(), b"http".to_vec()));
    if !req.host.is_empty() {
        added.push(("X-Forwarded-Host".into(), req.host.as_bytes().to_vec()));
    }
    let mut fwd_value = earlier("forwarded", fwd_seen);
    fwd_value.extend_from_slice(b"for=");
    if v6 {
        fwd_value.extend_from_slice(format!("\"[{}]\"", show(peer.ip())).as_bytes());
    } else {
        fwd_value.extend_from_slice(peer.ip());
    }
    if !req.host.is_empty() && !req.host.contains('"') {
        fwd_value.extend_from_slice(format!(";host=\"{}\"", req.host).as_bytes());
    }
    fwd_value.extend_from_slice(b";proto=http");
    added.push(("Forwarded".into(), fwd_value));
    added.push(("Via".into(), VIA.to_vec()));
    match req.body {
        Framing::Length(n) => added.push(("Content-Length".into(), n.to_string().into_bytes())),
        Framing::Chunked => added.push(("Transfer-Encoding".into(), b"chunked".to_vec())),
        Framing::None | Framing::Close => {}
    }

    let mut s2 = slots();
    let re = match request::parse(&out, &mut s2, &WIDE) {
        Ok(Some(re)) => re,
        other => panic!(
            "the proxy's own upstream head does not parse: {other:?}\nclient sent: {:?}\nupstream gets: {:?}",
            show(&data[..req.head_len]),
            show(&out)
        ),
    };
    let ctx = || {
        format!(
            "\nclient sent: {:?}\nupstream gets: {:?}",
            show(&data[..req.head_len]),
            show(&out)
        )
    };
    assert_eq!(re.head_len, out.len(), "{}", ctx());
    assert_eq!(re.method, req.method, "method{}", ctx());
    assert_eq!(re.path.as_bytes(), target, "path{}", ctx());
    assert_eq!(re.query, req.query, "query{}", ctx());
    assert_eq!(re.version, Version::Http11, "{}", ctx());
    assert_eq!(re.body, req.body, "body framing{}", ctx());
    assert_eq!(re.host, req.host, "host{}", ctx());
    assert!(!re.host_from_target && re.upgrade.is_none(), "{}", ctx());
    assert!(re.keep_alive && !re.expect_continue, "{}", ctx());
    let got = owned(re.headers);
    let want: Vec<(String, Vec<u8>)> = kept.iter().chain(&added).cloned().collect();
    assert_eq!(
        got.iter()
            .map(|(n, v)| (n.as_str(), show(v)))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|(n, v)| (n.as_str(), show(v)))
            .collect::<Vec<_>>(),
        "header fields{}",
        ctx()
    );
    assert_eq!(got, want, "header bytes{}", ctx());
}

// ---------------------------------------------------------------------------------------
// chunked

/// How a chunked stream ended when fed to a decoder.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `Done`: the decoded data and the bytes consumed.
    Done(Vec<u8>, usize),
    /// The input ran out first: the data decoded so far.
    Incomplete(Vec<u8>),
    /// An error, after this much data.
    Error(ringway::http::chunked::ChunkError, Vec<u8>),
}

/// Feeds `pieces` one after the other to a fresh decoder the way `body.rs` does
/// (`Data`: take `[start..end]`, drop `end`; `NeedMore`: drop `consumed`, read more),
/// checking every step's counts against the bytes it was given.
fn feed(pieces: &[&[u8]]) -> Outcome {
    let mut dec = ChunkedDecoder::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut data = Vec::new();
    let mut consumed_total = 0usize;
    let mut next = 0;
    // Each call either makes progress or asks for more; bound it anyway.
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(
            calls <= 2 * total + 2 * pieces.len() + 4,
            "the decoder loops"
        );
        match dec.decode(&pending) {
            Ok(Step::Data { start, end }) => {
                assert!(
                    start < end && end <= pending.len(),
                    "Data {start}..{end} of {}",
                    pending.len()
                );
                assert!(!dec.is_done());
                data.extend_from_slice(&pending[start..end]);
                pending.drain(..end);
                consumed_total += end;
            }
            Ok(Step::NeedMore { consumed }) => {
                assert!(
                    consumed <= pending.len(),
                    "NeedMore {consumed} of {}",
                    pending.len()
                );
                assert!(!dec.is_done());
                pending.drain(..consumed);
                consumed_total += consumed;
                if next == pieces.len() {
                    return Outcome::Incomplete(data);
                }
                pending.extend_from_slice(pieces[next]);
                next += 1;
            }
            Ok(Step::Done { consumed }) => {
                assert!(
                    consumed <= pending.len(),
                    "Done {consumed} of {}",
                    pending.len()
                );
                assert!(dec.is_done());
                consumed_total += consumed;
                assert!(consumed_total <= total);
                // Done stays done, consuming nothing more.
                assert_eq!(
                    dec.decode(&pending[consumed..]),
                    Ok(Step::Done { consumed: 0 })
                );
                return Outcome::Done(data, consumed_total);
            }
            Err(e) => return Outcome::Error(e, data),
        }
    }
}

/// Target `chunked`: input is `k` (one byte, mod 16), `k` little-endian u16 cut
/// points, then a chunked body. The body fed whole and fed in the pieces the cuts give
/// must decode alike; no step may claim more bytes than it was given; a complete body
/// re-encoded (as `body.rs` re-frames it) must decode back to the same data.
pub fn chunked(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 16);
    if rest.len() < 2 * k {
        return;
    }
    let (cut_bytes, body) = rest.split_at(2 * k);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([body.len()]) {
        pieces.push(&body[at..c]);
        at = c;
    }

    let whole = feed(&[body]);
    let split = feed(&pieces);
    let bytewise: Vec<&[u8]> = body.chunks(1).take(4096).collect();
    assert_eq!(
        whole, split,
        "whole and split ({pieces:?}) decode differently"
    );
    if body.len() <= 4096 {
        assert_eq!(
            whole,
            feed(&bytewise),
            "whole and byte by byte decode differently"
        );
    }

    if let Outcome::Done(decoded, used) = &whole {
        assert!(*used <= body.len());
        // Re-frame as the relay does: one chunk per Data step, then the last chunk.
        let mut enc = Vec::new();
        for piece in decoded.chunks(1 + body.len() % 97) {
            write_chunk_header(&mut enc, piece.len());
            enc.extend_from_slice(piece);
            enc.extend_from_slice(b"\r\n");
        }
        enc.extend_from_slice(LAST_CHUNK);
        match feed(&[&enc]) {
            Outcome::Done(again, n) => {
                assert_eq!(&again, decoded, "re-encoded data decodes differently");
                assert_eq!(n, enc.len(), "re-encoded body not consumed whole");
            }
            other => panic!("re-encoded body {:?} gives {other:?}", show(&enc)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// response_head

/// Target `response_head`: `response::parse` (for a GET or a HEAD), its invariants and
/// prefixes, then the client's head written as `proxy/attempt.rs` writes it (interim,
/// 101 tunnel, or final with the framing the proxy re-frames to), which must parse
/// again, with `response::parse`, to the same status and the framing the proxy will
/// send, the upstream's end-to-end fields kept in order, and only the proxy's own
/// fields added after them.
pub fn response_head(data: &[u8]) {
    let h = fnv(data);
    let is_head = h & 1 == 1;
    let mut s = slots();
    let resp = match response::parse(data, &mut s, is_head) {
        Ok(Some(r)) => r,
        Ok(None) => {
            assert!(data.len() < MAX_RESPONSE_HEAD);
            return;
        }
        Err(e) => {
            assert_eq!(e.status(), 502, "{e}");
            return;
        }
    };
    assert!(resp.head_len <= data.len());
    assert!((100..=599).contains(&resp.status));
    let bodiless = is_head || resp.status < 200 || resp.status == 204 || resp.status == 304;
    if bodiless {
        assert_eq!(resp.body, Framing::None);
    }
    assert!(!matches!(resp.body, Framing::Length(0)));
    let whole = resp_summary(&resp);
    let mut s2 = slots();
    match response::parse(&data[..resp.head_len], &mut s2, is_head) {
        Ok(Some(r)) => assert_eq!(resp_summary(&r), whole, "the head alone parses differently"),
        other => panic!("the head alone gives {other:?}, the whole input {whole}"),
    }
    for cut in cuts(&data[..resp.head_len]) {
        let mut s3 = slots();
        match response::parse(&data[..cut], &mut s3, is_head) {
            Ok(None) => {}
            other => panic!("prefix of {cut} gives {other:?} (whole: {whole})"),
        }
    }

    let [p4, _] = peers();
    let (global, route) = edits_scopes();
    let vars = Vars {
        peer: &p4,
        scheme: "https",
        host: b"example.com",
        request_id: b"id",
        upstream: Some("127.0.0.1:9001".parse().unwrap()),
    };
    let edits = Edits {
        scopes: [&global, &route],
        vars,
    };
    let mut out = Vec::new();
    let ctx = |out: &[u8]| {
        format!(
            "\nupstream sent: {:?}\nclient gets: {:?}",
            show(&data[..resp.head_len]),
            show(out)
        )
    };

    if resp.is_interim() {
        write_interim_response(&mut out, &resp);
        assert_one_head(&out, "the interim head");
        let mut s4 = slots();
        let re = response::parse(&out, &mut s4, false);
        let Ok(Some(re)) = re else {
            panic!("interim head does not parse: {re:?}{}", ctx(&out));
        };
        assert_eq!(re.status, resp.status, "{}", ctx(&out));
        let want: Vec<_> = resp
            .headers
            .iter()
            .filter(|x| {
                let hop = is_hop_by_hop(x.name)
                    || (resp.has_connection && listed_in_connection(resp.headers, x.name));
                !hop
            })
            .map(|x| (x.name.to_string(), x.value.to_vec()))
            .collect();
        assert_eq!(owned(re.headers), want, "{}", ctx(&out));
        return;
    }

    let client_version = if (h >> 1) & 1 == 1 {
        Version::Http10
    } else {
        Version::Http11
    };
    let with_edits = (h >> 2) & 1 == 1;
    let x_cache: Option<&'static [u8]> = ((h >> 3) & 1 == 1).then_some(&b"X-Cache: MISS\r\n"[..]);
    let mut client = ClientHead {
        body: Framing::None,
        version: client_version,
        close: (h >> 4) & 1 == 1,
        edits: with_edits.then_some(&edits),
        date: DATE,
        x_cache,
        upgrade: None,
    };
    if resp.status == 101 {
        // Tunnelled only when the upstream names the protocol asked for; the head is
        // the upstream's with `Connection: upgrade` and its `Upgrade` value.
        let Some(offered) = resp
            .headers
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case("upgrade"))
            .map(|x| x.value)
        else {
            return;
        };
        client.upgrade = Some(offered);
        client.close = false;
        write_client_response(&mut out, &resp, &client);
        assert_one_head(&out, "the 101 head");
        return;
    }
    // As `prepare` in proxy/attempt.rs.
    let output = match resp.body {
        Framing::None => Framing::None,
        Framing::Length(n) => Framing::Length(n),
        Framing::Chunked | Framing::Close if client_version == Version::Http11 => Framing::Chunked,
        Framing::Chunked | Framing::Close => Framing::Close,
    };
    client.close = client.close || output == Framing::Close;
    client.body = output;
    write_client_response(&mut out, &resp, &client);
    assert_one_head(&out, "the client head");

    let mut s4 = slots();
    let re = match response::parse(&out, &mut s4, is_head) {
        Ok(Some(re)) => re,
        other => panic!(
            "the proxy's own client head does not parse: {other:?}{}",
            ctx(&out)
        ),
    };
    assert_eq!(re.head_len, out.len(), "{}", ctx(&out));
    assert_eq!(re.status, resp.status, "{}", ctx(&out));
    assert_eq!(re.reason, resp.reason, "{}", ctx(&out));
    // What the client reads the body by is what the proxy sends it by.
    let expect = if bodiless { Framing::None } else { output };
    assert_eq!(re.body, expect, "body framing the client sees{}", ctx(&out));
    assert_eq!(
        re.reusable,
        !client.close && expect != Framing::Close,
        "{}",
        ctx(&out)
    );

    // Fields: the upstream's end-to-end ones, in order, then only the proxy's.
    let dropped = |name: &str| with_edits && edits.drops(name);
    let want: Vec<_> = resp
        .headers
        .iter()
        .filter(|x| {
            let keep_length =
                x.name.eq_ignore_ascii_case("content-length") && resp.keep_content_length;
            (keep_length
                || !(is_hop_by_hop(x.name)
                    || (resp.has_connection && listed_in_connection(resp.headers, x.name))))
                && !dropped(x.name)
        })
        .map(|x| (x.name.to_string(), x.value.to_vec()))
        .collect();
    let got = owned(re.headers);
    assert!(got.len() >= want.len(), "fields lost{}", ctx(&out));
    assert_eq!(
        &got[..want.len()],
        &want[..],
        "upstream fields{}",
        ctx(&out)
    );
    let mut added: Vec<&str> = Vec::new();
    if !dropped("via") {
        added.push("via");
    }
    if !resp.has_date && !dropped("date") {
        added.push("date");
    }
    if x_cache.is_some() {
        added.push("x-cache");
    }
    if with_edits {
        // set: X-Real-IP (the route's wins), Via; add: X-Client, X-Trace.
        added.extend(["x-real-ip", "via", "x-client", "x-trace"]);
    }
    if !resp.keep_content_length {
        match output {
            Framing::Length(_) => added.push("content-length"),
            Framing::Chunked => added.push("transfer-encoding"),
            Framing::None | Framing::Close => {}
        }
    }
    if client.close || client_version == Version::Http10 {
        added.push("connection");
    }
    let got_added: Vec<String> = got[want.len()..]
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    assert_eq!(got_added, added, "fields the proxy added{}", ctx(&out));
}

fn resp_summary(r: &Response<'_, '_>) -> String {
    format!(
        "{} {:?} {:?} body={:?} reusable={} conn={} keep_cl={} date={} len={} headers={:?}",
        r.status,
        r.reason,
        r.version,
        r.body,
        r.reusable,
        r.has_connection,
        r.keep_content_length,
        r.has_date,
        r.head_len,
        owned(r.headers)
    )
}

// ---------------------------------------------------------------------------------------
// config

/// Target `config`: `Config::parse` on the input as (lossy) UTF-8 may refuse it but
/// never panics; an accepted config also gets what a start or reload does with it
/// (the summary line, the `/config` JSON, a snapshot built from it).
///
/// Server addresses given by name are resolved with `getaddrinfo`; the fuzz target
/// replaces that with a stub that resolves nothing, so fuzzing sends no DNS query.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, "fuzz.toml") {
        Ok(c) => {
            let _ = c.summary();
            let _ = ringway::config::show::to_json(&c).to_string();
            let mut registry = ringway::upstream::Registry::new();
            let _ = ringway::snapshot::Snapshot::build(&c, 1, &mut registry);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

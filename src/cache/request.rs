//! What the cache reads from a request: its key, its cache directives and credentials,
//! the values of the headers a stored response varies on, and its conditionals.
//!
//! Pure functions over a parsed head, or over the raw head the proxy's parser already
//! validated (so lines end in LF or CRLF, every field line has a colon, and nothing is
//! folded). Run on the worker, on the request path: nothing here allocates except the
//! key, which goes into the connection's reused scratch buffer.

use super::entry::{Stored, VaryField};
use crate::config::KeyPart;
use crate::http::cache_control::RequestDirectives;
use crate::http::{strip_port, trim};
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// The cache-relevant facts of a request head, read once while it is parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// Its `Cache-Control` (and `Pragma: no-cache`).
    pub directives: RequestDirectives,
    /// It carries `Authorization`.
    pub authorization: bool,
    /// It is conditional (`If-None-Match` or `If-Modified-Since`).
    pub conditional: bool,
}

/// Reads the facts from parsed header fields, in one pass (this runs on every request
/// of a route that caches).
pub fn facts(headers: &[httparse::Header<'_>]) -> Facts {
    let mut facts = Facts::default();
    let (mut cache_control, mut pragma_no_cache) = (false, false);
    for h in headers {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        match h.name.len() {
            6 if is("pragma") => {
                pragma_no_cache |=
                    crate::http::list_items(h.value).any(|t| t.eq_ignore_ascii_case(b"no-cache"));
            }
            13 if is("cache-control") => cache_control = true,
            13 if is("authorization") => facts.authorization = true,
            13 if is("if-none-match") => facts.conditional = true,
            17 if is("if-modified-since") => facts.conditional = true,
            _ => {}
        }
    }
    if cache_control || pragma_no_cache {
        let values = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cache-control"))
            .map(|h| h.value);
        facts.directives = RequestDirectives::parse(values, pragma_no_cache);
    }
    facts
}

/// What a key is built from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The method.
    pub method: &'a str,
    /// The authority as sent (a port and upper case are dropped).
    pub host: &'a str,
    /// The normalized path.
    pub path: &'a str,
    /// The query, without its `?`.
    pub query: &'a str,
    /// The header fields (for `header:` and `cookie:` parts).
    pub headers: &'a [httparse::Header<'a>],
}

/// Where a built key's pieces sit in the scratch buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Built {
    /// The key's hash.
    pub hash: u64,
    /// `out[..key]` is the key.
    pub key: usize,
    /// `out[key..host]` is the host (lower case, no port).
    pub host: usize,
    /// `out[host..]` is the target (`/path?query`).
    pub target: usize,
}

impl Built {
    /// The key, host and target, out of the buffer `build` wrote.
    pub fn parts<'a>(&self, out: &'a [u8]) -> (&'a [u8], &'a str, &'a str) {
        let text = |r: std::ops::Range<usize>| std::str::from_utf8(&out[r]).unwrap_or("");
        (
            &out[..self.key],
            text(self.key..self.host),
            text(self.host..self.target),
        )
    }
}

/// Writes the key of a request into `out` (cleared first), then its host and target,
/// and hashes the key.
///
/// Each part is a tag byte, its value and a NUL (values cannot hold NUL: the parser
/// rejects it), so no two different requests share a key by concatenation.
pub fn build(parts: &[KeyPart], req: &KeyInput<'_>, out: &mut Vec<u8>) -> Built {
    out.clear();
    let host = strip_port(req.host);
    for part in parts {
        match part {
            KeyPart::Method => {
                out.push(b'M');
                // A HEAD is answered from the GET's entry.
                let m = if req.method == "HEAD" {
                    "GET"
                } else {
                    req.method
                };
                out.extend_from_slice(m.as_bytes());
            }
            KeyPart::Host => {
                out.push(b'H');
                out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
            }
            KeyPart::Path => {
                out.push(b'P');
                out.extend_from_slice(req.path.as_bytes());
            }
            KeyPart::Query => {
                out.push(b'Q');
                out.extend_from_slice(req.query.as_bytes());
            }
            KeyPart::Header(name) => {
                out.push(b'h');
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                let mut first = true;
                for h in req
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                {
                    if !first {
                        out.extend_from_slice(b", ");
                    }
                    first = false;
                    out.extend_from_slice(trim(h.value));
                }
            }
            KeyPart::Cookie(name) => {
                out.push(b'c');
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                if let Some(v) = cookie(req.headers, name) {
                    out.extend_from_slice(v);
                }
            }
        }
        out.push(0);
    }
    let key = out.len();
    out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
    let host_end = out.len();
    out.extend_from_slice(req.path.as_bytes());
    if !req.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(req.query.as_bytes());
    }
    Built {
        hash: hash_key(&out[..key]),
        key,
        host: host_end,
        target: out.len(),
    }
}

/// The key's hash: keyed per process (keys are chosen by clients, so a fixed hash would
/// let them pile entries into one bucket), the same on every worker.
pub fn hash_key(key: &[u8]) -> u64 {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE
        .get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(key)
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// The values of header `name` in a raw, validated request head, trimmed.
pub fn values<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    let name = name.as_bytes();
    // Lines start after each LF; the first line is the request line.
    memchr::memchr_iter(b'\n', head).filter_map(move |nl| {
        let line = &head[nl + 1..];
        // Most lines fail on their first bytes: compare the name before finding the end.
        let prefix = line.get(..name.len())?;
        if !prefix.eq_ignore_ascii_case(name) || line.get(name.len()) != Some(&b':') {
            return None;
        }
        let rest = &line[name.len() + 1..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let value = &rest[..end];
        Some(trim(value.strip_suffix(b"\r").unwrap_or(value)))
    })
}

/// The values of header `name`, joined with `, ` as a stored variant keeps them.
pub fn joined(head: &[u8], name: &str) -> Option<Box<[u8]>> {
    let mut out: Option<Vec<u8>> = None;
    for v in values(head, name) {
        let o = out.get_or_insert_with(Vec::new);
        if !o.is_empty() {
            o.extend_from_slice(b", ");
        }
        o.extend_from_slice(v);
    }
    out.map(Vec::into_boxed_slice)
}

/// True when the request sends the same values as the stored one for every header the
/// response varies on (compared without allocating).
pub fn vary_matches(head: &[u8], vary: &[VaryField]) -> bool {
    vary.iter().all(|f| {
        let mut rest: &[u8] = f.value.as_deref().unwrap_or(b"");
        let mut seen = false;
        for v in values(head, &f.name) {
            if seen {
                match rest.strip_prefix(b", ") {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            match rest.strip_prefix(v) {
                Some(r) => rest = r,
                None => return false,
            }
            seen = true;
        }
        seen == f.value.is_some() && rest.is_empty()
    })
}

/// True when the request's conditionals say the client's copy of `stored` is current,
/// so it gets a 304 (RFC 9110 §13.2.2: `If-None-Match` first, with weak comparison;
/// `If-Modified-Since` only without it). `now`: seconds since the epoch.
pub fn not_modified(head: &[u8], stored: &Stored, now: u64) -> bool {
    let mut inm = values(head, "if-none-match").peekable();
    if inm.peek().is_some() {
        let Some(etag) = stored.etag.as_deref() else {
            return inm.any(|v| trim(v) == b"*");
        };
        return inm.any(|v| etag_list_matches(v, etag));
    }
    let Some(modified) = stored.last_modified else {
        return false;
    };
    values(head, "if-modified-since")
        .next()
        .and_then(|v| crate::http::date::parse_at(v, now))
        .is_some_and(|since| modified <= since)
}

/// True when the `If-None-Match` list `list` has `*` or an entity-tag weakly equal to
/// `etag` (the same opaque tag, `W/` or not).
fn etag_list_matches(list: &[u8], etag: &[u8]) -> bool {
    let want = opaque(etag);
    let mut rest = list;
    loop {
        while let [b' ' | b'\t' | b',', r @ ..] = rest {
            rest = r;
        }
        if rest.is_empty() {
            return false;
        }
        if rest[0] == b'*' {
            return true;
        }
        let body = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(inner) = body.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = inner.iter().position(|&b| b == b'"') else {
            return false;
        };
        if Some(&inner[..end]) == want {
            return true;
        }
        rest = &inner[end + 1..];
    }
}

/// The opaque tag of an entity-tag (`W/"x"` and `"x"` → `x`); `None` if malformed.
fn opaque(etag: &[u8]) -> Option<&[u8]> {
    let e = trim(etag);
    let e = e.strip_prefix(b"W/").unwrap_or(e);
    e.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Freshness;
    use bytes::Bytes;

    fn hdr<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn key_of(
        parts: &[KeyPart],
        method: &str,
        host: &str,
        headers: &[httparse::Header<'_>],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let b = build(
            parts,
            &KeyInput {
                method,
                host,
                path: "/a",
                query: "x=1",
                headers,
            },
            &mut out,
        );
        out.truncate(b.key);
        out
    }

    #[test]
    fn keys_fold_head_into_get_and_ignore_host_case_and_port() {
        let parts = [
            KeyPart::Method,
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query,
        ];
        let get = key_of(&parts, "GET", "Example.com:8080", &[]);
        assert_eq!(get, key_of(&parts, "HEAD", "example.com", &[]));
        assert_ne!(get, key_of(&parts, "GET", "other.com", &[]));
        let mut out = Vec::new();
        let b = build(
            &parts,
            &KeyInput {
                method: "GET",
                host: "Example.com:8080",
                path: "/a",
                query: "x=1",
                headers: &[],
            },
            &mut out,
        );
        assert_eq!(b.parts(&out).1, "example.com");
        assert_eq!(b.parts(&out).2, "/a?x=1");
        assert_eq!(b.hash, hash_key(b.parts(&out).0));
    }

    #[test]
    fn header_and_cookie_parts_separate_what_they_name() {
        let parts = [
            KeyPart::Path,
            KeyPart::Header("authorization".into()),
            KeyPart::Cookie("lang".into()),
        ];
        let alice = key_of(&parts, "GET", "h", &[hdr("Authorization", "Basic YQ==")]);
        let bob = key_of(&parts, "GET", "h", &[hdr("authorization", "Basic Yg==")]);
        assert_ne!(alice, bob);
        let en = key_of(&parts, "GET", "h", &[hdr("Cookie", "a=1; lang=en")]);
        let fr = key_of(&parts, "GET", "h", &[hdr("Cookie", "lang=fr")]);
        assert_ne!(en, fr);
        assert_eq!(
            en,
            key_of(&parts, "GET", "h", &[hdr("cookie", "lang=en; b=2")])
        );
    }

    #[test]
    fn facts_read_directives_credentials_and_conditionals() {
        let f = facts(&[
            hdr("Cache-Control", "max-age=0"),
            hdr("Authorization", "x"),
            hdr("If-None-Match", "\"a\""),
        ]);
        assert_eq!(f.directives.max_age, Some(0));
        assert!(f.authorization && f.conditional);
        let f = facts(&[hdr("Pragma", "no-cache")]);
        assert!(f.directives.no_cache);
        assert_eq!(facts(&[]), Facts::default());
    }

    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\naccept-encoding: br\nX-Empty:\r\n\r\n";

    #[test]
    fn raw_heads_give_values_and_vary_compares_them_whole() {
        let v: Vec<&[u8]> = values(HEAD, "accept-encoding").collect();
        assert_eq!(v, [&b"gzip"[..], b"br"]);
        assert_eq!(
            joined(HEAD, "ACCEPT-ENCODING").as_deref(),
            Some(&b"gzip, br"[..])
        );
        assert_eq!(joined(HEAD, "accept-language"), None);
        let field = |name: &str, value: Option<&str>| VaryField {
            name: name.into(),
            value: value.map(|v| v.as_bytes().into()),
        };
        assert!(vary_matches(
            HEAD,
            &[field("accept-encoding", Some("gzip, br"))]
        ));
        assert!(!vary_matches(
            HEAD,
            &[field("accept-encoding", Some("gzip"))]
        ));
        assert!(!vary_matches(
            HEAD,
            &[field("accept-encoding", Some("gzip, br, x"))]
        ));
        assert!(vary_matches(HEAD, &[field("accept-language", None)]));
        assert!(!vary_matches(HEAD, &[field("accept-language", Some(""))]));
        assert!(vary_matches(HEAD, &[field("x-empty", Some(""))]));
        assert!(!vary_matches(HEAD, &[field("x-empty", None)]));
    }

    const NOW: u64 = 1_800_000_000;

    fn stored(etag: Option<&str>, last_modified: Option<u64>) -> Stored {
        Stored {
            id: 1,
            hash: 0,
            key: Box::new([]),
            host: "".into(),
            target: "".into(),
            vary: Box::new([]),
            status: 200,
            head: Box::new([]),
            body: Bytes::new(),
            etag: etag.map(|e| e.as_bytes().into()),
            last_modified,
            last_modified_raw: None,
            freshness: Freshness::default(),
            shared_with_auth: false,
        }
    }

    #[test]
    fn if_none_match_compares_weakly_and_wins_over_if_modified_since() {
        let s = stored(Some("W/\"v1\""), Some(784_111_777));
        let req = |h: &str| format!("GET / HTTP/1.1\r\n{h}\r\n\r\n").into_bytes();
        assert!(not_modified(&req("If-None-Match: \"v1\""), &s, NOW));
        assert!(not_modified(
            &req("If-None-Match: \"x\", W/\"v1\""),
            &s,
            NOW
        ));
        assert!(not_modified(&req("If-None-Match: *"), &s, NOW));
        assert!(!not_modified(&req("If-None-Match: \"v2\""), &s, NOW));
        assert!(
            !not_modified(&req("If-None-Match: \"v1"), &s, NOW),
            "malformed"
        );
        assert!(
            !not_modified(
                &req("If-None-Match: \"v2\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"),
                &s,
                NOW
            ),
            "If-Modified-Since is ignored beside If-None-Match"
        );
        assert!(not_modified(
            &req("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"),
            &s,
            NOW
        ));
        assert!(!not_modified(
            &req("If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT"),
            &s,
            NOW
        ));
        assert!(!not_modified(&req("If-Modified-Since: yesterday"), &s, NOW));
        assert!(!not_modified(&req("X: y"), &s, NOW));
        assert!(!not_modified(
            &req("If-None-Match: \"v1\""),
            &stored(None, None),
            NOW
        ));
    }
}

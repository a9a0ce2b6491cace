//! Request heads: zero-copy parse with httparse, then the semantic checks httparse
//! leaves to us (framing headers, Host, target form, version, limits).
//!
//! The result borrows the connection buffer; nothing is copied until the head is
//! rewritten for the upstream.

use super::{list_items, parse_content_length, Framing, Version};
use crate::error::ProxyError;
use std::mem::MaybeUninit;

/// Client-side head limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most header fields (431 beyond).
    pub max_headers: usize,
    /// Longest request line (414 beyond).
    pub max_request_line: usize,
}

/// A parsed and validated request head, borrowing the connection buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    /// Method token as sent.
    pub method: &'b str,
    /// The target's path (origin-form, also for absolute-form requests, where an empty
    /// path is `/`); `*` for `OPTIONS *`.
    pub path: &'b str,
    /// The target's query with its `?`, or empty.
    pub query: &'b str,
    /// Request version.
    pub version: Version,
    /// All header fields, in order.
    pub headers: &'h [httparse::Header<'b>],
    /// The authority: the Host header, or the absolute-form target's authority.
    pub host: &'b str,
    /// True when `host` came from an absolute-form target (the Host header is then replaced).
    pub host_from_target: bool,
    /// How the body is delimited (`None`, `Length` or `Chunked`).
    pub body: Framing,
    /// Whether the client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent with a body.
    pub expect_continue: bool,
    /// A `Connection` header names other headers (beyond `close` / `keep-alive`), which
    /// are then hop-by-hop too; without one the rewrite skips that per-header check.
    pub has_connection: bool,
    /// Bytes of the head, including the final blank line.
    pub head_len: usize,
    /// The `Upgrade` header's value, when the `Connection` header also lists `upgrade`
    /// (an HTTP/1.1 request asking to switch protocols); the proxy decides whether to
    /// forward it.
    pub upgrade: Option<&'b [u8]>,
}

impl Request<'_, '_> {
    /// True for HEAD, whose response never has a body.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Storage for parsed header slots; uninitialized so a parse costs no memset.
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>];

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)` means the head is incomplete and within limits: read more.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
    limits: &Limits,
) -> Result<Option<Request<'h, 'b>>, ProxyError> {
    let max = limits.max_headers.min(slots.len());
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, &mut slots[..max]) {
        Ok(s) => s,
        Err(e) => {
            check_request_line(buf, limits)?;
            return Err(match e {
                httparse::Error::Version => ProxyError::VersionNotSupported,
                httparse::Error::TooManyHeaders => {
                    ProxyError::HeadersTooLarge("too many header fields")
                }
                httparse::Error::HeaderName => ProxyError::BadRequest("invalid header name"),
                httparse::Error::HeaderValue => ProxyError::BadRequest("invalid header value"),
                httparse::Error::NewLine => ProxyError::BadRequest("invalid line ending"),
                httparse::Error::Token => ProxyError::BadRequest("invalid method or target"),
                _ => ProxyError::BadRequest("malformed request head"),
            });
        }
    };
    let head_len = match status {
        httparse::Status::Partial => {
            check_request_line(buf, limits)?;
            if buf.len() >= limits.max_header_bytes {
                return Err(ProxyError::HeadersTooLarge("request head too large"));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if head_len > limits.max_request_line {
        check_request_line(buf, limits)?;
    }
    if head_len > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge("request head too large"));
    }
    // httparse fills every field of a Complete parse.
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(ProxyError::BadRequest("malformed request line"));
    };
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    validate(method, raw_target, version, headers, head_len)
}

/// 414 when the request line alone is over its limit (finished or not).
fn check_request_line(buf: &[u8], limits: &Limits) -> Result<(), ProxyError> {
    let window = &buf[..buf.len().min(limits.max_request_line + 1)];
    match window.iter().position(|&b| b == b'\n') {
        Some(_) => Ok(()),
        None if window.len() > limits.max_request_line => Err(ProxyError::UriTooLong),
        None => Ok(()),
    }
}

fn validate<'h, 'b>(
    method: &'b str,
    raw_target: &'b str,
    version: Version,
    headers: &'h [httparse::Header<'b>],
    head_len: usize,
) -> Result<Option<Request<'h, 'b>>, ProxyError> {
    let mut host_header: Option<&'b [u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut has_connection = false;
    let mut expect_continue = false;
    let mut connection_upgrade = false;
    let mut upgrade: Option<&'b [u8]> = None;

    for h in headers {
        let name = h.name;
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if host_header.is_some() {
                    return Err(ProxyError::BadRequest("more than one Host header"));
                }
                host_header = Some(h.value);
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let n = parse_content_length(h.value)
                    .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(ProxyError::BadRequest("conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                has_te = true;
                for coding in list_items(h.value) {
                    if chunked {
                        // Anything after `chunked` (even another `chunked`) makes it non-final.
                        return Err(ProxyError::BadRequest(
                            "chunked must be the final transfer coding",
                        ));
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else if !is_known_coding(coding) {
                        return Err(ProxyError::NotImplemented("unknown transfer coding"));
                    } else {
                        // A known coding we do not decode (gzip, ...); rejected below unless
                        // the list turns out malformed, which is the client's fault first.
                        return Err(te_with_other_coding(headers));
                    }
                }
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for tok in list_items(h.value) {
                    if tok.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    } else {
                        connection_upgrade |= tok.eq_ignore_ascii_case(b"upgrade");
                        has_connection = true;
                    }
                }
            }
            7 if name.eq_ignore_ascii_case("upgrade") => {
                // One Upgrade field is used; a second one is hop-by-hop noise.
                upgrade.get_or_insert(h.value);
            }
            6 if name.eq_ignore_ascii_case("expect") => {
                if super::trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(ProxyError::ExpectationFailed);
                }
            }
            _ => {}
        }
    }

    if has_te {
        if version == Version::Http10 {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if content_length.is_some() {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if !chunked {
            return Err(ProxyError::BadRequest(
                "chunked must be the final transfer coding",
            ));
        }
    }
    let body = if chunked {
        Framing::Chunked
    } else {
        match content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };

    if method == "CONNECT" {
        return Err(ProxyError::NotImplemented("CONNECT is not supported"));
    }
    let (path, query, authority) = split_target(method, raw_target)?;
    let (host, host_from_target) = match authority {
        Some(a) => (a, true),
        None => match host_header {
            Some(h) => {
                let h = std::str::from_utf8(h)
                    .map_err(|_| ProxyError::BadRequest("invalid Host header"))?;
                (h, false)
            }
            None if version == Version::Http11 => {
                return Err(ProxyError::BadRequest("missing Host header"))
            }
            None => ("", false),
        },
    };
    // An empty Host is valid (RFC 9112 §3.2: what a client sends for a target without
    // an authority, and what this proxy forwards for an HTTP/1.0 request without one);
    // a missing one was refused above.
    if !host.is_empty() && !valid_authority(host) {
        return Err(ProxyError::BadRequest("invalid Host"));
    }

    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    Ok(Some(Request {
        method,
        path,
        query,
        version,
        headers,
        host,
        host_from_target,
        body,
        keep_alive,
        expect_continue: expect_continue && body != Framing::None && version == Version::Http11,
        has_connection,
        head_len,
        upgrade: upgrade.filter(|_| connection_upgrade && version == Version::Http11),
    }))
}

/// Transfer codings registered with IANA; others are answered with 501.
fn is_known_coding(c: &[u8]) -> bool {
    ["gzip", "x-gzip", "deflate", "compress", "x-compress"]
        .iter()
        .any(|k| k.as_bytes().eq_ignore_ascii_case(c))
}

/// A known but unsupported coding: 400 if the list does not end in `chunked`
/// (ambiguous framing), otherwise 501 (well-formed, we just cannot decode it).
fn te_with_other_coding(headers: &[httparse::Header<'_>]) -> ProxyError {
    let last = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| list_items(h.value))
        .last();
    match last {
        Some(c) if c.eq_ignore_ascii_case(b"chunked") => {
            ProxyError::NotImplemented("unsupported transfer coding")
        }
        _ => ProxyError::BadRequest("chunked must be the final transfer coding"),
    }
}

/// Path, query (with its `?`) and, for absolute-form, the authority of a target.
type Target<'b> = (&'b str, &'b str, Option<&'b str>);

/// Splits the request target into path, query and, for absolute-form, its authority.
fn split_target<'b>(method: &str, raw: &'b str) -> Result<Target<'b>, ProxyError> {
    let path_query = |t: &'b str| match t.find('?') {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    if raw.starts_with('/') {
        let (path, query) = path_query(raw);
        return Ok((path, query, None));
    }
    if raw == "*" {
        return if method == "OPTIONS" {
            Ok((raw, "", None))
        } else {
            Err(ProxyError::BadRequest(
                "asterisk-form target is only valid for OPTIONS",
            ))
        };
    }
    // Compared as bytes: a target may hold non-ASCII bytes, and slicing the `str` at a
    // byte inside a character panics (found by fuzzing: `GET éééé HTTP/1.1`). A match
    // is ASCII, so the slices below fall on character boundaries.
    let lower_starts = |p: &str| {
        raw.as_bytes()
            .get(..p.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
    };
    let rest = if lower_starts("http://") {
        &raw[7..]
    } else if lower_starts("https://") {
        &raw[8..]
    } else {
        return Err(ProxyError::BadRequest("invalid request target"));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return Err(ProxyError::BadRequest(
            "invalid authority in request target",
        ));
    }
    // `http://host` and `http://host?q` have an empty path, which means `/`.
    let (path, query) = path_query(&rest[end..]);
    Ok((
        if path.is_empty() { "/" } else { path },
        query,
        Some(authority),
    ))
}

/// `host[:port]` where host is a reg-name, IPv4 address or `[IPv6]`.
fn valid_authority(a: &str) -> bool {
    if a.is_empty() || a.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return false;
        };
        let inner = &rest[..close];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (None, &rest[close + 1..])
    } else {
        match a.rfind(':') {
            Some(i) => (Some(&a[..i]), &a[i..]),
            None => (Some(a), ""),
        }
    };
    if let Some(h) = host {
        let reg_name_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
        if h.is_empty() || !h.bytes().all(reg_name_char) {
            return false;
        }
    }
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(p) => p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 16384,
        max_headers: 100,
        max_request_line: 8192,
    };

    fn check(raw: &[u8]) -> Result<Option<(Framing, bool, String, String)>, ProxyError> {
        let mut slots = [const { MaybeUninit::uninit() }; 100];
        parse(raw, &mut slots, &LIMITS).map(|o| {
            o.map(|r| {
                (
                    r.body,
                    r.keep_alive,
                    r.host.to_string(),
                    format!("{}{}", r.path, r.query),
                )
            })
        })
    }

    fn status(raw: &[u8]) -> u16 {
        check(raw).expect_err("should be rejected").status()
    }

    fn upgrade_of(raw: &[u8]) -> Option<Vec<u8>> {
        let mut slots = [const { MaybeUninit::uninit() }; 100];
        let r = parse(raw, &mut slots, &LIMITS).unwrap().unwrap();
        r.upgrade.map(<[u8]>::to_vec)
    }

    #[test]
    fn a_non_ascii_target_is_refused_without_panicking() {
        for raw in [
            &b"GET \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GLT http:/\xd3\xbaxax HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET https:/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(status(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn an_empty_host_is_accepted_and_a_missing_one_is_not() {
        let (_, _, host, _) = check(b"GET / HTTP/1.1\r\nHost: \r\n\r\n").unwrap().unwrap();
        assert_eq!(host, "");
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn an_upgrade_needs_the_connection_token_and_http_1_1() {
        let ws = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(upgrade_of(ws), Some(b"websocket".to_vec()));
        let no_token = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(upgrade_of(no_token), None);
        let old = b"GET / HTTP/1.0\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(upgrade_of(old), None);
    }

    #[test]
    fn a_browser_request_parses_at_every_split_point() {
        let raw = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(check(&raw[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (body, ka, host, target) = check(raw).unwrap().unwrap();
        assert_eq!(
            (body, ka, host.as_str(), target.as_str()),
            (Framing::None, true, "example.com", "/index.html?q=1")
        );
    }

    #[test]
    fn framing_is_derived_from_the_headers() {
        let r = check(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.0, Framing::Length(5));
        let r = check(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.0, Framing::Chunked);
        let r = check(b"POST / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (r.0, r.1),
            (Framing::None, false),
            "1.0 without length has no body and closes"
        );
        let r = check(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.1);
        let r = check(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.1);
    }

    #[test]
    fn ambiguous_or_malformed_requests_get_their_status() {
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400, "missing host");
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n"),
            400,
            "obs-fold"
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"),
            417
        );
        assert_eq!(status(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
        assert_eq!(status(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(long_target.as_bytes()), 414);
        assert_eq!(
            status(&long_target.as_bytes()[..8500]),
            414,
            "even before the line ends"
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(17000)
        );
        assert_eq!(status(big.as_bytes()), 431);
        assert_eq!(
            status(&big.as_bytes()[..16500]),
            431,
            "even before the head ends"
        );
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..101 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(many.as_bytes()), 431);
    }

    #[test]
    fn absolute_form_takes_the_authority_as_host() {
        let (_, _, host, target) =
            check(b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (host.as_str(), target.as_str()),
            ("example.com:8080", "/a?b")
        );
        let (_, _, host, target) = check(b"GET HTTP://h HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((host.as_str(), target.as_str()), ("h", "/"));
        let (_, _, host, target) = check(b"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (host.as_str(), target.as_str()),
            ("h", "/?q=1"),
            "a query without a path means path `/`"
        );
        assert_eq!(status(b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn hosts_are_validated() {
        for ok in [
            "a",
            "example.com:80",
            "[::1]:8080",
            "127.0.0.1",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in ["", "a b", "a:b", "[::1", "a:123456", "a/b", "a@b", ":80"] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}

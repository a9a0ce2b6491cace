//! HTTP/1.1 on bytes, no I/O: request and response heads, body framing, chunked coding,
//! hop-by-hop rules, the head rewrites a proxy does (with the configured header edits),
//! request ids, `Cache-Control` directives, and HTTP-dates (the `Date` value out,
//! `Date`/`Expires`/`Last-Modified` in).
//!
//! Everything here is synchronous and borrows from the connection's buffer, so it is
//! unit-tested directly, including heads split at every byte.

pub mod cache_control;
pub mod chunked;
pub mod date;
pub mod edits;
pub mod path;
pub mod request;
pub mod request_id;
pub mod response;
pub mod rewrite;

/// Header slots on the stack per parse; `server.max_headers` is capped to this.
pub const MAX_HEADER_SLOTS: usize = 512;

/// The HTTP version of a message (only 1.0 and 1.1 exist on this wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: close by default, no chunked coding.
    Http10,
    /// HTTP/1.1: keep-alive by default.
    Http11,
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes (never 0: zero is `None`).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection (responses only).
    Close,
}

/// A `tchar` of RFC 9110 §5.6.2: the bytes of a method, a field name or a protocol name.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Header fields that describe one connection hop and are never forwarded.
///
/// `content-length`, `transfer-encoding` and `expect` are listed too: the proxy
/// re-frames bodies and answers `100-continue` itself, so it writes its own.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
        "content-length",
        "expect",
    ];
    // Cheap length filter first: almost every header fails it.
    matches!(name.len(), 2 | 6 | 7 | 10 | 14 | 16 | 17)
        && HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// True when `name` is listed in any `Connection` header, which makes it hop-by-hop too.
pub fn listed_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|tok| trim(tok).eq_ignore_ascii_case(name.as_bytes()))
}

/// Comma-separated list elements of a header value, trimmed, empty ones skipped.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// The host part of an authority (`example.com:8080` → `example.com`, `[::1]:80` → `[::1]`).
pub fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

/// Strips optional whitespace (SP / HTAB) on both ends.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses a Content-Length value (possibly a list of identical values, as RFC 9110 allows).
///
/// Returns `None` for anything but 1*DIGIT elements that all agree and fit in u64.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for item in value.split(|&b| b == b',') {
        let item = trim(item);
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in item {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        match result {
            Some(prev) if prev != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_recognized_in_any_case() {
        for h in [
            "Connection",
            "keep-alive",
            "TE",
            "Upgrade",
            "Proxy-Connection",
            "Trailer",
            "Transfer-Encoding",
        ] {
            assert!(is_hop_by_hop(h), "{h}");
        }
        for h in [
            "Host",
            "Accept",
            "Trailers",
            "X-Te",
            "Content-Type",
            "Cookie",
        ] {
            assert!(!is_hop_by_hop(h), "{h}");
        }
    }

    #[test]
    fn content_length_accepts_only_digits_and_agreeing_lists() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"+42"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"0x10"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
        assert_eq!(
            parse_content_length(b"18446744073709551615"),
            None,
            "20 digits is refused"
        );
    }

    #[test]
    fn connection_tokens_name_extra_hop_headers() {
        let headers = [httparse::Header {
            name: "Connection",
            value: b"close, X-Secret",
        }];
        assert!(listed_in_connection(&headers, "x-secret"));
        assert!(!listed_in_connection(&headers, "x-other"));
    }
}

//! Response heads from upstreams: zero-copy parse and the framing decision
//! (RFC 9112 section 6.3), including the cases where a response has no body.

use super::{list_items, parse_content_length, Framing, Version};
use crate::error::ProxyError;
use std::mem::MaybeUninit;

/// Largest response head accepted from an upstream.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A parsed upstream response head, borrowing the upstream connection's buffer.
#[derive(Debug)]
pub struct Response<'h, 'b> {
    /// Status code (100-999).
    pub status: u16,
    /// Reason phrase as sent (may be empty).
    pub reason: &'b str,
    /// Response version.
    pub version: Version,
    /// All header fields, in order.
    pub headers: &'h [httparse::Header<'b>],
    /// How the body is delimited on the upstream connection.
    pub body: Framing,
    /// The upstream lets this connection carry another request afterwards.
    pub reusable: bool,
    /// A `Connection` header names other headers (beyond `close` / `keep-alive`).
    pub has_connection: bool,
    /// The upstream's Content-Length header is passed to the client unchanged.
    pub keep_content_length: bool,
    /// The response has a `Date` header (a proxy adds one when it has none).
    pub has_date: bool,
    /// Bytes of the head, including the final blank line.
    pub head_len: usize,
}

impl Response<'_, '_> {
    /// An interim 1xx response (other than 101) that precedes the final one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a response head from the start of `buf`; `Ok(None)` means read more.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
    request_is_head: bool,
) -> Result<Option<Response<'h, 'b>>, ProxyError> {
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(ProxyError::BadResponse("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::BadResponse("too many header fields"))
        }
        Err(_) => return Err(ProxyError::BadResponse("malformed response head")),
    };
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(ProxyError::BadResponse("malformed status line"));
    };
    // httparse takes any three digits; a status outside the defined range cannot be
    // framed safely (its body rules are unknown), so it is never relayed.
    if !(100..=599).contains(&status) {
        return Err(ProxyError::BadResponse("status outside 100-599"));
    }
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let headers: &'h [httparse::Header<'b>] = resp.headers;

    let mut content_length = None;
    let mut te_last_chunked = None;
    let mut close = false;
    let mut keep_alive = false;
    let mut has_connection = false;
    let mut has_date = false;
    for h in headers {
        if h.name.len() == 4 && h.name.eq_ignore_ascii_case("date") {
            has_date = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)
                .ok_or(ProxyError::BadResponse("invalid Content-Length"))?;
            if content_length.is_some_and(|p| p != n) {
                return Err(ProxyError::BadResponse(
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if let Some(last) = list_items(h.value).last() {
                te_last_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in list_items(h.value) {
                let c = tok.eq_ignore_ascii_case(b"close");
                let k = tok.eq_ignore_ascii_case(b"keep-alive");
                close |= c;
                keep_alive |= k;
                has_connection |= !c && !k;
            }
        }
    }

    let bodiless = request_is_head || status < 200 || status == 204 || status == 304;
    let (body, mut keep_content_length) = if bodiless {
        (
            Framing::None,
            content_length.is_some() && status != 204 && status >= 200,
        )
    } else if let Some(chunked) = te_last_chunked {
        // Transfer-Encoding overrides Content-Length; a response carrying both is
        // suspicious, so the connection is not reused (below).
        (
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            },
            false,
        )
    } else {
        match content_length {
            Some(0) => (Framing::None, true),
            Some(n) => (Framing::Length(n), true),
            None => (Framing::Close, false),
        }
    };
    if te_last_chunked.is_some() && !bodiless {
        keep_content_length = false;
    }
    let reusable = body != Framing::Close
        && !(te_last_chunked.is_some() && content_length.is_some())
        && match version {
            Version::Http11 => !close,
            Version::Http10 => keep_alive && !close,
        };
    Ok(Some(Response {
        status,
        reason: resp.reason.unwrap_or(""),
        version,
        headers,
        body,
        reusable,
        has_connection,
        keep_content_length,
        has_date,
        head_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &[u8], head: bool) -> Option<(u16, Framing, bool, bool)> {
        let mut slots = [const { MaybeUninit::uninit() }; 64];
        parse(raw, &mut slots, head)
            .unwrap()
            .map(|r| (r.status, r.body, r.reusable, r.keep_content_length))
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Some((200, Framing::Length(5), true, true))
        );
        assert_eq!(
            check(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Some((200, Framing::Chunked, true, false))
        );
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Some((200, Framing::Close, false, false))
        );
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Some((200, Framing::None, true, true))
        );
        assert_eq!(
            check(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Some((304, Framing::None, true, true))
        );
        assert_eq!(
            check(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Some((204, Framing::None, true, false))
        );
        assert_eq!(
            check(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Some((200, Framing::Length(1), false, true))
        );
        assert_eq!(
            check(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            Some((200, Framing::Length(1), true, true))
        );
        assert_eq!(
            check(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Some((200, Framing::Chunked, false, false)),
            "both headers: chunked wins and the connection is not reused"
        );
    }

    #[test]
    fn partial_heads_wait_at_every_split_point() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(check(&raw[..cut], false), None, "cut {cut}");
        }
    }

    #[test]
    fn statuses_outside_100_to_599_are_bad_responses() {
        for raw in [
            &b"HTTP/1.1 099 Odd\r\nContent-Length: 1\r\n\r\n"[..],
            b"HTTP/1.1 600 Odd\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 000 Zero\r\n\r\n",
        ] {
            let mut slots = [const { MaybeUninit::uninit() }; 64];
            let e = parse(raw, &mut slots, false).unwrap_err();
            assert_eq!(e.status(), 502, "{raw:?}");
        }
        assert_eq!(
            check(b"HTTP/1.1 599 Edge\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap()
                .0,
            599
        );
    }

    #[test]
    fn invalid_lengths_are_bad_responses() {
        let mut slots = [const { MaybeUninit::uninit() }; 64];
        let e = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            &mut slots,
            false,
        )
        .unwrap_err();
        assert_eq!(e.status(), 502);
    }
}

//! `ProxyError`: every way a request can fail, with the one status table and the one
//! retry table.
//!
//! Downstream faults (the client sent something wrong) map to 4xx/5xx-for-client codes;
//! upstream faults map to 502/503/504; failures after the response started, or of a
//! client that went away, cannot be answered and close the connection. Reasons are
//! `&'static str` so the hot path never formats or allocates unless an error happens.

use crate::config::RetryOn;

/// A request-level failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Malformed or ambiguous request syntax or framing.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Request head or a single header line over the limit.
    #[error("request header fields too large: {0}")]
    HeadersTooLarge(&'static str),
    /// A request body over `max_body_bytes` (declared, or counted while streaming).
    #[error("request body larger than max_body_bytes")]
    PayloadTooLarge,
    /// Request target over `max_request_line`.
    #[error("request target too long")]
    UriTooLong,
    /// A feature the request needs that we do not implement (unknown transfer coding, CONNECT).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// An HTTP version other than 1.0 and 1.1.
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// An `Expect` value other than `100-continue`.
    #[error("expectation failed")]
    ExpectationFailed,
    /// The route's `limit` has no token for this client now; a token comes in this
    /// many seconds (`Retry-After`).
    #[error("too many requests (rate limit)")]
    TooManyRequests(u32),
    /// The client's address is refused by an `allow` / `deny` list.
    #[error("forbidden")]
    Forbidden,
    /// No route matched the request.
    #[error("no route matches this request")]
    NoRoute,
    /// The route takes its group's name from the path, and no group has that name.
    #[error("no upstream group by the name the path gives")]
    UnknownUpstream,
    /// The client took too long to send its request head.
    #[error("request head not received in time")]
    RequestTimeout,
    /// The client closed or stalled while sending its body or reading the response:
    /// there is no one to answer.
    #[error("the client went away")]
    ClientGone,
    /// Every server of the group is marked down.
    #[error("no upstream server available")]
    NoServerAvailable,
    /// TCP connect to every candidate server failed.
    #[error("cannot connect to upstream")]
    ConnectFailed,
    /// TCP connect to the last candidate timed out.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// The TLS handshake with the upstream failed (its certificate was refused, or it
    /// does not speak TLS); nothing was sent.
    #[error("TLS handshake with the upstream failed")]
    UpstreamTls,
    /// The upstream sent no response head within `response_header_timeout`.
    #[error("upstream response timed out")]
    ResponseTimeout,
    /// The upstream closed or reset the connection before a complete response head.
    #[error("upstream closed the connection before responding")]
    UpstreamClosed,
    /// Writing the request to a pooled connection failed: the upstream had closed it
    /// while idle, so nothing reached it.
    #[error("upstream closed an idle keep-alive connection")]
    StaleConnection,
    /// A pooled connection closed after the request was sent, before any response
    /// byte: the upstream closed it idle (a resend is safe) or after acting on the
    /// request, and the two cannot be told apart.
    #[error("upstream closed the connection before responding")]
    ClosedIdle,
    /// The upstream's response head was malformed or ambiguous.
    #[error("invalid response from upstream: {0}")]
    BadResponse(&'static str),
    /// The group's `request_timeout` expired before a response head arrived.
    #[error("upstream request timed out (request_timeout)")]
    RequestDeadline,
    /// The upstream answered this 5xx status, it was to be retried, and no other
    /// server could take the retry.
    #[error("upstream answered {0}")]
    UpstreamStatus(u16),
    /// The upstream failed after its response head was relayed: the body is cut short
    /// and the client connection closed.
    #[error("upstream failed mid-response")]
    ResponseAborted,
    /// The request said `only-if-cached`, and nothing stored could answer it.
    #[error("not in the cache (only-if-cached)")]
    NotCached,
}

/// Whether a failure on a pooled connection may be resent on a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Any request: nothing reached the upstream.
    Always,
    /// Only a request that is safe to send twice.
    IfIdempotent,
}

impl ProxyError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        use ProxyError::*;
        match self {
            BadRequest(_) => 400,
            NoRoute => 404,
            Forbidden => 403,
            TooManyRequests(_) => 429,
            // nginx's code for a request the client abandoned; never sent.
            ClientGone => 499,
            RequestTimeout => 408,
            ExpectationFailed => 417,
            HeadersTooLarge(_) => 431,
            PayloadTooLarge => 413,
            UriTooLong => 414,
            NotImplemented(_) => 501,
            VersionNotSupported => 505,
            ConnectFailed | UpstreamTls | UpstreamClosed | StaleConnection | ClosedIdle
            | BadResponse(_) | ResponseAborted | UnknownUpstream => 502,
            NoServerAvailable => 503,
            ConnectTimeout | ResponseTimeout | RequestDeadline | NotCached => 504,
            UpstreamStatus(s) => s,
        }
    }

    /// A short static description for logs (passive health reasons).
    pub fn reason(self) -> &'static str {
        use ProxyError::*;
        match self {
            ConnectFailed => "connect failed",
            UpstreamTls => "TLS handshake failed",
            ConnectTimeout => "connect timed out",
            ResponseTimeout => "no response head in time",
            UpstreamClosed | ClosedIdle => "connection closed before a response",
            StaleConnection => "idle connection closed",
            ResponseAborted => "failed mid-response",
            BadResponse(r) => r,
            UpstreamStatus(_) => "error status",
            _ => self.kind(),
        }
    }

    /// True when a response can still be sent for it: not when the client is gone or
    /// the upstream's response already started.
    pub fn is_answerable(self) -> bool {
        !matches!(self, ProxyError::ClientGone | ProxyError::ResponseAborted)
    }

    /// The retry table: true when, after this failure before any response byte reached
    /// the client, an idempotent request whose body is buffered may go to another
    /// server of the group (within `retries` and the retry budget). Connect failures
    /// always fail over: nothing was sent.
    pub fn is_retryable(self, on: &RetryOn) -> bool {
        use ProxyError::*;
        match self {
            ConnectFailed | UpstreamTls | ConnectTimeout | StaleConnection => true,
            ResponseTimeout => on.timeout,
            UpstreamClosed | ClosedIdle => on.reset,
            UpstreamStatus(s) => on.status(s),
            _ => false,
        }
    }

    /// Whether the same request may be resent once on a fresh connection to the same
    /// server: only after a pooled connection turned out dead.
    pub fn resend(self) -> Option<Resend> {
        match self {
            ProxyError::StaleConnection => Some(Resend::Always),
            ProxyError::ClosedIdle => Some(Resend::IfIdempotent),
            _ => None,
        }
    }

    /// True when this failure counts against the server for passive health.
    /// `fail_on_status`: the group's statuses that count.
    pub fn counts_against_server(self, fail_on_status: &[u16]) -> bool {
        use ProxyError::*;
        match self {
            ConnectFailed | UpstreamTls | ConnectTimeout | ResponseTimeout | UpstreamClosed
            | ClosedIdle | BadResponse(_) => true,
            UpstreamStatus(s) => fail_on_status.contains(&s),
            // The request's own deadline, a pooled connection the server closed idle, or
            // a body cut short after the server answered (it did answer).
            _ => false,
        }
    }

    /// True when the client is at fault; such a connection is never kept alive,
    /// since what follows the bad bytes cannot be trusted to be a request boundary.
    pub fn is_client_fault(self) -> bool {
        self.status() < 500 && self != ProxyError::NoRoute
            || matches!(
                self,
                ProxyError::NotImplemented(_) | ProxyError::VersionNotSupported
            )
    }

    /// The machine-readable name of the error, used in logs.
    pub fn kind(self) -> &'static str {
        use ProxyError::*;
        match self {
            BadRequest(_) => "BadRequest",
            HeadersTooLarge(_) => "HeadersTooLarge",
            UriTooLong => "UriTooLong",
            PayloadTooLarge => "PayloadTooLarge",
            NotImplemented(_) => "NotImplemented",
            VersionNotSupported => "VersionNotSupported",
            ExpectationFailed => "ExpectationFailed",
            NoRoute => "NoRoute",
            Forbidden => "Forbidden",
            TooManyRequests(_) => "TooManyRequests",
            UnknownUpstream => "UnknownUpstream",
            RequestTimeout => "RequestTimeout",
            ClientGone => "ClientGone",
            NoServerAvailable => "NoServerAvailable",
            ConnectFailed => "ConnectFailed",
            UpstreamTls => "UpstreamTls",
            ConnectTimeout => "ConnectTimeout",
            ResponseTimeout => "ResponseTimeout",
            UpstreamClosed | ClosedIdle => "UpstreamClosed",
            StaleConnection => "StaleConnection",
            BadResponse(_) => "BadResponse",
            RequestDeadline => "RequestTimeout",
            UpstreamStatus(_) => "UpstreamStatus",
            ResponseAborted => "ResponseAborted",
            NotCached => "NotCached",
        }
    }
}

/// The standard reason phrase for the statuses the proxy and its admin API produce.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        429 => "Too Many Requests",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        408 => "Request Timeout",
        499 => "Client Closed Request",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// How proxy-made error bodies are written (`[server] error_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorFormat {
    /// One line of plain text.
    #[default]
    Text,
    /// `{"error":"ConnectFailed","message":"...","upstream":"web"}`.
    Json,
}

/// A proxy-made error response to write.
#[derive(Debug, Clone, Copy)]
pub struct ErrorReply<'a> {
    /// What failed.
    pub err: ProxyError,
    /// The group, named in the body for upstream faults so operators can tell which failed.
    pub upstream: Option<&'a str>,
    /// Send `Connection: close` (the connection ends after it).
    pub close: bool,
    /// The request was HEAD: no body (its length is still sent).
    pub is_head: bool,
    /// How the body is written.
    pub format: ErrorFormat,
    /// The `Date` header value.
    pub date: &'a [u8],
}

/// Writes a complete error response into `out`.
pub fn write_error_response(out: &mut Vec<u8>, r: &ErrorReply<'_>) {
    use std::io::Write;
    let (err, upstream, close, is_head, format) = (r.err, r.upstream, r.close, r.is_head, r.format);
    let status = err.status();
    let (kind, body) = match format {
        ErrorFormat::Text => {
            let mut body = format!("{status} {}: {err}", reason_phrase(status));
            if let Some(name) = upstream {
                body.push_str(&format!(" (upstream `{name}`)"));
            }
            body.push('\n');
            ("text/plain; charset=utf-8", body)
        }
        ErrorFormat::Json => {
            let mut body = format!(
                "{{\"error\":\"{}\",\"status\":{status},\"message\":\"{}\"",
                err.kind(),
                json_escape(&err.to_string())
            );
            if let Some(name) = upstream {
                body.push_str(&format!(",\"upstream\":\"{}\"", json_escape(name)));
            }
            body.push_str("}\n");
            ("application/json", body)
        }
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nvia: 1.1 ringway\r\ndate: ",
        reason_phrase(status),
        body.len(),
    );
    out.extend_from_slice(r.date);
    if let ProxyError::TooManyRequests(secs) = err {
        let _ = write!(out, "\r\nretry-after: {secs}");
    }
    let _ = write!(
        out,
        "\r\n{}\r\n{}",
        if close { "connection: close\r\n" } else { "" },
        if is_head { "" } else { &body },
    );
}

/// Escapes a string for a JSON string literal.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(upstream: Option<&str>, close: bool, format: ErrorFormat) -> ErrorReply<'_> {
        ErrorReply {
            err: ProxyError::ConnectFailed,
            upstream,
            close,
            is_head: false,
            format,
            date: b"Sun, 06 Nov 1994 08:49:37 GMT",
        }
    }

    #[test]
    fn each_error_maps_to_its_status() {
        assert_eq!(ProxyError::BadRequest("x").status(), 400);
        assert_eq!(ProxyError::HeadersTooLarge("x").status(), 431);
        assert_eq!(ProxyError::NoServerAvailable.status(), 503);
        assert_eq!(ProxyError::ResponseTimeout.status(), 504);
        assert!(ProxyError::BadRequest("x").is_client_fault());
        assert!(!ProxyError::ConnectFailed.is_client_fault());
        assert!(!ProxyError::ClientGone.is_answerable());
        assert!(!ProxyError::ResponseAborted.is_answerable());
    }

    #[test]
    fn the_retry_table_follows_retry_on() {
        let none = RetryOn::default();
        let all = RetryOn {
            connect: true,
            timeout: true,
            reset: true,
            status_502: true,
            status_503: true,
            status_504: true,
        };
        assert!(
            ProxyError::ConnectFailed.is_retryable(&none),
            "connects always fail over"
        );
        for e in [
            ProxyError::ResponseTimeout,
            ProxyError::UpstreamClosed,
            ProxyError::UpstreamStatus(503),
        ] {
            assert!(!e.is_retryable(&none) && e.is_retryable(&all), "{e:?}");
        }
        assert!(!ProxyError::UpstreamStatus(500).is_retryable(&all));
        assert!(!ProxyError::RequestDeadline.is_retryable(&all));
        assert!(!ProxyError::BadResponse("x").is_retryable(&all));
        assert_eq!(ProxyError::StaleConnection.resend(), Some(Resend::Always));
        assert_eq!(ProxyError::ClosedIdle.resend(), Some(Resend::IfIdempotent));
        assert_eq!(ProxyError::UpstreamClosed.resend(), None);
        assert!(!ProxyError::RequestDeadline.counts_against_server(&[]));
        assert!(ProxyError::UpstreamStatus(500).counts_against_server(&[500]));
        assert!(!ProxyError::UpstreamStatus(500).counts_against_server(&[]));
    }

    #[test]
    fn error_responses_are_complete_and_framed() {
        let mut out = Vec::new();
        write_error_response(&mut out, &reply(Some("web"), true, ErrorFormat::Text));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(
            text.contains("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(body.contains("`web`"));
    }

    #[test]
    fn json_errors_name_the_kind_and_upstream() {
        let mut out = Vec::new();
        write_error_response(&mut out, &reply(Some("we\"b"), false, ErrorFormat::Json));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("content-type: application/json\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            body,
            "{\"error\":\"ConnectFailed\",\"status\":502,\"message\":\"cannot connect to upstream\",\"upstream\":\"we\\\"b\"}\n"
        );
    }
}

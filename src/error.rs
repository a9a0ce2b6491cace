//! `ProxyError`: every way a request can fail, with the one table mapping it to a response.
//!
//! Downstream faults (the client sent something wrong) map to 4xx/5xx-for-client codes;
//! upstream faults map to 502/503/504. Reasons are `&'static str` so the hot path never
//! formats or allocates unless an error actually happens.

/// A request-level failure, answered by the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Malformed or ambiguous request syntax or framing.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Request head or a single header line over the limit.
    #[error("request header fields too large: {0}")]
    HeadersTooLarge(&'static str),
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
    /// No route matched the request.
    #[error("no route matches this request")]
    NoRoute,
    /// The client took too long to send its request head.
    #[error("request head not received in time")]
    RequestTimeout,
    /// Every server of the group is marked down.
    #[error("no upstream server available")]
    NoServerAvailable,
    /// TCP connect to every candidate server failed.
    #[error("cannot connect to upstream")]
    ConnectFailed,
    /// TCP connect to the last candidate timed out.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// The upstream sent no response head within `response_header_timeout`.
    #[error("upstream response timed out")]
    ResponseTimeout,
    /// The upstream closed or reset the connection before a complete response head.
    #[error("upstream closed the connection before responding")]
    UpstreamClosed,
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
}

impl ProxyError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        use ProxyError::*;
        match self {
            BadRequest(_) => 400,
            NoRoute => 404,
            RequestTimeout => 408,
            ExpectationFailed => 417,
            HeadersTooLarge(_) => 431,
            UriTooLong => 414,
            NotImplemented(_) => 501,
            VersionNotSupported => 505,
            ConnectFailed | UpstreamClosed | BadResponse(_) => 502,
            NoServerAvailable => 503,
            ConnectTimeout | ResponseTimeout | RequestDeadline => 504,
            UpstreamStatus(s) => s,
        }
    }

    /// A short static description for logs (passive health reasons).
    pub fn reason(self) -> &'static str {
        use ProxyError::*;
        match self {
            ConnectFailed => "connect failed",
            ConnectTimeout => "connect timed out",
            ResponseTimeout => "no response head in time",
            UpstreamClosed => "connection closed before a response",
            BadResponse(r) => r,
            UpstreamStatus(_) => "error status",
            _ => self.kind(),
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
            NotImplemented(_) => "NotImplemented",
            VersionNotSupported => "VersionNotSupported",
            ExpectationFailed => "ExpectationFailed",
            NoRoute => "NoRoute",
            RequestTimeout => "RequestTimeout",
            NoServerAvailable => "NoServerAvailable",
            ConnectFailed => "ConnectFailed",
            ConnectTimeout => "ConnectTimeout",
            ResponseTimeout => "ResponseTimeout",
            UpstreamClosed => "UpstreamClosed",
            BadResponse(_) => "BadResponse",
            RequestDeadline => "RequestTimeout",
            UpstreamStatus(_) => "UpstreamStatus",
        }
    }
}

/// The standard reason phrase for the statuses the proxy itself produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
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

/// Writes a complete error response into `out`.
///
/// `upstream` names the group for upstream faults so operators can tell which one failed;
/// `is_head` omits the body (a HEAD response has none) but keeps its length.
pub fn write_error_response(
    out: &mut Vec<u8>,
    err: ProxyError,
    upstream: Option<&str>,
    close: bool,
    is_head: bool,
    format: ErrorFormat,
) {
    use std::io::Write;
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
        "HTTP/1.1 {status} {}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nvia: 1.1 ringway\r\n{}\r\n{}",
        reason_phrase(status),
        body.len(),
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

    #[test]
    fn each_error_maps_to_its_status() {
        assert_eq!(ProxyError::BadRequest("x").status(), 400);
        assert_eq!(ProxyError::HeadersTooLarge("x").status(), 431);
        assert_eq!(ProxyError::NoServerAvailable.status(), 503);
        assert_eq!(ProxyError::ResponseTimeout.status(), 504);
        assert!(ProxyError::BadRequest("x").is_client_fault());
        assert!(!ProxyError::ConnectFailed.is_client_fault());
    }

    #[test]
    fn error_responses_are_complete_and_framed() {
        let mut out = Vec::new();
        write_error_response(
            &mut out,
            ProxyError::ConnectFailed,
            Some("web"),
            true,
            false,
            ErrorFormat::Text,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(text.contains("connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(body.contains("`web`"));
    }

    #[test]
    fn json_errors_name_the_kind_and_upstream() {
        let mut out = Vec::new();
        write_error_response(
            &mut out,
            ProxyError::ConnectFailed,
            Some("we\"b"),
            false,
            false,
            ErrorFormat::Json,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("content-type: application/json\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            body,
            "{\"error\":\"ConnectFailed\",\"status\":502,\"message\":\"cannot connect to upstream\",\"upstream\":\"we\\\"b\"}\n"
        );
    }
}

//! Head rewriting: the request head sent upstream and the response head sent back.
//!
//! Both are written straight into a reused output buffer from the borrowed parse, with
//! hop-by-hop fields dropped, framing headers re-derived, and the forwarding headers
//! (`X-Forwarded-*`, `Forwarded`, `Via`) added. No allocation beyond buffer growth.

use super::edits::{HeaderEdits, Part, Template, Var};
use super::request::Request;
use super::response::Response;
use super::{is_hop_by_hop, listed_in_connection, Framing, Version};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// The `Via` token this proxy adds.
pub const VIA: &[u8] = b"1.1 ringway";

/// The client's address, formatted once per connection for forwarding headers.
#[derive(Debug, Clone)]
pub struct Peer {
    text: [u8; 48],
    len: u8,
    v6: bool,
    port: u16,
}

impl Peer {
    /// Formats the client address.
    pub fn new(addr: SocketAddr) -> Peer {
        let mut text = [0u8; 48];
        let len = match addr.ip() {
            // Done by hand: `fmt` costs more than the rest of accepting on `churn`.
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[n] = b'.';
                        n += 1;
                    }
                    let digits = [octet / 100, octet / 10 % 10, octet % 10];
                    let skip = if octet >= 100 {
                        0
                    } else if octet >= 10 {
                        1
                    } else {
                        2
                    };
                    for d in &digits[skip..] {
                        text[n] = b'0' + d;
                        n += 1;
                    }
                }
                n
            }
            IpAddr::V6(v6) => {
                let mut cursor = &mut text[..];
                // An IPv6 address is at most 45 characters, so it always fits.
                let _ = write!(cursor, "{v6}");
                48 - cursor.len()
            }
        };
        Peer {
            text,
            len: len as u8,
            v6: addr.is_ipv6(),
            port: addr.port(),
        }
    }

    /// The address as text (`127.0.0.1`, `::1`).
    pub fn ip(&self) -> &[u8] {
        &self.text[..self.len as usize]
    }

    /// The client's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Values of the variables header templates may use, for one request.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The client.
    pub peer: &'a Peer,
    /// `http` or `https`: the scheme of the listener the request came in on.
    pub scheme: &'a str,
    /// The request's host without port (`$host`).
    pub host: &'a [u8],
    /// The request id (`$request_id`); empty when ids are off.
    pub request_id: &'a [u8],
    /// The server that answered (`$upstream_addr`), once known.
    pub upstream: Option<SocketAddr>,
}

/// Header edits to apply to one message: the global scope, then the route's.
#[derive(Debug, Clone, Copy)]
pub struct Edits<'a> {
    /// `[server]` edits, then the route's edits (which win on the same name).
    pub scopes: [&'a HeaderEdits; 2],
    /// Variable values.
    pub vars: Vars<'a>,
}

impl Edits<'_> {
    /// True when an incoming or automatic header `name` must not be written as is.
    pub fn drops(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.drops(name))
    }

    /// Writes the `set` headers (a route's replaces the global one of the same name),
    /// then every `add` header.
    pub fn write(&self, out: &mut Vec<u8>) {
        let [global, route] = self.scopes;
        for (name, t) in &global.set {
            if !route.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                self.write_one(out, name, t);
            }
        }
        for (name, t) in route.set.iter().chain(&global.add).chain(&route.add) {
            self.write_one(out, name, t);
        }
    }

    fn write_one(&self, out: &mut Vec<u8>, name: &str, t: &Template) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for part in &t.parts {
            match part {
                Part::Lit(bytes) => out.extend_from_slice(bytes),
                Part::Var(v) => match v {
                    Var::RemoteAddr => out.extend_from_slice(self.vars.peer.ip()),
                    Var::RemotePort => push_u64(out, u64::from(self.vars.peer.port())),
                    Var::Host => out.extend_from_slice(self.vars.host),
                    Var::Scheme => out.extend_from_slice(self.vars.scheme.as_bytes()),
                    Var::RequestId => out.extend_from_slice(self.vars.request_id),
                    Var::UpstreamAddr => {
                        if let Some(a) = self.vars.upstream {
                            // Writing into a Vec cannot fail.
                            let _ = write!(out, "{a}");
                        }
                    }
                },
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// How the request is forwarded: its (normalized, maybe rewritten) target and edits.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// The scheme the client used (`X-Forwarded-Proto`, `Forwarded: proto=`).
    pub scheme: &'a str,
    /// The path, written as these pieces in order (a rewrite prefix, maybe a `/`, then
    /// the rest).
    pub path: [&'a [u8]; 3],
    /// The query string with its `?`, or empty.
    pub query: &'a [u8],
    /// Header edits, `None` when no scope has any (the fast path).
    pub edits: Option<Edits<'a>>,
    /// A generated request id to send as `X-Request-Id` (the client sent none).
    pub request_id: Option<&'a [u8]>,
    /// Leave out `If-None-Match` and `If-Modified-Since`: the cache answers them itself,
    /// and asks its own when it revalidates (a 304 to the client's would be unstorable).
    pub strip_conditionals: bool,
    /// Ask the upstream to switch to this protocol (`Connection: upgrade` and this
    /// `Upgrade` value): a request the proxy will tunnel after a 101.
    pub upgrade: Option<&'a [u8]>,
}

/// Writes the request head for the upstream into `out`.
///
/// `body` is the request framing the proxy will produce (Content-Length or chunked).
pub fn write_upstream_request(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    peer: &Peer,
    body: Framing,
    fwd: &Forward<'_>,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    for piece in fwd.path {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(fwd.query);
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let edited = |name: &str| fwd.edits.as_ref().is_some_and(|e| e.drops(name));
    let conditional = |name: &str| {
        fwd.strip_conditionals
            && (name.eq_ignore_ascii_case("if-none-match")
                || name.eq_ignore_ascii_case("if-modified-since"))
    };
    let mut xff_seen = false;
    let mut fwd_seen = false;
    let mut wrote_host = false;
    for h in req.headers {
        let name = h.name;
        if is_hop_by_hop(name)
            || (req.has_connection && listed_in_connection(req.headers, name))
            || edited(name)
            || conditional(name)
        {
            continue;
        }
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if req.host_from_target {
                    continue;
                }
                wrote_host = true;
            }
            15 if name.eq_ignore_ascii_case("x-forwarded-for") => {
                xff_seen = true;
                continue;
            }
            9 if name.eq_ignore_ascii_case("forwarded") => {
                fwd_seen = true;
                continue;
            }
            16 if name.eq_ignore_ascii_case("x-forwarded-host") => continue,
            17 if name.eq_ignore_ascii_case("x-forwarded-proto") => continue,
            _ => {}
        }
        write_header(out, name.as_bytes(), h.value);
    }
    // RFC 9112 §3.2: every HTTP/1.1 request has a Host, empty when the client (an
    // HTTP/1.0 one) named no authority.
    if !wrote_host && !edited("host") {
        write_header(out, b"Host", req.host.as_bytes());
    }
    if let Some(id) = fwd.request_id.filter(|_| !edited("x-request-id")) {
        write_header(out, b"X-Request-Id", id);
    }

    if !edited("x-forwarded-for") {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if xff_seen {
            append_existing(out, req.headers, "x-forwarded-for");
        }
        out.extend_from_slice(peer.ip());
        out.extend_from_slice(b"\r\n");
    }
    if !edited("x-forwarded-proto") {
        write_header(out, b"X-Forwarded-Proto", fwd.scheme.as_bytes());
    }
    if !req.host.is_empty() && !edited("x-forwarded-host") {
        write_header(out, b"X-Forwarded-Host", req.host.as_bytes());
    }
    if !edited("forwarded") {
        out.extend_from_slice(b"Forwarded: ");
        if fwd_seen {
            append_existing(out, req.headers, "forwarded");
        }
        out.extend_from_slice(b"for=");
        if peer.v6 {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(peer.ip());
            out.extend_from_slice(b"]\"");
        } else {
            out.extend_from_slice(peer.ip());
        }
        if !req.host.is_empty() && !req.host.contains('"') {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(req.host.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(fwd.scheme.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !edited("via") {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(VIA);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = &fwd.edits {
        e.write(out);
    }
    if let Some(protocol) = fwd.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        write_header(out, b"Upgrade", protocol);
    }
    write_framing(out, body);
    out.extend_from_slice(b"\r\n");
}

/// How a response head is written for the client.
#[derive(Debug, Clone, Copy)]
pub struct ClientHead<'a> {
    /// The framing the proxy sends the body with.
    pub body: Framing,
    /// The client's HTTP version.
    pub version: Version,
    /// The client connection ends after this response.
    pub close: bool,
    /// Header edits, `None` when no scope has any.
    pub edits: Option<&'a Edits<'a>>,
    /// The `Date` value to add when the upstream sent none (RFC 9110 §6.6.1).
    pub date: &'a [u8],
    /// The `X-Cache` line, on routes that cache.
    pub x_cache: Option<&'static [u8]>,
    /// A 101 the proxy will tunnel: `Connection: upgrade` and this `Upgrade` value are
    /// written instead of any framing.
    pub upgrade: Option<&'a [u8]>,
}

/// Writes the response head for the client into `out`.
pub fn write_client_response(out: &mut Vec<u8>, resp: &Response<'_, '_>, head: &ClientHead<'_>) {
    let (body, client_version, close, edits) = (head.body, head.version, head.close, head.edits);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, resp.status);
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let edited = |name: &str| edits.is_some_and(|e| e.drops(name));
    for h in resp.headers {
        let name = h.name;
        // Content-Length stays when it is the framing we use or describes a bodiless
        // response (HEAD, 304): it is end-to-end information there.
        let keep_length = name.eq_ignore_ascii_case("content-length") && resp.keep_content_length;
        if !keep_length
            && (is_hop_by_hop(name)
                || (resp.has_connection && listed_in_connection(resp.headers, name)))
        {
            continue;
        }
        if edited(name) {
            continue;
        }
        write_header(out, name.as_bytes(), h.value);
    }
    if !edited("via") {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(VIA);
        out.extend_from_slice(b"\r\n");
    }
    if !resp.has_date && !edited("date") {
        write_header(out, b"Date", head.date);
    }
    if let Some(line) = head.x_cache {
        out.extend_from_slice(line);
    }
    if let Some(e) = edits {
        e.write(out);
    }
    if let Some(protocol) = head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        write_header(out, b"Upgrade", protocol);
        out.extend_from_slice(b"\r\n");
        return;
    }
    if !resp.keep_content_length {
        write_framing(out, body);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an interim (1xx) response head for an HTTP/1.1 client: its status line and
/// end-to-end headers (RFC 9110 §15.2: a proxy forwards them, then the final response).
pub fn write_interim_response(out: &mut Vec<u8>, resp: &Response<'_, '_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, resp.status);
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        if is_hop_by_hop(h.name)
            || (resp.has_connection && listed_in_connection(resp.headers, h.name))
        {
            continue;
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_framing(out: &mut Vec<u8>, body: Framing) {
    match body {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends every value of the named header, each followed by `", "`.
fn append_existing(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], name: &str) {
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = super::trim(h.value);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    // httparse guarantees three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

/// Appends a decimal number without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, Limits};
    use std::mem::MaybeUninit;

    fn rewrite(raw: &[u8], peer: &str) -> String {
        let limits = Limits {
            max_header_bytes: 16384,
            max_headers: 100,
            max_request_line: 8192,
        };
        let mut slots = [const { MaybeUninit::uninit() }; 100];
        let req = request::parse(raw, &mut slots, &limits).unwrap().unwrap();
        let mut out = Vec::new();
        let fwd = Forward {
            upgrade: None,
            scheme: "http",
            path: [req.path.as_bytes(), b"", b""],
            query: req.query.as_bytes(),
            edits: None,
            request_id: None,
            strip_conditionals: false,
        };
        write_upstream_request(
            &mut out,
            &req,
            &Peer::new(peer.parse().unwrap()),
            req.body,
            &fwd,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarding_headers_are_added_and_hop_by_hop_removed() {
        let out = rewrite(
            b"POST /x HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTrailer: y\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n",
            "127.0.0.1:5555",
        );
        assert!(
            out.starts_with("POST /x HTTP/1.1\r\nHost: example.com\r\n"),
            "{out}"
        );
        for gone in [
            "Connection",
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Upgrade",
            "Proxy-Connection",
            "Trailer",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("Accept: */*\r\n"));
        assert!(out.contains("X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"));
        assert!(out.contains("X-Forwarded-Proto: http\r\n"));
        assert!(out.contains("X-Forwarded-Host: example.com\r\n"));
        assert!(out.contains("Forwarded: for=127.0.0.1;host=\"example.com\";proto=http\r\n"));
        assert!(out.contains("Via: 1.1 ringway\r\n"));
        assert!(out.ends_with("Content-Length: 3\r\n\r\n"));
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let out = rewrite(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "[::1]:80");
        assert!(
            out.contains("Forwarded: for=\"[::1]\";host=\"h\";proto=http\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-For: ::1\r\n"));
    }

    #[test]
    fn absolute_form_replaces_the_host_header() {
        let out = rewrite(
            b"GET http://real.example/p HTTP/1.1\r\nHost: fake\r\n\r\n",
            "127.0.0.1:1",
        );
        assert!(out.starts_with("GET /p HTTP/1.1\r\n"));
        assert!(
            out.contains("Host: real.example\r\n") && !out.contains("fake"),
            "{out}"
        );
    }

    #[test]
    fn an_http10_request_without_host_gets_an_empty_one() {
        let out = rewrite(b"GET /x HTTP/1.0\r\n\r\n", "127.0.0.1:1");
        assert!(out.starts_with("GET /x HTTP/1.1\r\nHost: \r\n"), "{out}");
        let out = rewrite(b"GET http://a.example?q=1 HTTP/1.0\r\n\r\n", "127.0.0.1:1");
        assert!(
            out.starts_with("GET /?q=1 HTTP/1.1\r\nHost: a.example\r\n"),
            "{out}"
        );
    }

    #[test]
    fn responses_get_a_date_when_they_have_none_and_interim_heads_drop_hop_headers() {
        use crate::http::response;
        let head = ClientHead {
            upgrade: None,
            body: Framing::Length(2),
            version: Version::Http11,
            close: false,
            edits: None,
            date: b"Sun, 06 Nov 1994 08:49:37 GMT",
            x_cache: None,
        };
        let write = |raw: &[u8]| {
            let mut slots = [const { MaybeUninit::uninit() }; 16];
            let resp = response::parse(raw, &mut slots, false).unwrap().unwrap();
            let mut out = Vec::new();
            if resp.status < 200 {
                write_interim_response(&mut out, &resp);
            } else {
                write_client_response(&mut out, &resp, &head);
            }
            String::from_utf8(out).unwrap()
        };
        let out = write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(
            out.contains("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
            "{out}"
        );
        let out = write(
            b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(
            out.matches("ate: ").count(),
            1,
            "the upstream's Date is kept: {out}"
        );
        let out = write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x\r\nX: y\r\n\r\n");
        assert_eq!(
            out,
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        );
    }

    #[test]
    fn ipv4_peers_format_like_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
        ] {
            let p = Peer::new(format!("{ip}:80").parse().unwrap());
            assert_eq!(p.ip(), ip.as_bytes());
        }
    }

    #[test]
    fn numbers_format_without_fmt() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
    }
}

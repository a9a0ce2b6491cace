//! Protocol corner cases between client, proxy and upstream: upstream status codes
//! outside 100-599 or malformed (502, connection not reused), interim 1xx responses
//! (forwarded to HTTP/1.1 clients, never to HTTP/1.0 ones, `100 Continue` never
//! unasked), HTTP/1.0 requests upgraded to HTTP/1.1 with a Host, absolute-form targets
//! without a path, and the `Date` header on forwarded and proxy-made responses.
//!
//! The upstream here is a raw one ([`RawUpstream`]) that answers canned bytes, so a
//! test controls exactly what the proxy has to parse; the client is `support::Client`.

use crate::support::{config_with, start_proxy, Client, IO_TIMEOUT};
use ringway::server::Running;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Raw upstream sockets wake this often to notice that their server was dropped.
const TICK: Duration = Duration::from_millis(50);
/// Longest a raw upstream connection waits for a request before giving up.
const IDLE: Duration = Duration::from_secs(30);
/// Largest request head the raw upstream reads; the proxy's heads are far smaller.
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------------
// A raw upstream: canned bytes per request, every head recorded
// ---------------------------------------------------------------------------------

/// What the raw upstream does with a connection after writing a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Waits for the next request on the same connection.
    Keep,
    /// Closes the connection.
    Close,
}

struct RawShared {
    /// Reply `i` answers the `i`-th request received (over all connections); the last
    /// one answers every request after it.
    replies: Vec<(Vec<u8>, After)>,
    /// Requests received so far, which picks the next reply.
    next: AtomicUsize,
    /// TCP connections accepted so far.
    accepted: AtomicUsize,
    /// Every request head received, in arrival order.
    heads: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// An upstream on 127.0.0.1:0 that reads request heads (no bodies) and answers each
/// with canned bytes; stopped on drop.
struct RawUpstream {
    addr: SocketAddr,
    shared: Arc<RawShared>,
    accept: Option<JoinHandle<()>>,
}

impl RawUpstream {
    /// Starts an upstream answering request `i` with `replies[i]` (the last repeats).
    fn start(replies: Vec<(Vec<u8>, After)>) -> RawUpstream {
        assert!(!replies.is_empty(), "a raw upstream needs a reply");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the raw upstream");
        let addr = listener.local_addr().expect("raw upstream addr");
        // Non-blocking accept polled with a short sleep, so dropping needs no wake-up
        // connection.
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(RawShared {
            replies,
            next: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            heads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("raw-upstream".into())
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            s.accepted.fetch_add(1, Ordering::SeqCst);
                            let s = s.clone();
                            std::thread::spawn(move || {
                                let _ = serve(&s, stream);
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .expect("spawn the raw upstream");
        RawUpstream {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// An upstream answering every request with the same bytes, keeping connections.
    fn always(reply: Vec<u8>) -> RawUpstream {
        RawUpstream::start(vec![(reply, After::Keep)])
    }

    /// TCP connections accepted so far.
    fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Every request head received so far, in arrival order.
    fn heads(&self) -> Vec<String> {
        self.shared.heads.lock().unwrap().clone()
    }

    /// The only request head received; fails the test if there is not exactly one.
    fn only_head(&self) -> String {
        let heads = self.heads();
        assert_eq!(heads.len(), 1, "the upstream got {heads:?}");
        heads.into_iter().next().unwrap()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection: reads a head, records it, writes the canned reply, repeats
/// while the reply says to keep the connection.
fn serve(s: &RawShared, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(s, &mut stream, &mut buf)? else {
            return Ok(());
        };
        s.heads
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        let i = s.next.fetch_add(1, Ordering::SeqCst);
        let (reply, after) = &s.replies[i.min(s.replies.len() - 1)];
        stream.write_all(reply)?;
        if *after == After::Close {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Reads one request head (through the blank line) off `buf` and the socket;
/// `Ok(None)` on EOF, after `IDLE`, or once the upstream is dropped.
fn read_head(
    s: &RawShared,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + IDLE;
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok(Some(std::mem::replace(buf, rest)));
        }
        if buf.len() > MAX_HEAD || s.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return Ok(None);
        }
        match stream.read(&mut tmp) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A proxy in front of `up` alone, routed from `/`. `max_fails` is high so that the
/// failures these tests provoke never mark the only server down (which would turn the
/// next request into a 503 that never reaches it).
fn proxy_for(up: &RawUpstream) -> (Running, SocketAddr) {
    start_proxy(&config_with(&[up.addr], "max_fails = 1000"))
}

/// A complete 200 response with `body` and a Content-Length.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The first line of a recorded head.
fn request_line(head: &str) -> &str {
    head.split("\r\n").next().unwrap_or_default()
}

/// Every value of header `name` in a recorded head, trimmed.
fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// True when `v` has the IMF-fixdate shape: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_imf_fixdate(v: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if v.len() != 29 || !v.is_ascii() {
        return false;
    }
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    DAYS.contains(&&v[0..3])
        && &v[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &v[25..] == " GMT"
}

/// Asserts a response carries exactly one Date, shaped as an IMF-fixdate.
fn assert_one_imf_date(r: &crate::support::Response, what: &str) {
    let dates = r.headers.all("date");
    assert_eq!(dates.len(), 1, "{what}: Date headers {dates:?} in {r:?}");
    assert!(
        is_imf_fixdate(dates[0]),
        "{what}: Date {:?} is not an IMF-fixdate",
        dates[0]
    );
}

// ---------------------------------------------------------------------------------
// Upstream status lines
// ---------------------------------------------------------------------------------

/// The upstream answers the first request with `bad` and keeps the connection, then
/// answers 200: the client gets a complete 502 for the first request, and the second
/// request needs a new upstream connection (the third, after a good response, does not).
fn assert_bad_status_line_is_502_and_not_reused(bad: &[u8]) {
    let shown = String::from_utf8_lossy(bad).into_owned();
    let up = RawUpstream::start(vec![(bad.to_vec(), After::Keep), (ok("fine"), After::Keep)]);
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.get("/bad");
    assert_eq!(r.status, 502, "{shown:?} -> {r:?}");
    assert!(
        r.text().contains("invalid response from upstream"),
        "{shown:?}: a proxy-made 502, got {:?}",
        r.text()
    );
    assert_eq!(r.headers.get("via"), Some("1.1 ringway"), "{shown:?}");
    assert_eq!(up.accepted(), 1, "{shown:?}");

    // The 502 was complete (its length was right): the same client connection carries
    // the next request, which needs a new upstream connection.
    let r = c.get("/next");
    assert_eq!(r.status, 200, "{shown:?} -> {r:?}");
    assert_eq!(r.text(), "fine");
    assert_eq!(
        up.accepted(),
        2,
        "{shown:?}: the connection that sent a bad status line must not be reused"
    );

    // Control: after a good response the connection is reused, so counting accepts
    // does tell reuse apart.
    let r = c.get("/again");
    assert_eq!(r.status, 200);
    assert_eq!(
        up.accepted(),
        2,
        "a good response leaves a reusable connection"
    );
    let lines: Vec<String> = up
        .heads()
        .iter()
        .map(|h| request_line(h).to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "GET /bad HTTP/1.1",
            "GET /next HTTP/1.1",
            "GET /again HTTP/1.1"
        ],
        "{shown:?}: each request reached the upstream once, none was retried"
    );
}

#[test]
fn an_upstream_status_below_100_gets_a_502_and_its_connection_is_not_reused() {
    assert_bad_status_line_is_502_and_not_reused(
        b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
    );
}

#[test]
fn an_upstream_status_above_599_gets_a_502_and_its_connection_is_not_reused() {
    assert_bad_status_line_is_502_and_not_reused(
        b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok",
    );
}

#[test]
fn a_malformed_upstream_status_line_gets_a_502_and_its_connection_is_not_reused() {
    assert_bad_status_line_is_502_and_not_reused(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok");
}

// ---------------------------------------------------------------------------------
// Interim responses
// ---------------------------------------------------------------------------------

/// A 103 with an end-to-end Link, hop-by-hop fields (Connection, the field it names,
/// Keep-Alive), then a final 200 with a body, in one write.
fn early_hints_then_ok() -> Vec<u8> {
    let mut out = b"HTTP/1.1 103 Early Hints\r\n\
        Link: </style.css>; rel=preload\r\n\
        Connection: X-Hop\r\n\
        X-Hop: 1\r\n\
        Keep-Alive: timeout=5\r\n\r\n"
        .to_vec();
    out.extend(ok("final body"));
    out
}

#[test]
fn an_http11_client_gets_103_early_hints_then_the_final_response_on_the_same_connection() {
    let up = RawUpstream::always(early_hints_then_ok());
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);
    c.send(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n");

    let hints = c.read_response();
    assert_eq!(hints.status, 103, "{hints:?}");
    assert_eq!(hints.status_line, "HTTP/1.1 103 Early Hints");
    assert_eq!(
        hints.headers.all("link"),
        ["</style.css>; rel=preload"],
        "{hints:?}"
    );
    for hop in ["connection", "x-hop", "keep-alive"] {
        assert!(
            !hints.headers.has(hop),
            "hop-by-hop {hop} was forwarded: {hints:?}"
        );
    }

    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "final body");

    // The connection is still in step: another exchange works the same way.
    c.send(b"GET /page2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().status, 103);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "final body"));
    assert_eq!(up.heads().len(), 2);
}

#[test]
fn an_http10_client_gets_only_the_final_response_after_103_early_hints() {
    let up = RawUpstream::always(early_hints_then_ok());
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);
    c.send(b"GET /page HTTP/1.0\r\nHost: t\r\n\r\n");

    let r = c.read_response();
    assert_eq!(
        r.status, 200,
        "an HTTP/1.0 client must not see a 1xx: {r:?}"
    );
    assert_eq!(r.text(), "final body");
    // HTTP/1.0 without keep-alive: the connection ends after the final response, with
    // nothing else sent.
    c.assert_closed();
    assert_eq!(request_line(&up.only_head()), "GET /page HTTP/1.1");
}

#[test]
fn an_upstream_100_continue_is_not_forwarded_to_a_client_that_did_not_expect_it() {
    let mut reply = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    reply.extend(ok("after continue"));
    let up = RawUpstream::always(reply);
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.get("/no-expect");
    assert_eq!(r.status, 200, "the 100 Continue was forwarded: {r:?}");
    assert_eq!(r.text(), "after continue");
    // And the connection is in step for the next request.
    let r = c.get("/again");
    assert_eq!((r.status, r.text().as_str()), (200, "after continue"));
    let heads = up.heads();
    assert_eq!(heads.len(), 2);
    assert!(
        header_values(&heads[0], "expect").is_empty(),
        "{:?}",
        heads[0]
    );
}

// ---------------------------------------------------------------------------------
// Request targets and Host
// ---------------------------------------------------------------------------------

#[test]
fn an_http10_request_without_host_reaches_the_upstream_as_http11_with_an_empty_host() {
    let up = RawUpstream::always(ok("hi"));
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.request(b"GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hi");
    let head = up.only_head();
    assert_eq!(request_line(&head), "GET /x HTTP/1.1", "{head:?}");
    assert_eq!(
        header_values(&head, "host"),
        [""],
        "exactly one Host, present and empty (RFC 9112 §3.2): {head:?}"
    );
}

#[test]
fn an_http10_absolute_form_request_reaches_the_upstream_with_the_target_authority_as_host() {
    let up = RawUpstream::always(ok("hi"));
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.request(b"GET http://a.example/y HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let head = up.only_head();
    assert_eq!(request_line(&head), "GET /y HTTP/1.1", "{head:?}");
    assert_eq!(header_values(&head, "host"), ["a.example"], "{head:?}");
}

#[test]
fn an_absolute_form_target_with_a_query_and_no_path_reaches_the_upstream_as_slash_and_query() {
    let up = RawUpstream::always(ok("hi"));
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.request(b"GET http://a.example?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(r.status, 200, "the target is valid, not a 400: {r:?}");
    assert_eq!(r.text(), "hi");
    let head = up.only_head();
    assert_eq!(request_line(&head), "GET /?q=1 HTTP/1.1", "{head:?}");
    assert_eq!(header_values(&head, "host"), ["a.example"], "{head:?}");
}

#[test]
fn an_absolute_form_authority_replaces_a_different_host_header() {
    let up = RawUpstream::always(ok("hi"));
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    // RFC 9112 §3.2.2: the target's authority wins over the Host header.
    let r = c.request(b"GET http://a.example/z?k=v HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let head = up.only_head();
    assert_eq!(request_line(&head), "GET /z?k=v HTTP/1.1", "{head:?}");
    assert_eq!(header_values(&head, "host"), ["a.example"], "{head:?}");
}

// ---------------------------------------------------------------------------------
// Date
// ---------------------------------------------------------------------------------

#[test]
fn the_date_shape_check_accepts_imf_fixdate_only() {
    assert!(is_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"));
    for bad in [
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Abc, 06 Nov 1994 08:49:37 GMT",
        "",
    ] {
        assert!(!is_imf_fixdate(bad), "{bad:?}");
    }
}

#[test]
fn a_forwarded_response_without_date_gets_an_imf_fixdate_from_the_proxy() {
    let up = RawUpstream::always(ok("no date"));
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "no date");
    assert_one_imf_date(&r, "forwarded response");
    assert_eq!(up.heads().len(), 1);
}

#[test]
fn a_forwarded_response_with_date_keeps_exactly_its_own() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let up = RawUpstream::always(
        format!("HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 2\r\n\r\nok").into_bytes(),
    );
    let (_proxy, addr) = proxy_for(&up);
    let mut c = Client::connect(addr);

    let r = c.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok");
    assert_eq!(r.headers.all("date"), [date], "{r:?}");
    assert_eq!(up.heads().len(), 1);
}

#[test]
fn proxy_made_error_responses_carry_a_date() {
    let up = RawUpstream::always(b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok".to_vec());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
         [upstreams.web]\nservers = [\"{}\"]\nmax_fails = 1000\n\n\
         [[routes]]\npath_prefix = \"/app\"\nupstream = \"web\"\n",
        up.addr
    );
    let (_proxy, addr) = start_proxy(&config);
    let mut c = Client::connect(addr);

    let r = c.get("/elsewhere");
    assert_eq!(r.status, 404, "no route: {r:?}");
    assert_one_imf_date(&r, "404 for no route");
    assert!(up.heads().is_empty(), "a 404 never reaches the upstream");

    let r = c.get("/app/odd");
    assert_eq!(r.status, 502, "bad upstream status: {r:?}");
    assert_one_imf_date(&r, "502 for a bad upstream status");
    assert_eq!(up.heads().len(), 1);
}

//! Test support: a real upstream on 127.0.0.1:0 (std::net, one thread per connection)
//! with counters, recorded requests and modes; the proxy started through the same
//! entry point `main` uses; raw-socket clients with a timeout on every read;
//! `poll_until` instead of fixed sleeps; and the real binary run on a config file, with
//! its log captured and signals sent to it ([`Binary`]).
//!
//! Nothing here talks to anything but 127.0.0.1, and nothing uses a fixed port.

use ringway::config::Config;
use ringway::server::{self, Running};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a client waits for any single read or write before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream connection may sit idle before its thread gives up.
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);
/// Upstream sockets wake this often to notice that their server was dropped.
const UPSTREAM_TICK: Duration = Duration::from_millis(100);
/// Most bytes any one message may take, so a runaway peer cannot loop a test forever.
const MAX_MESSAGE: usize = 64 << 20;
/// Body length the mid-body failure modes promise (and never deliver).
pub const PROMISED_LEN: usize = 100_000;
/// Body bytes the mid-body failure modes actually send before giving up.
pub const SENT_LEN: usize = 1_000;

// ---------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------

/// `n` deterministic pseudo-random bytes (xorshift64), so large bodies are not periodic.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Asserts two byte strings are equal without dumping megabytes on failure.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at offset {first_diff}",
        got.len(),
        want.len()
    );
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback address nothing listens on, and nothing can: a socket bound there but
/// never listening (connects are refused) is held for the rest of the test process, so
/// the port cannot be handed to anyone else meanwhile.
pub fn dead_addr() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    s.bind(&any.into()).expect("bind 127.0.0.1:0");
    let addr = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound address");
    // Held, not closed: a few descriptors per test run.
    std::mem::forget(s);
    addr
}

/// `data` in chunks of the given sizes (cycled), the first with a chunk extension,
/// ended by the last chunk and an optional trailer line.
pub fn encode_chunked(data: &[u8], sizes: &[usize], trailer: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let ext = if i == 0 { ";ext=first;q=\"a b\"" } else { "" };
        out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailer {
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------------
// Buffered blocking connection, shared by the upstream and the client
// ---------------------------------------------------------------------------------

/// A blocking socket (or a TLS stream over one) with a read buffer; every read is
/// bounded in time.
struct Conn<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
    /// Total time a single `fill` may wait.
    patience: Duration,
    /// When set, `fill` gives up early (the owning upstream was dropped).
    stop: Option<Arc<AtomicBool>>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "read timed out")
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF {what}"))
}

impl<S: Read> Conn<S> {
    /// Reads more bytes into the buffer; `Ok(0)` is EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.buf.len() > MAX_MESSAGE {
            return Err(bad_data("more than MAX_MESSAGE bytes buffered"));
        }
        let start = Instant::now();
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                // A reset ends the connection like EOF does; callers tell truncation apart.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(0),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let stopped = self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
                    if stopped || start.elapsed() >= self.patience {
                        return Err(timed_out());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes `n` bytes off the front of the buffer, reading as needed.
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(eof("in the middle of a body"));
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].windows(2).position(|w| w == b"\r\n") {
                let end = searched + i;
                let mut line = self.take(end + 2)?;
                line.truncate(end);
                return Ok(line);
            }
            searched = self.buf.len().saturating_sub(1);
            if self.fill()? == 0 {
                return Err(eof("in the middle of a line"));
            }
        }
    }

    /// Takes one head (up to and including the blank line). `Ok(None)`: clean EOF
    /// before the first byte.
    fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return self.take(i + 4).map(Some);
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(eof("in the middle of a head"));
            }
        }
    }

    /// Reads everything until the peer closes.
    fn until_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads a chunked body strictly: returns the decoded data, the wire bytes and the
    /// trailer lines. On EOF mid-body returns what was decoded so far and `false`.
    fn chunked(&mut self) -> io::Result<Chunked> {
        let mut out = Chunked::default();
        loop {
            let line = match self.line() {
                Ok(l) => l,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
                Err(e) => return Err(e),
            };
            out.wire.extend_from_slice(&line);
            out.wire.extend_from_slice(b"\r\n");
            out.size_lines
                .push(String::from_utf8_lossy(&line).into_owned());
            let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
            let size_text = std::str::from_utf8(size_text)
                .map_err(|_| bad_data("chunk size is not ASCII"))?
                .trim();
            let size = usize::from_str_radix(size_text, 16)
                .ok()
                .filter(|&n| n <= MAX_MESSAGE)
                .ok_or_else(|| bad_data(&format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                loop {
                    let t = match self.line() {
                        Ok(l) => l,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
                        Err(e) => return Err(e),
                    };
                    out.wire.extend_from_slice(&t);
                    out.wire.extend_from_slice(b"\r\n");
                    if t.is_empty() {
                        out.complete = true;
                        return Ok(out);
                    }
                    out.trailers.push(String::from_utf8_lossy(&t).into_owned());
                }
            }
            let data = match self.take(size + 2) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let partial = std::mem::take(&mut self.buf);
                    out.data
                        .extend_from_slice(&partial[..partial.len().min(size)]);
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            if &data[size..] != b"\r\n" {
                return Err(bad_data("chunk data not followed by CRLF"));
            }
            out.wire.extend_from_slice(&data);
            out.data.extend_from_slice(&data[..size]);
            if out.data.len() > MAX_MESSAGE {
                return Err(bad_data("chunked body over MAX_MESSAGE"));
            }
        }
    }
}

#[derive(Default)]
struct Chunked {
    data: Vec<u8>,
    wire: Vec<u8>,
    size_lines: Vec<String>,
    trailers: Vec<String>,
    complete: bool,
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Header fields of a parsed head, in order, with lookups by case-insensitive name.
#[derive(Debug, Clone, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True when `name` is present at all.
    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    /// True when some value of `name` lists `token` (comma-separated, any case).
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        match self.get("content-length") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad_data(&format!("bad Content-Length {v:?}"))),
        }
    }

    fn chunked(&self) -> bool {
        self.all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .last()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
    }
}

/// Splits a head into its first line and its header fields.
fn parse_head(head: &[u8]) -> io::Result<(String, Headers)> {
    let text = std::str::from_utf8(head).map_err(|_| bad_data("head is not UTF-8"))?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad_data(&format!("header line without a colon: {line:?}")))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok((first, Headers(headers)))
}

// ---------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------

/// How a test upstream answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200, body `{name}: {method} {target}\n`, Content-Length (HEAD: no body, same length).
    Ok,
    /// 200 with the request body, byte-exact, Content-Length.
    Echo,
    /// 200 with this body sent chunked, with a chunk extension and a trailer.
    Chunked(Vec<u8>),
    /// 200 with this body and no length; closing the connection ends it.
    CloseDelimited(Vec<u8>),
    /// 200 with `pattern(n)` as body, Content-Length.
    Big(usize),
    /// This status with a one-line body, Content-Length.
    Status(u16),
    /// 200 with body `ok` and these extra header fields.
    Headers(Vec<(String, String)>),
    /// Reads the request, never answers (holds the connection open).
    Hang,
    /// Reads the request head, then closes without answering.
    CloseAfterHead,
    /// Promises `PROMISED_LEN` bytes, sends `SENT_LEN`, then closes (FIN).
    CloseMidBody,
    /// Promises `PROMISED_LEN` bytes, sends `SENT_LEN`, then resets (RST).
    ResetMidBody,
    /// Chunked: one chunk of `SENT_LEN` bytes, then closes without the last chunk.
    CloseMidChunked,
    /// Answers like `Ok` (keep-alive implied), then closes the connection silently.
    OkThenClose,
    /// The test writes each answer: called with the request and its 1-based number.
    Script(Script),
}

/// A scripted answer: the bytes to write (head and body, as the test wants them, even
/// truncated), and whether to close the connection after them.
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    /// Written as they are.
    pub raw: Vec<u8>,
    /// Close (FIN) after writing.
    pub close: bool,
}

/// How a scripted upstream answers: the request and its 1-based number in.
pub type Answerer = dyn Fn(&Seen, usize) -> Scripted + Send + Sync;

/// The function behind [`Mode::Script`]; it runs on the connection's own thread, so it
/// may block (to hold a response back).
#[derive(Clone)]
pub struct Script(pub Arc<Answerer>);

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Script(..)")
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method token.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header fields, in order.
    pub headers: Headers,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The body exactly as it came over the wire (chunk framing included).
    pub wire_body: Vec<u8>,
    /// Chunk-size lines of a chunked body, as received.
    pub chunk_lines: Vec<String>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<String>,
}

struct Shared {
    name: String,
    mode: Mode,
    big: Vec<u8>,
    accepted: AtomicUsize,
    heads: AtomicUsize,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    stop: Arc<AtomicBool>,
}

/// A real HTTP/1.1 origin on 127.0.0.1:0, stopped on drop.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream named `name` answering in `mode`.
    pub fn start(name: &str, mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let big = match mode {
            Mode::Big(n) => pattern(n),
            _ => Vec::new(),
        };
        let shared = Arc::new(Shared {
            name: name.to_string(),
            mode,
            big,
            accepted: AtomicUsize::new(0),
            heads: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    s.accepted.fetch_add(1, Ordering::SeqCst);
                    let s = s.clone();
                    std::thread::spawn(move || serve_upstream(s, stream));
                }
            })
            .expect("spawn upstream");
        Upstream {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Request heads received so far (complete or not).
    pub fn heads(&self) -> usize {
        self.shared.heads.load(Ordering::SeqCst)
    }

    /// Complete requests (head and whole body) received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every complete request received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The most recent complete request.
    pub fn last(&self) -> Seen {
        self.seen()
            .pop()
            .expect("the upstream has not received a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve_upstream(s: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(UPSTREAM_TICK));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        patience: UPSTREAM_IDLE,
        stop: Some(s.stop.clone()),
    };
    while let Ok(true) = serve_one(&s, &mut conn) {}
}

/// Reads and answers one request; `Ok(true)` to keep the connection.
fn serve_one(s: &Shared, conn: &mut Conn) -> io::Result<bool> {
    let Some(head) = conn.head()? else {
        return Ok(false);
    };
    s.heads.fetch_add(1, Ordering::SeqCst);
    if matches!(s.mode, Mode::CloseAfterHead) {
        return Ok(false);
    }
    let (first, headers) = parse_head(&head)?;
    let mut parts = first.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m.to_string(), t.to_string(), v.to_string()),
        _ => return Err(bad_data("bad request line")),
    };
    let mut chunk_lines = Vec::new();
    let mut trailers = Vec::new();
    let (body, wire_body) = if headers.has("transfer-encoding") {
        if !headers.chunked() {
            return Err(bad_data("request with a non-chunked Transfer-Encoding"));
        }
        let c = conn.chunked()?;
        if !c.complete {
            return Err(eof("in the middle of a chunked request body"));
        }
        (chunk_lines, trailers) = (c.size_lines, c.trailers);
        (c.data, c.wire)
    } else if let Some(n) = headers.content_length()? {
        let b = conn.take(n)?;
        (b.clone(), b)
    } else {
        (Vec::new(), Vec::new())
    };
    let close = headers.lists("connection", "close");
    let is_head = method == "HEAD";
    let ok_text = format!("{}: {method} {target}\n", s.name);
    let seen = Seen {
        method,
        target,
        version,
        headers,
        body: body.clone(),
        wire_body,
        chunk_lines,
        trailers,
    };
    let number = {
        let mut all = s.seen.lock().unwrap();
        all.push(seen.clone());
        all.len()
    };
    s.requests.fetch_add(1, Ordering::SeqCst);

    let conn_hdr = if close { "Connection: close\r\n" } else { "" };
    let w = &mut conn.stream;
    let fixed = |w: &mut TcpStream, status: &str, extra: &str, body: &[u8]| -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}{conn_hdr}\r\n",
            body.len()
        )
        .into_bytes();
        if !is_head {
            out.extend_from_slice(body);
        }
        w.write_all(&out)
    };
    match &s.mode {
        Mode::Ok => fixed(
            w,
            "200 OK",
            "Content-Type: text/plain\r\n",
            ok_text.as_bytes(),
        )?,
        Mode::OkThenClose => {
            fixed(w, "200 OK", "", ok_text.as_bytes())?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(false);
        }
        Mode::Echo => fixed(w, "200 OK", "", &body)?,
        Mode::Big(_) => fixed(w, "200 OK", "", &s.big)?,
        Mode::Status(code) => {
            let text = format!("{}: status {code}\n", s.name);
            fixed(w, &format!("{code} Test Status"), "", text.as_bytes())?;
        }
        Mode::Headers(extra) => {
            let extra: String = extra.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
            fixed(w, "200 OK", &extra, b"ok")?;
        }
        Mode::Chunked(data) => {
            let mut out =
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn_hdr}\r\n")
                    .into_bytes();
            out.extend(encode_chunked(
                data,
                &[1, 7, 100, 4096],
                Some("X-Trailer: t"),
            ));
            w.write_all(&out)?;
        }
        Mode::CloseDelimited(data) => {
            let mut out =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
            out.extend_from_slice(data);
            w.write_all(&out)?;
            let _ = w.shutdown(Shutdown::Write);
            return Ok(false);
        }
        Mode::Hang => {
            // Hold the connection open, answering nothing, until the peer or the test goes.
            while conn.fill()? > 0 {}
            return Ok(false);
        }
        Mode::CloseAfterHead => unreachable!("handled before the body"),
        Mode::Script(script) => {
            let reply = (script.0)(&seen, number);
            w.write_all(&reply.raw)?;
            if reply.close {
                let _ = w.shutdown(Shutdown::Write);
                return Ok(false);
            }
        }
        Mode::CloseMidBody | Mode::ResetMidBody => {
            let mut out =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {PROMISED_LEN}\r\n\r\n").into_bytes();
            out.extend_from_slice(&pattern(SENT_LEN));
            w.write_all(&out)?;
            if matches!(s.mode, Mode::ResetMidBody) {
                let _ = socket2::SockRef::from(&*w).set_linger(Some(Duration::ZERO));
            } else {
                let _ = w.shutdown(Shutdown::Write);
            }
            return Ok(false);
        }
        Mode::CloseMidChunked => {
            let mut out =
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{SENT_LEN:x}\r\n")
                    .into_bytes();
            out.extend_from_slice(&pattern(SENT_LEN));
            out.extend_from_slice(b"\r\n");
            w.write_all(&out)?;
            let _ = w.shutdown(Shutdown::Write);
            return Ok(false);
        }
    }
    Ok(!close)
}

// ---------------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------------

/// Starts the proxy from config text, through `Config::parse` and `server::start`.
/// The returned `Running` stops the workers when dropped.
pub fn start_proxy(config: &str) -> (Running, SocketAddr) {
    let config = Config::parse(config, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let running = server::start(config).expect("the proxy starts");
    let addr = running.local_addrs()[0];
    (running, addr)
}

/// A config with one group `web` over `servers`, routed from `/`, listening on
/// 127.0.0.1:0 with one worker; `upstream_extra` lines go into `[upstreams.web]`.
pub fn config_with(servers: &[SocketAddr], upstream_extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
         [upstreams.web]\nservers = [{}]\n{upstream_extra}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        list.join(", ")
    )
}

/// `config_with` with no extra settings.
pub fn config_for(servers: &[SocketAddr]) -> String {
    config_with(servers, "")
}

/// An upstream in `mode` and a one-worker proxy in front of it.
pub fn proxy_to(mode: Mode) -> (Upstream, Running, SocketAddr) {
    let up = Upstream::start("a", mode);
    let (running, addr) = start_proxy(&config_for(&[up.addr()]));
    (up, running, addr)
}

// ---------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// Header fields, in order.
    pub headers: Headers,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Chunk-size lines of a chunked body, as received.
    pub chunk_lines: Vec<String>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<String>,
    /// False when the connection ended before the body did.
    pub complete: bool,
    /// Bytes of the head as received, blank line included.
    pub head_len: usize,
}

impl Response {
    /// Bytes on the wire for a Content-Length response: head and body.
    pub fn raw_len(&self) -> usize {
        self.head_len + self.body.len()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// True when the response says the connection closes after it.
    pub fn closes(&self) -> bool {
        self.headers.lists("connection", "close")
    }
}

/// A raw-socket HTTP/1.1 client on one connection (plain, or any blocking stream such
/// as a TLS session: [`Client::over`]).
pub struct Client<S = TcpStream> {
    conn: Conn<S>,
}

impl<S: Read + Write> Client<S> {
    /// A client on an established stream whose reads time out (they are retried up
    /// to `IO_TIMEOUT` in all).
    pub fn over(stream: S) -> Client<S> {
        Client {
            conn: Conn {
                stream,
                buf: Vec::new(),
                patience: IO_TIMEOUT,
                stop: None,
            },
        }
    }
}

impl Client {
    /// Connects to `addr`, panicking on failure.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects to `addr`.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            conn: Conn {
                stream,
                buf: Vec::new(),
                patience: IO_TIMEOUT,
                stop: None,
            },
        })
    }
}

impl<S: Read + Write> Client<S> {
    /// Writes raw bytes in one write call.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("send to the proxy");
    }

    /// Writes raw bytes in one write call, reporting a failure instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.stream.write_all(bytes)
    }

    /// Reads one complete response (to a non-HEAD request), panicking on anything else.
    pub fn read_response(&mut self) -> Response {
        let r = self.try_read_response(false).expect("read a response");
        assert!(r.complete, "the response body was truncated: {r:?}");
        r
    }

    /// Reads one complete response to a HEAD request (no body, whatever the length says).
    pub fn read_head_response(&mut self) -> Response {
        let r = self.try_read_response(true).expect("read a response");
        assert!(r.complete);
        r
    }

    /// Reads one response; a body cut short by EOF gives `complete == false`.
    pub fn try_read_response(&mut self, to_head: bool) -> io::Result<Response> {
        let head = self.conn.head()?.ok_or_else(|| eof("before a response"))?;
        let (status_line, headers) = parse_head(&head)?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_data(&format!("bad status line {status_line:?}")))?;
        let mut r = Response {
            status_line,
            status,
            headers,
            body: Vec::new(),
            chunk_lines: Vec::new(),
            trailers: Vec::new(),
            complete: true,
            head_len: head.len(),
        };
        if to_head || status < 200 || status == 204 || status == 304 {
            return Ok(r);
        }
        if r.headers.chunked() {
            let c = self.conn.chunked()?;
            (r.body, r.chunk_lines, r.trailers, r.complete) =
                (c.data, c.size_lines, c.trailers, c.complete);
        } else if let Some(n) = r.headers.content_length()? {
            match self.conn.take(n) {
                Ok(b) => r.body = b,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    r.body = std::mem::take(&mut self.conn.buf);
                    r.complete = false;
                }
                Err(e) => return Err(e),
            }
        } else {
            r.body = self.conn.until_close()?;
        }
        Ok(r)
    }

    /// Sends `raw` and reads the response.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// `GET path` on this keep-alive connection.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes())
    }

    /// Asserts the proxy closed the connection: nothing more arrives, then EOF (or RST).
    pub fn assert_closed(&mut self) {
        assert!(
            self.conn.buf.is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&self.conn.buf)
        );
        match self.conn.fill() {
            Ok(0) => {}
            Ok(_) => panic!(
                "the connection stayed open and sent more: {:?}",
                String::from_utf8_lossy(&self.conn.buf)
            ),
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

/// One `GET path` on a fresh connection; `None` on any failure (for polling).
pub fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut c = Client::try_connect(addr).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    c.conn.stream.write_all(req.as_bytes()).ok()?;
    c.try_read_response(false).ok().filter(|r| r.complete)
}

impl Client {
    /// Connects to `addr` from the local address `ip` (any of 127.0.0.0/8 is loopback
    /// on Linux), so one test can look like several clients.
    pub fn connect_from(ip: std::net::IpAddr, addr: SocketAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("create a client socket");
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .unwrap_or_else(|e| panic!("bind the client to {ip}: {e}"));
        socket
            .connect_timeout(&addr.into(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr} from {ip}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            conn: Conn {
                stream,
                buf: Vec::new(),
                patience: IO_TIMEOUT,
                stop: None,
            },
        }
    }

    /// This end's address: what the proxy sees as `$remote_addr` and `$remote_port`.
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.stream.local_addr().expect("local addr")
    }
}

// ---------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------

/// The `ringway` binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringway");

/// Bound for waiting on the binary: to start, to log, to exit. Generous, since the
/// machine may be busy; nothing waits this long when the proxy behaves.
const BINARY_PATIENCE: Duration = Duration::from_secs(10);

/// Part of the line the binary logs once every worker started, after the listen lines.
const STARTED: &str = "workers on the";

/// `ringway run -c FILE` as a child process, with its stderr captured line by line into
/// a shared string; killed (SIGKILL) and reaped on drop, its config file removed.
///
/// The config file sits in Cargo's per-target temp dir, named after the test and this
/// process, so tests running at once never share one. The config should listen on
/// port 0: the real addresses are read back from the `listening on` log lines.
pub struct Binary {
    child: Child,
    addrs: Vec<SocketAddr>,
    log: Arc<Mutex<String>>,
    config: PathBuf,
    exited: Option<ExitStatus>,
}

impl Binary {
    /// Writes `config` to a file named after `name`, runs the binary on it, and waits
    /// until every worker started; panics (with the log) if it exits first.
    pub fn start(name: &str, config: &str) -> Binary {
        Binary::start_with_env(name, config, &[])
    }

    /// [`Binary::start`] with extra environment variables for the child.
    pub fn start_with_env(name: &str, config: &str, env: &[(&str, &str)]) -> Binary {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("it-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, config).expect("write the config file");
        let mut child = Command::new(BIN)
            .args(["run", "-c", path.to_str().expect("UTF-8 path")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the ringway binary");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            // Ends at EOF, when the child exits.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut binary = Binary {
            child,
            addrs: Vec::new(),
            log,
            config: path,
            exited: None,
        };
        let started = poll_until(BINARY_PATIENCE, || {
            if let Ok(Some(status)) = binary.child.try_wait() {
                panic!("ringway exited early with {status}: {}", binary.log());
            }
            !binary.lines(STARTED).is_empty()
        });
        assert!(started, "ringway did not start: {}", binary.log());
        binary.addrs = binary
            .lines("ringway[main] info: listening on ")
            .iter()
            .map(|l| {
                let rest = l.split("listening on ").nth(1).unwrap_or_default();
                let addr = rest.split(' ').next().unwrap_or_default();
                addr.parse()
                    .unwrap_or_else(|e| panic!("bad listen address in {l:?}: {e}"))
            })
            .collect();
        assert!(!binary.addrs.is_empty(), "no listen line: {}", binary.log());
        binary
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin API's address, from its log line (`admin API listening on ADDR`).
    pub fn admin_addr(&self) -> SocketAddr {
        let lines = self.lines("admin API listening on ");
        let line = lines
            .first()
            .expect("an admin listen line (is [admin] configured?)");
        let addr = line
            .rsplit("listening on ")
            .next()
            .unwrap_or_default()
            .trim();
        addr.parse()
            .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"))
    }

    /// The first listen address, as bound at start.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listen address as bound at start, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The config file the binary runs on.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Log lines containing `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until a log line contains `needle`; false if none did within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || !self.lines(needle).is_empty())
    }

    /// Sends `sig` (`libc::SIGHUP`, `libc::SIGTERM`, ...) to the process.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            self.exited.is_none(),
            "signal {sig} sent after ringway exited"
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid. The child is reaped only by
        // `wait_exit`, which sets `exited`, so the pid cannot have been reused yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
    }

    /// Replaces the config file's contents (the binary reads it on SIGHUP).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite the config file");
    }

    /// Log lines that report a reload's result, success or refusal.
    pub fn reload_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("reload: generation ") || l.contains("reload refused"))
            .map(str::to_string)
            .collect()
    }

    /// Rewrites the config, sends SIGHUP and returns the one reload line it caused.
    pub fn reload(&self, text: &str) -> String {
        let before = self.reload_lines().len();
        self.rewrite_config(text);
        self.signal(libc::SIGHUP);
        let logged = poll_until(BINARY_PATIENCE, || self.reload_lines().len() > before);
        assert!(logged, "no reload line after SIGHUP: {}", self.log());
        self.reload_lines().swap_remove(before)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let child = &mut self.child;
            let mut status = None;
            poll_until(timeout, || {
                status = child.try_wait().expect("wait for ringway");
                status.is_some()
            });
            self.exited = status;
        }
        self.exited
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

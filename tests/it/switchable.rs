//! An upstream a test can change while the proxy runs: its `/health` answer flips, its
//! answer to every other request switches, it can crash (keep its port, reset every
//! connection after reading a request) or be killed (port refuses) and restarted on the
//! same port. Health checks are told apart from proxied requests by their User-Agent,
//! and each is counted separately, so tests assert on counts, never on time.
//!
//! std threads on 127.0.0.1 only; every read has a timeout and every loop a bound.

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The User-Agent ringway's active checker sends.
const CHECK_AGENT: &str = "ringway-health-check";
/// Connection threads wake this often to notice a crash, kill or drop.
const TICK: Duration = Duration::from_millis(50);
/// A connection idle this long is closed by the upstream. A little longer than the
/// client's read timeout (`support::IO_TIMEOUT`), so a proxy stuck on an idle upstream
/// connection fails the test as a timeout, and is released soon after.
const IDLE: Duration = Duration::from_secs(12);
/// Largest request head or body accepted.
const MAX_MESSAGE: usize = 1 << 20;
/// How long `restart` keeps trying to rebind the old port.
const REBIND_PATIENCE: Duration = Duration::from_secs(5);

/// How the upstream answers requests that are not health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with body `{name}\n`, keep-alive.
    Ok,
    /// This status with body `{name}: status {code}\n`, keep-alive.
    Status(u16),
    /// Reads the request, never answers, holds the connection.
    Hang,
    /// Reads the whole request (head and body), then resets the connection.
    ResetAfterRequest,
    /// Answers the first request on each connection like `Ok`, then reads the next
    /// one whole and resets: a keep-alive connection that dies mid-exchange.
    ResetAfterFirst,
    /// Closes every connection as soon as it is accepted, before reading anything.
    CloseOnAccept,
    /// 200 promising `len` bytes, then one byte every `gap`.
    Trickle {
        /// Content-Length promised.
        len: usize,
        /// Pause before each byte.
        gap: Duration,
    },
    /// Reads the request and holds it until the test calls [`Backend::release`] (or
    /// the upstream goes), then answers like `Ok`: a slow request whose end the test
    /// decides, so no test guesses how long "slow" must be.
    Held,
}

/// One proxied (non-health-check) request as the upstream read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method token.
    pub method: String,
    /// The request target as received.
    pub target: String,
    /// The body (Content-Length framing only).
    pub body: Vec<u8>,
    /// Health checks this upstream had answered with a 2xx/3xx before this request.
    pub checks_passed_before: usize,
}

struct State {
    name: String,
    addr: SocketAddr,
    answer: Mutex<Answer>,
    /// Status for health checks.
    health: AtomicU16,
    /// Crashed: every request is read and then the connection is reset.
    crashed: AtomicBool,
    /// Bumped by `crash` and `kill`: connections of an older epoch end.
    epoch: AtomicUsize,
    /// The upstream was dropped: everything ends.
    gone: AtomicBool,
    /// The accept thread of the current listener should return.
    stop_accept: AtomicBool,
    accepted: AtomicUsize,
    proxied_conns: AtomicUsize,
    /// Connections whose first request was a proxied one, still open now.
    open_proxied: AtomicUsize,
    /// Bumped by `release`: held requests that arrived before it answer.
    releases: AtomicUsize,
    checks: AtomicUsize,
    checks_passed: AtomicUsize,
    checks_failed: AtomicUsize,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Clones of live connections by id, shut down on crash and kill. A connection's
    /// thread removes its clone before closing, so the close happens then, not later.
    conns: Mutex<HashMap<usize, TcpStream>>,
}

/// A switchable upstream on 127.0.0.1, stopped on drop.
pub struct Backend {
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts an upstream named `name` answering `answer`, with `/health` answering 200.
    pub fn start(name: &str, answer: Answer) -> Backend {
        let listener = bind_reusable("127.0.0.1:0".parse().expect("address"))
            .expect("bind a switchable upstream");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_string(),
            addr,
            answer: Mutex::new(answer),
            health: AtomicU16::new(200),
            crashed: AtomicBool::new(false),
            epoch: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            stop_accept: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            proxied_conns: AtomicUsize::new(0),
            open_proxied: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            checks_passed: AtomicUsize::new(0),
            checks_failed: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
        });
        let accept = Some(spawn_accept(state.clone(), listener));
        Backend { state, accept }
    }

    /// Where it listens (the same port across `kill` and `restart`).
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// Changes the answer to proxied requests.
    pub fn set_answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Changes the status health checks get.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::SeqCst);
    }

    /// Crashes: open connections are closed, and from now on every request (health
    /// checks included) is read, counted and answered with a reset. The port stays open.
    pub fn crash(&self) {
        self.state.crashed.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Ends a crash: requests are answered again.
    pub fn heal(&self) {
        self.state.crashed.store(false, Ordering::SeqCst);
    }

    /// Kills: the listener closes (connects are refused) and open connections close.
    pub fn kill(&mut self) {
        self.stop_listener();
        self.drop_connections();
    }

    /// Listens again on the same port (after `kill`); a crash stays in force.
    pub fn restart(&mut self) {
        assert!(self.accept.is_none(), "restart needs a killed upstream");
        let deadline = Instant::now() + REBIND_PATIENCE;
        let listener = loop {
            match bind_reusable(self.state.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(TICK);
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.state.addr),
            }
        };
        self.state.stop_accept.store(false, Ordering::SeqCst);
        self.accept = Some(spawn_accept(self.state.clone(), listener));
    }

    /// TCP connections accepted so far (health checks included).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose first request was a proxied one, not a health check.
    pub fn proxied_conns(&self) -> usize {
        self.state.proxied_conns.load(Ordering::SeqCst)
    }

    /// Connections whose first request was a proxied one and that are still open: they
    /// end when the proxy closes them (or the upstream does, by its answer or a crash).
    pub fn open_proxied(&self) -> usize {
        self.state.open_proxied.load(Ordering::SeqCst)
    }

    /// Lets every request held by `Answer::Held` so far be answered; requests held
    /// later wait for the next release.
    pub fn release(&self) {
        self.state.releases.fetch_add(1, Ordering::SeqCst);
    }

    /// Health-check requests received (answered or reset).
    pub fn checks(&self) -> usize {
        self.state.checks.load(Ordering::SeqCst)
    }

    /// Health checks answered with a status below 400.
    pub fn checks_passed(&self) -> usize {
        self.state.checks_passed.load(Ordering::SeqCst)
    }

    /// Health checks answered with a status of 400 or more, or reset by a crash.
    pub fn checks_failed(&self) -> usize {
        self.state.checks_failed.load(Ordering::SeqCst)
    }

    /// Proxied request heads received (whatever happened next).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every proxied request, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn stop_listener(&mut self) {
        let Some(t) = self.accept.take() else {
            return;
        };
        self.state.stop_accept.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.state.addr, Duration::from_secs(1));
        let _ = t.join();
    }

    fn drop_connections(&self) {
        self.state.epoch.fetch_add(1, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().values() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.state.gone.store(true, Ordering::SeqCst);
        self.stop_listener();
        self.drop_connections();
    }
}

/// A listener with SO_REUSEADDR, so the port can be bound again while old connections
/// linger in TIME_WAIT.
fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

fn spawn_accept(state: Arc<State>, listener: TcpListener) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("switchable-{}", state.name))
        .spawn(move || {
            for stream in listener.incoming() {
                if state.stop_accept.load(Ordering::SeqCst) || state.gone.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                if *state.answer.lock().unwrap() == Answer::CloseOnAccept {
                    continue;
                }
                let epoch = state.epoch.load(Ordering::SeqCst);
                let id = state.accepted.load(Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    state.conns.lock().unwrap().insert(id, clone);
                }
                let s = state.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let end = serve(&s, &mut stream, epoch);
                    s.conns.lock().unwrap().remove(&id);
                    if end == End::Reset {
                        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    }
                    drop(stream);
                });
            }
        })
        .expect("spawn the accept thread")
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    check: bool,
    body: Vec<u8>,
}

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Close with FIN.
    Close,
    /// Close with RST.
    Reset,
}

/// Serves one connection until it should end.
fn serve(state: &State, stream: &mut TcpStream, epoch: usize) -> End {
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let alive =
        || state.epoch.load(Ordering::SeqCst) == epoch && !state.gone.load(Ordering::SeqCst);
    let mut buf = Vec::new();
    let mut first = true;
    let mut answered = 0usize;
    // Counts the connection in `open_proxied` from its first proxied request until
    // this function returns, however it returns.
    let mut _open: Option<OpenGuard<'_>> = None;
    loop {
        let req = match read_request(stream, &mut buf, &alive) {
            Ok(Some(r)) => r,
            _ => return End::Close,
        };
        if !alive() {
            // Crashed or killed while this request was on its way.
            return End::Reset;
        }
        if first && !req.check {
            state.proxied_conns.fetch_add(1, Ordering::SeqCst);
            _open = Some(OpenGuard::new(&state.open_proxied));
        }
        first = false;
        let crashed = state.crashed.load(Ordering::SeqCst);
        if req.check {
            state.checks.fetch_add(1, Ordering::SeqCst);
            let status = state.health.load(Ordering::SeqCst);
            if crashed || status >= 400 {
                state.checks_failed.fetch_add(1, Ordering::SeqCst);
            } else {
                state.checks_passed.fetch_add(1, Ordering::SeqCst);
            }
            if crashed {
                return End::Reset;
            }
            let head = format!("HTTP/1.1 {status} Check\r\nContent-Length: 3\r\n\r\nok\n");
            if stream.write_all(head.as_bytes()).is_err() {
                return End::Close;
            }
            continue;
        }
        // Read before the request counts, so a release the test makes after seeing the
        // count lets this request go.
        let releases = state.releases.load(Ordering::SeqCst);
        state.requests.fetch_add(1, Ordering::SeqCst);
        state.seen.lock().unwrap().push(Seen {
            method: req.method,
            target: req.target,
            body: req.body,
            checks_passed_before: state.checks_passed.load(Ordering::SeqCst),
        });
        if crashed {
            return End::Reset;
        }
        let answer = state.answer.lock().unwrap().clone();
        let fixed = |stream: &mut TcpStream, status: u16, body: String| {
            let out = format!(
                "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(out.as_bytes())
        };
        let sent = match answer {
            Answer::Ok => fixed(stream, 200, format!("{}\n", state.name)),
            Answer::Status(code) => fixed(stream, code, format!("{}: status {code}\n", state.name)),
            Answer::Hang => {
                // Hold the connection, answering nothing, until the peer or the test goes.
                let mut scratch = [0u8; 4096];
                let start = Instant::now();
                while alive() && start.elapsed() < IDLE {
                    match stream.read(&mut scratch) {
                        Ok(0) => return End::Close,
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => return End::Close,
                    }
                }
                return End::Close;
            }
            Answer::ResetAfterRequest | Answer::CloseOnAccept => return End::Reset,
            Answer::ResetAfterFirst if answered > 0 => return End::Reset,
            Answer::ResetAfterFirst => fixed(stream, 200, format!("{}\n", state.name)),
            Answer::Trickle { len, gap } => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                if stream.write_all(head.as_bytes()).is_err() {
                    return End::Close;
                }
                for _ in 0..len {
                    std::thread::sleep(gap);
                    if !alive() || stream.write_all(b"x").is_err() {
                        return End::Close;
                    }
                }
                Ok(())
            }
            Answer::Held => {
                let start = Instant::now();
                while state.releases.load(Ordering::SeqCst) == releases {
                    if !alive() || start.elapsed() >= IDLE {
                        return End::Close;
                    }
                    std::thread::sleep(TICK);
                }
                fixed(stream, 200, format!("{}\n", state.name))
            }
        };
        if sent.is_err() {
            return End::Close;
        }
        answered += 1;
    }
}

/// Counts one open connection until dropped.
struct OpenGuard<'a>(&'a AtomicUsize);

impl<'a> OpenGuard<'a> {
    fn new(count: &'a AtomicUsize) -> OpenGuard<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        OpenGuard(count)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads more bytes; `Ok(0)` on EOF or reset. Gives up when `alive` turns false or the
/// connection idles for `IDLE`.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, alive: &dyn Fn() -> bool) -> io::Result<usize> {
    if buf.len() > MAX_MESSAGE {
        return Err(io::Error::other("message too large"));
    }
    let start = Instant::now();
    let mut tmp = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut tmp) {
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(0),
            Err(e) if is_timeout(&e) => {
                if !alive() || start.elapsed() >= IDLE {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads one request (Content-Length bodies only); `Ok(None)` on EOF between requests.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    alive: &dyn Fn() -> bool,
) -> io::Result<Option<Request>> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if fill(stream, buf, alive)? == 0 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or_default().to_string();
    let mut len = 0usize;
    let mut check = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            len = value
                .trim()
                .parse()
                .map_err(|_| io::Error::other("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("user-agent") && value.trim() == CHECK_AGENT {
            check = true;
        }
    }
    if len > MAX_MESSAGE {
        return Err(io::Error::other("body too large"));
    }
    while buf.len() < len {
        if fill(stream, buf, alive)? == 0 {
            return Ok(None);
        }
    }
    let body = buf.drain(..len).collect();
    Ok(Some(Request {
        method,
        target,
        check,
        body,
    }))
}

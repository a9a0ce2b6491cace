//! One client connection, top to bottom: read a head, route it, pick a server, take a
//! pooled connection (or connect), forward the head and body, relay the response back,
//! and loop for the next request while both sides allow keep-alive.
//!
//! Runs as a task on its worker's runtime. Everything the hot path needs is owned by
//! the task (buffers are reused across requests) or by its `Worker` (pools, cursors,
//! health); nothing here takes a lock or touches another core's memory.

mod upstream;

use crate::balance::{hash_bytes, Tried};
use crate::body::{Relay, RelayError};
use crate::buf::{write_vec, Buf, ConnBufs, Fill};
use crate::config::{Balance, HashKey, PathMatch, ServerId, Upstream, UpstreamId, Var};
use crate::error::{write_error_response, ErrorFormat, ProxyError};
use crate::http::path;
use crate::http::request::{self, Limits};
use crate::http::rewrite::{write_upstream_request, Edits, Forward, Peer, Vars};
use crate::http::{strip_port, Framing, Version};
use crate::route::RequestView;
use crate::timer::Timers;
use crate::worker::Worker;
use monoio::io::Canceller;
use monoio::net::TcpStream;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use upstream::{send_keep, HeadError, Upstreams};

/// Header slots on the stack per parse; `server.max_headers` is capped to this.
pub const MAX_HEADER_SLOTS: usize = 512;
/// Initial client buffer: most request heads fit, and idle connections stay small.
pub const CLIENT_BUF: usize = 4096;
/// Upstream read buffer: large enough to move big bodies in few reads.
const UPSTREAM_BUF: usize = 64 * 1024;
/// Bodies up to this size that are already buffered travel in the same write as the head.
const COALESCE_MAX: usize = 16 * 1024;

/// What the request head said, kept after the buffer borrow ends.
#[derive(Debug, Clone)]
struct Head {
    len: usize,
    body: Framing,
    keep_alive: bool,
    version: Version,
    expect_continue: bool,
    is_head: bool,
    /// The matched route's index and upstream group.
    route: Option<(usize, UpstreamId)>,
    /// The request's key for `ip_hash` / `consistent_hash`, when its group uses one.
    hash: Option<u64>,
    /// The method is in the group's `idempotent_methods`: safe to send twice.
    idempotent: bool,
    /// `$request_id`, when the config uses it.
    request_id: RequestId,
    /// `$host` for response header edits, kept only when they use it.
    resp_host: Option<Box<str>>,
}

/// A request id, inline so the head stays allocation-free.
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    bytes: [u8; 64],
    len: u8,
}

impl RequestId {
    /// No id.
    pub const NONE: RequestId = RequestId {
        bytes: [0; 64],
        len: 0,
    };

    /// Takes a client's id when it is short visible ASCII, which is safe to echo in headers.
    fn from_client(v: &[u8]) -> Option<RequestId> {
        if v.is_empty() || v.len() > 64 || !v.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut id = RequestId::NONE;
        id.bytes[..v.len()].copy_from_slice(v);
        id.len = v.len() as u8;
        Some(id)
    }

    /// A new id: 16 hex digits unique to the worker's run, then its request counter.
    pub fn generate(prefix: u64, seq: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = RequestId::NONE;
        for (i, v) in [prefix, seq].into_iter().enumerate() {
            for k in 0..16 {
                id.bytes[i * 16 + k] = HEX[(v >> (60 - 4 * k) & 0xf) as usize];
            }
        }
        id.len = 32;
        id
    }

    /// The id's text (empty for none).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// How one exchange ended, for the keep-alive decision.
enum Outcome {
    /// The exchange completed; keep the client connection if this is true.
    Done { keep_alive: bool },
    /// Answer with this error. `drained`: the request body was fully read, so the
    /// connection is still at a request boundary and may be kept.
    Error { err: ProxyError, drained: bool },
}

/// How a busy spell of a connection ended.
enum Spell {
    /// The connection went quiet: wait for its next request without buffers.
    Idle,
    /// The connection is done.
    Close,
}

/// A connection whose next request came within this of its last response (give or take
/// a timer tick) is hot: after each response it keeps its buffers and a read in flight
/// for this long (plus up to a tick) before it goes idle without them.
///
/// A busy client's next request then costs one read, instead of a readiness wait, a
/// `recv`, and taking and returning the buffers. A client that sends one request and
/// stays quiet never holds more than an idle connection's few hundred bytes.
pub const HOT_WAIT: Duration = Duration::from_millis(100);
/// [`HOT_WAIT`] in worker ticks.
const HOT_TICKS: u32 = (HOT_WAIT.as_millis() / crate::worker::TICK.as_millis()) as u32;

/// Serves one client connection until it closes or must be closed.
///
/// Between requests an idle connection holds no buffers: it waits for readability only,
/// and its buffers go back to the worker's pool, so it costs a few hundred bytes. The
/// request path's state is boxed for the same reason: it is large and lives only while
/// the connection is busy (or hot, see [`HOT_WAIT`]).
pub async fn serve(worker: Rc<Worker>, mut client: TcpStream, peer: SocketAddr) {
    let config = &worker.config.server;
    let mut first = true;
    // The worker's tick count when the connection last went idle. A tick count, not an
    // `Instant`: this future is what an idle connection costs, and it sits just under
    // one of the allocator's size classes.
    let mut quiet_tick: u32 = 0;
    loop {
        // A new connection's request is usually there already: read it at once
        // (`busy` applies header_timeout); an idle one waits without buffers.
        let mut hot = false;
        if !first {
            let at = worker.now.get() + config.keepalive_timeout;
            match worker.timers.timeout_at(at, client.readable(false)).await {
                Some(Ok(())) => {}
                _ => return,
            }
            hot = worker.ticks.get().wrapping_sub(quiet_tick) <= HOT_TICKS;
        }
        let mut bufs = worker.buffers.take();
        if !first {
            use std::os::fd::AsRawFd;
            match bufs
                .cbuf
                .try_fill_now(client.as_raw_fd(), config.max_header_bytes)
            {
                Ok(Some(Fill::Eof)) | Err(_) => return worker.buffers.give(bufs),
                _ => {}
            }
        }
        let spell = busy(&worker, &mut client, &mut bufs, peer, &mut first, hot);
        let end = Box::pin(spell).await;
        worker.buffers.give(bufs);
        match end {
            Spell::Idle => quiet_tick = worker.ticks.get(),
            Spell::Close => return,
        }
    }
}

/// Answers requests while the client has some buffered or arriving; `hot`: also waits
/// up to [`HOT_WAIT`] for each next request before giving up the buffers.
async fn busy(
    worker: &Worker,
    client: &mut TcpStream,
    bufs: &mut ConnBufs,
    peer: SocketAddr,
    first: &mut bool,
    hot: bool,
) -> Spell {
    // Formatted per busy spell, not kept: an idle connection stays that much smaller.
    let peer = &Peer::new(peer);
    let ConnBufs { cbuf, out } = bufs;
    let config = &*worker.config;
    let limits = Limits {
        max_header_bytes: config.server.max_header_bytes,
        max_headers: config.server.max_headers.min(MAX_HEADER_SLOTS),
        max_request_line: config.server.max_request_line,
    };
    let format = config.server.error_format;
    let mut answered = false;
    // Made once per spell, on the first wait for a next request.
    let mut canceller = None;
    loop {
        if answered && cbuf.is_empty() {
            if !hot {
                return Spell::Idle;
            }
            let keepalive = config.server.keepalive_timeout;
            let until = worker.now.get() + keepalive.min(HOT_WAIT);
            let max = limits.max_header_bytes;
            match next_request(worker, client, cbuf, max, &mut canceller, until).await {
                Next::Arrived => {}
                Next::Quiet if keepalive > HOT_WAIT => return Spell::Idle,
                Next::Quiet | Next::Closed => return Spell::Close,
            }
        }
        let head = match read_head(worker, &limits, client, cbuf, out, peer, *first).await {
            Ok(Some(h)) => h,
            Ok(None) => return Spell::Close,
            Err(e) => {
                let reply = ErrorReply {
                    err: e,
                    upstream: None,
                    close: true,
                    is_head: false,
                };
                respond_error(&worker.timers, client, out, format, reply).await;
                return linger_close(&worker.timers, client, cbuf).await;
            }
        };
        *first = false;
        answered = true;
        let Some((route, upstream)) = head.route else {
            // The body (if any) is unread: only a bodiless request keeps the connection.
            let keep = head.body == Framing::None && head.keep_alive;
            if keep {
                cbuf.consume(head.len);
            }
            let reply = ErrorReply {
                err: ProxyError::NoRoute,
                upstream: None,
                close: !keep,
                is_head: head.is_head,
            };
            respond_error(&worker.timers, client, out, format, reply).await;
            if keep {
                continue;
            }
            return linger_close(&worker.timers, client, cbuf).await;
        };
        match exchange(worker, route, &head, client, cbuf, out, peer).await {
            Outcome::Done { keep_alive: true } => {}
            Outcome::Done { keep_alive: false } => return Spell::Close,
            Outcome::Error { err, drained } => {
                let keep = drained && head.keep_alive;
                let reply = ErrorReply {
                    err,
                    upstream: Some(&config.upstreams[upstream].name),
                    close: !keep,
                    is_head: head.is_head,
                };
                respond_error(&worker.timers, client, out, format, reply).await;
                if !keep {
                    return linger_close(&worker.timers, client, cbuf).await;
                }
            }
        }
    }
}

/// What waiting for a connection's next request found.
enum Next {
    /// Bytes of it are in the buffer.
    Arrived,
    /// Nothing came in time.
    Quiet,
    /// The client closed, or the read failed.
    Closed,
}

/// Reads the start of the next request into `cbuf`, giving up at `until`.
///
/// The read is called off rather than dropped when time is up: dropping an in-flight
/// read would lose bytes that arrive just then, while a called-off read reports them.
async fn next_request(
    worker: &Worker,
    client: &mut TcpStream,
    cbuf: &mut Buf,
    max: usize,
    canceller: &mut Option<Canceller>,
    until: Instant,
) -> Next {
    let handle = canceller.get_or_insert_with(Canceller::new).handle();
    let mut read = std::pin::pin!(cbuf.fill_cancelable(client, max, handle));
    let res = match worker.timers.timeout_at(until, read.as_mut()).await {
        Some(res) => res,
        None => {
            // `cancel` hands back a fresh canceller for later reads; none follow here.
            drop(canceller.take().map(Canceller::cancel));
            read.await
        }
    };
    match res {
        Ok(Fill::Read(_) | Fill::Full) => Next::Arrived,
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Next::Quiet,
        Ok(Fill::Eof) | Err(_) => Next::Closed,
    }
}

/// Closes a connection that may still have unread request bytes in flight.
///
/// Closing a socket with unread data makes the kernel send RST, which can destroy the
/// error response before the client reads it; so shut down our side first and drain
/// what the client still sends, for a bounded time and size (nginx's lingering close).
async fn linger_close(timers: &Timers, client: &mut TcpStream, cbuf: &mut Buf) -> Spell {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const MAX_DRAIN: usize = 1 << 20;
    if monoio::io::AsyncWriteRent::shutdown(client).await.is_err() {
        return Spell::Close;
    }
    let drain = async {
        let mut drained = 0;
        while drained < MAX_DRAIN {
            cbuf.consume(cbuf.len());
            match cbuf.fill(client, CLIENT_BUF).await {
                Ok(Fill::Read(n)) => drained += n,
                _ => break,
            }
        }
    };
    let _ = timers.timeout(LINGER, drain).await;
    Spell::Close
}

/// Waits for a complete request head and prepares the upstream head in `out`.
///
/// `Ok(None)`: the client closed or idled out between requests (nothing to answer).
async fn read_head(
    worker: &Worker,
    limits: &Limits,
    client: &mut TcpStream,
    cbuf: &mut Buf,
    out: &mut Vec<u8>,
    peer: &Peer,
    first: bool,
) -> Result<Option<Head>, ProxyError> {
    let config = &*worker.config;
    let mut deadline: Option<Instant> = None;
    loop {
        if !cbuf.is_empty() {
            if let Some(head) = prepare(worker, limits, cbuf.data(), peer, out)? {
                return Ok(Some(head));
            }
        }
        let fill = match deadline {
            // Waiting for the first byte of a request: the idle (keep-alive) timeout,
            // or the header timeout on a brand-new connection.
            None if cbuf.is_empty() => {
                let idle = if first {
                    config.server.header_timeout
                } else {
                    config.server.keepalive_timeout
                };
                let at = worker.now.get() + idle;
                let read = cbuf.fill(client, limits.max_header_bytes);
                match worker.timers.timeout_at(at, read).await {
                    Some(r) => r,
                    None => return Ok(None),
                }
            }
            _ => {
                let at = *deadline
                    .get_or_insert_with(|| worker.now.get() + config.server.header_timeout);
                let read = cbuf.fill(client, limits.max_header_bytes);
                match worker.timers.timeout_at(at, read).await {
                    Some(r) => r,
                    None => return Err(ProxyError::RequestTimeout),
                }
            }
        };
        match fill {
            Ok(Fill::Read(_)) => {
                if deadline.is_none() {
                    deadline = Some(worker.now.get() + config.server.header_timeout);
                }
            }
            Ok(Fill::Eof) if cbuf.is_empty() => return Ok(None),
            Ok(Fill::Eof) => return Err(ProxyError::BadRequest("connection closed mid-head")),
            Ok(Fill::Full) => return Err(ProxyError::HeadersTooLarge("request head too large")),
            Err(_) => return Ok(None),
        }
    }
}

/// Parses the head in `data` (synchronously, borrowing it), routes it, and writes the
/// upstream request head into `out`. `Ok(None)`: incomplete, read more.
fn prepare(
    worker: &Worker,
    limits: &Limits,
    data: &[u8],
    peer: &Peer,
    out: &mut Vec<u8>,
) -> Result<Option<Head>, ProxyError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let Some(req) = request::parse(data, &mut slots, limits)? else {
        return Ok(None);
    };
    let config = &*worker.config;
    let raw_path = req.path();
    let query = &req.target[raw_path.len()..];
    // Allocates only for the rare path that needs normalizing.
    let mut normalized = Vec::new();
    let path = match path::normalize(raw_path, &mut normalized) {
        _ if raw_path == "*" => raw_path,
        Ok(false) => raw_path,
        Ok(true) => {
            std::str::from_utf8(&normalized).map_err(|_| ProxyError::BadRequest("invalid path"))?
        }
        Err(_) => return Err(ProxyError::BadRequest("malformed percent-encoding in path")),
    };
    let view = RequestView {
        method: req.method,
        host: req.host,
        path,
        query: query.strip_prefix('?').unwrap_or(""),
        headers: req.headers,
    };
    let mut head = Head {
        len: req.head_len,
        body: req.body,
        keep_alive: req.keep_alive,
        version: req.version,
        expect_continue: req.expect_continue,
        is_head: req.is_head(),
        route: None,
        hash: None,
        idempotent: false,
        request_id: RequestId::NONE,
        resp_host: None,
    };
    out.clear();
    let Some(index) = worker.router.find(&view) else {
        return Ok(Some(head));
    };
    let route = worker.router.route(index);
    head.route = Some((index, route.upstream));
    let group = &config.upstreams[route.upstream];
    head.hash = request_hash(group, &view, peer);
    head.idempotent = group.idempotent_methods.iter().any(|m| m == req.method);

    let rest = match &route.path {
        PathMatch::Prefix(p) if p != "/" => &path[p.len()..],
        _ => path,
    };
    let target: [&[u8]; 2] = match (&route.rewrite_prefix, route.strip_prefix) {
        (Some(new), _) if new.ends_with('/') && rest.starts_with('/') => {
            [new.as_bytes(), &rest.as_bytes()[1..]]
        }
        (Some(new), _) => [new.as_bytes(), rest.as_bytes()],
        (None, true) if rest.is_empty() => [b"/", b""],
        (None, true) => [rest.as_bytes(), b""],
        (None, false) => [path.as_bytes(), b""],
    };

    let mut generated = false;
    if config.request_ids {
        let client_id = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
            .map(|h| crate::http::trim(h.value));
        head.request_id = match client_id.and_then(RequestId::from_client) {
            Some(id) => id,
            None => {
                generated = client_id.is_none();
                worker.next_request_id()
            }
        };
    }
    let host = strip_port(req.host);
    let global = &config.server;
    if global.response_headers.uses(Var::Host) || route.response_headers.uses(Var::Host) {
        head.resp_host = Some(host.into());
    }
    let edits =
        (!global.request_headers.is_empty() || !route.request_headers.is_empty()).then(|| Edits {
            scopes: [&global.request_headers, &route.request_headers],
            vars: Vars {
                peer,
                host: host.as_bytes(),
                request_id: head.request_id.as_bytes(),
                upstream: None,
            },
        });
    let fwd = Forward {
        path: target,
        query: query.as_bytes(),
        edits,
        request_id: generated.then(|| head.request_id.as_bytes()),
    };
    write_upstream_request(out, &req, peer, req.body, &fwd);
    Ok(Some(head))
}

/// The balancing key of a request for the hashing policies; `None` for the others, or
/// when the key (header, cookie) is absent, which makes the balancer use round robin.
fn request_hash(group: &Upstream, req: &RequestView<'_>, peer: &Peer) -> Option<u64> {
    let key = match (group.balance, &group.hash_key) {
        (Balance::IpHash, _) | (_, Some(HashKey::RemoteAddr)) => peer.ip(),
        (_, Some(HashKey::Uri)) => req.path.as_bytes(),
        (_, Some(HashKey::Header(name))) => req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)?,
        (_, Some(HashKey::Cookie(name))) => req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = crate::http::trim(pair);
                let eq = pair.iter().position(|&b| b == b'=')?;
                (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
            })?,
        _ => return None,
    };
    Some(hash_bytes(key))
}

/// A failure before the response head, sorted by what may be retried.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// No response head in time.
    Timeout(ProxyError),
    /// The connection closed or reset before a response head.
    Reset,
    /// A 5xx status `retry_on` names.
    Status(u16),
    /// Anything else: answered, never retried.
    Fatal(ProxyError),
}

impl Failure {
    fn error(self) -> ProxyError {
        match self {
            Failure::Timeout(e) | Failure::Fatal(e) => e,
            Failure::Reset => ProxyError::UpstreamClosed,
            Failure::Status(s) => ProxyError::UpstreamStatus(s),
        }
    }
}

/// Forwards one request to `upstream` and relays the response.
///
/// Small bodies (up to `retry_body_max`) are read whole first so the request can be
/// resent: after a dead pooled connection (always), and for idempotent requests after a
/// timeout, reset or retryable status (per `retry_on`, `retries` and the budget).
/// Larger bodies are streamed and never retried once sent.
async fn exchange(
    worker: &Worker,
    route_index: usize,
    head: &Head,
    client: &mut TcpStream,
    cbuf: &mut Buf,
    out: &mut Vec<u8>,
    peer: &Peer,
) -> Outcome {
    let config = &*worker.config;
    let route = worker.router.route(route_index);
    let upstream = route.upstream;
    let group = &config.upstreams[upstream];
    let resp_scopes = [&config.server.response_headers, &route.response_headers];
    let resp_edits = |server: ServerId| {
        (!resp_scopes[0].is_empty() || !resp_scopes[1].is_empty()).then(|| Edits {
            scopes: resp_scopes,
            vars: Vars {
                peer,
                host: head.resp_host.as_deref().unwrap_or("").as_bytes(),
                request_id: head.request_id.as_bytes(),
                upstream: Some(config.servers[server].addr),
            },
        })
    };
    let ups = Upstreams {
        worker,
        group,
        upstream,
        head,
        deadline: group.request_timeout.map(|t| Instant::now() + t),
    };
    let budget = &worker.budgets[upstream];
    budget.request(worker.now.get());

    let body_len = match head.body {
        Framing::None => Some(0),
        Framing::Length(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= group.retry_body_max || cbuf.len() - head.len >= n),
        Framing::Chunked | Framing::Close => None,
    };
    if let Some(n) = body_len {
        if cbuf.len() - head.len < n {
            if head.expect_continue
                && cbuf.len() == head.len
                && send_continue(client).await.is_err()
            {
                return Outcome::Done { keep_alive: false };
            }
            if read_body(
                &worker.timers,
                client,
                cbuf,
                head.len + n,
                config.server.body_timeout,
            )
            .await
            .is_err()
            {
                // The client vanished or stalled mid-body: nothing to answer.
                return Outcome::Done { keep_alive: false };
            }
        }
    }
    let coalesced = body_len.is_some_and(|n| n <= COALESCE_MAX);
    if let (true, Some(n)) = (coalesced, body_len) {
        out.extend_from_slice(&cbuf.data()[head.len..head.len + n]);
    }
    let replayable = body_len.is_some();
    // Also for a pooled connection that closes with no response byte: it may have been
    // closed idle (resend) or after reading the request (the upstream may have acted on
    // it), and the two cannot be told apart, so resend only what is safe to send twice.
    let may_retry = replayable && head.idempotent;

    let mut tried = Tried::default();
    let mut retried_fresh = false;
    let mut fresh_for: Option<ServerId> = None;
    let mut retries_left = group.retries;
    let mut last_failure: Option<ProxyError> = None;
    let mut sent_at = None;
    // `_counted` keeps the request counted against its server until the response is
    // relayed; a failed attempt's count ends with its loop turn, before the next pick.
    let (mut up, resp, _counted) = loop {
        // Only a replayable idempotent request may find out on the wire that a pooled
        // connection was dead: anything else must not be resent, so check it first.
        let check_pooled = !may_retry;
        let (mut conn, counted) = match ups
            .acquire(&mut tried, fresh_for.take(), check_pooled)
            .await
        {
            Ok(c) => c,
            Err(err) => {
                // After a failed attempt, "nobody else to try" is less telling than why.
                let err = match (err, last_failure) {
                    (ProxyError::NoServerAvailable, Some(prev)) => prev,
                    _ => err,
                };
                return error_before_body(err, head, cbuf, body_len);
            }
        };
        if group.balance == Balance::LeastTime {
            sent_at = Some(Instant::now());
        }
        let mut sent = send_keep(&mut conn.stream, out).await;
        if let (Ok(()), false, Some(n)) = (&sent, coalesced, body_len) {
            // Written from the client buffer without consuming it, so a retry can resend.
            sent = cbuf.write_range(&mut conn.stream, head.len, n).await;
        }
        let failure = if sent.is_err() {
            if conn.reused && !retried_fresh {
                retried_fresh = true;
                fresh_for = Some(conn.server);
                continue;
            }
            Failure::Reset
        } else if let Some(n) = body_len {
            let edits = resp_edits(conn.server);
            let retry = (may_retry && retries_left > 0 && budget.allows(worker.now.get()))
                .then_some(&group.retry_on);
            match ups
                .read_response_head(&mut conn, out, edits.as_ref(), retry)
                .await
            {
                Ok(r) => {
                    cbuf.consume(head.len + n);
                    break (conn, r, counted);
                }
                Err(HeadError::DeadReused) if !retried_fresh && may_retry => {
                    // No byte arrived, so `out` still holds the request: resend it fresh.
                    retried_fresh = true;
                    fresh_for = Some(conn.server);
                    continue;
                }
                Err(HeadError::DeadReused) => Failure::Reset,
                Err(HeadError::Retry(status)) => Failure::Status(status),
                Err(HeadError::Proxy(e)) => classify(e),
            }
        } else {
            // Streamed body: answer 100-continue, relay the body, then read the response.
            // Nothing here is retried: the body is gone once sent.
            cbuf.consume(head.len);
            if head.expect_continue && cbuf.is_empty() && send_continue(client).await.is_err() {
                return Outcome::Done { keep_alive: false };
            }
            out.clear();
            let mut relay = Relay {
                src: &mut *client,
                buf: &mut *cbuf,
                dst: &mut conn.stream,
                out: &mut *out,
                read_timeout: config.server.body_timeout,
                write_timeout: group.read_timeout,
                max_buf: config.server.max_header_bytes.max(CLIENT_BUF),
                timers: &worker.timers,
            };
            match relay.run(head.body, head.body).await {
                Ok(()) => {}
                Err(RelayError::Framing(_)) => {
                    return Outcome::Error {
                        err: ProxyError::BadRequest("invalid chunked body"),
                        drained: false,
                    };
                }
                Err(RelayError::Write(_) | RelayError::WriteTimeout) => {
                    ups.failed(conn.server, "connection closed while sending the body");
                    return Outcome::Error {
                        err: ProxyError::UpstreamClosed,
                        drained: false,
                    };
                }
                // The client vanished or stalled mid-body: nothing to answer.
                Err(_) => return Outcome::Done { keep_alive: false },
            }
            let edits = resp_edits(conn.server);
            match ups
                .read_response_head(&mut conn, out, edits.as_ref(), None)
                .await
            {
                Ok(r) => break (conn, r, counted),
                Err(HeadError::DeadReused | HeadError::Retry(_)) => {
                    ups.failed(conn.server, ProxyError::UpstreamClosed.reason());
                    return Outcome::Error {
                        err: ProxyError::UpstreamClosed,
                        drained: true,
                    };
                }
                Err(HeadError::Proxy(err)) => {
                    if err != ProxyError::RequestDeadline {
                        ups.failed(conn.server, err.reason());
                    }
                    return Outcome::Error { err, drained: true };
                }
            }
        };

        // The attempt failed before any response reached the client.
        let server = conn.server;
        drop(conn);
        match failure {
            Failure::Timeout(ProxyError::RequestDeadline) => {}
            Failure::Status(s) if !group.fail_on_status.contains(&s) => {}
            f => ups.failed(server, f.error().reason()),
        }
        let wanted = match failure {
            Failure::Timeout(ProxyError::RequestDeadline) | Failure::Fatal(_) => false,
            Failure::Timeout(_) => group.retry_on.timeout,
            Failure::Reset => group.retry_on.reset,
            Failure::Status(_) => true,
        };
        if wanted && may_retry && retries_left > 0 && budget.try_spend(worker.now.get()) {
            retries_left -= 1;
            last_failure = Some(failure.error());
            continue;
        }
        return error_before_body(failure.error(), head, cbuf, body_len);
    };
    if group.fail_on_status.contains(&resp.status) {
        ups.failed(up.server, "error status");
    } else {
        ups.succeeded(up.server);
    }
    if let Some(at) = sent_at {
        worker
            .balancer
            .observe_latency(up.server, at.elapsed(), worker.now.get());
    }

    // `out` holds the client response head, plus the body when it was small and complete.
    // A coarse timer: this runs per request, and a monoio `Sleep` would make the
    // request state 640 bytes larger and cost a timer-wheel insert and remove.
    let at = worker.now.get() + config.server.body_timeout;
    if !matches!(
        worker.timers.timeout_at(at, write_vec(client, out)).await,
        Some(Ok(()))
    ) {
        return Outcome::Done { keep_alive: false };
    }
    let mut relay = Relay {
        src: &mut up.stream,
        buf: &mut up.buf,
        dst: &mut *client,
        out: &mut *out,
        read_timeout: group.read_timeout,
        write_timeout: config.server.body_timeout,
        max_buf: UPSTREAM_BUF,
        timers: &worker.timers,
    };
    let relayed = match ups.deadline {
        None => relay.run(resp.input, resp.output).await.is_ok(),
        Some(d) => matches!(
            worker
                .timers
                .timeout_at(d, relay.run(resp.input, resp.output))
                .await,
            Some(Ok(()))
        ),
    };
    if !relayed {
        // A truncated body must never be followed by another response on this connection.
        return Outcome::Done { keep_alive: false };
    }
    if resp.reusable && up.buf.is_empty() {
        worker.pool.put(up, worker.now.get(), group.keepalive);
    }
    Outcome::Done {
        keep_alive: head.keep_alive && !resp.close_client,
    }
}

/// Sorts an upstream error by the retry rules.
fn classify(e: ProxyError) -> Failure {
    match e {
        ProxyError::ResponseTimeout | ProxyError::RequestDeadline => Failure::Timeout(e),
        ProxyError::UpstreamClosed => Failure::Reset,
        e => Failure::Fatal(e),
    }
}

/// Tells a client that sent `Expect: 100-continue` to go on with its body.
async fn send_continue(client: &mut TcpStream) -> std::io::Result<()> {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let (res, _) = monoio::io::AsyncWriteRentExt::write_all(client, CONTINUE).await;
    res.map(|_| ())
}

/// Reads from the client until `cbuf` holds `total` bytes (a head and its whole body).
async fn read_body(
    timers: &Timers,
    client: &mut TcpStream,
    cbuf: &mut Buf,
    total: usize,
    gap: Duration,
) -> Result<(), ()> {
    while cbuf.len() < total {
        match timers.timeout(gap, cbuf.fill(client, total)).await {
            Some(Ok(Fill::Read(_))) => {}
            _ => return Err(()),
        }
    }
    Ok(())
}

/// An error answered before the request body was relayed: a fully buffered body is
/// consumed (the connection stays at a request boundary), a streamed one forces close.
fn error_before_body(
    err: ProxyError,
    head: &Head,
    cbuf: &mut Buf,
    buffered_body: Option<usize>,
) -> Outcome {
    match buffered_body {
        Some(n) => {
            cbuf.consume(head.len + n);
            Outcome::Error { err, drained: true }
        }
        None => Outcome::Error {
            err,
            drained: false,
        },
    }
}

/// A proxy-made error response to send.
struct ErrorReply<'a> {
    err: ProxyError,
    /// The group, named in the body for upstream faults.
    upstream: Option<&'a str>,
    /// Send `Connection: close` (the connection ends after it).
    close: bool,
    /// The request was HEAD: no body.
    is_head: bool,
}

/// Sends a proxy-made error response; gives up quietly if the client does not read it.
async fn respond_error(
    timers: &Timers,
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    format: ErrorFormat,
    r: ErrorReply<'_>,
) {
    out.clear();
    write_error_response(out, r.err, r.upstream, r.close, r.is_head, format);
    let _ = timers
        .timeout(Duration::from_secs(10), write_vec(client, out))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future an async fn of three arguments returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_connection_task_stays_in_its_allocator_size_class() {
        // The connection task is most of what an idle keep-alive connection costs:
        // monoio adds about 48 bytes to this future, and mimalloc rounds the sum up to
        // its next size class, 448 bytes. At 392 bytes there is room for 8 more; past
        // that every idle connection costs 64 bytes more (seen in loadtest `idle`).
        let size = future_size(serve);
        assert!(size <= 400, "proxy::serve's future grew to {size} bytes");
    }
}

//! One client connection, top to bottom: read a head, route it, pick a server, take a
//! pooled connection (or connect), forward the head and body, relay the response back,
//! and loop for the next request while both sides allow keep-alive.
//!
//! Runs as a task on its worker's runtime. Everything the hot path needs is owned by
//! the task (buffers are reused across requests) or by its `Worker` (pools, cursors,
//! health); nothing here takes a lock or touches another core's memory.

use crate::balance::{hash_bytes, Balancer, Tried};
use crate::body::{Relay, RelayError};
use crate::buf::{write_vec, Buf, Fill};
use crate::bus::Update;
use crate::config::{Balance, HashKey, PathMatch, ServerId, Upstream, UpstreamId, Var};
use crate::error::{write_error_response, ProxyError};
use crate::http::path;
use crate::http::request::{self, Limits};
use crate::http::response::{self, MAX_RESPONSE_HEAD};
use crate::http::rewrite::{
    write_client_response, write_upstream_request, Edits, Forward, Peer, Vars,
};
use crate::http::{strip_port, Framing, Version};
use crate::pool::UpConn;
use crate::route::RequestView;
use crate::warn;
use crate::worker::Worker;
use monoio::net::TcpStream;
use monoio::time::{timeout, timeout_at};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Header slots on the stack per parse; `server.max_headers` is capped to this.
pub const MAX_HEADER_SLOTS: usize = 512;
/// Initial client buffer: most request heads fit, and idle connections stay small.
const CLIENT_BUF: usize = 4096;
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

/// What the response head said.
#[derive(Debug, Clone, Copy)]
struct RespHead {
    len: usize,
    input: Framing,
    output: Framing,
    reusable: bool,
    close_client: bool,
}

/// How one exchange ended, for the keep-alive decision.
enum Outcome {
    /// The exchange completed; keep the client connection if this is true.
    Done { keep_alive: bool },
    /// Answer with this error. `drained`: the request body was fully read, so the
    /// connection is still at a request boundary and may be kept.
    Error { err: ProxyError, drained: bool },
}

/// Why waiting for a response head failed.
enum HeadError {
    /// A pooled connection closed before sending a byte: safe to retry on a fresh one.
    DeadReused,
    /// Anything else, answered to the client.
    Proxy(ProxyError),
}

/// Serves one client connection until it closes or must be closed.
pub async fn serve(worker: Rc<Worker>, mut client: TcpStream, peer: SocketAddr) {
    let peer = Peer::new(peer);
    let mut cbuf = Buf::with_capacity(CLIENT_BUF);
    let mut out = Vec::with_capacity(CLIENT_BUF);
    let config = worker.config.clone();
    let limits = Limits {
        max_header_bytes: config.server.max_header_bytes,
        max_headers: config.server.max_headers.min(MAX_HEADER_SLOTS),
        max_request_line: config.server.max_request_line,
    };
    let mut first = true;
    loop {
        let head = match read_head(
            &worker,
            &limits,
            &mut client,
            &mut cbuf,
            &mut out,
            &peer,
            first,
        )
        .await
        {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                respond_error(&mut client, &mut out, e, None, true, false).await;
                return linger_close(client, &mut cbuf).await;
            }
        };
        first = false;
        let Some((_, upstream)) = head.route else {
            // The body (if any) is unread: only a bodiless request keeps the connection.
            let keep = head.body == Framing::None && head.keep_alive;
            if keep {
                cbuf.consume(head.len);
            }
            respond_error(
                &mut client,
                &mut out,
                ProxyError::NoRoute,
                None,
                !keep,
                head.is_head,
            )
            .await;
            if keep {
                continue;
            }
            return linger_close(client, &mut cbuf).await;
        };
        match exchange(
            &worker,
            upstream,
            &head,
            &mut client,
            &mut cbuf,
            &mut out,
            &peer,
        )
        .await
        {
            Outcome::Done { keep_alive: true } => {}
            Outcome::Done { keep_alive: false } => return,
            Outcome::Error { err, drained } => {
                let keep = drained && head.keep_alive;
                let name = &config.upstreams[upstream].name;
                respond_error(&mut client, &mut out, err, Some(name), !keep, head.is_head).await;
                if !keep {
                    return linger_close(client, &mut cbuf).await;
                }
            }
        }
        // An idle connection should not pin a buffer that grew for one big head.
        cbuf.shrink_idle(CLIENT_BUF);
    }
}

/// Closes a connection that may still have unread request bytes in flight.
///
/// Closing a socket with unread data makes the kernel send RST, which can destroy the
/// error response before the client reads it; so shut down our side first and drain
/// what the client still sends, for a bounded time and size (nginx's lingering close).
async fn linger_close(mut client: TcpStream, cbuf: &mut Buf) {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const MAX_DRAIN: usize = 1 << 20;
    if monoio::io::AsyncWriteRent::shutdown(&mut client)
        .await
        .is_err()
    {
        return;
    }
    let drain = async {
        let mut drained = 0;
        while drained < MAX_DRAIN {
            cbuf.consume(cbuf.len());
            match cbuf.fill(&mut client, CLIENT_BUF).await {
                Ok(Fill::Read(n)) => drained += n,
                _ => break,
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
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
                match timeout(idle, cbuf.fill(client, limits.max_header_bytes)).await {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                }
            }
            _ => {
                let at =
                    *deadline.get_or_insert_with(|| Instant::now() + config.server.header_timeout);
                match timeout_at(at.into(), cbuf.fill(client, limits.max_header_bytes)).await {
                    Ok(r) => r,
                    Err(_) => return Err(ProxyError::RequestTimeout),
                }
            }
        };
        match fill {
            Ok(Fill::Read(_)) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + config.server.header_timeout);
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
        request_id: RequestId::NONE,
        resp_host: None,
    };
    out.clear();
    let Some(index) = worker.router.find(&view) else {
        return Ok(Some(head));
    };
    let route = worker.router.route(index);
    head.route = Some((index, route.upstream));
    head.hash = request_hash(&config.upstreams[route.upstream], &view, peer);

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

/// Counts a request against its server's in-flight total until dropped.
struct InFlight<'a> {
    balancer: &'a Balancer,
    server: ServerId,
}

impl<'a> InFlight<'a> {
    fn new(balancer: &'a Balancer, server: ServerId) -> InFlight<'a> {
        balancer.start(server);
        InFlight { balancer, server }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.balancer.finish(self.server);
    }
}

/// Forwards one request to `upstream` and relays the response.
async fn exchange(
    worker: &Worker,
    upstream: UpstreamId,
    head: &Head,
    client: &mut TcpStream,
    cbuf: &mut Buf,
    out: &mut Vec<u8>,
    peer: &Peer,
) -> Outcome {
    let config = &*worker.config;
    let group = &config.upstreams[upstream];
    let route = worker.router.route(head.route.map_or(0, |(i, _)| i));
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
    // A body that is already entirely buffered can be re-sent if a pooled connection
    // turns out dead; a streamed one cannot.
    let buffered_body = match head.body {
        Framing::None => Some(0),
        Framing::Length(n) => usize::try_from(n)
            .ok()
            .filter(|&n| cbuf.len() - head.len >= n),
        Framing::Chunked | Framing::Close => None,
    };
    let coalesced = buffered_body.is_some_and(|n| n <= COALESCE_MAX);
    if let (true, Some(n)) = (coalesced, buffered_body) {
        out.extend_from_slice(&cbuf.data()[head.len..head.len + n]);
    }

    let mut tried = Tried::default();
    let mut retried_fresh = false;
    let mut fresh_for: Option<ServerId> = None;
    let mut flight: Option<InFlight<'_>> = None;
    let mut sent_at = None;
    let (mut up, resp) = loop {
        let mut conn = match acquire(
            worker,
            group,
            upstream,
            &mut tried,
            fresh_for.take(),
            buffered_body.is_some(),
            head.hash,
        )
        .await
        {
            Ok(c) => c,
            Err(err) => return error_before_body(err, head, cbuf, buffered_body),
        };
        // Replacing the guard ends the count for a server given up on.
        flight.replace(InFlight::new(&worker.balancer, conn.server));
        if group.balance == Balance::LeastTime {
            sent_at = Some(Instant::now());
        }
        let mut sent = send_keep(&mut conn.stream, out).await;
        if let (Ok(()), false, Some(n)) = (&sent, coalesced, buffered_body) {
            // Written from the client buffer without consuming it, so a retry can resend.
            sent = cbuf.write_range(&mut conn.stream, head.len, n).await;
        }
        if sent.is_err() {
            if conn.reused && !retried_fresh {
                retried_fresh = true;
                fresh_for = Some(conn.server);
                continue;
            }
            return error_before_body(ProxyError::UpstreamClosed, head, cbuf, buffered_body);
        }

        if let Some(n) = buffered_body {
            let edits = resp_edits(conn.server);
            match read_response_head(group, head, &mut conn, out, edits.as_ref()).await {
                Ok(r) => {
                    cbuf.consume(head.len + n);
                    break (conn, r);
                }
                Err(HeadError::DeadReused) if !retried_fresh => {
                    // No byte arrived, so `out` still holds the request: resend it fresh.
                    retried_fresh = true;
                    fresh_for = Some(conn.server);
                    continue;
                }
                Err(HeadError::DeadReused) => {
                    return error_before_body(
                        ProxyError::UpstreamClosed,
                        head,
                        cbuf,
                        buffered_body,
                    );
                }
                Err(HeadError::Proxy(err)) => {
                    return error_before_body(err, head, cbuf, buffered_body)
                }
            }
        }

        // Streamed body: answer 100-continue, relay the body, then read the response.
        cbuf.consume(head.len);
        if head.expect_continue && cbuf.is_empty() {
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if write_vec(client, out).await.is_err() {
                return Outcome::Done { keep_alive: false };
            }
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
                return Outcome::Error {
                    err: ProxyError::UpstreamClosed,
                    drained: false,
                };
            }
            // The client vanished or stalled mid-body: nothing to answer.
            Err(_) => return Outcome::Done { keep_alive: false },
        }
        let edits = resp_edits(conn.server);
        match read_response_head(group, head, &mut conn, out, edits.as_ref()).await {
            Ok(r) => break (conn, r),
            Err(HeadError::DeadReused) => {
                return Outcome::Error {
                    err: ProxyError::UpstreamClosed,
                    drained: true,
                }
            }
            Err(HeadError::Proxy(err)) => return Outcome::Error { err, drained: true },
        }
    };
    worker.health.record_success(up.server);
    if let Some(at) = sent_at {
        worker
            .balancer
            .observe_latency(up.server, at.elapsed(), worker.now.get());
    }

    // `out` holds the client response head, plus the body when it was small and complete.
    if !matches!(
        timeout(config.server.body_timeout, write_vec(client, out)).await,
        Ok(Ok(()))
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
    };
    if relay.run(resp.input, resp.output).await.is_err() {
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

/// Finds a connection for this request: a fresh one to `fresh_for` (retrying after a
/// dead pooled connection), else the balancer's pick, pooled or newly connected,
/// failing over to the group's other servers on connect errors.
async fn acquire(
    worker: &Worker,
    group: &Upstream,
    upstream: UpstreamId,
    tried: &mut Tried,
    fresh_for: Option<ServerId>,
    replayable: bool,
    hash: Option<u64>,
) -> Result<UpConn, ProxyError> {
    let mut last_err = None;
    if let Some(server) = fresh_for {
        match connect(worker, group, server).await {
            Ok(c) => return Ok(c),
            Err(e) => last_err = Some(e),
        }
    }
    loop {
        let now = worker.now.get();
        let Some((pos, server)) = worker
            .balancer
            .pick(upstream, group, *tried, hash, now, |id| {
                worker.health.is_up(id, now)
            })
        else {
            return Err(last_err.unwrap_or(ProxyError::NoServerAvailable));
        };
        tried.add(pos);
        if let Some(conn) = worker.pool.take(server, now, group.keepalive_timeout) {
            // A streamed body cannot be replayed, so check a pooled socket first
            // (one cheap syscall) instead of discovering it dead mid-body.
            if replayable || looks_alive(&conn.stream) {
                return Ok(conn);
            }
        }
        match connect(worker, group, server).await {
            Ok(c) => return Ok(c),
            Err(e) => last_err = Some(e),
        }
    }
}

/// Opens a new connection to `server`, recording a failure (and maybe a mark-down).
async fn connect(
    worker: &Worker,
    group: &Upstream,
    server: ServerId,
) -> Result<UpConn, ProxyError> {
    let addr = worker.config.servers[server].addr;
    let err = match timeout(group.connect_timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            return Ok(UpConn {
                stream,
                buf: Buf::with_capacity(UPSTREAM_BUF),
                server,
                reused: false,
            });
        }
        Ok(Err(_)) => ProxyError::ConnectFailed,
        Err(_) => ProxyError::ConnectTimeout,
    };
    if worker.health.record_failure(server, group.max_fails) {
        let until = worker.now.get() + group.fail_timeout;
        worker.health.mark_down(server, until);
        worker.bus.broadcast(Update::ServerDown { server, until });
        warn!(
            "upstream `{}` server {addr} marked down for {:?}: {} (after {} consecutive failure(s))",
            group.name, group.fail_timeout, err, group.max_fails
        );
    }
    Err(err)
}

/// True unless a non-blocking peek shows the upstream closed (or reset) the socket.
fn looks_alive(stream: &TcpStream) -> bool {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    let mut byte = [MaybeUninit::uninit(); 1];
    match sock.peek(&mut byte) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        // Data on an idle connection is a protocol error; EOF means closed.
        Ok(_) => false,
    }
}

/// Writes `out` without clearing it, so the same request can be resent.
async fn send_keep(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let vec = std::mem::take(out);
    let (res, vec) = monoio::io::AsyncWriteRentExt::write_all(stream, vec).await;
    *out = vec;
    res.map(|_| ())
}

/// Reads the upstream's response head (skipping interim 1xx) within
/// `response_header_timeout`, and writes the client's response head into `out`.
async fn read_response_head(
    group: &Upstream,
    head: &Head,
    conn: &mut UpConn,
    out: &mut Vec<u8>,
    edits: Option<&Edits<'_>>,
) -> Result<RespHead, HeadError> {
    let read = async {
        let mut got_bytes = false;
        loop {
            if !conn.buf.is_empty() {
                match prepare_response(conn.buf.data(), head, out, edits) {
                    Ok(Some(Parsed::Interim(len))) => {
                        conn.buf.consume(len);
                        continue;
                    }
                    Ok(Some(Parsed::Final(mut r))) => {
                        conn.buf.consume(r.len);
                        if let Framing::Length(n) = r.input {
                            if let Ok(n) = usize::try_from(n) {
                                if n <= COALESCE_MAX && conn.buf.len() >= n {
                                    out.extend_from_slice(&conn.buf.data()[..n]);
                                    conn.buf.consume(n);
                                    r.input = Framing::None;
                                }
                            }
                        }
                        return Ok(r);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(HeadError::Proxy(e)),
                }
            }
            match conn.buf.fill(&mut conn.stream, MAX_RESPONSE_HEAD).await {
                Ok(Fill::Read(_)) => got_bytes = true,
                Ok(Fill::Eof) | Err(_) if conn.reused && !got_bytes => {
                    return Err(HeadError::DeadReused)
                }
                Ok(Fill::Eof) | Err(_) => return Err(HeadError::Proxy(ProxyError::UpstreamClosed)),
                Ok(Fill::Full) => {
                    return Err(HeadError::Proxy(ProxyError::BadResponse(
                        "response head too large",
                    )))
                }
            }
        }
    };
    match timeout(group.response_header_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(HeadError::Proxy(ProxyError::ResponseTimeout)),
    }
}

enum Parsed {
    Interim(usize),
    Final(RespHead),
}

/// Parses the response head in `data` and writes the client's head into `out`.
fn prepare_response(
    data: &[u8],
    head: &Head,
    out: &mut Vec<u8>,
    edits: Option<&Edits<'_>>,
) -> Result<Option<Parsed>, ProxyError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let Some(resp) = response::parse(data, &mut slots, head.is_head)? else {
        return Ok(None);
    };
    if resp.is_interim() {
        // We answered `100-continue` ourselves; other 1xx carry nothing we forward.
        return Ok(Some(Parsed::Interim(resp.head_len)));
    }
    if resp.status == 101 {
        // We never forward Upgrade, so a 101 is a protocol violation.
        return Err(ProxyError::BadResponse(
            "unexpected 101 Switching Protocols",
        ));
    }
    let output = match resp.body {
        Framing::None => Framing::None,
        Framing::Length(n) => Framing::Length(n),
        Framing::Chunked | Framing::Close if head.version == Version::Http11 => Framing::Chunked,
        Framing::Chunked | Framing::Close => Framing::Close,
    };
    let close_client = !head.keep_alive || output == Framing::Close;
    out.clear();
    write_client_response(out, &resp, output, head.version, close_client, edits);
    Ok(Some(Parsed::Final(RespHead {
        len: resp.head_len,
        input: resp.body,
        output,
        reusable: resp.reusable,
        close_client,
    })))
}

/// Sends a proxy-made error response; gives up quietly if the client does not read it.
async fn respond_error(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    err: ProxyError,
    upstream: Option<&str>,
    close: bool,
    is_head: bool,
) {
    out.clear();
    write_error_response(out, err, upstream, close, is_head);
    let _ = timeout(std::time::Duration::from_secs(10), write_vec(client, out)).await;
}

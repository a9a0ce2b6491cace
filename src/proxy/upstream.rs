//! The upstream side of one exchange: getting a connection (pooled, or connected with
//! failover), counting passive health, and reading the response head into the client's.
//!
//! Runs on the worker's runtime inside `proxy::exchange`.

use super::{Head, COALESCE_MAX, MAX_HEADER_SLOTS, UPSTREAM_BUF};
use crate::balance::{Balancer, Tried};
use crate::buf::{Buf, Fill};
use crate::bus::Report;
use crate::config::{RetryOn, ServerId, Upstream, UpstreamId};
use crate::error::ProxyError;
use crate::http::response::{self, MAX_RESPONSE_HEAD};
use crate::http::rewrite::{write_client_response, Edits};
use crate::http::{Framing, Version};
use crate::pool::UpConn;
use crate::worker::Worker;
use monoio::net::TcpStream;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// What the response head said.
#[derive(Debug, Clone, Copy)]
pub(super) struct RespHead {
    /// Status code.
    pub status: u16,
    /// How the body arrives from the upstream (`None` once coalesced into `out`).
    pub input: Framing,
    /// How the body is sent to the client.
    pub output: Framing,
    /// The upstream connection may carry another request afterwards.
    pub reusable: bool,
    /// The client connection ends after this response.
    pub close_client: bool,
}

/// Why waiting for a response head failed.
#[derive(Debug)]
pub(super) enum HeadError {
    /// A pooled connection closed before sending a byte: safe to retry on a fresh one.
    DeadReused,
    /// The upstream answered with a status `retry_on` names; nothing was sent to the client.
    Retry(u16),
    /// Anything else, answered to the client (or retried, by the caller's rules).
    Proxy(ProxyError),
}

/// Counts a request against its server's in-flight total until dropped.
pub(super) struct InFlight<'a> {
    balancer: &'a Balancer,
    server: ServerId,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(balancer: &'a Balancer, server: ServerId) -> InFlight<'a> {
        balancer.start(server);
        InFlight { balancer, server }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.balancer.finish(self.server);
    }
}

/// One request's view of its upstream group: what every upstream step needs.
pub(super) struct Upstreams<'a> {
    /// The worker (pools, balancer, health).
    pub worker: &'a Worker,
    /// The group.
    pub group: &'a Upstream,
    /// The group's id.
    pub upstream: UpstreamId,
    /// The request.
    pub head: &'a Head,
    /// `request_timeout` expiry, if the group has one.
    pub deadline: Option<Instant>,
}

impl<'a> Upstreams<'a> {
    /// `limit`, cut short by the request deadline; an expired deadline is a 504.
    fn budget(&self, limit: Duration) -> Result<Duration, ProxyError> {
        match self.deadline {
            None => Ok(limit),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(left.min(limit)),
                _ => Err(ProxyError::RequestDeadline),
            },
        }
    }

    /// Finds a connection: a fresh one to `fresh_for` (after a dead pooled connection),
    /// else the balancer's pick, pooled or newly connected, failing over to the group's
    /// other servers on connect errors (always safe: nothing was sent).
    ///
    /// The request counts against its server (`max_connections`, least_conn) from the
    /// pick on, not from when the connection is ready: other requests picking while this
    /// one connects must see it.
    pub(super) async fn acquire(
        &self,
        tried: &mut Tried,
        fresh_for: Option<ServerId>,
        check_pooled: bool,
    ) -> Result<(UpConn, InFlight<'a>), ProxyError> {
        let worker = self.worker;
        let mut last_err = None;
        if let Some(server) = fresh_for {
            let flight = InFlight::new(&worker.balancer, server);
            match self.connect(server).await {
                Ok(c) => return Ok((c, flight)),
                Err(e) => last_err = Some(e),
            }
        }
        loop {
            let now = worker.now.get();
            let Some((pos, server)) = worker.balancer.pick(
                self.upstream,
                self.group,
                *tried,
                self.head.hash,
                now,
                |id| worker.health.is_up(id, now),
            ) else {
                return Err(last_err.unwrap_or(ProxyError::NoServerAvailable));
            };
            tried.add(pos);
            let flight = InFlight::new(&worker.balancer, server);
            if let Some(conn) = worker.pool.take(server, now, self.group.keepalive_timeout) {
                // A request that cannot be resent checks a pooled socket first (one
                // cheap syscall) instead of discovering it dead after sending.
                if !check_pooled || looks_alive(&conn.stream) {
                    return Ok((conn, flight));
                }
            }
            match self.connect(server).await {
                Ok(c) => return Ok((c, flight)),
                Err(e @ ProxyError::RequestDeadline) => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
    }

    /// Opens a new connection to `server`, counting a failure against it.
    async fn connect(&self, server: ServerId) -> Result<UpConn, ProxyError> {
        let addr = self.worker.config.servers[server].addr;
        let limit = self.budget(self.group.connect_timeout)?;
        let connect = TcpStream::connect_addr(addr);
        let err = match self.worker.timers.timeout(limit, connect).await {
            Some(Ok(stream)) => {
                // Small requests must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                return Ok(UpConn {
                    stream,
                    buf: Buf::with_capacity(UPSTREAM_BUF),
                    server,
                    reused: false,
                });
            }
            Some(Err(_)) => ProxyError::ConnectFailed,
            None if limit < self.group.connect_timeout => ProxyError::RequestDeadline,
            None => ProxyError::ConnectTimeout,
        };
        self.failed(server, err.reason());
        Err(err)
    }

    /// Counts a passive failure; a resulting mark-down is applied here and reported to
    /// the control thread, which logs it once and tells the other workers.
    pub(super) fn failed(&self, server: ServerId, reason: &'static str) {
        let w = self.worker;
        if let Some(down) = w.health.record_failure(server, self.group, w.now.get()) {
            w.bus.report(Report::Down {
                server,
                down,
                reason,
            });
        }
    }

    /// Counts a success; a server that was on probation is back (and ramps up).
    pub(super) fn succeeded(&self, server: ServerId) {
        let w = self.worker;
        if w.health.record_success(server) {
            w.balancer.ramp_up(server, w.now.get());
            w.bus.report(Report::Recovered { server });
        }
    }

    /// Reads the upstream's response head (skipping interim 1xx) within
    /// `response_header_timeout`, and writes the client's response head into `out`.
    ///
    /// With `retry` set, a status it names comes back as `HeadError::Retry` and `out`
    /// is left holding the request, ready to be resent elsewhere.
    pub(super) async fn read_response_head(
        &self,
        conn: &mut UpConn,
        out: &mut Vec<u8>,
        edits: Option<&Edits<'_>>,
        retry: Option<&RetryOn>,
    ) -> Result<RespHead, HeadError> {
        let head = self.head;
        let read = async {
            let mut got_bytes = false;
            loop {
                if !conn.buf.is_empty() {
                    match prepare_response(conn.buf.data(), head, out, edits, retry) {
                        Ok(Some(Parsed::Interim(len))) => {
                            conn.buf.consume(len);
                            continue;
                        }
                        Ok(Some(Parsed::Retry(status))) => return Err(HeadError::Retry(status)),
                        Ok(Some(Parsed::Final(mut r, len))) => {
                            conn.buf.consume(len);
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
                    Ok(Fill::Eof) | Err(_) => {
                        return Err(HeadError::Proxy(ProxyError::UpstreamClosed))
                    }
                    Ok(Fill::Full) => {
                        return Err(HeadError::Proxy(ProxyError::BadResponse(
                            "response head too large",
                        )))
                    }
                }
            }
        };
        let limit = self
            .budget(self.group.response_header_timeout)
            .map_err(HeadError::Proxy)?;
        // The worker's coarse timers (50 ms ticks): cheaper per request than a monoio
        // `Sleep`, and a response head timeout needs no finer grain.
        let at = self.worker.now.get() + limit;
        match self.worker.timers.timeout_at(at, read).await {
            Some(r) => r,
            None if limit < self.group.response_header_timeout => {
                Err(HeadError::Proxy(ProxyError::RequestDeadline))
            }
            None => Err(HeadError::Proxy(ProxyError::ResponseTimeout)),
        }
    }
}

/// True unless a non-blocking peek shows the upstream closed (or reset) the socket.
fn looks_alive(stream: &TcpStream) -> bool {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    let mut byte = [MaybeUninit::uninit(); 1];
    // MSG_DONTWAIT: under io_uring the socket itself is blocking, and a plain peek on a
    // healthy idle connection would park the whole worker until the upstream speaks.
    match sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        // Data on an idle connection is a protocol error; EOF means closed.
        Ok(_) => false,
    }
}

/// Writes `out` without clearing it, so the same request can be resent.
pub(super) async fn send_keep(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let vec = std::mem::take(out);
    let (res, vec) = monoio::io::AsyncWriteRentExt::write_all(stream, vec).await;
    *out = vec;
    res.map(|_| ())
}

enum Parsed {
    Interim(usize),
    Retry(u16),
    /// The head and its length in the buffer.
    Final(RespHead, usize),
}

/// Parses the response head in `data` and writes the client's head into `out`.
fn prepare_response(
    data: &[u8],
    head: &Head,
    out: &mut Vec<u8>,
    edits: Option<&Edits<'_>>,
    retry: Option<&RetryOn>,
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
    if retry.is_some_and(|r| r.status(resp.status)) {
        return Ok(Some(Parsed::Retry(resp.status)));
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
    Ok(Some(Parsed::Final(
        RespHead {
            status: resp.status,
            input: resp.body,
            output,
            reusable: resp.reusable,
            close_client,
        },
        resp.head_len,
    )))
}

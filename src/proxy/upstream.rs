//! Getting an upstream connection for one request: the balancer's pick (skipping
//! servers tried already, down or full), a pooled connection or a new one, and failover
//! to the group's other servers when a connect fails (always safe: nothing was sent).
//!
//! Runs on the worker's runtime inside `proxy::exchange`.

use super::head::Head;
use crate::balance::Tried;
use crate::buf::Buf;
use crate::config::{Upstream, UpstreamId};
use crate::error::ProxyError;
use crate::metrics::bump;
use crate::shard::{Generation, Shard};
use crate::upstream::pool::UpConn;
use crate::upstream::ServerLocal;
use monoio::net::TcpStream;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Upstream read buffer: large enough to move big bodies in few reads.
pub(super) const UPSTREAM_BUF: usize = 64 * 1024;

/// A request's claim on its server: counts it in flight (`least_conn`,
/// `max_connections`) until dropped, and holds the server's state, which outlives a
/// reload that removes the server.
pub(super) struct InFlight {
    server: Rc<ServerLocal>,
    /// This request is the probe of a server on probation.
    probe: bool,
}

impl InFlight {
    fn new(server: &Rc<ServerLocal>) -> InFlight {
        server.start();
        InFlight {
            server: server.clone(),
            probe: server.health.start_probe(),
        }
    }

    /// The server.
    pub(super) fn server(&self) -> &Rc<ServerLocal> {
        &self.server
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.finish();
        if self.probe {
            // Recording a result ended the probe already; this covers requests that
            // ended without one (the client went away).
            self.server.health.end_probe();
        }
    }
}

/// One request's view of its upstream group: what every upstream step needs.
pub(super) struct Upstreams<'a> {
    pub shard: &'a Shard,
    pub gen: &'a Generation,
    /// The group's index in `gen`.
    pub id: UpstreamId,
    /// The group's settings.
    pub group: &'a Upstream,
    /// The request.
    pub head: &'a Head,
    /// `request_timeout` expiry, if the group has one.
    pub deadline: Option<Instant>,
}

impl<'a> Upstreams<'a> {
    /// The upstream side of a request routed to group `id`.
    pub(super) fn new(
        shard: &'a Shard,
        gen: &'a Generation,
        id: UpstreamId,
        head: &'a Head,
    ) -> Self {
        let group = &gen.group(id).upstream;
        Upstreams {
            shard,
            gen,
            id,
            group,
            head,
            deadline: group.request_timeout.map(|t| Instant::now() + t),
        }
    }

    /// `limit`, cut short by the request deadline; an expired deadline is a 504.
    pub(super) fn budget(&self, limit: Duration) -> Result<Duration, ProxyError> {
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
    /// other servers on connect errors.
    ///
    /// The request counts against its server (`max_connections`, least_conn) from the
    /// pick on, not from when the connection is ready: other requests picking while this
    /// one connects must see it.
    pub(super) async fn acquire(
        &self,
        tried: &mut Tried,
        fresh_for: Option<Rc<ServerLocal>>,
        check_pooled: bool,
    ) -> Result<(UpConn, InFlight), ProxyError> {
        let mut last_err = None;
        if let Some(server) = fresh_for {
            let flight = InFlight::new(&server);
            match self.connect(&server).await {
                Ok(c) => return Ok((c, flight)),
                Err(e) => last_err = Some(e),
            }
        }
        loop {
            let now = self.shard.now();
            let candidates = self.gen.candidates(self.id);
            let usable = |s: &ServerLocal| s.health.usable(now);
            let balancer = self.shard.balancer();
            let Some(server) = balancer.pick(candidates, tried, self.head.hash, now, usable) else {
                return Err(last_err.unwrap_or(ProxyError::NoServerAvailable));
            };
            tried.add(server.id);
            let flight = InFlight::new(server);
            if let Some(conn) = server.idle.take(now, self.group.keepalive_timeout) {
                // A request that cannot be resent checks a pooled socket first (one
                // cheap syscall) instead of discovering it dead after sending.
                if !check_pooled || looks_alive(&conn.stream) {
                    if let Some(m) = self.gen.group_metrics(self.id) {
                        bump(&m.reused);
                    }
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
    async fn connect(&self, server: &ServerLocal) -> Result<UpConn, ProxyError> {
        let limit = self.budget(self.group.connect_timeout)?;
        let connect = TcpStream::connect_addr(server.addr);
        let err = match self.shard.timers().timeout(limit, connect).await {
            Some(Ok(stream)) => {
                // Small requests must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                if let Some(m) = self.gen.group_metrics(self.id) {
                    bump(&m.connects);
                }
                return Ok(UpConn {
                    stream,
                    buf: Buf::with_capacity(UPSTREAM_BUF),
                    reused: false,
                });
            }
            Some(Err(_)) => ProxyError::ConnectFailed,
            None if limit < self.group.connect_timeout => ProxyError::RequestDeadline,
            None => ProxyError::ConnectTimeout,
        };
        if let Some(m) = self.gen.group_metrics(self.id) {
            bump(&m.connect_errors);
        }
        self.failed(server, err);
        Err(err)
    }

    /// Counts `err` against `server` when the failure table says it counts.
    pub(super) fn failed(&self, server: &ServerLocal, err: ProxyError) {
        if err.counts_against_server(&self.group.fail_on_status) {
            self.shard.failed(server, self.group, err.reason());
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

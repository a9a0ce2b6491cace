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
use crate::upstream::stream::UpStream;
use crate::upstream::ServerLocal;
use monoio::net::TcpStream;
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
                let mut conn = conn;
                // TLS always: reading what arrived while idle (tickets, a close_notify)
                // is what tells a closed session from a live one.
                let tls = matches!(conn.stream, UpStream::Tls(_));
                if !(check_pooled || tls) || conn.stream.looks_alive() {
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

    /// Opens a new connection to `server` (with the TLS handshake when the group has
    /// `tls`, within the same `connect_timeout`), counting a failure against it.
    async fn connect(&self, server: &ServerLocal) -> Result<UpConn, ProxyError> {
        let limit = self.budget(self.group.connect_timeout)?;
        let deadline = self.shard.now() + limit;
        let connect = TcpStream::connect_addr(server.addr);
        let err = match self.shard.timers().timeout_at(deadline, connect).await {
            Some(Ok(stream)) => {
                // Small requests must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                if let Some(m) = self.gen.group_metrics(self.id) {
                    bump(&m.connects);
                }
                match self.secure(stream, server, deadline).await {
                    Ok(stream) => {
                        return Ok(UpConn {
                            stream,
                            buf: Buf::with_capacity(UPSTREAM_BUF),
                            reused: false,
                        })
                    }
                    Err(e) => e,
                }
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

    /// The stream for a fresh connection: as it is, or after a TLS handshake (SNI and
    /// the name checked: the group's `sni`, else the server's address) by `deadline`.
    async fn secure(
        &self,
        stream: TcpStream,
        server: &ServerLocal,
        deadline: std::time::Instant,
    ) -> Result<UpStream, ProxyError> {
        let Some(tls) = &self.group.tls else {
            return Ok(UpStream::Plain(stream));
        };
        let name = match &tls.sni {
            Some(n) => n.clone(),
            None => rustls::pki_types::ServerName::IpAddress(server.addr.ip().into()),
        };
        let session = rustls::ClientConnection::new(tls.config.clone(), name)
            .map_err(|_| ProxyError::UpstreamTls)?;
        let mut t = Box::new(crate::tls::TlsStream::new(stream, session));
        match self
            .shard
            .timers()
            .timeout_at(deadline, t.handshake())
            .await
        {
            Some(Ok(())) => Ok(UpStream::Tls(t)),
            Some(Err(e)) => {
                // The one place the reason is known (an expired or misnamed certificate,
                // a server that does not speak TLS): the response only says 502.
                crate::warn!(
                    "upstream `{}` server {}: TLS handshake failed: {e}",
                    self.group.name,
                    server.addr
                );
                Err(ProxyError::UpstreamTls)
            }
            None => Err(ProxyError::ConnectTimeout),
        }
    }

    /// Counts `err` against `server` when the failure table says it counts.
    pub(super) fn failed(&self, server: &ServerLocal, err: ProxyError) {
        if err.counts_against_server(&self.group.fail_on_status) {
            self.shard.failed(server, self.group, err.reason());
        }
    }
}

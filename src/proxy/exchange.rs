//! One exchange: a routed request forwarded to its group and the response relayed back.
//!
//! Small bodies (up to `retry_body_max`) are read whole first so the request can be
//! resent: after a dead pooled connection (always), and for idempotent requests after a
//! failure the retry table allows (per `retry_on`, `retries` and the budget). Larger
//! bodies are streamed and never retried once sent.

use super::attempt::{self, RespHead, COALESCE_MAX};
use super::cached::CacheFill;
use super::head::Head;
use super::respond::{send_continue, Failed};
use super::upstream::{InFlight, Upstreams, UPSTREAM_BUF};
use super::Conn;
use crate::balance::Tried;
use crate::body::{Direction, Relay, Sink};
use crate::buf::{write_vec, Fill};
use crate::config::{Balance, Route};
use crate::error::{ProxyError, Resend};
use crate::http::rewrite::{Edits, Vars};
use crate::http::Framing;
use crate::metrics::bump;
use crate::shard::Generation;
use crate::upstream::pool::UpConn;
use crate::upstream::ServerLocal;
use std::rc::Rc;
use std::time::Instant;

/// An exchange that completed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    /// The client connection may carry another request.
    pub keep_alive: bool,
    /// The status relayed to the client.
    pub status: u16,
    /// The server that answered, and its time to the response head (when timed).
    pub upstream: Option<(std::net::SocketAddr, std::time::Duration)>,
}

/// How an exchange ended: relayed, or a failure to answer.
pub(super) type Outcome = Result<Done, Failed>;

/// Forwards one request routed by `route` to group `group` and relays the response;
/// `fill`, on a route that caches, labels the response and stores it when it may.
pub(super) async fn run(
    c: &mut Conn<'_>,
    gen: &Generation,
    route: usize,
    group: crate::config::UpstreamId,
    head: &Head,
    mut fill: Option<&mut CacheFill<'_>>,
) -> Outcome {
    let ups = Upstreams::new(c.shard, gen, group, head);
    let got = fetch(c, &ups, route, fill.as_deref_mut()).await?;
    relay_response(c, &ups, got, fill).await
}

/// A response head received from a server, with what relaying the rest needs.
pub(super) struct Received {
    up: UpConn,
    /// What the head said.
    pub resp: RespHead,
    flight: InFlight,
    sent_at: Option<Instant>,
}

/// Sends the request (its body staged or streamed, retried as the table allows) and
/// reads the response head.
pub(super) async fn fetch(
    c: &mut Conn<'_>,
    ups: &Upstreams<'_>,
    route: usize,
    fill: Option<&mut CacheFill<'_>>,
) -> Result<Received, Failed> {
    let (gen, head) = (ups.gen, ups.head);
    let route = gen.snap().router.route(route);
    gen.budget(ups.id).request(c.shard.now());
    let gap = gen.snap().server.body_timeout;
    let body = stage_body(c, head, ups.group.retry_body_max, gap).await?;
    let coalesced = body.is_some_and(|n| n <= COALESCE_MAX);
    if let (true, Some(n)) = (coalesced, body) {
        c.out
            .extend_from_slice(&c.cbuf.data()[head.len..head.len + n]);
    }
    // The clock only for what needs it: least_time's samples, the metrics' histogram.
    let snap = gen.snap();
    let timed = ups.group.balance == Balance::LeastTime || snap.metrics || snap.access.is_some();
    let sent_at = timed.then(Instant::now);
    let (up, resp, flight) = match body {
        Some(n) => attempts(c, ups, route, n, coalesced, fill).await?,
        None => streamed(c, ups, route, fill).await?,
    };
    Ok(Received {
        up,
        resp,
        flight,
        sent_at,
    })
}

/// Reads a body that will be sent whole (bodiless, or a length up to `retry_body_max`,
/// or already buffered) into the client buffer, answering `100-continue` first.
/// Returns its length, or `None` for a body that will be streamed.
/// `gap`: the longest wait for more of the body.
async fn stage_body(
    c: &mut Conn<'_>,
    head: &Head,
    max: usize,
    gap: std::time::Duration,
) -> Result<Option<usize>, Failed> {
    let buffered = c.cbuf.len() - head.len;
    let len = match head.body {
        Framing::None => Some(0),
        Framing::Length(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= max || buffered >= n),
        Framing::Chunked | Framing::Close => None,
    };
    let Some(n) = len.filter(|&n| buffered < n) else {
        return Ok(len);
    };
    let gone = Failed {
        err: ProxyError::ClientGone,
        drained: false,
    };
    if head.expect_continue && buffered == 0 && send_continue(c.client).await.is_err() {
        return Err(gone);
    }
    c.bytes_in += n as u64;
    while c.cbuf.len() < head.len + n {
        let read = c.cbuf.fill(c.client, head.len + n);
        match c.shard.timers().timeout(gap, read).await {
            Some(Ok(Fill::Read(_))) => {}
            // The client vanished or stalled mid-body: nothing to answer.
            _ => return Err(gone),
        }
    }
    Ok(len)
}

/// Response header edits for a response from `server`, `None` when no scope has any.
fn response_edits<'a>(
    c: &Conn<'a>,
    ups: &Upstreams<'a>,
    route: &'a Route,
    server: &ServerLocal,
) -> Option<Edits<'a>> {
    let global = &ups.gen.snap().server.response_headers;
    (!global.is_empty() || !route.response_headers.is_empty()).then(|| Edits {
        scopes: [global, &route.response_headers],
        vars: Vars {
            peer: c.peer,
            scheme: c.scheme.as_str(),
            host: ups.head.resp_host.as_deref().unwrap_or("").as_bytes(),
            request_id: ups.head.request_id.as_bytes(),
            upstream: Some(server.addr),
        },
    })
}

/// A request's tries so far.
struct Tries {
    tried: Tried,
    /// The same request was resent on a fresh connection already.
    resent: bool,
    retries_left: u32,
    /// Why the last attempt failed, when another server is being tried.
    last: Option<ProxyError>,
}

/// What to do after a failed attempt.
enum Then {
    /// Resend on a fresh connection to the same server.
    Resend(Rc<ServerLocal>),
    /// Try another server.
    Retry,
    /// Give up with this failure.
    Answer(ProxyError),
}

/// Sends a request whose body (`body` bytes) is in the client buffer, and reads the
/// response head, attempt after attempt as the retry table allows.
async fn attempts(
    c: &mut Conn<'_>,
    ups: &Upstreams<'_>,
    route: &Route,
    body: usize,
    coalesced: bool,
    mut fill: Option<&mut CacheFill<'_>>,
) -> Result<(UpConn, RespHead, InFlight), Failed> {
    let head = ups.head;
    let budget = ups.gen.budget(ups.id);
    let may_retry = head.idempotent;
    let mut tries = Tries {
        tried: Tried::default(),
        resent: false,
        retries_left: ups.group.retries,
        last: None,
    };
    let mut fresh_for = None;
    // `flight` keeps the request counted against its server until the response is
    // relayed; a failed attempt's count ends with its loop turn, before the next pick.
    loop {
        // Only an idempotent request may find out on the wire that a pooled connection
        // was dead: anything else must not be resent, so check it first.
        let acquired = ups
            .acquire(&mut tries.tried, fresh_for.take(), !may_retry)
            .await;
        let (mut conn, flight) = match acquired {
            Ok(x) => x,
            // After a failed attempt, "nobody else to try" is less telling than why.
            Err(ProxyError::NoServerAvailable) if tries.last.is_some() => {
                return Err(answer_buffered(c, head, body, tries.last.take()));
            }
            Err(err) => return Err(answer_buffered(c, head, body, Some(err))),
        };
        let mut result = attempt::send(c, &mut conn, head, Some(body), coalesced).await;
        if result.is_ok() {
            let edits = response_edits(c, ups, route, flight.server());
            let now = c.shard.now();
            let retry = (may_retry && tries.retries_left > 0 && budget.allows(now))
                .then_some(&ups.group.retry_on);
            let f = fill.as_deref_mut();
            match attempt::response_head(c, ups, &mut conn, edits.as_ref(), retry, f).await {
                Ok(resp) => {
                    c.cbuf.consume(head.len + body);
                    return Ok((conn, resp, flight));
                }
                Err(e) => result = Err(e),
            }
        }
        let err = result.err().unwrap_or(ProxyError::UpstreamClosed);
        let server = flight.server().clone();
        drop((conn, flight));
        match after_failure(c, ups, &mut tries, &server, err, may_retry) {
            Then::Resend(s) => fresh_for = Some(s),
            Then::Retry => {}
            Then::Answer(err) => return Err(answer_buffered(c, head, body, Some(err))),
        }
    }
}

/// The retry rules, applied to one failed attempt on `server`.
fn after_failure(
    c: &Conn<'_>,
    ups: &Upstreams<'_>,
    tries: &mut Tries,
    server: &Rc<ServerLocal>,
    err: ProxyError,
    may_retry: bool,
) -> Then {
    let metrics = ups.gen.group_metrics(ups.id);
    if let Some(resend) = err.resend() {
        if !tries.resent && (resend == Resend::Always || may_retry) {
            // Nothing was answered and `out` still holds the request: resend it fresh.
            tries.resent = true;
            if let Some(m) = metrics {
                bump(&m.retries);
            }
            return Then::Resend(server.clone());
        }
    }
    ups.failed(server, err);
    if !err.is_answerable() {
        return Then::Answer(err);
    }
    if !(may_retry && err.is_retryable(&ups.group.retry_on) && tries.retries_left > 0) {
        return Then::Answer(err);
    }
    if !ups.gen.budget(ups.id).try_spend(c.shard.now()) {
        if let Some(m) = metrics {
            bump(&m.budget_refusals);
        }
        return Then::Answer(err);
    }
    if let Some(m) = metrics {
        bump(&m.retries);
    }
    tries.retries_left -= 1;
    tries.last = Some(err);
    Then::Retry
}

/// A failure answered before the response, for a request whose whole body was
/// buffered: the body is consumed, so the connection is still at a request boundary.
fn answer_buffered(c: &mut Conn<'_>, head: &Head, body: usize, err: Option<ProxyError>) -> Failed {
    let err = err.unwrap_or(ProxyError::NoServerAvailable);
    if !err.is_answerable() {
        return Failed {
            err,
            drained: false,
        };
    }
    c.cbuf.consume(head.len + body);
    Failed { err, drained: true }
}

/// Sends a request whose body is streamed: the head (resent once on a fresh connection
/// if a pooled one was dead), `100-continue`, the body, then the response head.
/// Nothing is retried once the body started: it is gone once sent.
async fn streamed(
    c: &mut Conn<'_>,
    ups: &Upstreams<'_>,
    route: &Route,
    fill: Option<&mut CacheFill<'_>>,
) -> Result<(UpConn, RespHead, InFlight), Failed> {
    let head = ups.head;
    let undrained = |err| Failed {
        err,
        drained: false,
    };
    let mut tried = Tried::default();
    let (mut fresh_for, mut resent) = (None, false);
    let (mut conn, flight) = loop {
        // Pooled connections are checked first: this request cannot be resent once
        // its body is on the way.
        let acquired = ups.acquire(&mut tried, fresh_for.take(), true).await;
        let (mut conn, flight) = acquired.map_err(undrained)?;
        match attempt::send(c, &mut conn, head, None, false).await {
            Ok(()) => break (conn, flight),
            // Only the head went out, to a connection the upstream had closed.
            Err(err) if err.resend() == Some(Resend::Always) && !resent => {
                resent = true;
                fresh_for = Some(flight.server().clone());
            }
            Err(err) => {
                ups.failed(flight.server(), err);
                return Err(undrained(err));
            }
        }
    };
    c.cbuf.consume(head.len);
    if head.expect_continue && c.cbuf.is_empty() && send_continue(c.client).await.is_err() {
        return Err(undrained(ProxyError::ClientGone));
    }
    let server = &ups.gen.snap().server;
    c.out.clear();
    let mut relay = Relay {
        src: &mut *c.client,
        buf: &mut *c.cbuf,
        dst: &mut conn.stream,
        out: &mut *c.out,
        read_timeout: server.body_timeout,
        write_timeout: ups.group.read_timeout,
        max_buf: server.max_header_bytes.max(crate::buf::CLIENT_BUF),
        timers: c.shard.timers(),
        dir: Direction::Request,
        tee: None,
        max_len: head.max_body,
    };
    match relay.run(head.body, head.body).await {
        Ok(moved) => c.bytes_in += moved,
        Err(err) => {
            ups.failed(flight.server(), err);
            return Err(undrained(err));
        }
    }
    let edits = response_edits(c, ups, route, flight.server());
    match attempt::response_head(c, ups, &mut conn, edits.as_ref(), None, fill).await {
        Ok(resp) => Ok((conn, resp, flight)),
        Err(err) => {
            // A pooled connection that closed after the whole body: not resendable.
            let err = match err {
                ProxyError::ClosedIdle => ProxyError::UpstreamClosed,
                e => e,
            };
            ups.failed(flight.server(), err);
            let drained = err.is_answerable();
            Err(Failed { err, drained })
        }
    }
}

/// Counts the response for its server's health and the latency metrics.
fn settle(c: &Conn<'_>, ups: &Upstreams<'_>, got: &Received) -> Option<std::time::Duration> {
    let (shard, group, server) = (c.shard, ups.group, got.flight.server());
    if group.fail_on_status.contains(&got.resp.status) {
        shard.failed(server, group, "error status");
    } else {
        shard.succeeded(server);
    }
    let latency = got.sent_at.map(|at| at.elapsed());
    if let Some(latency) = latency {
        if group.balance == Balance::LeastTime {
            server.observe_latency(latency, shard.now());
        }
        if let Some(m) = ups.gen.group_metrics(ups.id) {
            m.response.observe(latency);
        }
    }
    latency
}

/// Ends an exchange whose response the client will not get (the cache answers
/// instead): counted like a relayed one; the connection is pooled when the response
/// had no body left to read, else closed.
pub(super) fn settle_unrelayed(c: &Conn<'_>, ups: &Upstreams<'_>, got: Received) {
    settle(c, ups, &got);
    let server = got.flight.server();
    let done = got.resp.input == Framing::None && got.up.buf.is_empty();
    if got.resp.reusable && done && !server.is_retired() {
        server.idle.put(got.up, c.shard.now(), ups.group.keepalive);
    }
}

/// Keeps a connection that answered 101 for the tunnel (`attempt::prepare` let the 101
/// through only for the protocol the request asked for): from here on it counts as a
/// tunnel on its server, not as a request in flight.
fn into_tunnel(
    c: &mut Conn<'_>,
    up: UpConn,
    flight: InFlight,
    latency: Option<std::time::Duration>,
) -> Done {
    let server = flight.server().clone();
    let upstream = latency.map(|l| (server.addr, l));
    drop(flight);
    c.tunnel = Some(super::tunnel::Tunnel { up, server });
    Done {
        keep_alive: false,
        status: 101,
        upstream,
    }
}

/// Writes the response head (and a small body with it), then relays the rest of the
/// body; returns whether the client connection may carry another request. A `fill`
/// that decided to store the response gets a copy of the body.
pub(super) async fn relay_response(
    c: &mut Conn<'_>,
    ups: &Upstreams<'_>,
    got: Received,
    fill: Option<&mut CacheFill<'_>>,
) -> Outcome {
    let latency = settle(c, ups, &got);
    let Received {
        mut up,
        resp,
        flight,
        ..
    } = got;
    let (shard, group, server) = (c.shard, ups.group, flight.server());
    let cut = |err| Failed {
        err,
        drained: false,
    };
    let mut tee = fill.filter(|f| f.storing());
    if let (Some(f), Framing::None) = (tee.as_deref_mut(), resp.input) {
        // The whole body is in `out` after the head (or there is none): store it first.
        f.data(&c.out[resp.head_len..]);
        f.end();
    }
    let body_timeout = ups.gen.snap().server.body_timeout;
    // `out` holds the client response head, plus the body when it was small and
    // complete. A coarse timer: this runs per request, and a monoio `Sleep` would make
    // the request state 640 bytes larger and cost a timer-wheel insert and remove.
    c.bytes_out += c.out.len() as u64;
    let write = write_vec(c.client, c.out);
    if !matches!(
        shard
            .timers()
            .timeout_at(shard.now() + body_timeout, write)
            .await,
        Some(Ok(()))
    ) {
        return Err(cut(ProxyError::ClientGone));
    }
    if resp.status == 101 {
        return Ok(into_tunnel(c, up, flight, latency));
    }
    let mut relay = Relay {
        src: &mut up.stream,
        buf: &mut up.buf,
        dst: &mut *c.client,
        out: &mut *c.out,
        read_timeout: group.read_timeout,
        write_timeout: body_timeout,
        max_buf: UPSTREAM_BUF,
        timers: shard.timers(),
        dir: Direction::Response,
        tee: tee.map(|f| f as &mut dyn crate::body::Sink),
        max_len: u64::MAX,
    };
    let relayed = match ups.deadline {
        None => relay.run(resp.input, resp.output).await,
        Some(d) => match shard
            .timers()
            .timeout_at(d, relay.run(resp.input, resp.output))
            .await
        {
            Some(r) => r,
            None => Err(ProxyError::ResponseAborted),
        },
    };
    // A truncated body must never be followed by another response on this connection.
    c.bytes_out += relayed.map_err(cut)?;
    if resp.reusable && up.buf.is_empty() && !server.is_retired() {
        server.idle.put(up, shard.now(), group.keepalive);
    }
    Ok(Done {
        keep_alive: ups.head.keep_alive && !resp.close_client,
        status: resp.status,
        upstream: latency.map(|l| (server.addr, l)),
    })
}

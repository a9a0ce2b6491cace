//! One client connection, top to bottom. Read in this order:
//!
//! 0. [`accept`]: how a connection starts when its listener asks for more than TCP:
//!    a PROXY header, a TLS handshake.
//! 1. [`serve`] (here): a connection's life: its first request, then busy spells
//!    separated by idle waits that hold no buffers, until it closes or a drain ends it.
//! 2. `busy` (here): answers requests while they keep coming. Each request takes the
//!    worker's current config generation once and finishes on it.
//! 3. [`head`]: reads a request head, routes it and writes the upstream's head;
//!    [`gate`] decides what is refused or answered before anything is forwarded.
//! 4. [`cached`]: on a route that caches: lookup, coalescing, revalidation, storing;
//!    [`hit`] writes answers from the cache, [`refresh`] refreshes in the background.
//! 5. [`exchange`]: one exchange: the body staged for resending, the attempts with the
//!    retry rules, the response relayed back.
//! 6. [`attempt`]: one attempt on one server: send, then read the response head
//!    (forwarding interim 1xx heads).
//! 7. [`upstream`]: getting a connection: pool, balancer, connect with failover, and
//!    the request's count against its server.
//! 8. [`respond`]: answers the proxy makes itself (errors, the https redirect), and
//!    closing a connection after one.
//! 9. [`tunnel`]: after a 101 for an Upgrade the request asked for, bytes both ways.
//!
//! Runs as a task on its worker's runtime. Everything the hot path needs is owned by
//! the task (buffers are reused across requests) or by its worker's `Shard` (pools,
//! cursors, health); nothing here takes a lock or touches another core's memory.

mod accept;
mod attempt;
mod cached;
mod exchange;
mod gate;
mod head;
mod hit;
mod refresh;
mod respond;
mod tunnel;
mod upstream;

pub use accept::{serve_proxied, serve_tls};

use crate::buf::{Buf, ConnBufs, Fill};
use crate::client::{ClientStream, ConnFacts, Scheme};
use crate::error::ProxyError;
use crate::http::rewrite::Peer;
use crate::shard::{Generation, RequestRecord, Shard};
use crate::timer::TICK;
use monoio::io::Canceller;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A connection whose next request came within this of its last response (give or take
/// a timer tick) is hot: after each response it keeps its buffers and a read in flight
/// for this long (plus up to a tick) before it goes idle without them.
///
/// A busy client's next request then costs one read, instead of a readiness wait, a
/// `recv`, and taking and returning the buffers. A client that sends one request and
/// stays quiet never holds more than an idle connection's few hundred bytes.
pub const HOT_WAIT: Duration = Duration::from_millis(100);
/// [`HOT_WAIT`] in worker ticks.
const HOT_TICKS: u32 = (HOT_WAIT.as_millis() / TICK.as_millis()) as u32;

/// How a busy spell of a connection ended.
enum Spell {
    /// The connection went quiet: wait for its next request without buffers.
    Idle,
    /// The connection is done.
    Close,
}

/// One busy connection's handles, passed down the request path.
struct Conn<'a> {
    shard: &'a Shard,
    /// The connection's facts (the worker as an `Rc`, for tasks that outlive a request).
    facts: &'a ConnFacts,
    client: &'a mut ClientStream,
    /// Bytes read from the client and not yet handled.
    cbuf: &'a mut Buf,
    /// Scratch for heads on their way out (and the request, kept for resending).
    out: &'a mut Vec<u8>,
    /// The client, formatted for forwarding headers.
    peer: &'a Peer,
    scheme: Scheme,
    /// Bytes read from the client for the current request (for metrics).
    bytes_in: u64,
    /// Bytes written to the client for the current request (for metrics).
    bytes_out: u64,
    /// The current request's access log fields (see `access::begin`).
    log: &'a mut Vec<u8>,
    /// The current request's cache key, host and target (`cache::request::build`).
    key: &'a mut Vec<u8>,
    /// An upstream connection that answered 101: joined to the client once the
    /// request is logged.
    tunnel: Option<tunnel::Tunnel>,
}

/// Serves one client connection until it closes or must be closed.
///
/// Between requests an idle connection holds no buffers: it waits for readability only,
/// and its buffers go back to the worker's pool, so it costs a few hundred bytes. The
/// request path's state is boxed for the same reason: it is large and lives only while
/// the connection is busy (or hot, see [`HOT_WAIT`]).
pub async fn serve(mut client: ClientStream, facts: ConnFacts) {
    let mut first = true;
    // The worker's tick count when the connection last went idle. A tick count, not an
    // `Instant`: this future is what an idle connection costs, and it sits just under
    // one of the allocator's size classes.
    let mut quiet_tick: u32 = 0;
    loop {
        // A new connection's request is usually there already: read it at once
        // (`busy` applies header_timeout); an idle one waits without buffers, and a
        // drain ends the wait.
        let mut hot = false;
        if !first && !client.has_buffered() {
            let at =
                facts.shard().now() + facts.shard().generation().snap().server.keepalive_timeout;
            match facts
                .shard()
                .timers()
                .idle_until(at, client.readable())
                .await
            {
                Some(Ok(())) => {}
                _ => return,
            }
            hot = facts.shard().ticks().wrapping_sub(quiet_tick) <= HOT_TICKS;
        }
        let mut bufs = facts.shard().buffers().take();
        if !first {
            let max = facts.shard().generation().snap().server.max_header_bytes;
            match client.fill_now(&mut bufs.cbuf, max) {
                Ok(Some(Fill::Eof)) | Err(_) => return facts.shard().buffers().give(bufs),
                _ => {}
            }
        }
        let spell = busy(&mut client, &mut bufs, &facts, &mut first, hot);
        let end = Box::pin(spell).await;
        facts.shard().buffers().give(bufs);
        match end {
            Spell::Idle => {
                client.shed();
                quiet_tick = facts.shard().ticks();
            }
            Spell::Close => return,
        }
    }
}

/// Answers requests while the client has some buffered or arriving; `hot`: also waits
/// up to [`HOT_WAIT`] for each next request before giving up the buffers.
async fn busy(
    client: &mut ClientStream,
    bufs: &mut ConnBufs,
    facts: &ConnFacts,
    first: &mut bool,
    hot: bool,
) -> Spell {
    let shard = facts.shard();
    // Formatted per busy spell, not kept: an idle connection stays that much smaller.
    let peer = &Peer::new(facts.peer);
    let ConnBufs {
        cbuf,
        out,
        log,
        key,
    } = bufs;
    let scheme = client.scheme();
    let mut c = Conn {
        shard,
        facts,
        client,
        cbuf,
        out,
        peer,
        scheme,
        bytes_in: 0,
        bytes_out: 0,
        log,
        key,
        tunnel: None,
    };
    let mut answered = false;
    // Made once per spell, on the first wait for a next request.
    let mut canceller = None;
    loop {
        if answered && c.cbuf.is_empty() {
            if !hot || shard.draining() {
                return if shard.draining() {
                    Spell::Close
                } else {
                    Spell::Idle
                };
            }
            let keepalive = shard.generation().snap().server.keepalive_timeout;
            let until = shard.now() + keepalive.min(HOT_WAIT);
            match next_request(&mut c, &mut canceller, until).await {
                Next::Arrived => {}
                Next::Quiet if keepalive > HOT_WAIT => return Spell::Idle,
                Next::Quiet | Next::Closed => return Spell::Close,
            }
        }
        // This request's generation: a reload from here on applies to the next one.
        let gen = shard.generation();
        let head = match head::read(&mut c, &gen, *first).await {
            Ok(Some(h)) => h,
            Ok(None) => return Spell::Close,
            Err(err) => {
                let started = Instant::now();
                let failed = respond::Failed {
                    err,
                    drained: false,
                };
                respond::answer(&mut c, &gen, None, failed).await;
                if let Some(format) = gen.snap().access {
                    log_unparsed(&mut c, format, err.status(), started);
                }
                return Spell::Close;
            }
        };
        *first = false;
        answered = true;
        if !respond_to(&mut c, &gen, &head).await {
            return Spell::Close;
        }
    }
}

/// Answers one request whose head was read (through the cache when its route has
/// one), then logs and counts it; returns whether the connection may carry another.
async fn respond_to(c: &mut Conn<'_>, gen: &Rc<Generation>, head: &head::Head) -> bool {
    // Read only when counted or logged: the clock is not free.
    let timed = gen.snap().metrics || gen.snap().access.is_some();
    let started = timed.then(Instant::now);
    c.bytes_in = head.len as u64;
    if let Some((err, _)) = head.refusal {
        // Bodiless: consumed, and the connection kept. With a body: answered and closed.
        let drained = head.body == crate::http::Framing::None;
        if drained {
            c.cbuf.consume(head.len);
        }
        c.shard
            .refused(matches!(err, ProxyError::TooManyRequests(_)));
        let failed = respond::Failed { err, drained };
        let keep = respond::answer(c, gen, Some(head), failed).await;
        finish(c, gen, head, started, (err.status(), None));
        return keep;
    }
    if head.redirect || head.local.is_some() {
        let (keep, status) = match head.redirect {
            true => respond::redirect(c, gen, head).await,
            false => respond::local(c, gen, head).await,
        };
        finish(c, gen, head, started, (status, None));
        return keep;
    }
    let outcome = match (head.route, head.cache) {
        (Some((route, group)), Some(req)) => cached::run(c, gen, route, group, head, req).await,
        (Some((route, group)), None) => exchange::run(c, gen, route, group, head, None).await,
        (None, _) => {
            // The body (if any) is unread: only a bodiless request keeps the connection.
            let drained = head.body == crate::http::Framing::None;
            if drained {
                c.cbuf.consume(head.len);
            }
            let err = match head.missing {
                Some(_) => ProxyError::UnknownUpstream,
                None => ProxyError::NoRoute,
            };
            Err(respond::Failed { err, drained })
        }
    };
    let (keep, status, upstream) = match outcome {
        Ok(done) => (done.keep_alive, done.status, done.upstream),
        Err(failed) => {
            let status = failed.err.status();
            let keep = respond::answer(c, gen, Some(head), failed).await;
            (keep, status, None)
        }
    };
    finish(c, gen, head, started, (status, upstream));
    if let Some(t) = c.tunnel.take() {
        let idle = gen.snap().server.tunnel_idle_timeout;
        tunnel::run(c, t, idle).await;
        return false;
    }
    keep
}

/// Logs and counts an answered request: `(status, upstream)` as the access log has them.
fn finish(
    c: &mut Conn<'_>,
    gen: &Generation,
    head: &head::Head,
    started: Option<Instant>,
    (status, upstream): (u16, Option<(std::net::SocketAddr, Duration)>),
) {
    if let (Some(format), Some(started)) = (gen.snap().access, started) {
        let outcome = crate::access::Outcome {
            status,
            bytes: c.bytes_out,
            duration: started.elapsed(),
            upstream,
        };
        c.shard.access_line(format, c.log, head.log_split, &outcome);
    }
    let refused_by = head.refusal.and_then(|(_, r)| r);
    let record = RequestRecord {
        route: head.route.map(|(r, _)| r).or(head.local).or(refused_by),
        method: head.method,
        status,
        started,
        bytes_in: std::mem::take(&mut c.bytes_in),
        bytes_out: std::mem::take(&mut c.bytes_out),
    };
    c.shard.record_request(gen, &record);
}

/// Logs a request whose head could not be read (its fields are unknown: `-`).
fn log_unparsed(
    c: &mut Conn<'_>,
    format: crate::config::AccessFormat,
    status: u16,
    started: Instant,
) {
    let (time, len) = c.shard.log_time(format);
    let request = crate::access::Request {
        client: c.peer.ip(),
        time: &time[..len],
        method: "-",
        path: "-",
        query: "",
        version: "-",
        referer: b"",
        user_agent: b"",
        request_id: b"",
        route: "",
    };
    let split = crate::access::begin(c.log, format, &request);
    let outcome = crate::access::Outcome {
        status,
        bytes: c.bytes_out,
        duration: started.elapsed(),
        upstream: None,
    };
    c.shard.access_line(format, c.log, split, &outcome);
}

/// What waiting for a connection's next request found.
enum Next {
    /// Bytes of it are in the buffer.
    Arrived,
    /// Nothing came in time (or a drain started).
    Quiet,
    /// The client closed, or the read failed.
    Closed,
}

/// Reads the start of the next request into the buffer, giving up at `until`.
///
/// The read is called off rather than dropped when time is up: dropping an in-flight
/// read would lose bytes that arrive just then, while a called-off read reports them.
async fn next_request(c: &mut Conn<'_>, canceller: &mut Option<Canceller>, until: Instant) -> Next {
    let max = c.shard.generation().snap().server.max_header_bytes;
    let handle = canceller.get_or_insert_with(Canceller::new).handle();
    let mut read = std::pin::pin!(c.cbuf.fill_cancelable(c.client, max, handle));
    let res = match c.shard.timers().idle_until(until, read.as_mut()).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future an async fn of two arguments returns, without calling it.
    fn future_size<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_connection_task_stays_in_its_allocator_size_class() {
        // The connection task is most of what an idle keep-alive connection costs:
        // monoio adds its task header to this future and mimalloc rounds the sum up to
        // its next size class, 448 bytes. At 392 bytes it fits (661 bytes per idle
        // connection in loadtest `idle`); at 400 it did not (731). It is 384 since the
        // worker is reached through the connection's listener (`ConnFacts`).
        let size = future_size(serve);
        assert!(size <= 392, "proxy::serve's future grew to {size} bytes");
    }
}

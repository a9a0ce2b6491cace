//! Background refreshes (`stale-while-revalidate`, RFC 5861): a stale entry was served
//! at once, and a task of the same worker asks the upstream for it again with its
//! validators, storing what comes back (a 304 refreshes the entry, a new response of
//! known length replaces it). No client waits for it; its failures only count against
//! the server, as any request's would.
//!
//! One refresh per entry per worker at a time (`Slot::refreshing`).

use super::cached::CacheReq;
use super::head::Head;
use super::upstream::{Upstreams, UPSTREAM_BUF};
use super::Conn;
use crate::balance::Tried;
use crate::buf::Fill;
use crate::cache::index::Slot;
use crate::cache::plan::{self, Context, Plan, Rules};
use crate::config::{RouteCache, UpstreamId};
use crate::error::ProxyError;
use crate::http::{listed_in_connection, Framing};
use crate::shard::{Generation, Shard};
use crate::upstream::head::read_head;
use std::rc::Rc;
use std::sync::Arc;

/// What a refresh needs, owned: it outlives the request that started it.
struct Job {
    shard: Rc<Shard>,
    gen: Rc<Generation>,
    group: UpstreamId,
    head: Head,
    /// The upstream request head, with the entry's validators.
    request: Vec<u8>,
    /// The client's request head (for the values of `Vary` headers).
    raw: Vec<u8>,
    /// The key scratch (key, host, target).
    scratch: Vec<u8>,
    req: CacheReq,
    rules: Rules,
    slot: Rc<Slot>,
}

/// Starts refreshing `slot` for the request `head` (still in the client buffer), whose
/// upstream head is in `out`.
pub(super) fn spawn(
    c: &Conn<'_>,
    gen: &Rc<Generation>,
    group: UpstreamId,
    head: &Head,
    req: &CacheReq,
    slot: Rc<Slot>,
    rc: &RouteCache,
) {
    let global = &gen.snap().cache;
    let mut request = c.out.clone();
    super::cached::add_validators(&mut request, &slot.stored);
    slot.refreshing.set(true);
    c.shard.cache().count_refresh();
    let job = Job {
        shard: c.facts.listener().shard.clone(),
        gen: gen.clone(),
        group,
        head: head.clone(),
        request,
        raw: c.cbuf.data()[..head.len].to_vec(),
        scratch: c.key.clone(),
        req: *req,
        rules: Rules {
            default_ttl: rc.default_ttl.as_secs(),
            stale_while_revalidate: global.stale_while_revalidate.as_secs(),
            stale_if_error: global.stale_if_error.as_secs(),
            allow_set_cookie: rc.allow_set_cookie,
            keys_authorization: rc.keys_authorization(),
            max_object_bytes: global.max_object_bytes,
        },
        slot,
    };
    monoio::spawn(run(job));
}

/// What the refresh's response head decided.
enum Then {
    /// An interim head: read on.
    Interim,
    /// Store this refreshed entry (a 304 confirmed it).
    Refreshed(Option<crate::cache::Stored>),
    /// Read a body of this length, then store it as planned.
    Body(Plan, usize),
    /// Nothing to store; the connection is not reused.
    Nothing,
}

async fn run(job: Job) {
    let slot = job.slot.clone();
    let result = refresh(&job).await;
    slot.refreshing.set(false);
    if let Err(e) = result {
        crate::warn!(
            "cache: background refresh of {} failed: {e}",
            String::from_utf8_lossy(&job.scratch[job.req.built.key..])
        );
    }
}

async fn refresh(job: &Job) -> Result<(), ProxyError> {
    let shard = &*job.shard;
    let ups = Upstreams::new(shard, &job.gen, job.group, &job.head);
    let (mut conn, flight) = ups.acquire(&mut Tried::default(), None, true).await?;
    let server = flight.server().clone();
    let timers = shard.timers();
    let limit = ups.budget(ups.group.response_header_timeout)?;
    let send = monoio::io::AsyncWriteRentExt::write_all(&mut conn.stream, job.request.clone());
    if !matches!(timers.timeout(limit, send).await, Some((Ok(_), _))) {
        ups.failed(&server, ProxyError::UpstreamClosed);
        return Err(ProxyError::UpstreamClosed);
    }
    let now = shard.unix_secs();
    let (then, reusable) = loop {
        let read = read_head(
            &mut conn.stream,
            &mut conn.buf,
            false,
            conn.reused,
            |resp| {
                if resp.is_interim() {
                    return Ok((Then::Interim, false));
                }
                Ok((decide(job, resp, now), resp.reusable))
            },
        );
        let ((then, reusable), len) = match timers.timeout(limit, read).await {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                ups.failed(&server, e);
                return Err(e);
            }
            None => {
                ups.failed(&server, ProxyError::ResponseTimeout);
                return Err(ProxyError::ResponseTimeout);
            }
        };
        conn.buf.consume(len);
        if !matches!(then, Then::Interim) {
            break (then, reusable);
        }
    };
    shard.succeeded(&server);
    let stored = match then {
        Then::Refreshed(stored) => stored,
        Then::Body(plan, n) => {
            let body = read_body(shard, &ups, &mut conn, n).await?;
            Some(plan.finish(shard.cache().next_id(), body))
        }
        Then::Interim | Then::Nothing => return Ok(()),
    };
    if let Some(s) = stored {
        shard.cache_store(Arc::new(s));
    }
    if reusable && conn.buf.is_empty() && !server.is_retired() {
        server.idle.put(conn, shard.now(), ups.group.keepalive);
    }
    Ok(())
}

/// Decides what a final response head means for the refresh.
fn decide(job: &Job, resp: &crate::http::response::Response<'_, '_>, now: u64) -> Then {
    let skip = |n: &str| resp.has_connection && listed_in_connection(resp.headers, n);
    let fields = resp.headers.iter().map(|h| (h.name, h.value));
    let (key, host, target) = job.req.built.parts(&job.scratch);
    let ctx = Context {
        request_head: &job.raw,
        key,
        hash: job.req.built.hash,
        host,
        target,
        authorization: job.req.facts.authorization,
        request_time: now,
        rules: &job.rules,
    };
    let old = &job.slot.stored;
    if resp.status == 304 {
        let id = job.shard.cache().next_id();
        return Then::Refreshed(plan::refresh(old, fields, &skip, &ctx, now, id));
    }
    let len = match resp.body {
        Framing::None => 0,
        Framing::Length(n) if n <= job.rules.max_object_bytes as u64 => n as usize,
        // Unknown or too long: not worth holding a background task for.
        _ => return Then::Nothing,
    };
    match plan::plan(resp.status, resp.reason, fields, &skip, &ctx, now) {
        Some(p) => Then::Body(p, len),
        None => Then::Nothing,
    }
}

/// Reads a body of `n` bytes whole.
async fn read_body(
    shard: &Shard,
    ups: &Upstreams<'_>,
    conn: &mut crate::upstream::pool::UpConn,
    n: usize,
) -> Result<bytes::Bytes, ProxyError> {
    let mut body = Vec::with_capacity(n);
    loop {
        let take = (n - body.len()).min(conn.buf.len());
        body.extend_from_slice(&conn.buf.data()[..take]);
        conn.buf.consume(take);
        if body.len() == n {
            return Ok(body.into());
        }
        let read = conn.buf.fill(&mut conn.stream, UPSTREAM_BUF);
        match shard.timers().timeout(ups.group.read_timeout, read).await {
            Some(Ok(Fill::Read(_))) => {}
            _ => return Err(ProxyError::ResponseAborted),
        }
    }
}

//! The request path of a route that caches, read top to bottom from [`run`]:
//!
//! 1. Requests the cache does not serve pass through, labelled `BYPASS`; an unsafe one
//!    that succeeds drops the URL's entries on every worker (RFC 9111 §4.4).
//! 2. A GET or HEAD looks in this worker's index (then, before a miss, in the entries
//!    other workers stored since the last tick): fresh → `HIT`; stale but inside
//!    `stale-while-revalidate` → `STALE` and a background refresh; stale → revalidated
//!    with a conditional request (`REVALIDATED` on a 304, `EXPIRED` on a new response),
//!    or served `STALE` if the upstream fails inside `stale-if-error`.
//! 3. A miss takes the key's lock, so concurrent misses on this worker wait for one
//!    fetch (`lock_timeout` at most); the fetched response is stored by a [`CacheFill`] once
//!    its body has arrived whole, before its last bytes go to the client.

use super::exchange::{self, Done, Outcome};
use super::head::Head;
use super::respond::Failed;
use super::upstream::Upstreams;
use super::{hit, refresh, Conn};
use crate::body::Sink;
use crate::cache::index::Slot;
use crate::cache::lock::{Guard, Turn};
use crate::cache::plan::{self, Context, Plan, Rules};
use crate::cache::request::{self, Built, Facts, KeyInput};
use crate::cache::{entry::Verdict, Purge, Status, Stored};
use crate::config::{RouteCache, UpstreamId};
use crate::error::ProxyError;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::http::{listed_in_connection, Framing};
use crate::route::RequestView;
use crate::shard::{Generation, Shard};
use std::rc::Rc;
use std::sync::Arc;

/// What a request is to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A GET or HEAD without a body: looked up, and stored on a miss.
    Lookup,
    /// A method that may change the resource (RFC 9110 §9.2.1): passed through, and
    /// its URL's entries dropped when it succeeds.
    Unsafe,
    /// Anything else (OPTIONS, TRACE, a GET with a body): passed through.
    Pass,
}

/// The cache's view of a request on a route that caches, made while its head is
/// parsed; the key itself is in the connection's key scratch.
#[derive(Debug, Clone, Copy)]
pub(super) struct CacheReq {
    /// Its directives, credentials and conditionals.
    pub facts: Facts,
    /// Where its key, host and target are in the scratch.
    pub built: Built,
    kind: Kind,
}

impl CacheReq {
    /// Reads what the cache needs of `req` and builds its key into `scratch`.
    pub fn new(
        rc: &RouteCache,
        req: &Request<'_, '_>,
        view: &RequestView<'_>,
        scratch: &mut Vec<u8>,
    ) -> CacheReq {
        let input = KeyInput {
            method: req.method,
            host: req.host,
            path: view.path,
            query: view.query,
            headers: req.headers,
        };
        let kind = match req.method {
            _ if req.body != Framing::None => Kind::Pass,
            "GET" | "HEAD" => Kind::Lookup,
            "OPTIONS" | "TRACE" => Kind::Pass,
            _ => Kind::Unsafe,
        };
        CacheReq {
            facts: request::facts(req.headers),
            built: request::build(&rc.key, &input, scratch),
            kind,
        }
    }

    /// The request is looked up in the cache (a GET or HEAD without a body).
    pub fn lookup_method(&self) -> bool {
        self.kind == Kind::Lookup
    }
}

/// One cache-enabled request, from lookup to answer.
pub(super) async fn run(
    c: &mut Conn<'_>,
    gen: &Rc<Generation>,
    route: usize,
    group: UpstreamId,
    head: &Head,
    req: CacheReq,
) -> Outcome {
    let rc = gen.snap().router.route(route).cache.as_ref();
    let Some(rc) = rc.filter(|_| req.kind == Kind::Lookup && !req.facts.directives.no_store) else {
        let mut fill = CacheFill::new(c.shard, gen, rc, req, Status::Bypass);
        fill.store = false;
        fill.invalidate = req.kind == Kind::Unsafe;
        return exchange::run(c, gen, route, group, head, Some(&mut fill)).await;
    };
    let now = c.shard.unix_secs();
    let mut waited = false;
    loop {
        let slot = match find(c, head, &req, rc) {
            Some(slot) => slot,
            None if req.facts.directives.only_if_cached => {
                c.cbuf.consume(head.len);
                return Err(Failed {
                    err: ProxyError::NotCached,
                    drained: true,
                });
            }
            None if waited => return fetch(c, gen, (route, group), head, req, None).await,
            None => match c.shard.cache().locks.enter(req.built.hash) {
                Turn::Fetch(guard) => {
                    let fetch = Fetch {
                        old: None,
                        lock: Some(guard),
                    };
                    return fetch_with(c, gen, (route, group), head, req, fetch).await;
                }
                Turn::Wait(turn) => {
                    c.shard.cache().count_coalesced();
                    let wait = gen.snap().cache.lock_timeout;
                    let _ = c.shard.timers().timeout(wait, turn).await;
                    waited = true;
                    continue;
                }
            },
        };
        let d = req.facts.directives;
        let stored = slot.stored.clone();
        return match stored.freshness.judge(&d, now) {
            Verdict::Fresh => serve(c, gen, head, &req, &stored, Status::Hit).await,
            Verdict::AcceptedStale => serve(c, gen, head, &req, &stored, Status::Stale).await,
            Verdict::Stale
                if !d.no_cache
                    && d.max_age.is_none()
                    && stored.freshness.within_stale_while_revalidate(now) =>
            {
                if !slot.refreshing.get() && stored.has_validator() {
                    refresh::spawn(c, gen, group, head, &req, slot.clone(), rc);
                }
                serve(c, gen, head, &req, &stored, Status::Stale).await
            }
            Verdict::Stale => fetch(c, gen, (route, group), head, req, Some(slot)).await,
        };
    }
}

/// Looks the request up in this worker's index, then once more after taking in what
/// the other workers stored since this worker's last tick.
fn find(c: &Conn<'_>, head: &Head, req: &CacheReq, rc: &RouteCache) -> Option<Rc<Slot>> {
    let cache = c.shard.cache();
    let (key, _, _) = req.built.parts(c.key);
    let raw = &c.cbuf.data()[..head.len];
    let usable = |s: &Stored| {
        request::vary_matches(raw, &s.vary)
            && (!req.facts.authorization || rc.keys_authorization() || s.shared_with_auth)
    };
    let found = cache
        .index
        .lookup(req.built.hash, key, usable)
        .or_else(|| {
            c.shard.drain_cache();
            cache.index.lookup(req.built.hash, key, usable)
        })?;
    cache.index.touch(&found);
    Some(found)
}

/// Answers from `stored` a request whose head is still in the client buffer.
async fn serve(
    c: &mut Conn<'_>,
    gen: &Generation,
    head: &Head,
    req: &CacheReq,
    stored: &Arc<Stored>,
    status: Status,
) -> Outcome {
    let now = c.shard.unix_secs();
    let raw = &c.cbuf.data()[..head.len];
    let not_modified = req.facts.conditional && request::not_modified(raw, stored, now);
    c.cbuf.consume(head.len);
    hit::serve(c, gen, head, stored, status, not_modified).await
}

/// How a fetch goes: revalidating `old` (or replacing it, without validators), and
/// holding the key's lock so others wait for it.
struct Fetch {
    old: Option<Rc<Slot>>,
    lock: Option<Guard>,
}

/// Fetches without the lock (after waiting for another fetch that stored nothing), or
/// to revalidate `old`.
async fn fetch(
    c: &mut Conn<'_>,
    gen: &Generation,
    at: (usize, UpstreamId),
    head: &Head,
    req: CacheReq,
    old: Option<Rc<Slot>>,
) -> Outcome {
    fetch_with(c, gen, at, head, req, Fetch { old, lock: None }).await
}

/// Goes upstream for a cacheable request: relays and stores the response, or answers
/// from the entry it revalidated (on a 304, or inside `stale-if-error`).
async fn fetch_with(
    c: &mut Conn<'_>,
    gen: &Generation,
    (route, group): (usize, UpstreamId),
    head: &Head,
    req: CacheReq,
    how: Fetch,
) -> Outcome {
    let rc = gen.snap().router.route(route).cache.as_ref();
    let old = how.old.map(|s| s.stored.clone());
    let status = if old.is_some() {
        Status::Expired
    } else {
        Status::Miss
    };
    let mut fill = CacheFill::new(c.shard, gen, rc, req, status);
    fill.lock = how.lock;
    if let Some(o) = old.as_ref().filter(|o| o.has_validator()) {
        add_validators(c.out, o);
        fill.revalidating = Some(o.clone());
    }
    // The client's conditionals are answered from the entry, once the upstream spoke.
    let conditional = req
        .facts
        .conditional
        .then(|| c.cbuf.data()[..head.len].to_vec());
    let now = c.shard.unix_secs();
    let ups = Upstreams::new(c.shard, gen, group, head);
    let got = exchange::fetch(c, &ups, route, Some(&mut fill)).await;
    let stale = old.filter(|o| o.freshness.within_stale_if_error(now));
    let (stored, status) = match (got, fill.refreshed.take(), stale) {
        (Ok(got), Some(refreshed), _) => {
            exchange::settle_unrelayed(c, &ups, got);
            (refreshed, Status::Revalidated)
        }
        (Ok(got), None, Some(stale)) if got.resp.status >= 500 => {
            exchange::settle_unrelayed(c, &ups, got);
            (stale, Status::Stale)
        }
        (Ok(got), None, _) => return exchange::relay_response(c, &ups, got, Some(&mut fill)).await,
        (Err(f), _, Some(stale)) if f.drained && f.err.status() >= 500 => (stale, Status::Stale),
        (Err(f), _, _) => return Err(f),
    };
    drop(fill);
    let not_modified = conditional.is_some_and(|raw| request::not_modified(&raw, &stored, now));
    hit::serve(c, gen, head, &stored, status, not_modified).await
}

/// Adds the entry's validators to the upstream head in `out`, before its blank line.
pub(super) fn add_validators(out: &mut Vec<u8>, stored: &Stored) {
    debug_assert!(out.ends_with(b"\r\n\r\n"), "a complete head");
    out.truncate(out.len() - 2);
    if let Some(etag) = &stored.etag {
        out.extend_from_slice(b"If-None-Match: ");
        out.extend_from_slice(etag);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(lm) = &stored.last_modified_raw {
        out.extend_from_slice(b"If-Modified-Since: ");
        out.extend_from_slice(lm);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A fetch on a route that caches: labels its response, decides at the head whether it
/// will be stored, collects the body and stores it when it ended well (as a
/// [`Sink`] of the relay); or takes a 304 that confirms the entry it revalidates.
pub(super) struct CacheFill<'s> {
    shard: &'s Shard,
    /// The response's `X-Cache`.
    pub status: Status,
    /// The response may be stored.
    store: bool,
    /// The request is unsafe: its URL's entries go when it succeeds.
    invalidate: bool,
    rules: Rules,
    req: CacheReq,
    request_time: u64,
    /// The entry the request revalidates (it carries its validators).
    revalidating: Option<Arc<Stored>>,
    /// What will be stored, once the body is whole.
    plan: Option<Plan>,
    body: Vec<u8>,
    /// A 304 confirmed `revalidating`: the entry to answer from.
    refreshed: Option<Arc<Stored>>,
    /// Other requests for the key wait until this is dropped.
    lock: Option<Guard>,
}

impl<'s> CacheFill<'s> {
    /// A fill labelled `status`, storing under `rc`'s rules (with `[cache]` defaults).
    fn new(
        shard: &'s Shard,
        gen: &Generation,
        rc: Option<&RouteCache>,
        req: CacheReq,
        status: Status,
    ) -> CacheFill<'s> {
        let global = &gen.snap().cache;
        let rules = Rules {
            default_ttl: rc.map_or(0, |r| r.default_ttl.as_secs()),
            stale_while_revalidate: global.stale_while_revalidate.as_secs(),
            stale_if_error: global.stale_if_error.as_secs(),
            allow_set_cookie: rc.is_some_and(|r| r.allow_set_cookie),
            keys_authorization: rc.is_some_and(RouteCache::keys_authorization),
            max_object_bytes: global.max_object_bytes,
        };
        CacheFill {
            shard,
            status,
            store: rc.is_some(),
            invalidate: false,
            rules,
            req,
            request_time: shard.unix_secs(),
            revalidating: None,
            plan: None,
            body: Vec::new(),
            refreshed: None,
            lock: None,
        }
    }

    /// Takes in the final response head (`request`: the raw request head; `scratch`:
    /// the key scratch). True when it is a 304 confirming the revalidated entry: the
    /// caller answers from the refreshed entry instead of relaying it.
    pub fn on_head(
        &mut self,
        resp: &Response<'_, '_>,
        request: &[u8],
        scratch: &[u8],
        now: u64,
    ) -> bool {
        let skip = |n: &str| resp.has_connection && listed_in_connection(resp.headers, n);
        let fields = resp.headers.iter().map(|h| (h.name, h.value));
        let (key, host, target) = self.req.built.parts(scratch);
        if self.invalidate && resp.status < 400 {
            let host = Some(host.to_string());
            self.shard.cache_invalidate(Purge::Url {
                host,
                target: target.to_string(),
            });
        }
        let ctx = Context {
            request_head: request,
            key,
            hash: self.req.built.hash,
            host,
            target,
            authorization: self.req.facts.authorization,
            request_time: self.request_time,
            rules: &self.rules,
        };
        if let (Some(old), 304) = (&self.revalidating, resp.status) {
            let id = self.shard.cache().next_id();
            let refreshed = match plan::refresh(old, fields, &skip, &ctx, now, id) {
                Some(s) => {
                    let s = Arc::new(s);
                    self.shard.cache_store(s.clone());
                    s
                }
                // Confirmed, but no longer storable: answer from it this once.
                None => old.clone(),
            };
            self.refreshed = Some(refreshed);
            self.lock = None;
            return true;
        }
        self.shard.cache().count(self.status);
        let fits = match resp.body {
            Framing::Length(n) => n <= self.rules.max_object_bytes as u64,
            Framing::None | Framing::Chunked | Framing::Close => true,
        };
        if self.store && fits {
            self.plan = plan::plan(resp.status, resp.reason, fields, &skip, &ctx, now);
            if let (Some(_), Framing::Length(n)) = (&self.plan, resp.body) {
                self.body.reserve_exact(n as usize);
            }
        }
        if self.plan.is_none() {
            // Nothing will be stored: the requests waiting for it may go now.
            self.lock = None;
        }
        false
    }

    /// The response will be stored once its body is whole.
    pub fn storing(&self) -> bool {
        self.plan.is_some()
    }
}

impl Sink for CacheFill<'_> {
    fn data(&mut self, bytes: &[u8]) {
        let Some(plan) = &self.plan else { return };
        if self.body.len() + bytes.len() > plan.max_body {
            // Over `max_object_bytes`: it streams on uncached, and nothing is kept.
            self.plan = None;
            self.body = Vec::new();
            self.lock = None;
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    fn end(&mut self) {
        if let Some(plan) = self.plan.take() {
            let body = bytes::Bytes::from(std::mem::take(&mut self.body));
            let stored = plan.finish(self.shard.cache().next_id(), body);
            self.shard.cache_store(Arc::new(stored));
        }
        self.lock = None;
    }
}

/// The outcome of answering from the cache, for a caller that needs a [`Done`].
pub(super) fn answered(keep_alive: bool, status: u16) -> Done {
    Done {
        keep_alive,
        status,
        upstream: None,
    }
}

//! `Shard`: the state one worker core owns and every connection task of that worker
//! shares, behind methods. Everything here is `!Send` (`Rc`, `Cell`, `RefCell`): the
//! compiler keeps it on its core. The thread, runtime and tick loop that drive it live
//! in `worker`.
//!
//! The shard runs one [`Generation`] at a time: the current config snapshot plus this
//! worker's state for it (cursors, retry budgets, and each server's `ServerLocal`,
//! kept across generations by `ServerId`). A request takes the current generation once
//! (an `Rc` clone: no atomic, no allocation) and finishes on it.

use crate::access::{Outcome, Remote, WorkerLog};
use crate::balance::{Balancer, Candidates, Group, GroupState};
use crate::buf::{BufPool, CLIENT_BUF};
use crate::bus::{Bus, CacheInbox, CacheReport, CacheUpdate, Report};
use crate::config::AccessFormat;
use crate::config::{PathMatch, Target, Upstream, UpstreamId};
use crate::health::{MarkDown, Passive};
use crate::http::date::{self, HttpDate};
use crate::http::request_id::RequestId;
use crate::metrics::{GenMetrics, Histogram, Totals};
use crate::retry::Budget;
use crate::snapshot::Snapshot;
use crate::timer::Timers;
use crate::upstream::{ServerId, ServerLocal};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Free client buffer sets kept per worker (8 KiB each): enough for bursts of new
/// connections without holding much memory after them.
const MAX_FREE_BUFFERS: usize = 1024;

/// This worker's view of one group in one generation.
#[derive(Debug)]
struct GroupLocal {
    state: GroupState,
    /// Aligned with the group's members.
    members: Vec<Rc<ServerLocal>>,
    /// Carried across generations by group name.
    budget: Rc<Budget>,
}

/// A snapshot and this worker's state for it: what a request runs on.
#[derive(Debug)]
pub struct Generation {
    snap: Arc<Snapshot>,
    groups: Vec<GroupLocal>,
    /// Reusable capture slots for routes that name their group from the path (`None`
    /// for the others), so reading the captures allocates nothing.
    captures: Vec<Option<RefCell<regex::CaptureLocations>>>,
    /// This worker's token buckets for routes with `limit` (`None` for the others).
    /// Kept per generation: a reload starts every bucket full again.
    limiters: Vec<Option<crate::limit::Limiter>>,
    /// This worker's counters for this generation's routes and groups.
    metrics: GenMetrics,
}

impl Generation {
    /// The snapshot.
    pub fn snap(&self) -> &Snapshot {
        &self.snap
    }

    /// Group `id`'s table.
    pub fn group(&self, id: UpstreamId) -> &Group {
        &self.snap.groups[id]
    }

    /// What a pick in group `id` chooses among.
    pub fn candidates(&self, id: UpstreamId) -> Candidates<'_> {
        let local = &self.groups[id];
        Candidates {
            group: &self.snap.groups[id],
            state: &local.state,
            members: &local.members,
        }
    }

    /// Capture slots for route `route`'s regex, when it names its group from the path.
    pub fn captures(&self, route: usize) -> Option<std::cell::RefMut<'_, regex::CaptureLocations>> {
        self.captures.get(route)?.as_ref().map(RefCell::borrow_mut)
    }

    /// Route `route`'s token buckets on this worker, when it has a `limit`.
    pub fn limiter(&self, route: usize) -> Option<&crate::limit::Limiter> {
        self.limiters.get(route)?.as_ref()
    }

    /// This generation's counters (count only when `snap().metrics`).
    pub fn metrics(&self) -> &GenMetrics {
        &self.metrics
    }

    /// Group `id`'s counters, when metrics are on.
    pub fn group_metrics(&self, id: UpstreamId) -> Option<&crate::metrics::GroupCounters> {
        self.snap.metrics.then(|| self.metrics.group(id))
    }

    /// Group `id`'s retry budget on this worker.
    pub fn budget(&self, id: UpstreamId) -> &Budget {
        &self.groups[id].budget
    }
}

/// One finished request, as metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    /// The matched route, `None` when none matched.
    pub route: Option<usize>,
    /// `metrics::method_index` of its method.
    pub method: u8,
    /// The status it was answered with (499 when the client went away first).
    pub status: u16,
    /// When its head was read (taken only when metrics are on).
    pub started: Option<Instant>,
    /// Bytes read from the client for it.
    pub bytes_in: u64,
    /// Bytes written to the client for it.
    pub bytes_out: u64,
}

/// One worker's state.
#[derive(Debug)]
pub struct Shard {
    id: usize,
    bus: Bus,
    timers: Timers,
    buffers: BufPool,
    balancer: Balancer,
    current: RefCell<Rc<Generation>>,
    /// Every server of the current generation, by `ServerId` index.
    servers: RefCell<Vec<Option<Rc<ServerLocal>>>>,
    /// Servers a reload removed that still have requests in flight (shown as draining).
    retired: RefCell<Vec<Rc<ServerLocal>>>,
    /// Unique per worker run: the first half of generated request ids.
    id_prefix: u64,
    /// Requests given an id so far: the second half.
    id_seq: Cell<u64>,
    /// Coarse clock, refreshed every tick: pool ages and mark-downs need no better.
    now: Cell<Instant>,
    /// Ticks so far (wrapping): a 4-byte timestamp for per-connection state.
    ticks: Cell<u32>,
    /// The `Date` header value, refreshed when the second changes.
    date: Cell<HttpDate>,
    date_secs: Cell<u64>,
    /// Client connections open on this worker.
    open: Cell<u32>,
    /// TLS handshakes and tunnels (see `metrics::ConnCounts`).
    conn_counts: Cell<crate::metrics::ConnCounts>,
    /// A graceful drain started: finish requests, close connections after them.
    draining: Cell<bool>,
    /// Counters of generations this worker ran before, by label.
    carried: RefCell<Totals>,
    /// Replaced generations that requests still run on: their counters are folded
    /// into `carried` once the last such request ended (so none of its counts is lost).
    replaced: RefCell<Vec<Rc<Generation>>>,
    /// Whole-request durations (when metrics are on).
    durations: Histogram,
    /// Bytes read from and written to clients (when metrics are on).
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    /// Access log lines waiting for the writer thread.
    log: WorkerLog,
    /// This worker's side of the response cache.
    cache: crate::cache::Local,
    /// Cache changes from the other workers and the control thread.
    cache_inbox: CacheInbox,
    /// The current second in the access log's formats, refreshed with `date`.
    clf: Cell<[u8; date::CLF_LEN]>,
    iso: Cell<[u8; date::ISO_LEN]>,
}

impl Shard {
    /// Worker `id`'s state, running `snap`, handing access log lines to `log`, taking
    /// cache changes from `cache_inbox`.
    pub fn new(
        id: usize,
        bus: Bus,
        cache_inbox: CacheInbox,
        snap: Arc<Snapshot>,
        log: Remote,
    ) -> Shard {
        let now = Instant::now();
        let secs = date::unix_now();
        let shard = Shard {
            id,
            bus,
            timers: Timers::default(),
            buffers: BufPool::new(CLIENT_BUF, MAX_FREE_BUFFERS),
            balancer: Balancer::new(id),
            current: RefCell::new(Rc::new(Generation {
                snap: snap.clone(),
                groups: Vec::new(),
                captures: Vec::new(),
                limiters: Vec::new(),
                metrics: GenMetrics::new(0, 0),
            })),
            servers: RefCell::new(Vec::new()),
            retired: RefCell::new(Vec::new()),
            id_prefix: id_prefix(id),
            id_seq: Cell::new(0),
            now: Cell::new(now),
            ticks: Cell::new(0),
            date: Cell::new(date::format(secs)),
            date_secs: Cell::new(secs),
            open: Cell::new(0),
            conn_counts: Cell::new(crate::metrics::ConnCounts::default()),
            draining: Cell::new(false),
            carried: RefCell::new(Totals::default()),
            replaced: RefCell::new(Vec::new()),
            durations: Histogram::default(),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            log: WorkerLog::new(log),
            cache: crate::cache::Local::new(id),
            cache_inbox,
            clf: Cell::new(date::clf(secs)),
            iso: Cell::new(date::iso(secs)),
        };
        shard.install(snap);
        shard
    }

    /// The current generation, for one request.
    pub fn generation(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// Swaps in a new snapshot: kept servers keep their state, new ones start fresh
    /// (ramping up under `slow_start`, unless this is the first generation), removed
    /// ones are retired (in-flight requests finish; idle connections close now).
    pub fn install(&self, snap: Arc<Snapshot>) {
        let old = self.generation();
        let first = old.groups.is_empty();
        let now = self.now.get();
        let mut servers = self.servers.borrow_mut();
        let mut next: Vec<Option<Rc<ServerLocal>>> = Vec::new();
        let mut groups = Vec::with_capacity(snap.groups.len());
        for group in &snap.groups {
            let check = group.upstream.health.as_ref();
            let members = group
                .members
                .iter()
                .zip(&group.upstream.servers)
                .map(|(m, s)| {
                    let kept = servers.get(m.id.index()).and_then(Option::clone);
                    let local = kept.unwrap_or_else(|| {
                        let start_up = !check.is_some_and(|c| c.start_down);
                        let health = Passive::new(start_up, check.is_some());
                        let local = ServerLocal::new(m.id, s.addr, snap.generation, health);
                        if !first && group.upstream.slow_start.is_some() {
                            local.ramp_up(now);
                        }
                        Rc::new(local)
                    });
                    local.health.set_has_active(check.is_some());
                    if next.len() <= m.id.index() {
                        next.resize(m.id.index() + 1, None);
                    }
                    next[m.id.index()] = Some(local.clone());
                    local
                })
                .collect();
            let budget = old
                .groups
                .iter()
                .zip(&old.snap.groups)
                .find(|(_, g)| g.upstream.name == group.upstream.name)
                .map(|(l, _)| l.budget.clone())
                .unwrap_or_else(|| Rc::new(Budget::new(group.upstream.retry_budget, now)));
            budget.set_ratio(group.upstream.retry_budget);
            groups.push(GroupLocal {
                state: GroupState::new(group, self.id),
                members,
                budget,
            });
        }
        let mut retired = self.retired.borrow_mut();
        retired.retain(|s| s.inflight() > 0);
        for gone in servers.iter().flatten() {
            if next.get(gone.id.index()).is_none_or(Option::is_none) {
                gone.retire();
                if gone.inflight() > 0 {
                    retired.push(gone.clone());
                }
            }
        }
        *servers = next;
        let captures = snap
            .router
            .routes()
            .iter()
            .map(|r| match (&r.upstream, &r.path) {
                (Target::FromPath(_), PathMatch::Regex(re)) => {
                    Some(RefCell::new(re.capture_locations()))
                }
                _ => None,
            })
            .collect();
        let workers = snap.server.workers;
        let limiters = snap
            .router
            .routes()
            .iter()
            .map(|r| {
                r.limit
                    .as_ref()
                    .map(|l| crate::limit::Limiter::new(l.per_sec, l.burst, workers))
            })
            .collect();
        let metrics = GenMetrics::new(snap.router.routes().len(), snap.groups.len());
        *self.current.borrow_mut() = Rc::new(Generation {
            snap,
            groups,
            captures,
            limiters,
            metrics,
        });
        // Counters of the generation going away carry on under their labels, once the
        // requests still running on it have counted themselves.
        self.replaced.borrow_mut().push(old);
        self.fold_replaced();
    }

    /// Folds the counters of replaced generations no request runs on any more.
    fn fold_replaced(&self) {
        let mut carried = self.carried.borrow_mut();
        self.replaced.borrow_mut().retain(|g| {
            // The list holds one reference; any other is a request still running on it.
            let unused = Rc::strong_count(g) == 1;
            if unused {
                let names = g.snap.group_names();
                g.metrics
                    .fold_into(&g.snap.route_labels, &names, &mut carried);
            }
            !unused
        });
    }

    /// This worker's state for server `id`, when the current generation lists it and
    /// a message about generation `generation` can concern it.
    fn server(&self, id: ServerId, generation: u64) -> Option<Rc<ServerLocal>> {
        let servers = self.servers.borrow();
        let s = servers.get(id.index())?.as_ref()?;
        (s.since <= generation).then(|| s.clone())
    }

    /// Applies a broadcast passive mark-down.
    pub fn apply_down(&self, id: ServerId, generation: u64, down: MarkDown) {
        if let Some(s) = self.server(id, generation) {
            s.health.apply_down(down);
        }
    }

    /// Applies a broadcast active verdict; a server coming back ramps up.
    pub fn apply_active(&self, id: ServerId, generation: u64, up: bool) {
        if let Some(s) = self.server(id, generation) {
            if s.health.apply_active(up) {
                s.ramp_up(self.now.get());
            }
        }
    }

    /// Applies an operator's mark-down (or its lifting).
    pub fn apply_manual(&self, id: ServerId, generation: u64, down: bool) {
        if let Some(s) = self.server(id, generation) {
            s.health.set_manual_down(down);
        }
    }

    /// Counts a passive failure against `server`; a resulting mark-down is applied
    /// here and reported to the control thread, which logs it once and tells the other
    /// workers.
    pub fn failed(&self, server: &ServerLocal, group: &Upstream, reason: &'static str) {
        server.count_failure();
        if let Some(down) = server.health.record_failure(group, self.now.get()) {
            self.bus.report(Report::Down {
                generation: self.generation().snap.generation,
                server: server.id,
                down,
                reason,
            });
        }
    }

    /// Counts a success; a server that was on probation is back (and ramps up).
    pub fn succeeded(&self, server: &ServerLocal) {
        if server.health.record_success() {
            server.ramp_up(self.now.get());
            self.bus.report(Report::Recovered {
                generation: self.generation().snap.generation,
                server: server.id,
            });
        }
    }

    /// Advances the coarse clock: wakes expired waits, refreshes the `Date` value, and
    /// every `sweep_every` ticks closes upstream connections idle for too long.
    pub fn tick(&self, now: Instant, sweep_every: u32) {
        self.now.set(now);
        let ticks = self.ticks.get().wrapping_add(1);
        self.ticks.set(ticks);
        self.timers.tick(now);
        let secs = date::unix_now();
        if secs != self.date_secs.get() {
            self.date_secs.set(secs);
            self.date.set(date::format(secs));
            self.clf.set(date::clf(secs));
            self.iso.set(date::iso(secs));
        }
        self.log.flush();
        self.drain_cache();
        if ticks.is_multiple_of(sweep_every) {
            release_freed_memory();
            let hits = self.cache.index.take_touched();
            if !hits.is_empty() {
                self.bus.report(Report::Cache(CacheReport::Hits(hits)));
            }
            let current = self.generation();
            for (group, local) in current.snap.groups.iter().zip(&current.groups) {
                for s in &local.members {
                    s.idle.sweep(now, group.upstream.keepalive_timeout);
                }
            }
        }
    }

    /// This worker's side of the response cache.
    pub fn cache(&self) -> &crate::cache::Local {
        &self.cache
    }

    /// Applies the cache changes waiting in the inbox: entries other workers stored,
    /// evictions, purges. Cheap when there are none (one atomic load): called every
    /// tick and before a miss goes upstream.
    pub fn drain_cache(&self) {
        while let Some(update) = self.cache_inbox.try_next() {
            match update {
                CacheUpdate::Insert(stored) => {
                    self.cache.index.insert(stored);
                }
                CacheUpdate::Remove(ids) => self.cache.index.remove(&ids),
                CacheUpdate::Purge { purge, reply } => {
                    let n = self.cache.index.purge(&purge);
                    if let Some(reply) = reply {
                        let _ = reply.send(n);
                    }
                }
            }
        }
    }

    /// Stores an entry this worker fetched: in its own index now, in the others' at
    /// their next look, and in the control thread's account.
    pub fn cache_store(&self, stored: Arc<crate::cache::Stored>) {
        self.cache.count_stored();
        if self.cache.index.insert(stored.clone()) {
            self.bus
                .cache_broadcast(Some(self.id), CacheUpdate::Insert(stored.clone()));
            self.bus.report(Report::Cache(CacheReport::Stored(stored)));
        }
    }

    /// Drops what `purge` matches on every worker (an unsafe request changed it).
    pub fn cache_invalidate(&self, purge: crate::cache::Purge) {
        self.cache.index.purge(&purge);
        let shared = Arc::new(purge.clone());
        self.bus.cache_broadcast(
            Some(self.id),
            CacheUpdate::Purge {
                purge: shared,
                reply: None,
            },
        );
        self.bus
            .report(Report::Cache(CacheReport::Invalidated(purge)));
    }

    /// The coarse clock in seconds since the epoch (refreshed every tick).
    pub fn unix_secs(&self) -> u64 {
        self.date_secs.get()
    }

    /// Worker index, 0-based.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The coarse clock (refreshed every tick).
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Ticks so far, wrapping.
    pub fn ticks(&self) -> u32 {
        self.ticks.get()
    }

    /// The current `Date` header value.
    pub fn date(&self) -> HttpDate {
        self.date.get()
    }

    /// The worker's coarse timers.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Free client connection buffers.
    pub fn buffers(&self) -> &BufPool {
        &self.buffers
    }

    /// The worker's balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The next generated request id.
    pub fn next_request_id(&self) -> RequestId {
        let seq = self.id_seq.get().wrapping_add(1);
        self.id_seq.set(seq);
        RequestId::generate(self.id_prefix, seq)
    }

    /// A client connection opened.
    pub fn conn_opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    /// A TLS handshake ended: completed (`ok`) or failed.
    pub fn tls_handshake(&self, ok: bool) {
        let mut c = self.conn_counts.get();
        if ok {
            c.tls_ok += 1;
        } else {
            c.tls_failed += 1;
        }
        self.conn_counts.set(c);
    }

    /// An Upgrade tunnel opened (`true`) or closed.
    pub fn tunnel(&self, opened: bool) {
        let mut c = self.conn_counts.get();
        if opened {
            c.tunnels_open += 1;
            c.tunnels_total += 1;
        } else {
            c.tunnels_open = c.tunnels_open.saturating_sub(1);
        }
        self.conn_counts.set(c);
    }

    /// A request was refused: by a route's `limit` (`limited`) or by `allow` / `deny`.
    pub fn refused(&self, limited: bool) {
        let mut c = self.conn_counts.get();
        if limited {
            c.rate_limited += 1;
        } else {
            c.forbidden += 1;
        }
        self.conn_counts.set(c);
    }

    /// A connection on a `proxy_protocol` listener was closed without being served.
    pub fn proxy_header_refused(&self) {
        let mut c = self.conn_counts.get();
        c.proxy_refused += 1;
        self.conn_counts.set(c);
    }

    /// A client connection closed.
    pub fn conn_closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
    }

    /// Client connections open now.
    pub fn open_conns(&self) -> u32 {
        self.open.get()
    }

    /// Counts one request that ended with `status` (when metrics are on): `route` as
    /// matched (`None`: no route), `started` when its head was read, and the bytes it
    /// read from and wrote to the client.
    pub fn record_request(&self, gen: &Generation, r: &RequestRecord) {
        if !gen.snap.metrics {
            return;
        }
        gen.metrics.request(r.route, r.method, r.status);
        if let Some(started) = r.started {
            self.durations.observe(started.elapsed());
        }
        self.bytes_in.set(self.bytes_in.get() + r.bytes_in);
        self.bytes_out.set(self.bytes_out.get() + r.bytes_out);
    }

    /// The current second as the access log format `format` writes it, and its length.
    pub fn log_time(&self, format: AccessFormat) -> ([u8; date::CLF_LEN], usize) {
        match format {
            AccessFormat::Combined => (self.clf.get(), date::CLF_LEN),
            AccessFormat::Json => {
                let mut t = [0u8; date::CLF_LEN];
                t[..date::ISO_LEN].copy_from_slice(&self.iso.get());
                (t, date::ISO_LEN)
            }
        }
    }

    /// Writes one access log line: `scratch` from `access::begin`, with the outcome.
    pub fn access_line(&self, format: AccessFormat, scratch: &[u8], split: usize, o: &Outcome) {
        self.log
            .line(|out| crate::access::finish(out, format, scratch, split, o));
    }

    /// A copy of this worker's counters, for a scrape.
    pub fn stats(&self, driver: crate::worker::Driver) -> crate::metrics::WorkerStats {
        self.fold_replaced();
        let current = self.generation();
        let mut totals = self.carried.borrow().clone();
        for g in self
            .replaced
            .borrow()
            .iter()
            .chain(std::iter::once(&current))
        {
            g.metrics
                .fold_into(&g.snap.route_labels, &g.snap.group_names(), &mut totals);
        }
        totals.request_duration.add(&self.durations.snapshot());
        totals.bytes_in += self.bytes_in.get();
        totals.bytes_out += self.bytes_out.get();
        crate::metrics::WorkerStats {
            conns: self.conn_counts.get(),
            worker: self.id,
            driver,
            generation: current.snap.generation,
            open_conns: self.open.get(),
            servers: current
                .groups
                .iter()
                .flat_map(|g| g.members.iter())
                .chain(self.removed_in_flight().iter())
                .map(|s| s.stats())
                .collect(),
            totals,
            cache: self.cache.counters(),
            cache_index: (self.cache.index.len(), self.cache.index.bytes()),
        }
    }

    /// Removed servers that still have requests in flight on this worker.
    fn removed_in_flight(&self) -> std::cell::Ref<'_, Vec<Rc<ServerLocal>>> {
        self.retired.borrow_mut().retain(|s| s.inflight() > 0);
        self.retired.borrow()
    }

    /// Starts a graceful drain: requests in flight finish and answer
    /// `Connection: close`; connections waiting for a next request close now.
    pub fn start_drain(&self) {
        self.draining.set(true);
        self.timers.close_idle();
    }

    /// True once a drain started.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }
}

/// Hands memory this thread's heap freed back to the system. Cache entries are freed
/// by whichever thread lets go of them last, into the heap of the worker that stored
/// them, and mimalloc purges such pages only when that thread calls into it: without
/// this an idle worker kept tens of MiB of evicted entries resident. Once a second.
fn release_freed_memory() {
    // SAFETY: collecting only touches the calling thread's own heap; any time is fine.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// A per-run prefix for request ids: time, process and worker mixed, so ids from
/// different workers, restarts and machines do not collide in practice.
fn id_prefix(worker: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = Vec::with_capacity(24);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&u64::from(std::process::id()).to_le_bytes());
    seed.extend_from_slice(&(worker as u64).to_le_bytes());
    crate::hash::hash_bytes(&seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upstream::Registry;

    fn snap(servers: &str, generation: u64, reg: &mut Registry) -> Arc<Snapshot> {
        let c = Config::parse(
            &format!("[server]\nworkers = 1\n[upstreams.web]\nservers = [{servers}]\n[[routes]]\nupstream = \"web\"\n"),
            "t",
        )
        .unwrap();
        Arc::new(Snapshot::build(&c, generation, reg))
    }

    #[test]
    fn a_reload_keeps_kept_servers_state_and_retires_removed_ones() {
        let mut reg = Registry::new();
        let (bus, mut inboxes, _reports) = Bus::new(1);
        let log = crate::access::AccessLog::start(crate::access::Sink::Off).unwrap();
        let first = snap("\"127.0.0.1:1\", \"127.0.0.1:2\"", 1, &mut reg);
        let cache = inboxes[0].take_cache().unwrap();
        let shard = Shard::new(0, bus, cache, first, log.remote());
        let g1 = shard.generation();
        let kept = g1.candidates(0).members[1].clone();
        let gone = g1.candidates(0).members[0].clone();
        kept.start();
        let down = MarkDown {
            until: Instant::now() + std::time::Duration::from_secs(60),
            step: 0,
        };
        shard.apply_down(kept.id, 1, down);

        shard.install(snap("\"127.0.0.1:2\", \"127.0.0.1:3\"", 2, &mut reg));
        let g2 = shard.generation();
        let members = g2.candidates(0).members;
        assert!(Rc::ptr_eq(&members[0], &kept), "same state object, by id");
        assert_eq!(kept.inflight(), 1, "in-flight counts carry over");
        assert!(
            !kept.health.usable(Instant::now()),
            "and so does its mark-down"
        );
        assert!(gone.is_retired() && !kept.is_retired());
        assert_eq!(members[1].since, 2);
        // A late message about the new server from before it joined is ignored.
        shard.apply_active(members[1].id, 1, false);
        assert!(members[1].health.usable(Instant::now()));
        shard.apply_active(members[1].id, 2, false);
        assert!(!members[1].health.usable(Instant::now()));
        // The old generation still works for requests that hold it.
        assert_eq!(g1.candidates(0).members.len(), 2);
    }
}

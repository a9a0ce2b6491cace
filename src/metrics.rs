//! Counters, gauges and histograms, read across cores without sharing anything on the
//! hot path: each worker counts in its own `Cell`s, and a scrape asks every worker, over
//! the bus, for a copy ([`WorkerStats`]), which the control thread sums and renders
//! (`control::prometheus`). A scrape costs each worker one copy at its next tick;
//! requests never touch an atomic for it.
//!
//! Per-route and per-group counters are dense arrays of the generation they count in
//! ([`GenMetrics`]); when a reload swaps generations, a worker folds the old arrays
//! into label-keyed [`Totals`], so counters never go backwards across a reload.

use crate::upstream::ServerId;
use crate::worker::Driver;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds (seconds) of both duration histograms' buckets, from a loopback round
/// trip to a slow upstream; the last bucket (`+Inf`) is implicit.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Methods as label values: the common ones by name, every other as `OTHER`, so a
/// client cannot grow the label set.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

/// Status classes as label values.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The [`METHODS`] index of `method`.
pub fn method_index(method: &str) -> u8 {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7) as u8
}

/// The [`CLASSES`] index of `status`.
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// A histogram of durations over [`BUCKETS`], owned by one worker.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), then `+Inf`.
    counts: [Cell<u64>; BUCKETS.len() + 1],
    sum_ns: Cell<u64>,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        let c = &self.counts[i];
        c.set(c.get() + 1);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
    }

    /// A copy.
    pub fn snapshot(&self) -> HistogramSnap {
        HistogramSnap {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum: self.sum_ns.get() as f64 / 1e9,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramSnap {
    /// Per bucket (not cumulative), then `+Inf`.
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl HistogramSnap {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &HistogramSnap) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One group's counters on one worker.
#[derive(Debug, Default)]
pub struct GroupCounters {
    /// Time from sending a request to its response head.
    pub response: Histogram,
    /// Connects that failed or timed out.
    pub connect_errors: Cell<u64>,
    /// Attempts sent again (to another server, or fresh after a dead pooled one).
    pub retries: Cell<u64>,
    /// Retries the retry budget refused.
    pub budget_refusals: Cell<u64>,
    /// Requests sent on a pooled keep-alive connection.
    pub reused: Cell<u64>,
    /// New connections opened.
    pub connects: Cell<u64>,
}

impl GroupCounters {
    fn snapshot(&self) -> GroupTotals {
        GroupTotals {
            response: self.response.snapshot(),
            connect_errors: self.connect_errors.get(),
            retries: self.retries.get(),
            budget_refusals: self.budget_refusals.get(),
            reused: self.reused.get(),
            connects: self.connects.get(),
        }
    }
}

/// Adds one to a counter.
pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// A group's counters at one moment (one worker's, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupTotals {
    /// See [`GroupCounters`].
    pub response: HistogramSnap,
    /// See [`GroupCounters`].
    pub connect_errors: u64,
    /// See [`GroupCounters`].
    pub retries: u64,
    /// See [`GroupCounters`].
    pub budget_refusals: u64,
    /// See [`GroupCounters`].
    pub reused: u64,
    /// See [`GroupCounters`].
    pub connects: u64,
}

impl GroupTotals {
    fn add(&mut self, o: &GroupTotals) {
        self.response.add(&o.response);
        self.connect_errors += o.connect_errors;
        self.retries += o.retries;
        self.budget_refusals += o.budget_refusals;
        self.reused += o.reused;
        self.connects += o.connects;
    }
}

/// One worker's counters for one generation's routes and groups, by index.
#[derive(Debug)]
pub struct GenMetrics {
    /// Per route, then one for requests no route matched: method × status class.
    routes: Vec<[[Cell<u64>; CLASSES.len()]; METHODS.len()]>,
    /// Per group.
    groups: Vec<GroupCounters>,
}

impl GenMetrics {
    /// Zeroed counters for `routes` routes and `groups` groups.
    pub fn new(routes: usize, groups: usize) -> GenMetrics {
        GenMetrics {
            routes: (0..=routes).map(|_| Default::default()).collect(),
            groups: (0..groups).map(|_| GroupCounters::default()).collect(),
        }
    }

    /// Counts a request answered with `status`; `route` `None`: no route matched.
    pub fn request(&self, route: Option<usize>, method: u8, status: u16) {
        let r = route
            .unwrap_or(self.routes.len() - 1)
            .min(self.routes.len() - 1);
        bump(&self.routes[r][usize::from(method).min(METHODS.len() - 1)][class_index(status)]);
    }

    /// Group `id`'s counters.
    pub fn group(&self, id: usize) -> &GroupCounters {
        &self.groups[id]
    }

    /// Adds these counters to `totals`, labelled: `route_labels` per route (the last
    /// entry is for requests no route matched), `group_names` per group.
    pub fn fold_into(&self, route_labels: &[String], group_names: &[&str], totals: &mut Totals) {
        for (r, by) in self.routes.iter().enumerate() {
            let label = route_labels.get(r).map_or("none", String::as_str);
            for (m, classes) in by.iter().enumerate() {
                for (c, n) in classes.iter().enumerate() {
                    if n.get() > 0 {
                        *totals
                            .requests
                            .entry((label.to_string(), METHODS[m], CLASSES[c]))
                            .or_default() += n.get();
                    }
                }
            }
        }
        for (g, counters) in self.groups.iter().enumerate() {
            let name = group_names.get(g).copied().unwrap_or("?");
            totals
                .groups
                .entry(name.to_string())
                .or_default()
                .add(&counters.snapshot());
        }
    }
}

/// Label-keyed counters: what a scrape returns, and what a worker keeps of the
/// generations it ran before.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Requests by (route label, method, status class).
    pub requests: BTreeMap<(String, &'static str, &'static str), u64>,
    /// Per group name.
    pub groups: BTreeMap<String, GroupTotals>,
    /// Whole-request durations.
    pub request_duration: HistogramSnap,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

impl Totals {
    /// Adds `o` to these.
    pub fn add(&mut self, o: &Totals) {
        for (k, n) in &o.requests {
            *self.requests.entry(k.clone()).or_default() += n;
        }
        for (k, g) in &o.groups {
            self.groups.entry(k.clone()).or_default().add(g);
        }
        self.request_duration.add(&o.request_duration);
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// One server as one worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Which server.
    pub id: ServerId,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Upgrade tunnels open to it now.
    pub tunnels: u32,
    /// Idle keep-alive connections to it now.
    pub pooled: u32,
    /// Attempts sent to it (retries count once per server tried).
    pub requests: u64,
    /// Failures counted against it (passive health's failures).
    pub failures: u64,
    /// A reload removed it and requests to it are still in flight.
    pub draining: bool,
}

/// What one worker reports when scraped.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// Its TLS handshakes and tunnels.
    pub conns: ConnCounts,
    /// Worker index.
    pub worker: usize,
    /// The I/O driver it runs on.
    pub driver: Driver,
    /// The config generation it runs.
    pub generation: u64,
    /// Client connections open on it.
    pub open_conns: u32,
    /// Every server of its current generation.
    pub servers: Vec<ServerStats>,
    /// Its counters since it started (empty when metrics are off).
    pub totals: Totals,
    /// Its cache counters since it started.
    pub cache: crate::cache::Counters,
    /// Entries in its cache index, and their bytes (each worker indexes every entry;
    /// the bytes are shared, counted here per index).
    pub cache_index: (usize, usize),
}

/// A worker's connection-level counters (kept whether or not metrics are on: they
/// cost one add per connection, not per request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCounts {
    /// TLS handshakes completed.
    pub tls_ok: u64,
    /// TLS handshakes that failed or timed out (the client was closed).
    pub tls_failed: u64,
    /// Upgrade tunnels open now.
    pub tunnels_open: u64,
    /// Upgrade tunnels opened since start.
    pub tunnels_total: u64,
    /// Requests refused by a route's `limit` (429).
    pub rate_limited: u64,
    /// Requests refused by `allow` / `deny` (403).
    pub forbidden: u64,
    /// Connections closed on a `proxy_protocol` listener: untrusted peer, or no valid
    /// PROXY header in time.
    pub proxy_refused: u64,
}

impl ConnCounts {
    /// The sum of `all`.
    pub fn sum(all: &[WorkerStats]) -> ConnCounts {
        all.iter().fold(ConnCounts::default(), |a, w| ConnCounts {
            tls_ok: a.tls_ok + w.conns.tls_ok,
            tls_failed: a.tls_failed + w.conns.tls_failed,
            tunnels_open: a.tunnels_open + w.conns.tunnels_open,
            tunnels_total: a.tunnels_total + w.conns.tunnels_total,
            rate_limited: a.rate_limited + w.conns.rate_limited,
            forbidden: a.forbidden + w.conns.forbidden,
            proxy_refused: a.proxy_refused + w.conns.proxy_refused,
        })
    }
}

impl WorkerStats {
    /// The sum over workers of `f` of server `id`'s stats.
    pub fn sum(all: &[WorkerStats], id: ServerId, f: impl Fn(&ServerStats) -> u64) -> u64 {
        all.iter()
            .flat_map(|w| w.servers.iter().filter(|s| s.id == id))
            .map(f)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1, "0.5 ms is within the first bound");
        assert_eq!(s.counts[3], 1, "3 ms falls in (2.5 ms, 5 ms]");
        assert_eq!(s.counts[BUCKETS.len()], 1, "+Inf");
        assert_eq!(s.count(), 3);
        assert!((s.sum - 60.0035).abs() < 1e-9);
    }

    #[test]
    fn generation_counters_fold_into_labelled_totals() {
        let m = GenMetrics::new(2, 1);
        m.request(Some(0), method_index("GET"), 200);
        m.request(Some(0), method_index("GET"), 204);
        m.request(Some(1), method_index("BREW"), 502);
        m.request(None, method_index("GET"), 404);
        bump(&m.group(0).retries);
        let mut t = Totals::default();
        let labels = [
            "api".to_string(),
            "routes[1]".to_string(),
            "none".to_string(),
        ];
        m.fold_into(&labels, &["web"], &mut t);
        assert_eq!(t.requests[&("api".to_string(), "GET", "2xx")], 2);
        assert_eq!(t.requests[&("routes[1]".to_string(), "OTHER", "5xx")], 1);
        assert_eq!(t.requests[&("none".to_string(), "GET", "4xx")], 1);
        assert_eq!(t.groups["web"].retries, 1);
        let mut twice = t.clone();
        twice.add(&t);
        assert_eq!(twice.requests[&("api".to_string(), "GET", "2xx")], 4);
    }
}

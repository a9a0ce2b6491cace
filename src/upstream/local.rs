//! `ServerLocal`: everything one worker keeps about one server, kept across reloads by
//! [`ServerId`]: its health as this worker applies it, its load (in-flight requests,
//! latency average, slow-start ramp) and its idle keep-alive connections.
//!
//! Shared by `Rc` between the worker's id table and the generations that list the
//! server: a request holds the one it picked until it ends, so a server removed by a
//! reload finishes its in-flight requests on the same counters, while its idle
//! connections are closed at once ([`ServerLocal::retire`]).

use super::pool::Idle;
use super::ServerId;
use crate::health::Passive;
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `least_time` forgets old latency with this half-life, so a server that was slow
/// once gets traffic again eventually instead of being starved forever.
const LATENCY_HALF_LIFE: f64 = 10.0;
/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;

/// One worker's state for one server.
#[derive(Debug)]
pub struct ServerLocal {
    /// The server's id.
    pub id: ServerId,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The config generation this worker first listed it in: bus messages about an
    /// older generation describe an earlier time the server was configured.
    pub since: u64,
    /// Whether it may be picked.
    pub health: Passive,
    /// Idle keep-alive connections to it.
    pub idle: Idle,
    /// Requests this worker has in flight to it.
    inflight: Cell<u32>,
    /// Upgrade tunnels this worker has open to it.
    tunnels: Cell<u32>,
    /// It came back (or joined) at this time and is still ramping up.
    ramp_from: Cell<Option<Instant>>,
    /// Moving average of response-header latency in µs (0 = no sample yet).
    latency: Cell<f64>,
    latency_at: Cell<Option<Instant>>,
    /// No longer in the config: in-flight requests finish, nothing is pooled.
    retired: Cell<bool>,
    /// Attempts sent to it, for status and metrics.
    requests: Cell<u64>,
    /// Failures counted against it, for status and metrics.
    failures: Cell<u64>,
}

impl ServerLocal {
    /// A server joining this worker in generation `since`.
    pub fn new(id: ServerId, addr: SocketAddr, since: u64, health: Passive) -> ServerLocal {
        ServerLocal {
            id,
            addr,
            since,
            health,
            idle: Idle::default(),
            inflight: Cell::new(0),
            tunnels: Cell::new(0),
            ramp_from: Cell::new(None),
            latency: Cell::new(0.0),
            latency_at: Cell::new(None),
            retired: Cell::new(false),
            requests: Cell::new(0),
            failures: Cell::new(0),
        }
    }

    /// A request to it starts: counts toward `least_conn`, `p2c` and `max_connections`.
    pub fn start(&self) {
        self.inflight.set(self.inflight.get() + 1);
        self.requests.set(self.requests.get() + 1);
    }

    /// A failure was counted against it.
    pub fn count_failure(&self) {
        self.failures.set(self.failures.get() + 1);
    }

    /// Its counters, for a scrape.
    pub fn stats(&self) -> crate::metrics::ServerStats {
        crate::metrics::ServerStats {
            id: self.id,
            in_flight: self.inflight.get(),
            tunnels: self.tunnels.get(),
            pooled: self.idle.len() as u32,
            requests: self.requests.get(),
            failures: self.failures.get(),
            draining: self.retired.get(),
        }
    }

    /// A request started with [`ServerLocal::start`] ended, however it ended.
    pub fn finish(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }

    /// Requests in flight and tunnels open from this worker to it: the load that
    /// `least_conn`, `p2c` and `max_connections` see (a tunnel holds a connection as a
    /// request does, but is counted apart in metrics).
    pub fn inflight(&self) -> u32 {
        self.inflight.get() + self.tunnels.get()
    }

    /// An upgrade tunnel to it opened (`true`) or closed.
    pub fn tunnel(&self, opened: bool) {
        let n = self.tunnels.get();
        self.tunnels
            .set(if opened { n + 1 } else { n.saturating_sub(1) });
    }

    /// It just came back (or joined): ramp its weight up over `slow_start`.
    pub fn ramp_up(&self, now: Instant) {
        self.ramp_from.set(Some(now));
    }

    /// `full` (a configured weight, scaled) ramped while it is in its slow start.
    pub fn ramped(&self, full: u64, slow_start: Option<Duration>, now: Instant) -> u64 {
        let (Some(from), Some(ramp)) = (self.ramp_from.get(), slow_start) else {
            return full;
        };
        let elapsed = now.saturating_duration_since(from);
        if elapsed >= ramp {
            self.ramp_from.set(None);
            return full;
        }
        ((full as f64 * elapsed.as_secs_f64() / ramp.as_secs_f64()) as u64).max(1)
    }

    /// The latency average decayed to `now`; 0 when it has no sample yet.
    pub fn latency(&self, now: Instant) -> f64 {
        match self.latency_at.get() {
            None => 0.0,
            Some(at) => {
                let age = now.saturating_duration_since(at);
                if age < Duration::from_millis(100) {
                    // Under 0.7% of decay: not worth an exp2 per candidate per pick.
                    return self.latency.get();
                }
                self.latency.get() * (-age.as_secs_f64() / LATENCY_HALF_LIFE).exp2()
            }
        }
    }

    /// Feeds one response-header latency sample to `least_time`.
    pub fn observe_latency(&self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64() * 1e6;
        let next = match self.latency_at.get() {
            None => sample,
            Some(_) => {
                let old = self.latency(now);
                old + (sample - old) * EWMA_ALPHA
            }
        };
        // Never exactly 0, which means "no sample yet".
        self.latency.set(next.max(1.0));
        self.latency_at.set(Some(now));
    }

    /// The server left the config: close its idle connections and pool no more.
    pub fn retire(&self) {
        self.retired.set(true);
        self.idle.clear();
    }

    /// True once retired.
    pub fn is_retired(&self) -> bool {
        self.retired.get()
    }
}

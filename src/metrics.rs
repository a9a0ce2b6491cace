//! Counters and gauges, read across cores without sharing anything on the hot path:
//! each worker counts in its own `Cell`s, and a scrape asks every worker, over the bus,
//! for a copy ([`WorkerStats`]), which the control thread sums. A scrape costs each
//! worker one copy at its next tick; requests never touch an atomic for it.

use crate::upstream::ServerId;
use crate::worker::Driver;

/// One server as one worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Which server.
    pub id: ServerId,
    /// Requests in flight to it now.
    pub in_flight: u32,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
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

//! The response cache (RFC 9111), shared across cores without locks.
//!
//! - A stored response ([`entry::Stored`]) is immutable and stored once in the process:
//!   an `Arc` of its head and `Bytes` body.
//! - Each worker keeps its own [`index::Index`] of every entry, so a hit reads only
//!   that worker's memory and the immutable entry. A worker that stores a response
//!   inserts it into its index and broadcasts it to the others, which add it when they
//!   next look at their cache inbox (every tick, and before any miss goes upstream).
//! - The control thread keeps the process's account ([`store::Store`]): total bytes
//!   against `cache.max_bytes`, S3-FIFO eviction ([`policy`]) fed by batched hit
//!   reports, expiry, purges; what it drops, every worker drops.
//! - Deciding what to store ([`plan`]), what a request may use ([`entry::Freshness`]),
//!   keys, `Vary` and conditionals ([`request`]) are pure functions, tested alone.
//! - [`lock`] coalesces concurrent misses for one key on a worker.
//!
//! The request path that uses all this is `proxy::cached`.

pub mod entry;
pub mod index;
pub mod lock;
pub mod plan;
pub mod policy;
pub mod purge;
pub mod request;
pub mod store;

pub use entry::{EntryId, Stored};
pub use purge::Purge;

use std::cell::Cell;
use std::rc::Rc;

/// What the cache did for a response, sent as `X-Cache` on every response of a
/// cache-enabled route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Served from a fresh entry.
    Hit,
    /// Not stored: fetched (and stored when it may be).
    Miss,
    /// Stored but stale (or the request asked for a check): fetched again whole.
    Expired,
    /// Served from a stale entry (while it is refreshed, or because the upstream failed).
    Stale,
    /// A stale entry the upstream confirmed with a 304, served.
    Revalidated,
    /// Not a request the cache serves or stores (method, `no-store`, credentials).
    Bypass,
}

impl Status {
    /// The `X-Cache` header line.
    pub fn header(self) -> &'static [u8] {
        match self {
            Status::Hit => b"X-Cache: HIT\r\n",
            Status::Miss => b"X-Cache: MISS\r\n",
            Status::Expired => b"X-Cache: EXPIRED\r\n",
            Status::Stale => b"X-Cache: STALE\r\n",
            Status::Revalidated => b"X-Cache: REVALIDATED\r\n",
            Status::Bypass => b"X-Cache: BYPASS\r\n",
        }
    }

    /// Its index in [`Counters`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Statuses in [`Status`] order, as metrics label them.
pub const STATUS_LABELS: [&str; 6] = ["hit", "miss", "expired", "stale", "revalidated", "bypass"];

/// One worker's cache counters (a copy, for a scrape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Responses by [`Status`].
    pub responses: [u64; 6],
    /// Requests that waited for another request's fetch of their key.
    pub coalesced: u64,
    /// Responses this worker stored.
    pub stored: u64,
    /// Background refreshes started (`stale-while-revalidate`).
    pub refreshes: u64,
}

impl Counters {
    /// Adds `other` in.
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        self.coalesced += other.coalesced;
        self.stored += other.stored;
        self.refreshes += other.refreshes;
    }
}

/// One worker's side of the cache: its index, its fetches in progress, its counters.
#[derive(Debug)]
pub struct Local {
    /// Every entry, as this worker sees them.
    pub index: index::Index,
    /// Fetches in progress on this worker, by key hash.
    pub locks: Rc<lock::Locks>,
    /// The top bits of this worker's entry ids.
    id_base: u64,
    seq: Cell<u64>,
    responses: [Cell<u64>; 6],
    coalesced: Cell<u64>,
    stored: Cell<u64>,
    refreshes: Cell<u64>,
}

impl Local {
    /// Worker `worker`'s cache side.
    pub fn new(worker: usize) -> Local {
        Local {
            index: index::Index::default(),
            locks: Rc::new(lock::Locks::default()),
            // 16 bits of worker, 48 of count: ids never repeat in a process's life.
            id_base: ((worker as u64) & 0xffff) << 48,
            seq: Cell::new(0),
            responses: Default::default(),
            coalesced: Cell::new(0),
            stored: Cell::new(0),
            refreshes: Cell::new(0),
        }
    }

    /// A new entry id.
    pub fn next_id(&self) -> EntryId {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        self.id_base | (n & ((1 << 48) - 1))
    }

    /// Counts a response of a cache-enabled route.
    pub fn count(&self, status: Status) {
        let c = &self.responses[status.index()];
        c.set(c.get() + 1);
    }

    /// Counts a request that waited for another's fetch.
    pub fn count_coalesced(&self) {
        self.coalesced.set(self.coalesced.get() + 1);
    }

    /// Counts a response stored.
    pub fn count_stored(&self) {
        self.stored.set(self.stored.get() + 1);
    }

    /// Counts a background refresh.
    pub fn count_refresh(&self) {
        self.refreshes.set(self.refreshes.get() + 1);
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        Counters {
            responses: std::array::from_fn(|i| self.responses[i].get()),
            coalesced: self.coalesced.get(),
            stored: self.stored.get(),
            refreshes: self.refreshes.get(),
        }
    }
}

//! The only cross-core paths: a broadcast of `Update`s to every worker, and `Report`s
//! from workers to the control thread.
//!
//! Each worker owns one crossbeam-channel receiver and drains it from its own runtime
//! (every tick), so the hot path takes no lock and touches no atomic another core
//! writes to. Any thread may broadcast. Messages about servers carry the config
//! generation they were decided in, so a late one cannot land on a server that joined
//! after it.

use crate::cache::{EntryId, Purge, Stored};
use crate::health::MarkDown;
use crate::snapshot::Snapshot;
use crate::upstream::ServerId;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A change every worker must apply.
#[derive(Debug, Clone)]
pub enum Update {
    /// Run this config generation from the next request on.
    Snapshot(Arc<Snapshot>),
    /// Passive checks marked the server down: skip it until `down.until`.
    ServerDown {
        /// The generation the mark-down was decided in.
        generation: u64,
        /// Which server.
        server: ServerId,
        /// Until when, and at which back-off step.
        down: MarkDown,
    },
    /// The active checker's verdict changed.
    Health {
        /// The generation the verdict was reached in.
        generation: u64,
        /// Which server.
        server: ServerId,
        /// Whether it passes its checks now.
        up: bool,
    },
    /// An operator marked the server down (`true`) or lifted that (`false`).
    Manual {
        /// The generation it was decided in.
        generation: u64,
        /// Which server.
        server: ServerId,
        /// Marked down.
        down: bool,
    },
    /// Listeners change: stop accepting on `remove`, start on the ones handed over.
    Listen {
        /// One socket set per worker, taken by that worker.
        add: Arc<Handoff>,
        /// Bound addresses to stop accepting on.
        remove: Arc<[SocketAddr]>,
    },
    /// Send a copy of your counters (the admin API's status and metrics).
    Scrape {
        /// Where to send it.
        reply: Sender<crate::metrics::WorkerStats>,
    },
    /// Stop accepting, finish what is in flight, close the rest at `deadline`, exit.
    Drain {
        /// When connections still open are cut.
        deadline: Instant,
    },
}

/// A change to every worker's cache index. Apart from the tick, a worker reads these
/// before a miss goes upstream, so an entry another core stored is found first.
#[derive(Debug, Clone)]
pub enum CacheUpdate {
    /// Another worker stored this entry.
    Insert(Arc<Stored>),
    /// Drop these entries (evicted, expired, replaced).
    Remove(Arc<[EntryId]>),
    /// Drop what this matches; answer how many (the admin API waits for every worker).
    Purge {
        /// What to drop.
        purge: Arc<Purge>,
        /// Where to send the count, when someone waits for it.
        reply: Option<Sender<usize>>,
    },
}

/// What a worker tells the control thread about the cache.
#[derive(Debug, Clone)]
pub enum CacheReport {
    /// This worker stored an entry (and told the other workers).
    Stored(Arc<Stored>),
    /// These entries were read since the last report (each once).
    Hits(Vec<EntryId>),
    /// An unsafe request changed a URL: its entries were dropped on every worker.
    Invalidated(Purge),
}

/// Sockets for each worker, bound elsewhere and handed over once: each worker takes
/// its own set (the lock is taken once per worker per reload, never per request).
#[derive(Debug)]
pub struct Handoff {
    per_worker: Vec<Mutex<Vec<std::net::TcpListener>>>,
}

impl Handoff {
    /// Wraps one socket set per worker, in worker order.
    pub fn new(per_worker: Vec<Vec<std::net::TcpListener>>) -> Handoff {
        Handoff {
            per_worker: per_worker.into_iter().map(Mutex::new).collect(),
        }
    }

    /// Worker `id`'s sockets (empty the second time).
    pub fn take(&self, id: usize) -> Vec<std::net::TcpListener> {
        match self.per_worker.get(id) {
            // A poisoned lock means a worker panicked holding it; the process is
            // going down anyway, and the sockets are still valid.
            Some(m) => std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }
}

/// What a worker tells the control thread, which decides, logs each transition once
/// and broadcasts what every worker must apply.
#[derive(Debug, Clone)]
pub enum Report {
    /// This worker marked the server down (and applied it already).
    Down {
        /// The generation the request ran on.
        generation: u64,
        /// Which server.
        server: ServerId,
        /// Until when, and at which step.
        down: MarkDown,
        /// The failure that tipped it.
        reason: &'static str,
    },
    /// A server on probation answered: it is back.
    Recovered {
        /// The generation the request ran on.
        generation: u64,
        /// Which server.
        server: ServerId,
    },
    /// The cache changed or was read.
    Cache(CacheReport),
}

/// Sending side: one sender per worker plus the control thread's. Cheap to clone,
/// usable from any thread.
#[derive(Debug, Clone)]
pub struct Bus {
    senders: Vec<Sender<Update>>,
    cache: Vec<Sender<CacheUpdate>>,
    control: Sender<Report>,
}

/// One worker's receiving side.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Update>,
    /// Cache changes, read apart from the others (see [`CacheUpdate`]), until taken.
    cache: Option<CacheInbox>,
}

/// One worker's receiving side for cache changes.
#[derive(Debug)]
pub struct CacheInbox {
    rx: Receiver<CacheUpdate>,
}

impl CacheInbox {
    /// Takes the next pending change without blocking.
    pub fn try_next(&self) -> Option<CacheUpdate> {
        self.rx.try_recv().ok()
    }
}

impl Bus {
    /// A bus with `workers` inboxes, returned in worker order, and the control
    /// thread's receiver of reports.
    pub fn new(workers: usize) -> (Bus, Vec<Inbox>, Receiver<Report>) {
        let mut senders = Vec::with_capacity(workers);
        let mut cache = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = unbounded();
            let (cache_tx, cache_rx) = unbounded();
            senders.push(tx);
            cache.push(cache_tx);
            inboxes.push(Inbox {
                rx,
                cache: Some(CacheInbox { rx: cache_rx }),
            });
        }
        let (control, reports) = unbounded();
        (
            Bus {
                senders,
                cache,
                control,
            },
            inboxes,
            reports,
        )
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Tells the control thread about a transition this worker saw.
    pub fn report(&self, report: Report) {
        // The control thread lives as long as the proxy; if it is gone we are stopping.
        let _ = self.control.send(report);
    }

    /// Delivers `update` to every worker (including the sender's own).
    pub fn broadcast(&self, update: Update) {
        for tx in &self.senders {
            // A worker that has exited has dropped its inbox; nothing to deliver.
            let _ = tx.send(update.clone());
        }
    }
}

impl Bus {
    /// Delivers a cache change to every worker but `except` (the one it comes from).
    pub fn cache_broadcast(&self, except: Option<usize>, update: CacheUpdate) {
        for (i, tx) in self.cache.iter().enumerate() {
            if Some(i) != except {
                // A worker that has exited has dropped its inbox; nothing to deliver.
                let _ = tx.send(update.clone());
            }
        }
    }
}

impl Inbox {
    /// The cache changes' receiver, for the worker's shard (`None` the second time).
    pub fn take_cache(&mut self) -> Option<CacheInbox> {
        self.cache.take()
    }

    /// Takes the next pending update without blocking.
    pub fn try_next(&self) -> Option<Update> {
        // Empty and disconnected both mean: nothing to apply now.
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_receives_every_update_in_order() {
        let (bus, inboxes, _reports) = Bus::new(3);
        let down = MarkDown {
            until: Instant::now(),
            step: 0,
        };
        let server = crate::upstream::Registry::new().id("g", "127.0.0.1:1".parse().unwrap());
        let other = bus.clone();
        std::thread::spawn(move || {
            other.broadcast(Update::ServerDown {
                generation: 1,
                server,
                down,
            })
        })
        .join()
        .unwrap();
        let deadline = Instant::now();
        bus.broadcast(Update::Drain { deadline });
        for inbox in &inboxes {
            assert!(matches!(
                inbox.try_next(),
                Some(Update::ServerDown { generation: 1, server: s, down: d }) if s == server && d == down
            ));
            assert!(
                matches!(inbox.try_next(), Some(Update::Drain { deadline: d }) if d == deadline)
            );
            assert!(inbox.try_next().is_none());
        }
    }

    #[test]
    fn each_worker_takes_its_own_sockets_once() {
        let l = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handoff = Handoff::new(vec![vec![l(0)], vec![l(1), l(2)]]);
        assert_eq!(handoff.take(1).len(), 2);
        assert_eq!(handoff.take(1).len(), 0, "taken already");
        assert_eq!(handoff.take(0).len(), 1);
        assert_eq!(handoff.take(7).len(), 0);
    }
}

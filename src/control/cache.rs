//! The control thread's part of the response cache: it takes in what workers stored
//! and read, keeps the process's account ([`Store`]: bytes, eviction, expiry) and tells
//! every worker what to drop; it runs purges for the admin API and waits until every
//! worker has applied them, so a purge answered is a purge done.

use super::admin::{Request, Response};
use super::State;
use crate::bus::{CacheReport, CacheUpdate};
use crate::cache::store::{Store, StoreStats};
use crate::cache::{EntryId, Purge};
use crate::metrics::WorkerStats;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a purge waits for every worker to apply it (each does at its next tick).
const PURGE_WAIT: Duration = Duration::from_secs(2);

/// The cache's account, and what it must tell the workers.
#[derive(Debug)]
pub struct Account {
    store: Store,
    /// Ids every worker must drop, sent at the end of the control thread's turn.
    drop: Vec<EntryId>,
}

impl Account {
    /// An empty account bounded to `capacity` bytes.
    pub fn new(capacity: usize) -> Account {
        Account {
            store: Store::new(capacity),
            drop: Vec::new(),
        }
    }

    /// Takes in a worker's report.
    pub fn report(&mut self, report: CacheReport) {
        match report {
            CacheReport::Stored(e) => {
                let dropped = self.store.stored(e);
                self.drop.extend(dropped);
            }
            CacheReport::Hits(ids) => self.store.hits(&ids),
            // The workers dropped the entries already.
            CacheReport::Invalidated(p) => drop(self.store.purge(&p)),
        }
    }

    /// Applies a reload: a new bound, or no cache at all.
    pub fn configure(&mut self, caching: bool, capacity: usize) {
        let dropped = if caching {
            self.store.set_capacity(capacity)
        } else {
            self.store.clear()
        };
        self.drop.extend(dropped);
    }

    /// Drops the entries that can no longer be served at `now` (seconds since the epoch).
    pub fn sweep(&mut self, now: u64) {
        let dropped = self.store.sweep(now);
        self.drop.extend(dropped);
    }

    /// Tells every worker what to drop.
    pub fn flush(&mut self, bus: &crate::bus::Bus) {
        if !self.drop.is_empty() {
            let ids: Arc<[EntryId]> = std::mem::take(&mut self.drop).into();
            bus.cache_broadcast(None, CacheUpdate::Remove(ids));
        }
    }

    /// What it holds and did.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }
}

/// Purges what `purge` matches everywhere and waits until every worker has done it;
/// returns how many entries were removed (the most any one index removed: each holds
/// every entry, so they agree unless a worker had not seen an entry yet).
pub(super) async fn purge(state: &Rc<RefCell<State>>, purge: Purge) -> usize {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (workers, removed) = {
        let s = &mut *state.borrow_mut();
        let removed = s.cache.store.purge(&purge).len();
        s.bus.cache_broadcast(
            None,
            CacheUpdate::Purge {
                purge: Arc::new(purge),
                reply: Some(tx),
            },
        );
        (s.bus.workers(), removed)
    };
    let deadline = Instant::now() + PURGE_WAIT;
    let mut counts = Vec::with_capacity(workers);
    while counts.len() < workers && Instant::now() < deadline {
        counts.extend(rx.try_iter());
        if counts.len() < workers {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    counts.into_iter().max().unwrap_or(0).max(removed)
}

/// `POST /cache/purge?key=URL` (one URL, all its variants) or `?prefix=/path`.
pub(super) async fn handle_purge(state: &Rc<RefCell<State>>, req: &Request) -> Response {
    let param = |name: &str| {
        req.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| super::registry::percent_decode(v))
        })
    };
    let (what, parsed) = match (param("key"), param("prefix")) {
        (Some(k), None) => ("key", Purge::url(&k).map(|p| (p, k))),
        (None, Some(p)) => ("prefix", Purge::prefix(&p).map(|x| (x, p))),
        _ => {
            return Response::error(
                400,
                "give one of ?key=URL (one URL, every variant) or ?prefix=/path",
            )
        }
    };
    let (purge, text) = match parsed {
        Ok(x) => x,
        Err(m) => return Response::error(400, format!("`{what}`: {m}")),
    };
    let removed = self::purge(state, purge).await;
    crate::info!("cache purge through the admin API: {what} {text}: {removed} entries removed");
    Response::json(200, json!({ what: text, "removed": removed }))
}

/// The cache's part of `/status`: the process's account and the workers' counters.
pub(super) fn status_json(s: &State, stats: &[WorkerStats]) -> Value {
    let mut c = crate::cache::Counters::default();
    for w in stats {
        c.add(&w.cache);
    }
    let store = s.cache.stats();
    let responses: serde_json::Map<String, Value> = crate::cache::STATUS_LABELS
        .iter()
        .zip(c.responses)
        .map(|(l, n)| (l.to_string(), json!(n)))
        .collect();
    json!({
        "enabled": s.config.caching(),
        "entries": store.entries,
        "bytes": store.bytes,
        "max_bytes": store.capacity,
        "responses": responses,
        "stored": c.stored,
        "evictions": store.evictions,
        "expired": store.expired,
        "purged": store.purged,
        "coalesced_waits": c.coalesced,
        "background_refreshes": c.refreshes,
        "worker_index_entries": stats.iter().map(|w| w.cache_index.0).collect::<Vec<_>>(),
    })
}

//! The process's account of the cache, kept by the control thread: every entry stored
//! on any worker, their total bytes against `cache.max_bytes`, and the eviction policy
//! (`policy`, S3-FIFO) fed by the workers' batched hit reports. What it evicts, purges
//! or finds dead, every worker drops (told over the bus), so an entry's memory is freed
//! once the last worker lets go of it.
//!
//! Runs on the control thread only; workers never wait for it.

use super::entry::{EntryId, Stored};
use super::policy::Policy;
use super::purge::Purge;
use std::collections::HashMap;
use std::sync::Arc;

/// Counters of what the store did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries held.
    pub entries: usize,
    /// Bytes held (heads, bodies, keys and a fixed overhead per entry).
    pub bytes: usize,
    /// The bound.
    pub capacity: usize,
    /// Entries evicted to stay under the bound.
    pub evictions: u64,
    /// Entries dropped because they could no longer be served.
    pub expired: u64,
    /// Entries removed by purges and invalidations.
    pub purged: u64,
}

/// Every entry in the process, and the policy that bounds them.
#[derive(Debug)]
pub struct Store {
    policy: Policy,
    entries: HashMap<EntryId, Arc<Stored>>,
    /// Entry ids by key hash, to find the copy a newer one of the same variant replaces.
    by_hash: HashMap<u64, Vec<EntryId>>,
    stats: StoreStats,
}

impl Store {
    /// An empty store bounded to `capacity` bytes.
    pub fn new(capacity: usize) -> Store {
        Store {
            policy: Policy::new(capacity),
            entries: HashMap::new(),
            by_hash: HashMap::new(),
            stats: StoreStats::default(),
        }
    }

    /// Changes the bound (a reload); returns the ids to drop.
    pub fn set_capacity(&mut self, capacity: usize) -> Vec<EntryId> {
        let evicted = self.policy.set_capacity(capacity);
        self.stats.evictions += evicted.len() as u64;
        self.forget(&evicted);
        evicted
    }

    /// Takes in an entry a worker stored; returns the ids every worker must drop (a
    /// replaced copy of the same variant, evictions, possibly the entry itself).
    pub fn stored(&mut self, e: Arc<Stored>) -> Vec<EntryId> {
        let mut dropped = Vec::new();
        let same = self.by_hash.get(&e.hash).and_then(|ids| {
            ids.iter()
                .copied()
                .find(|id| self.entries.get(id).is_some_and(|o| o.same_variant(&e)))
        });
        if let Some(old) = same {
            let keep_old = self.entries.get(&old).is_some_and(|o| o.newer_than(&e));
            if keep_old {
                return vec![e.id];
            }
            self.policy.remove(old);
            self.forget(&[old]);
            dropped.push(old);
        }
        let (id, hash, size) = (e.id, e.hash, e.size());
        self.entries.insert(id, e);
        self.by_hash.entry(hash).or_default().push(id);
        let evicted = self.policy.insert(id, hash, size);
        self.stats.evictions += evicted.len() as u64;
        self.forget(&evicted);
        dropped.extend(evicted);
        dropped
    }

    /// Records reads the workers reported.
    pub fn hits(&mut self, ids: &[EntryId]) {
        for &id in ids {
            self.policy.hit(id);
        }
    }

    /// Removes what `purge` matches; returns the ids removed.
    pub fn purge(&mut self, purge: &Purge) -> Vec<EntryId> {
        let ids: Vec<EntryId> = self
            .entries
            .values()
            .filter(|e| purge.matches(e))
            .map(|e| e.id)
            .collect();
        self.stats.purged += ids.len() as u64;
        self.remove(&ids);
        ids
    }

    /// Removes entries past any use at `now` (seconds since the epoch): stale beyond
    /// their stale windows, with no validator to revalidate them by. Entries that have
    /// one stay until evicted: a 304 can make them fresh again.
    pub fn sweep(&mut self, now: u64) -> Vec<EntryId> {
        let ids: Vec<EntryId> = self
            .entries
            .values()
            .filter(|e| !e.has_validator() && e.freshness.servable_until() < now)
            .map(|e| e.id)
            .collect();
        self.stats.expired += ids.len() as u64;
        self.remove(&ids);
        ids
    }

    /// Drops every entry (caching was turned off); returns their ids.
    pub fn clear(&mut self) -> Vec<EntryId> {
        let ids: Vec<EntryId> = self.entries.keys().copied().collect();
        self.remove(&ids);
        ids
    }

    fn remove(&mut self, ids: &[EntryId]) {
        for &id in ids {
            self.policy.remove(id);
        }
        self.forget(ids);
    }

    /// Forgets entries the policy no longer holds.
    fn forget(&mut self, ids: &[EntryId]) {
        for id in ids {
            if let Some(e) = self.entries.remove(id) {
                if let Some(v) = self.by_hash.get_mut(&e.hash) {
                    v.retain(|x| x != id);
                    if v.is_empty() {
                        self.by_hash.remove(&e.hash);
                    }
                }
            }
        }
    }

    /// What it holds and did.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.entries.len(),
            bytes: self.policy.bytes(),
            capacity: self.policy.capacity(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::index::tests::entry;

    #[test]
    fn a_newer_copy_of_a_variant_replaces_the_older_either_way_round() {
        let mut s = Store::new(1 << 20);
        assert!(s.stored(entry("/a", 1, 10, None)).is_empty());
        assert_eq!(s.stored(entry("/a", 2, 11, None)), [1]);
        assert_eq!(s.stored(entry("/a", 3, 9, None)), [3], "older than held");
        assert!(
            s.stored(entry("/a", 4, 11, Some("en"))).is_empty(),
            "another variant"
        );
        assert_eq!(s.stats().entries, 2);
    }

    #[test]
    fn the_byte_bound_holds_and_evictions_are_counted() {
        let size = entry("/x", 0, 0, None).size();
        let mut s = Store::new(10 * size);
        let mut dropped = 0;
        for i in 0..100u64 {
            dropped += s.stored(entry(&format!("/k{i}"), i, 1, None)).len();
            assert!(s.stats().bytes <= 10 * size);
        }
        assert_eq!(s.stats().entries + dropped, 100);
        assert_eq!(s.stats().evictions, dropped as u64);
        let held = s.stats().entries;
        assert_eq!(
            s.set_capacity(0).len(),
            held,
            "a zero bound drops everything"
        );
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn purges_and_sweeps_remove_what_they_match() {
        let mut s = Store::new(1 << 20);
        s.stored(entry("/a/1", 1, 100, None));
        s.stored(entry("/a/2", 2, 100, None));
        s.stored(entry("/b", 3, 100, None));
        assert_eq!(s.purge(&Purge::prefix("/a/").unwrap()).len(), 2);
        assert_eq!(s.stats().purged, 2);
        assert!(s.sweep(150).is_empty(), "fresh until 160");
        assert_eq!(s.sweep(161), [3]);
        assert_eq!(s.stats().entries, 0);
        assert_eq!(s.stats().bytes, 0);
    }
}

//! One worker's index of the stored responses: every worker holds one, all alike, each
//! pointing at the same immutable entries (`Arc<Stored>`, stored once in the process).
//!
//! `!Send`: only its worker touches it, so a lookup takes no lock and writes nothing
//! another core reads. Entries arrive from this worker's fetches and, over the bus, from
//! the other workers'; they leave when the control thread evicts them, a purge matches
//! them, or a newer copy of the same variant replaces them.

use super::entry::{EntryId, Stored};
use super::purge::Purge;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::Arc;

/// A worker's handle on one entry.
#[derive(Debug)]
pub struct Slot {
    /// The entry.
    pub stored: Arc<Stored>,
    /// Read since the last hit report to the control thread.
    touched: Cell<bool>,
    /// A background refresh of it is running on this worker.
    pub refreshing: Cell<bool>,
}

/// Keys are already well-mixed hashes (`request::hash_key`): use them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Entries by key hash; a key has one slot per stored variant.
#[derive(Debug, Default)]
pub struct Index {
    map: RefCell<HashMap<u64, Vec<Rc<Slot>>, BuildHasherDefault<Prehashed>>>,
    entries: Cell<usize>,
    bytes: Cell<usize>,
    /// Entries read since the last report, each once.
    touched: RefCell<Vec<Rc<Slot>>>,
}

impl Index {
    /// The newest entry for `key` whose variant `vary_ok` accepts.
    pub fn lookup(
        &self,
        hash: u64,
        key: &[u8],
        vary_ok: impl Fn(&Stored) -> bool,
    ) -> Option<Rc<Slot>> {
        let map = self.map.borrow();
        map.get(&hash)?
            .iter()
            .filter(|s| *s.stored.key == *key && vary_ok(&s.stored))
            .max_by_key(|s| (s.stored.freshness.response_time, s.stored.id))
            .cloned()
    }

    /// Notes that `slot` was read, for the next hit report.
    pub fn touch(&self, slot: &Rc<Slot>) {
        if !slot.touched.replace(true) {
            self.touched.borrow_mut().push(slot.clone());
        }
    }

    /// The ids read since the last call (each once).
    pub fn take_touched(&self) -> Vec<EntryId> {
        // Drained, not taken: the list keeps its capacity for the next second's hits.
        self.touched
            .borrow_mut()
            .drain(..)
            .map(|s| {
                s.touched.set(false);
                s.stored.id
            })
            .collect()
    }

    /// Adds `stored`, replacing an older copy of the same variant; returns false (and
    /// keeps what it has) when it holds a newer one already.
    pub fn insert(&self, stored: Arc<Stored>) -> bool {
        let mut map = self.map.borrow_mut();
        let slots = map.entry(stored.hash).or_default();
        if let Some(i) = slots.iter().position(|s| s.stored.same_variant(&stored)) {
            if !stored.newer_than(&slots[i].stored) {
                return false;
            }
            let old = slots.swap_remove(i);
            self.forget(&old.stored);
        }
        self.entries.set(self.entries.get() + 1);
        self.bytes.set(self.bytes.get() + stored.size());
        slots.push(Rc::new(Slot {
            stored,
            touched: Cell::new(false),
            refreshing: Cell::new(false),
        }));
        true
    }

    /// Removes the entries with these ids (those it holds).
    pub fn remove(&self, ids: &[EntryId]) {
        if ids.is_empty() {
            return;
        }
        let wanted: std::collections::HashSet<EntryId> = ids.iter().copied().collect();
        self.retain(|s| !wanted.contains(&s.id));
    }

    /// Removes the entry with id `id` if it holds it (`hash`: its key's hash).
    pub fn remove_one(&self, hash: u64, id: EntryId) {
        let mut map = self.map.borrow_mut();
        if let Some(slots) = map.get_mut(&hash) {
            if let Some(i) = slots.iter().position(|s| s.stored.id == id) {
                let old = slots.swap_remove(i);
                self.forget(&old.stored);
            }
            if slots.is_empty() {
                map.remove(&hash);
            }
        }
    }

    /// Removes every entry `purge` matches; returns how many.
    pub fn purge(&self, purge: &Purge) -> usize {
        let before = self.entries.get();
        self.retain(|s| !purge.matches(s));
        before - self.entries.get()
    }

    /// Keeps the entries `keep` accepts.
    fn retain(&self, keep: impl Fn(&Stored) -> bool) {
        let mut map = self.map.borrow_mut();
        map.retain(|_, slots| {
            slots.retain(|s| {
                let k = keep(&s.stored);
                if !k {
                    self.forget(&s.stored);
                }
                k
            });
            !slots.is_empty()
        });
    }

    fn forget(&self, stored: &Stored) {
        self.entries.set(self.entries.get().saturating_sub(1));
        self.bytes
            .set(self.bytes.get().saturating_sub(stored.size()));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.get()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the entries it holds (each counted once per index).
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::entry::{Freshness, VaryField};
    use bytes::Bytes;

    /// A stored entry for tests: `key`, `id`, received at `time`, varying on `lang`.
    pub(crate) fn entry(key: &str, id: EntryId, time: u64, lang: Option<&str>) -> Arc<Stored> {
        Arc::new(Stored {
            id,
            hash: crate::cache::request::hash_key(key.as_bytes()),
            key: key.as_bytes().into(),
            host: "example.com".into(),
            target: key.into(),
            vary: lang
                .map(|l| {
                    vec![VaryField {
                        name: "accept-language".into(),
                        value: Some(l.as_bytes().into()),
                    }]
                })
                .unwrap_or_default()
                .into_boxed_slice(),
            status: 200,
            head: b"HTTP/1.1 200 OK\r\n"[..].into(),
            body: Bytes::from_static(b"body"),
            etag: None,
            last_modified: None,
            last_modified_raw: None,
            freshness: Freshness {
                response_time: time,
                lifetime: 60,
                ..Freshness::default()
            },
            shared_with_auth: false,
        })
    }

    fn find(ix: &Index, key: &str, lang: Option<&str>) -> Option<EntryId> {
        let e = entry(key, 0, 0, lang);
        ix.lookup(e.hash, key.as_bytes(), |s| s.vary == e.vary)
            .map(|s| s.stored.id)
    }

    #[test]
    fn variants_live_side_by_side_and_a_newer_copy_replaces_an_older_one() {
        let ix = Index::default();
        assert!(ix.insert(entry("/a", 1, 10, Some("en"))));
        assert!(ix.insert(entry("/a", 2, 10, Some("fr"))));
        assert_eq!(find(&ix, "/a", Some("en")), Some(1));
        assert_eq!(find(&ix, "/a", Some("fr")), Some(2));
        assert_eq!(find(&ix, "/a", Some("de")), None);
        assert_eq!(find(&ix, "/b", Some("en")), None);
        assert!(ix.insert(entry("/a", 3, 11, Some("en"))));
        assert!(
            !ix.insert(entry("/a", 4, 9, Some("en"))),
            "older than what is held"
        );
        assert_eq!(find(&ix, "/a", Some("en")), Some(3));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.bytes(), 2 * entry("/a", 0, 0, Some("en")).size());
    }

    #[test]
    fn removals_and_purges_keep_the_counts() {
        let ix = Index::default();
        for (i, k) in ["/a", "/b/1", "/b/2", "/c"].iter().enumerate() {
            ix.insert(entry(k, i as u64, 1, None));
        }
        ix.remove(&[0, 99]);
        assert_eq!(find(&ix, "/a", None), None);
        let n = ix.purge(&Purge::prefix("/b").unwrap());
        assert_eq!(n, 2);
        assert_eq!(ix.len(), 1);
        let c = entry("/c", 3, 1, None);
        ix.remove_one(c.hash, 3);
        assert!(ix.is_empty());
        assert_eq!(ix.bytes(), 0);
    }

    #[test]
    fn each_read_entry_is_reported_once_per_report() {
        let ix = Index::default();
        ix.insert(entry("/a", 1, 1, None));
        let e = entry("/a", 0, 0, None);
        for _ in 0..3 {
            let s = ix.lookup(e.hash, b"/a", |_| true).unwrap();
            ix.touch(&s);
        }
        assert_eq!(ix.take_touched(), [1]);
        assert!(ix.take_touched().is_empty());
        let s = ix.lookup(e.hash, b"/a", |_| true).unwrap();
        ix.touch(&s);
        assert_eq!(ix.take_touched(), [1]);
    }
}

//! `ServerId`: a server's identity for the life of the process, handed out by the
//! `Registry` the control thread owns and keyed by (group name, address).
//!
//! Per-worker state (health, load, pools) and bus messages are keyed by id, never by a
//! position in a config: a reload that reorders, adds or removes servers leaves every
//! kept server its id, and an id is never given to another (group, address).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

/// A server's stable id (dense from 0, so per-worker tables can be `Vec`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(u32);

impl ServerId {
    /// The id as a table index.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The raw number (stable for the process; shown in status output).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Hands out ids; one per process, owned by whoever builds snapshots.
#[derive(Debug, Default)]
pub struct Registry {
    ids: HashMap<(String, SocketAddr), ServerId>,
    /// The key of each id, by index.
    keys: Vec<(String, SocketAddr)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The id of `addr` in group `group`: the one it had before, or the next new one.
    pub fn id(&mut self, group: &str, addr: SocketAddr) -> ServerId {
        if let Some(&id) = self.ids.get(&(group.to_string(), addr)) {
            return id;
        }
        let id = ServerId(self.keys.len() as u32);
        self.ids.insert((group.to_string(), addr), id);
        self.keys.push((group.to_string(), addr));
        id
    }

    /// The (group, address) `id` was given for.
    pub fn key(&self, id: ServerId) -> Option<(&str, SocketAddr)> {
        self.keys.get(id.index()).map(|(g, a)| (g.as_str(), *a))
    }

    /// Ids handed out so far (every id is below this).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True before the first id.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_group_and_address_and_never_reused() {
        let mut r = Registry::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let web_a = r.id("web", a);
        let web_b = r.id("web", b);
        let api_a = r.id("api", a);
        assert_ne!(web_a, web_b);
        assert_ne!(
            web_a, api_a,
            "the same address in another group is another server"
        );
        assert_eq!(r.id("web", a), web_a, "asked again, same id");
        assert_eq!(r.len(), 3);
        assert_eq!(web_a.index(), 0);
        assert_eq!(r.key(api_a), Some(("api", a)));
        assert_eq!(r.key(ServerId(9)), None);
    }
}

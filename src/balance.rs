//! Per-worker server selection within an upstream group.
//!
//! Each worker has its own cursor per group, started at a worker-specific offset so
//! cores do not move in lockstep; nothing here is shared between cores.

use crate::config::{Balance, Config, ServerId, Upstream};
use std::cell::Cell;

/// Servers already tried for one request, by position in the group (positions past
/// 63 are not tracked; the advancing cursor still spreads retries over them).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u64);

impl Tried {
    /// Records position `pos` as tried.
    pub fn add(&mut self, pos: usize) {
        if pos < 64 {
            self.0 |= 1 << pos;
        }
    }

    /// True when position `pos` was tried already.
    pub fn contains(self, pos: usize) -> bool {
        pos < 64 && self.0 & (1 << pos) != 0
    }
}

/// One worker's balancing state for every upstream group.
#[derive(Debug)]
pub struct Balancer {
    cursors: Vec<Cell<usize>>,
}

impl Balancer {
    /// Cursors for `worker`, each group starting at a different offset per worker.
    pub fn new(config: &Config, worker: usize) -> Balancer {
        let cursors = config
            .upstreams
            .iter()
            .map(|u| Cell::new(worker % u.servers.len()))
            .collect();
        Balancer { cursors }
    }

    /// Picks a server of `group` (index `upstream`) that is usable and not yet tried.
    ///
    /// Returns the server's position in the group and its id, or `None` when no
    /// candidate is left.
    pub fn pick(
        &self,
        upstream: usize,
        group: &Upstream,
        tried: Tried,
        usable: impl Fn(ServerId) -> bool,
    ) -> Option<(usize, ServerId)> {
        match group.balance {
            Balance::RoundRobin => {
                let n = group.servers.len();
                let cursor = &self.cursors[upstream];
                let start = cursor.get();
                for k in 0..n {
                    let pos = (start + k) % n;
                    let id = group.servers[pos];
                    if !tried.contains(pos) && usable(id) {
                        // Advance past the pick so a down server's share is spread evenly.
                        cursor.set((pos + 1) % n);
                        return Some((pos, id));
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[upstreams.a]\nservers=[\"127.0.0.1:1\",\"127.0.0.1:2\",\"127.0.0.1:3\"]\n[[routes]]\nupstream=\"a\"\n",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn round_robin_cycles_from_the_worker_offset() {
        let c = config();
        let b = Balancer::new(&c, 1);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                b.pick(0, &c.upstreams[0], Tried::default(), |_| true)
                    .unwrap()
                    .1
            })
            .collect();
        assert_eq!(picks, [1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn round_robin_spreads_a_down_servers_share() {
        let c = config();
        let b = Balancer::new(&c, 0);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                b.pick(0, &c.upstreams[0], Tried::default(), |id| id != 1)
                    .unwrap()
                    .1
            })
            .collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn tried_servers_are_skipped_and_exhaustion_is_reported() {
        let c = config();
        let b = Balancer::new(&c, 0);
        let mut tried = Tried::default();
        for _ in 0..3 {
            let (pos, _) = b.pick(0, &c.upstreams[0], tried, |_| true).unwrap();
            assert!(!tried.contains(pos));
            tried.add(pos);
        }
        assert_eq!(b.pick(0, &c.upstreams[0], tried, |_| true), None);
    }
}

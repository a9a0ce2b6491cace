//! Per-worker view of which servers may be picked (passive health).
//!
//! A worker counts consecutive connect failures per server; at `max_fails` it marks
//! the server down for `fail_timeout` and broadcasts that, so every core skips it.
//! All state is per worker (`Cell`s, no atomics); only the bus crosses cores.

use crate::config::{Config, ServerId};
use std::cell::Cell;
use std::time::Instant;

/// One worker's health table, indexed by `ServerId`.
#[derive(Debug)]
pub struct Health {
    down_until: Vec<Cell<Option<Instant>>>,
    fails: Vec<Cell<u32>>,
}

impl Health {
    /// Every server starts up.
    pub fn new(config: &Config) -> Health {
        let n = config.servers.len();
        Health {
            down_until: (0..n).map(|_| Cell::new(None)).collect(),
            fails: (0..n).map(|_| Cell::new(0)).collect(),
        }
    }

    /// True when `server` may be picked at `now`.
    pub fn is_up(&self, server: ServerId, now: Instant) -> bool {
        match self.down_until[server].get() {
            None => true,
            Some(t) if now >= t => {
                self.down_until[server].set(None);
                true
            }
            Some(_) => false,
        }
    }

    /// Records a failure; returns true when it crosses `max_fails` (the caller broadcasts).
    pub fn record_failure(&self, server: ServerId, max_fails: u32) -> bool {
        let n = self.fails[server].get().saturating_add(1);
        self.fails[server].set(n);
        if n >= max_fails {
            self.fails[server].set(0);
            true
        } else {
            false
        }
    }

    /// Records a success, clearing the failure streak.
    pub fn record_success(&self, server: ServerId) {
        if self.fails[server].get() != 0 {
            self.fails[server].set(0);
        }
    }

    /// Applies a mark-down received from the bus (later deadlines win).
    pub fn mark_down(&self, server: ServerId, until: Instant) {
        if let Some(cell) = self.down_until.get(server) {
            if cell.get().is_none_or(|t| t < until) {
                cell.set(Some(until));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn health() -> Health {
        let c = Config::parse("[upstreams.a]\nservers=[\"127.0.0.1:1\",\"127.0.0.1:2\"]\n[[routes]]\nupstream=\"a\"\n", "t").unwrap();
        Health::new(&c)
    }

    #[test]
    fn a_server_goes_down_after_max_fails_and_comes_back_after_the_timeout() {
        let h = health();
        let now = Instant::now();
        assert!(!h.record_failure(0, 2));
        h.record_success(0);
        assert!(!h.record_failure(0, 2), "success resets the streak");
        assert!(h.record_failure(0, 2));
        h.mark_down(0, now + Duration::from_secs(10));
        assert!(!h.is_up(0, now));
        assert!(h.is_up(1, now));
        assert!(h.is_up(0, now + Duration::from_secs(10)));
    }
}

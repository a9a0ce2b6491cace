//! Each worker's view of which servers may be picked.
//!
//! Two sources decide it. Active checks run once per process on the control thread
//! (`control`), which broadcasts every up/down change. Passive checks run on every
//! worker: failures within `fail_window` count toward `max_fails`, which marks the
//! server down for a back-off that grows step by step (`backoff`); the worker applies
//! that at once and reports it to the control thread, which logs it and broadcasts it so
//! one core's discovery spares the others. When the back-off ends, a server without
//! active checks is on probation: one failure sends it straight back down with the next
//! step, one success clears it. All state here is `Cell`s owned by one worker.

use crate::config::{Config, ServerId, Upstream};
use std::cell::Cell;
use std::time::Instant;

/// A passive mark-down decided by a worker, to apply, report and broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkDown {
    /// Until when the server is skipped.
    pub until: Instant,
    /// Which back-off step this was (0-based): the next mark-down uses the next one.
    pub step: u8,
}

#[derive(Debug)]
struct ServerHealth {
    /// The active checker's verdict (always true without active checks).
    active_up: Cell<bool>,
    has_active: bool,
    down_until: Cell<Option<Instant>>,
    probation: Cell<bool>,
    /// The back-off step the next mark-down uses.
    step: Cell<u8>,
    fails: Cell<u32>,
    window_start: Cell<Option<Instant>>,
}

/// One worker's health table, indexed by `ServerId`.
#[derive(Debug)]
pub struct Health {
    servers: Vec<ServerHealth>,
}

impl Health {
    /// Servers start up, or down when their group's check says `start = "down"`.
    pub fn new(config: &Config) -> Health {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let check = config.upstreams[s.upstream].health.as_ref();
                ServerHealth {
                    active_up: Cell::new(!check.is_some_and(|c| c.start_down)),
                    has_active: check.is_some(),
                    down_until: Cell::new(None),
                    probation: Cell::new(false),
                    step: Cell::new(0),
                    fails: Cell::new(0),
                    window_start: Cell::new(None),
                }
            })
            .collect();
        Health { servers }
    }

    /// True when `server` may be picked at `now`.
    pub fn is_up(&self, server: ServerId, now: Instant) -> bool {
        let s = &self.servers[server];
        if !s.active_up.get() {
            return false;
        }
        match s.down_until.get() {
            None => true,
            Some(t) if now >= t => {
                s.down_until.set(None);
                // With active checks the checker vouches for it; otherwise one request probes.
                s.probation.set(!s.has_active);
                true
            }
            Some(_) => false,
        }
    }

    /// Counts a passive failure; returns the mark-down when it crosses `max_fails`
    /// within `fail_window`, or at once for a server on probation.
    pub fn record_failure(
        &self,
        server: ServerId,
        group: &Upstream,
        now: Instant,
    ) -> Option<MarkDown> {
        let s = &self.servers[server];
        if s.down_until.get().is_some_and(|t| now < t) {
            // Already resting: requests that were in flight when it went down.
            return None;
        }
        if !s.probation.get() {
            let fresh = s
                .window_start
                .get()
                .is_none_or(|w| now.saturating_duration_since(w) > group.fail_window);
            if fresh {
                s.window_start.set(Some(now));
                s.fails.set(0);
            }
            s.fails.set(s.fails.get() + 1);
            if s.fails.get() < group.max_fails {
                return None;
            }
        }
        let step = s.step.get();
        // Validation guarantees at least one back-off step.
        let rest = group.backoff[usize::from(step).min(group.backoff.len() - 1)];
        let down = MarkDown {
            until: now + rest,
            step,
        };
        self.apply_down(server, down);
        Some(down)
    }

    /// Records a success; returns true when it ends a probation (the server is back).
    pub fn record_success(&self, server: ServerId) -> bool {
        let s = &self.servers[server];
        if s.fails.get() != 0 {
            s.fails.set(0);
            s.window_start.set(None);
        }
        if s.probation.get() {
            s.probation.set(false);
            s.step.set(0);
            return true;
        }
        false
    }

    /// Applies a mark-down (this worker's or a broadcast one); later deadlines win.
    pub fn apply_down(&self, server: ServerId, down: MarkDown) {
        let Some(s) = self.servers.get(server) else {
            return;
        };
        if s.down_until.get().is_none_or(|t| t < down.until) {
            s.down_until.set(Some(down.until));
        }
        s.step.set(s.step.get().max(down.step.saturating_add(1)));
        s.probation.set(false);
        s.fails.set(0);
        s.window_start.set(None);
    }

    /// Applies the active checker's verdict; returns true when the server came back up.
    pub fn apply_active(&self, server: ServerId, up: bool) -> bool {
        let Some(s) = self.servers.get(server) else {
            return false;
        };
        let was = s.active_up.replace(up);
        if up && !was {
            s.down_until.set(None);
            s.probation.set(false);
            s.step.set(0);
        }
        up && !was
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn setup(extra: &str) -> (Config, Health) {
        let c = Config::parse(
            &format!("[upstreams.a]\nservers=[\"127.0.0.1:1\",\"127.0.0.1:2\"]\n{extra}\n[[routes]]\nupstream=\"a\"\n"),
            "t",
        )
        .unwrap();
        let h = Health::new(&c);
        (c, h)
    }

    #[test]
    fn max_fails_within_the_window_marks_down_with_growing_back_off() {
        let (c, h) = setup("max_fails = 2\nfail_window = \"10s\"\nbackoff = [\"1s\", \"5s\"]");
        let g = &c.upstreams[0];
        let t0 = Instant::now();
        assert_eq!(h.record_failure(0, g, t0), None);
        assert_eq!(
            h.record_failure(0, g, t0 + Duration::from_secs(11)),
            None,
            "the first failure fell out of the window"
        );
        let down = h
            .record_failure(0, g, t0 + Duration::from_secs(12))
            .unwrap();
        let t1 = t0 + Duration::from_secs(12);
        assert_eq!(
            down,
            MarkDown {
                until: t1 + Duration::from_secs(1),
                step: 0
            }
        );
        assert!(!h.is_up(0, t1));
        assert!(h.is_up(1, t1));
        // Back on probation: one failure is enough, and it rests longer.
        let t2 = t1 + Duration::from_secs(1);
        assert!(h.is_up(0, t2));
        let down = h.record_failure(0, g, t2).unwrap();
        assert_eq!(down.until, t2 + Duration::from_secs(5));
        // The last step repeats; a success on probation resets the steps.
        let t3 = t2 + Duration::from_secs(5);
        assert!(h.is_up(0, t3));
        assert_eq!(
            h.record_failure(0, g, t3).unwrap().until,
            t3 + Duration::from_secs(5)
        );
        let t4 = t3 + Duration::from_secs(5);
        assert!(h.is_up(0, t4));
        assert!(h.record_success(0), "probation ends");
        assert!(!h.record_success(0));
        assert_eq!(h.record_failure(0, g, t4), None, "max_fails counts again");
    }

    #[test]
    fn active_verdicts_override_and_start_down_needs_a_pass() {
        let (_, h) = setup("[upstreams.a.health]\nstart = \"down\"");
        let now = Instant::now();
        assert!(!h.is_up(0, now));
        assert!(h.apply_active(0, true));
        assert!(h.is_up(0, now));
        assert!(!h.apply_active(0, true), "no change");
        h.apply_active(0, false);
        assert!(!h.is_up(0, now));
    }

    #[test]
    fn broadcast_mark_downs_advance_the_step() {
        let (c, h) = setup("backoff = [\"1s\", \"5s\"]");
        let now = Instant::now();
        h.apply_down(
            0,
            MarkDown {
                until: now + Duration::from_secs(1),
                step: 0,
            },
        );
        let later = now + Duration::from_secs(2);
        assert!(h.is_up(0, later));
        let down = h.record_failure(0, &c.upstreams[0], later).unwrap();
        assert_eq!(down.step, 1);
    }
}

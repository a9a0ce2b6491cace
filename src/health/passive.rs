//! One worker's view of whether one server may be picked.
//!
//! Two sources decide it. Active checks run once per process on the control thread,
//! which broadcasts every verdict change. Passive checks run on every worker: failures
//! within `fail_window` count toward `max_fails`, which marks the server down for a
//! back-off that grows step by step (`backoff`); the worker applies that at once and
//! reports it to the control thread, which logs it and broadcasts it so one core's
//! discovery spares the others. When the back-off ends, a server without active checks
//! is on probation: one request at a time probes it; a failure sends it straight back
//! down with the next step, a success clears it. All state here is `Cell`s owned by one
//! worker.

use crate::config::Upstream;
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

/// One server's health as one worker applies it.
#[derive(Debug)]
pub struct Passive {
    /// The active checker's verdict (always true without active checks).
    active_up: Cell<bool>,
    /// The server's group has active checks (it may change on reload).
    has_active: Cell<bool>,
    down_until: Cell<Option<Instant>>,
    /// The back-off ended without an active check to vouch: the next request probes.
    probation: Cell<bool>,
    /// A probe is in flight: other requests skip the server until it ends.
    probing: Cell<bool>,
    /// The back-off step the next mark-down uses.
    step: Cell<u8>,
    fails: Cell<u32>,
    window_start: Cell<Option<Instant>>,
    /// Marked down by an operator (the admin API): skipped whatever the checks say.
    manual_down: Cell<bool>,
}

impl Passive {
    /// A server's state when it joins: down when active checks say `start = "down"`.
    pub fn new(active_up: bool, has_active: bool) -> Passive {
        Passive {
            active_up: Cell::new(active_up),
            has_active: Cell::new(has_active),
            down_until: Cell::new(None),
            probation: Cell::new(false),
            probing: Cell::new(false),
            step: Cell::new(0),
            fails: Cell::new(0),
            window_start: Cell::new(None),
            manual_down: Cell::new(false),
        }
    }

    /// An operator marked the server down (`true`) or lifted that (`false`).
    pub fn set_manual_down(&self, down: bool) {
        self.manual_down.set(down);
    }

    /// True when the server may be picked at `now`: up, or on probation with no probe
    /// in flight (the caller then starts one with [`Passive::start_probe`]).
    pub fn usable(&self, now: Instant) -> bool {
        if !self.active_up.get() || self.manual_down.get() {
            return false;
        }
        match self.down_until.get() {
            None => !self.probing.get(),
            Some(t) if now >= t => {
                self.down_until.set(None);
                // With active checks the checker vouches for it; otherwise one request probes.
                self.probation.set(!self.has_active.get());
                true
            }
            Some(_) => false,
        }
    }

    /// A request was sent to the server: if it is on probation, this request is the
    /// probe and others wait for its result. Returns whether it is the probe.
    pub fn start_probe(&self) -> bool {
        let probe = self.probation.get() && !self.probing.get();
        if probe {
            self.probing.set(true);
        }
        probe
    }

    /// The probe ended without a verdict (the client went away): let the next request
    /// probe instead.
    pub fn end_probe(&self) {
        self.probing.set(false);
    }

    /// True while the server is on probation (no verdict since its back-off ended).
    pub fn on_probation(&self) -> bool {
        self.probation.get()
    }

    /// Counts a passive failure; returns the mark-down when it crosses `max_fails`
    /// within `fail_window`, or at once for a server on probation.
    pub fn record_failure(&self, group: &Upstream, now: Instant) -> Option<MarkDown> {
        self.probing.set(false);
        if self.down_until.get().is_some_and(|t| now < t) {
            // Already resting: requests that were in flight when it went down.
            return None;
        }
        if !self.probation.get() {
            let fresh = self
                .window_start
                .get()
                .is_none_or(|w| now.saturating_duration_since(w) > group.fail_window);
            if fresh {
                self.window_start.set(Some(now));
                self.fails.set(0);
            }
            self.fails.set(self.fails.get() + 1);
            if self.fails.get() < group.max_fails {
                return None;
            }
        }
        let step = self.step.get();
        // Validation guarantees at least one back-off step.
        let rest = group.backoff[usize::from(step).min(group.backoff.len() - 1)];
        let down = MarkDown {
            until: now + rest,
            step,
        };
        self.apply_down(down);
        Some(down)
    }

    /// Records a success; returns true when it ends a probation (the server is back).
    pub fn record_success(&self) -> bool {
        self.probing.set(false);
        if self.fails.get() != 0 {
            self.fails.set(0);
            self.window_start.set(None);
        }
        if self.probation.get() {
            self.probation.set(false);
            self.step.set(0);
            return true;
        }
        false
    }

    /// Applies a mark-down (this worker's or a broadcast one); later deadlines win.
    pub fn apply_down(&self, down: MarkDown) {
        if self.down_until.get().is_none_or(|t| t < down.until) {
            self.down_until.set(Some(down.until));
        }
        self.step
            .set(self.step.get().max(down.step.saturating_add(1)));
        self.probation.set(false);
        self.fails.set(0);
        self.window_start.set(None);
    }

    /// Applies the active checker's verdict; returns true when the server came back up.
    pub fn apply_active(&self, up: bool) -> bool {
        let was = self.active_up.replace(up);
        if up && !was {
            self.down_until.set(None);
            self.probation.set(false);
            self.step.set(0);
        }
        up && !was
    }

    /// A reload gave or took the group's active checks. Without checks nothing vouches
    /// against the server, so it counts as up (passive checks still apply).
    pub fn set_has_active(&self, has_active: bool) {
        self.has_active.set(has_active);
        if !has_active {
            self.active_up.set(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn group(extra: &str) -> Config {
        Config::parse(
            &format!("[upstreams.a]\nservers=[\"127.0.0.1:1\",\"127.0.0.1:2\"]\n{extra}\n[[routes]]\nupstream=\"a\"\n"),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn max_fails_within_the_window_marks_down_with_growing_back_off() {
        let c = group("max_fails = 2\nfail_window = \"10s\"\nbackoff = [\"1s\", \"5s\"]");
        let g = &c.upstreams[0];
        let (h, other) = (Passive::new(true, false), Passive::new(true, false));
        let t0 = Instant::now();
        assert_eq!(h.record_failure(g, t0), None);
        assert_eq!(
            h.record_failure(g, t0 + Duration::from_secs(11)),
            None,
            "the first failure fell out of the window"
        );
        let t1 = t0 + Duration::from_secs(12);
        let down = h.record_failure(g, t1).unwrap();
        assert_eq!(
            down,
            MarkDown {
                until: t1 + Duration::from_secs(1),
                step: 0
            }
        );
        assert!(!h.usable(t1));
        assert!(other.usable(t1));
        // Back on probation: one failure is enough, and it rests longer.
        let t2 = t1 + Duration::from_secs(1);
        assert!(h.usable(t2));
        assert!(h.start_probe());
        let down = h.record_failure(g, t2).unwrap();
        assert_eq!(down.until, t2 + Duration::from_secs(5));
        // The last step repeats; a success on probation resets the steps.
        let t3 = t2 + Duration::from_secs(5);
        assert!(h.usable(t3));
        assert_eq!(
            h.record_failure(g, t3).unwrap().until,
            t3 + Duration::from_secs(5)
        );
        let t4 = t3 + Duration::from_secs(5);
        assert!(h.usable(t4));
        assert!(h.record_success(), "probation ends");
        assert!(!h.record_success());
        assert_eq!(h.record_failure(g, t4), None, "max_fails counts again");
    }

    #[test]
    fn probation_admits_one_probe_at_a_time() {
        let c = group("backoff = [\"1s\"]");
        let h = Passive::new(true, false);
        let t0 = Instant::now();
        h.record_failure(&c.upstreams[0], t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        assert!(h.usable(t1));
        assert!(h.start_probe(), "the first request probes");
        assert!(!h.usable(t1), "the others wait for its result");
        assert!(!h.start_probe());
        h.end_probe();
        assert!(
            h.usable(t1),
            "a probe that ended without a result frees the slot"
        );
        assert!(h.start_probe());
        assert!(h.record_success());
        assert!(h.usable(t1) && !h.start_probe(), "back up: no more probes");
    }

    #[test]
    fn active_verdicts_override_and_start_down_needs_a_pass() {
        let h = Passive::new(false, true);
        let now = Instant::now();
        assert!(!h.usable(now));
        assert!(h.apply_active(true));
        assert!(h.usable(now));
        assert!(!h.apply_active(true), "no change");
        h.apply_active(false);
        assert!(!h.usable(now));
        h.set_has_active(false);
        assert!(
            h.usable(now),
            "checks removed by a reload: nothing vouches against it"
        );
    }

    #[test]
    fn broadcast_mark_downs_advance_the_step() {
        let c = group("backoff = [\"1s\", \"5s\"]");
        let h = Passive::new(true, false);
        let now = Instant::now();
        h.apply_down(MarkDown {
            until: now + Duration::from_secs(1),
            step: 0,
        });
        let later = now + Duration::from_secs(2);
        assert!(h.usable(later));
        let down = h.record_failure(&c.upstreams[0], later).unwrap();
        assert_eq!(down.step, 1);
    }
}

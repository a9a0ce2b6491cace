//! One state machine per server, owned by the control thread: every transition of a
//! server (up, down, probation) is decided here, once, whatever reported it: passive
//! mark-downs from any worker, recoveries after a probe, active check results, and the
//! end of a back-off. Each call says what to log (at most one line per transition) and
//! what to broadcast to the workers. Pure: the clock is passed in, so it is unit-tested
//! without threads.

use super::{MarkDown, Verdict};
use crate::config::HealthCheck;
use std::time::Instant;

/// A server's state as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Takes traffic.
    Up,
    /// Takes no traffic.
    Down(Cause),
    /// Its passive back-off ended and it has no active checks: one request at a time
    /// (per worker) probes it.
    Probation,
}

/// Why a server is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Passive checks marked it down until then, at this back-off step (1-based).
    Passive {
        /// End of the rest.
        until: Instant,
        /// 1-based back-off step.
        step: u8,
        /// The failure that tipped it.
        reason: &'static str,
    },
    /// Its active checks fail; the last failure.
    Active(String),
    /// `start = "down"`: no check has passed yet.
    NotChecked,
    /// An operator marked it down through the admin API.
    Manual,
}

impl State {
    /// A word for logs and status: `up`, `down` or `probation`.
    pub fn word(&self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down(_) => "down",
            State::Probation => "probation",
        }
    }
}

/// What the workers must apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// Skip the server until the mark-down ends.
    Down(MarkDown),
    /// The active verdict changed.
    Active(bool),
    /// An operator marked it down (`true`) or lifted that (`false`).
    Manual(bool),
}

/// What one event changed: a log line (the transition, without the server's name)
/// and what to broadcast. Either may be absent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// The transitions to log, in order (at most two: a back-off that ended, then the event).
    pub lines: Vec<String>,
    /// What every worker must apply.
    pub broadcast: Option<Broadcast>,
}

/// One server's health, as the control thread tracks it.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    since: Instant,
    /// The active checks' threshold state; `None` when the group has no checks.
    verdict: Option<Verdict>,
    /// The last passive mark-down's end, while it lasts.
    passive_until: Option<Instant>,
    /// An operator marked it down: shown as down whatever the checks say.
    manual: bool,
}

impl Machine {
    /// A new server: up, or down until checked when its checks say `start = "down"`.
    pub fn new(check: Option<&HealthCheck>, now: Instant) -> Machine {
        let start_down = check.is_some_and(|c| c.start_down);
        Machine {
            state: if start_down {
                State::Down(Cause::NotChecked)
            } else {
                State::Up
            },
            since: now,
            verdict: check.map(|_| Verdict::new(!start_down)),
            passive_until: None,
            manual: false,
        }
    }

    /// The current state as operators see it: an operator's mark-down wins over the
    /// checks' own state (which goes on being tracked beneath it).
    pub fn state(&self) -> State {
        if self.manual {
            State::Down(Cause::Manual)
        } else {
            self.state.clone()
        }
    }

    /// An operator marks the server down (`true`) or lifts that (`false`); lifting
    /// shows the checks' own state again.
    pub fn set_manual(&mut self, down: bool, now: Instant) -> Effect {
        let mut effect = Effect::default();
        if self.manual == down {
            return effect;
        }
        effect.broadcast = Some(Broadcast::Manual(down));
        let (from, to) = if down {
            let from = self.state.word();
            self.manual = true;
            (from, "down")
        } else {
            self.manual = false;
            ("down", self.state.word())
        };
        let verb = if down {
            "marked down"
        } else {
            "mark-down lifted"
        };
        effect
            .lines
            .push(format!("{from} → {to} ({verb} through the admin API)"));
        self.since = now;
        effect
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The active verdict, as workers must hold it (true without checks).
    pub fn active_up(&self) -> bool {
        self.verdict.is_none_or(|v| v.is_up())
    }

    /// Moves to `to`, logging `from → to detail`.
    fn go(&mut self, to: State, now: Instant, detail: String, effect: &mut Effect) {
        effect
            .lines
            .push(format!("{} → {} {detail}", self.state.word(), to.word()));
        self.state = to;
        self.since = now;
    }

    /// Ends a passive rest that is over: the active verdict decides, or probation.
    fn expire(&mut self, now: Instant, effect: &mut Effect) {
        let Some(until) = self.passive_until else {
            return;
        };
        if now < until {
            return;
        }
        self.passive_until = None;
        if !matches!(self.state, State::Down(Cause::Passive { .. })) {
            return;
        }
        match self.verdict {
            None => self.go(
                State::Probation,
                now,
                "(back-off over; the next request probes it)".into(),
                effect,
            ),
            Some(v) if v.is_up() => self.go(
                State::Up,
                now,
                "(back-off over; active checks pass)".into(),
                effect,
            ),
            Some(_) => {
                // Still down, now for its checks: not a transition to log.
                self.state = State::Down(Cause::Active("active checks fail".into()));
            }
        }
    }

    /// Time passed: a rest may have ended.
    pub fn tick(&mut self, now: Instant) -> Effect {
        let mut effect = Effect::default();
        self.expire(now, &mut effect);
        effect
    }

    /// A worker marked the server down.
    pub fn passive_down(&mut self, down: MarkDown, reason: &'static str, now: Instant) -> Effect {
        let mut effect = Effect::default();
        self.expire(now, &mut effect);
        if self.passive_until.is_some_and(|t| now < t) {
            // Another worker found the same outage before our broadcast reached it.
            return effect;
        }
        self.passive_until = Some(down.until);
        effect.broadcast = Some(Broadcast::Down(down));
        if matches!(self.state, State::Up | State::Probation) {
            let rest = down.until.saturating_duration_since(now).as_secs_f64();
            let step = down.step.saturating_add(1);
            let detail = format!("for {rest:.1}s ({reason}; passive back-off step {step})");
            let to = State::Down(Cause::Passive {
                until: down.until,
                step,
                reason,
            });
            self.go(to, now, detail, &mut effect);
        }
        effect
    }

    /// A worker's probe succeeded: the server is back.
    pub fn recovered(&mut self, now: Instant) -> Effect {
        let mut effect = Effect::default();
        self.expire(now, &mut effect);
        if self.state == State::Probation {
            self.go(State::Up, now, "(a request succeeded)".into(), &mut effect);
        }
        effect
    }

    /// One active check result; `detail` says why it failed.
    pub fn check_result(
        &mut self,
        pass: bool,
        detail: &str,
        check: &HealthCheck,
        now: Instant,
    ) -> Effect {
        let mut effect = Effect::default();
        self.expire(now, &mut effect);
        let Some(verdict) = &mut self.verdict else {
            return effect;
        };
        let Some(up) = verdict.observe(pass, check.rise, check.fall) else {
            return effect;
        };
        effect.broadcast = Some(Broadcast::Active(up));
        if up {
            // Workers clear a passive rest on this edge too.
            self.passive_until = None;
            if self.state != State::Up {
                let detail = format!("({} passed checks)", check.rise);
                self.go(State::Up, now, detail, &mut effect);
            }
        } else {
            let why = format!("{} failed checks, last: {detail}", check.fall);
            match self.state {
                State::Up | State::Probation => {
                    let detail = format!("({why})");
                    self.go(State::Down(Cause::Active(why)), now, detail, &mut effect)
                }
                // Already down: the checks only confirm it; nothing to log.
                State::Down(_) => {}
            }
        }
        effect
    }

    /// A reload gave, changed or took the group's checks.
    pub fn set_check(&mut self, check: Option<&HealthCheck>, now: Instant) -> Effect {
        let mut effect = Effect::default();
        match (check, self.verdict.is_some()) {
            (Some(_), false) => self.verdict = Some(Verdict::new(true)),
            (None, true) => {
                self.verdict = None;
                if matches!(
                    self.state,
                    State::Down(Cause::Active(_) | Cause::NotChecked)
                ) {
                    let detail = "(its active checks were removed)".into();
                    self.go(State::Up, now, detail, &mut effect);
                }
            }
            _ => {}
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check(start_down: bool) -> HealthCheck {
        HealthCheck {
            path: "/".into(),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
            expect: vec![(200, 399)],
            start_down,
        }
    }

    fn down(now: Instant, secs: u64, step: u8) -> MarkDown {
        MarkDown {
            until: now + Duration::from_secs(secs),
            step,
        }
    }

    #[test]
    fn a_passive_outage_without_checks_goes_down_probation_up_each_logged_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(None, t0);
        let e = m.passive_down(down(t0, 1, 0), "connect failed", t0);
        assert_eq!(
            e.lines,
            ["up → down for 1.0s (connect failed; passive back-off step 1)"]
        );
        assert_eq!(e.broadcast, Some(Broadcast::Down(down(t0, 1, 0))));
        let dup = m.passive_down(down(t0, 1, 0), "connect failed", t0);
        assert_eq!(
            dup,
            Effect::default(),
            "a second worker's report is absorbed"
        );
        assert!(m.tick(t0 + Duration::from_millis(500)).lines.is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            m.tick(t1).lines,
            ["down → probation (back-off over; the next request probes it)"]
        );
        let e = m.passive_down(down(t1, 5, 1), "connect failed", t1);
        assert_eq!(
            e.lines,
            ["probation → down for 5.0s (connect failed; passive back-off step 2)"]
        );
        let t2 = t1 + Duration::from_secs(5);
        let e = m.recovered(t2);
        assert_eq!(
            e.lines,
            [
                "down → probation (back-off over; the next request probes it)",
                "probation → up (a request succeeded)"
            ]
        );
        assert_eq!(m.state(), State::Up);
        assert!(m.recovered(t2).lines.is_empty(), "only once");
    }

    #[test]
    fn with_active_checks_a_passive_rest_ends_up_and_checks_do_not_relog_down() {
        let t0 = Instant::now();
        let c = check(false);
        let mut m = Machine::new(Some(&c), t0);
        m.passive_down(down(t0, 1, 0), "connection closed before a response", t0);
        // The checks agree while it rests: no second "up → down".
        let e = m.check_result(false, "status 500", &c, t0);
        assert!(e.lines.is_empty());
        let e = m.check_result(false, "status 500", &c, t0);
        assert!(e.lines.is_empty(), "{:?}", e.lines);
        assert_eq!(e.broadcast, Some(Broadcast::Active(false)));
        // The rest ends while checks fail: still down, silently.
        assert!(m.tick(t0 + Duration::from_secs(2)).lines.is_empty());
        assert!(matches!(m.state(), State::Down(Cause::Active(_))));
        let e = m.set_manual(true, t0);
        assert_eq!(e.lines, ["down → down (marked down through the admin API)"]);
        assert_eq!(e.broadcast, Some(Broadcast::Manual(true)));
        assert_eq!(m.state(), State::Down(Cause::Manual));
        assert_eq!(m.set_manual(true, t0), Effect::default(), "once");
        let e = m.set_manual(false, t0);
        assert_eq!(
            e.lines,
            ["down → down (mark-down lifted through the admin API)"]
        );
        assert!(
            matches!(m.state(), State::Down(Cause::Active(_))),
            "the checks' state shows again"
        );
        m.check_result(true, "", &c, t0);
        let e = m.check_result(true, "", &c, t0);
        assert_eq!(e.lines, ["down → up (2 passed checks)"]);
    }

    #[test]
    fn with_active_checks_passing_the_end_of_a_rest_is_logged_up() {
        let t0 = Instant::now();
        let c = check(false);
        let mut m = Machine::new(Some(&c), t0);
        m.passive_down(down(t0, 1, 0), "connect failed", t0);
        let e = m.tick(t0 + Duration::from_secs(1));
        assert_eq!(e.lines, ["down → up (back-off over; active checks pass)"]);
    }

    #[test]
    fn start_down_waits_for_rise_and_removed_checks_bring_it_up() {
        let t0 = Instant::now();
        let c = check(true);
        let mut m = Machine::new(Some(&c), t0);
        assert!(!m.active_up());
        assert!(m.check_result(true, "", &c, t0).lines.is_empty());
        assert_eq!(
            m.check_result(true, "", &c, t0).lines,
            ["down → up (2 passed checks)"]
        );
        m.check_result(false, "timeout", &c, t0);
        let e = m.check_result(false, "timeout", &c, t0);
        assert_eq!(e.lines, ["up → down (2 failed checks, last: timeout)"]);
        let e = m.set_check(None, t0);
        assert_eq!(e.lines, ["down → up (its active checks were removed)"]);
        assert!(m.active_up());
    }
}

//! The control thread's health table: one [`Machine`] per server, fed by worker
//! reports, active check results and time, kept in step with the current snapshot.
//! Every transition is logged here exactly once, and what workers must apply is
//! broadcast from here.

use crate::bus::{Bus, Report, Update};
use crate::config::HealthCheck;
use crate::health::machine::{Broadcast, Effect, Machine, State};
use crate::snapshot::Snapshot;
use crate::upstream::ServerId;
use crate::{info, warn};
use std::collections::HashMap;
use std::time::Instant;

/// One server as the control thread tracks it.
#[derive(Debug)]
struct Tracked {
    /// `upstream `web` server 127.0.0.1:9001`, for logs.
    name: String,
    /// The generation the server joined in (reports from before it are stale).
    since: u64,
    machine: Machine,
}

/// Every configured server's health.
#[derive(Debug)]
pub struct Table {
    bus: Bus,
    /// The current generation, stamped on broadcasts.
    generation: u64,
    servers: HashMap<ServerId, Tracked>,
    /// Transitions logged so far, by server name and the state entered (for metrics).
    transitions: std::collections::BTreeMap<(String, &'static str), u64>,
}

impl Table {
    /// The table for the first snapshot.
    pub fn new(bus: Bus, snap: &Snapshot, now: Instant) -> Table {
        let mut t = Table {
            bus,
            generation: snap.generation,
            servers: HashMap::new(),
            transitions: Default::default(),
        };
        t.sync(snap, now);
        t
    }

    /// Follows a new snapshot: new servers start (up, or down until checked), removed
    /// ones are forgotten, kept ones keep their state; a group that gained or lost its
    /// checks updates its servers.
    pub fn sync(&mut self, snap: &Snapshot, now: Instant) {
        self.generation = snap.generation;
        let mut next = HashMap::new();
        for group in &snap.groups {
            let check = group.upstream.health.as_ref();
            for (m, s) in group.members.iter().zip(&group.upstream.servers) {
                let name = format!("upstream `{}` server {}", group.upstream.name, s.addr);
                let mut tracked = self.servers.remove(&m.id).unwrap_or_else(|| Tracked {
                    name: name.clone(),
                    since: snap.generation,
                    machine: Machine::new(check, now),
                });
                let effect = tracked.machine.set_check(check, now);
                self.emit(m.id, &tracked.name, effect);
                next.insert(m.id, tracked);
            }
        }
        self.servers = next;
    }

    /// A worker's health report (cache reports are not the table's business).
    pub fn report(&mut self, report: Report, now: Instant) {
        let (generation, id) = match report {
            Report::Down {
                generation, server, ..
            }
            | Report::Recovered { generation, server } => (generation, server),
            Report::Cache(_) => return,
        };
        let Some(t) = self.servers.get_mut(&id) else {
            // A server a reload removed: its in-flight requests no longer matter.
            return;
        };
        if generation < t.since {
            return;
        }
        let effect = match report {
            Report::Down { down, reason, .. } => t.machine.passive_down(down, reason, now),
            Report::Recovered { .. } => t.machine.recovered(now),
            Report::Cache(_) => return,
        };
        let name = t.name.clone();
        self.emit(id, &name, effect);
    }

    /// An active check result for `id`.
    pub fn check_result(
        &mut self,
        id: ServerId,
        pass: bool,
        detail: &str,
        check: &HealthCheck,
        now: Instant,
    ) {
        let Some(t) = self.servers.get_mut(&id) else {
            return;
        };
        let effect = t.machine.check_result(pass, detail, check, now);
        let name = t.name.clone();
        self.emit(id, &name, effect);
    }

    /// An operator marks `id` down or lifts that; `None` when it is not configured.
    pub fn set_manual(&mut self, id: ServerId, down: bool, now: Instant) -> Option<State> {
        let t = self.servers.get_mut(&id)?;
        let effect = t.machine.set_manual(down, now);
        let (name, state) = (t.name.clone(), t.machine.state());
        self.emit(id, &name, effect);
        Some(state)
    }

    /// Time passed: back-offs may have ended.
    pub fn tick(&mut self, now: Instant) {
        let ended: Vec<(ServerId, String, Effect)> = self
            .servers
            .iter_mut()
            .filter_map(|(&id, t)| {
                let effect = t.machine.tick(now);
                (effect != Effect::default()).then(|| (id, t.name.clone(), effect))
            })
            .collect();
        for (id, name, effect) in ended {
            self.emit(id, &name, effect);
        }
    }

    /// `id`'s state and since when, when it is configured.
    pub fn status(&self, id: ServerId) -> Option<(State, Instant)> {
        self.servers
            .get(&id)
            .map(|t| (t.machine.state(), t.machine.since()))
    }

    /// Transitions so far: (server name, state entered) → count.
    pub fn transitions(&self) -> &std::collections::BTreeMap<(String, &'static str), u64> {
        &self.transitions
    }

    /// Logs an effect's transitions and broadcasts what workers must apply.
    fn emit(&mut self, id: ServerId, name: &str, effect: Effect) {
        for line in &effect.lines {
            // "up → down ...": the word after the arrow is the state entered.
            let to = match line.split_whitespace().nth(2) {
                Some("up") => "up",
                Some("probation") => "probation",
                _ => "down",
            };
            *self.transitions.entry((name.to_string(), to)).or_default() += 1;
            if line.contains("→ down") {
                warn!("{name}: {line}");
            } else {
                info!("{name}: {line}");
            }
        }
        let generation = self.generation;
        match effect.broadcast {
            Some(Broadcast::Down(down)) => self.bus.broadcast(Update::ServerDown {
                generation,
                server: id,
                down,
            }),
            Some(Broadcast::Active(up)) => self.bus.broadcast(Update::Health {
                generation,
                server: id,
                up,
            }),
            Some(Broadcast::Manual(down)) => self.bus.broadcast(Update::Manual {
                generation,
                server: id,
                down,
            }),
            None => {}
        }
    }
}

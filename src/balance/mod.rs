//! Per-worker server selection within an upstream group, for every policy.
//!
//! A pick reads three things: the group's shared table ([`Group`], built per snapshot),
//! this worker's cursors for it ([`GroupState`]), and this worker's state per member
//! (`ServerLocal`: in-flight counts, latency, ramp). Nothing here is shared between
//! cores, so `least_conn` and `max_connections` count this worker's requests only (the
//! per-server limit is split evenly across workers). Picks are pure functions of that
//! state plus the caller's `usable` predicate (health), so they are unit-tested without
//! I/O.

pub mod table;

pub use table::{Group, Member};

use crate::config::Balance;
use crate::hash::mix;
use crate::upstream::{ServerId, ServerLocal};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// Random picks try this many samples before scanning the whole group (which they then
/// do when most servers are down or the weights are very uneven).
const SAMPLE_TRIES: u32 = 8;
/// `ip_hash` rehashes this many times past unusable servers (nginx uses 20) before
/// falling back to round robin.
const REHASH_TRIES: u32 = 20;
/// Servers [`Tried`] remembers; a request that tried more forgets the oldest, and the
/// advancing cursor still spreads its further attempts.
const TRIED_MAX: usize = 8;

/// Servers already tried for one request, by id (ids mean the same server in every
/// snapshot, so the record stays right whatever the group looks like).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    ids: [Option<ServerId>; TRIED_MAX],
    next: u8,
}

impl Tried {
    /// Records `id` as tried.
    pub fn add(&mut self, id: ServerId) {
        self.ids[usize::from(self.next) % TRIED_MAX] = Some(id);
        self.next = self.next.wrapping_add(1);
    }

    /// True when `id` was tried already.
    pub fn contains(&self, id: ServerId) -> bool {
        self.ids.contains(&Some(id))
    }
}

/// One worker's cursors for one group in one generation.
#[derive(Debug)]
pub struct GroupState {
    cursor: Cell<usize>,
    /// Smooth weighted round robin's current weights, by position.
    current: Vec<Cell<i64>>,
}

impl GroupState {
    /// Fresh cursors for `group`; each worker starts at a different offset so cores do
    /// not move in lockstep.
    pub fn new(group: &Group, worker: usize) -> GroupState {
        GroupState {
            cursor: Cell::new(worker % group.members.len().max(1)),
            current: group.members.iter().map(|_| Cell::new(0)).collect(),
        }
    }
}

/// What one pick chooses among: a group's table, this worker's cursors for it, and
/// this worker's state of each member (aligned with `group.members`).
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    /// The shared table.
    pub group: &'a Group,
    /// This worker's cursors.
    pub state: &'a GroupState,
    /// This worker's state per member.
    pub members: &'a [Rc<ServerLocal>],
}

/// One worker's balancer: the random state every policy that samples shares.
#[derive(Debug)]
pub struct Balancer {
    rng: Cell<u64>,
}

impl Balancer {
    /// The balancer of worker `worker` (a distinct random sequence per worker).
    pub fn new(worker: usize) -> Balancer {
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        Balancer {
            rng: Cell::new(seed | 1),
        }
    }

    /// Picks a server that is usable, has room under its `max_connections` share and
    /// was not tried yet; backups only when no primary can.
    ///
    /// `key` is the request's hash for `ip_hash`/`consistent_hash` (`None`: the key was
    /// absent, round robin instead).
    pub fn pick<'a>(
        &self,
        c: Candidates<'a>,
        tried: &Tried,
        key: Option<u64>,
        now: Instant,
        usable: impl Fn(&ServerLocal) -> bool,
    ) -> Option<&'a Rc<ServerLocal>> {
        for backup in [false, true] {
            if backup && !c.group.has_backup {
                break;
            }
            let ok = |pos: usize| {
                let (m, s) = (&c.group.members[pos], &*c.members[pos]);
                m.backup == backup && s.inflight() < m.limit && !tried.contains(m.id) && usable(s)
            };
            // Backups are few and rarely used: plain round robin among them.
            let policy = if backup {
                Balance::RoundRobin
            } else {
                c.group.upstream.balance
            };
            if let Some(pos) = self.pick_in(c, policy, key, now, ok) {
                return Some(&c.members[pos]);
            }
        }
        None
    }

    fn pick_in(
        &self,
        c: Candidates<'_>,
        policy: Balance,
        key: Option<u64>,
        now: Instant,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let (group, state) = (c.group, c.state);
        let n = group.members.len();
        let slow_start = group.upstream.slow_start;
        let weight =
            |pos: usize| c.members[pos].ramped(group.members[pos].weight * 100, slow_start, now);
        match (policy, key) {
            (Balance::RoundRobin, _) | (Balance::IpHash | Balance::ConsistentHash, None) => {
                let start = state.cursor.get();
                let pos = (0..n).map(|k| (start + k) % n).find(|&p| ok(p))?;
                // Advance past the pick so a down server's share is spread evenly.
                state.cursor.set((pos + 1) % n);
                Some(pos)
            }
            (Balance::WeightedRoundRobin, _) => {
                let mut best: Option<usize> = None;
                let mut total = 0i64;
                for pos in (0..n).filter(|&p| ok(p)) {
                    let w = weight(pos) as i64;
                    let cur = &state.current[pos];
                    cur.set(cur.get() + w);
                    total += w;
                    if best.is_none_or(|b| cur.get() > state.current[b].get()) {
                        best = Some(pos);
                    }
                }
                let b = best?;
                state.current[b].set(state.current[b].get() - total);
                Some(b)
            }
            (Balance::Random, _) => self.weighted_random(n, group.max_weight, &ok, weight),
            (Balance::P2c, _) => {
                let a = self.weighted_random(n, group.max_weight, &ok, weight)?;
                let mut b = self.weighted_random(n, group.max_weight, &ok, weight)?;
                if b == a {
                    // A second, different candidate if there is one.
                    b = (1..n).map(|k| (a + k) % n).find(|&p| ok(p)).unwrap_or(a);
                }
                Some(if load_less(c, b, a) { b } else { a })
            }
            (Balance::LeastConn, _) => {
                let start = state.cursor.get();
                let mut best: Option<usize> = None;
                for pos in (0..n).map(|k| (start + k) % n).filter(|&p| ok(p)) {
                    if best.is_none_or(|b| load_less(c, pos, b)) {
                        best = Some(pos);
                    }
                }
                let b = best?;
                state.cursor.set((b + 1) % n);
                Some(b)
            }
            (Balance::LeastTime, _) => {
                let start = state.cursor.get();
                let mut best: Option<(usize, f64)> = None;
                for pos in (0..n).map(|k| (start + k) % n).filter(|&p| ok(p)) {
                    let s = &c.members[pos];
                    let score = s.latency(now) * f64::from(s.inflight() + 1)
                        / group.members[pos].weight as f64;
                    if best.is_none_or(|(_, b)| score < b) {
                        best = Some((pos, score));
                    }
                }
                let (b, _) = best?;
                state.cursor.set((b + 1) % n);
                Some(b)
            }
            (Balance::IpHash, Some(h)) => self
                .ip_hash(group, h, &ok)
                .or_else(|| self.pick_in(c, Balance::RoundRobin, None, now, ok)),
            (Balance::ConsistentHash, Some(h)) => {
                let ring = &group.ring;
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|&(p, _)| p < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|&p| ok(p))
            }
        }
    }

    /// nginx's ip_hash: a weighted slot from the hash, rehashed past unusable servers.
    fn ip_hash(&self, group: &Group, mut h: u64, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        // Configured weights, not ramping ones: the mapping must stay stable.
        let primaries = || (0..group.members.len()).filter(|&p| !group.members[p].backup);
        let total: u64 = primaries().map(|p| group.members[p].weight).sum();
        for _ in 0..REHASH_TRIES {
            let mut r = h % total.max(1);
            for pos in primaries() {
                let w = group.members[pos].weight;
                if r < w {
                    if ok(pos) {
                        return Some(pos);
                    }
                    break;
                }
                r -= w;
            }
            h = mix(h.wrapping_add(1));
        }
        None
    }

    fn weighted_random(
        &self,
        n: usize,
        max_weight: u64,
        ok: &impl Fn(usize) -> bool,
        weight: impl Fn(usize) -> u64,
    ) -> Option<usize> {
        // Rejection sampling: a uniform position, kept with probability weight / max.
        // O(1) expected for usual groups, where the exact scan below is O(n).
        for _ in 0..SAMPLE_TRIES {
            let r = self.next_random();
            let pos = (r % n as u64) as usize;
            if ok(pos) && (r >> 32) % max_weight.max(1) < weight(pos) {
                return Some(pos);
            }
        }
        let total: u64 = (0..n).filter(|&p| ok(p)).map(&weight).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.next_random() % total;
        for pos in (0..n).filter(|&p| ok(p)) {
            let w = weight(pos);
            if r < w {
                return Some(pos);
            }
            r -= w;
        }
        None
    }

    /// xorshift64*: fast, per worker, good enough to spread load.
    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// True when position `a` carries less in-flight load per unit of weight than `b`.
fn load_less(c: Candidates<'_>, a: usize, b: usize) -> bool {
    let (wa, wb) = (c.group.members[a].weight, c.group.members[b].weight);
    u64::from(c.members[a].inflight()) * wb < u64::from(c.members[b].inflight()) * wa
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::Passive;
    use crate::upstream::Registry;
    use std::time::Duration;

    /// A group of one config, this worker's state for it, and its balancer.
    struct Fixture {
        group: Group,
        state: GroupState,
        members: Vec<Rc<ServerLocal>>,
        balancer: Balancer,
    }

    impl Fixture {
        fn new(text: &str, worker: usize) -> Fixture {
            let c = Config::parse(text, "t").unwrap();
            let up = c.upstreams[0].clone();
            let mut reg = Registry::new();
            let ids: Vec<ServerId> = up.servers.iter().map(|s| reg.id("a", s.addr)).collect();
            let group = Group::new(up, &ids, c.server.workers);
            let members = group
                .members
                .iter()
                .zip(&group.upstream.servers)
                .map(|(m, s)| Rc::new(ServerLocal::new(m.id, s.addr, 1, Passive::new(true, false))))
                .collect();
            Fixture {
                state: GroupState::new(&group, worker),
                group,
                members,
                balancer: Balancer::new(worker),
            }
        }

        fn candidates(&self) -> Candidates<'_> {
            Candidates {
                group: &self.group,
                state: &self.state,
                members: &self.members,
            }
        }

        /// One pick, as a position; `usable` sees positions too.
        fn pick_at(
            &self,
            tried: &Tried,
            key: Option<u64>,
            now: Instant,
            usable: impl Fn(usize) -> bool,
        ) -> Option<usize> {
            let usable = |s: &ServerLocal| usable(self.pos_of(s));
            let got = self
                .balancer
                .pick(self.candidates(), tried, key, now, usable)?;
            Some(self.pos_of(got))
        }

        fn pos_of(&self, s: &ServerLocal) -> usize {
            self.members.iter().position(|m| m.id == s.id).unwrap()
        }

        fn picks(&self, n: usize, usable: impl Fn(usize) -> bool) -> Vec<usize> {
            let now = Instant::now();
            (0..n)
                .map(|_| self.pick_at(&Tried::default(), None, now, &usable).unwrap())
                .collect()
        }
    }

    fn config(balance: &str, servers: &str) -> String {
        format!(
            "[server]\nworkers = 1\n[upstreams.a]\nbalance = \"{balance}\"\nservers = [{servers}]\n[[routes]]\nupstream = \"a\"\n"
        )
    }

    fn three(balance: &str, worker: usize) -> Fixture {
        Fixture::new(
            &config(balance, "\"127.0.0.1:1\",\"127.0.0.1:2\",\"127.0.0.1:3\""),
            worker,
        )
    }

    fn counts(picks: &[usize], servers: usize) -> Vec<usize> {
        let mut c = vec![0; servers];
        for &p in picks {
            c[p] += 1;
        }
        c
    }

    #[test]
    fn round_robin_cycles_from_the_worker_offset() {
        assert_eq!(
            three("round_robin", 1).picks(6, |_| true),
            [1, 2, 0, 1, 2, 0]
        );
    }

    #[test]
    fn round_robin_spreads_a_down_servers_share() {
        assert_eq!(
            three("round_robin", 0).picks(6, |p| p != 1),
            [0, 2, 0, 2, 0, 2]
        );
    }

    #[test]
    fn tried_servers_are_skipped_and_exhaustion_is_reported() {
        let f = three("round_robin", 0);
        let now = Instant::now();
        let mut tried = Tried::default();
        for _ in 0..3 {
            let pos = f.pick_at(&tried, None, now, |_| true).unwrap();
            assert!(!tried.contains(f.members[pos].id));
            tried.add(f.members[pos].id);
        }
        assert_eq!(f.pick_at(&tried, None, now, |_| true), None);
    }

    #[test]
    fn tried_remembers_the_last_eight_ids() {
        let mut reg = Registry::new();
        let ids: Vec<ServerId> = (1..=9)
            .map(|p| reg.id("a", format!("127.0.0.1:{p}").parse().unwrap()))
            .collect();
        let mut tried = Tried::default();
        for &id in &ids {
            tried.add(id);
        }
        assert!(!tried.contains(ids[0]), "the oldest is forgotten");
        assert!(ids[1..].iter().all(|&id| tried.contains(id)));
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_the_heavy_server() {
        let f = Fixture::new(
            &config(
                "weighted_round_robin",
                "{ addr = \"127.0.0.1:1\", weight = 5 }, \"127.0.0.1:2\", \"127.0.0.1:3\"",
            ),
            0,
        );
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        assert_eq!(f.picks(7, |_| true), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_policies_follow_the_weights() {
        for policy in ["weighted_round_robin", "random"] {
            let f = Fixture::new(
                &config(
                    policy,
                    "{ addr = \"127.0.0.1:1\", weight = 3 }, \"127.0.0.1:2\"",
                ),
                0,
            );
            let got = counts(&f.picks(4000, |_| true), 2);
            let share = got[0] as f64 / 4000.0;
            assert!((share - 0.75).abs() < 0.05 * 0.75, "{policy}: {got:?}");
        }
    }

    #[test]
    fn least_conn_and_p2c_prefer_the_idle_server() {
        for policy in ["least_conn", "p2c"] {
            let f = Fixture::new(&config(policy, "\"127.0.0.1:1\",\"127.0.0.1:2\""), 0);
            for _ in 0..5 {
                f.members[0].start();
            }
            let got = f.picks(50, |_| true);
            assert!(got.iter().all(|&s| s == 1), "{policy}: {got:?}");
            for _ in 0..5 {
                f.members[0].finish();
            }
            assert_eq!(f.members[0].inflight(), 0);
        }
    }

    #[test]
    fn least_time_avoids_the_slow_server_and_forgets_in_time() {
        let f = three("least_time", 0);
        let now = Instant::now();
        f.members[0].observe_latency(Duration::from_millis(1), now);
        f.members[1].observe_latency(Duration::from_millis(50), now);
        f.members[2].observe_latency(Duration::from_millis(2), now);
        let got = counts(&f.picks(30, |_| true), 3);
        assert_eq!(got[1], 0, "{got:?}");
        let later = now + Duration::from_secs(600);
        let pick = f.pick_at(&Tried::default(), None, later, |p| p == 1);
        assert_eq!(pick, Some(1), "still usable when it is the only one");
        assert!(f.members[1].latency(later) < 1.0, "old samples decay");
    }

    #[test]
    fn ip_hash_is_stable_and_moves_only_when_the_server_is_down() {
        let f = three("ip_hash", 0);
        let now = Instant::now();
        let none = Tried::default();
        for ip in 0..200u32 {
            let key = Some(crate::hash::hash_bytes(&ip.to_be_bytes()));
            let first = f.pick_at(&none, key, now, |_| true).unwrap();
            let again = f.pick_at(&none, key, now, |_| true).unwrap();
            assert_eq!(first, again);
            let down = f.pick_at(&none, key, now, |p| p != first).unwrap();
            assert_ne!(down, first);
        }
    }

    #[test]
    fn consistent_hash_remaps_about_one_nth_when_a_server_goes() {
        let servers = (1..=10)
            .map(|i| format!("\"127.0.0.1:{i}\""))
            .collect::<Vec<_>>()
            .join(",");
        let f = Fixture::new(&config("consistent_hash", &servers), 0);
        let now = Instant::now();
        let none = Tried::default();
        let keys = 10_000u32;
        let mut moved = 0;
        let mut per_server = [0usize; 10];
        for k in 0..keys {
            let key = Some(crate::hash::hash_bytes(format!("user-{k}").as_bytes()));
            let before = f.pick_at(&none, key, now, |_| true).unwrap();
            per_server[before] += 1;
            let after = f.pick_at(&none, key, now, |p| p != 3).unwrap();
            if before != 3 {
                assert_eq!(before, after, "keys of other servers stay put");
            } else {
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(keys);
        assert!(share <= 1.3 / 10.0, "moved {share}");
        assert!(per_server.iter().all(|&n| n > 500), "{per_server:?}");
    }

    #[test]
    fn slow_start_ramps_a_recovered_servers_share() {
        let text = "[server]\nworkers = 1\n[upstreams.a]\nbalance = \"weighted_round_robin\"\nslow_start = \"10s\"\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[[routes]]\nupstream = \"a\"\n";
        let f = Fixture::new(text, 0);
        let t0 = Instant::now();
        f.members[1].ramp_up(t0);
        let share = |at: Instant| {
            (0..1000)
                .filter(|_| f.pick_at(&Tried::default(), None, at, |_| true) == Some(1))
                .count()
        };
        let early = share(t0 + Duration::from_secs(1));
        let mid = share(t0 + Duration::from_secs(5));
        let done = share(t0 + Duration::from_secs(11));
        assert!(
            early < 150 && mid > 250 && mid < 400 && done == 500,
            "{early} {mid} {done}"
        );
    }

    #[test]
    fn max_connections_is_split_per_worker_and_backup_takes_over() {
        let text = "[server]\nworkers = 2\n[upstreams.a]\nservers = [{ addr = \"127.0.0.1:1\", max_connections = 4 }, { addr = \"127.0.0.1:2\", backup = true }]\n[[routes]]\nupstream = \"a\"\n";
        let f = Fixture::new(text, 0);
        let now = Instant::now();
        let none = Tried::default();
        let mut got = Vec::new();
        for _ in 0..3 {
            let pos = f.pick_at(&none, None, now, |_| true).unwrap();
            f.members[pos].start();
            got.push(pos);
        }
        assert_eq!(
            got,
            [0, 0, 1],
            "2 per worker on the primary, then the backup"
        );
        assert_eq!(
            f.pick_at(&none, None, now, |p| p == 0),
            None,
            "the primary is full and the backup down"
        );
    }
}

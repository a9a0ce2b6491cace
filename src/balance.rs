//! Per-worker server selection within an upstream group, for every policy.
//!
//! Each worker owns its own cursors, smooth-WRR weights, in-flight counts, latency
//! averages and random state (`Cell`s): nothing here is shared between cores, so
//! `least_conn` and `max_connections` count this worker's requests only (the per-server
//! limit is split evenly across workers). Picks are pure functions of that state plus
//! the caller's `usable` predicate (health), so they are unit-tested without I/O.

use crate::config::{Balance, Config, ServerId, Upstream, UpstreamId};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Ring points per server of average weight (ketama's choice): enough that removing
/// one of N servers moves close to 1/N of the keys.
const RING_POINTS: u64 = 160;
/// `least_time` forgets old latency with this half-life, so a server that was slow
/// once gets traffic again eventually instead of being starved forever.
const LATENCY_HALF_LIFE: f64 = 10.0;
/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;
/// Random picks try this many samples before scanning the whole group (which they then
/// do when most servers are down or the weights are very uneven).
const SAMPLE_TRIES: u32 = 8;
/// `ip_hash` rehashes this many times past unusable servers (nginx uses 20) before
/// falling back to round robin.
const REHASH_TRIES: u32 = 20;

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

/// One worker's view of one server.
#[derive(Debug)]
struct ServerState {
    weight: u64,
    backup: bool,
    /// This worker's share of `max_connections`; `u32::MAX` when unlimited.
    limit: u32,
    inflight: Cell<u32>,
    /// `slow_start` of the server's group.
    slow_start: Option<Duration>,
    /// The server came back at this time and is still ramping up.
    ramp_from: Cell<Option<Instant>>,
    /// Moving average of response-header latency in µs (0 = no sample yet).
    latency: Cell<f64>,
    latency_at: Cell<Option<Instant>>,
}

/// One worker's state for one upstream group.
#[derive(Debug)]
struct GroupState {
    cursor: Cell<usize>,
    /// Largest configured weight (scaled by 100, as `effective_weight`).
    max_weight: u64,
    /// Smooth weighted round robin's current weights, by position.
    current: Vec<Cell<i64>>,
    /// Ketama ring of (point, position) over primary servers, sorted by point.
    ring: Vec<(u64, u32)>,
    has_backup: bool,
}

/// One worker's balancing state for every upstream group.
#[derive(Debug)]
pub struct Balancer {
    groups: Vec<GroupState>,
    servers: Vec<ServerState>,
    rng: Cell<u64>,
}

impl Balancer {
    /// State for `worker`; each group's cursor starts at a different offset per worker
    /// so cores do not move in lockstep.
    pub fn new(config: &Config, worker: usize) -> Balancer {
        let workers = config.server.workers.max(1) as u32;
        let servers = config
            .servers
            .iter()
            .map(|s| ServerState {
                weight: u64::from(s.weight),
                backup: s.backup,
                limit: s.max_connections.map_or(u32::MAX, |m| m.div_ceil(workers)),
                inflight: Cell::new(0),
                slow_start: config.upstreams[s.upstream].slow_start,
                ramp_from: Cell::new(None),
                latency: Cell::new(0.0),
                latency_at: Cell::new(None),
            })
            .collect();
        let groups = config
            .upstreams
            .iter()
            .map(|u| GroupState {
                cursor: Cell::new(worker % u.servers.len()),
                max_weight: u
                    .servers
                    .iter()
                    .map(|&s| u64::from(config.servers[s].weight) * 100)
                    .max()
                    .unwrap_or(100),
                current: u.servers.iter().map(|_| Cell::new(0)).collect(),
                ring: if u.balance == Balance::ConsistentHash {
                    build_ring(config, u)
                } else {
                    Vec::new()
                },
                has_backup: u.servers.iter().any(|&s| config.servers[s].backup),
            })
            .collect();
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        Balancer {
            groups,
            servers,
            rng: Cell::new(seed | 1),
        }
    }

    /// Picks a server of `group` (index `upstream`) that is usable, has room under its
    /// `max_connections` share and was not tried yet; backups only when no primary can.
    ///
    /// `key` is the request's hash for `ip_hash`/`consistent_hash` (`None`: the key was
    /// absent, round robin instead). Returns the server's position in the group and its id.
    pub fn pick(
        &self,
        upstream: UpstreamId,
        group: &Upstream,
        tried: Tried,
        key: Option<u64>,
        now: Instant,
        usable: impl Fn(ServerId) -> bool,
    ) -> Option<(usize, ServerId)> {
        let state = &self.groups[upstream];
        for backup in [false, true] {
            if backup && !state.has_backup {
                break;
            }
            let ok = |pos: usize| {
                let id = group.servers[pos];
                let s = &self.servers[id];
                s.backup == backup
                    && s.inflight.get() < s.limit
                    && !tried.contains(pos)
                    && usable(id)
            };
            // Backups are few and rarely used: plain round robin among them.
            let policy = if backup {
                Balance::RoundRobin
            } else {
                group.balance
            };
            if let Some(pos) = self.pick_in(state, group, policy, key, now, ok) {
                return Some((pos, group.servers[pos]));
            }
        }
        None
    }

    fn pick_in(
        &self,
        state: &GroupState,
        group: &Upstream,
        policy: Balance,
        key: Option<u64>,
        now: Instant,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = group.servers.len();
        let weight = |pos: usize| self.effective_weight(group.servers[pos], now);
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
            (Balance::Random, _) => self.weighted_random(n, state.max_weight, &ok, weight),
            (Balance::P2c, _) => {
                let a = self.weighted_random(n, state.max_weight, &ok, weight)?;
                let mut b = self.weighted_random(n, state.max_weight, &ok, weight)?;
                if b == a {
                    // A second, different candidate if there is one.
                    b = (1..n).map(|k| (a + k) % n).find(|&p| ok(p)).unwrap_or(a);
                }
                Some(if self.load_less(group, b, a) { b } else { a })
            }
            (Balance::LeastConn, _) => {
                let start = state.cursor.get();
                let mut best: Option<usize> = None;
                for pos in (0..n).map(|k| (start + k) % n).filter(|&p| ok(p)) {
                    if best.is_none_or(|b| self.load_less(group, pos, b)) {
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
                    let s = &self.servers[group.servers[pos]];
                    let score =
                        self.latency_at(s, now) * f64::from(s.inflight.get() + 1) / s.weight as f64;
                    if best.is_none_or(|(_, b)| score < b) {
                        best = Some((pos, score));
                    }
                }
                let (b, _) = best?;
                state.cursor.set((b + 1) % n);
                Some(b)
            }
            (Balance::IpHash, Some(mut h)) => {
                // Configured weights, not ramping ones: the mapping must stay stable.
                let weight = |pos: usize| self.servers[group.servers[pos]].weight;
                let total: u64 = (0..n)
                    .filter(|&p| !self.servers[group.servers[p]].backup)
                    .map(weight)
                    .sum();
                for _ in 0..REHASH_TRIES {
                    let mut r = h % total.max(1);
                    for pos in (0..n).filter(|&p| !self.servers[group.servers[p]].backup) {
                        let w = weight(pos);
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
                self.pick_in(state, group, Balance::RoundRobin, None, now, ok)
            }
            (Balance::ConsistentHash, Some(h)) => {
                let ring = &state.ring;
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

    /// The server's weight (scaled by 100), ramped while it is in its slow start.
    fn effective_weight(&self, server: ServerId, now: Instant) -> u64 {
        let s = &self.servers[server];
        let full = s.weight * 100;
        let (Some(from), Some(ramp)) = (s.ramp_from.get(), s.slow_start) else {
            return full;
        };
        let elapsed = now.saturating_duration_since(from);
        if elapsed >= ramp {
            s.ramp_from.set(None);
            return full;
        }
        ((full as f64 * elapsed.as_secs_f64() / ramp.as_secs_f64()) as u64).max(1)
    }

    /// The server just came back: ramp its weight up over its group's `slow_start`.
    pub fn ramp_up(&self, server: ServerId, now: Instant) {
        let s = &self.servers[server];
        if s.slow_start.is_some() {
            s.ramp_from.set(Some(now));
        }
    }

    /// True when position `a` carries less in-flight load per unit of weight than `b`.
    fn load_less(&self, group: &Upstream, a: usize, b: usize) -> bool {
        let (sa, sb) = (
            &self.servers[group.servers[a]],
            &self.servers[group.servers[b]],
        );
        u64::from(sa.inflight.get()) * sb.weight < u64::from(sb.inflight.get()) * sa.weight
    }

    /// The server's latency average decayed to `now`; 0 when it has no sample yet.
    fn latency_at(&self, s: &ServerState, now: Instant) -> f64 {
        match s.latency_at.get() {
            None => 0.0,
            Some(at) => {
                let age = now.saturating_duration_since(at);
                if age < Duration::from_millis(100) {
                    // Under 0.7% of decay: not worth an exp2 per candidate per pick.
                    return s.latency.get();
                }
                s.latency.get() * (-age.as_secs_f64() / LATENCY_HALF_LIFE).exp2()
            }
        }
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

    /// A request to `server` starts: counts toward `least_conn`, `p2c` and `max_connections`.
    pub fn start(&self, server: ServerId) {
        let c = &self.servers[server].inflight;
        c.set(c.get() + 1);
    }

    /// A request started with [`Balancer::start`] ended, however it ended.
    pub fn finish(&self, server: ServerId) {
        let c = &self.servers[server].inflight;
        c.set(c.get().saturating_sub(1));
    }

    /// Requests this worker has in flight to `server`.
    pub fn inflight(&self, server: ServerId) -> u32 {
        self.servers[server].inflight.get()
    }

    /// Feeds one response-header latency sample to `least_time`.
    pub fn observe_latency(&self, server: ServerId, latency: Duration, now: Instant) {
        let s = &self.servers[server];
        let sample = latency.as_secs_f64() * 1e6;
        let next = match s.latency_at.get() {
            None => sample,
            Some(_) => {
                let old = self.latency_at(s, now);
                old + (sample - old) * EWMA_ALPHA
            }
        };
        // Never exactly 0, which means "no sample yet".
        s.latency.set(next.max(1.0));
        s.latency_at.set(Some(now));
    }
}

/// Ketama ring over the group's primary servers, points placed by address so every
/// worker (and every restart) builds the same ring whatever the server order.
fn build_ring(config: &Config, group: &Upstream) -> Vec<(u64, u32)> {
    let primaries: Vec<usize> = (0..group.servers.len())
        .filter(|&p| !config.servers[group.servers[p]].backup)
        .collect();
    let total: u64 = primaries
        .iter()
        .map(|&p| u64::from(config.servers[group.servers[p]].weight))
        .sum();
    let mut ring = Vec::new();
    for &pos in &primaries {
        let s = &config.servers[group.servers[pos]];
        let points =
            (RING_POINTS * primaries.len() as u64 * u64::from(s.weight) / total.max(1)).max(1);
        let name = s.addr.to_string();
        for i in 0..points {
            let mut label = Vec::with_capacity(name.len() + 8);
            label.extend_from_slice(name.as_bytes());
            label.push(b'-');
            label.extend_from_slice(i.to_string().as_bytes());
            ring.push((hash_bytes(&label), pos as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// A stable 64-bit hash (FNV-1a, then a murmur3 finalizer for avalanche): the same key
/// maps to the same server on every worker, restart and machine.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// murmur3's fmix64.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(balance: &str, servers: &str) -> Config {
        Config::parse(
            &format!(
                "[server]\nworkers = 1\n[upstreams.a]\nbalance = \"{balance}\"\nservers = [{servers}]\n[[routes]]\nupstream = \"a\"\n"
            ),
            "t",
        )
        .unwrap()
    }

    fn three(balance: &str) -> Config {
        config(balance, "\"127.0.0.1:1\",\"127.0.0.1:2\",\"127.0.0.1:3\"")
    }

    fn picks(b: &Balancer, c: &Config, n: usize, usable: impl Fn(ServerId) -> bool) -> Vec<usize> {
        let now = Instant::now();
        (0..n)
            .map(|_| {
                b.pick(0, &c.upstreams[0], Tried::default(), None, now, &usable)
                    .unwrap()
                    .1
            })
            .collect()
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
        let c = three("round_robin");
        assert_eq!(
            picks(&Balancer::new(&c, 1), &c, 6, |_| true),
            [1, 2, 0, 1, 2, 0]
        );
    }

    #[test]
    fn round_robin_spreads_a_down_servers_share() {
        let c = three("round_robin");
        assert_eq!(
            picks(&Balancer::new(&c, 0), &c, 6, |id| id != 1),
            [0, 2, 0, 2, 0, 2]
        );
    }

    #[test]
    fn tried_servers_are_skipped_and_exhaustion_is_reported() {
        let c = three("round_robin");
        let b = Balancer::new(&c, 0);
        let now = Instant::now();
        let mut tried = Tried::default();
        for _ in 0..3 {
            let (pos, _) = b
                .pick(0, &c.upstreams[0], tried, None, now, |_| true)
                .unwrap();
            assert!(!tried.contains(pos));
            tried.add(pos);
        }
        assert_eq!(b.pick(0, &c.upstreams[0], tried, None, now, |_| true), None);
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_the_heavy_server() {
        let c = config(
            "weighted_round_robin",
            "{ addr = \"127.0.0.1:1\", weight = 5 }, \"127.0.0.1:2\", \"127.0.0.1:3\"",
        );
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        assert_eq!(
            picks(&Balancer::new(&c, 0), &c, 7, |_| true),
            [0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn weighted_policies_follow_the_weights() {
        for policy in ["weighted_round_robin", "random"] {
            let c = config(
                policy,
                "{ addr = \"127.0.0.1:1\", weight = 3 }, \"127.0.0.1:2\"",
            );
            let got = counts(&picks(&Balancer::new(&c, 0), &c, 4000, |_| true), 2);
            let share = got[0] as f64 / 4000.0;
            assert!((share - 0.75).abs() < 0.05 * 0.75, "{policy}: {got:?}");
        }
    }

    #[test]
    fn least_conn_and_p2c_prefer_the_idle_server() {
        for policy in ["least_conn", "p2c"] {
            let c = config(policy, "\"127.0.0.1:1\",\"127.0.0.1:2\"");
            let b = Balancer::new(&c, 0);
            for _ in 0..5 {
                b.start(0);
            }
            let got = picks(&b, &c, 50, |_| true);
            assert!(got.iter().all(|&s| s == 1), "{policy}: {got:?}");
            for _ in 0..5 {
                b.finish(0);
            }
            assert_eq!(b.inflight(0), 0);
        }
    }

    #[test]
    fn least_time_avoids_the_slow_server_and_forgets_in_time() {
        let c = three("least_time");
        let b = Balancer::new(&c, 0);
        let now = Instant::now();
        b.observe_latency(0, Duration::from_millis(1), now);
        b.observe_latency(1, Duration::from_millis(50), now);
        b.observe_latency(2, Duration::from_millis(2), now);
        let got = counts(&picks(&b, &c, 30, |_| true), 3);
        assert_eq!(got[1], 0, "{got:?}");
        let later = now + Duration::from_secs(600);
        let pick = b.pick(0, &c.upstreams[0], Tried::default(), None, later, |id| {
            id == 1
        });
        assert_eq!(
            pick.map(|p| p.1),
            Some(1),
            "still usable when it is the only one"
        );
        assert!(
            b.latency_at(&b.servers[1], later) < 1.0,
            "old samples decay"
        );
    }

    #[test]
    fn ip_hash_is_stable_and_moves_only_when_the_server_is_down() {
        let c = three("ip_hash");
        let b = Balancer::new(&c, 0);
        let now = Instant::now();
        let g = &c.upstreams[0];
        for ip in 0..200u32 {
            let key = Some(hash_bytes(&ip.to_be_bytes()));
            let first = b.pick(0, g, Tried::default(), key, now, |_| true).unwrap();
            let again = b.pick(0, g, Tried::default(), key, now, |_| true).unwrap();
            assert_eq!(first, again);
            let down = b
                .pick(0, g, Tried::default(), key, now, |id| id != first.1)
                .unwrap();
            assert_ne!(down.1, first.1);
        }
    }

    #[test]
    fn consistent_hash_remaps_about_one_nth_when_a_server_goes() {
        let c = config(
            "consistent_hash",
            &(1..=10)
                .map(|i| format!("\"127.0.0.1:{i}\""))
                .collect::<Vec<_>>()
                .join(","),
        );
        let b = Balancer::new(&c, 0);
        let g = &c.upstreams[0];
        let now = Instant::now();
        let keys = 10_000u32;
        let mut moved = 0;
        let mut per_server = [0usize; 10];
        for k in 0..keys {
            let key = Some(hash_bytes(format!("user-{k}").as_bytes()));
            let before = b
                .pick(0, g, Tried::default(), key, now, |_| true)
                .unwrap()
                .1;
            per_server[before] += 1;
            let after = b
                .pick(0, g, Tried::default(), key, now, |id| id != 3)
                .unwrap()
                .1;
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
        let c = Config::parse(text, "t").unwrap();
        let b = Balancer::new(&c, 0);
        let t0 = Instant::now();
        b.ramp_up(1, t0);
        let share = |at: Instant| {
            let got: Vec<usize> = (0..1000)
                .map(|_| {
                    b.pick(0, &c.upstreams[0], Tried::default(), None, at, |_| true)
                        .unwrap()
                        .1
                })
                .collect();
            got.iter().filter(|&&s| s == 1).count()
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
        let c = Config::parse(text, "t").unwrap();
        let b = Balancer::new(&c, 0);
        let now = Instant::now();
        let g = &c.upstreams[0];
        let mut got = Vec::new();
        for _ in 0..3 {
            let (_, id) = b.pick(0, g, Tried::default(), None, now, |_| true).unwrap();
            b.start(id);
            got.push(id);
        }
        assert_eq!(
            got,
            [0, 0, 1],
            "2 per worker on the primary, then the backup"
        );
        let only_primary = b.pick(0, g, Tried::default(), None, now, |id| id == 0);
        assert_eq!(
            only_primary, None,
            "the primary is full and the backup down"
        );
    }
}

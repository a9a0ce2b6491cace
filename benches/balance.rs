//! Decides whether any balancing policy needs anything smarter than a walk over the
//! group: if every pick over a large group stays far below a microsecond, balancing is
//! not worth optimising and policies can afford to be simple and per worker.
//!
//! Groups of 3 (a typical web tier) and 100 (a large pool) servers, all up, or with one
//! server down so every lap of the cursor skips it once, as the proxy's `acquire` does;
//! then every policy's pick over the same groups.

use divan::{black_box, Bencher};
use ringway::balance::Tried;
use ringway::bus::Bus;
use ringway::config::Config;
use ringway::shard::Shard;
use ringway::snapshot::Snapshot;
use ringway::upstream::Registry;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    divan::main();
}

/// Group sizes.
const SERVERS: &[usize] = &[3, 100];

/// One group of `n` loopback servers, routed from `/`.
fn config(n: usize) -> Config {
    config_with(n, "round_robin")
}

/// One group of `n` loopback servers (weights 1 to 3) balanced by `policy`.
fn config_with(n: usize, policy: &str) -> Config {
    let servers: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{ addr = \"127.0.0.1:{}\", weight = {} }}",
                10_000 + i,
                1 + i % 3
            )
        })
        .collect();
    let text = format!(
        "[upstreams.web]\nbalance = \"{policy}\"\nservers = [{}]\n[[routes]]\nupstream = \"web\"\n",
        servers.join(", ")
    );
    let c = Config::parse(&text, "bench").expect("generated config is valid");
    assert_eq!(c.upstreams[0].servers.len(), n);
    c
}

/// One worker's state running `c`, as the proxy builds it.
fn shard(c: &Config) -> Shard {
    let snap = Snapshot::build(c, 1, &mut Registry::new());
    let (bus, mut inboxes, _reports) = Bus::new(1);
    let cache = inboxes[0].take_cache().expect("taken once");
    // The writer thread ends with the process; the bench never logs.
    let log = Box::leak(Box::new(
        ringway::access::AccessLog::start(ringway::access::Sink::Off).expect("a thread"),
    ));
    Shard::new(0, bus, cache, Arc::new(snap), log.remote())
}

/// Every server is usable.
#[divan::bench(args = SERVERS)]
fn all_up(bencher: Bencher, n: usize) {
    let shard = shard(&config(n));
    let gen = shard.generation();
    let now = Instant::now();
    let tried = Tried::default();
    bencher.bench_local(|| {
        let c = black_box(gen.candidates(0));
        shard
            .balancer()
            .pick(c, &tried, None, now, |_| true)
            .map(|s| s.id)
    });
}

/// The middle server is down; the cursor steps over it once per lap.
#[divan::bench(args = SERVERS)]
fn one_down(bencher: Bencher, n: usize) {
    let shard = shard(&config(n));
    let gen = shard.generation();
    let down = gen.candidates(0).group.members[n / 2].id;
    let now = Instant::now();
    let tried = Tried::default();
    bencher.bench_local(|| {
        let c = black_box(gen.candidates(0));
        let usable = |s: &ringway::upstream::ServerLocal| black_box(s.id) != down;
        shard
            .balancer()
            .pick(c, &tried, None, now, usable)
            .map(|s| s.id)
    });
}

/// One policy's pick, all servers up, half of them with a request in flight and a
/// latency sample; hashing policies get a different key each pick.
fn pick_with(bencher: Bencher, n: usize, policy: &str) {
    let shard = shard(&config_with(n, policy));
    let gen = shard.generation();
    let now = Instant::now();
    for s in gen.candidates(0).members.iter().take(n / 2) {
        s.start();
        s.observe_latency(std::time::Duration::from_micros(300), now);
    }
    let tried = Tried::default();
    let mut key = 0u64;
    bencher.bench_local(|| {
        key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let c = black_box(gen.candidates(0));
        shard
            .balancer()
            .pick(c, &tried, Some(key), now, |_| true)
            .map(|s| s.id)
    });
}

macro_rules! policy_benches {
    ($($name:ident),*) => {$(
        /// This policy's pick over 3 and 100 servers.
        #[divan::bench(args = SERVERS)]
        fn $name(bencher: Bencher, n: usize) {
            pick_with(bencher, n, stringify!($name));
        }
    )*};
}

policy_benches!(
    round_robin,
    weighted_round_robin,
    random,
    p2c,
    least_conn,
    least_time,
    ip_hash,
    consistent_hash
);

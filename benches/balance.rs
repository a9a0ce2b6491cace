//! Decides whether any balancing policy needs anything smarter than a walk over the
//! group: if every pick over a large group stays far below a microsecond, balancing is
//! not worth optimising and policies can afford to be simple and per worker.
//!
//! Groups of 3 (a typical web tier) and 100 (a large pool) servers, all up, or with one
//! server down so every lap of the cursor skips it once, as the proxy's `acquire` does;
//! then every policy's pick over the same groups.

use divan::{black_box, Bencher};
use ringway::balance::{Balancer, Tried};
use ringway::config::Config;
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

/// Every server is usable.
#[divan::bench(args = SERVERS)]
fn all_up(bencher: Bencher, n: usize) {
    let c = config(n);
    let balancer = Balancer::new(&c, 0);
    let group = &c.upstreams[0];
    let now = Instant::now();
    bencher
        .bench_local(|| balancer.pick(0, black_box(group), Tried::default(), None, now, |_| true));
}

/// The middle server is down; the cursor steps over it once per lap.
#[divan::bench(args = SERVERS)]
fn one_down(bencher: Bencher, n: usize) {
    let c = config(n);
    let balancer = Balancer::new(&c, 0);
    let group = &c.upstreams[0];
    let down = group.servers[n / 2];
    let now = Instant::now();
    bencher.bench_local(|| {
        balancer.pick(0, black_box(group), Tried::default(), None, now, |id| {
            black_box(id) != down
        })
    });
}

/// One policy's pick, all servers up, half of them with a request in flight and a
/// latency sample; hashing policies get a different key each pick.
fn pick_with(bencher: Bencher, n: usize, policy: &str) {
    let c = config_with(n, policy);
    let balancer = Balancer::new(&c, 0);
    let group = &c.upstreams[0];
    let now = Instant::now();
    for id in group.servers.iter().take(n / 2) {
        balancer.start(*id);
        balancer.observe_latency(*id, std::time::Duration::from_micros(300), now);
    }
    let mut key = 0u64;
    bencher.bench_local(|| {
        key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
        balancer.pick(
            0,
            black_box(group),
            Tried::default(),
            Some(key),
            now,
            |_| true,
        )
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

//! Decides whether round-robin picking needs anything smarter than its modulo walk:
//! if a pick over a large group, with a down server to skip, stays in the nanoseconds,
//! balancing is not worth optimising and policies can afford to be simple.
//!
//! Groups of 3 (a typical web tier) and 100 (a large pool) servers, all up, or with one
//! server down so every lap of the cursor skips it once, as the proxy's `acquire` does.

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
    let servers: Vec<String> = (0..n)
        .map(|i| format!("\"127.0.0.1:{}\"", 10_000 + i))
        .collect();
    let text = format!(
        "[upstreams.web]\nservers = [{}]\n[[routes]]\nupstream = \"web\"\n",
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

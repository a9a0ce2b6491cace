//! Server selection: exact round-robin order per worker and failover past dead servers.

use crate::support::{config_for, dead_addr, start_proxy, Client, Mode, Upstream};

fn names(c: &mut Client, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = c.get(&format!("/{i}"));
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            r.text().split(':').next().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn round_robin_visits_servers_in_order_with_one_worker() {
    let ups: Vec<Upstream> = ["a", "b", "c"]
        .iter()
        .map(|n| Upstream::start(n, Mode::Ok))
        .collect();
    let addrs: Vec<_> = ups.iter().map(Upstream::addr).collect();
    let (_proxy, addr) = start_proxy(&config_for(&addrs));
    let mut c = Client::connect(addr);
    // Worker 0's cursor starts at the first server.
    assert_eq!(
        names(&mut c, 9),
        ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
    );
    for up in &ups {
        assert_eq!(up.requests(), 3);
    }
}

#[test]
fn round_robin_order_holds_across_client_connections() {
    let ups: Vec<Upstream> = ["a", "b", "c"]
        .iter()
        .map(|n| Upstream::start(n, Mode::Ok))
        .collect();
    let addrs: Vec<_> = ups.iter().map(Upstream::addr).collect();
    let (_proxy, addr) = start_proxy(&config_for(&addrs));
    let got: Vec<String> = (0..6)
        .map(|_| names(&mut Client::connect(addr), 1).remove(0))
        .collect();
    assert_eq!(got, ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn failover_with_one_dead_and_one_live_server_serves_every_request() {
    let live = Upstream::start("live", Mode::Ok);
    let (_proxy, addr) = start_proxy(&config_for(&[dead_addr(), live.addr()]));
    let mut c = Client::connect(addr);
    let got = names(&mut c, 10);
    assert!(got.iter().all(|n| n == "live"), "{got:?}");
    assert_eq!(live.requests(), 10);
}

#[test]
fn failover_keeps_working_when_dead_servers_are_retried_every_time() {
    // max_fails high: the dead servers are never marked down, so every request that
    // lands on one must fail over within the same request.
    let live = Upstream::start("live", Mode::Ok);
    let config =
        crate::support::config_with(&[dead_addr(), dead_addr(), live.addr()], "max_fails = 1000");
    let (_proxy, addr) = start_proxy(&config);
    let mut c = Client::connect(addr);
    let got = names(&mut c, 9);
    assert!(got.iter().all(|n| n == "live"), "{got:?}");
}

//! Balancing policies end to end, as the README's "Load balancing" table describes them:
//! weighted round robin (shares and nginx's smooth order), weighted random, `ip_hash`,
//! `consistent_hash` (header, cookie and path keys; what moves when a server goes),
//! `least_conn` / `least_time` / `p2c` against a slow server, `max_connections` and
//! `backup` servers.
//!
//! Counts come from the upstreams' own counters. Loops are bounded, every read has a
//! timeout, and nothing asserts timing: a slow server is only a reason for a policy to
//! prefer another, with generous bounds.

use crate::support::{dead_addr, start_proxy, Client, Mode, Upstream, IO_TIMEOUT};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// A delaying upstream that tracks its peak concurrency
// ---------------------------------------------------------------------------------

/// How often an idle connection thread checks whether its upstream was dropped.
const TICK: Duration = Duration::from_millis(100);
/// The delay of a "slow" server: long next to a loopback round trip, short for a test.
const SLOW: Duration = Duration::from_millis(100);

struct TimedShared {
    name: String,
    delay: Duration,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    stop: AtomicBool,
}

/// A keep-alive origin for bodiless requests that waits `delay` before each answer and
/// records how many requests it held at once.
struct Timed {
    addr: SocketAddr,
    shared: Arc<TimedShared>,
    accept: Option<JoinHandle<()>>,
}

impl Timed {
    fn start(name: &str, delay: Duration) -> Timed {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let shared = Arc::new(TimedShared {
            name: name.to_string(),
            delay,
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve_timed(&s, stream));
            }
        });
        Timed {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered (counted before the answer is written).
    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Most requests held at the same time.
    fn peak(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve_timed(s: &TimedShared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let mut idle_since = Instant::now();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            // The request is held from here until just before its answer is written,
            // so the count never lags behind the proxy's own.
            let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(s.delay);
            s.requests.fetch_add(1, Ordering::SeqCst);
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            let body = format!("{}\n", s.name);
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(out.as_bytes()).is_err() {
                return;
            }
            idle_since = Instant::now();
            continue;
        }
        if s.stop.load(Ordering::SeqCst) || idle_since.elapsed() > Duration::from_secs(30) {
            return;
        }
        match stream.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A server entry: `"addr"`, or an inline table when it has options.
fn server(addr: SocketAddr, options: &str) -> String {
    if options.is_empty() {
        format!("\"{addr}\"")
    } else {
        format!("{{ addr = \"{addr}\", {options} }}")
    }
}

/// A config with one group `web` of these server entries, routed from `/`.
fn group(workers: usize, balance: &str, extra: &str, servers: &[String]) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\n\n\
         [upstreams.web]\nbalance = \"{balance}\"\n{extra}\nservers = [{}]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        servers.join(", ")
    )
}

fn plain(addrs: &[SocketAddr]) -> Vec<String> {
    addrs.iter().map(|&a| server(a, "")).collect()
}

fn start(names: &[&str]) -> Vec<Upstream> {
    names.iter().map(|n| Upstream::start(n, Mode::Ok)).collect()
}

fn addrs(ups: &[Upstream]) -> Vec<SocketAddr> {
    ups.iter().map(Upstream::addr).collect()
}

fn counts(ups: &[Upstream]) -> Vec<usize> {
    ups.iter().map(Upstream::requests).collect()
}

/// Runs one exchange with `send` and returns the index of the one upstream whose
/// request counter moved by one.
fn which(ups: &[Upstream], send: impl FnOnce() -> u16) -> usize {
    let before = counts(ups);
    let status = send();
    assert_eq!(status, 200);
    let after = counts(ups);
    let moved: Vec<usize> = (0..ups.len()).filter(|&i| after[i] != before[i]).collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one upstream answers: {before:?} -> {after:?}"
    );
    assert_eq!(after[moved[0]], before[moved[0]] + 1);
    moved[0]
}

/// `n` GETs on one keep-alive connection, each answered 200.
fn get_n(addr: SocketAddr, n: usize) {
    let mut c = Client::connect(addr);
    for i in 0..n {
        let r = c.get(&format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

/// `threads` concurrent clients, each sending `each` GETs on its own keep-alive
/// connection; every one must be answered 200.
fn hammer(addr: SocketAddr, threads: usize, each: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..each {
                    let r = c.get(&format!("/t{t}/{i}"));
                    assert_eq!(r.status, 200, "thread {t} request {i}: {}", r.text());
                }
            });
        }
    });
}

fn share(part: usize, total: usize) -> f64 {
    part as f64 / total as f64
}

fn assert_share(got: usize, total: usize, want: f64, what: &str) {
    let s = share(got, total);
    assert!(
        (s - want).abs() <= 0.05 * want,
        "{what}: {got}/{total} = {s:.3}, want {want} within 5%"
    );
}

// ---------------------------------------------------------------------------------
// Weighted round robin and random
// ---------------------------------------------------------------------------------

#[test]
fn weighted_round_robin_three_to_one_over_a_thousand_requests() {
    let ups = start(&["heavy", "light"]);
    let servers = vec![
        server(ups[0].addr(), "weight = 3"),
        server(ups[1].addr(), ""),
    ];
    let (_proxy, addr) = start_proxy(&group(1, "weighted_round_robin", "", &servers));
    hammer(addr, 4, 250);
    let got = counts(&ups);
    assert_eq!(got.iter().sum::<usize>(), 1000);
    assert_share(got[0], 1000, 0.75, "heavy");
    assert_share(got[1], 1000, 0.25, "light");
}

#[test]
fn smooth_weighted_round_robin_orders_weights_5_1_1_as_a_a_b_a_c_a_a() {
    let ups = start(&["a", "b", "c"]);
    let servers = vec![
        server(ups[0].addr(), "weight = 5"),
        server(ups[1].addr(), ""),
        server(ups[2].addr(), ""),
    ];
    let (_proxy, addr) = start_proxy(&group(1, "weighted_round_robin", "", &servers));
    let mut c = Client::connect(addr);
    let names = ["a", "b", "c"];
    let order: String = (0..14)
        .map(|_| names[which(&ups, || c.get("/").status)])
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        order, "a a b a c a a a a b a c a a",
        "nginx's smooth order, repeated"
    );
}

#[test]
fn random_with_weights_three_to_one_stays_within_five_percent() {
    let ups = start(&["heavy", "light"]);
    let servers = vec![
        server(ups[0].addr(), "weight = 3"),
        server(ups[1].addr(), ""),
    ];
    let (_proxy, addr) = start_proxy(&group(1, "random", "", &servers));
    hammer(addr, 4, 1000);
    let got = counts(&ups);
    assert_eq!(got.iter().sum::<usize>(), 4000);
    assert_share(got[0], 4000, 0.75, "heavy");
    assert_share(got[1], 4000, 0.25, "light");
}

// ---------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------

#[test]
fn ip_hash_keeps_each_client_address_on_one_server_and_spreads_addresses() {
    let ups = start(&["a", "b", "c"]);
    let (_proxy, addr) = start_proxy(&group(1, "ip_hash", "", &plain(&addrs(&ups))));
    let mut by_client = BTreeMap::new();
    for last in 1..=9u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let mut picks = BTreeSet::new();
        for i in 0..6 {
            // A fresh connection (and source port) each time: only the address counts.
            picks.insert(which(&ups, || {
                Client::connect_from(ip, addr).get(&format!("/{i}")).status
            }));
        }
        assert_eq!(picks.len(), 1, "{ip} moved between servers: {picks:?}");
        by_client.insert(ip, *picks.first().expect("a pick"));
    }
    let used: BTreeSet<usize> = by_client.values().copied().collect();
    assert!(
        used.len() >= 2,
        "nine client addresses all hashed to one server: {by_client:?}"
    );
    // Still the same mapping later, after all the other clients.
    for (ip, server) in &by_client {
        assert_eq!(
            which(&ups, || Client::connect_from(*ip, addr)
                .get("/again")
                .status),
            *server,
            "{ip}"
        );
    }
}

/// Sends `GET /k` with `x-user: user-K` for every key on one connection and returns
/// the server index each key reached, from what each upstream recorded.
fn users_by_server(addr: SocketAddr, ups: &[Upstream], keys: usize) -> BTreeMap<String, usize> {
    let before: Vec<usize> = ups.iter().map(|u| u.seen().len()).collect();
    let mut c = Client::connect(addr);
    for k in 0..keys {
        let raw = format!("GET /k HTTP/1.1\r\nHost: t\r\nX-User: user-{k}\r\n\r\n");
        assert_eq!(c.request(raw.as_bytes()).status, 200, "user-{k}");
    }
    let mut map = BTreeMap::new();
    for (i, u) in ups.iter().enumerate() {
        for seen in &u.seen()[before[i]..] {
            let user = seen.headers.get("x-user").expect("x-user").to_string();
            assert!(map.insert(user, i).is_none(), "a key was served twice");
        }
    }
    assert_eq!(map.len(), keys, "every key reached exactly one server");
    map
}

#[test]
fn consistent_hash_on_a_header_moves_only_the_removed_servers_keys() {
    const KEYS: usize = 1000;
    const N: usize = 5;
    let ups = start(&["s0", "s1", "s2", "s3", "s4"]);
    let all = addrs(&ups);
    let extra = "hash_key = \"$header_x_user\"";

    let (proxy, addr) = start_proxy(&group(1, "consistent_hash", extra, &plain(&all)));
    let before = users_by_server(addr, &ups, KEYS);
    // The same keys again: nothing moves while the servers stay.
    let again = users_by_server(addr, &ups, KEYS);
    assert_eq!(before, again, "a key sticks to its server");
    drop(proxy);

    let mut per_server = [0usize; N];
    for &s in before.values() {
        per_server[s] += 1;
    }
    assert!(
        per_server.iter().all(|&n| n > KEYS / N / 3),
        "keys spread over all servers: {per_server:?}"
    );

    // The same fleet without server 2, listed in another order.
    let removed = 2;
    let rest = vec![all[4], all[0], all[3], all[1]];
    let (_proxy, addr) = start_proxy(&group(1, "consistent_hash", extra, &plain(&rest)));
    let after = users_by_server(addr, &ups, KEYS);
    let mut moved = 0;
    for (user, &was) in &before {
        let now = after[user];
        assert_ne!(now, removed, "{user} still reached the removed server");
        if was == removed {
            moved += 1;
        } else {
            assert_eq!(now, was, "{user} moved although its server stayed");
        }
    }
    assert_eq!(moved, per_server[removed]);
    assert!(
        moved as f64 <= 1.3 / N as f64 * KEYS as f64,
        "{moved} of {KEYS} keys moved, more than 1.3/N"
    );
    let targets: BTreeSet<usize> = before
        .iter()
        .filter(|(_, &s)| s == removed)
        .map(|(u, _)| after[u])
        .collect();
    assert!(
        targets.len() >= 2,
        "the removed server's keys spread over the others: {targets:?}"
    );
}

#[test]
fn consistent_hash_without_the_key_falls_back_to_round_robin() {
    let ups = start(&["a", "b", "c"]);
    let extra = "hash_key = \"$header_x_user\"";
    let (_proxy, addr) = start_proxy(&group(1, "consistent_hash", extra, &plain(&addrs(&ups))));
    get_n(addr, 30);
    assert_eq!(counts(&ups), [10, 10, 10]);
}

#[test]
fn consistent_hash_on_a_cookie_or_the_path_routes_each_key_stably() {
    for (key, request) in [
        (
            "$cookie_session",
            &(|k: usize, j: usize| {
                format!(
                    "GET /page/{j} HTTP/1.1\r\nHost: t\r\nCookie: theme=dark; session=s{k}; n={j}\r\n\r\n"
                )
            }) as &dyn Fn(usize, usize) -> String,
        ),
        ("$uri", &|k: usize, j: usize| {
            format!("GET /item/{k}?nonce={j} HTTP/1.1\r\nHost: t\r\nCookie: n={j}\r\n\r\n")
        }),
    ] {
        let ups = start(&["a", "b", "c", "d"]);
        let extra = format!("hash_key = \"{key}\"");
        let (_proxy, addr) =
            start_proxy(&group(1, "consistent_hash", &extra, &plain(&addrs(&ups))));
        let mut used = BTreeSet::new();
        for k in 0..24 {
            let mut picks = BTreeSet::new();
            for j in 0..4 {
                picks.insert(which(&ups, || {
                    Client::connect(addr)
                        .request(request(k, j).as_bytes())
                        .status
                }));
            }
            assert_eq!(picks.len(), 1, "{key}: key {k} moved: {picks:?}");
            used.extend(picks);
        }
        assert!(used.len() >= 2, "{key}: 24 keys all on one server");
    }
}

// ---------------------------------------------------------------------------------
// Load-aware policies
// ---------------------------------------------------------------------------------

/// One slow and one fast server under `policy`, 8 clients × 25 requests; returns the
/// requests each got (slow, fast).
fn slow_and_fast(policy: &str) -> (usize, usize) {
    let slow = Timed::start("slow", SLOW);
    let fast = Timed::start("fast", Duration::ZERO);
    let servers = plain(&[slow.addr(), fast.addr()]);
    let (_proxy, addr) = start_proxy(&group(1, policy, "", &servers));
    hammer(addr, 8, 25);
    let got = (slow.requests(), fast.requests());
    assert_eq!(got.0 + got.1, 200, "{policy}: every request answered once");
    got
}

#[test]
fn least_conn_sends_a_slow_server_few_requests() {
    let (slow, fast) = slow_and_fast("least_conn");
    assert!(
        share(slow, 200) < 0.25,
        "least_conn: slow {slow}, fast {fast}"
    );
}

#[test]
fn least_time_sends_a_slow_server_few_requests() {
    let (slow, fast) = slow_and_fast("least_time");
    assert!(
        share(slow, 200) < 0.25,
        "least_time: slow {slow}, fast {fast}"
    );
}

#[test]
fn p2c_prefers_the_idle_server_when_one_is_slow() {
    let (slow, fast) = slow_and_fast("p2c");
    assert!(share(slow, 200) < 0.25, "p2c: slow {slow}, fast {fast}");
}

#[test]
fn p2c_spreads_requests_between_two_equal_servers() {
    let ups = start(&["a", "b"]);
    let (_proxy, addr) = start_proxy(&group(1, "p2c", "", &plain(&addrs(&ups))));
    get_n(addr, 400);
    let got = counts(&ups);
    assert_eq!(got.iter().sum::<usize>(), 400);
    assert!(
        got.iter().all(|&n| n >= 100),
        "both equal servers get a real share: {got:?}"
    );
}

// ---------------------------------------------------------------------------------
// Limits and backups
// ---------------------------------------------------------------------------------

#[test]
fn max_connections_caps_concurrent_requests_and_the_rest_go_elsewhere() {
    let capped = Timed::start("capped", SLOW / 2);
    let other = Timed::start("other", Duration::ZERO);
    let servers = vec![
        server(capped.addr(), "max_connections = 2"),
        server(other.addr(), ""),
    ];
    let (_proxy, addr) = start_proxy(&group(1, "round_robin", "", &servers));
    hammer(addr, 8, 10);
    assert_eq!(capped.requests() + other.requests(), 80);
    assert_eq!(
        capped.peak(),
        2,
        "the capped server held at most 2 (and was used up to its cap)"
    );
    assert!(
        other.requests() > 40,
        "the overflow went to the other server: capped {}, other {}",
        capped.requests(),
        other.requests()
    );
}

#[test]
fn max_connections_holds_across_workers() {
    let capped = Timed::start("capped", SLOW / 2);
    let other = Timed::start("other", Duration::ZERO);
    let servers = vec![
        server(capped.addr(), "max_connections = 2"),
        server(other.addr(), ""),
    ];
    let (_proxy, addr) = start_proxy(&group(2, "round_robin", "", &servers));
    hammer(addr, 8, 10);
    assert_eq!(capped.requests() + other.requests(), 80);
    assert!(
        capped.peak() <= 2,
        "max_connections is process-wide: peak {}",
        capped.peak()
    );
    assert!(other.requests() > 0);
}

#[test]
fn a_backup_gets_nothing_while_the_primary_is_up() {
    let ups = start(&["primary", "backup"]);
    let servers = vec![
        server(ups[0].addr(), ""),
        server(ups[1].addr(), "backup = true"),
    ];
    for policy in [
        "round_robin",
        "weighted_round_robin",
        "least_conn",
        "random",
    ] {
        let (_proxy, addr) = start_proxy(&group(1, policy, "", &servers));
        let before = counts(&ups);
        get_n(addr, 20);
        hammer(addr, 4, 10);
        let after = counts(&ups);
        assert_eq!(after[0] - before[0], 60, "{policy}: all to the primary");
        assert_eq!(after[1], before[1], "{policy}: none to the backup");
    }
}

#[test]
fn a_backup_serves_every_request_while_the_primary_is_down() {
    let backup = Upstream::start("backup", Mode::Ok);
    let servers = vec![
        server(dead_addr(), ""),
        server(backup.addr(), "backup = true"),
    ];
    let (_proxy, addr) = start_proxy(&group(1, "round_robin", "", &servers));
    let mut c = Client::connect(addr);
    for i in 0..20 {
        let r = c.get(&format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), format!("backup: GET /{i}\n"));
    }
    assert_eq!(backup.requests(), 20);
}

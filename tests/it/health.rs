//! Health: active checks (a killed or failing server leaves the rotation on every
//! worker and rejoins after `rise` passes, `start = "down"`), passive health
//! (`max_fails`, back-off, `fail_on_status`), and the transition log lines, each once.
//!
//! Whether a server gets traffic is read from its own counters, and "marked down" is
//! waited for by counting the failed checks it answered: no timing is asserted.
//! Log lines are read from the real binary's stderr.

use crate::support::{poll_until, start_proxy, try_get, Binary, Client, Response};
use crate::switchable::{Answer, Backend};
use std::net::SocketAddr;
use std::time::Duration;

/// Bound for every wait on the proxy: generous, since the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(10);

/// `[upstreams.web.health]` on `/health` with these settings.
fn checks(interval: &str, fall: usize, rise: usize) -> String {
    format!(
        "[upstreams.web.health]\npath = \"/health\"\ninterval = \"{interval}\"\n\
         fall = {fall}\nrise = {rise}\n"
    )
}

/// One group `web` over `servers`, routed from `/`; `upstream_extra` goes into
/// `[upstreams.web]` (and may end with its `.health` table).
fn config(listen: &str, workers: usize, servers: &[SocketAddr], upstream_extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[server]\nlisten = \"{listen}\"\nworkers = {workers}\n\n\
         [upstreams.web]\nservers = [{}]\n{upstream_extra}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        list.join(", ")
    )
}

/// A keep-alive client that counts failed requests instead of panicking, and
/// reconnects when the proxy closes the connection.
struct Load {
    addr: SocketAddr,
    client: Option<Client>,
    sent: usize,
    failures: Vec<String>,
}

impl Load {
    fn new(addr: SocketAddr) -> Load {
        Load {
            addr,
            client: None,
            sent: 0,
            failures: Vec::new(),
        }
    }

    /// One GET; a response other than a complete 200 is recorded as a failure.
    fn get(&mut self) -> Option<Response> {
        let addr = self.addr;
        let c = self.client.get_or_insert_with(|| Client::connect(addr));
        self.sent += 1;
        c.send(format!("GET /load/{} HTTP/1.1\r\nHost: t\r\n\r\n", self.sent).as_bytes());
        let r = match c.try_read_response(false) {
            Ok(r) if r.complete => r,
            Ok(r) => {
                self.client = None;
                self.failures
                    .push(format!("request {}: truncated {}", self.sent, r.status));
                return None;
            }
            Err(e) => {
                self.client = None;
                self.failures.push(format!("request {}: {e}", self.sent));
                return None;
            }
        };
        if r.closes() {
            self.client = None;
        }
        if r.status != 200 {
            self.failures
                .push(format!("request {}: {} {}", self.sent, r.status, r.text()));
            return None;
        }
        Some(r)
    }

    /// `n` GETs.
    fn run(&mut self, n: usize) {
        for _ in 0..n {
            self.get();
        }
    }

    /// GETs until `cond` holds; false if it did not within `PATIENCE`.
    fn run_until(&mut self, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            self.get();
        }
        cond()
    }

    fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed; first: {:?}",
            self.failures.len(),
            self.sent,
            &self.failures[..self.failures.len().min(5)]
        );
    }
}

/// `n` fresh client connections with `per` GETs each, every one answered 200, so
/// SO_REUSEPORT spreads them over every worker.
fn spread(addr: SocketAddr, n: usize, per: usize) {
    for i in 0..n {
        let mut c = Client::connect(addr);
        for k in 0..per {
            let r = c.get(&format!("/spread/{i}/{k}"));
            assert_eq!(r.status, 200, "connection {i} request {k}: {}", r.text());
        }
    }
}

#[test]
fn a_killed_server_costs_no_request_is_skipped_after_fall_checks_and_rejoins() {
    const FALL: usize = 2;
    let a = Backend::start("a", Answer::Ok);
    let mut b = Backend::start("b", Answer::Ok);
    let c = Backend::start("c", Answer::Ok);
    let servers = [a.addr(), b.addr(), c.addr()];
    // Passive health off (in effect), so it is the active checker that takes b out.
    let extra = format!("max_fails = 1000\n{}", checks("100ms", FALL, 2));
    let (_proxy, addr) = start_proxy(&config("127.0.0.1:0", 1, &servers, &extra));
    let mut load = Load::new(addr);

    load.run(300);
    assert!(
        a.requests() > 0 && b.requests() > 0 && c.requests() > 0,
        "every server takes a share"
    );

    // Kill b for real: its connections close and its port refuses. Connect failures
    // always fail over, so no client notices.
    let (killed_at, conns) = (b.requests(), b.proxied_conns());
    b.kill();
    // The checker checks every server each interval, so `fall + 3` more checks of `a`
    // mean b's checks have failed `fall` times, with intervals to spare for the
    // verdict to reach the worker.
    let a_checks = a.checks();
    assert!(
        load.run_until(|| a.checks() >= a_checks + FALL + 3),
        "the checker stopped checking"
    );

    // Bring its port back crashed: it accepts, reads and resets everything, health
    // checks included, so anything still sent to it is counted. Nothing may be.
    b.crash();
    b.restart();
    let failed = b.checks_failed();
    load.run(500);
    assert!(
        load.run_until(|| b.checks_failed() >= failed + 2),
        "the checker kept checking b"
    );
    assert_eq!(
        b.requests(),
        killed_at,
        "a server failing its checks still got requests"
    );
    assert_eq!(b.proxied_conns(), conns, "or connections");

    // Back to health: after `rise` passes it takes traffic again.
    b.heal();
    assert!(
        load.run_until(|| b.requests() > killed_at),
        "b did not get traffic again after recovering"
    );
    let rest = 2000usize.saturating_sub(load.sent);
    load.run(rest);
    load.assert_no_failures();
    assert!(load.sent >= 2000);
}

#[test]
fn a_server_failing_its_checks_gets_no_traffic_on_either_worker() {
    const FALL: usize = 2;
    let a = Backend::start("a", Answer::Ok);
    let b = Backend::start("b", Answer::Ok);
    let (_proxy, addr) = start_proxy(&config(
        "127.0.0.1:0",
        2,
        &[a.addr(), b.addr()],
        &checks("100ms", FALL, 2),
    ));
    spread(addr, 50, 2);
    assert!(b.requests() > 0, "b takes a share while healthy");

    b.set_health(500);
    let failed = b.checks_failed();
    assert!(
        poll_until(PATIENCE, || b.checks_failed() >= failed + FALL + 2),
        "the checker kept checking b"
    );
    let (a_before, b_before) = (a.requests(), b.requests());
    spread(addr, 200, 2);
    assert_eq!(
        b.requests(),
        b_before,
        "b answers requests but fails its checks: no worker may send it any"
    );
    assert_eq!(a.requests() - a_before, 400);
}

#[test]
fn servers_that_start_down_get_no_traffic_until_rise_checks_pass() {
    const RISE: usize = 3;
    let b = Backend::start("b", Answer::Ok);
    b.set_health(500);
    let extra = format!("{}start = \"down\"\n", checks("50ms", 2, RISE));
    let (_proxy, addr) = start_proxy(&config("127.0.0.1:0", 1, &[b.addr()], &extra));

    // Checks run and fail: the server stays out, and clients get 503.
    let mut answered = 0;
    let checked = poll_until(PATIENCE, || {
        let r = try_get(addr, "/early").expect("the proxy answers");
        assert_eq!(r.status, 503, "{}", r.text());
        answered += 1;
        b.checks_failed() >= 3 && answered >= 10
    });
    assert!(checked, "the checker checked b");
    assert_eq!(b.requests(), 0, "a server that starts down got traffic");

    b.set_health(200);
    let up = poll_until(PATIENCE, || {
        let r = try_get(addr, "/later").expect("the proxy answers");
        assert!(matches!(r.status, 200 | 503), "{} {}", r.status, r.text());
        r.status == 200
    });
    assert!(up, "b never came up after passing its checks");
    let first = &b.seen()[0];
    assert!(
        first.checks_passed_before >= RISE,
        "the first request came after {} passed checks, rise is {RISE}",
        first.checks_passed_before
    );
}

// ---------------------------------------------------------------------------------
// The real binary, for its log lines
// ---------------------------------------------------------------------------------

/// Runs the binary on `config("127.0.0.1:0", workers, servers, upstream_extra)`.
fn run_binary(name: &str, workers: usize, servers: &[SocketAddr], upstream_extra: &str) -> Binary {
    Binary::start(
        &format!("health-{name}"),
        &config("127.0.0.1:0", workers, servers, upstream_extra),
    )
}

fn went_down(server: SocketAddr) -> String {
    format!("server {server}: up → down")
}

fn came_up(server: SocketAddr) -> String {
    format!("server {server}: down → up")
}

#[test]
fn every_active_transition_is_logged_exactly_once() {
    let a = Backend::start("a", Answer::Ok);
    let b = Backend::start("b", Answer::Ok);
    let proxy = run_binary(
        "transitions",
        2,
        &[a.addr(), b.addr()],
        &checks("50ms", 2, 2),
    );
    assert!(
        poll_until(PATIENCE, || b.checks_passed() >= 2),
        "the checker runs"
    );

    b.set_health(500);
    assert!(
        poll_until(PATIENCE, || !proxy.lines(&went_down(b.addr())).is_empty()),
        "no mark-down logged: {}",
        proxy.log()
    );
    b.set_health(200);
    assert!(
        poll_until(PATIENCE, || !proxy.lines(&came_up(b.addr())).is_empty()),
        "no recovery logged: {}",
        proxy.log()
    );
    // Several more checks, all passing: nothing more may be logged for b.
    let checked = b.checks();
    assert!(poll_until(PATIENCE, || b.checks() >= checked + 6));
    // Traffic on both workers must not add transitions either.
    spread(proxy.addr(), 20, 2);

    let log = proxy.log();
    let down = proxy.lines(&went_down(b.addr()));
    assert_eq!(down.len(), 1, "{log}");
    assert!(down[0].contains("status 500"), "the reason: {}", down[0]);
    assert_eq!(proxy.lines(&came_up(b.addr())).len(), 1, "{log}");
    assert!(
        proxy.lines(&format!("server {}:", a.addr())).is_empty(),
        "a healthy server had a transition: {log}"
    );
}

#[test]
fn passive_health_skips_a_failing_server_after_max_fails_and_logs_it_once() {
    const WORKERS: usize = 2;
    const MAX_FAILS: usize = 2;
    // Accepts and closes at once: each attempt is counted, and fails before a response.
    let dead = Backend::start("dead", Answer::CloseOnAccept);
    let live = Backend::start("live", Answer::Ok);
    let proxy = run_binary(
        "passive",
        WORKERS,
        &[dead.addr(), live.addr()],
        "max_fails = 2\nbackoff = [\"500ms\", \"2s\"]\n",
    );
    let marked = went_down(dead.addr());
    // Fresh connections, so both workers take part; each GET is retried on `live`.
    let mut sent = 0;
    let logged = poll_until(PATIENCE, || {
        let r = try_get(proxy.addr(), "/p").expect("the proxy answers");
        assert_eq!(r.status, 200, "a GET whose attempt was closed is retried");
        sent += 1;
        !proxy.lines(&marked).is_empty()
    });
    assert!(logged, "no mark-down logged: {}", proxy.log());
    for _ in 0..40 {
        let r = try_get(proxy.addr(), "/p").expect("the proxy answers");
        assert_eq!(r.status, 200);
    }
    // When the 500ms rest ends, one request probes it; that failure sends it straight
    // back down for the next step (2s), without waiting for `max_fails`.
    let probed = format!("server {}: probation → down", dead.addr());
    let again = poll_until(PATIENCE, || {
        let r = try_get(proxy.addr(), "/p").expect("the proxy answers");
        assert_eq!(r.status, 200);
        sent += 1;
        !proxy.lines(&probed).is_empty()
    });
    assert!(again, "no probation mark-down logged: {}", proxy.log());
    // Each worker gives up on it after at most `max_fails` attempts (fewer once the
    // other's broadcast arrives), plus one probation probe each when the first rest
    // ends; a proxy that did not skip it would have sent it half of the requests.
    let attempts = dead.accepted();
    let requests = sent + 40;
    assert!(
        (MAX_FAILS..=WORKERS * MAX_FAILS + WORKERS).contains(&attempts),
        "{attempts} attempts reached the failing server over {requests} requests"
    );
    assert!(
        requests >= 50,
        "only {requests} requests: the test proved little"
    );
    let log = proxy.log();
    let lines = proxy.lines(&marked);
    assert_eq!(lines.len(), 1, "one mark-down, logged once: {log}");
    assert!(
        lines[0].contains("connection closed before a response")
            && lines[0].contains("back-off step 1"),
        "the reason and step: {}",
        lines[0]
    );
    let lines = proxy.lines(&probed);
    assert_eq!(lines.len(), 1, "one probation failure, logged once: {log}");
    assert!(lines[0].contains("back-off step 2"), "{}", lines[0]);
    assert!(
        proxy.lines(&format!("server {}:", live.addr())).is_empty(),
        "{log}"
    );
}

#[test]
fn passive_health_marks_a_refusing_server_down_once_after_max_fails() {
    let live = Backend::start("live", Answer::Ok);
    let refusing = crate::support::dead_addr();
    let proxy = run_binary(
        "refusing",
        2,
        &[refusing, live.addr()],
        "max_fails = 2\nbackoff = [\"30s\"]\n",
    );
    let marked = went_down(refusing);
    // Connect failures always fail over: no client sees one.
    let logged = poll_until(PATIENCE, || {
        let r = try_get(proxy.addr(), "/c").expect("the proxy answers");
        assert_eq!(r.status, 200);
        !proxy.lines(&marked).is_empty()
    });
    assert!(logged, "no mark-down logged: {}", proxy.log());
    for _ in 0..40 {
        assert_eq!(try_get(proxy.addr(), "/c").expect("an answer").status, 200);
    }
    let lines = proxy.lines(&marked);
    assert_eq!(lines.len(), 1, "{}", proxy.log());
    assert!(lines[0].contains("connect failed"), "{}", lines[0]);
    assert!(
        live.requests() >= 41,
        "every request ended at the live server"
    );
}

#[test]
fn a_passive_mark_down_and_the_recovery_after_it_are_each_logged_once() {
    let flaky = Backend::start("flaky", Answer::CloseOnAccept);
    let live = Backend::start("live", Answer::Ok);
    let proxy = run_binary(
        "recovery",
        2,
        &[flaky.addr(), live.addr()],
        "max_fails = 1\nbackoff = [\"1s\"]\n",
    );
    let get_ok = || {
        let r = try_get(proxy.addr(), "/r").expect("the proxy answers");
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let down = went_down(flaky.addr());
    let logged = poll_until(PATIENCE, || {
        get_ok();
        !proxy.lines(&down).is_empty()
    });
    assert!(logged, "no mark-down logged: {}", proxy.log());

    // It recovers while resting; after the rest it is on probation, one request probes
    // it, succeeds, and every worker may use it again.
    flaky.set_answer(Answer::Ok);
    let probation = format!("server {}: down → probation", flaky.addr());
    let up = format!("server {}: probation → up", flaky.addr());
    let logged = poll_until(PATIENCE, || {
        get_ok();
        !proxy.lines(&up).is_empty()
    });
    assert!(logged, "no recovery logged: {}", proxy.log());
    let before = flaky.requests();
    for _ in 0..40 {
        get_ok();
    }
    assert!(
        flaky.requests() > before,
        "the recovered server takes traffic"
    );

    let log = proxy.log();
    assert_eq!(proxy.lines(&down).len(), 1, "{log}");
    assert_eq!(proxy.lines(&probation).len(), 1, "{log}");
    assert_eq!(proxy.lines(&up).len(), 1, "{log}");
    assert!(proxy.lines(&came_up(flaky.addr())).is_empty(), "{log}");
}

#[test]
fn fail_on_status_marks_a_server_answering_500_down_after_max_fails() {
    let bad = Backend::start("bad", Answer::Status(500));
    let good = Backend::start("good", Answer::Ok);
    let proxy = run_binary(
        "fail-on-status",
        1,
        &[bad.addr(), good.addr()],
        "max_fails = 2\nfail_on_status = [500]\nfail_timeout = \"30s\"\n",
    );
    let marked = went_down(bad.addr());
    let mut c = Client::connect(proxy.addr());
    let mut relayed = 0;
    let logged = poll_until(PATIENCE, || {
        let r = c.get("/s");
        match r.status {
            200 => {}
            500 => {
                // Not retried: the 500 itself reaches the client.
                assert_eq!(r.text(), "bad: status 500\n");
                relayed += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
        !proxy.lines(&marked).is_empty()
    });
    assert!(logged, "no mark-down logged: {}", proxy.log());
    for _ in 0..20 {
        assert_eq!(c.get("/s").text(), "good\n");
    }
    assert_eq!(bad.requests(), 2, "exactly max_fails requests reached it");
    assert_eq!(relayed, 2);
    let lines = proxy.lines(&marked);
    assert_eq!(lines.len(), 1, "{}", proxy.log());
    assert!(
        lines[0].contains("error status"),
        "the reason: {}",
        lines[0]
    );
    assert!(good.requests() >= 20);
}

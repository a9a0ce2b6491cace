//! Upstream keep-alive: many client requests ride few upstream connections, and a
//! pooled connection the upstream closed is retried on a fresh one.

use crate::support::{proxy_to, Client, Mode};

#[test]
fn many_keep_alive_requests_use_few_upstream_connections() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    for i in 0..200 {
        let r = c.get(&format!("/r{i}"));
        assert_eq!(r.text(), format!("a: GET /r{i}\n"));
    }
    assert_eq!(up.requests(), 200);
    assert!(
        up.accepted() <= 2,
        "upstream accepted {} connections",
        up.accepted()
    );
}

#[test]
fn sequential_client_connections_share_pooled_upstream_connections() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    for i in 0..50 {
        let mut c = Client::connect(addr);
        let r = c.request(
            format!("GET /c{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
        assert!(r.closes());
        c.assert_closed();
    }
    assert_eq!(up.requests(), 50);
    assert!(
        up.accepted() <= 2,
        "upstream accepted {} connections",
        up.accepted()
    );
    // The client's `Connection: close` is hop-by-hop: it did not close the upstream side.
    assert!(up.seen().iter().all(|s| !s.headers.has("connection")));
}

#[test]
fn a_pooled_connection_closed_by_the_upstream_is_retried_on_a_fresh_one() {
    let (up, _proxy, addr) = proxy_to(Mode::OkThenClose);
    let mut c = Client::connect(addr);
    for i in 0..20 {
        let r = c.get(&format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), format!("a: GET /{i}\n"));
    }
    assert_eq!(up.requests(), 20);
}

/// A config like `config_for` with extra `[server]` lines.
fn with_server_lines(servers: &[std::net::SocketAddr], lines: &str) -> String {
    crate::support::config_for(servers).replacen(
        "workers = 1\n",
        &format!("workers = 1\n{lines}\n"),
        1,
    )
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let up = crate::support::Upstream::start("a", Mode::Ok);
    let config = with_server_lines(&[up.addr()], "keepalive_timeout = \"300ms\"");
    let (_proxy, addr) = crate::support::start_proxy(&config);
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/one").status, 200);
    // The proxy closes the idle connection on its own; the read then sees EOF.
    c.assert_closed();
}

#[test]
fn requests_spaced_around_the_hot_wait_are_all_answered() {
    // After a response the proxy keeps a read in flight for ringway::proxy::HOT_WAIT
    // (100 ms, plus up to a 50 ms tick), then calls it off and waits without buffers.
    // A request landing just as that read is called off must not be lost.
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    let gaps_ms = [
        0, 5, 40, 80, 95, 100, 105, 110, 120, 130, 140, 150, 160, 180, 250,
    ];
    for (i, gap) in gaps_ms.iter().enumerate() {
        std::thread::sleep(std::time::Duration::from_millis(*gap));
        let r = c.get(&format!("/gap{i}"));
        assert_eq!(
            r.text(),
            format!("a: GET /gap{i}\n"),
            "after a {gap} ms gap"
        );
    }
    assert_eq!(up.requests(), gaps_ms.len());
}

#[test]
fn a_keepalive_timeout_shorter_than_the_hot_wait_still_closes_the_connection() {
    let up = crate::support::Upstream::start("a", Mode::Ok);
    let config = with_server_lines(&[up.addr()], "keepalive_timeout = \"30ms\"");
    let (_proxy, addr) = crate::support::start_proxy(&config);
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/one").status, 200);
    c.assert_closed();
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_header_timeout() {
    let up = crate::support::Upstream::start("a", Mode::Ok);
    let config = with_server_lines(&[up.addr()], "header_timeout = \"300ms\"");
    let (_proxy, addr) = crate::support::start_proxy(&config);
    let mut c = Client::connect(addr);
    c.assert_closed();
    assert_eq!(up.requests(), 0);
}

#[test]
fn a_partial_head_gets_408_after_header_timeout() {
    let up = crate::support::Upstream::start("a", Mode::Ok);
    let config = with_server_lines(&[up.addr()], "header_timeout = \"300ms\"");
    let (_proxy, addr) = crate::support::start_proxy(&config);
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 408);
    assert!(r.closes());
    assert_eq!(up.requests(), 0);
}

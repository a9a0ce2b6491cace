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

//! Upstream failures: dead servers (502, 503 once marked down), stalled ones (504),
//! and connections that end early, before or during the response.

use crate::support::{config_with, dead_addr, proxy_to, start_proxy, Client, Mode};

#[test]
fn a_dead_upstream_gets_502_naming_the_cause() {
    let (_proxy, addr) = start_proxy(&config_with(&[dead_addr()], ""));
    let mut c = Client::connect(addr);
    let r = c.get("/");
    assert_eq!(r.status, 502);
    let text = r.text();
    assert!(text.contains("cannot connect to upstream"), "{text}");
    assert!(text.contains("`web`"), "the body names the group: {text}");
    assert_eq!(r.headers.get("via"), Some("1.1 ringway"));
}

#[test]
fn a_group_whose_only_server_is_marked_down_gets_503() {
    let (_proxy, addr) = start_proxy(&config_with(&[dead_addr()], "fail_timeout = \"1m\""));
    let mut c = Client::connect(addr);
    assert_eq!(
        c.get("/").status,
        502,
        "the first failure marks the server down"
    );
    let r = c.get("/");
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("no upstream server available"),
        "{}",
        r.text()
    );
}

#[test]
fn a_stalled_upstream_gets_504_after_the_response_header_timeout() {
    let up = crate::support::Upstream::start("slow", Mode::Hang);
    let config = config_with(&[up.addr()], "response_header_timeout = \"300ms\"");
    let (_proxy, addr) = start_proxy(&config);
    let mut c = Client::connect(addr);
    let r = c.get("/slow");
    assert_eq!(r.status, 504);
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert_eq!(up.requests(), 1, "the request did reach the upstream");
}

#[test]
fn an_upstream_closing_before_responding_gets_502() {
    let (up, _proxy, addr) = proxy_to(Mode::CloseAfterHead);
    let mut c = Client::connect(addr);
    let r = c.get("/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("closed"), "{}", r.text());
    assert_eq!(up.heads(), 1);
}

#[test]
fn an_upstream_closing_mid_response_closes_the_client_connection() {
    let (_up, _proxy, addr) = proxy_to(Mode::CloseMidBody);
    let mut c = Client::connect(addr);
    c.send(b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c
        .try_read_response(false)
        .expect("the response head arrives");
    assert_eq!(r.status, 200);
    assert!(!r.complete, "the body was cut, so the response must be too");
    assert!(r.body.len() <= crate::support::SENT_LEN);
    // The pipelined second request must not be answered on this connection.
    c.assert_closed();
}

#[test]
fn an_upstream_reset_mid_response_never_yields_a_complete_response() {
    let (_up, _proxy, addr) = proxy_to(Mode::ResetMidBody);
    let mut c = Client::connect(addr);
    c.send(b"GET /reset HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.try_read_response(false).expect("a response head arrives");
    match r.status {
        // The reset destroyed the head before the proxy read it.
        502 => assert!(r.complete),
        200 => {
            assert!(!r.complete, "the body was cut, so the response must be too");
            c.assert_closed();
        }
        other => panic!("unexpected status {other}"),
    }
}

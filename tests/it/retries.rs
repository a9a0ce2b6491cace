//! Retries and what a client sees when an attempt fails: which failures are retried
//! for which methods (`retry_on`, idempotency), the retry budget against storms,
//! `request_timeout`, and `error_format = "json"`.
//!
//! Upstreams count every attempt they receive, so "retried" and "not retried" are
//! read from their counters and the bodies they saw.

use crate::support::{config_with, dead_addr, start_proxy, Client, Response};
use crate::switchable::{Answer, Backend};
use std::time::Duration;

/// A request with a body on a keep-alive connection.
fn send_with_body(c: &mut Client, method: &str, body: &str) -> Response {
    c.request(
        format!(
            "{method} /b HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// How many requests `b` saw with this method and body.
fn times_seen(b: &Backend, method: &str, body: &str) -> usize {
    b.seen()
        .iter()
        .filter(|s| s.method == method && s.body == body.as_bytes())
        .count()
}

#[test]
fn a_get_to_a_stalled_server_is_retried_on_another_after_the_header_timeout() {
    let stalled = Backend::start("stalled", Answer::Hang);
    let ok = Backend::start("ok", Answer::Ok);
    let (_proxy, addr) = start_proxy(&config_with(
        &[stalled.addr(), ok.addr()],
        "response_header_timeout = \"300ms\"\nmax_fails = 100\n",
    ));
    let mut c = Client::connect(addr);
    for i in 0..2 {
        let r = c.get(&format!("/g{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ok\n");
    }
    assert!(
        stalled.requests() >= 1,
        "the stalled server was tried first"
    );
    assert_eq!(ok.requests(), 2);
}

#[test]
fn a_get_to_a_group_of_stalled_servers_gets_504_after_each_was_tried_once() {
    let s1 = Backend::start("s1", Answer::Hang);
    let s2 = Backend::start("s2", Answer::Hang);
    let (_proxy, addr) = start_proxy(&config_with(
        &[s1.addr(), s2.addr()],
        "response_header_timeout = \"300ms\"\n",
    ));
    let mut c = Client::connect(addr);
    let r = c.get("/stalled");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert_eq!((s1.requests(), s2.requests()), (1, 1));
}

#[test]
fn a_post_whose_upstream_reset_after_the_body_is_not_retried() {
    let reset = Backend::start("reset", Answer::ResetAfterRequest);
    let ok = Backend::start("ok", Answer::Ok);
    let (_proxy, addr) = start_proxy(&config_with(
        &[reset.addr(), ok.addr()],
        "max_fails = 100\n",
    ));
    let mut c = Client::connect(addr);
    let mut refused = Vec::new();
    for i in 0..4 {
        let body = format!("post-{i}");
        let r = send_with_body(&mut c, "POST", &body);
        match r.status {
            200 => assert_eq!(times_seen(&ok, "POST", &body), 1),
            502 => refused.push(body),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert!(!refused.is_empty(), "no POST reached the resetting server");
    for body in &refused {
        assert_eq!(times_seen(&reset, "POST", body), 1, "it read {body}");
        assert_eq!(
            times_seen(&ok, "POST", body),
            0,
            "a POST the upstream may have processed was sent again: {body}"
        );
    }
}

#[test]
fn a_put_whose_upstream_reset_after_the_body_is_retried_on_another_server() {
    let reset = Backend::start("reset", Answer::ResetAfterRequest);
    let ok = Backend::start("ok", Answer::Ok);
    let (_proxy, addr) = start_proxy(&config_with(
        &[reset.addr(), ok.addr()],
        "max_fails = 100\n",
    ));
    let mut c = Client::connect(addr);
    for i in 0..4 {
        let body = format!("put-{i}");
        let r = send_with_body(&mut c, "PUT", &body);
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        assert_eq!(times_seen(&ok, "PUT", &body), 1, "{body}");
    }
    assert!(reset.requests() >= 1, "no PUT reached the resetting server");
}

#[test]
fn a_post_on_a_pooled_connection_reset_after_its_body_is_not_sent_again() {
    let up = Backend::start("once", Answer::ResetAfterFirst);
    let (_proxy, addr) = start_proxy(&config_with(&[up.addr()], "max_fails = 100\n"));
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/warm").status, 200, "leaves a pooled connection");
    let r = send_with_body(&mut c, "POST", "pay-once");
    assert_eq!(
        times_seen(&up, "POST", "pay-once"),
        1,
        "the upstream read the POST, then reset; the proxy sent it again (answering {} {:?})",
        r.status,
        r.text()
    );
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn a_put_on_a_pooled_connection_reset_after_its_body_is_sent_again() {
    let up = Backend::start("once", Answer::ResetAfterFirst);
    let (_proxy, addr) = start_proxy(&config_with(&[up.addr()], "max_fails = 100\n"));
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/warm").status, 200, "leaves a pooled connection");
    let r = send_with_body(&mut c, "PUT", "idempotent");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(times_seen(&up, "PUT", "idempotent"), 2);
}

#[test]
fn a_put_with_a_body_over_retry_body_max_is_streamed_and_not_retried() {
    let reset = Backend::start("reset", Answer::ResetAfterRequest);
    let ok = Backend::start("ok", Answer::Ok);
    let (_proxy, addr) = start_proxy(&config_with(
        &[reset.addr(), ok.addr()],
        "retry_body_max = \"1KiB\"\nmax_fails = 100\n",
    ));
    // Round robin: one of the first two PUTs goes to the resetting server.
    let mut c = Client::connect(addr);
    let mut failed = None;
    for i in 0..2 {
        let body = format!("{i}:{}", "x".repeat(8192));
        let r = send_with_body(&mut c, "PUT", &body);
        match r.status {
            200 => assert_eq!(times_seen(&ok, "PUT", &body), 1),
            502 => {
                failed = Some(body);
                break;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let body = failed.expect("no PUT reached the resetting server");
    assert_eq!(times_seen(&reset, "PUT", &body), 1);
    assert_eq!(
        times_seen(&ok, "PUT", &body),
        0,
        "a streamed body was resent"
    );
}

#[test]
fn a_body_over_retry_body_max_streams_over_a_pooled_connection_without_stalling_the_worker() {
    // Default retry_body_max (64KiB): a 100 KB body is streamed, not buffered.
    let up = Backend::start("ok", Answer::Ok);
    let (proxy, addr) = start_proxy(&config_with(&[up.addr()], ""));
    let body = "x".repeat(100_000);
    let put = format!(
        "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = Client::connect(addr);
    c.send(put.as_bytes());
    let first = c.try_read_response(false).map(|r| r.status);
    // The second PUT finds the first one's upstream connection in the pool.
    c.send(put.as_bytes());
    let other = crate::support::try_get(addr, "/meanwhile").map(|r| r.status);
    let second = c.try_read_response(false).map(|r| r.status);
    let puts = up.seen().iter().filter(|s| s.method == "PUT").count();
    // A stalled worker waits for the upstream to close its idle connection: close it
    // first, so a failure does not also hang the proxy's shutdown.
    drop(up);
    drop(proxy);
    assert_eq!(first.as_ref().ok(), Some(&200), "{first:?}");
    assert_eq!(
        other,
        Some(200),
        "a GET on another connection got no answer while the second PUT was in flight"
    );
    assert_eq!(
        second.as_ref().ok(),
        Some(&200),
        "the second PUT: {second:?}"
    );
    assert_eq!(puts, 2);
}

#[test]
fn a_503_named_in_retry_on_is_retried_for_get_but_relayed_for_post() {
    let busy = Backend::start("busy", Answer::Status(503));
    let ok = Backend::start("ok", Answer::Ok);
    let (_proxy, addr) = start_proxy(&config_with(
        &[busy.addr(), ok.addr()],
        "retry_on = [\"503\"]\n",
    ));
    let mut c = Client::connect(addr);
    for i in 0..4 {
        let r = c.get(&format!("/g{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(busy.requests() >= 1, "no GET reached the busy server");
    assert_eq!(ok.requests(), 4);

    let mut relayed = 0;
    for i in 0..4 {
        let body = format!("post-{i}");
        let r = send_with_body(&mut c, "POST", &body);
        match r.status {
            200 => assert_eq!(times_seen(&ok, "POST", &body), 1),
            503 => {
                assert_eq!(r.text(), "busy: status 503\n", "the upstream's own 503");
                assert_eq!(times_seen(&ok, "POST", &body), 0, "{body} was retried");
                relayed += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert!(relayed >= 1, "no POST reached the busy server");
}

#[test]
fn retries_to_a_flapping_server_stay_within_the_budget() {
    const N: usize = 300;
    let flapping = Backend::start("flapping", Answer::ResetAfterRequest);
    let ok = Backend::start("ok", Answer::Ok);
    // Passive health would hide the flapping server; keep it in rotation.
    let (_proxy, addr) = start_proxy(&config_with(
        &[flapping.addr(), ok.addr()],
        "max_fails = 1000\n",
    ));
    let mut c = Client::connect(addr);
    let mut succeeded = 0;
    for i in 0..N {
        let r = c.get(&format!("/f{i}"));
        match r.status {
            200 => succeeded += 1,
            502 => {}
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let attempts = flapping.requests() + ok.requests();
    let retries = attempts - N;
    assert_eq!(succeeded, ok.requests(), "every success came from `ok`");
    assert!(
        retries <= N / 5 + 3,
        "{retries} retries for {N} requests: over the 20% budget plus 3"
    );
    assert!(retries >= 3, "the scenario retried at all ({retries})");
}

#[test]
fn a_group_where_every_server_resets_gets_no_more_than_the_budget_in_retries() {
    const N: usize = 200;
    let servers: Vec<Backend> = (0..3)
        .map(|i| Backend::start(&format!("r{i}"), Answer::ResetAfterRequest))
        .collect();
    let addrs: Vec<_> = servers.iter().map(Backend::addr).collect();
    let (_proxy, addr) = start_proxy(&config_with(&addrs, "retries = 2\nmax_fails = 1000\n"));
    let mut c = Client::connect(addr);
    for i in 0..N {
        let r = c.get(&format!("/r{i}"));
        assert_eq!(r.status, 502, "{}", r.text());
    }
    let attempts: usize = servers.iter().map(Backend::requests).sum();
    assert!(attempts >= N);
    assert!(
        attempts <= N * 6 / 5 + 3,
        "{attempts} attempts for {N} requests (without a budget it would be {})",
        N * 3
    );
}

#[test]
fn request_timeout_cuts_a_trickling_body_and_answers_silence_with_504() {
    let up = Backend::start(
        "slow",
        Answer::Trickle {
            len: 100,
            gap: Duration::from_millis(50),
        },
    );
    let (_proxy, addr) = start_proxy(&config_with(&[up.addr()], "request_timeout = \"500ms\"\n"));
    let mut c = Client::connect(addr);
    c.send(b"GET /trickle HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.try_read_response(false).expect("the head arrives");
    assert_eq!(r.status, 200);
    assert!(
        !r.complete && r.body.len() < 100,
        "the body should be cut at request_timeout, got {} bytes",
        r.body.len()
    );

    up.set_answer(Answer::Hang);
    let mut c = Client::connect(addr);
    let r = c.get("/silent");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("request_timeout"), "{}", r.text());
}

#[test]
fn json_errors_name_the_kind_and_the_upstream() {
    let text = config_with(&[dead_addr()], "")
        .replace("[server]\n", "[server]\nerror_format = \"json\"\n");
    let (_proxy, addr) = start_proxy(&text);
    let mut c = Client::connect(addr);
    let r = c.get("/");
    assert_eq!(r.status, 502);
    assert_eq!(r.headers.get("content-type"), Some("application/json"));
    let body = r.text();
    assert!(body.starts_with('{') && body.ends_with("}\n"), "{body}");
    assert!(body.contains("\"error\":\"ConnectFailed\""), "{body}");
    assert!(body.contains("\"upstream\":\"web\""), "{body}");
    assert!(body.contains("\"status\":502"), "{body}");

    // The failure marked the only server down: the next answer is a JSON 503.
    let r = c.get("/");
    assert_eq!(r.status, 503);
    assert_eq!(r.headers.get("content-type"), Some("application/json"));
    assert!(
        r.text().contains("\"error\":\"NoServerAvailable\""),
        "{}",
        r.text()
    );
}

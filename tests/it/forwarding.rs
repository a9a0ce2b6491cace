//! Requests and responses going through: methods, forwarding headers, hop-by-hop
//! removal, routing misses, pipelining, `Expect: 100-continue` and HTTP/1.0.

use crate::support::{proxy_to, Client, Mode};

#[test]
fn get_returns_the_upstream_body_exactly() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    let r = c.get("/some/path?q=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a: GET /some/path?q=1\n");
    assert_eq!(
        r.headers.get("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.headers.get("content-type"), Some("text/plain"));
    let seen = up.last();
    assert_eq!(
        (
            seen.method.as_str(),
            seen.target.as_str(),
            seen.version.as_str()
        ),
        ("GET", "/some/path?q=1", "HTTP/1.1")
    );
    assert_eq!(seen.headers.get("host"), Some("test.local"));
}

#[test]
fn head_response_has_no_body_but_keeps_content_length() {
    let (_up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    c.send(b"HEAD /h HTTP/1.1\r\nHost: test.local\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-length"),
        Some("a: HEAD /h\n".len().to_string().as_str())
    );
    assert!(!r.headers.has("transfer-encoding"));
    // Had any body bytes followed the head, this next response would be garbage.
    let r = c.get("/after-head");
    assert_eq!(r.text(), "a: GET /after-head\n");
}

#[test]
fn post_body_reaches_the_upstream_and_comes_back_exactly() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let body = b"field=value&binary=\x00\x01\xff\r\n\r\nend";
    let mut c = Client::connect(addr);
    let mut req = format!(
        "POST /form HTTP/1.1\r\nHost: test.local\r\nContent-Type: application/x-test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, body);
    assert_eq!(
        seen.headers.get("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(seen.headers.get("content-type"), Some("application/x-test"));
}

#[test]
fn forwarding_headers_reach_the_upstream() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    let r = c.request(
        b"GET /fwd HTTP/1.1\r\nHost: example.test:8080\r\nX-Forwarded-For: 10.1.2.3\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed.example\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let h = up.last().headers;
    assert_eq!(
        h.all("x-forwarded-for"),
        ["10.1.2.3, 127.0.0.1"],
        "appended"
    );
    assert_eq!(
        h.all("x-forwarded-proto"),
        ["http"],
        "replaced, not duplicated"
    );
    assert_eq!(h.all("x-forwarded-host"), ["example.test:8080"]);
    assert_eq!(
        h.all("forwarded"),
        ["for=127.0.0.1;host=\"example.test:8080\";proto=http"]
    );
    assert_eq!(h.all("via"), ["1.1 ringway"]);
    assert_eq!(h.all("host"), ["example.test:8080"]);
}

#[test]
fn an_incoming_forwarded_header_is_appended_to() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    c.request(b"GET / HTTP/1.1\r\nHost: h.test\r\nForwarded: for=192.0.2.60;proto=https\r\n\r\n");
    assert_eq!(
        up.last().headers.all("forwarded"),
        ["for=192.0.2.60;proto=https, for=127.0.0.1;host=\"h.test\";proto=http"]
    );
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    let r = c.request(
        b"GET /hop HTTP/1.1\r\nHost: test.local\r\nConnection: X-Listed-Hop\r\n\
          X-Listed-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          TE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: websocket\r\nX-End-To-End: kept\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let h = up.last().headers;
    for gone in [
        "connection",
        "x-listed-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(!h.has(gone), "`{gone}` reached the upstream: {h:?}");
    }
    assert_eq!(h.get("x-end-to-end"), Some("kept"));
}

#[test]
fn responses_carry_via_and_lose_upstream_hop_by_hop_headers() {
    let extra = [
        ("Connection", "X-Upstream-Hop"),
        ("X-Upstream-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("X-End-To-End", "kept"),
    ];
    let extra = extra
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let (_up, _proxy, addr) = proxy_to(Mode::Headers(extra));
    let mut c = Client::connect(addr);
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
    assert_eq!(r.headers.all("via"), ["1.1 ringway"]);
    assert_eq!(r.headers.get("x-end-to-end"), Some("kept"));
    assert!(
        !r.headers.lists("connection", "x-upstream-hop"),
        "{:?}",
        r.headers
    );
    for gone in [
        "x-upstream-hop",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !r.headers.has(gone),
            "`{gone}` reached the client: {:?}",
            r.headers
        );
    }
}

#[test]
fn a_request_matching_no_route_gets_404() {
    let up = crate::support::Upstream::start("api", Mode::Ok);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [upstreams.api]\nservers = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n",
        up.addr()
    );
    let (_proxy, addr) = crate::support::start_proxy(&config);
    let mut c = Client::connect(addr);
    let r = c.get("/elsewhere");
    assert_eq!(r.status, 404);
    assert_eq!(up.requests(), 0);
    // A bodiless miss keeps the connection; the next request is routed normally.
    let r = c.get("/api/users");
    assert_eq!(r.text(), "api: GET /api/users\n");
}

#[test]
fn routes_are_tried_in_file_order_and_the_first_match_wins() {
    let web = crate::support::Upstream::start("web", Mode::Ok);
    let api = crate::support::Upstream::start("api", Mode::Ok);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [upstreams.web]\nservers = [\"{}\"]\n[upstreams.api]\nservers = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        web.addr(),
        api.addr()
    );
    let (_proxy, addr) = crate::support::start_proxy(&config);
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/api/x").text(), "api: GET /api/x\n");
    assert_eq!(c.get("/api").text(), "api: GET /api\n");
    assert_eq!(
        c.get("/apix").text(),
        "web: GET /apix\n",
        "prefixes match whole segments"
    );
    assert_eq!(c.get("/index.html").text(), "web: GET /index.html\n");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /3 HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /4 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /5 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.read_response().text(), "a: GET /1\n");
    assert_eq!(c.read_response().text(), "a: POST /2\n");
    assert_eq!(c.read_response().text(), "a: GET /3\n");
    assert_eq!(c.read_head_response().status, 200);
    assert_eq!(c.read_response().text(), "a: GET /5\n");
    let seen = up.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/1", "/2", "/3", "/4", "/5"]);
    assert_eq!(seen[1].body, b"hello");
}

#[test]
fn expect_100_continue_gets_an_interim_response_then_the_final_one() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let mut c = Client::connect(addr);
    c.send(
        b"PUT /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    let interim = c.read_response();
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue");
    c.send(b"hello world");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    let seen = up.last();
    assert_eq!(seen.body, b"hello world");
    assert!(
        !seen.headers.has("expect"),
        "the proxy answers Expect itself"
    );
}

#[test]
fn http10_request_without_keep_alive_gets_its_response_and_the_connection_closes() {
    let (up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    let r = c.request(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a: GET /old\n");
    c.assert_closed();
    assert_eq!(up.last().version, "HTTP/1.1", "upstream requests are 1.1");
}

#[test]
fn http10_with_keep_alive_keeps_the_connection() {
    let (_up, _proxy, addr) = proxy_to(Mode::Ok);
    let mut c = Client::connect(addr);
    let r = c.request(b"GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.text(), "a: GET /k1\n");
    assert!(
        r.headers.lists("connection", "keep-alive"),
        "{:?}",
        r.headers
    );
    let r = c.request(b"GET /k2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.text(), "a: GET /k2\n");
}

#[test]
fn http10_post_without_a_length_has_no_body() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let mut c = Client::connect(addr);
    // Kept alive, so what follows the head must be parsed as the next request.
    let r = c.request(b"POST /p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"");
    let r = c.request(b"GET /next HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    c.assert_closed();
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].method.as_str(), seen[0].body.len()), ("POST", 0));
    assert!(!seen[0].headers.has("transfer-encoding"));
    assert_eq!(seen[1].target, "/next");
}

#[test]
fn upstream_statuses_pass_through_unchanged() {
    let (_up, _proxy, addr) = proxy_to(Mode::Status(418));
    let mut c = Client::connect(addr);
    let r = c.get("/teapot");
    assert_eq!(r.status_line, "HTTP/1.1 418 Test Status");
    assert_eq!(r.text(), "a: status 418\n");
    assert_eq!(c.get("/again").status, 418, "the connection is kept");
}

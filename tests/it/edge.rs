//! Edge policy answered on the worker: routes with `respond` and `redirect` (no
//! upstream), and `allow` / `deny` address lists in `[server]` and per route.

use crate::support::*;
use std::net::IpAddr;

#[test]
fn a_respond_route_answers_without_any_upstream() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
        [[routes]]\npath = \"/healthz\"\n\
        respond = { status = 200, body = \"ok\\n\", headers = { \"Cache-Control\" = \"no-store\" } }\n\n\
        [[routes]]\npath_prefix = \"/\"\nrespond = { status = 503, body = \"down for maintenance\\n\" }\n";
    let (_proxy, addr) = start_proxy(text);
    let mut c = Client::connect(addr);
    let r = c.get("/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(r.headers.get("cache-control"), Some("no-store"));
    assert_eq!(
        r.headers.get("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(r.headers.has("date"));
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.headers.get("content-length"), Some("3"));
    let r = c.get("/anything");
    assert_eq!(
        (r.status, r.text().as_str()),
        (503, "down for maintenance\n")
    );
    // A request with a body is answered, and the connection closed (the body unread).
    let r = c.request(b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(r.status, 200);
    assert!(r.closes());
    c.assert_closed();
}

#[test]
fn a_redirect_route_fills_in_its_variables() {
    let up = Upstream::start("edge-redirect", Mode::Ok);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
         [upstreams.web]\nservers = [\"{}\"]\n\n\
         [[routes]]\nhost = \"old.example\"\nredirect = {{ to = \"https://new.example$request_uri\", status = 301 }}\n\n\
         [[routes]]\npath_prefix = \"/go\"\nredirect = {{ to = \"$scheme://$host/landing?from=$uri&$args\" }}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        up.addr()
    );
    let (_proxy, addr) = start_proxy(&text);
    let mut c = Client::connect(addr);
    let r = c.request(b"GET /a/b?x=1 HTTP/1.1\r\nHost: old.example\r\n\r\n");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location"),
        Some("https://new.example/a/b?x=1")
    );
    assert!(!r.closes());
    let r = c.request(b"GET /go/here?y=2 HTTP/1.1\r\nHost: site.test:8080\r\n\r\n");
    assert_eq!(r.status, 308, "the default status");
    assert_eq!(
        r.headers.get("location"),
        Some("http://site.test/landing?from=/go/here&y=2")
    );
    assert_eq!(c.get("/other").status, 200);
    assert_eq!(
        up.requests(),
        1,
        "only the last request reached the upstream"
    );
}

#[test]
fn deny_and_allow_lists_refuse_with_403() {
    let up = Upstream::start("edge-acl", Mode::Ok);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\ndeny = [\"127.0.0.2\"]\n\n\
         [upstreams.web]\nservers = [\"{}\"]\n\n\
         [[routes]]\npath_prefix = \"/admin\"\nupstream = \"web\"\nallow = [\"127.0.0.3/32\", \"10.0.0.0/8\"]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        up.addr()
    );
    let (_proxy, addr) = start_proxy(&text);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut denied = Client::connect_from(ip("127.0.0.2"), addr);
    let r = denied.get("/");
    assert_eq!(r.status, 403, "[server] deny");
    assert!(
        !r.closes(),
        "a bodiless request refused keeps its connection"
    );
    let mut other = Client::connect_from(ip("127.0.0.1"), addr);
    assert_eq!(other.get("/").status, 200);
    let mut other = Client::connect_from(ip("127.0.0.1"), addr);
    assert_eq!(
        other.get("/admin/x").status,
        403,
        "not in the route's allow list"
    );
    let mut admin = Client::connect_from(ip("127.0.0.3"), addr);
    assert_eq!(admin.get("/admin/x").status, 200);
    assert_eq!(
        up.requests(),
        2,
        "refused requests never reach the upstream"
    );
}

#[test]
fn route_answer_kinds_and_lists_are_validated() {
    let bad = [
        (
            "[[routes]]\nupstream = \"web\"\nrespond = { status = 200 }\n",
            "needs exactly one of upstream, respond and redirect",
        ),
        (
            "[[routes]]\npath = \"/\"\n",
            "needs exactly one of upstream, respond and redirect",
        ),
        (
            "[[routes]]\nredirect = { to = \"/x\", status = 200 }\n",
            "must be 301, 302, 303, 307 or 308",
        ),
        (
            "[[routes]]\nrespond = { status = 204, body = \"x\" }\n",
            "a 204 has no body",
        ),
        (
            "[[routes]]\nrespond = { headers = { \"Content-Length\" = \"1\" } }\n",
            "is set by the proxy",
        ),
        (
            "[[routes]]\nupstream = \"web\"\ndeny = [\"10.0.0.1/8\"]\n",
            "routes[0].deny",
        ),
        (
            "[[routes]]\nupstream = \"web\"\nlimit = { rate = \"fast\" }\n",
            "routes[0].limit.rate",
        ),
        (
            "[[routes]]\nupstream = \"web\"\nlimit = { rate = \"5/s\", key = \"$nope\" }\n",
            "routes[0].limit.key",
        ),
    ];
    for (routes, want) in bad {
        let text = format!("[upstreams.web]\nservers = [\"127.0.0.1:9\"]\n{routes}");
        let err = ringway::config::Config::parse(&text, "t.toml")
            .expect_err(routes)
            .to_string();
        assert!(err.contains(want), "{routes}: {err}");
    }
}

#[test]
fn a_route_limit_answers_429_with_retry_after_per_client_and_counts_it() {
    let up = Upstream::start("edge-limit", Mode::Ok);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstreams.web]\nservers = [\"{}\"]\n\n\
         [[routes]]\npath_prefix = \"/api\"\nupstream = \"web\"\n\
         limit = {{ rate = \"1/m\", burst = 3, key = \"$remote_addr\" }}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        up.addr()
    );
    let (proxy, addr) = start_proxy(&text);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut a = Client::connect_from(ip("127.0.0.1"), addr);
    for i in 0..3 {
        assert_eq!(a.get(&format!("/api/{i}")).status, 200, "within the burst");
    }
    let r = a.get("/api/3");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(
        r.headers.get("retry-after"),
        Some("60"),
        "one token a minute"
    );
    assert!(!r.closes());
    assert_eq!(a.get("/other").status, 200, "other routes are not limited");
    // Another client has its own bucket.
    let mut b = Client::connect_from(ip("127.0.0.5"), addr);
    assert_eq!(b.get("/api/x").status, 200);
    assert_eq!(
        up.requests(),
        5,
        "refused requests never reach the upstream"
    );
    let metrics = crate::admin::call(proxy.admin_addr().unwrap(), "GET", "/metrics", None).text();
    assert!(
        metrics.contains("ringway_refused_requests_total{reason=\"rate_limit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"routes[0]\",method=\"GET\",code=\"4xx\"} 1"),
        "{metrics}"
    );
}

fn proxied_config(up: std::net::SocketAddr) -> String {
    format!(
        "[server]\nlisten = [{{ addr = \"127.0.0.1:0\", proxy_protocol = true }}]\nworkers = 1\n\
         trusted_proxies = [\"127.0.0.1\"]\ndeny = [\"203.0.113.66\"]\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstreams.web]\nservers = [\"{up}\"]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n"
    )
}

#[test]
fn a_proxy_protocol_header_from_a_trusted_balancer_names_the_client() {
    let up = Upstream::start("edge-proxy", Mode::Ok);
    let (proxy, addr) = start_proxy(&proxied_config(up.addr()));
    let mut c = Client::connect(addr);
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n");
    let r = c.get("/v1");
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers.get("x-forwarded-for"), Some("203.0.113.7"));
    assert!(seen
        .headers
        .get("forwarded")
        .unwrap()
        .contains("for=203.0.113.7"));
    assert_eq!(
        c.get("/again").status,
        200,
        "the header is read once per connection"
    );
    // Version 2, in the same write as the request.
    let src: std::net::SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
    let mut raw = ringway::proxy_protocol::v2_header(src, addr);
    raw.extend_from_slice(b"GET /v2 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = Client::connect(addr).request(&raw);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.last().headers.get("x-forwarded-for"),
        Some("2001:db8::7")
    );
    // LOCAL (the balancer's own health check): the peer stands.
    let mut local = ringway::proxy_protocol::v2_header(src, addr);
    local[12] = 0x20;
    local.extend_from_slice(b"GET /local HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(Client::connect(addr).request(&local).status, 200);
    assert_eq!(up.last().headers.get("x-forwarded-for"), Some("127.0.0.1"));
    // deny applies to the client the header names.
    let mut c = Client::connect(addr);
    c.send(b"PROXY TCP4 203.0.113.66 127.0.0.1 5555 80\r\n");
    assert_eq!(c.get("/denied").status, 403);
    assert_eq!(up.requests(), 4);
    let _ = proxy;
}

#[test]
fn a_proxy_protocol_listener_closes_untrusted_peers_and_missing_headers() {
    let up = Upstream::start("edge-proxy-bad", Mode::Ok);
    let (proxy, addr) = start_proxy(&proxied_config(up.addr()));
    // A plain request where the header should be.
    let mut c = Client::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    c.assert_closed();
    // A valid header from a peer that is not a trusted balancer.
    let mut c = Client::connect_from("127.0.0.2".parse::<IpAddr>().unwrap(), addr);
    c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    c.assert_closed();
    assert_eq!(up.requests(), 0);
    let metrics = crate::admin::call(proxy.admin_addr().unwrap(), "GET", "/metrics", None).text();
    assert!(
        metrics.contains("ringway_proxy_protocol_refused_total 2"),
        "{metrics}"
    );
    // A PROXY listener needs trusted_proxies.
    let text = "[server]\nlisten = [{ addr = \"127.0.0.1:0\", proxy_protocol = true }]\n\
                [upstreams.web]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"web\"\n";
    let err = ringway::config::Config::parse(text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.trusted_proxies"), "{err}");
}

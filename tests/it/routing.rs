//! Routing as the README describes it: the seed configs (Caddy's header/host/path rules,
//! a Go registry's stripped prefix), every matcher alone and combined, file order, 404s,
//! path normalization before routing, header edits with variables, and `ringway check`
//! naming the key of a bad regex, variable or policy.
//!
//! Which route a request took is read from the upstreams' own counters, and what they
//! received from their own records; requests are raw bytes, so nothing normalizes them
//! on the way in.

use crate::support::{start_proxy, Client, Mode, Response, Upstream};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Named upstreams (one server each unless a group lists several) and a proxy in front.
struct Fleet {
    ups: Vec<(String, Upstream)>,
    _proxy: ringway::server::Running,
    addr: SocketAddr,
}

/// `[server]` with one worker plus `server_extra`, one `[upstreams.NAME]` per group
/// (`NAME` = the group name, servers = its upstreams), then `routes` verbatim.
fn config(server_extra: &str, groups: &[(&str, Vec<SocketAddr>)], routes: &str) -> String {
    let mut text = format!("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{server_extra}\n\n");
    for (name, servers) in groups {
        let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
        text.push_str(&format!(
            "[upstreams.{name}]\nservers = [{}]\n\n",
            list.join(", ")
        ));
    }
    text + routes
}

impl Fleet {
    /// One upstream (in `Mode::Ok`, named like its group) per name in `groups`.
    fn start(server_extra: &str, groups: &[&str], routes: &str) -> Fleet {
        let ups: Vec<(String, Upstream)> = groups
            .iter()
            .map(|n| (n.to_string(), Upstream::start(n, Mode::Ok)))
            .collect();
        let spec: Vec<(&str, Vec<SocketAddr>)> = ups
            .iter()
            .map(|(n, u)| (n.as_str(), vec![u.addr()]))
            .collect();
        let (proxy, addr) = start_proxy(&config(server_extra, &spec, routes));
        Fleet {
            ups,
            _proxy: proxy,
            addr,
        }
    }

    fn up(&self, name: &str) -> &Upstream {
        &self
            .ups
            .iter()
            .find(|(n, _)| n == name)
            .expect("known upstream")
            .1
    }

    fn counts(&self) -> Vec<usize> {
        self.ups.iter().map(|(_, u)| u.requests()).collect()
    }

    /// Sends `raw` on a fresh connection and returns the response and the name of the
    /// one upstream whose request counter moved (`"none"` when none did).
    fn route(&self, raw: &str) -> (Response, String) {
        let before = self.counts();
        let mut c = Client::connect(self.addr);
        let r = c.request(raw.as_bytes());
        let after = self.counts();
        let moved: Vec<&str> = self
            .ups
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a != b)
            .map(|((n, _), _)| n.as_str())
            .collect();
        assert!(
            moved.len() <= 1,
            "{raw:?} reached several upstreams: {moved:?}"
        );
        let name = moved.first().copied().unwrap_or("none").to_string();
        assert_eq!(
            after.iter().sum::<usize>() - before.iter().sum::<usize>(),
            usize::from(name != "none"),
            "{raw:?}: one request, at most one upstream request"
        );
        if name == "none" {
            assert_eq!(r.status, 404, "{raw:?} reached no upstream: {}", r.text());
        } else {
            assert_eq!(r.status, 200, "{raw:?}: {}", r.text());
        }
        (r, name)
    }

    /// Where `GET target` with this Host and extra header lines goes.
    fn get(&self, host: &str, target: &str, extra: &str) -> String {
        self.route(&format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        ))
        .1
    }

    /// Where `METHOD target` (no body) goes.
    fn method(&self, method: &str, target: &str) -> String {
        self.route(&format!(
            "{method} {target} HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .1
    }
}

fn route(conditions: &str, upstream: &str) -> String {
    format!("[[routes]]\n{conditions}\nupstream = \"{upstream}\"\n\n")
}

// ---------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------

#[test]
fn caddy_seed_header_host_and_path_rules_reach_their_services() {
    let routes = route("headers = { \"x-service-1\" = \"*\" }", "service1")
        + &route("host = \"service2.com.br\"", "service2")
        + &route("path_prefix = \"/test\"", "service3");
    let f = Fleet::start("", &["service1", "service2", "service3"], &routes);

    assert_eq!(
        f.get("anything.local", "/", "X-Service-1: yes\r\n"),
        "service1"
    );
    assert_eq!(
        f.get("anything.local", "/", "x-SERVICE-1: \r\n"),
        "service1"
    );
    assert_eq!(
        f.get("service2.com.br", "/test", "X-Service-1: 1\r\n"),
        "service1",
        "the header rule comes first in the file"
    );

    assert_eq!(f.get("service2.com.br", "/", ""), "service2");
    assert_eq!(f.get("service2.com.br:8080", "/x", ""), "service2");
    assert_eq!(f.get("Service2.COM.BR", "/", ""), "service2");
    assert_eq!(f.get("SERVICE2.com.br:443", "/test", ""), "service2");
    assert_eq!(f.get("service2.com.br.", "/", ""), "service2");
    assert_eq!(f.get("x.service2.com.br", "/", ""), "none");
    assert_eq!(f.get("service2.com", "/", ""), "none");

    assert_eq!(f.get("other.local", "/test", ""), "service3");
    assert_eq!(f.get("other.local", "/test/1?a=b", ""), "service3");
    assert_eq!(f.get("other.local", "/testing", ""), "none");

    assert_eq!(f.up("service1").requests(), 3);
    assert_eq!(f.up("service2").requests(), 5);
    assert_eq!(f.up("service3").requests(), 2);
    assert_eq!(f.up("service3").last().target, "/test/1?a=b");
}

#[test]
fn go_registry_seed_strips_the_prefix_and_balances_two_servers() {
    let a = Upstream::start("one-a", Mode::Ok);
    let b = Upstream::start("one-b", Mode::Ok);
    let v2 = Upstream::start("v2", Mode::Ok);
    let routes = route(
        "path_prefix = \"/serviceone/v1/\"\nstrip_prefix = true",
        "serviceone_v1",
    ) + &route("path_prefix = \"/api\"\nrewrite_prefix = \"/v2\"", "api");
    let text = config(
        "",
        &[
            ("serviceone_v1", vec![a.addr(), b.addr()]),
            ("api", vec![v2.addr()]),
        ],
        &routes,
    );
    let (_proxy, addr) = start_proxy(&text);
    let mut c = Client::connect(addr);

    // What the upstream sees for each request target (one worker: round robin a, b, ...).
    let cases = [
        ("/serviceone/v1/foo?x=1", "/foo?x=1"),
        ("/serviceone/v1", "/"),
        ("/serviceone/v1/", "/"),
        ("/serviceone/v1?x=1", "/?x=1"),
        ("/serviceone/v1/a/b/", "/a/b/"),
        ("/serviceone/v1/foo", "/foo"),
    ];
    for (sent, want) in cases {
        let (before_a, before_b) = (a.requests(), b.requests());
        let r = c.get(sent);
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        let got = if a.requests() > before_a {
            a.last().target
        } else {
            assert_eq!(b.requests(), before_b + 1, "{sent} reached neither server");
            b.last().target
        };
        assert_eq!(got, want, "{sent}");
    }
    assert_eq!(
        (a.requests(), b.requests()),
        (3, 3),
        "balanced over both servers"
    );

    let r = c.get("/serviceone/v1x");
    assert_eq!(
        r.status, 404,
        "segment-aware: /serviceone/v1x is another path"
    );

    for (sent, want) in [
        ("/api/x", "/v2/x"),
        ("/api", "/v2"),
        ("/api?q=1", "/v2?q=1"),
        ("/api/a/b?c=d", "/v2/a/b?c=d"),
    ] {
        let r = c.get(sent);
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(v2.last().target, want, "{sent}");
    }
    assert_eq!(v2.requests(), 4);
}

// ---------------------------------------------------------------------------------
// Matchers
// ---------------------------------------------------------------------------------

#[test]
fn host_matches_exactly_by_wildcard_subdomain_or_from_a_list() {
    let routes = route("host = \"exact.test\"", "exact")
        + &route("host = \"*.example.com\"", "wild")
        + &route("host = [\"one.test\", \"*.two.test\"]", "list");
    let f = Fleet::start("", &["exact", "wild", "list"], &routes);

    assert_eq!(f.get("exact.test", "/", ""), "exact");
    assert_eq!(f.get("EXACT.Test:8080", "/", ""), "exact");
    assert_eq!(f.get("a.exact.test", "/", ""), "none");

    assert_eq!(f.get("a.example.com", "/", ""), "wild");
    assert_eq!(f.get("a.b.example.com", "/", ""), "wild");
    assert_eq!(f.get("A.Example.COM:81", "/", ""), "wild");
    assert_eq!(
        f.get("example.com", "/", ""),
        "none",
        "a wildcard needs a subdomain"
    );
    assert_eq!(f.get("aexample.com", "/", ""), "none");
    assert_eq!(f.get("example.com.evil", "/", ""), "none");

    assert_eq!(f.get("one.test", "/", ""), "list");
    assert_eq!(f.get("x.two.test", "/", ""), "list");
    assert_eq!(f.get("two.test", "/", ""), "none");
    assert_eq!(f.get("x.one.test", "/", ""), "none");
}

#[test]
fn path_prefix_is_segment_aware_path_is_exact_and_path_regex_searches() {
    let routes = route("path_prefix = \"/api\"", "prefix")
        + &route("path = \"/exact\"", "exact")
        + &route("path_regex = \"^/users/[0-9]+$\"", "regex")
        + &route("path_regex = \"\\\\.php$\"", "php");
    let f = Fleet::start("", &["prefix", "exact", "regex", "php"], &routes);
    let get = |p: &str| f.get("test.local", p, "");

    assert_eq!(get("/api"), "prefix");
    assert_eq!(get("/api/"), "prefix");
    assert_eq!(get("/api/v1/x?y=z"), "prefix");
    assert_eq!(get("/api?x=1"), "prefix");
    assert_eq!(get("/apix"), "none");
    assert_eq!(get("/ap"), "none");

    assert_eq!(get("/exact"), "exact");
    assert_eq!(get("/exact?x=1"), "exact");
    assert_eq!(get("/exact/"), "none");
    assert_eq!(get("/exact/more"), "none");
    assert_eq!(get("/exactly"), "none");

    assert_eq!(get("/users/42"), "regex");
    assert_eq!(
        get("/users/42?tab=1"),
        "regex",
        "the query is not part of the path"
    );
    assert_eq!(get("/users/x"), "none");
    assert_eq!(get("/users/42/"), "none");

    assert_eq!(get("/deep/dir/index.php"), "php", "unanchored: searched");
    assert_eq!(get("/index.php5"), "none");
}

#[test]
fn methods_headers_and_query_match_on_their_own() {
    let routes = route("methods = [\"DELETE\", \"PUT\"]", "methods")
        + &route("headers = { \"x-env\" = \"*\" }", "any_env")
        + &route("headers = { \"x-tier\" = \"gold\" }", "gold")
        + &route("query = { v = \"2\" }", "v2")
        + &route("query = { debug = \"*\" }", "debug");
    let f = Fleet::start("", &["methods", "any_env", "gold", "v2", "debug"], &routes);

    assert_eq!(f.method("DELETE", "/x"), "methods");
    assert_eq!(f.method("PUT", "/x"), "methods");
    assert_eq!(f.method("POST", "/x"), "none");
    assert_eq!(f.get("h", "/x", ""), "none");

    assert_eq!(f.get("h", "/", "X-Env: prod\r\n"), "any_env");
    assert_eq!(f.get("h", "/", "x-env: staging\r\n"), "any_env");

    assert_eq!(f.get("h", "/", "X-Tier: gold\r\n"), "gold");
    assert_eq!(f.get("h", "/", "x-tier:   gold  \r\n"), "gold");
    assert_eq!(f.get("h", "/", "X-Tier: silver\r\n"), "none");
    assert_eq!(f.get("h", "/", "X-Tier: golden\r\n"), "none");
    assert_eq!(
        f.get("h", "/", "X-Tier: silver\r\nX-Tier: gold\r\n"),
        "gold",
        "any of the header's fields may hold the value"
    );

    assert_eq!(f.get("h", "/?v=2", ""), "v2");
    assert_eq!(f.get("h", "/p?a=1&v=2&b", ""), "v2");
    assert_eq!(f.get("h", "/?v=20", ""), "none");
    assert_eq!(f.get("h", "/?vv=2", ""), "none");
    assert_eq!(f.get("h", "/?v", ""), "none");

    assert_eq!(f.get("h", "/?debug", ""), "debug");
    assert_eq!(f.get("h", "/?x=1&debug=0", ""), "debug");
    assert_eq!(f.get("h", "/?debugging=1", ""), "none");
}

#[test]
fn a_route_with_several_conditions_needs_all_of_them() {
    let routes = route(
        "host = \"combo.test\"\npath_prefix = \"/c\"\nmethods = [\"POST\"]\n\
         headers = { \"x-k\" = \"1\", \"x-present\" = \"*\" }\nquery = { q = \"*\", v = \"2\" }",
        "combo",
    );
    let f = Fleet::start("", &["combo"], &routes);
    let send = |method: &str, host: &str, target: &str, headers: &str| {
        f.route(&format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .1
    };
    let all = "X-K: 1\r\nX-Present: yes\r\n";
    assert_eq!(send("POST", "combo.test", "/c/x?q=&v=2", all), "combo");
    assert_eq!(send("POST", "COMBO.test:1", "/c?v=2&q=9", all), "combo");
    // Take away one condition at a time.
    assert_eq!(send("POST", "other.test", "/c/x?q=&v=2", all), "none");
    assert_eq!(send("POST", "combo.test", "/d/x?q=&v=2", all), "none");
    assert_eq!(send("GET", "combo.test", "/c/x?q=&v=2", all), "none");
    assert_eq!(
        send("POST", "combo.test", "/c/x?q=&v=2", "X-Present: yes\r\n"),
        "none"
    );
    assert_eq!(
        send(
            "POST",
            "combo.test",
            "/c/x?q=&v=2",
            "X-K: 2\r\nX-Present: y\r\n"
        ),
        "none"
    );
    assert_eq!(
        send("POST", "combo.test", "/c/x?q=&v=2", "X-K: 1\r\n"),
        "none"
    );
    assert_eq!(send("POST", "combo.test", "/c/x?v=2", all), "none");
    assert_eq!(send("POST", "combo.test", "/c/x?q=1&v=3", all), "none");
    assert_eq!(f.up("combo").requests(), 2);
}

#[test]
fn the_first_matching_route_in_file_order_wins_whatever_its_kind() {
    let routes = route("host = \"a.test\"\npath_prefix = \"/\"", "host_first")
        + &route("path_regex = \"^/v\"", "regex_first")
        + &route("path_prefix = \"/v1\"", "shadowed_prefix")
        + &route("host = \"*.b.test\"", "wild_first")
        + &route("host = \"x.b.test\"", "shadowed_exact")
        + &route("path = \"/api/x\"", "exact_first")
        + &route("path_prefix = \"/api\"", "prefix_later")
        + &route("path_prefix = \"/\"", "catch_all");
    let names = [
        "host_first",
        "regex_first",
        "shadowed_prefix",
        "wild_first",
        "shadowed_exact",
        "exact_first",
        "prefix_later",
        "catch_all",
    ];
    let f = Fleet::start("", &names, &routes);

    assert_eq!(f.get("a.test", "/v1/x", ""), "host_first");
    assert_eq!(f.get("a.test", "/api/x", ""), "host_first");
    assert_eq!(f.get("other.test", "/v1/x", ""), "regex_first");
    assert_eq!(f.get("other.test", "/v1", ""), "regex_first");
    assert_eq!(f.get("x.b.test", "/z", ""), "wild_first");
    assert_eq!(f.get("x.b.test", "/v1", ""), "regex_first");
    assert_eq!(f.get("other.test", "/api/x", ""), "exact_first");
    assert_eq!(f.get("other.test", "/api/y", ""), "prefix_later");
    assert_eq!(f.get("other.test", "/z", ""), "catch_all");
    assert_eq!(f.up("shadowed_prefix").requests(), 0);
    assert_eq!(f.up("shadowed_exact").requests(), 0);
}

// ---------------------------------------------------------------------------------
// No route
// ---------------------------------------------------------------------------------

#[test]
fn no_matching_route_is_a_short_404_and_a_bodiless_request_keeps_the_connection() {
    let f = Fleet::start("", &["api"], &route("path_prefix = \"/api\"", "api"));
    let mut c = Client::connect(f.addr);
    for _ in 0..3 {
        let r = c.get("/elsewhere");
        assert_eq!(r.status, 404);
        assert!(!r.closes(), "a bodiless miss keeps the connection");
        assert!(
            !r.body.is_empty() && r.body.len() < 200 && !r.text().trim_end().contains('\n'),
            "one short line: {:?}",
            r.text()
        );
    }
    c.send(b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 404);
    assert!(!r.closes());
    let r = c.get("/api/ok");
    assert_eq!((r.status, r.text().as_str()), (200, "api: GET /api/ok\n"));
    assert_eq!(f.up("api").requests(), 1);

    // A miss with an unread body cannot keep the connection in sync: it closes.
    let mut c = Client::connect(f.addr);
    let r = c.request(b"POST /elsewhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 404);
    assert!(r.closes());
    c.assert_closed();
}

// ---------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------

#[test]
fn normalized_paths_reach_the_route_the_clean_path_would_and_are_forwarded_clean() {
    let routes = route("path = \"/admin\"", "admin")
        + &route("path_prefix = \"/panel\"", "panel")
        + &route("path_prefix = \"/\"", "web");
    let f = Fleet::start("", &["admin", "panel", "web"], &routes);
    let cases = [
        ("/admin", "admin", "/admin"),
        ("/test/../admin", "admin", "/admin"),
        ("/%61dmin", "admin", "/admin"),
        ("/%61%64%6D%69%6e", "admin", "/admin"),
        ("//admin", "admin", "/admin"),
        ("///admin", "admin", "/admin"),
        ("/./admin", "admin", "/admin"),
        ("/a/b/../../admin", "admin", "/admin"),
        ("/../../admin", "admin", "/admin"),
        ("/x/%2e%2E/admin", "admin", "/admin"),
        ("/test/../admin?x=1", "admin", "/admin?x=1"),
        ("/static/../panel//users", "panel", "/panel/users"),
        ("/panel/../public", "web", "/public"),
        // An encoded slash is not a separator: this is not `/admin`.
        ("/test/..%2Fadmin", "web", "/test/..%2Fadmin"),
        ("/test/..%2fadmin", "web", "/test/..%2Fadmin"),
    ];
    for (sent, want_route, want_target) in cases {
        let before = f.counts();
        let (r, name) = f.route(&format!(
            "GET {sent} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(
            name,
            want_route,
            "{sent}: {} (counts before {before:?})",
            r.text()
        );
        assert_eq!(f.up(want_route).last().target, want_target, "{sent}");
    }
}

#[test]
fn a_malformed_percent_escape_is_a_400_that_reaches_no_upstream() {
    let f = Fleet::start("", &["web"], &route("path_prefix = \"/\"", "web"));
    for bad in ["/%zz", "/a%2", "/a%", "/%g1/x", "/ok/%Z0?q=1"] {
        let mut c = Client::connect(f.addr);
        let r = c.request(format!("GET {bad} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    assert_eq!(f.up("web").requests(), 0);
    assert_eq!(f.up("web").heads(), 0);
}

// ---------------------------------------------------------------------------------
// Header edits
// ---------------------------------------------------------------------------------

#[test]
fn global_and_route_request_header_edits_set_add_and_remove() {
    let server = "request_headers = { set = { \"x-forward-for\" = \"$remote_addr\", \"X-Global\" = \"g\" }, \
                  add = { \"X-Added\" = \"global-add\" }, remove = [\"x-debug\"] }";
    let routes = route(
        "path_prefix = \"/private\"\n\
         request_headers = { set = { Authorization = \"Bearer xyz\", \"x-global\" = \"route\" }, \
         add = { \"X-Via-Route\" = \"private\" }, remove = [\"X-Secret\"] }",
        "api",
    ) + &route("path_prefix = \"/\"", "web");
    let f = Fleet::start(server, &["api", "web"], &routes);
    let headers = "Authorization: Basic abc\r\nX-Debug: 1\r\nX-Secret: s\r\n\
                   X-Added: client\r\nX-Global: client\r\nX-Forward-For: 6.6.6.6\r\n";

    assert_eq!(f.get("h.test", "/private/x", headers), "api");
    let h = f.up("api").last().headers;
    assert_eq!(h.all("x-forward-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(h.all("authorization"), ["Bearer xyz"], "{h:?}");
    assert_eq!(h.all("x-global"), ["route"], "the route's set wins: {h:?}");
    assert_eq!(h.all("x-added"), ["client", "global-add"], "{h:?}");
    assert_eq!(h.all("x-via-route"), ["private"], "{h:?}");
    assert!(!h.has("x-debug") && !h.has("x-secret"), "{h:?}");
    // The automatic forwarding headers are still there.
    assert_eq!(h.all("x-forwarded-for"), ["127.0.0.1"], "{h:?}");

    assert_eq!(f.get("h.test", "/public", headers), "web");
    let h = f.up("web").last().headers;
    assert_eq!(h.all("x-forward-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(h.all("x-global"), ["g"], "{h:?}");
    assert_eq!(
        h.all("authorization"),
        ["Basic abc"],
        "another route's edits do not apply"
    );
    assert_eq!(h.all("x-secret"), ["s"], "{h:?}");
    assert!(!h.has("x-debug") && !h.has("x-via-route"), "{h:?}");
}

#[test]
fn header_variables_expand_to_the_client_host_and_scheme() {
    let server = "request_headers = { set = { \"X-Addr\" = \"$remote_addr\", \"X-Port\" = \"$remote_port\", \
                  \"X-Host\" = \"$host\", \"X-Scheme\" = \"$scheme\", \
                  \"X-All\" = \"$scheme://$host:$remote_port from $remote_addr costs $$5\" } }";
    let f = Fleet::start(server, &["web"], &route("path_prefix = \"/\"", "web"));
    let mut c = Client::connect(f.addr);
    let me = c.local_addr();
    let r = c.request(b"GET /v HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n");
    assert_eq!(r.status, 200);
    let h = f.up("web").last().headers;
    let port = me.port().to_string();
    assert_eq!(h.all("x-addr"), [me.ip().to_string()], "{h:?}");
    assert_eq!(h.all("x-port"), [port.as_str()], "{h:?}");
    assert_eq!(h.all("x-scheme"), ["http"], "{h:?}");
    let host = h.get("x-host").expect("X-Host");
    assert!(
        host.eq_ignore_ascii_case("example.com"),
        "$host is the host without its port: {host:?}"
    );
    let all = h.get("x-all").expect("X-All").to_ascii_lowercase();
    assert_eq!(
        all,
        format!("http://example.com:{port} from 127.0.0.1 costs $5"),
        "{h:?}"
    );

    // Another connection has another port.
    let mut c2 = Client::connect(f.addr);
    let me2 = c2.local_addr();
    assert_eq!(c2.get("/w").status, 200);
    let h = f.up("web").last().headers;
    assert_eq!(h.all("x-port"), [me2.port().to_string()], "{h:?}");
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn request_id_is_generated_when_absent_forwarded_and_the_clients_own_is_kept() {
    let server = "response_headers = { set = { \"X-Request-Id\" = \"$request_id\" } }";
    let f = Fleet::start(server, &["web"], &route("path_prefix = \"/\"", "web"));
    let mut c = Client::connect(f.addr);

    let mut ids = Vec::new();
    for i in 0..3 {
        let r = c.get(&format!("/gen{i}"));
        assert_eq!(r.status, 200);
        let sent = f.up("web").last().headers;
        let upstream_ids = sent.all("x-request-id");
        assert_eq!(upstream_ids.len(), 1, "exactly one id upstream: {sent:?}");
        let id = upstream_ids[0].to_string();
        assert!(is_hex32(&id), "a generated id is 32 hex digits: {id:?}");
        assert_eq!(
            r.headers.all("x-request-id"),
            [id.as_str()],
            "the client sees the id the upstream got"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every request gets its own id: {ids:?}");

    let r = c.request(b"GET /own HTTP/1.1\r\nHost: t\r\nX-Request-Id: my-id-123\r\n\r\n");
    let sent = f.up("web").last().headers;
    assert_eq!(sent.all("x-request-id"), ["my-id-123"], "{sent:?}");
    assert_eq!(r.headers.all("x-request-id"), ["my-id-123"]);
}

#[test]
fn request_id_set_in_request_headers_reaches_the_upstream_once() {
    let server = "request_headers = { set = { \"X-Request-Id\" = \"$request_id\", \"X-Trace\" = \"t-$request_id\" } }";
    let f = Fleet::start(server, &["web"], &route("path_prefix = \"/\"", "web"));
    let mut c = Client::connect(f.addr);

    assert_eq!(c.get("/gen").status, 200);
    let sent = f.up("web").last().headers;
    let ids = sent.all("x-request-id");
    assert_eq!(ids.len(), 1, "one X-Request-Id, not two: {sent:?}");
    assert!(is_hex32(ids[0]), "{ids:?}");
    assert_eq!(sent.all("x-trace"), [format!("t-{}", ids[0])], "{sent:?}");

    c.request(b"GET /own HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-1\r\n\r\n");
    let sent = f.up("web").last().headers;
    assert_eq!(sent.all("x-request-id"), ["abc-1"], "{sent:?}");
    assert_eq!(sent.all("x-trace"), ["t-abc-1"], "{sent:?}");
}

#[test]
fn response_header_edits_name_the_real_server_and_a_route_set_overrides_the_global_one() {
    let extra: Vec<(String, String)> = [
        ("Server", "test-origin"),
        ("X-Powered-By", "php"),
        ("X-Frame", "upstream"),
        ("X-Keep", "yes"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let a = Upstream::start("a", Mode::Headers(extra.clone()));
    let b = Upstream::start("b", Mode::Headers(extra));
    let server = "response_headers = { set = { \"X-Served-By\" = \"$upstream_addr\", \"X-Frame\" = \"global\" }, \
                  remove = [\"Server\", \"x-powered-by\"] }";
    let routes = route(
        "path_prefix = \"/r\"\nresponse_headers = { set = { \"x-frame\" = \"route\" }, add = { \"X-Route\" = \"r\" } }",
        "web",
    ) + &route("path_prefix = \"/\"", "web");
    let text = config(server, &[("web", vec![a.addr(), b.addr()])], &routes);
    let (_proxy, addr) = start_proxy(&text);
    let mut c = Client::connect(addr);

    for (i, path) in ["/x", "/r/x", "/y", "/r/y"].iter().enumerate() {
        let (ca, cb) = (a.requests(), b.requests());
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}");
        let server = if a.requests() > ca {
            a.addr()
        } else {
            assert_eq!(b.requests(), cb + 1);
            b.addr()
        };
        assert_eq!(
            r.headers.all("x-served-by"),
            [server.to_string()],
            "request {i} {path}: {:?}",
            r.headers
        );
        assert!(
            !r.headers.has("server") && !r.headers.has("x-powered-by"),
            "{:?}",
            r.headers
        );
        assert_eq!(r.headers.all("x-keep"), ["yes"]);
        let route_frame = path.starts_with("/r");
        assert_eq!(
            r.headers.all("x-frame"),
            [if route_frame { "route" } else { "global" }],
            "{path}: {:?}",
            r.headers
        );
        assert_eq!(r.headers.has("x-route"), route_frame);
    }
    assert_eq!(
        (a.requests(), b.requests()),
        (2, 2),
        "both servers answered"
    );
}

// ---------------------------------------------------------------------------------
// ringway check
// ---------------------------------------------------------------------------------

/// Runs `ringway check` on `text` written to a temp file; returns (exit code, stderr).
fn check(name: &str, text: &str) -> (Option<i32>, String) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-routing-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the config file");
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["check", "-c", path.to_str().expect("UTF-8 path")])
        .stdin(Stdio::null())
        .output()
        .expect("run the ringway binary");
    let _ = std::fs::remove_file(&path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const UPSTREAM: &str = "[upstreams.web]\nservers = [\"127.0.0.1:9001\"]\n";

#[test]
fn check_names_the_key_of_a_bad_regex_an_unknown_variable_and_an_unknown_policy() {
    let cases = [
        (
            "regex",
            format!(
                "{UPSTREAM}[[routes]]\npath_regex = \"^/users/([0-9]+$\"\nupstream = \"web\"\n"
            ),
            "routes[0].path_regex",
            ":4",
        ),
        (
            "variable",
            format!(
                "{UPSTREAM}[[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n\
                 request_headers = {{ set = {{ X = \"$ip\" }} }}\n"
            ),
            "routes[0].request_headers.set.X",
            "$ip",
        ),
        (
            "policy",
            format!("{UPSTREAM}balance = \"fastest\"\n[[routes]]\nupstream = \"web\"\n"),
            "upstreams.web.balance",
            "fastest",
        ),
    ];
    for (name, text, key, mention) in cases {
        let (code, stderr) = check(name, &text);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(key),
            "{name}: stderr should name `{key}`: {stderr}"
        );
        assert!(
            stderr.contains(mention),
            "{name}: stderr should mention `{mention}`: {stderr}"
        );
    }
    // And the same config with the mistake fixed passes.
    let (code, stderr) = check(
        "fixed",
        &format!("{UPSTREAM}[[routes]]\npath_regex = \"^/users/([0-9]+)$\"\nupstream = \"web\"\n"),
    );
    assert_eq!(code, Some(0), "{stderr}");
}

//! The admin API's runtime registry (seed 003: Add, Delete, Failure, Lookup) against
//! the real binary: servers added, marked down and up, and drained away under load
//! with no failed request; a removed server shown `draining` while its request
//! finishes; the error answers; and registry changes lasting only until the file is
//! reloaded.
//!
//! "Gets no new requests" is checked on the upstreams' own counters: once a change is
//! applied (each worker at its next tick), a server's count stops moving while load
//! goes on. No timing is asserted.

use crate::support::{poll_until, Binary, Client, Response};
use crate::switchable::{Answer, Backend};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bound for every wait on the proxy: generous, since the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(10);

/// `workers`, group `web` over `servers` routed from `/`, and the admin API.
fn config(workers: usize, servers: &[SocketAddr]) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\n\n\
         [upstreams.web]\nservers = [{}]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        list.join(", ")
    )
}

/// One admin request with an optional JSON body, on a fresh connection.
fn call(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut c = Client::connect(admin);
    let r: Response = c.request(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let v =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()));
    (r.status, v)
}

/// Keep-alive clients sending GETs until stopped, counting every answer that was not a
/// complete 200 as a failure.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|t| {
                let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut c: Option<Client> = None;
                    // Bounded: the test stops it long before this.
                    for i in 0..200_000 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let client = c.get_or_insert_with(|| Client::connect(addr));
                        client.send(
                            format!("GET /load/{t}/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
                        );
                        sent.fetch_add(1, Ordering::SeqCst);
                        match client.try_read_response(false) {
                            Ok(r) if r.complete && r.status == 200 => {
                                if r.closes() {
                                    c = None;
                                }
                            }
                            Ok(r) => {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{} {}", r.status, r.text()));
                                c = None;
                            }
                            Err(e) => {
                                failures.lock().unwrap().push(e.to_string());
                                c = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failures,
            threads,
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests were sent (bounded by PATIENCE).
    fn more(&self, n: usize) {
        let start = self.sent();
        assert!(
            poll_until(PATIENCE, || self.sent() >= start + n),
            "the load stalled at {} requests",
            self.sent()
        );
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("a load thread");
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed; first: {:?}",
            failures.len(),
            self.sent(),
            &failures[..failures.len().min(5)]
        );
        self.sent()
    }
}

/// Waits until `count` stops moving while the load goes on, then checks it stays put
/// over more load: the change that should stop traffic to it has reached every worker.
fn stops_getting_requests(load: &Load, count: impl Fn() -> usize) {
    let settled = poll_until(PATIENCE, || {
        let before = count();
        load.more(50);
        count() == before
    });
    assert!(settled, "it kept getting requests");
    let before = count();
    load.more(300);
    assert_eq!(count(), before, "a request reached it after the change");
}

#[test]
fn servers_are_added_marked_down_and_up_and_drained_under_load_with_no_failed_request() {
    let a = Backend::start("a", Answer::Ok);
    let b = Backend::start("b", Answer::Ok);
    let proxy = Binary::start("registry-load", &config(2, &[a.addr()]));
    let admin = proxy.admin_addr();
    let load = Load::start(proxy.addr(), 4);
    load.more(100);

    // Add: b gets traffic.
    let (status, v) = call(
        admin,
        "POST",
        "/upstreams/web/servers",
        &format!("{{\"addr\": \"{}\"}}", b.addr()),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["persisted"], false);
    assert_eq!(v["created_upstream"], false);
    assert!(poll_until(PATIENCE, || {
        load.more(20);
        b.requests() > 0
    }));

    // Down: a gets nothing, and /upstreams says why.
    let (status, v) = call(
        admin,
        "POST",
        &format!("/upstreams/web/servers/{}/down", a.addr()),
        "",
    );
    assert_eq!((status, &v["state"]), (200, &Value::from("down")), "{v}");
    stops_getting_requests(&load, || a.requests());
    let (_, list) = call(admin, "GET", "/upstreams", "");
    let servers = list["upstreams"]["web"]["servers"]
        .as_array()
        .expect("servers")
        .clone();
    let sa = servers
        .iter()
        .find(|s| s["addr"] == a.addr().to_string())
        .expect("a listed");
    assert_eq!(sa["state"], "down", "{list}");
    assert_eq!(sa["reason"], "marked down through the admin API");

    // Up: a gets traffic again.
    let (status, _) = call(
        admin,
        "POST",
        &format!("/upstreams/web/servers/{}/up", a.addr()),
        "",
    );
    assert_eq!(status, 200);
    let before = a.requests();
    assert!(poll_until(PATIENCE, || {
        load.more(20);
        a.requests() > before
    }));

    // Delete b: no new requests, and its pooled connections close.
    let (status, v) = call(
        admin,
        "DELETE",
        &format!("/upstreams/web/servers/{}", b.addr()),
        "",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["persisted"], false);
    stops_getting_requests(&load, || b.requests());
    assert!(
        poll_until(PATIENCE, || b.open_proxied() == 0),
        "{} proxied connections to the removed server are still open",
        b.open_proxied()
    );
    let total = load.finish();
    assert!(
        total >= 1000,
        "only {total} requests: the test proved little"
    );
    assert_eq!(
        proxy.lines("registry change through the admin API").len(),
        2,
        "{}",
        proxy.log()
    );
}

#[test]
fn a_removed_server_is_shown_draining_until_its_request_finishes() {
    let a = Backend::start("a", Answer::Ok);
    let slow = Backend::start("slow", Answer::Held);
    let proxy = Binary::start("registry-draining", &config(1, &[slow.addr(), a.addr()]));
    let admin = proxy.admin_addr();
    // Round robin from worker 0 starts at the first server: this request is held by `slow`.
    let addr = proxy.addr();
    let held = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.get("/held")
    });
    assert!(poll_until(PATIENCE, || slow.requests() == 1));

    let (status, _) = call(
        admin,
        "DELETE",
        &format!("/upstreams/web/servers/{}", slow.addr()),
        "",
    );
    assert_eq!(status, 200);
    let entry = |list: &Value| {
        list["upstreams"]["web"]["servers"]
            .as_array()
            .and_then(|s| {
                s.iter()
                    .find(|s| s["addr"] == slow.addr().to_string())
                    .cloned()
            })
    };
    let (_, list) = call(admin, "GET", "/upstreams", "");
    let e = entry(&list).unwrap_or_else(|| panic!("the draining server is listed: {list}"));
    assert_eq!(e["state"], "draining", "{e}");
    assert_eq!(e["in_flight"], 1, "{e}");

    slow.release();
    let r = held.join().expect("the held client");
    assert_eq!(r.status, 200, "the in-flight request completes");
    assert!(
        poll_until(PATIENCE, || entry(&call(admin, "GET", "/upstreams", "").1)
            .is_none()),
        "it is gone once its request finished"
    );
}

#[test]
fn registry_changes_are_refused_with_a_reason_when_they_cannot_apply() {
    let a = Backend::start("a", Answer::Ok);
    let proxy = Binary::start("registry-errors", &config(1, &[a.addr()]));
    let admin = proxy.admin_addr();
    let servers = "/upstreams/web/servers";
    for (method, path, body, want, mention) in [
        (
            "POST",
            servers.to_string(),
            format!("{{\"addr\": \"{}\"}}", a.addr()),
            409,
            "already",
        ),
        (
            "POST",
            servers.to_string(),
            "{\"addr\": \"nonsense\"}".to_string(),
            400,
            "nonsense",
        ),
        (
            "POST",
            servers.to_string(),
            "{\"adr\": \"x\"}".to_string(),
            400,
            "adr",
        ),
        (
            "POST",
            servers.to_string(),
            "{\"addr\": \"127.0.0.1:9\", \"weight\": 0}".to_string(),
            400,
            "weight",
        ),
        (
            "POST",
            "/upstreams/bad name/servers".to_string(),
            String::new(),
            400,
            "not a group name",
        ),
        (
            "DELETE",
            format!("{servers}/{}", a.addr()),
            String::new(),
            409,
            "no server left",
        ),
        (
            "DELETE",
            format!("{servers}/127.0.0.1:9"),
            String::new(),
            404,
            "not a server",
        ),
        (
            "DELETE",
            format!("/upstreams/nope/servers/{}", a.addr()),
            String::new(),
            404,
            "no upstream",
        ),
        (
            "POST",
            format!("{servers}/127.0.0.1:9/down"),
            String::new(),
            404,
            "not a server",
        ),
        ("GET", servers.to_string(), String::new(), 405, "POST"),
    ] {
        let path = path.replace(' ', "%20");
        let (status, v) = call(admin, method, &path, &body);
        assert_eq!(status, want, "{method} {path} {body}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(mention), "{method} {path}: {error}");
    }
    let (_, status) = call(admin, "GET", "/status", "");
    assert_eq!(status["generation"], 1, "nothing was applied");
}

#[test]
fn a_new_group_is_created_and_registry_changes_last_until_the_file_is_reloaded() {
    let a = Backend::start("a", Answer::Ok);
    let b = Backend::start("b", Answer::Ok);
    let proxy = Binary::start("registry-reload", &config(1, &[a.addr()]));
    let admin = proxy.admin_addr();
    let body = format!("{{\"addr\": \"{}\", \"weight\": 3}}", b.addr());
    let (status, v) = call(admin, "POST", "/upstreams/svc-v2/servers", &body);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["created_upstream"], true);
    let (_, list) = call(admin, "GET", "/upstreams", "");
    let svc = &list["upstreams"]["svc-v2"];
    assert_eq!(
        svc["balance"], "round_robin",
        "created with default settings: {list}"
    );
    assert_eq!(svc["servers"][0]["weight"], 3);
    let (_, config) = call(admin, "GET", "/config", "");
    assert_eq!(
        config["config"]["upstreams"]["svc-v2"]["connect_timeout"],
        "3s"
    );

    // Reloading the file brings back what the file says.
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_for_log("upstream `svc-v2` removed", PATIENCE),
        "{}",
        proxy.log()
    );
    let (_, list) = call(admin, "GET", "/upstreams", "");
    assert!(list["upstreams"].get("svc-v2").is_none(), "{list}");
}

#[test]
fn a_route_naming_its_group_from_the_path_reaches_a_group_the_registry_adds() {
    let v1 = Backend::start("svc-v1", Answer::Ok);
    let v2 = Backend::start("svc-v2", Answer::Ok);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nerror_format = \"json\"\n\n\
         [upstreams.svc-v1]\nservers = [\"{}\"]\n\n\
         [[routes]]\npath_regex = \"^/(?<name>[a-z0-9-]+)/(?<version>v[0-9]+)/\"\n\
         upstream = \"${{name}}-${{version}}\"\nstrip_prefix = true\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        v1.addr()
    );
    let proxy = Binary::start("registry-path-named", &text);
    let admin = proxy.admin_addr();
    let mut c = Client::connect(proxy.addr());

    let r = c.get("/svc/v1/hello?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "svc-v1\n");
    let seen = v1.seen();
    assert_eq!(seen.last().map(|s| s.method.as_str()), Some("GET"));

    // No such group yet: a 502 naming it, and the connection carries on.
    let r = c.get("/svc/v2/hello");
    assert_eq!(r.status, 502, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).expect("a JSON error");
    assert_eq!(body["error"], "UnknownUpstream", "{body}");
    assert_eq!(body["upstream"], "svc-v2", "{body}");

    // Seed 003's Add: the service registers, and the same path works at once.
    let (status, v) = call(
        admin,
        "POST",
        "/upstreams/svc-v2/servers",
        &format!("{{\"addr\": \"{}\"}}", v2.addr()),
    );
    assert_eq!(status, 201, "{v}");
    assert!(
        poll_until(PATIENCE, || c.get("/svc/v2/hello").status == 200),
        "the path-named group never answered"
    );
    let r = c.get("/svc/v2/hello/world");
    assert_eq!(r.text(), "svc-v2\n");
    assert_eq!(v2.requests(), v2.seen().len());
    // `strip_prefix` removed the whole match: the service sees its own path.
    let targets = proxy_targets(&v2);
    assert!(
        targets.iter().all(|t| t.starts_with("/hello")),
        "{targets:?}"
    );
}

/// The paths an upstream was asked for, from its recorded requests.
fn proxy_targets(b: &Backend) -> Vec<String> {
    b.seen().iter().map(|s| s.target.clone()).collect()
}

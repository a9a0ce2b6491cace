//! Hot reload and graceful drain, through the real binary and its signals.
//!
//! SIGHUP: a kept-alive client (and fifty at once, over several reloads) moves to the
//! new routes without a failed request and never back; servers added by a reload get
//! traffic, removed ones get no new request, lose their idle pooled connections at
//! once and finish their in-flight request, kept ones keep their health; a new listen
//! address answers and a removed one refuses; a bad config (syntax, unknown key, route
//! to a missing upstream, a `server.workers` change) is refused, logged once, on one
//! line, with the file, line and key, and the running config keeps serving.
//!
//! SIGTERM and SIGINT: listeners close (on every worker, busy or not), idle keep-alive
//! connections close, in-flight requests finish with `Connection: close`, and the
//! process exits 0 when they are done, at `shutdown_timeout` (logging how many were
//! cut), or at a second signal. SIGUSR1 does not stop the proxy.
//!
//! Which server answered is read from response bodies and the upstreams' own counters.
//! Slow requests are held by the upstream until the test releases them
//! (`Answer::Held`) or hang past the test's patience (`Mode::Hang`), so no test guesses
//! how long "slow" is. Every wait is `poll_until` (or a read timeout) with a generous
//! bound; no timing is asserted.

use crate::support::{poll_until, try_get, Binary, Client, Mode, Response, Upstream};
use crate::switchable::{Answer, Backend};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bound for every wait on the proxy: generous, since the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(10);

/// Config text, built a table at a time.
struct Toml(String);

impl Toml {
    /// `[server]` listening on `listen` with `workers`, and `server_extra` lines.
    fn server(listen: &[&str], workers: usize, server_extra: &str) -> Toml {
        let listen: Vec<String> = listen.iter().map(|l| format!("\"{l}\"")).collect();
        Toml(format!(
            "[server]\nlisten = [{}]\nworkers = {workers}\n{server_extra}\n",
            listen.join(", ")
        ))
    }

    /// `[upstreams.NAME]` over `servers`, with `extra` lines.
    fn upstream(mut self, name: &str, servers: &[SocketAddr], extra: &str) -> Toml {
        let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
        self.0.push_str(&format!(
            "\n[upstreams.{name}]\nservers = [{}]\n{extra}\n",
            list.join(", ")
        ));
        self
    }

    /// A `[[routes]]` entry from `path_prefix` to `upstream` (routes match in order).
    fn route(mut self, path_prefix: &str, upstream: &str) -> Toml {
        self.0.push_str(&format!(
            "\n[[routes]]\npath_prefix = \"{path_prefix}\"\nupstream = \"{upstream}\"\n"
        ));
        self
    }

    fn text(&self) -> &str {
        &self.0
    }
}

/// One listen address on 127.0.0.1, one group `web` over `servers` routed from `/`.
fn simple(workers: usize, server_extra: &str, servers: &[SocketAddr], extra: &str) -> Toml {
    Toml::server(&["127.0.0.1:0"], workers, server_extra)
        .upstream("web", servers, extra)
        .route("/", "web")
}

/// `GET path` on a connection of its own, in a thread: a request that stays in flight
/// while the test goes on. The thread returns the response and the connection.
fn get_in_background(addr: SocketAddr, path: &str) -> JoinHandle<(Response, Client)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n");
    std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(request.as_bytes());
        let r = c
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("the request in flight failed: {e}"));
        (r, c)
    })
}

/// True when a connect to `addr` is refused (nothing listens there any more).
fn refuses(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// True while a socket listens on `addr`, as the kernel's table of TCP sockets says.
/// It asks without connecting: a probe connection accepted by a worker that has not
/// applied the drain yet would itself keep that worker busy, and so hide a listener
/// left open by a worker that exits at once.
fn listening(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr}: only IPv4 listeners are looked up")
    };
    // `/proc/net/tcp` shows the address as the in-memory u32 and the port in hex;
    // state 0A is LISTEN.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
    })
}

/// A complete 200 on `c` for `GET path`, on a connection the proxy keeps; its body.
fn get_kept(c: &mut Client, path: &str) -> String {
    let r = c.get(path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert!(
        !r.closes(),
        "GET {path}: the proxy closed a kept-alive connection"
    );
    r.text()
}

/// A complete 200 for `GET path` on a fresh connection; its body.
fn get_fresh(addr: SocketAddr, path: &str) -> String {
    let r = try_get(addr, path).unwrap_or_else(|| panic!("no complete response to {path}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.text()
}

// ---------------------------------------------------------------------------------
// Reload: routes under keep-alive clients
// ---------------------------------------------------------------------------------

#[test]
fn a_kept_alive_client_sees_the_new_route_after_sighup_with_no_failed_request() {
    let web = Backend::start("web", Answer::Ok);
    let api = Backend::start("api", Answer::Ok);
    let before = Toml::server(&["127.0.0.1:0"], 2, "")
        .upstream("web", &[web.addr()], "")
        .route("/", "web");
    let after = Toml::server(&["127.0.0.1:0"], 2, "")
        .upstream("web", &[web.addr()], "")
        .upstream("api", &[api.addr()], "")
        .route("/api", "api")
        .route("/", "web");
    let proxy = Binary::start("lifecycle-route-switch", before.text());
    let mut c = Client::connect(proxy.addr());
    let mut sent = 0;
    let mut next = |c: &mut Client| {
        sent += 1;
        get_kept(c, &format!("/api/{sent}"))
    };
    for _ in 0..20 {
        assert_eq!(next(&mut c), "web\n");
    }

    // Reload while the client keeps sending on the same connection.
    proxy.rewrite_config(after.text());
    proxy.signal(libc::SIGHUP);
    let mut answers = Vec::new();
    let switched = poll_until(PATIENCE, || {
        answers.push(next(&mut c));
        answers.last().is_some_and(|a| a == "api\n")
    });
    assert!(switched, "never routed to `api`: {}", proxy.log());
    assert!(
        answers[..answers.len() - 1].iter().all(|a| a == "web\n"),
        "{answers:?}"
    );
    let at_switch = web.requests();
    for _ in 0..50 {
        assert_eq!(
            next(&mut c),
            "api\n",
            "a request went back to the old route"
        );
    }
    assert_eq!(web.requests(), at_switch);
    assert!(api.requests() >= 51);

    let lines = proxy.reload_lines();
    assert_eq!(lines.len(), 1, "{}", proxy.log());
    let file = proxy.config_path().display().to_string();
    assert!(
        lines[0].contains(&format!(
            "ringway[control] info: reload: generation 2 from {file}: routes 1 → 2; upstream `api` added"
        )),
        "{}",
        lines[0]
    );
}

/// What one load client saw.
#[derive(Default)]
struct Seen {
    ok: usize,
    failures: Vec<String>,
}

/// A keep-alive client sending `GET`s until `stop` (at most `MAX` of them). Every
/// answer must be a complete 200 on the same connection, from generation `g{k}`'s
/// server with `k` never going down: a worker runs one generation at a time and a
/// connection stays on its worker, so a later request can never run an older config.
fn load_client(addr: SocketAddr, stop: Arc<AtomicBool>, total: Arc<AtomicUsize>) -> Seen {
    const MAX: usize = 100_000;
    let mut seen = Seen::default();
    let mut c = match Client::try_connect(addr) {
        Ok(c) => c,
        Err(e) => {
            seen.failures.push(format!("connect: {e}"));
            return seen;
        }
    };
    let mut generation = 0;
    for i in 0..MAX {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let request = format!("GET /load/{i} HTTP/1.1\r\nHost: t\r\n\r\n");
        if let Err(e) = c.try_send(request.as_bytes()) {
            seen.failures.push(format!("request {i}: send: {e}"));
            break;
        }
        let r = match c.try_read_response(false) {
            Ok(r) => r,
            Err(e) => {
                seen.failures.push(format!("request {i}: {e}"));
                break;
            }
        };
        let text = r.text();
        if r.status != 200 || !r.complete || r.closes() {
            seen.failures.push(format!(
                "request {i}: {} complete={} close={}: {text}",
                r.status,
                r.complete,
                r.closes()
            ));
            break;
        }
        let Some(g) = text
            .strip_prefix('g')
            .and_then(|t| t.trim_end().parse::<usize>().ok())
        else {
            seen.failures
                .push(format!("request {i}: answered by {text:?}"));
            break;
        };
        if g < generation {
            seen.failures
                .push(format!("request {i}: generation {g} after {generation}"));
        }
        generation = generation.max(g);
        seen.ok += 1;
        total.fetch_add(1, Ordering::SeqCst);
    }
    seen
}

/// Sets the flag when dropped: load clients stop however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn fifty_keep_alive_clients_get_no_error_through_several_reloads_and_never_an_older_route() {
    const CLIENTS: usize = 50;
    const GENERATIONS: usize = 5;
    // Generation k routes everything to upstream `uk`, whose only server is `gk`.
    let servers: Vec<Backend> = (1..=GENERATIONS)
        .map(|k| Backend::start(&format!("g{k}"), Answer::Ok))
        .collect();
    let config = |k: usize| {
        let name = format!("u{k}");
        Toml::server(&["127.0.0.1:0"], 2, "")
            .upstream(&name, &[servers[k - 1].addr()], "")
            .route("/", &name)
    };
    let proxy = Binary::start("lifecycle-load", config(1).text());
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let clients: Vec<JoinHandle<Seen>> = (0..CLIENTS)
        .map(|_| {
            let (addr, stop, total) = (proxy.addr(), stop.clone(), total.clone());
            std::thread::spawn(move || load_client(addr, stop, total))
        })
        .collect();
    let _stop = StopOnDrop(stop.clone());

    let first = &servers[0];
    assert!(
        poll_until(PATIENCE, || first.requests() >= 200),
        "the clients got going"
    );
    for k in 2..=GENERATIONS {
        let line = proxy.reload(config(k).text());
        assert!(
            line.contains(&format!("reload: generation {k} from")),
            "{line}"
        );
        // Under load: the new generation takes traffic before the next reload.
        let server = &servers[k - 1];
        assert!(
            poll_until(PATIENCE, || server.requests() >= 200),
            "generation {k} got no traffic: {}",
            proxy.log()
        );
    }
    let before = total.load(Ordering::SeqCst);
    assert!(
        poll_until(PATIENCE, || total.load(Ordering::SeqCst) >= before + 200),
        "the clients stalled on the last generation"
    );
    stop.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    let mut ok = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let seen = client.join().expect("a load client panicked");
        assert!(
            seen.ok > 0 || !seen.failures.is_empty(),
            "client {i} sent nothing"
        );
        ok += seen.ok;
        failures.extend(
            seen.failures
                .into_iter()
                .map(|f| format!("client {i}: {f}")),
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures out of {ok} answers; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let reached: usize = servers.iter().map(Backend::requests).sum();
    assert_eq!(
        reached, ok,
        "every request reached exactly one server, once"
    );
    assert_eq!(
        proxy.reload_lines().len(),
        GENERATIONS - 1,
        "{}",
        proxy.log()
    );
    assert!(proxy.lines("reload refused").is_empty(), "{}", proxy.log());
}

// ---------------------------------------------------------------------------------
// Reload: servers
// ---------------------------------------------------------------------------------

#[test]
fn a_removed_server_gets_no_new_request_its_idle_connections_close_and_its_slow_request_completes()
{
    let gone = Backend::start("gone", Answer::Held);
    let added = Backend::start("added", Answer::Ok);
    // One worker: once it has installed the new generation, every request uses it.
    let proxy = Binary::start(
        "lifecycle-servers",
        simple(1, "", &[gone.addr()], "").text(),
    );
    let addr = proxy.addr();

    // Two requests held at once need two upstream connections; once answered, both
    // wait idle in the proxy's pool.
    let warm = [
        get_in_background(addr, "/warm/1"),
        get_in_background(addr, "/warm/2"),
    ];
    assert!(poll_until(PATIENCE, || gone.requests() == 2));
    gone.release();
    for w in warm {
        let (r, _) = w.join().expect("a warm-up request");
        assert_eq!((r.status, r.text().as_str()), (200, "gone\n"));
    }
    assert_eq!(gone.open_proxied(), 2, "two pooled connections");

    // A slow request takes one of them; the other stays idle.
    let slow = get_in_background(addr, "/slow");
    assert!(poll_until(PATIENCE, || gone.requests() == 3));

    let line = proxy.reload(simple(1, "", &[added.addr()], "").text());
    assert!(
        line.contains(&format!(
            "reload: generation 2 from {}: servers added: web {}; servers removed: web {}",
            proxy.config_path().display(),
            added.addr(),
            gone.addr()
        )),
        "{line}"
    );
    // The worker installs the new generation at its next tick: the idle connection to
    // the removed server is closed then, the busy one is left alone.
    assert!(
        poll_until(PATIENCE, || gone.open_proxied() == 1),
        "the idle pooled connection to the removed server stayed open: {} open",
        gone.open_proxied()
    );
    let mut c = Client::connect(addr);
    for i in 0..20 {
        assert_eq!(get_kept(&mut c, &format!("/after/{i}")), "added\n");
        assert_eq!(get_fresh(addr, &format!("/fresh/{i}")), "added\n");
    }
    assert_eq!(gone.requests(), 3, "a removed server got a new request");
    assert_eq!(added.requests(), 40);

    // The request in flight on the removed server finishes normally, and its
    // connection is not pooled afterwards.
    gone.release();
    let (r, _) = slow.join().expect("the slow request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.complete);
    assert_eq!(r.text(), "gone\n");
    assert!(
        poll_until(PATIENCE, || gone.open_proxied() == 0),
        "the removed server's last connection was kept: {} open",
        gone.open_proxied()
    );
    assert_eq!(gone.requests(), 3);
}

#[test]
fn a_server_kept_across_a_reload_stays_marked_down_even_once_it_answers() {
    // Accepts and closes at once: each GET to it fails over to another server.
    let kept = Backend::start("kept", Answer::CloseOnAccept);
    let other = Backend::start("other", Answer::Ok);
    let added = Backend::start("added", Answer::Ok);
    let extra = "max_fails = 1\nbackoff = [\"60s\"]\n";
    // One worker: it marks the server down itself, at the failure. (Another worker
    // would learn of it over the bus at its next tick, after the log line; a request
    // it took in between could still reach the server, reload or not.)
    let proxy = Binary::start(
        "lifecycle-kept-health",
        simple(1, "", &[kept.addr(), other.addr()], extra).text(),
    );
    let addr = proxy.addr();
    let down = format!("server {}: up → down", kept.addr());
    let marked = poll_until(PATIENCE, || {
        assert_eq!(get_fresh(addr, "/mark"), "other\n");
        !proxy.lines(&down).is_empty()
    });
    assert!(marked, "no mark-down logged: {}", proxy.log());

    // It answers now, but its 60 s rest is not over: a reload must not end it.
    kept.set_answer(Answer::Ok);
    let attempts = kept.accepted();
    let line = proxy.reload(simple(1, "", &[kept.addr(), added.addr()], extra).text());
    assert!(
        line.contains(&format!(
            "servers added: web {}; servers removed: web {}",
            added.addr(),
            other.addr()
        )),
        "{line}"
    );
    let joined = poll_until(PATIENCE, || {
        let answer = get_fresh(addr, "/after");
        assert_ne!(answer, "kept\n", "{}", proxy.log());
        added.requests() > 0
    });
    assert!(joined, "the added server got no traffic: {}", proxy.log());
    // Were its state reset, the kept server would take half of these.
    for i in 0..40 {
        let answer = get_fresh(addr, &format!("/spread/{i}"));
        assert_ne!(answer, "kept\n", "request {i}: {}", proxy.log());
    }
    assert_eq!(
        kept.accepted(),
        attempts,
        "a server marked down before the reload got traffic after it"
    );
    assert_eq!(kept.requests(), 0);
    assert!(added.requests() >= 40);
    assert_eq!(
        proxy.lines(&format!("server {}:", kept.addr())).len(),
        1,
        "only the one mark-down: {}",
        proxy.log()
    );
}

// ---------------------------------------------------------------------------------
// Reload: refused
// ---------------------------------------------------------------------------------

#[test]
fn a_bad_reload_is_refused_and_logged_once_with_file_line_and_key_while_the_old_config_serves() {
    let web = Backend::start("web", Answer::Ok);
    let other = Backend::start("other", Answer::Ok);
    // Line numbers matter: the errors below are on lines 3, 4 and 10.
    let good = |server: SocketAddr, line_3: &str, line_4: &str, upstream: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{line_3}\n{line_4}\n\
             [upstreams.web]\nservers = [\"{server}\"]\n\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"{upstream}\"\n"
        )
    };
    let proxy = Binary::start(
        "lifecycle-bad-reload",
        &good(web.addr(), "workers = 1", "", "web"),
    );
    let file = proxy.config_path().display().to_string();
    let mut c = Client::connect(proxy.addr());
    assert_eq!(get_kept(&mut c, "/before"), "web\n");

    // Each bad file points at `other`, so a reload that went through would show.
    let bad = [
        (
            "a syntax error",
            good(other.addr(), "workers = 1 1", "", "web"),
            3,
            "`server.workers`",
        ),
        (
            "an unknown key",
            good(
                other.addr(),
                "workers = 1",
                "lisen = \"127.0.0.1:0\"",
                "web",
            ),
            4,
            "unknown field `lisen`",
        ),
        (
            "a route to a missing upstream",
            good(other.addr(), "workers = 1", "", "nope"),
            10,
            "`routes[0].upstream`: no upstream named `nope`",
        ),
    ];
    for (n, (what, text, line, key)) in bad.iter().enumerate() {
        let logged = proxy.reload(text);
        let want = format!("reload refused; generation 1 keeps running: {file}:{line}: ");
        assert!(logged.contains(&want), "{what}: want {want:?} in {logged}");
        assert!(logged.contains(key), "{what}: want {key:?} in {logged}");
        assert_eq!(
            proxy.lines("reload refused").len(),
            n + 1,
            "{what}: logged once: {}",
            proxy.log()
        );
        for i in 0..5 {
            assert_eq!(get_kept(&mut c, &format!("/kept/{n}/{i}")), "web\n");
            assert_eq!(get_fresh(proxy.addr(), &format!("/new/{n}/{i}")), "web\n");
        }
    }
    assert_eq!(other.requests(), 0, "a refused config was served");

    // Refusals used no generation: the next good file is generation 2.
    let line = proxy.reload(&good(other.addr(), "workers = 1", "", "web"));
    assert!(
        line.contains(&format!(
            "reload: generation 2 from {file}: servers added: web {}; servers removed: web {}",
            other.addr(),
            web.addr()
        )),
        "{line}"
    );
    let moved = poll_until(PATIENCE, || get_kept(&mut c, "/later") == "other\n");
    assert!(moved, "the good reload did not take effect");
    assert_eq!(proxy.lines("reload refused").len(), 3, "{}", proxy.log());
}

#[test]
fn a_reload_refused_for_a_toml_syntax_error_is_logged_as_one_whole_line() {
    let web = Backend::start("web", Answer::Ok);
    let good = simple(1, "", &[web.addr()], "");
    let proxy = Binary::start("lifecycle-one-line", good.text());
    // An unclosed array: the TOML parser's message for it spans two lines.
    let unclosed = good.text().replace(
        &format!("\"{}\"]", web.addr()),
        &format!("\"{}\"", web.addr()),
    );
    let line = proxy.reload(&unclosed);
    assert!(line.contains("reload refused"), "{line}");
    // A marker logged by another thread after it: once it is in, the whole refusal
    // message is (each message is written under the stderr lock).
    proxy.signal(libc::SIGUSR1);
    assert!(proxy.wait_for_log("SIGUSR1", PATIENCE), "{}", proxy.log());
    let log = proxy.log();
    let strays: Vec<&str> = log.lines().filter(|l| !is_log_line(l)).collect();
    assert!(
        strays.is_empty(),
        "lines that are not log lines (no timestamp, thread or level): {strays:?}\n{log}"
    );
    assert_eq!(get_fresh(proxy.addr(), "/still"), "web\n");
}

/// `2026-12-02T07:52:43Z ringway[thread] level: message`.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    let stamp = b.len() > 21
        && b[..20].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    stamp
        && line[20..].starts_with(" ringway[")
        && [" info: ", " warn: ", " error: "]
            .iter()
            .any(|level| line.contains(level))
}

#[test]
fn changing_server_workers_is_refused_and_the_running_config_keeps_serving() {
    let web = Backend::start("web", Answer::Ok);
    let proxy = Binary::start("lifecycle-workers", simple(2, "", &[web.addr()], "").text());
    let line = proxy.reload(simple(3, "", &[web.addr()], "").text());
    let want = format!(
        "reload refused; generation 1 keeps running: {}: `server.workers`: cannot change from 2 to 3 without a restart",
        proxy.config_path().display()
    );
    assert!(line.contains(&want), "want {want:?} in {line}");
    for i in 0..10 {
        assert_eq!(get_fresh(proxy.addr(), &format!("/w/{i}")), "web\n");
    }
    assert_eq!(proxy.reload_lines().len(), 1, "{}", proxy.log());
}

// ---------------------------------------------------------------------------------
// Reload: listeners
// ---------------------------------------------------------------------------------

#[test]
fn a_listen_change_binds_the_new_address_and_the_old_one_refuses_while_its_request_completes() {
    let up = Backend::start("up", Answer::Held);
    let listen = |addrs: &[&str]| {
        Toml::server(addrs, 2, "")
            .upstream("web", &[up.addr()], "")
            .route("/", "web")
    };
    // 127.0.0.0/8 is loopback on Linux: three addresses, each with a port of its own.
    let proxy = Binary::start(
        "lifecycle-listen",
        listen(&["127.0.0.1:0", "127.0.0.2:0"]).text(),
    );
    let (old, kept) = (proxy.addrs()[0], proxy.addrs()[1]);
    let slow = get_in_background(old, "/slow");
    assert!(poll_until(PATIENCE, || up.requests() == 1));
    // Only the request in flight is held.
    up.set_answer(Answer::Ok);

    let line = proxy.reload(listen(&["127.0.0.2:0", "127.0.0.3:0"]).text());
    let new: SocketAddr = line
        .split("; ")
        .find_map(|part| {
            let rest = part.split("listening on ").nth(1)?;
            rest.strip_suffix(" added")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no added listen address in {line}"));
    assert_eq!(new.ip().to_string(), "127.0.0.3", "{line}");
    assert!(
        line.contains(&format!(
            "reload: generation 2 from {}: listening on {new} added; listening on {old} removed",
            proxy.config_path().display()
        )),
        "only the listen addresses changed: {line}"
    );

    assert_eq!(get_fresh(new, "/new"), "up\n");
    assert!(
        poll_until(PATIENCE, || !listening(old)),
        "the removed address {old} is still listened on"
    );
    assert!(refuses(old), "the removed address accepts connections");
    assert_eq!(get_fresh(kept, "/kept"), "up\n", "a kept address stopped");
    // The connection accepted there before the reload finishes its request.
    up.release();
    let (r, _) = slow.join().expect("the slow request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.complete);
    assert_eq!(r.text(), "up\n");
    assert!(refuses(old), "the removed address accepts again");
    assert_eq!(get_fresh(new, "/new-again"), "up\n");
    assert_eq!(get_fresh(kept, "/kept-again"), "up\n");
}

// ---------------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------------

#[test]
fn sigterm_lets_the_request_in_flight_finish_closes_idle_connections_refuses_new_ones_and_exits_0()
{
    let up = Backend::start("up", Answer::Ok);
    let mut proxy = Binary::start(
        "lifecycle-drain",
        simple(2, "shutdown_timeout = \"20s\"", &[up.addr()], "").text(),
    );
    let addr = proxy.addr();
    let mut idle = Client::connect(addr);
    assert_eq!(get_kept(&mut idle, "/idle"), "up\n");
    up.set_answer(Answer::Held);
    let slow = get_in_background(addr, "/slow");
    assert!(poll_until(PATIENCE, || up.requests() == 2));

    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_for_log("SIGTERM: draining", PATIENCE),
        "{}",
        proxy.log()
    );
    // The idle keep-alive connection is closed, and new connections are refused.
    idle.assert_closed();
    assert!(
        poll_until(PATIENCE, || !listening(addr)),
        "a draining proxy still listens on {addr}"
    );
    assert!(refuses(addr), "a draining proxy accepts connections");
    assert!(proxy.running(), "exited with a request in flight");

    up.release();
    let (r, mut slow_client) = slow.join().expect("the slow request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.complete);
    assert_eq!(r.text(), "up\n");
    slow_client.assert_closed();
    let status = proxy.wait_exit(PATIENCE);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit: {status:?}; {}",
        proxy.log()
    );
    assert_eq!(
        proxy.lines("drained: every connection finished").len(),
        1,
        "{}",
        proxy.log()
    );
    assert!(
        r.closes(),
        "the response finished during the drain lacks `Connection: close`: {:?}",
        r.headers
    );
}

#[test]
fn sigterm_closes_the_listener_of_a_worker_that_has_no_connection() {
    let up = Backend::start("up", Answer::Held);
    let mut proxy = Binary::start(
        "lifecycle-drain-idle-worker",
        simple(2, "shutdown_timeout = \"20s\"", &[up.addr()], "").text(),
    );
    let addr = proxy.addr();
    // One connection: one of the two workers has none, and ends its drain at once.
    let slow = get_in_background(addr, "/slow");
    assert!(poll_until(PATIENCE, || up.requests() == 1));

    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_for_log("SIGTERM: draining", PATIENCE),
        "{}",
        proxy.log()
    );
    assert!(
        poll_until(PATIENCE, || !listening(addr)),
        "while one worker drained, a socket still listened on {addr}, so new clients \
         were accepted and never served (refused: {})",
        refuses(addr)
    );
    assert!(refuses(addr), "a draining proxy accepts connections");
    up.release();
    let (r, _) = slow.join().expect("the slow request");
    assert_eq!(r.status, 200, "{}", r.text());
    let status = proxy.wait_exit(PATIENCE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
}

#[test]
fn sigint_drains_like_sigterm_and_exits_0() {
    let up = Backend::start("up", Answer::Ok);
    let mut proxy = Binary::start("lifecycle-sigint", simple(1, "", &[up.addr()], "").text());
    let mut c = Client::connect(proxy.addr());
    assert_eq!(get_kept(&mut c, "/one"), "up\n");
    proxy.signal(libc::SIGINT);
    c.assert_closed();
    let status = proxy.wait_exit(PATIENCE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    let log = proxy.log();
    assert!(log.contains("SIGINT: draining"), "{log}");
    assert!(log.contains("drained: every connection finished"), "{log}");
}

#[test]
fn a_second_sigterm_during_the_drain_exits_at_once_with_0() {
    // Holds the request for longer than this test waits for anything.
    let up = Upstream::start("hang", Mode::Hang);
    let mut proxy = Binary::start(
        "lifecycle-second-signal",
        simple(1, "shutdown_timeout = \"60s\"", &[up.addr()], "").text(),
    );
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(poll_until(PATIENCE, || up.requests() == 1));

    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_for_log("SIGTERM: draining", PATIENCE),
        "{}",
        proxy.log()
    );
    assert!(proxy.running(), "the drain did not wait for the request");
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(PATIENCE);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit: {status:?}; {}",
        proxy.log()
    );
    assert!(
        proxy
            .log()
            .contains("SIGTERM: second stop signal, exiting now"),
        "{}",
        proxy.log()
    );
    assert!(
        c.try_read_response(false).is_err(),
        "the hanging request got an answer"
    );
}

#[test]
fn a_drain_past_shutdown_timeout_cuts_the_hanging_connection_and_exits_0() {
    let up = Upstream::start("hang", Mode::Hang);
    let mut proxy = Binary::start(
        "lifecycle-drain-timeout",
        simple(1, "shutdown_timeout = \"1s\"", &[up.addr()], "").text(),
    );
    let mut c = Client::connect(proxy.addr());
    c.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(poll_until(PATIENCE, || up.requests() == 1));

    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(PATIENCE);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit: {status:?}; {}",
        proxy.log()
    );
    let log = proxy.log();
    assert!(log.contains("in-flight requests get up to 1s"), "{log}");
    assert!(
        log.contains("drain timed out: 1 connections were cut"),
        "{log}"
    );
    assert!(
        c.try_read_response(false).is_err(),
        "the cut request got an answer"
    );
}

#[test]
fn sigusr1_is_logged_and_the_proxy_keeps_serving() {
    let up = Backend::start("up", Answer::Ok);
    // `shutdown_timeout` is read: the drain below says so.
    let mut proxy = Binary::start(
        "lifecycle-sigusr1",
        simple(1, "shutdown_timeout = \"2s\"", &[up.addr()], "").text(),
    );
    let mut c = Client::connect(proxy.addr());
    assert_eq!(get_kept(&mut c, "/before"), "up\n");
    proxy.signal(libc::SIGUSR1);
    assert!(proxy.wait_for_log("SIGUSR1", PATIENCE), "{}", proxy.log());
    assert_eq!(get_kept(&mut c, "/after"), "up\n");
    assert_eq!(get_fresh(proxy.addr(), "/fresh"), "up\n");
    assert!(proxy.running(), "SIGUSR1 stopped the proxy");

    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(PATIENCE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    assert!(
        proxy.log().contains("in-flight requests get up to 2s"),
        "{}",
        proxy.log()
    );
}

//! The real binary: `check` on good and bad configs, `run` with a bad config and with a
//! good one, and the `backend` demo origin.

use crate::support::{poll_until, try_get, Binary, Mode, Upstream};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

/// Writes `text` to a file named after the test in Cargo's per-target temp dir.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn ringway(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the ringway binary")
}

fn check(path: &Path) -> Output {
    ringway(&["check", "-c", path.to_str().expect("UTF-8 path")])
}

/// Runs `check` on `text` and asserts exit code 1 with stderr naming the file, every
/// string in `mentions` (the key, the bad value) and `file:line`.
fn assert_check_rejects(name: &str, text: &str, line: usize, mentions: &[&str]) {
    let path = config_file(name, text);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:{line}")),
        "stderr should name `{file}:{line}`: {stderr}"
    );
    for m in mentions {
        assert!(stderr.contains(m), "stderr should mention `{m}`: {stderr}");
    }
    let _ = std::fs::remove_file(path);
}

const GOOD: &str = "[server]\n\
listen = \"127.0.0.1:0\"\n\
workers = 1\n\
[upstreams.web]\n\
servers = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n\
[[routes]]\n\
path_prefix = \"/\"\n\
upstream = \"web\"\n";

#[test]
fn check_accepts_a_good_config_with_a_one_line_summary() {
    let path = config_file("good", GOOD);
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:0"), "{stdout}");
    assert!(stdout.contains("2 servers"), "{stdout}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn check_rejects_an_unknown_key_naming_file_key_and_line() {
    assert_check_rejects(
        "unknown-key",
        "[upstreams.web]\nservers = [\"127.0.0.1:9001\"]\nconect_timeout = \"3s\"\n[[routes]]\nupstream = \"web\"\n",
        3,
        &["conect_timeout"],
    );
}

#[test]
fn check_rejects_a_route_to_a_missing_upstream() {
    assert_check_rejects(
        "missing-upstream",
        "[upstreams.web]\nservers = [\"127.0.0.1:9001\"]\n[[routes]]\npath_prefix = \"/\"\nupstream = \"nope\"\n",
        5,
        &["routes[0].upstream", "nope"],
    );
}

#[test]
fn check_rejects_an_empty_server_list() {
    assert_check_rejects(
        "empty-servers",
        "[upstreams.web]\nservers = []\n[[routes]]\nupstream = \"web\"\n",
        2,
        &["upstreams.web.servers"],
    );
}

#[test]
fn check_rejects_a_bad_server_address() {
    assert_check_rejects(
        "bad-address",
        "[upstreams.web]\nservers = [\"127.0.0.1:9001\",\n  \"not-an-address\"]\n[[routes]]\nupstream = \"web\"\n",
        3,
        &["upstreams.web.servers", "not-an-address"],
    );
}

#[test]
fn check_rejects_a_bad_duration_naming_file_key_and_line() {
    assert_check_rejects(
        "bad-duration",
        "[upstreams.web]\nservers = [\"127.0.0.1:9001\"]\nconnect_timeout = \"3 fortnights\"\n[[routes]]\nupstream = \"web\"\n",
        3,
        &["connect_timeout", "fortnights"],
    );
}

#[test]
fn run_with_a_bad_config_exits_64() {
    let path = config_file("run-bad", "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    let out = ringway(&["run", "-c", path.to_str().expect("UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("lisen"), "{stderr}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn run_with_a_missing_config_file_exits_64() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-cli-does-not-exist.toml");
    let out = ringway(&["run", "-c", path.to_str().expect("UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("it-cli-does-not-exist.toml"), "{stderr}");
}

/// Kills and reaps the child when dropped, also when the test panics.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Killed {
    Killed(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the ringway binary"),
    )
}

/// The address a `ringway backend` child bound, from its first log line
/// (`backend `x` listening on 127.0.0.1:PORT`); the child was told port 0.
fn backend_addr(child: &mut Killed) -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // The read blocks until the line comes; the channel's timeout bounds the wait.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend logs its address");
    let addr = line
        .rsplit("listening on ")
        .next()
        .unwrap_or_default()
        .trim();
    addr.parse()
        .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"))
}

/// Polls `GET path` on `addr` until it answers, while checking the child is alive.
fn wait_until_serving(child: &mut Killed, addr: SocketAddr, path: &str) {
    let up = poll_until(Duration::from_secs(10), || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("ringway exited early with {status}");
        }
        try_get(addr, path).is_some()
    });
    assert!(up, "ringway did not answer on {addr} within 10 s");
}

/// A config listening on `listen` with one worker, routing everything to `upstream`.
fn run_config(listen: &str, upstream: SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 1\n\
         [upstreams.web]\nservers = [\"{upstream}\"]\n\
         [[routes]]\nupstream = \"web\"\n"
    )
}

#[test]
fn run_serves_requests_on_the_configured_address() {
    let upstream = Upstream::start("origin", Mode::Ok);
    let proxy = Binary::start("cli-run-good", &run_config("127.0.0.1:0", upstream.addr()));
    let r = try_get(proxy.addr(), "/via-binary").expect("a response from the binary");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "origin: GET /via-binary\n");
    assert_eq!(r.headers.get("via"), Some("1.1 ringway"));
}

#[test]
fn run_on_a_busy_port_names_server_listen_and_exits_64() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let busy = taken.local_addr().expect("local addr");
    let upstream = Upstream::start("origin", Mode::Ok);
    let path = config_file("busy-port", &run_config(&busy.to_string(), upstream.addr()));
    let out = ringway(&["run", "-c", path.to_str().expect("UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    for m in [
        &path.display().to_string(),
        "`server.listen`",
        &busy.to_string(),
    ] {
        assert!(stderr.contains(m), "stderr should mention `{m}`: {stderr}");
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_bare_port_listens_on_every_interface_and_the_log_says_how() {
    let upstream = Upstream::start("origin", Mode::Ok);
    let proxy = Binary::start("cli-any", &run_config(":0", upstream.addr()));
    let line = proxy.lines("listening on ").join("\n");
    let dual = line.contains("(:0: all interfaces, IPv6 and IPv4)");
    let v4_only = line.contains("(:0: all interfaces, IPv4 only: no IPv6 here)");
    assert!(dual || v4_only, "{line}");
    // IPv4 loopback reaches it either way: through the dual-stack socket, or the IPv4 one.
    let port = proxy.addr().port();
    let r = try_get(SocketAddr::from(([127, 0, 0, 1], port)), "/any").expect("an answer");
    assert_eq!(r.status, 200);
    if dual {
        assert!(proxy.addr().is_ipv6(), "{line}");
    }
}

#[test]
fn forcing_the_epoll_driver_says_it_was_forced_not_unavailable() {
    let upstream = Upstream::start("origin", Mode::Ok);
    let config = run_config("127.0.0.1:0", upstream.addr());
    let proxy = Binary::start_with_env("cli-legacy", &config, &[("RINGWAY_DRIVER", "legacy")]);
    let log = proxy.log();
    assert!(
        log.contains("on the epoll driver (forced by RINGWAY_DRIVER=legacy)"),
        "{log}"
    );
    assert!(!log.contains("unavailable"), "{log}");
    assert_eq!(try_get(proxy.addr(), "/").expect("an answer").status, 200);
}

#[test]
fn backend_answers_hello_and_health() {
    let mut child = spawn(&["backend", "--listen", "127.0.0.1:0", "--name", "x"]);
    let listen = backend_addr(&mut child);
    wait_until_serving(&mut child, listen, "/health");
    let r = try_get(listen, "/").expect("a response from the backend");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("hello from x"), "{}", r.text());
    assert_eq!(r.text(), "hello from x: GET /\n");
    let r = try_get(listen, "/health").expect("a health response");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}

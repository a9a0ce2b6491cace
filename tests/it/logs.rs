//! The access log (both formats, field by field, through the real binary), SIGUSR1
//! reopening it after logrotate moved it away, a log that cannot be written (lines are
//! dropped and counted, proxying goes on), and the event log's level.

use crate::support::{poll_until, Binary, Client, Mode, Upstream};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Bound for every wait on the proxy: generous, since the machine may be busy.
const PATIENCE: Duration = Duration::from_secs(10);

/// A file in Cargo's per-target temp dir named after the test and this process.
fn temp_file(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("it-logs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Two workers, group `web` over `up` behind a route named `site`, and `[log]` lines.
fn config(up: SocketAddr, log: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
         request_headers = {{ set = {{ \"X-Trace\" = \"$request_id\" }} }}\n\n\
         [upstreams.web]\nservers = [\"{up}\"]\n\n\
         [[routes]]\nname = \"site\"\npath_prefix = \"/\"\nupstream = \"web\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [log]\n{log}\n"
    )
}

/// The file's lines, once it has at least `n` (the writer gets them every 50 ms tick).
fn lines(path: &PathBuf, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let enough = poll_until(PATIENCE, || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        got.len() >= n
    });
    assert!(
        enough,
        "{} lines in {}, wanted {n}: {got:?}",
        got.len(),
        path.display()
    );
    got
}

#[test]
fn combined_lines_carry_every_field_of_the_request_and_its_outcome() {
    let up = Upstream::start("up", Mode::Ok);
    let path = temp_file("combined.log");
    let proxy = Binary::start(
        "logs-combined",
        &config(up.addr(), &format!("access = \"{}\"", path.display())),
    );
    let mut c = Client::connect(proxy.addr());
    let r = c.request(b"GET /page?x=1 HTTP/1.1\r\nHost: t\r\nReferer: http://ref.example/\r\nUser-Agent: test \"agent\"\r\nX-Request-Id: req-42\r\n\r\n");
    assert_eq!(r.status, 200);
    let bytes = r.raw_len();
    let line = lines(&path, 1).remove(0);
    let want_start = "127.0.0.1 - - [";
    assert!(line.starts_with(want_start), "{line}");
    let after_time = line.split("] ").nth(1).unwrap_or_default();
    assert!(
        after_time.starts_with(&format!(
            "\"GET /page?x=1 HTTP/1.1\" 200 {bytes} \"http://ref.example/\" \"test \\x22agent\\x22\" rid=req-42 route=site rt="
        )),
        "{line}"
    );
    assert!(line.contains(&format!(" ua={}", up.addr())), "{line}");
    assert!(line.contains(" urt=0."), "{line}");
    // The time is CLF: 02/Dec/2026:09:10:11 +0000.
    let time = line
        .split('[')
        .nth(1)
        .and_then(|t| t.split(']').next())
        .unwrap_or_default();
    assert_eq!(time.len(), 26, "{time}");
    assert!(
        time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "{time}"
    );

    // A request no route matched and one the proxy could not parse are logged too.
    let mut bad = Client::connect(proxy.addr());
    let r = bad.request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(r.status, 400);
    let all = lines(&path, 2);
    assert!(all[1].contains("\"- - -\" 400 "), "{}", all[1]);
    assert!(all[1].contains("ua=-"), "{}", all[1]);
}

#[test]
fn json_lines_carry_every_field_of_the_request_and_its_outcome() {
    let up = Upstream::start("up", Mode::Ok);
    let path = temp_file("json.log");
    let log = format!("access = \"{}\"\nformat = \"json\"", path.display());
    let proxy = Binary::start("logs-json", &config(up.addr(), &log));
    let mut c = Client::connect(proxy.addr());
    let r = c.request(
        b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nUser-Agent: ua/1\r\n\r\nhello",
    );
    assert_eq!(r.status, 200);
    let bytes = r.raw_len();
    let line = lines(&path, 1).remove(0);
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/form");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], bytes as u64);
    assert_eq!(v["user_agent"], "ua/1");
    assert_eq!(v["route"], "site");
    assert_eq!(v["upstream_addr"], up.addr().to_string());
    assert_eq!(
        v["request_id"].as_str().map(str::len),
        Some(32),
        "a generated id: {line}"
    );
    assert_eq!(
        Some(v["request_id"].as_str().unwrap_or_default()),
        up.last().headers.get("x-trace"),
        "the same id the upstream got"
    );
    for key in ["request_duration", "upstream_duration"] {
        assert!(
            v[key].as_f64().is_some_and(|d| (0.0..10.0).contains(&d)),
            "{key}: {line}"
        );
    }
    let time = v["time"].as_str().unwrap_or_default();
    assert!(
        time.len() == 20 && time.ends_with('Z') && &time[10..11] == "T",
        "{time}"
    );
}

#[test]
fn sigusr1_reopens_the_access_log_after_logrotate_moved_it() {
    let up = Upstream::start("up", Mode::Ok);
    let path = temp_file("rotate.log");
    let rotated = temp_file("rotate.log.1");
    let proxy = Binary::start(
        "logs-rotate",
        &config(up.addr(), &format!("access = \"{}\"", path.display())),
    );
    let mut c = Client::connect(proxy.addr());
    assert_eq!(c.get("/before").status, 200);
    lines(&path, 1);
    std::fs::rename(&path, &rotated).expect("rotate the log");
    proxy.signal(libc::SIGUSR1);
    assert!(
        proxy.wait_for_log("access log: reopened", PATIENCE),
        "{}",
        proxy.log()
    );
    assert_eq!(c.get("/after").status, 200);
    let now = lines(&path, 1);
    assert!(now[0].contains("GET /after "), "{now:?}");
    let old = std::fs::read_to_string(&rotated).unwrap_or_default();
    assert!(
        old.contains("GET /before ") && !old.contains("/after"),
        "{old}"
    );
}

#[test]
fn a_log_that_cannot_be_written_drops_lines_and_counts_them_while_proxying_goes_on() {
    let up = Upstream::start("up", Mode::Ok);
    // Every write to /dev/full fails with ENOSPC: a full disk.
    let proxy = Binary::start("logs-full", &config(up.addr(), "access = \"/dev/full\""));
    let mut c = Client::connect(proxy.addr());
    for i in 0..20 {
        assert_eq!(c.get(&format!("/r/{i}")).status, 200, "proxying goes on");
    }
    assert!(
        proxy.wait_for_log("access log: cannot write", PATIENCE),
        "{}",
        proxy.log()
    );
    assert_eq!(
        proxy.lines("access log: cannot write").len(),
        1,
        "logged once: {}",
        proxy.log()
    );
    let admin = proxy.admin_addr();
    let dropped = poll_until(PATIENCE, || {
        let mut m = Client::connect(admin);
        let r = m.request(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        r.text()
            .lines()
            .find(|l| l.starts_with("ringway_access_log_dropped_lines_total "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 20)
    });
    assert!(dropped, "the dropped lines are counted in /metrics");
}

#[test]
fn an_access_log_that_cannot_be_opened_names_log_access_and_exits_64() {
    let up = Upstream::start("up", Mode::Ok);
    let path = temp_file("no-such-dir/access.log");
    let file = temp_file("bad-log.toml");
    std::fs::write(
        &file,
        config(up.addr(), &format!("access = \"{}\"", path.display())),
    )
    .expect("write");
    let out = std::process::Command::new(crate::support::BIN)
        .args(["run", "-c", file.to_str().expect("UTF-8")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("`log.access`") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn the_event_log_level_leaves_out_the_less_severe_lines() {
    let up = Upstream::start("up", Mode::Ok);
    let proxy = Binary::start("logs-level", &config(up.addr(), "level = \"info\""));
    let admin = proxy.admin_addr();
    proxy.rewrite_config(&config(up.addr(), "level = \"warn\""));
    proxy.signal(libc::SIGHUP);
    let generation = || {
        let mut m = Client::connect(admin);
        let r = m.request(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n");
        serde_json::from_slice::<Value>(&r.body)
            .map_or(0, |v| v["generation"].as_u64().unwrap_or(0))
    };
    assert!(poll_until(PATIENCE, || generation() == 2));
    // Info lines are left out from the reload on (its own line too); warnings are not.
    proxy.signal(libc::SIGUSR1);
    proxy.rewrite_config("[server\n");
    proxy.signal(libc::SIGHUP);
    assert!(
        proxy.wait_for_log("reload refused", PATIENCE),
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    assert!(proxy.lines("SIGUSR1").is_empty(), "{log}");
    assert!(proxy.lines("reload: generation 2").is_empty(), "{log}");
}

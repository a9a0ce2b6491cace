//! The admin API: a small HTTP/1.1 JSON server on the control thread's runtime, never
//! on a worker core. It reads requests with the proxy's own parser (same limits, same
//! strictness), checks the bearer token when one is configured, and answers:
//!
//! - `GET /status`: version, uptime, I/O driver, workers, config generation, the last
//!   reload, and every server's state, in-flight requests, pooled connections and
//!   request and error counts (errors: failures counted against it by passive health),
//!   summed over the workers by a scrape.
//! - `GET /metrics`: Prometheus text (`super::prometheus`).
//! - `GET /config`: the config in force, secrets redacted.
//! - `POST /reload`: what SIGHUP does, answered with the result.
//! - `/upstreams...`: the runtime registry ([`super::registry`]).
//!
//! Errors are JSON with a message: 401 (token), 404 (path), 405 (method, with `Allow`),
//! 400 (bad request), 411 (a body without Content-Length), 413 (body too large).

use super::{ReloadError, Source, State};
use crate::buf::{write_vec, Buf, Fill};
use crate::bus::Update;
use crate::config::{show, ConfigError};
use crate::error::reason_phrase;
use crate::health::machine::{Cause, State as Health};
use crate::http::request::{self, Limits};
use crate::http::{Framing, MAX_HEADER_SLOTS};
use crate::metrics::WorkerStats;
use crate::worker::Driver;
use crate::{info, warn};
use monoio::io::Canceller;
use monoio::net::{TcpListener, TcpStream};
use serde_json::{json, Map, Value};
use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

/// Request heads are held to the proxy's default limits.
const LIMITS: Limits = Limits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
    max_request_line: 8 * 1024,
};
/// Largest request body (registry changes are a few hundred bytes).
const MAX_BODY: u64 = 1 << 20;
/// A request must arrive within this; an idle keep-alive connection is closed after it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for every worker's counters (each answers at its next tick).
const SCRAPE_WAIT: Duration = Duration::from_secs(1);

/// The running admin API; `stop` ends its accept loop and closes its listener.
pub(super) struct Admin {
    canceller: Canceller,
    stopped: Rc<Cell<bool>>,
}

impl Admin {
    /// Starts serving `listener`.
    pub(super) fn spawn(listener: TcpListener, state: Rc<RefCell<State>>) -> Admin {
        let admin = Admin {
            canceller: Canceller::new(),
            stopped: Rc::new(Cell::new(false)),
        };
        let (handle, stopped) = (admin.canceller.handle(), admin.stopped.clone());
        monoio::spawn(async move {
            while !stopped.get() {
                match listener.cancelable_accept(handle.clone()).await {
                    Ok((stream, _)) => drop(monoio::spawn(connection(stream, state.clone()))),
                    Err(_) if stopped.get() => break,
                    Err(e) => {
                        warn!("admin API: accept failed: {e}");
                        monoio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        admin
    }

    /// Stops accepting (an accept in flight is called off, not dropped).
    pub(super) fn stop(self) {
        self.stopped.set(true);
        drop(self.canceller.cancel());
    }
}

/// One admin request, owned (the connection buffer is reused for the next one).
pub(super) struct Request {
    /// The method token.
    pub method: String,
    /// The path (admin paths are plain: no normalizing).
    pub path: String,
    /// The query, without its `?`.
    pub query: String,
    authorization: Option<Vec<u8>>,
    /// The body (Content-Length framing only).
    pub body: Vec<u8>,
    keep_alive: bool,
}

/// One admin response.
pub(super) struct Response {
    status: u16,
    body: Value,
    /// A text body with its content type, instead of JSON (`/metrics`).
    text: Option<(String, &'static str)>,
    /// `Allow` for a 405.
    allow: Option<&'static str>,
}

impl Response {
    /// `status` with a JSON body.
    pub(super) fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            body,
            text: None,
            allow: None,
        }
    }

    /// An error: `{"error": message, "status": status}`.
    pub(super) fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, json!({ "error": message.into(), "status": status }))
    }

    /// A 405 naming the methods the endpoint takes (also in `Allow`).
    pub(super) fn method_not_allowed(allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::error(405, format!("this endpoint takes {allow}"))
        }
    }
}

/// Serves one admin connection: requests in turn while the client keeps it alive.
async fn connection(mut stream: TcpStream, state: Rc<RefCell<State>>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Buf::with_capacity(4096);
    loop {
        let read = monoio::time::timeout(READ_TIMEOUT, read(&mut stream, &mut buf)).await;
        let (resp, keep, head_only) = match read {
            Ok(Ok(Some(req))) => (
                handle(&state, &req).await,
                req.keep_alive,
                req.method == "HEAD",
            ),
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(resp)) => (resp, false, false),
        };
        let mut out = render(&resp, !keep, head_only);
        let write = monoio::time::timeout(READ_TIMEOUT, write_vec(&mut stream, &mut out));
        if !matches!(write.await, Ok(Ok(()))) || !keep {
            return;
        }
    }
}

/// Reads one request (head and Content-Length body); `Ok(None)` at a clean close.
async fn read(stream: &mut TcpStream, buf: &mut Buf) -> Result<Option<Request>, Response> {
    loop {
        if !buf.is_empty() {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADER_SLOTS];
            let parsed = request::parse(buf.data(), &mut slots, &LIMITS)
                .map_err(|e| Response::error(e.status(), e.to_string()))?;
            if let Some(req) = parsed {
                let body = match req.body {
                    Framing::None => 0,
                    Framing::Length(n) if n <= MAX_BODY => n as usize,
                    Framing::Length(_) => {
                        return Err(Response::error(413, "the body is over 1 MiB"))
                    }
                    _ => return Err(Response::error(411, "send the body with Content-Length")),
                };
                let head = Request {
                    method: req.method.to_string(),
                    path: req.path.to_string(),
                    query: req.query.strip_prefix('?').unwrap_or("").to_string(),
                    authorization: req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                        .map(|h| crate::http::trim(h.value).to_vec()),
                    body: Vec::new(),
                    keep_alive: req.keep_alive,
                };
                let head_len = req.head_len;
                return read_body(stream, buf, head, head_len, body).await.map(Some);
            }
        }
        match buf.fill(stream, LIMITS.max_header_bytes).await {
            Ok(Fill::Read(_)) => {}
            Ok(Fill::Eof) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(Fill::Full) => return Err(Response::error(431, "request head too large")),
            Ok(Fill::Eof) | Err(_) => {
                return Err(Response::error(400, "connection closed mid-head"))
            }
        }
    }
}

/// Reads a request's `len`-byte body after its head and consumes both from `buf`.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Buf,
    mut req: Request,
    head_len: usize,
    len: usize,
) -> Result<Request, Response> {
    while buf.len() < head_len + len {
        match buf.fill(stream, head_len + len).await {
            Ok(Fill::Read(_)) => {}
            _ => return Err(Response::error(400, "connection closed mid-body")),
        }
    }
    req.body = buf.data()[head_len..head_len + len].to_vec();
    buf.consume(head_len + len);
    Ok(req)
}

/// Writes `resp` as an HTTP/1.1 response (`head_only`: for HEAD, without the body).
fn render(resp: &Response, close: bool, head_only: bool) -> Vec<u8> {
    let (body, content_type) = match &resp.text {
        Some((text, kind)) => (text.as_bytes().to_vec(), *kind),
        None => {
            let mut body = serde_json::to_vec_pretty(&resp.body).unwrap_or_default();
            body.push(b'\n');
            (body, "application/json")
        }
    };
    let date = crate::http::date::format(crate::http::date::unix_now());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nDate: {}\r\n",
        resp.status,
        reason_phrase(resp.status),
        body.len(),
        String::from_utf8_lossy(&date),
    )
    .into_bytes();
    if let Some(allow) = resp.allow {
        out.extend_from_slice(format!("Allow: {allow}\r\n").as_bytes());
    }
    if resp.status == 401 {
        out.extend_from_slice(b"WWW-Authenticate: Bearer realm=\"ringway admin\"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

/// True when `given` (an `Authorization` value) carries `token`, compared in constant
/// time so the answer's timing does not leak how much of a guess was right.
fn authorized(token: Option<&str>, given: Option<&[u8]>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = given.and_then(|g| g.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let given = crate::http::trim(given);
    let diff = token
        .bytes()
        .zip(given)
        .fold(token.len() ^ given.len(), |acc, (a, b)| {
            acc | usize::from(a ^ b)
        });
    diff == 0
}

/// Routes one request.
async fn handle(state: &Rc<RefCell<State>>, req: &Request) -> Response {
    let token = state
        .borrow()
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    if !authorized(token.as_deref(), req.authorization.as_deref()) {
        let message = match req.authorization {
            None => "this admin API needs `Authorization: Bearer <token>`",
            Some(_) => "wrong token",
        };
        return Response::error(401, message);
    }
    let get = matches!(req.method.as_str(), "GET" | "HEAD");
    match (req.path.as_str(), get, req.method.as_str()) {
        ("/status", true, _) => status(state).await,
        ("/metrics", true, _) => metrics(state).await,
        ("/config", true, _) => config(state),
        ("/reload", _, "POST") => reload(state),
        ("/status" | "/config" | "/metrics", false, _) => Response::method_not_allowed("GET, HEAD"),
        ("/reload", _, _) => Response::method_not_allowed("POST"),
        ("/cache/purge", _, "POST") => super::cache::handle_purge(state, req).await,
        ("/cache/purge", _, _) => Response::method_not_allowed("POST"),
        (path, _, _) if path == "/upstreams" || path.starts_with("/upstreams/") => {
            super::registry::handle(state, req).await
        }
        (path, _, _) => Response::error(
            404,
            format!(
                "no admin endpoint `{path}`; see /status, /metrics, /config, /reload, /upstreams, /cache/purge"
            ),
        ),
    }
}

/// Asks every worker for its counters and waits (without blocking the runtime) until
/// all answered or [`SCRAPE_WAIT`] passed (a worker that exited answers nothing).
pub(super) async fn scrape(state: &Rc<RefCell<State>>) -> Vec<WorkerStats> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let workers = {
        let s = state.borrow();
        s.bus.broadcast(Update::Scrape { reply: tx });
        s.bus.workers()
    };
    let deadline = Instant::now() + SCRAPE_WAIT;
    let mut got = Vec::with_capacity(workers);
    while got.len() < workers && Instant::now() < deadline {
        got.extend(rx.try_iter());
        if got.len() < workers {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    got.sort_by_key(|w| w.worker);
    got
}

/// `GET /status`.
async fn status(state: &Rc<RefCell<State>>) -> Response {
    let stats = scrape(state).await;
    let s = state.borrow();
    let now = Instant::now();
    let drivers: Vec<&str> = stats
        .iter()
        .map(|w| match w.driver {
            Driver::IoUring => "io_uring",
            Driver::Legacy { .. } => "epoll",
        })
        .collect();
    let upstreams = servers_json(&s, &stats, now);
    let last_reload = s.last_reload.as_ref().map(|r| {
        let at =
            r.at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
        match &r.result {
            Ok((generation, summary)) => json!({
                "ok": true, "at_unix": at, "generation": generation, "summary": summary,
            }),
            Err(e) => json!({ "ok": false, "at_unix": at, "error": e }),
        }
    });
    Response::json(
        200,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": round((now - s.started).as_secs_f64()),
            "driver": drivers.first().copied().unwrap_or("unknown"),
            "workers": s.config.server.workers,
            "workers_answering": stats.len(),
            "open_connections": stats.iter().map(|w| u64::from(w.open_conns)).sum::<u64>(),
            "tls_handshakes": {
                "ok": crate::metrics::ConnCounts::sum(&stats).tls_ok,
                "failed": crate::metrics::ConnCounts::sum(&stats).tls_failed,
            },
            "tunnels_open": crate::metrics::ConnCounts::sum(&stats).tunnels_open,
            "generation": s.snapshot.generation,
            "config": s.config.origin,
            "last_reload": last_reload,
            "upstreams": upstreams,
            "cache": super::cache::status_json(&s, &stats),
        }),
    )
}

/// Every group and its servers as `/status` and `/upstreams` show them: configured
/// servers with their state and counts, then servers a change removed that still
/// finish requests (`"state": "draining"`).
pub(super) fn servers_json(s: &State, stats: &[WorkerStats], now: Instant) -> Map<String, Value> {
    let table = s.health.borrow();
    let mut upstreams = Map::new();
    for group in &s.snapshot.groups {
        let servers: Vec<Value> = group
            .members
            .iter()
            .zip(&group.upstream.servers)
            .map(|(m, srv)| {
                let (word, why, since) = match table.status(m.id) {
                    Some((h, since)) => (h.word(), reason(&h, now), Some(now - since)),
                    None => ("unknown", None, None),
                };
                let mut v = counts(stats, m.id);
                let extra = json!({
                    "addr": srv.addr.to_string(),
                    "weight": srv.weight,
                    "backup": srv.backup,
                    "state": word,
                    "reason": why,
                    "since_seconds": since.map(|d| round(d.as_secs_f64())),
                });
                merge(&mut v, extra);
                v
            })
            .collect();
        let balance = crate::config::Balance::ALL
            .iter()
            .find(|(_, b)| *b == group.upstream.balance)
            .map_or("?", |(n, _)| n);
        upstreams.insert(
            group.upstream.name.clone(),
            json!({ "balance": balance, "servers": servers }),
        );
    }
    // Removed servers still finishing requests on some worker.
    let mut draining: Vec<crate::upstream::ServerId> = stats
        .iter()
        .flat_map(|w| w.servers.iter().filter(|x| x.draining).map(|x| x.id))
        .collect();
    draining.sort();
    draining.dedup();
    for id in draining {
        let Some((group, addr)) = s.registry.key(id) else {
            continue;
        };
        let mut v = counts(stats, id);
        merge(
            &mut v,
            json!({
                "addr": addr.to_string(),
                "state": "draining",
                "reason": "removed; its in-flight requests finish, nothing new is sent",
            }),
        );
        let entry = upstreams
            .entry(group.to_string())
            .or_insert_with(|| json!({ "servers": [] }));
        if let Some(list) = entry["servers"].as_array_mut() {
            list.push(v);
        }
    }
    upstreams
}

/// A server's counts, summed over the workers.
fn counts(stats: &[WorkerStats], id: crate::upstream::ServerId) -> Value {
    let sum = |f: fn(&crate::metrics::ServerStats) -> u64| WorkerStats::sum(stats, id, f);
    json!({
        "id": id.get(),
        "in_flight": sum(|x| u64::from(x.in_flight)),
        "tunnels": sum(|x| u64::from(x.tunnels)),
        "pooled": sum(|x| u64::from(x.pooled)),
        "requests": sum(|x| x.requests),
        "errors": sum(|x| x.failures),
    })
}

/// Adds `extra`'s fields to the object `v`.
fn merge(v: &mut Value, extra: Value) {
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
}

/// Why a server is in its state, for status.
fn reason(h: &Health, now: Instant) -> Option<String> {
    match h {
        Health::Up => None,
        Health::Probation => Some("back-off over; the next request probes it".into()),
        Health::Down(Cause::Passive {
            until,
            step,
            reason,
        }) => Some(format!(
            "{reason} (passive back-off step {step}, {:.1}s left)",
            until.saturating_duration_since(now).as_secs_f64()
        )),
        Health::Down(Cause::Active(why)) => Some(why.clone()),
        Health::Down(Cause::NotChecked) => Some("start = \"down\": no check passed yet".into()),
        Health::Down(Cause::Manual) => Some("marked down through the admin API".into()),
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `GET /metrics`: Prometheus text; 404 when the config turned metrics off.
async fn metrics(state: &Rc<RefCell<State>>) -> Response {
    if !state.borrow().config.metrics() {
        return Response::error(404, "metrics are off (`admin.metrics = false`)");
    }
    let stats = scrape(state).await;
    let text = super::prometheus::render(&state.borrow(), &stats, Instant::now());
    Response {
        text: Some((text, super::prometheus::CONTENT_TYPE)),
        ..Response::json(200, Value::Null)
    }
}

/// `GET /config`.
fn config(state: &Rc<RefCell<State>>) -> Response {
    let s = state.borrow();
    Response::json(
        200,
        json!({
            "generation": s.snapshot.generation,
            "config": show::to_json(&s.config),
        }),
    )
}

/// `POST /reload`: the file the config came from, read again.
fn reload(state: &Rc<RefCell<State>>) -> Response {
    let path = state.borrow().config_path.clone();
    let Some(path) = path else {
        return Response::error(409, "the running config was not loaded from a file");
    };
    info!("admin API: reload requested");
    match state.borrow_mut().reload_and_log(Source::File(path)) {
        Ok(r) => Response::json(
            200,
            json!({ "generation": r.generation, "summary": r.summary }),
        ),
        Err(e) => {
            let status = match &e {
                ReloadError::Config(ConfigError::Parse { .. }) => 400,
                ReloadError::Config(ConfigError::Io { .. }) => 500,
                ReloadError::Stopping => 503,
                _ => 422,
            };
            Response::error(status, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_whole() {
        assert!(authorized(None, None));
        assert!(authorized(Some("abc"), Some(b"Bearer abc")));
        assert!(!authorized(Some("abc"), None));
        assert!(!authorized(Some("abc"), Some(b"Bearer ab")));
        assert!(!authorized(Some("abc"), Some(b"Bearer abcd")));
        assert!(!authorized(Some("abc"), Some(b"Basic abc")));
        assert!(!authorized(Some("abc"), Some(b"Bearer abd")));
    }
}

//! The access log: one line per request, formatted by the worker into a buffer of its
//! own (no lock, no syscall per request), handed every tick to one writer thread that
//! owns the file. A full disk or an unwritable file never slows or stops proxying: the
//! writer logs the error once and drops lines, counting them (`dropped`), and a worker
//! whose writer falls behind drops its buffer rather than grow without bound.
//!
//! A line is built in two steps, because the request's head lives in the connection
//! buffer only until the body is relayed: [`begin`] copies what the head says into the
//! connection's scratch when the head is read, [`finish`] adds the outcome (status,
//! bytes, timings, upstream) when the response is done.

use crate::config::{AccessFormat, AccessTarget};
use crate::http::rewrite::push_u64;
use crate::{error, info};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A worker hands its buffer over when it reaches this, or at its next tick.
const FLUSH_AT: usize = 64 * 1024;
/// Buffers in flight to the writer; a worker whose writer is this far behind drops.
const QUEUE: usize = 256;

/// Where the writer writes.
#[derive(Debug)]
pub enum Sink {
    /// Nothing: the access log is off (the writer idles).
    Off,
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File {
        /// Its path, to reopen on SIGUSR1.
        path: PathBuf,
        /// The open file.
        file: File,
    },
}

impl Sink {
    /// Opens `target` (a file is created if missing and appended to).
    pub fn open(target: Option<&AccessTarget>) -> io::Result<Sink> {
        Ok(match target {
            None => Sink::Off,
            Some(AccessTarget::Stdout) => Sink::Stdout,
            Some(AccessTarget::File(path)) => Sink::File {
                file: append(path)?,
                path: path.clone(),
            },
        })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Off => Ok(()),
            Sink::Stdout => io::stdout().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }
}

fn append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// What the writer is told.
#[derive(Debug)]
enum Msg {
    /// Lines to write (the buffer goes back as a spare).
    Lines(Vec<u8>, u32),
    /// Reopen the file at its path (logrotate moved it away).
    Reopen,
    /// Write here from now on (a reload changed `log.access`).
    Retarget(Sink),
    /// End the thread.
    Stop,
}

/// The writer thread and the ends of its channels.
#[derive(Debug)]
pub struct AccessLog {
    tx: Sender<Msg>,
    spare: Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What workers and the control thread hold of the access log: cheap to clone.
#[derive(Debug, Clone)]
pub struct Remote {
    tx: Sender<Msg>,
    spare: Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer on `sink`.
    pub fn start(sink: Sink) -> io::Result<AccessLog> {
        let (tx, rx) = bounded(QUEUE);
        let (spare_tx, spare) = bounded(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(sink, rx, spare_tx, counter))?;
        Ok(AccessLog {
            tx,
            spare,
            dropped,
            thread: Some(thread),
        })
    }

    /// A handle for a worker or the control thread.
    pub fn remote(&self) -> Remote {
        Remote {
            tx: self.tx.clone(),
            spare: self.spare.clone(),
            dropped: self.dropped.clone(),
        }
    }

    /// Stops the writer once it has written what it was given.
    pub fn stop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Remote {
    /// Reopens the file (SIGUSR1, after logrotate moved it away).
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    /// Writes to `sink` from now on.
    pub fn retarget(&self, sink: Sink) {
        let _ = self.tx.send(Msg::Retarget(sink));
    }

    /// Lines dropped so far (the writer failed, or fell behind).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_loop(mut sink: Sink, rx: Receiver<Msg>, spare: Sender<Vec<u8>>, dropped: Arc<AtomicU64>) {
    let mut failing = false;
    for msg in rx {
        match msg {
            Msg::Lines(mut buf, lines) => {
                match sink.write(&buf) {
                    Ok(()) => failing = false,
                    Err(e) => {
                        if !failing {
                            error!("access log: cannot write ({e}); dropping lines until it works again");
                            failing = true;
                        }
                        dropped.fetch_add(u64::from(lines), Ordering::Relaxed);
                    }
                }
                buf.clear();
                let _ = spare.try_send(buf);
            }
            Msg::Reopen => {
                if let Sink::File { path, file } = &mut sink {
                    match append(path) {
                        Ok(f) => {
                            *file = f;
                            failing = false;
                            info!("access log: reopened {}", path.display());
                        }
                        Err(e) => error!("access log: cannot reopen {}: {e}", path.display()),
                    }
                }
            }
            Msg::Retarget(s) => sink = s,
            Msg::Stop => return,
        }
    }
}

/// One worker's access log buffer.
#[derive(Debug)]
pub struct WorkerLog {
    remote: Remote,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u32>,
}

impl WorkerLog {
    /// A buffer handing its lines to `remote`'s writer.
    pub fn new(remote: Remote) -> WorkerLog {
        WorkerLog {
            remote,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
        }
    }

    /// Appends one line, written by `write` (which must end it with `\n`).
    pub fn line(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            write(&mut buf);
            buf.len() >= FLUSH_AT
        };
        self.lines.set(self.lines.get() + 1);
        if full {
            self.flush();
        }
    }

    /// Hands the buffered lines to the writer (a spare buffer takes their place).
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let next = self
            .remote
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FLUSH_AT));
        let full = std::mem::replace(&mut *buf, next);
        let lines = self.lines.replace(0);
        match self.remote.tx.try_send(Msg::Lines(full, lines)) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Lines(mut back, n))) => {
                // The writer is this far behind: drop, count, and reuse the buffer.
                self.remote
                    .dropped
                    .fetch_add(u64::from(n), Ordering::Relaxed);
                back.clear();
                *buf = back;
            }
            Err(_) => {}
        }
    }
}

/// What the request's head says, for its line.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The client's address, as text.
    pub client: &'a [u8],
    /// When the head was read, as the format wants it (CLF or ISO 8601).
    pub time: &'a [u8],
    /// Method token.
    pub method: &'a str,
    /// The target as sent (path and query).
    pub path: &'a str,
    /// The query with its `?`, or empty.
    pub query: &'a str,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'a str,
    /// `Referer`, or empty.
    pub referer: &'a [u8],
    /// `User-Agent`, or empty.
    pub user_agent: &'a [u8],
    /// The request id, or empty.
    pub request_id: &'a [u8],
    /// The route's label, or empty when none matched.
    pub route: &'a str,
}

/// How the request ended, for its line.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The status sent (499: the client went away first).
    pub status: u16,
    /// Bytes written to the client.
    pub bytes: u64,
    /// From the head read to the response written.
    pub duration: Duration,
    /// The server that answered and its time to the response head.
    pub upstream: Option<(SocketAddr, Duration)>,
}

/// Writes the request's part of a line into `scratch` (cleared); returns where the
/// second half starts, for [`finish`].
pub fn begin(scratch: &mut Vec<u8>, format: AccessFormat, r: &Request<'_>) -> usize {
    scratch.clear();
    match format {
        AccessFormat::Combined => {
            scratch.extend_from_slice(r.client);
            scratch.extend_from_slice(b" - - [");
            scratch.extend_from_slice(r.time);
            scratch.extend_from_slice(b"] \"");
            clf_text(scratch, r.method.as_bytes());
            scratch.push(b' ');
            clf_text(scratch, r.path.as_bytes());
            clf_text(scratch, r.query.as_bytes());
            scratch.push(b' ');
            scratch.extend_from_slice(r.version.as_bytes());
            scratch.extend_from_slice(b"\" ");
            let split = scratch.len();
            scratch.extend_from_slice(b" \"");
            clf_text(scratch, or_dash(r.referer));
            scratch.extend_from_slice(b"\" \"");
            clf_text(scratch, or_dash(r.user_agent));
            scratch.extend_from_slice(b"\" rid=");
            scratch.extend_from_slice(or_dash(r.request_id));
            scratch.extend_from_slice(b" route=");
            scratch.extend_from_slice(or_dash(r.route.as_bytes()));
            split
        }
        AccessFormat::Json => {
            scratch.extend_from_slice(b"{\"time\":\"");
            scratch.extend_from_slice(r.time);
            scratch.extend_from_slice(b"\",\"client\":\"");
            json_text(scratch, r.client);
            scratch.extend_from_slice(b"\",\"method\":\"");
            json_text(scratch, r.method.as_bytes());
            scratch.extend_from_slice(b"\",\"path\":\"");
            json_text(scratch, r.path.as_bytes());
            json_text(scratch, r.query.as_bytes());
            scratch.extend_from_slice(b"\",\"protocol\":\"");
            scratch.extend_from_slice(r.version.as_bytes());
            scratch.extend_from_slice(b"\",");
            let split = scratch.len();
            scratch.extend_from_slice(b",\"referer\":\"");
            json_text(scratch, r.referer);
            scratch.extend_from_slice(b"\",\"user_agent\":\"");
            json_text(scratch, r.user_agent);
            scratch.extend_from_slice(b"\",\"request_id\":\"");
            json_text(scratch, r.request_id);
            scratch.extend_from_slice(b"\",\"route\":\"");
            json_text(scratch, r.route.as_bytes());
            scratch.push(b'"');
            split
        }
    }
}

/// Writes the whole line into `out`: `scratch` (from [`begin`], split at `split`) with
/// the outcome in between and after.
pub fn finish(out: &mut Vec<u8>, format: AccessFormat, scratch: &[u8], split: usize, o: &Outcome) {
    let (head, tail) = scratch.split_at(split.min(scratch.len()));
    out.extend_from_slice(head);
    match format {
        AccessFormat::Combined => {
            push_u64(out, u64::from(o.status));
            out.push(b' ');
            push_u64(out, o.bytes);
            out.extend_from_slice(tail);
            out.extend_from_slice(b" rt=");
            seconds(out, o.duration);
            match o.upstream {
                Some((addr, d)) => {
                    out.extend_from_slice(b" urt=");
                    seconds(out, d);
                    let _ = write!(out, " ua={addr}");
                }
                None => out.extend_from_slice(b" urt=- ua=-"),
            }
        }
        AccessFormat::Json => {
            out.extend_from_slice(b"\"status\":");
            push_u64(out, u64::from(o.status));
            out.extend_from_slice(b",\"bytes\":");
            push_u64(out, o.bytes);
            out.extend_from_slice(tail);
            out.extend_from_slice(b",\"request_duration\":");
            seconds(out, o.duration);
            match o.upstream {
                Some((addr, d)) => {
                    out.extend_from_slice(b",\"upstream_duration\":");
                    seconds(out, d);
                    let _ = write!(out, ",\"upstream_addr\":\"{addr}\"}}");
                }
                None => {
                    out.extend_from_slice(b",\"upstream_duration\":null,\"upstream_addr\":null}")
                }
            }
        }
    }
    out.push(b'\n');
}

fn or_dash(v: &[u8]) -> &[u8] {
    if v.is_empty() {
        b"-"
    } else {
        v
    }
}

/// Seconds with millisecond precision (`0.012`), written without `fmt` floats.
fn seconds(out: &mut Vec<u8>, d: Duration) {
    let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
    push_u64(out, ms / 1000);
    out.push(b'.');
    let frac = ms % 1000;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Bytes as nginx writes them in a quoted log field: `"`, `\` and non-printable
/// bytes as `\xHH`, so a line cannot be forged or split by what a client sent.
fn clf_text(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

/// Bytes as the inside of a JSON string (non-ASCII and control bytes as `\u00HH`).
fn json_text(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(time: &'a [u8]) -> Request<'a> {
        Request {
            client: b"203.0.113.7",
            time,
            method: "GET",
            path: "/a\"b",
            query: "?q=1",
            version: "HTTP/1.1",
            referer: b"",
            user_agent: b"curl/8 \x01",
            request_id: b"r-1",
            route: "site",
        }
    }

    fn outcome(upstream: bool) -> Outcome {
        Outcome {
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(12_345),
            upstream: upstream
                .then(|| ("127.0.0.1:9001".parse().unwrap(), Duration::from_millis(7))),
        }
    }

    #[test]
    fn combined_lines_escape_what_clients_send_and_append_timings() {
        let mut scratch = Vec::new();
        let split = begin(
            &mut scratch,
            AccessFormat::Combined,
            &request(b"02/Dec/2026:09:10:11 +0000"),
        );
        let mut out = Vec::new();
        finish(
            &mut out,
            AccessFormat::Combined,
            &scratch,
            split,
            &outcome(true),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "203.0.113.7 - - [02/Dec/2026:09:10:11 +0000] \"GET /a\\x22b?q=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8 \\x01\" rid=r-1 route=site rt=0.012 urt=0.007 ua=127.0.0.1:9001\n"
        );
    }

    #[test]
    fn json_lines_are_valid_json_with_every_field() {
        let mut scratch = Vec::new();
        let split = begin(
            &mut scratch,
            AccessFormat::Json,
            &request(b"2026-12-02T09:10:11Z"),
        );
        let mut out = Vec::new();
        finish(
            &mut out,
            AccessFormat::Json,
            &scratch,
            split,
            &outcome(false),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-12-02T09:10:11Z");
        assert_eq!(v["client"], "203.0.113.7");
        assert_eq!(v["path"], "/a\"b?q=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["request_duration"], 0.012);
        assert_eq!(v["upstream_duration"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8 \u{1}");
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["route"], "site");
    }
}

//! The control thread: active health checks, once per process, and the one place where
//! health transitions are decided, logged (once each) and broadcast to every worker.
//!
//! It runs its own small monoio runtime on a thread of its own, never on a worker's
//! core schedule. Workers report passive mark-downs and recoveries over the bus; the
//! active checker keeps one keep-alive connection per server and sends
//! `GET <path>` every `interval`.

use crate::body::Relay;
use crate::buf::{write_vec, Buf, Fill};
use crate::bus::{Bus, Report, Update};
use crate::config::{Config, HealthCheck, ServerId};
use crate::http::{response, Framing};
use crate::{error, info, warn};
use crossbeam_channel::Receiver;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use monoio::time::timeout;
use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often reports are drained and the stop flag checked.
const TICK: Duration = Duration::from_millis(20);
/// Largest health-check response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A running control thread; `stop` ends it.
#[derive(Debug)]
pub struct Control {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Control {
    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the control thread.
pub fn spawn(config: Arc<Config>, bus: Bus, reports: Receiver<Report>) -> io::Result<Control> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build();
            match rt {
                Ok(mut rt) => rt.block_on(run(config, bus, reports, flag)),
                Err(e) => error!("control thread cannot start a runtime: {e}; no health checks"),
            }
        })?;
    Ok(Control {
        stop,
        thread: Some(thread),
    })
}

/// What the control thread last said about one server.
#[derive(Debug, Default)]
struct Known {
    /// Passive mark-down in force until then.
    passive_until: Option<Instant>,
    /// The last passive mark-down has not been followed by a recovery yet.
    passive_down: bool,
}

async fn run(config: Arc<Config>, bus: Bus, reports: Receiver<Report>, stop: Arc<AtomicBool>) {
    let known: Rc<RefCell<Vec<Known>>> = Rc::new(RefCell::new(
        config.servers.iter().map(|_| Known::default()).collect(),
    ));
    for (id, server) in config.servers.iter().enumerate() {
        if let Some(check) = &config.upstreams[server.upstream].health {
            monoio::spawn(check_loop(config.clone(), bus.clone(), id, check.clone()));
        }
    }
    while !stop.load(Ordering::Relaxed) {
        monoio::time::sleep(TICK).await;
        while let Ok(report) = reports.try_recv() {
            handle_report(
                &config,
                &bus,
                &mut known.borrow_mut(),
                report,
                Instant::now(),
            );
        }
    }
}

/// Turns a worker's report into at most one logged transition and broadcast.
fn handle_report(config: &Config, bus: &Bus, known: &mut [Known], report: Report, now: Instant) {
    match report {
        Report::Down {
            server,
            down,
            reason,
        } => {
            let k = &mut known[server];
            if k.passive_until.is_some_and(|t| now < t) {
                // Another worker found the same outage before our broadcast reached it.
                return;
            }
            let rest = down.until.saturating_duration_since(now);
            warn!(
                "{}: {} → down for {:.1}s ({reason}; passive back-off step {})",
                name(config, server),
                if k.passive_down { "probing" } else { "up" },
                rest.as_secs_f64(),
                down.step + 1
            );
            k.passive_until = Some(down.until);
            k.passive_down = true;
            bus.broadcast(Update::ServerDown { server, down });
        }
        Report::Recovered { server } => {
            let k = &mut known[server];
            if k.passive_down {
                k.passive_down = false;
                k.passive_until = None;
                info!(
                    "{}: down → up (a request succeeded after the back-off)",
                    name(config, server)
                );
            }
        }
    }
}

fn name(config: &Config, server: ServerId) -> String {
    let s = &config.servers[server];
    format!(
        "upstream `{}` server {}",
        config.upstreams[s.upstream].name, s.addr
    )
}

/// Consecutive results and the verdict of one server's active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    up: bool,
    passes: u32,
    fails: u32,
}

impl Verdict {
    /// The starting verdict.
    pub fn new(up: bool) -> Verdict {
        Verdict {
            up,
            passes: 0,
            fails: 0,
        }
    }

    /// Feeds one check result; returns the new state when it flips.
    pub fn observe(&mut self, pass: bool, rise: u32, fall: u32) -> Option<bool> {
        if pass {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.up && self.passes >= rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.up && self.fails >= fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

async fn check_loop(config: Arc<Config>, bus: Bus, server: ServerId, check: HealthCheck) {
    let addr = config.servers[server].addr;
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-health-check\r\nAccept: */*\r\n\r\n",
        check.path
    )
    .into_bytes();
    let mut verdict = Verdict::new(!check.start_down);
    let mut conn: Option<(TcpStream, Buf)> = None;
    let mut out = Vec::new();
    loop {
        let result = match timeout(check.timeout, probe(&mut conn, addr, &request, &mut out)).await
        {
            Ok(Ok(status)) if check.passes(status) => Ok(()),
            Ok(Ok(status)) => Err(format!("status {status}")),
            Ok(Err(e)) => {
                conn = None;
                Err(e.to_string())
            }
            Err(_) => {
                // The probe was cut mid-exchange: the connection is in an unknown state.
                conn = None;
                Err(format!("no answer within {:?}", check.timeout))
            }
        };
        if let Some(up) = verdict.observe(result.is_ok(), check.rise, check.fall) {
            let who = name(&config, server);
            match (up, &result) {
                (true, _) => info!("{who}: down → up ({} passed checks)", check.rise),
                (false, Err(reason)) => warn!(
                    "{who}: up → down ({} failed checks, last: {reason})",
                    check.fall
                ),
                (false, Ok(())) => {}
            }
            bus.broadcast(Update::Health { server, up });
        }
        monoio::time::sleep(check.interval).await;
    }
}

/// One check over the kept connection (opened if needed); returns the status.
async fn probe(
    conn: &mut Option<(TcpStream, Buf)>,
    addr: std::net::SocketAddr,
    request: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<u16> {
    let (stream, buf) = match conn {
        Some(c) => c,
        None => {
            let stream = TcpStream::connect_addr(addr).await?;
            let _ = stream.set_nodelay(true);
            conn.insert((stream, Buf::with_capacity(4096)))
        }
    };
    out.clear();
    out.extend_from_slice(request);
    write_vec(stream, out).await?;
    let (status, framing, reusable) = loop {
        if !buf.is_empty() {
            let mut slots = [const { MaybeUninit::uninit() }; 64];
            match response::parse(buf.data(), &mut slots, false) {
                Ok(Some(r)) if r.is_interim() => {
                    let n = r.head_len;
                    buf.consume(n);
                    continue;
                }
                Ok(Some(r)) => {
                    let parsed = (r.status, r.body, r.reusable, r.head_len);
                    buf.consume(parsed.3);
                    break (parsed.0, parsed.1, parsed.2);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        match buf.fill(stream, MAX_HEAD).await? {
            Fill::Read(_) => {}
            Fill::Eof => return Err(io::Error::other("connection closed before a response")),
            Fill::Full => return Err(io::Error::other("response head too large")),
        }
    };
    let mut sink = Discard;
    let mut scratch = Vec::new();
    // The probe's own timeout bounds the whole check: timers that never tick, so the
    // relay's never fire.
    let no_timers = crate::timer::Timers::default();
    let mut relay = Relay {
        src: stream,
        buf,
        dst: &mut sink,
        out: &mut scratch,
        read_timeout: Duration::MAX,
        write_timeout: Duration::MAX,
        max_buf: 64 * 1024,
        timers: &no_timers,
    };
    let drained = relay.run(framing, framing).await;
    if drained.is_err() || !reusable || framing == Framing::Close {
        *conn = None;
    }
    Ok(status)
}

/// A writer that drops everything: health-check bodies are read only to keep the
/// connection usable.
struct Discard;

impl AsyncWriteRent for Discard {
    async fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        let n = buf.bytes_init();
        (Ok(n), buf)
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        (Err(io::Error::other("writev is not used")), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_flip_after_rise_and_fall_in_a_row() {
        let mut v = Verdict::new(true);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(true, 2, 3), None, "a pass resets the failures");
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), Some(false));
        assert_eq!(v.observe(false, 2, 3), None, "logged once");
        assert_eq!(v.observe(true, 2, 3), None);
        assert_eq!(v.observe(true, 2, 3), Some(true));
        assert_eq!(v.observe(true, 2, 3), None);
    }
}

//! Active health checks: one task per checked server on the control thread's runtime,
//! each keeping one keep-alive connection and sending `GET <path>` every `interval`.
//! Results go to the health table, which decides and logs transitions.
//!
//! Tasks are started and stopped per server as snapshots change: a reload that removes
//! a server stops its probe, one that changes a group's check restarts its probes with
//! the new settings (the servers keep their state).

use super::health::Table;
use crate::body::{Direction, Relay};
use crate::buf::{write_vec, Buf};
use crate::config::HealthCheck;
use crate::error::ProxyError;
use crate::http::Framing;
use crate::snapshot::Snapshot;
use crate::upstream::head::read_head;
use crate::upstream::stream::UpStream;
use crate::upstream::ServerId;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use monoio::time::timeout;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running check task.
struct Task {
    check: HealthCheck,
    addr: SocketAddr,
    /// The group's TLS client config it connects with (compared by identity: a
    /// reload builds a new one, and the probe restarts with it).
    tls: Option<Arc<rustls::ClientConfig>>,
    stop: Rc<Cell<bool>>,
}

/// The check tasks, by server.
#[derive(Default)]
pub struct Checks {
    tasks: HashMap<ServerId, Task>,
}

impl Checks {
    /// Starts, restarts and stops tasks so exactly the servers of `snap` whose group
    /// has checks are probed, each with its group's current settings.
    pub fn sync(&mut self, snap: &Snapshot, table: &Rc<RefCell<Table>>) {
        let mut next = HashMap::new();
        for group in &snap.groups {
            let Some(check) = &group.upstream.health else {
                continue;
            };
            let tls = group.upstream.tls.as_ref();
            let tls_config = tls.map(|t| t.config.clone());
            let same_tls = |t: &Task| match (&t.tls, &tls_config) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            for (m, s) in group.members.iter().zip(&group.upstream.servers) {
                match self.tasks.remove(&m.id) {
                    Some(t) if t.check == *check && t.addr == s.addr && same_tls(&t) => {
                        next.insert(m.id, t);
                    }
                    old => {
                        if let Some(t) = old {
                            t.stop.set(true);
                        }
                        let stop = Rc::new(Cell::new(false));
                        let probe = Probe::new(m.id, s.addr, check.clone(), tls.cloned());
                        monoio::spawn(probe.run(table.clone(), stop.clone()));
                        let task = Task {
                            check: check.clone(),
                            addr: s.addr,
                            tls: tls_config.clone(),
                            stop,
                        };
                        next.insert(m.id, task);
                    }
                }
            }
        }
        for gone in self.tasks.values() {
            gone.stop.set(true);
        }
        self.tasks = next;
    }

    /// Stops every task.
    pub fn stop_all(&mut self) {
        for t in self.tasks.values() {
            t.stop.set(true);
        }
        self.tasks.clear();
    }
}

/// One server's checker.
struct Probe {
    server: ServerId,
    addr: SocketAddr,
    check: HealthCheck,
    /// The group's `tls`: checks speak TLS as requests do.
    tls: Option<crate::tls::UpstreamTls>,
    request: Vec<u8>,
    conn: Option<(UpStream, Buf)>,
    out: Vec<u8>,
}

impl Probe {
    fn new(
        server: ServerId,
        addr: SocketAddr,
        check: HealthCheck,
        tls: Option<crate::tls::UpstreamTls>,
    ) -> Probe {
        let host = check.host.clone().unwrap_or_else(|| addr.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-health-check\r\nAccept: */*\r\n\r\n",
            check.path
        )
        .into_bytes();
        Probe {
            server,
            addr,
            check,
            tls,
            request,
            conn: None,
            out: Vec::new(),
        }
    }

    /// Checks every `interval` until stopped.
    async fn run(mut self, table: Rc<RefCell<Table>>, stop: Rc<Cell<bool>>) {
        while !stop.get() {
            let result = match timeout(self.check.timeout, self.once()).await {
                Ok(Ok(status)) if self.check.passes(status) => Ok(()),
                Ok(Ok(status)) => Err(format!("status {status}")),
                Ok(Err(e)) => {
                    self.conn = None;
                    Err(e.to_string())
                }
                Err(_) => {
                    // The probe was cut mid-exchange: the connection is in an unknown state.
                    self.conn = None;
                    Err(format!("no answer within {:?}", self.check.timeout))
                }
            };
            if stop.get() {
                // Stopped while probing: the result belongs to a config that is gone.
                return;
            }
            let detail = result.as_ref().err().map_or("", String::as_str);
            table.borrow_mut().check_result(
                self.server,
                result.is_ok(),
                detail,
                &self.check,
                Instant::now(),
            );
            monoio::time::sleep(self.check.interval).await;
        }
    }

    /// One check over the kept connection (opened if needed); returns the status.
    async fn once(&mut self) -> io::Result<u16> {
        let (stream, buf) = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect_addr(self.addr).await?;
                let _ = stream.set_nodelay(true);
                let stream = match &self.tls {
                    None => UpStream::Plain(stream),
                    Some(tls) => {
                        let name = tls.sni.clone().unwrap_or_else(|| {
                            rustls::pki_types::ServerName::IpAddress(self.addr.ip().into())
                        });
                        let session = rustls::ClientConnection::new(tls.config.clone(), name)
                            .map_err(io::Error::other)?;
                        let mut t = Box::new(crate::tls::TlsStream::new(stream, session));
                        t.handshake()
                            .await
                            .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
                        UpStream::Tls(t)
                    }
                };
                self.conn.insert((stream, Buf::with_capacity(4096)))
            }
        };
        self.out.clear();
        self.out.extend_from_slice(&self.request);
        write_vec(stream, &mut self.out).await?;
        let (status, framing, reusable) = loop {
            let read = read_head(stream, buf, false, false, |r| {
                Ok((r.status, r.body, r.reusable))
            });
            let (head, len) = read.await.map_err(failure)?;
            buf.consume(len);
            // Interim 1xx heads say nothing about health: wait for the final one.
            if head.0 >= 200 {
                break head;
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
            dir: Direction::Response,
            tee: None,
            max_len: u64::MAX,
        };
        let drained = relay.run(framing, framing).await;
        if drained.is_err() || !reusable || framing == Framing::Close {
            self.conn = None;
        }
        Ok(status)
    }
}

/// A check failure as an I/O error, with the failure's own words.
fn failure(e: ProxyError) -> io::Error {
    io::Error::other(match e {
        ProxyError::BadResponse(r) => r.to_string(),
        e => e.reason().to_string(),
    })
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

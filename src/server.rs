//! Starting and stopping the proxy: bind listeners on the calling thread, build the
//! first snapshot, spawn one pinned worker per core and the control thread, and hand
//! back a [`Running`] handle to reload, drain or stop them.
//!
//! Listeners are bound here (not in workers) so the real port of a `:0` address is
//! known before `start` returns: tests connect at once, with no sleeps.

use crate::access::{AccessLog, Sink};
use crate::bus::{Bus, Update};
use crate::config::Config;
use crate::control::{self, Control, ReloadError, Reloaded, Source};
use crate::listen::{self, Bound, ListenError};
use crate::snapshot::Snapshot;
use crate::upstream::Registry;
use crate::worker::{self, Driver, Startup};
use crate::{info, warn};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound (a config problem: exit 64).
    #[error("{origin}: `{key}`: {source}")]
    Listen {
        /// The config file.
        origin: String,
        /// `server.listen` or `admin.listen`.
        key: &'static str,
        /// The bind error.
        source: ListenError,
    },
    /// The access log could not be opened (a config problem: exit 64).
    #[error("{origin}: `log.access`: cannot open {path}: {source}")]
    AccessLog {
        /// The config file.
        origin: String,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread or runtime could not start.
    #[error("{0}")]
    Runtime(String),
}

/// Something the main thread must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worker thread ended (it only ends by itself when it panicked or could not
    /// start a runtime).
    WorkerExited {
        /// Which worker.
        id: usize,
        /// It panicked.
        panicked: bool,
    },
    /// A signal arrived (forwarded by `signals`).
    Signal(crate::signals::Signal),
}

/// A running proxy. Dropping it stops the workers at once.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<(String, SocketAddr, &'static str)>,
    bus: Bus,
    threads: Vec<JoinHandle<u32>>,
    events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
    drivers: Vec<Driver>,
    control: Control,
    /// `[server] shutdown_timeout` of the config in force (a reload may change it).
    shutdown_timeout: Cell<Duration>,
    /// Where the admin API listens, when it does.
    admin_addr: Option<SocketAddr>,
    /// The access log's writer (idle while the log is off).
    access: AccessLog,
}

/// Options `start` takes beside the config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--workers`, kept over reloads of the file.
    pub workers_override: Option<usize>,
    /// The file the config came from: what SIGHUP and `POST /reload` read again.
    pub config_path: Option<PathBuf>,
}

/// Binds every listen address for every worker and starts the workers and the control
/// thread.
pub fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, Options::default())
}

/// [`start`] with options.
pub fn start_with(config: Config, options: Options) -> Result<Running, StartError> {
    let workers = config.server.workers;
    let mut bound: Vec<Bound> = Vec::new();
    for &l in &config.server.listen {
        let b = listen::bind(l, workers).map_err(|source| StartError::Listen {
            origin: config.origin.clone(),
            key: "server.listen",
            source,
        })?;
        bound.push(b);
    }
    let admin = match &config.admin {
        None => None,
        Some(a) => Some(bind_admin(a.listen).map_err(|source| StartError::Listen {
            origin: config.origin.clone(),
            key: "admin.listen",
            source,
        })?),
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    crate::log::set_level(config.log.level.into());
    let sink = Sink::open(config.log.access.as_ref()).map_err(|source| StartError::AccessLog {
        origin: config.origin.clone(),
        path: access_path(&config),
        source,
    })?;
    let access = AccessLog::start(sink)
        .map_err(|e| StartError::Runtime(format!("cannot start the access log thread: {e}")))?;
    let mut registry = Registry::new();
    let listening: Vec<_> = bound.iter().map(|b| (b.listen, b.addr)).collect();
    let snapshot = Arc::new(Snapshot::build(&config, 1, &mut registry).with_listeners(&listening));
    let (bus, inboxes, reports) = Bus::new(workers);
    let (events_tx, events) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let addrs = bound
        .iter()
        .map(|b| (b.listen.to_string(), b.addr, b.note))
        .collect();
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    for b in bound {
        for (w, s) in b.sockets.into_iter().enumerate() {
            per_worker[w].push(s);
        }
    }
    let mut threads = Vec::new();
    for ((id, listeners), inbox) in per_worker.into_iter().enumerate().zip(inboxes) {
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let startup = Startup {
            id,
            snapshot: snapshot.clone(),
            listeners,
            inbox,
            bus: bus.clone(),
            log: access.remote(),
            ready: ready_tx.clone(),
        };
        let exit = ExitGuard {
            id,
            tx: events_tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("w{id}"))
            .spawn(move || {
                let _exit = exit;
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        warn!("could not pin worker {id} to core {}", core.id);
                    }
                }
                worker::run(startup)
            })
            .map_err(|e| StartError::Runtime(format!("cannot start worker {id}: {e}")))?;
        threads.push(handle);
    }
    drop(ready_tx);
    let shutdown_timeout = Cell::new(config.server.shutdown_timeout);
    let control = Control::spawn(control::Setup {
        snapshot,
        registry,
        listening,
        workers_override: options.workers_override,
        bus: bus.clone(),
        reports,
        admin,
        config_path: options.config_path,
        access: access.remote(),
        config,
    })
    .map_err(|e| StartError::Runtime(format!("cannot start the control thread: {e}")))?;
    let mut running = Running {
        addrs,
        bus,
        threads,
        events,
        events_tx,
        drivers: Vec::new(),
        control,
        shutdown_timeout,
        admin_addr,
        access,
    };
    for _ in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(d)) => running.drivers.push(d),
            Ok(Err(msg)) => return Err(StartError::Runtime(msg)),
            Err(_) => return Err(StartError::Runtime("a worker did not start".into())),
        }
    }
    Ok(running)
}

/// The access log's path as configured, for messages.
fn access_path(config: &Config) -> String {
    match &config.log.access {
        Some(crate::config::AccessTarget::File(p)) => p.display().to_string(),
        _ => "stdout".into(),
    }
}

/// Binds the admin API's listener (one socket: the control thread serves it).
fn bind_admin(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let fail = |source| ListenError {
        addr: addr.to_string(),
        source,
    };
    let l = std::net::TcpListener::bind(addr).map_err(fail)?;
    l.set_nonblocking(true).map_err(fail)?;
    Ok(l)
}

/// Tells the main thread a worker ended, however it ended (a panic unwinds through here).
struct ExitGuard {
    id: usize,
    tx: mpsc::Sender<Event>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Event::WorkerExited {
            id: self.id,
            panicked: std::thread::panicking(),
        });
    }
}

impl Running {
    /// The bound listen addresses at start, with `:0` ports resolved.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|(_, a, _)| *a).collect()
    }

    /// `(configured, bound, note)` for each listen address at start, for the log.
    pub fn listeners(&self) -> &[(String, SocketAddr, &'static str)] {
        &self.addrs
    }

    /// Reopens the access log file (SIGUSR1: logrotate moved it away).
    pub fn reopen_logs(&self) {
        self.access.remote().reopen();
    }

    /// Where the admin API listens (port 0 resolved), when `[admin]` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The driver each worker runs on.
    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// The bus, to broadcast updates to every worker.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Reloads the config file at `path` (what SIGHUP does); the result is also logged.
    pub fn reload_file(&self, path: PathBuf) -> Result<Reloaded, ReloadError> {
        self.reload(Source::File(path))
    }

    /// Runs `config` as the next generation, as a reload of a file would.
    pub fn reload_config(&self, config: Config) -> Result<Reloaded, ReloadError> {
        self.reload(Source::Config(Box::new(config)))
    }

    fn reload(&self, source: Source) -> Result<Reloaded, ReloadError> {
        let r = self.control.reload(source)?;
        self.shutdown_timeout.set(r.shutdown_timeout);
        Ok(r)
    }

    /// Where workers and signals report to the main thread.
    pub fn event_sender(&self) -> mpsc::Sender<Event> {
        self.events_tx.clone()
    }

    /// Waits for the next event.
    pub fn next_event(&self) -> Event {
        // The sender half lives in `self`, so the channel never disconnects.
        self.events.recv().unwrap_or(Event::WorkerExited {
            id: usize::MAX,
            panicked: false,
        })
    }

    /// Graceful drain: stop accepting at once, let in-flight requests finish (kept-alive
    /// connections answer `Connection: close`, idle ones close), and wait until every
    /// connection is done or `[server] shutdown_timeout` passed. Returns how many
    /// connections were cut.
    pub fn drain(self) -> u32 {
        let timeout = self.shutdown_timeout.get();
        self.drain_within(timeout)
    }

    /// [`Running::drain`] with its own limit.
    pub fn drain_within(mut self, timeout: Duration) -> u32 {
        self.stop(Instant::now() + timeout)
    }

    /// The drain limit of the config in force.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout.get()
    }

    /// Stops every worker at once (open connections are cut) and waits for them.
    pub fn shutdown(mut self) {
        self.stop(Instant::now());
    }

    fn stop(&mut self, deadline: Instant) -> u32 {
        if self.threads.is_empty() {
            return 0;
        }
        self.bus.broadcast(Update::Drain { deadline });
        let mut cut = 0;
        for t in self.threads.drain(..) {
            // A worker that panicked has no count to give; its connections are gone.
            cut += t.join().unwrap_or(0);
        }
        self.control.stop();
        // After the workers: the lines they handed over are written before it ends.
        self.access.stop();
        info!("stopped");
        cut
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_worker_thread_is_reported_as_panicked() {
        let (tx, rx) = mpsc::channel();
        let guard = ExitGuard {
            id: 3,
            tx: tx.clone(),
        };
        let joined = std::thread::spawn(move || {
            let _exit = guard;
            panic!("worker bug");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(
            rx.recv().unwrap(),
            Event::WorkerExited {
                id: 3,
                panicked: true
            }
        );
        let guard = ExitGuard { id: 4, tx };
        std::thread::spawn(move || drop(guard)).join().unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            Event::WorkerExited {
                id: 4,
                panicked: false
            }
        );
    }
}

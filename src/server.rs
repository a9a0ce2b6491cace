//! Starting and stopping the proxy: bind listeners on the calling thread, spawn one
//! pinned worker per core, and hand back a `Running` handle.
//!
//! Listeners are bound here (not in workers) so the real port of a `:0` address is
//! known before `start` returns: tests connect at once, with no sleeps.

use crate::bus::{Bus, Update};
use crate::config::Config;
use crate::control::{self, Control};
use crate::worker::{self, Driver, Startup};
use crate::{info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Listen backlog per socket; SYN floods beyond this are the kernel's problem.
const BACKLOG: i32 = 4096;

/// A running proxy. Dropping it shuts the workers down.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<SocketAddr>,
    bus: Bus,
    threads: Vec<JoinHandle<()>>,
    exits: mpsc::Receiver<usize>,
    drivers: Vec<Driver>,
    control: Control,
}

/// Binds every listen address for every worker and starts the workers.
pub fn start(config: Config) -> io::Result<Running> {
    let config = Arc::new(config);
    let workers = config.server.workers;
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for &addr in &config.server.listen {
        if addr.port() != 0 {
            // A plain bind first: SO_REUSEPORT would silently share a port that some
            // other process already listens on, stealing part of its traffic.
            std::net::TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        }
        let first = bind(addr)?;
        let real = first.local_addr()?;
        per_worker[0].push(first);
        for listeners in per_worker.iter_mut().skip(1) {
            listeners.push(bind(real)?);
        }
        addrs.push(real);
    }

    let (bus, inboxes, reports) = Bus::new(workers);
    let control = control::spawn(config.clone(), bus.clone(), reports)?;
    let (exit_tx, exits) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut threads = Vec::new();
    for ((id, listeners), inbox) in per_worker.into_iter().enumerate().zip(inboxes) {
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let startup = Startup {
            id,
            config: config.clone(),
            listeners,
            inbox,
            bus: bus.clone(),
            ready: ready_tx.clone(),
        };
        let exit_tx = exit_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("w{id}"))
            .spawn(move || {
                let _exit = ExitGuard { id, tx: exit_tx };
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        warn!("could not pin worker {id} to core {}", core.id);
                    }
                }
                worker::run(startup);
            })?;
        threads.push(handle);
    }
    drop(ready_tx);

    let mut drivers = Vec::new();
    let mut running = Running {
        addrs,
        bus,
        threads,
        exits,
        drivers: Vec::new(),
        control,
    };
    for _ in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(msg)) => return Err(io::Error::other(msg)),
            Err(_) => return Err(io::Error::other("a worker did not start")),
        }
    }
    running.drivers = drivers;
    Ok(running)
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt here instead of one
    // per connection. Small responses must not wait for Nagle's algorithm.
    socket.set_nodelay(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Tells the main thread a worker ended, however it ended (a panic unwinds through here).
struct ExitGuard {
    id: usize,
    tx: mpsc::Sender<usize>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(self.id);
    }
}

impl Running {
    /// The bound listen addresses, with `:0` ports resolved.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The driver each worker runs on.
    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// The bus, to broadcast updates to every worker.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Blocks until some worker exits; returns its index. A live proxy never returns.
    pub fn wait_for_exit(&self) -> usize {
        self.exits.recv().unwrap_or(usize::MAX)
    }

    /// Stops every worker and waits for their threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.bus.broadcast(Update::Shutdown);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.control.stop();
        info!("stopped");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

//! One worker thread: its monoio runtime (io_uring, or epoll where io_uring is not
//! available), its accept loops on its own SO_REUSEPORT listeners, and the tick loop
//! that advances its clock and applies what the bus brings (config snapshots, health,
//! listener changes, drain). The per-core state the connections share is the `Shard`.

use crate::bus::{Bus, Inbox, Update};
use crate::client::{ClientStream, ConnFacts, Listener};
use crate::proxy;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::timer::TICK;
use crate::{error, info, warn};
use monoio::io::Canceller;
use monoio::net::TcpListener;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Idle upstream connections are swept every this many ticks.
const SWEEP_EVERY: u32 = 20;
/// Longest a draining worker waits past its deadline for its accept loops to end.
const LISTENER_GRACE: Duration = Duration::from_secs(1);

/// The I/O driver a worker ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Linux io_uring (the fast path).
    IoUring,
    /// epoll: io_uring is unavailable (old kernel, seccomp), or `forced` by
    /// `RINGWAY_DRIVER=legacy`.
    Legacy {
        /// Chosen by the environment, not for lack of io_uring.
        forced: bool,
    },
}

/// Everything a worker thread needs to start.
#[derive(Debug)]
pub struct Startup {
    /// Worker index.
    pub id: usize,
    /// The config generation to start with.
    pub snapshot: Arc<Snapshot>,
    /// This worker's listeners, one per listen address, already bound.
    pub listeners: Vec<std::net::TcpListener>,
    /// This worker's end of the bus.
    pub inbox: Inbox,
    /// The whole bus, to report from.
    pub bus: Bus,
    /// Where access log lines go.
    pub log: crate::access::Remote,
    /// Told which driver runs once the runtime is up (or the error if none could start).
    pub ready: mpsc::Sender<Result<Driver, String>>,
}

/// Runs a worker on the current thread until it has drained; returns how many client
/// connections were still open at the drain deadline (and so were cut).
pub fn run(start: Startup) -> u32 {
    let forced = std::env::var("RINGWAY_DRIVER").is_ok_and(|v| v == "legacy");
    if !forced && monoio::utils::detect_uring() {
        match uring_runtime() {
            Ok(mut rt) => {
                let _ = start.ready.send(Ok(Driver::IoUring));
                return rt.block_on(serve(start, Driver::IoUring));
            }
            Err(e) => warn!("io_uring runtime failed to start ({e}); falling back to epoll"),
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            let driver = Driver::Legacy { forced };
            let _ = start.ready.send(Ok(driver));
            rt.block_on(serve(start, driver))
        }
        Err(e) => {
            let _ = start
                .ready
                .send(Err(format!("cannot start any runtime: {e}")));
            0
        }
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// Builds the io_uring runtime with the flags that suit one thread per ring.
///
/// SINGLE_ISSUER + DEFER_TASKRUN (Linux 6.1+) make completions run only when this
/// thread asks for them, instead of the kernel interrupting it from the core that
/// received the packet; that removed a contended spinlock and IPIs seen in perf.
/// Older kernels reject the flags, so fall back to COOP_TASKRUN, then to none.
fn uring_runtime() -> std::io::Result<UringRuntime> {
    const ENTRIES: u32 = 4096;
    let build = |flags: fn(&mut io_uring::Builder) -> &mut io_uring::Builder| {
        let mut b = io_uring::IoUring::builder();
        flags(&mut b);
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(ENTRIES)
            .uring_builder(b)
            .enable_timer()
            .build()
    };
    build(|b| b.setup_single_issuer().setup_defer_taskrun())
        .or_else(|_| build(|b| b.setup_coop_taskrun().setup_taskrun_flag()))
        .or_else(|_| build(|b| b))
}

/// An accept loop that can be stopped: its listener closes when the loop ends, and
/// connections it accepted carry on.
struct Accepting {
    addr: SocketAddr,
    canceller: Canceller,
    stopped: Rc<Cell<bool>>,
}

/// This worker's accept loops.
#[derive(Default)]
struct Listeners {
    loops: Vec<Accepting>,
    /// Accept loops still running, stopped or not: a stopped one ends (and closes its
    /// socket) only once its called-off accept completes, a ring turn later.
    running: Rc<Cell<u32>>,
}

impl Listeners {
    /// Starts accepting on `listener`.
    fn add(&mut self, shard: &Rc<Shard>, listener: std::net::TcpListener) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let accepting = Accepting {
            addr,
            canceller: Canceller::new(),
            stopped: Rc::new(Cell::new(false)),
        };
        let info = Rc::new(Listener {
            shard: shard.clone(),
            addr,
        });
        let (handle, stopped) = (accepting.canceller.handle(), accepting.stopped.clone());
        let running = Running::new(self.running.clone());
        monoio::spawn(accept_loop(listener, info, handle, stopped, running));
        self.loops.push(accepting);
        Ok(())
    }

    /// True once every stopped accept loop has ended and closed its socket.
    fn all_closed(&self) -> bool {
        self.loops.is_empty() && self.running.get() == 0
    }

    /// Stops accepting on `addr` (connections accepted there carry on).
    fn remove(&mut self, addr: SocketAddr) {
        while let Some(i) = self.loops.iter().position(|a| a.addr == addr) {
            stop(self.loops.swap_remove(i));
        }
    }

    /// Stops every accept loop.
    fn close_all(&mut self) {
        for a in self.loops.drain(..) {
            stop(a);
        }
    }
}

/// Counts an accept loop as running until dropped.
struct Running(Rc<Cell<u32>>);

impl Running {
    fn new(count: Rc<Cell<u32>>) -> Running {
        count.set(count.get() + 1);
        Running(count)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn stop(a: Accepting) {
    a.stopped.set(true);
    // The in-flight accept is called off, not dropped: an accept that completes anyway
    // still hands over its connection (dropping it would leak the descriptor).
    drop(a.canceller.cancel());
}

async fn serve(start: Startup, driver: Driver) -> u32 {
    let Startup {
        id,
        snapshot,
        listeners,
        mut inbox,
        bus,
        log,
        ..
    } = start;
    let Some(cache_inbox) = inbox.take_cache() else {
        error!("worker {id}: its cache inbox was taken already");
        return 0;
    };
    let shard = Rc::new(Shard::new(id, bus, cache_inbox, snapshot, log));
    let mut accepting = Listeners::default();
    for listener in listeners {
        if let Err(e) = accepting.add(&shard, listener) {
            error!("worker {id}: cannot register listener: {e}");
            return 0;
        }
    }
    let mut deadline: Option<Instant> = None;
    loop {
        monoio::time::sleep(TICK).await;
        let now = Instant::now();
        shard.tick(now, SWEEP_EVERY);
        while let Some(update) = inbox.try_next() {
            match update {
                Update::Scrape { reply } => {
                    let _ = reply.send(shard.stats(driver));
                }
                update => apply(&shard, &mut accepting, &mut deadline, update),
            }
        }
        if let Some(d) = deadline {
            // The listening sockets must be closed before the runtime goes (else new
            // clients would queue on a socket nobody serves while other workers drain);
            // a called-off accept needs a ring turn, bounded here by LISTENER_GRACE.
            let closed = accepting.all_closed() || now >= d + LISTENER_GRACE;
            let open = shard.open_conns();
            if closed && (open == 0 || now >= d) {
                return open;
            }
        }
    }
}

/// Applies one bus update on this worker.
fn apply(
    shard: &Rc<Shard>,
    accepting: &mut Listeners,
    deadline: &mut Option<Instant>,
    update: Update,
) {
    match update {
        Update::Snapshot(snap) => shard.install(snap),
        Update::ServerDown {
            generation,
            server,
            down,
        } => shard.apply_down(server, generation, down),
        Update::Health {
            generation,
            server,
            up,
        } => shard.apply_active(server, generation, up),
        Update::Manual {
            generation,
            server,
            down,
        } => shard.apply_manual(server, generation, down),
        Update::Listen { add, remove } => {
            for addr in remove.iter() {
                accepting.remove(*addr);
            }
            for listener in add.take(shard.id()) {
                if let Err(e) = accepting.add(shard, listener) {
                    error!("worker {}: cannot register a new listener: {e}", shard.id());
                }
            }
        }
        Update::Drain { deadline: d } => {
            accepting.close_all();
            shard.start_drain();
            *deadline = Some(d);
        }
        // Answered by the caller, which knows the driver.
        Update::Scrape { .. } => {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    info: Rc<Listener>,
    cancel: monoio::io::CancelHandle,
    stopped: Rc<Cell<bool>>,
    _running: Running,
) {
    let mut last_error: Option<std::io::ErrorKind> = None;
    let mut warned: Option<Instant> = None;
    while !stopped.get() {
        make_room(&info.shard, &listener, &stopped, &mut warned).await;
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                last_error = None;
                // TCP_NODELAY is inherited from the listener (see `listen`).
                let gen = info.shard.generation();
                let Some(role) = gen.snap().listener(info.addr) else {
                    // Not in the current generation: a reload is removing this
                    // listener (its accept loop stops at the next tick).
                    continue;
                };
                let facts = ConnFacts::new(peer, info.clone());
                match (&role.tls, role.proxy_protocol) {
                    (tls, true) => monoio::spawn(proxy::serve_proxied(stream, tls.clone(), facts)),
                    (None, false) => {
                        monoio::spawn(proxy::serve(ClientStream::Plain(stream), facts))
                    }
                    (Some(config), false) => {
                        monoio::spawn(proxy::serve_tls(stream, config.clone(), facts))
                    }
                };
            }
            Err(_) if stopped.get() => break,
            Err(e) => {
                // EMFILE and friends: log once per streak, back off so we do not spin.
                if last_error != Some(e.kind()) {
                    warn!("accept failed: {e}");
                    last_error = Some(e.kind());
                }
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until this worker is under its share of `[server] max_connections`, closing
/// its oldest idle keep-alive connections to get there. New clients wait in the listen
/// backlog meanwhile (nothing is accepted), instead of failing the process when file
/// descriptors run out.
/// `warned`: when this loop last said so (at most once a minute: a worker held at its
/// limit would otherwise log every accept).
async fn make_room(
    shard: &Shard,
    listener: &TcpListener,
    stopped: &Cell<bool>,
    warned: &mut Option<Instant>,
) {
    let limit = |s: &Shard| {
        let gen = s.generation();
        let server = &gen.snap().server;
        server
            .max_connections
            .div_ceil(server.workers.max(1))
            .max(1) as u32
    };
    if shard.open_conns() < limit(shard) {
        return;
    }
    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *warned = Some(Instant::now());
        warn!(
            "worker {}: at its share of max_connections ({} open): closing idle connections, new ones wait",
            shard.id(),
            shard.open_conns()
        );
    }
    while !stopped.get() && shard.open_conns() >= limit(shard) {
        // Only a client waiting in the backlog costs an idle connection its place. An
        // ended idle wait closes its connection when its task next runs: give it a
        // moment. Otherwise (nobody waits, or every connection is busy) wait a tick.
        let pause = match backlog_waiting(listener) && shard.timers().end_oldest_idle() {
            true => Duration::from_millis(1),
            false => TICK,
        };
        monoio::time::sleep(pause).await;
    }
}

/// True when a connection waits in `listener`'s accept queue (one `poll` with no wait).
fn backlog_waiting(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the listener's descriptor, which outlives the call;
    // a zero timeout never blocks the worker.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

/// Logs which driver the workers use; called once all have reported.
pub fn log_drivers(drivers: &[Driver]) {
    let uring = drivers.iter().filter(|d| **d == Driver::IoUring).count();
    let forced = drivers.contains(&Driver::Legacy { forced: true });
    if uring == drivers.len() {
        info!("{} workers on the io_uring driver", drivers.len());
    } else if forced {
        info!(
            "{} of {} workers on the epoll driver (forced by RINGWAY_DRIVER=legacy)",
            drivers.len() - uring,
            drivers.len()
        );
    } else {
        warn!(
            "{} of {} workers on the slower epoll driver: io_uring is unavailable here (old kernel, or blocked by seccomp as in Docker's default profile)",
            drivers.len() - uring,
            drivers.len()
        );
    }
}

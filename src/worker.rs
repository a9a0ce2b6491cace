//! One worker: a pinned thread running its own monoio runtime, accepting on its own
//! SO_REUSEPORT listeners and serving connections with the proxy.
//!
//! Everything a worker owns is `!Send` (`Rc`, `Cell`, `RefCell`); only the
//! `Arc<Config>`, its listeners (moved in once) and bus updates cross threads.

use crate::balance::Balancer;
use crate::buf::BufPool;
use crate::bus::{Bus, Inbox, Update};
use crate::config::Config;
use crate::health::Health;
use crate::pool::Pool;
use crate::retry::Budget;
use crate::route::Router;
use crate::timer::Timers;
use crate::{error, info, proxy, warn};
use monoio::net::TcpListener;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How often a worker drains its inbox and refreshes its coarse clock.
pub const TICK: Duration = Duration::from_millis(50);
/// Free client buffer sets kept per worker (8 KiB each): enough for bursts of new
/// connections without holding much memory after them.
const MAX_FREE_BUFFERS: usize = 1024;
/// Idle upstream connections are swept every this many ticks.
const SWEEP_EVERY: u32 = 20;

/// The I/O driver a worker ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Linux io_uring (the fast path).
    IoUring,
    /// epoll, when io_uring is unavailable (old kernel, seccomp).
    Legacy,
}

/// State shared by every connection task of one worker.
#[derive(Debug)]
pub struct Worker {
    /// Worker index, 0-based.
    pub id: usize,
    /// The running configuration.
    pub config: Arc<Config>,
    /// Broadcast to every worker (mark-downs).
    pub bus: Bus,
    /// Which servers may be picked.
    pub health: Health,
    /// Which upstream group a request goes to.
    pub router: Router,
    /// Round-robin cursors.
    pub balancer: Balancer,
    /// Coarse timers (one tick of grain) for the per-request waits and idle connections.
    pub timers: Timers,
    /// Free client connection buffers.
    pub buffers: BufPool,
    /// Retry budget per upstream group.
    pub budgets: Vec<Budget>,
    /// Idle upstream connections.
    pub pool: Pool,
    /// Unique per worker run: the first half of generated request ids.
    pub id_prefix: u64,
    /// Requests given an id so far: the second half.
    pub id_seq: Cell<u64>,
    /// Coarse clock, refreshed every tick: pool ages and mark-downs need no better.
    pub now: Cell<Instant>,
    /// Ticks so far (wrapping): a 4-byte timestamp for per-connection state.
    pub ticks: Cell<u32>,
}

/// Everything a worker thread needs to start.
pub struct Startup {
    /// Worker index.
    pub id: usize,
    /// The configuration.
    pub config: Arc<Config>,
    /// This worker's listeners, one per listen address, already bound.
    pub listeners: Vec<std::net::TcpListener>,
    /// This worker's end of the bus.
    pub inbox: Inbox,
    /// The whole bus, to broadcast from.
    pub bus: Bus,
    /// Told which driver runs once the runtime is up (or the error if none could start).
    pub ready: mpsc::Sender<Result<Driver, String>>,
}

/// Runs a worker on the current thread until shutdown.
pub fn run(start: Startup) {
    let forced_legacy = std::env::var("RINGWAY_DRIVER").is_ok_and(|v| v == "legacy");
    if !forced_legacy && monoio::utils::detect_uring() {
        match uring_runtime() {
            Ok(mut rt) => {
                let _ = start.ready.send(Ok(Driver::IoUring));
                rt.block_on(serve(start));
                return;
            }
            Err(e) => warn!("io_uring runtime failed to start ({e}); falling back to epoll"),
        }
    } else if !forced_legacy {
        warn!("io_uring is unavailable here (old kernel or blocked by seccomp); using the slower epoll driver");
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            let _ = start.ready.send(Ok(Driver::Legacy));
            rt.block_on(serve(start));
        }
        Err(e) => {
            let _ = start
                .ready
                .send(Err(format!("cannot start any runtime: {e}")));
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

async fn serve(start: Startup) {
    let Startup {
        id,
        config,
        listeners,
        inbox,
        bus,
        ..
    } = start;
    let worker = Rc::new(Worker {
        id,
        health: Health::new(&config),
        balancer: Balancer::new(&config, id),
        router: Router::new(&config),
        pool: Pool::new(config.servers.len()),
        buffers: BufPool::new(proxy::CLIENT_BUF, MAX_FREE_BUFFERS),
        timers: Timers::default(),
        budgets: config
            .upstreams
            .iter()
            .map(|u| Budget::new(u.retry_budget, Instant::now()))
            .collect(),
        now: Cell::new(Instant::now()),
        ticks: Cell::new(0),
        id_prefix: id_prefix(id),
        id_seq: Cell::new(0),
        config,
        bus,
    });
    for listener in listeners {
        match TcpListener::from_std(listener) {
            Ok(l) => {
                monoio::spawn(accept_loop(worker.clone(), l));
            }
            Err(e) => {
                error!("worker {id}: cannot register listener: {e}");
                return;
            }
        }
    }
    loop {
        monoio::time::sleep(TICK).await;
        let now = Instant::now();
        worker.now.set(now);
        let ticks = worker.ticks.get().wrapping_add(1);
        worker.ticks.set(ticks);
        worker.timers.tick(now);
        while let Some(update) = inbox.try_next() {
            match update {
                Update::ServerDown { server, down } => worker.health.apply_down(server, down),
                Update::Health { server, up } => {
                    if worker.health.apply_active(server, up) {
                        worker.balancer.ramp_up(server, now);
                    }
                }
                Update::Shutdown => return,
            }
        }
        if ticks.is_multiple_of(SWEEP_EVERY) {
            let cfg = &worker.config;
            worker.pool.sweep(now, |s| {
                cfg.upstreams[cfg.servers[s].upstream].keepalive_timeout
            });
        }
    }
}

/// A per-run prefix for request ids: time, process and worker mixed, so ids from
/// different workers, restarts and machines do not collide in practice.
fn id_prefix(worker: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = Vec::with_capacity(24);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&u64::from(std::process::id()).to_le_bytes());
    seed.extend_from_slice(&(worker as u64).to_le_bytes());
    crate::balance::hash_bytes(&seed)
}

impl Worker {
    /// The next generated request id.
    pub fn next_request_id(&self) -> crate::proxy::RequestId {
        let seq = self.id_seq.get().wrapping_add(1);
        self.id_seq.set(seq);
        crate::proxy::RequestId::generate(self.id_prefix, seq)
    }
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener) {
    let mut last_error: Option<std::io::ErrorKind> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                last_error = None;
                // TCP_NODELAY is inherited from the listener (see server::bind).
                monoio::spawn(proxy::serve(worker.clone(), stream, peer));
            }
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

/// Logs which driver each worker uses; called once all have reported.
pub fn log_drivers(drivers: &[Driver]) {
    let uring = drivers.iter().filter(|d| **d == Driver::IoUring).count();
    if uring == drivers.len() {
        info!("{} workers on the io_uring driver", drivers.len());
    } else {
        warn!(
            "{} of {} workers on the legacy epoll driver (io_uring unavailable)",
            drivers.len() - uring,
            drivers.len()
        );
    }
}

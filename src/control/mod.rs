//! The control thread: everything that is not request work. It owns the running config
//! and the server-id registry, builds and publishes snapshots on reload ([`reload`]),
//! runs the active health checks ([`checks`]), is the one place health transitions
//! are decided, logged once and broadcast ([`health`]), and serves the admin API
//! ([`admin`]).
//!
//! It runs its own small monoio runtime on a thread of its own, never on a worker's
//! core schedule. Workers report to it over the bus; the main thread sends it commands
//! (reload, stop) through a channel and waits for the answer.

pub mod admin;
pub mod cache;
pub mod checks;
pub mod health;
pub mod prometheus;
pub mod registry;
pub mod reload;

pub use reload::{ReloadError, Reloaded, Source};

use crate::bus::{Bus, Report};
use crate::config::{Config, Listen};
use crate::snapshot::Snapshot;
use crate::upstream::Registry;
use crate::{error, info, warn};
use crossbeam_channel::{Receiver, Sender};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often reports and commands are drained and back-offs checked.
const TICK: Duration = Duration::from_millis(20);
/// How often cache entries past any use are dropped.
const CACHE_SWEEP: Duration = Duration::from_secs(1);

/// What the main thread asks of the control thread.
#[derive(Debug)]
enum Command {
    /// Reload and answer with the result.
    Reload {
        source: Source,
        reply: mpsc::Sender<Result<Reloaded, ReloadError>>,
    },
    /// Stop the checks and end the thread.
    Stop,
}

/// What the control thread starts from.
#[derive(Debug)]
pub struct Setup {
    /// The running config.
    pub config: Config,
    /// Its snapshot (generation 1), already handed to the workers.
    pub snapshot: Arc<Snapshot>,
    /// The registry that gave the snapshot's ids.
    pub registry: Registry,
    /// Listen entries as bound: configured, and real address.
    pub listening: Vec<(Listen, SocketAddr)>,
    /// `--workers` from the command line, which a reloaded file does not override.
    pub workers_override: Option<usize>,
    /// To broadcast to the workers.
    pub bus: Bus,
    /// Workers' reports.
    pub reports: Receiver<Report>,
    /// The admin API's listener, bound by the main thread, when `[admin]` is set.
    pub admin: Option<std::net::TcpListener>,
    /// The file the config came from (what `POST /reload` reads), when there is one.
    pub config_path: Option<PathBuf>,
    /// The access log's writer, retargeted when a reload changes `log.access`.
    pub access: crate::access::Remote,
}

/// The last reload's outcome, for status.
#[derive(Debug, Clone)]
struct LastReload {
    at: SystemTime,
    /// The generation and summary, or the error.
    result: Result<(u64, String), String>,
}

/// The control thread's state, shared by its loop and the admin API's connections
/// (one thread: an `Rc<RefCell>`, never borrowed across an await).
struct State {
    config: Config,
    snapshot: Arc<Snapshot>,
    registry: Registry,
    listening: Vec<(Listen, SocketAddr)>,
    workers_override: Option<usize>,
    bus: Bus,
    health: Rc<RefCell<health::Table>>,
    checks: checks::Checks,
    config_path: Option<PathBuf>,
    started: Instant,
    last_reload: Option<LastReload>,
    /// Reloads (and registry changes) applied and refused so far.
    reloads: (u64, u64),
    access: crate::access::Remote,
    /// The response cache's account.
    cache: cache::Account,
}

/// A running control thread.
#[derive(Debug)]
pub struct Control {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Control {
    /// Starts the control thread.
    pub fn spawn(setup: Setup) -> io::Result<Control> {
        let (commands, inbox) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build();
                match rt {
                    Ok(mut rt) => rt.block_on(run(setup, inbox)),
                    Err(e) => error!(
                        "control thread cannot start a runtime: {e}; no health checks or reloads"
                    ),
                }
            })?;
        Ok(Control {
            commands,
            thread: Some(thread),
        })
    }

    /// Reloads from `source` and waits for the result (which is also logged).
    pub fn reload(&self, source: Source) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Command::Reload { source, reply })
            .map_err(|_| ReloadError::Stopping)?;
        answer.recv().unwrap_or(Err(ReloadError::Stopping))
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(setup: Setup, commands: Receiver<Command>) {
    let now = Instant::now();
    let table = health::Table::new(setup.bus.clone(), &setup.snapshot, now);
    let mut account = cache::Account::new(setup.config.cache.max_bytes);
    account.configure(setup.config.caching(), setup.config.cache.max_bytes);
    let state = Rc::new(RefCell::new(State {
        cache: account,
        health: Rc::new(RefCell::new(table)),
        checks: checks::Checks::default(),
        config: setup.config,
        snapshot: setup.snapshot,
        registry: setup.registry,
        listening: setup.listening,
        workers_override: setup.workers_override,
        bus: setup.bus,
        config_path: setup.config_path,
        started: now,
        last_reload: None,
        reloads: (0, 0),
        access: setup.access,
    }));
    {
        let s = &mut *state.borrow_mut();
        s.checks.sync(&s.snapshot, &s.health);
    }
    let admin = match setup.admin.map(monoio::net::TcpListener::from_std) {
        Some(Ok(l)) => Some(admin::Admin::spawn(l, state.clone())),
        Some(Err(e)) => {
            error!("cannot serve the admin API: {e}");
            None
        }
        None => None,
    };
    let mut last_sweep = now;
    loop {
        monoio::time::sleep(TICK).await;
        let now = Instant::now();
        {
            let s = &mut *state.borrow_mut();
            let mut table = s.health.borrow_mut();
            while let Ok(report) = setup.reports.try_recv() {
                match report {
                    Report::Cache(r) => s.cache.report(r),
                    health => table.report(health, now),
                }
            }
            table.tick(now);
            if now >= last_sweep + CACHE_SWEEP {
                last_sweep = now;
                s.cache.sweep(crate::http::date::unix_now());
            }
            s.cache.flush(&s.bus);
        }
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Reload { source, reply } => {
                    let _ = reply.send(state.borrow_mut().reload_and_log(source));
                }
                Command::Stop => {
                    if let Some(a) = admin {
                        a.stop();
                    }
                    state.borrow_mut().checks.stop_all();
                    return;
                }
            }
        }
    }
}

impl State {
    /// Reloads, logs the result once (whoever asked for it) and keeps it for status.
    fn reload_and_log(&mut self, source: Source) -> Result<Reloaded, ReloadError> {
        let registry = matches!(source, Source::Registry(_));
        let result = self.reload(source);
        match &result {
            Ok(r) if registry => info!(
                "registry change through the admin API: generation {}: {}",
                r.generation, r.summary
            ),
            Ok(r) => info!(
                "reload: generation {} from {}: {}",
                r.generation, self.config.origin, r.summary
            ),
            Err(e) => warn!(
                "reload refused; generation {} keeps running: {e}",
                self.snapshot.generation
            ),
        }
        match &result {
            Ok(_) => self.reloads.0 += 1,
            Err(_) => self.reloads.1 += 1,
        }
        self.last_reload = Some(LastReload {
            at: SystemTime::now(),
            result: match &result {
                Ok(r) => Ok((r.generation, r.summary.clone())),
                Err(e) => Err(e.to_string()),
            },
        });
        result
    }
}

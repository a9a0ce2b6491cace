//! The control thread: everything that is not request work. It owns the running config
//! and the server-id registry, builds and publishes snapshots on reload ([`reload`]),
//! runs the active health checks ([`checks`]), and is the one place health transitions
//! are decided, logged once and broadcast ([`health`]).
//!
//! It runs its own small monoio runtime on a thread of its own, never on a worker's
//! core schedule. Workers report to it over the bus; the main thread sends it commands
//! (reload, stop) through a channel and waits for the answer.

pub mod checks;
pub mod health;
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
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often reports and commands are drained and back-offs checked.
const TICK: Duration = Duration::from_millis(20);

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
}

/// The control thread's state.
struct State {
    config: Config,
    snapshot: Arc<Snapshot>,
    registry: Registry,
    listening: Vec<(Listen, SocketAddr)>,
    workers_override: Option<usize>,
    bus: Bus,
    health: Rc<RefCell<health::Table>>,
    checks: checks::Checks,
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
    let mut state = State {
        health: Rc::new(RefCell::new(table)),
        checks: checks::Checks::default(),
        config: setup.config,
        snapshot: setup.snapshot,
        registry: setup.registry,
        listening: setup.listening,
        workers_override: setup.workers_override,
        bus: setup.bus,
    };
    state.checks.sync(&state.snapshot, &state.health);
    loop {
        monoio::time::sleep(TICK).await;
        let now = Instant::now();
        {
            let mut table = state.health.borrow_mut();
            while let Ok(report) = setup.reports.try_recv() {
                table.report(report, now);
            }
            table.tick(now);
        }
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Reload { source, reply } => {
                    let result = state.reload(source);
                    log_reload(&state, &result);
                    let _ = reply.send(result);
                }
                Command::Stop => {
                    state.checks.stop_all();
                    return;
                }
            }
        }
    }
}

/// Logs a reload's result once, whoever asked for it.
fn log_reload(state: &State, result: &Result<Reloaded, ReloadError>) {
    match result {
        Ok(r) => info!(
            "reload: generation {} from {}: {}",
            r.generation, state.config.origin, r.summary
        ),
        Err(e) => warn!(
            "reload refused; generation {} keeps running: {e}",
            state.snapshot.generation
        ),
    }
}

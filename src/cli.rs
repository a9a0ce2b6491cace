//! The command line: `run`, `check`, `demo` and `backend`, and the main thread's life
//! while the proxy runs: signals in, reloads and the graceful drain out.
//!
//! Exit codes: 0 success (including a drained stop), 1 runtime failure (or `check` on
//! a bad config, like `nginx -t`), 64 (EX_USAGE) when `run`/`demo` are given a bad
//! config or a listen address that cannot be bound, 70 (EX_SOFTWARE) when a worker
//! died.

use crate::config::Config;
use crate::server::{self, Event, Options, StartError};
use crate::signals::{self, Signal};
use crate::{backend, error, info, warn};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Exit code for a bad configuration (sysexits EX_USAGE).
const EX_CONFIG: i32 = 64;
/// Exit code when a worker died (sysexits EX_SOFTWARE): the service manager restarts us.
const EX_SOFTWARE: i32 = 70;

#[derive(Parser, Debug)]
#[command(
    name = "ringway",
    version,
    about = "HTTP/1.1 reverse proxy and load balancer, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// Worker threads (overrides `server.workers`; default one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file and print a summary (exit 1 if invalid).
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Start demo backends on the config's free loopback server addresses, then run the proxy.
    Demo {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// Worker threads (overrides `server.workers`).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run only the built-in demo origin server.
    Backend {
        /// Address to listen on, e.g. 127.0.0.1:9001.
        #[arg(long)]
        listen: SocketAddr,
        /// Name the backend reports in its responses.
        #[arg(long, default_value = "backend")]
        name: String,
    },
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Before any thread starts, so every thread inherits the blocked signals.
    let blocked = match &cli.command {
        Command::Run { .. } | Command::Demo { .. } => match signals::install() {
            Ok(b) => Some(b),
            Err(e) => {
                error!("cannot install signal handlers: {e}");
                return 1;
            }
        },
        _ => None,
    };
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: ok: {}", config.display(), c.summary());
                0
            }
            Err(e) => {
                eprintln!("ringway: {e}");
                1
            }
        },
        Command::Run {
            config: path,
            workers,
        } => match load(&path, workers) {
            Ok(c) => run(c, &path, workers, blocked),
            Err(code) => code,
        },
        Command::Demo {
            config: path,
            workers,
        } => match load(&path, workers) {
            Ok(c) => match start_demo_backends(&c) {
                Ok(()) => run(c, &path, workers, blocked),
                Err(e) => {
                    error!("cannot start demo backends: {e}");
                    1
                }
            },
            Err(code) => code,
        },
        Command::Backend { listen, name } => {
            let listener = match std::net::TcpListener::bind(listen) {
                Ok(l) => l,
                Err(e) => {
                    error!("cannot listen on {listen}: {e}");
                    return 1;
                }
            };
            // The real address: `--listen 127.0.0.1:0` gets a free port.
            let bound = listener.local_addr().unwrap_or(listen);
            info!("backend `{name}` listening on {bound}");
            match backend::spawn(vec![(listener, name)]) {
                Ok(handle) => {
                    let _ = handle.join();
                    1
                }
                Err(e) => {
                    error!("backend failed: {e}");
                    1
                }
            }
        }
    }
}

fn load(path: &std::path::Path, workers: Option<usize>) -> Result<Config, i32> {
    match Config::load(path) {
        Ok(mut c) => {
            if let Some(w) = workers {
                if w == 0 {
                    eprintln!("ringway: --workers must be at least 1");
                    return Err(EX_CONFIG);
                }
                c.server.workers = w;
            }
            Ok(c)
        }
        Err(e) => {
            eprintln!("ringway: {e}");
            Err(EX_CONFIG)
        }
    }
}

/// Runs the proxy until a signal stops it or a worker dies; returns the exit code.
fn run(
    config: Config,
    path: &Path,
    workers_override: Option<usize>,
    blocked: Option<signals::Blocked>,
) -> i32 {
    let summary = config.summary();
    let s = &config.server;
    info!(
        "max_connections {}{}",
        s.max_connections,
        if s.max_connections_derived {
            " (not set: half the open-file limit, less a reserve; ulimit -n decides)"
        } else {
            ""
        }
    );
    let options = Options {
        workers_override,
        config_path: Some(path.to_path_buf()),
    };
    let running = match server::start_with(config, options) {
        Ok(r) => r,
        Err(e @ (StartError::Listen { .. } | StartError::AccessLog { .. })) => {
            eprintln!("ringway: {e}");
            return EX_CONFIG;
        }
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    for (configured, addr, note) in running.listeners() {
        match (*note).is_empty() {
            true => info!("listening on {addr}"),
            false => info!("listening on {addr} ({configured}: {note})"),
        }
    }
    if let Some(addr) = running.admin_addr() {
        info!("admin API listening on {addr}");
    }
    info!("{summary}");
    crate::worker::log_drivers(running.drivers());
    if let Some(blocked) = blocked {
        let events = running.event_sender();
        let mut stops = 0;
        let waiter = signals::spawn_waiter(blocked, move |sig| {
            if sig.stops() {
                stops += 1;
                if stops > 1 {
                    // The main thread is busy draining; a second stop means now.
                    warn!("{}: second stop signal, exiting now", sig.name());
                    std::process::exit(0);
                }
            }
            let _ = events.send(Event::Signal(sig));
        });
        if let Err(e) = waiter {
            error!("cannot start the signal thread: {e}");
            return 1;
        }
    }
    loop {
        match running.next_event() {
            Event::Signal(Signal::Hup) => {
                // The control thread logs the result, success or not.
                let _ = running.reload_file(path.to_path_buf());
            }
            Event::Signal(Signal::Usr1) => {
                // The event log is stderr (the service manager's); the access log may be
                // a file that logrotate just moved away.
                info!("SIGUSR1: reopening the access log");
                running.reopen_logs();
            }
            Event::Signal(sig) => {
                let timeout = running.shutdown_timeout();
                info!(
                    "{}: draining: no new connections; in-flight requests get up to {timeout:?}",
                    sig.name()
                );
                let cut = running.drain();
                if cut > 0 {
                    warn!("drain timed out: {cut} connections were cut");
                } else {
                    info!("drained: every connection finished");
                }
                return 0;
            }
            Event::WorkerExited { id, panicked } => {
                let why = if panicked { "panicked" } else { "exited" };
                error!(
                    "worker {id} {why}; exiting (status {EX_SOFTWARE}) rather than serve with a hole in the SO_REUSEPORT group"
                );
                return EX_SOFTWARE;
            }
        }
    }
}

/// Binds a demo backend on every loopback server address nothing listens on yet.
fn start_demo_backends(config: &Config) -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for group in &config.upstreams {
        for (pos, server) in group.servers.iter().enumerate() {
            if !server.addr.ip().is_loopback() {
                continue;
            }
            // A successful bind means the port is free: nothing is serving it.
            if let Ok(l) = std::net::TcpListener::bind(server.addr) {
                let name = format!("{}-{}", group.name, pos + 1);
                info!("demo backend `{name}` on {}", server.addr);
                listeners.push((l, name));
            }
        }
    }
    if !listeners.is_empty() {
        backend::spawn(listeners)?;
    }
    Ok(())
}

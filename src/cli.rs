//! The command line: `run`, `check`, `demo` and `backend`.
//!
//! Exit codes: 0 success, 1 runtime failure (or `check` on a bad config, like
//! `nginx -t`), 64 (EX_USAGE) when `run`/`demo` are given a bad config.

use crate::config::Config;
use crate::{backend, error, info, server};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit code for a bad configuration (sysexits EX_USAGE).
const EX_CONFIG: i32 = 64;

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
    match Cli::parse().command {
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
        Command::Run { config, workers } => match load(&config, workers) {
            Ok(c) => run(c),
            Err(code) => code,
        },
        Command::Demo { config, workers } => match load(&config, workers) {
            Ok(c) => match start_demo_backends(&c) {
                Ok(()) => run(c),
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
            info!("backend `{name}` listening on {listen}");
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

fn run(config: Config) -> i32 {
    let summary = config.summary();
    let running = match server::start(config) {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    for addr in running.local_addrs() {
        info!("listening on {addr}");
    }
    info!("{summary}");
    crate::worker::log_drivers(running.drivers());
    let id = running.wait_for_exit();
    error!("worker {id} exited unexpectedly; shutting down");
    1
}

/// Binds a demo backend on every loopback server address nothing listens on yet.
fn start_demo_backends(config: &Config) -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for (i, server) in config.servers.iter().enumerate() {
        if !server.addr.ip().is_loopback() {
            continue;
        }
        // A successful bind means the port is free: nothing is serving it.
        if let Ok(l) = std::net::TcpListener::bind(server.addr) {
            let group = &config.upstreams[server.upstream];
            let pos = group.servers.iter().position(|&s| s == i).unwrap_or(0) + 1;
            let name = format!("{}-{pos}", group.name);
            info!("demo backend `{name}` on {}", server.addr);
            listeners.push((l, name));
        }
    }
    if !listeners.is_empty() {
        backend::spawn(listeners)?;
    }
    Ok(())
}

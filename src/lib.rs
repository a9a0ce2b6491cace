//! ringway: an HTTP/1.1 reverse proxy and load balancer, thread-per-core on io_uring.
//!
//! ```text
//! main thread: CLI → Config (validated) → bind SO_REUSEPORT listeners per worker
//!              → first Snapshot → spawn workers + control → wait for signals
//!              (SIGHUP: reload; SIGTERM/SIGINT: drain, exit 0; a dead worker: exit 70)
//! control thread: reload (config → Snapshot with stable server ids), active health
//!              checks, the one health state machine per server; never on a worker core
//! workers (one per core, pinned): accept → proxy/: head → route → (cache) → balance → pool
//!              → upstream → stream back; each request runs on one snapshot generation
//! bus: the only cross-core path: Snapshot, ServerDown, Health, Listen, Drain to every
//!      worker (one crossbeam inbox each, drained every tick); cache inserts, evictions
//!      and purges (a second inbox, also read before a miss); Reports to control
//! ```
//!
//! Modules, one noun each:
//! - [`cli`]: the command line and the main thread's life (signals, reload, drain).
//! - [`signals`]: SIGHUP, SIGTERM, SIGINT, SIGUSR1 taken by one thread, as events.
//! - [`config`]: config.toml → validated [`config::Config`] (plain data).
//! - [`snapshot`]: a config made runnable: routes, balancing tables, server ids.
//! - [`server`]: binds listeners, starts and stops workers and the control thread.
//! - [`listen`]: binding one SO_REUSEPORT socket per worker per address.
//! - [`worker`]: one pinned thread: runtime, accept loops, tick, bus updates.
//! - [`shard`]: the per-core state a worker's connections share, and its generations.
//! - [`client`]: the client stream (plain or TLS) and the facts of a connection.
//! - [`tls`]: rustls sessions on monoio sockets, listener certificates, upstream configs.
//! - [`proxy`]: one client connection, the whole request path top to bottom.
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2) from an L4 balancer.
//! - [`http`]: HTTP/1.1 heads, framing, chunked coding, rewrites and header edits, no I/O.
//! - [`body`]: streams bodies between connections by their framing.
//! - [`buf`]: the reusable per-connection read buffer and owned-buffer I/O.
//! - [`route`]: which upstream group a request goes to.
//! - [`cache`]: the response cache: entries stored once, an index per worker.
//! - [`balance`]: per-worker server picks for every policy, over per-snapshot tables.
//! - [`upstream`]: server identity, per-worker server state, pools, response heads.
//! - [`health`]: passive health on workers, the active threshold, the state machine.
//! - [`control`]: the control thread: reload, active checks, health transitions.
//! - [`bus`]: broadcast of updates to every worker, reports to the control thread.
//! - [`metrics`]: per-worker counters, copied to the control thread when scraped.
//! - [`timer`]: coarse per-worker timers for every wait on the request path.
//! - [`retry`]: the per-worker retry budget.
//! - [`limit`]: per-worker token buckets for `[[routes]] limit`.
//! - [`error`]: every request failure, its status and whether it may be retried.
//! - [`hash`]: the one FNV hash (tables, balancing keys, ring points).
//! - [`backend`]: the built-in demo origin server.
//! - [`log`]: the event log on stderr, with levels.
//! - [`access`]: the access log: per-worker line buffers, one writer thread.

pub mod access;
pub mod backend;
pub mod balance;
pub mod body;
pub mod buf;
pub mod bus;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod hash;
pub mod health;
pub mod http;
pub mod limit;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod retry;
pub mod route;
pub mod server;
pub mod shard;
pub mod signals;
pub mod snapshot;
pub mod timer;
pub mod tls;
pub mod upstream;
pub mod worker;

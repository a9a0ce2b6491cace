//! ringway: an HTTP/1.1 reverse proxy and load balancer, thread-per-core on io_uring.
//!
//! ```text
//! main thread: CLI → Config (validated) → bind SO_REUSEPORT listeners per worker → spawn → wait
//! workers (one per core, pinned): accept → proxy: parse → route → balance → pool → upstream → stream back
//! bus: the only cross-core path (server mark-downs, shutdown), one inbox per worker
//! ```
//!
//! Modules, one noun each:
//! - [`cli`]: the command line (`run`, `check`, `demo`, `backend`).
//! - [`config`]: config.toml → validated [`config::Config`].
//! - [`server`]: binds listeners, starts and stops workers.
//! - [`worker`]: one pinned thread with its monoio runtime and per-core state.
//! - [`proxy`]: one client connection, the whole hot path top to bottom.
//! - [`http`]: HTTP/1.1 heads, framing, chunked coding and rewrites, without I/O.
//! - [`body`]: streams bodies between connections by their framing.
//! - [`buf`]: the reusable per-connection read buffer and owned-buffer I/O.
//! - [`route`]: which upstream group a request goes to.
//! - [`balance`], [`pool`], [`health`]: per-worker picking, keep-alive pools, passive health.
//! - [`timer`]: coarse per-worker timers for idle connections.
//! - [`retry`]: the per-worker retry budget.
//! - [`bus`]: broadcast of updates to every worker, reports to the control thread.
//! - [`control`]: the control thread: active health checks, health transitions and their log.
//! - [`backend`]: the built-in demo origin server.
//! - [`error`]: every request failure and the status it maps to.
//! - [`log`]: stderr logging.

pub mod backend;
pub mod balance;
pub mod body;
pub mod buf;
pub mod bus;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod health;
pub mod http;
pub mod log;
pub mod pool;
pub mod proxy;
pub mod retry;
pub mod route;
pub mod server;
pub mod timer;
pub mod worker;

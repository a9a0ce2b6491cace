//! Black-box integration tests: real upstreams on 127.0.0.1:0, the proxy started
//! through `server::start`, raw-socket clients, and the real binary for the CLI.
//!
//! One binary with a module per concern, so the suite compiles and links once.

mod support;

mod admin;
mod balancing;
mod bodies;
mod cache;
mod cli;
mod edge;
mod faults;
mod forwarding;
mod health;
mod lifecycle;
mod limits;
mod logs;
mod malformed;
mod policies;
mod pooling;
mod protocol;
mod registry;
mod retries;
mod routing;
mod switchable;
mod tls;
mod upstream_errors;
mod websocket;

//! Upstream servers as a worker sees them: stable identity across reloads
//! ([`registry`]), one worker's state per server ([`local`]: load, health, idle
//! connections), keep-alive pools ([`pool`]), the connection's stream, plain or TLS
//! ([`stream`]), and reading a response head ([`head`]), shared by the proxy and the
//! active health checks.

pub mod head;
pub mod local;
pub mod pool;
pub mod registry;
pub mod stream;

pub use local::ServerLocal;
pub use registry::{Registry, ServerId};

//! Per-worker keep-alive pools of upstream connections, one stack per server.
//!
//! The most recently used idle connection is reused first (it is the least likely to
//! have been closed by the upstream); stale ones are dropped on take and by a sweep.

use crate::buf::Buf;
use crate::config::ServerId;
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An open connection to an upstream server with its read buffer.
#[derive(Debug)]
pub struct UpConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the upstream and not yet relayed.
    pub buf: Buf,
    /// Which server it is connected to.
    pub server: ServerId,
    /// True when it came from the pool (it may have been closed meanwhile).
    pub reused: bool,
}

/// Idle connections of one worker, indexed by `ServerId`.
#[derive(Debug)]
pub struct Pool {
    idle: RefCell<Vec<VecDeque<(UpConn, Instant)>>>,
}

impl Pool {
    /// An empty pool for `servers` servers.
    pub fn new(servers: usize) -> Pool {
        Pool {
            idle: RefCell::new((0..servers).map(|_| VecDeque::new()).collect()),
        }
    }

    /// Takes the most recently used idle connection to `server` younger than `max_idle`.
    pub fn take(&self, server: ServerId, now: Instant, max_idle: Duration) -> Option<UpConn> {
        let mut idle = self.idle.borrow_mut();
        let stack = &mut idle[server];
        let (mut conn, since) = stack.pop_back()?;
        if now.saturating_duration_since(since) > max_idle {
            // Everything below the newest is older still.
            stack.clear();
            return None;
        }
        conn.reused = true;
        Some(conn)
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub fn put(&self, conn: UpConn, now: Instant, max_per_server: usize) {
        let mut idle = self.idle.borrow_mut();
        let stack = &mut idle[conn.server];
        if stack.len() >= max_per_server {
            stack.pop_front();
        }
        stack.push_back((conn, now));
    }

    /// Closes connections idle for longer than `max_idle(server)`.
    pub fn sweep(&self, now: Instant, max_idle: impl Fn(ServerId) -> Duration) {
        let mut idle = self.idle.borrow_mut();
        for (server, stack) in idle.iter_mut().enumerate() {
            let limit = max_idle(server);
            while stack
                .front()
                .is_some_and(|(_, since)| now.saturating_duration_since(*since) > limit)
            {
                stack.pop_front();
            }
        }
    }

    /// Number of idle connections to `server`.
    pub fn idle_count(&self, server: ServerId) -> usize {
        self.idle.borrow()[server].len()
    }
}

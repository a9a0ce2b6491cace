//! Keep-alive pools of upstream connections: one stack per server per worker.
//!
//! The most recently used idle connection is reused first (it is the least likely to
//! have been closed by the upstream); stale ones are dropped on take and by the
//! worker's sweep. A server removed by a reload has its stack cleared at once.

use super::stream::UpStream;
use crate::buf::Buf;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An open connection to an upstream server with its read buffer.
#[derive(Debug)]
pub struct UpConn {
    /// The socket (plain or TLS).
    pub stream: UpStream,
    /// Bytes read from the upstream and not yet relayed.
    pub buf: Buf,
    /// True when it came from the pool (it may have been closed meanwhile).
    pub reused: bool,
}

/// One server's idle connections on one worker, oldest first.
#[derive(Debug, Default)]
pub struct Idle {
    stack: RefCell<VecDeque<(UpConn, Instant)>>,
}

impl Idle {
    /// Takes the most recently used idle connection younger than `max_idle`.
    pub fn take(&self, now: Instant, max_idle: Duration) -> Option<UpConn> {
        let mut stack = self.stack.borrow_mut();
        let (mut conn, since) = stack.pop_back()?;
        if now.saturating_duration_since(since) > max_idle {
            // Everything below the newest is older still.
            stack.clear();
            return None;
        }
        conn.reused = true;
        Some(conn)
    }

    /// Keeps a connection whose last exchange completed cleanly, dropping the oldest
    /// beyond `max` idle connections.
    pub fn put(&self, conn: UpConn, now: Instant, max: usize) {
        let mut stack = self.stack.borrow_mut();
        if stack.len() >= max {
            stack.pop_front();
        }
        stack.push_back((conn, now));
    }

    /// Closes connections idle for longer than `max_idle`.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        let mut stack = self.stack.borrow_mut();
        while stack
            .front()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) > max_idle)
        {
            stack.pop_front();
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.stack.borrow_mut().clear();
    }

    /// Number of idle connections.
    pub fn len(&self) -> usize {
        self.stack.borrow().len()
    }

    /// True when no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.stack.borrow().is_empty()
    }
}

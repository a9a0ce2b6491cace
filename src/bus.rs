//! The only cross-core path: a broadcast of `Update`s to every worker.
//!
//! Each worker owns one crossbeam-channel receiver and drains it from its own
//! runtime (a periodic tick), so the hot path takes no lock and touches no atomic
//! another core writes to. Any thread may broadcast.

use crate::config::ServerId;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::time::Instant;

/// A change every worker must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The server failed and must not be picked until `until`.
    ServerDown {
        /// Which server.
        server: ServerId,
        /// When it may be tried again.
        until: Instant,
    },
    /// Stop accepting, finish, and exit the worker.
    Shutdown,
}

/// Sending side: one sender per worker. Cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Bus {
    senders: Vec<Sender<Update>>,
}

/// One worker's receiving side.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Update>,
}

impl Bus {
    /// A bus with `workers` inboxes, returned in worker order.
    pub fn new(workers: usize) -> (Bus, Vec<Inbox>) {
        let (senders, inboxes) = (0..workers)
            .map(|_| {
                let (tx, rx) = unbounded();
                (tx, Inbox { rx })
            })
            .unzip();
        (Bus { senders }, inboxes)
    }

    /// Delivers `update` to every worker (including the sender's own).
    pub fn broadcast(&self, update: Update) {
        for tx in &self.senders {
            // A worker that has exited has dropped its inbox; nothing to deliver.
            let _ = tx.send(update.clone());
        }
    }
}

impl Inbox {
    /// Takes the next pending update without blocking.
    pub fn try_next(&self) -> Option<Update> {
        // Empty and disconnected both mean: nothing to apply now.
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_receives_every_update_in_order() {
        let (bus, inboxes) = Bus::new(3);
        let until = Instant::now();
        let other = bus.clone();
        std::thread::spawn(move || other.broadcast(Update::ServerDown { server: 1, until }))
            .join()
            .unwrap();
        bus.broadcast(Update::Shutdown);
        for inbox in &inboxes {
            assert_eq!(
                inbox.try_next(),
                Some(Update::ServerDown { server: 1, until })
            );
            assert_eq!(inbox.try_next(), Some(Update::Shutdown));
            assert_eq!(inbox.try_next(), None);
        }
    }
}

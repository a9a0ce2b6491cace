//! The only cross-core paths: a broadcast of `Update`s to every worker, and `Report`s
//! from workers to the control thread.
//!
//! Each worker owns one crossbeam-channel receiver and drains it from its own
//! runtime (a periodic tick), so the hot path takes no lock and touches no atomic
//! another core writes to. Any thread may broadcast.

use crate::config::ServerId;
use crate::health::MarkDown;
use crossbeam_channel::{unbounded, Receiver, Sender};

/// A change every worker must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Passive checks marked the server down: skip it until `down.until`.
    ServerDown {
        /// Which server.
        server: ServerId,
        /// Until when, and at which back-off step.
        down: MarkDown,
    },
    /// The active checker's verdict changed.
    Health {
        /// Which server.
        server: ServerId,
        /// Whether it passes its checks now.
        up: bool,
    },
    /// Stop accepting, finish, and exit the worker.
    Shutdown,
}

/// What a worker tells the control thread, which logs each transition once and
/// broadcasts what every worker must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// This worker marked the server down (and applied it already).
    Down {
        /// Which server.
        server: ServerId,
        /// Until when, and at which step.
        down: MarkDown,
        /// The failure that tipped it.
        reason: &'static str,
    },
    /// A server on probation answered: it is back.
    Recovered {
        /// Which server.
        server: ServerId,
    },
}

/// Sending side: one sender per worker plus the control thread's. Cheap to clone,
/// usable from any thread.
#[derive(Debug, Clone)]
pub struct Bus {
    senders: Vec<Sender<Update>>,
    control: Sender<Report>,
}

/// One worker's receiving side.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Update>,
}

impl Bus {
    /// A bus with `workers` inboxes, returned in worker order, and the control
    /// thread's receiver of reports.
    pub fn new(workers: usize) -> (Bus, Vec<Inbox>, Receiver<Report>) {
        let (senders, inboxes) = (0..workers)
            .map(|_| {
                let (tx, rx) = unbounded();
                (tx, Inbox { rx })
            })
            .unzip();
        let (control, reports) = unbounded();
        (Bus { senders, control }, inboxes, reports)
    }

    /// Tells the control thread about a transition this worker saw.
    pub fn report(&self, report: Report) {
        // The control thread lives as long as the proxy; if it is gone we are stopping.
        let _ = self.control.send(report);
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
        let (bus, inboxes, _reports) = Bus::new(3);
        let down = MarkDown {
            until: std::time::Instant::now(),
            step: 0,
        };
        let other = bus.clone();
        std::thread::spawn(move || other.broadcast(Update::ServerDown { server: 1, down }))
            .join()
            .unwrap();
        bus.broadcast(Update::Shutdown);
        for inbox in &inboxes {
            assert_eq!(
                inbox.try_next(),
                Some(Update::ServerDown { server: 1, down })
            );
            assert_eq!(inbox.try_next(), Some(Update::Shutdown));
            assert_eq!(inbox.try_next(), None);
        }
    }
}

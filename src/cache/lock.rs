//! Request coalescing on one worker (nginx's `proxy_cache_lock`): while a request
//! fetches a key, others for the same key wait for that fetch instead of going
//! upstream too, then look again.
//!
//! Per worker, `!Send`, no atomics: a lock is an `Rc` with the wakers of its waiters.
//! Other workers coalesce their own requests; at most one fetch per key per core.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One fetch in progress.
#[derive(Debug, Default)]
struct Lock {
    done: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Lock {
    fn release(&self) {
        if !self.done.replace(true) {
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }
}

/// A worker's fetches in progress, by key hash.
#[derive(Debug, Default)]
pub struct Locks {
    held: RefCell<HashMap<u64, Rc<Lock>>>,
}

/// What a request for a key does about other requests for it.
#[derive(Debug)]
pub enum Turn {
    /// Nobody is fetching it: this request does, holding the guard until it is done.
    Fetch(Guard),
    /// Another request is fetching it: wait for that, then look again.
    Wait(Waiting),
}

impl Locks {
    /// Takes the lock for `hash`, or joins the waiters of the request holding it.
    ///
    /// Keys sharing a hash share a lock: rare (the hash is 64 bits), and harmless (a
    /// waiter looks again and fetches for itself).
    pub fn enter(self: &Rc<Self>, hash: u64) -> Turn {
        let mut held = self.held.borrow_mut();
        if let Some(lock) = held.get(&hash) {
            return Turn::Wait(Waiting { lock: lock.clone() });
        }
        let lock = Rc::new(Lock::default());
        held.insert(hash, lock.clone());
        Turn::Fetch(Guard {
            locks: self.clone(),
            hash,
            lock,
        })
    }

    /// Fetches in progress.
    pub fn len(&self) -> usize {
        self.held.borrow().len()
    }

    /// True when nothing is being fetched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The right to fetch a key; waiters are released when it is released or dropped
/// (whether the fetch stored anything or not).
#[derive(Debug)]
pub struct Guard {
    locks: Rc<Locks>,
    hash: u64,
    lock: Rc<Lock>,
}

impl Guard {
    /// Lets the waiters look again (the entry is stored, or will not be).
    pub fn release(self) {}
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut held = self.locks.held.borrow_mut();
        if held
            .get(&self.hash)
            .is_some_and(|l| Rc::ptr_eq(l, &self.lock))
        {
            held.remove(&self.hash);
        }
        drop(held);
        self.lock.release();
    }
}

/// Waits until the fetch it joined is over.
#[derive(Debug)]
pub struct Waiting {
    lock: Rc<Lock>,
}

impl Future for Waiting {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.lock.done.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.lock.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(timer_enabled = true)]
    async fn waiters_resume_when_the_fetch_ends_and_the_key_is_free_again() {
        let locks = Rc::new(Locks::default());
        let Turn::Fetch(guard) = locks.enter(7) else {
            panic!("the first request fetches");
        };
        let Turn::Wait(w1) = locks.enter(7) else {
            panic!("the second waits");
        };
        let Turn::Wait(w2) = locks.enter(7) else {
            panic!("the third waits");
        };
        assert!(matches!(locks.enter(8), Turn::Fetch(_)), "another key");
        let resumed = Rc::new(Cell::new(0));
        for w in [w1, w2] {
            let r = resumed.clone();
            monoio::spawn(async move {
                w.await;
                r.set(r.get() + 1);
            });
        }
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(resumed.get(), 0);
        guard.release();
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(resumed.get(), 2);
        assert!(locks.is_empty());
        assert!(matches!(locks.enter(7), Turn::Fetch(_)));
    }
}

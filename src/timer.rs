//! Coarse per-worker timers for the waits on the request path: keep-alive, request
//! head, response head, response write.
//!
//! monoio's `Sleep` is 640 bytes, which would be most of what an idle keep-alive
//! connection costs, and each one is a timer-wheel insert and remove. These waits need
//! no precision (their timeouts are seconds), so they register `(deadline, waker)` in
//! this worker-owned slab instead, and the worker's tick (every [`TICK`]) wakes the
//! expired ones. Owned by one worker; nothing here is shared between threads.
//!
//! Waits for a connection's *next* request are marked idle: a graceful drain ends them
//! all at once ([`Timers::close_idle`]) while waits inside a request run their course.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often a worker wakes expired waits, drains its inbox and refreshes its coarse
/// clock: the grain of every timeout on the request path.
pub const TICK: Duration = Duration::from_millis(50);

/// Waits per storage chunk. Fixed chunks instead of one growing `Vec`: growth by
/// doubling leaves the old copies resident, which showed as bytes per idle connection.
const CHUNK: usize = 512;

/// A registered wait: its deadline, its waker, and for a wait for a connection's next
/// request (idle), since when it waits.
type Slot = Option<(Instant, Waker, Option<Instant>)>;

/// One worker's coarse timers.
#[derive(Debug, Default)]
pub struct Timers {
    chunks: RefCell<Vec<Box<[Slot; CHUNK]>>>,
    free: RefCell<Vec<u32>>,
    now: Cell<Option<Instant>>,
    /// Set by [`Timers::close_idle`]: every idle wait counts as expired.
    closing: Cell<bool>,
}

impl Timers {
    /// Records the worker's clock and wakes every wait whose deadline passed.
    pub fn tick(&self, now: Instant) {
        self.now.set(Some(now));
        for chunk in self.chunks.borrow().iter() {
            for (at, waker, _) in chunk.iter().flatten() {
                if *at <= now {
                    waker.wake_by_ref();
                }
            }
        }
    }

    fn expired(&self, at: Instant, idle: bool) -> bool {
        (idle && self.closing.get()) || self.now.get().is_some_and(|now| now >= at)
    }

    /// Ends every idle wait, now and from now on: a draining worker closes the
    /// connections that wait for a next request. Other waits are woken too (they
    /// re-register: a spurious wake costs one poll).
    pub fn close_idle(&self) {
        self.closing.set(true);
        for chunk in self.chunks.borrow().iter() {
            for (_, waker, _) in chunk.iter().flatten() {
                waker.wake_by_ref();
            }
        }
    }

    /// Ends the idle wait that has waited longest (the connection idle longest), as if
    /// it timed out; false when none waits. For a worker at its connection limit: the
    /// oldest idle connection makes room.
    pub fn end_oldest_idle(&self) -> bool {
        let Some(now) = self.now.get() else {
            return false;
        };
        let mut chunks = self.chunks.borrow_mut();
        let oldest = chunks
            .iter_mut()
            .flat_map(|c| c.iter_mut())
            .flatten()
            .filter(|(at, _, since)| since.is_some() && *at > now)
            // Times are the worker's coarse clock: within one tick, the earlier deadline.
            .min_by_key(|(at, _, since)| (*since, *at));
        match oldest {
            Some((at, waker, _)) => {
                // The wait reads its deadline back from the slot when woken.
                *at = now;
                waker.wake_by_ref();
                true
            }
            None => false,
        }
    }

    /// The deadline registered in `slot` (which `end_oldest_idle` may have moved up).
    fn deadline(&self, slot: u32) -> Option<Instant> {
        let i = slot as usize;
        self.chunks.borrow()[i / CHUNK][i % CHUNK]
            .as_ref()
            .map(|(at, _, _)| *at)
    }

    fn register(&self, slot: &mut u32, at: Instant, idle: bool, waker: &Waker) {
        let mut chunks = self.chunks.borrow_mut();
        match *slot {
            i if i != NO_SLOT => {
                let i = i as usize;
                if let Some((_, w, _)) = &mut chunks[i / CHUNK][i % CHUNK] {
                    if !w.will_wake(waker) {
                        w.clone_from(waker);
                    }
                }
            }
            _ => {
                let mut free = self.free.borrow_mut();
                if free.is_empty() {
                    let base = (chunks.len() * CHUNK) as u32;
                    chunks.push(Box::new([const { None }; CHUNK]));
                    // Lowest index on top, so the first chunks fill first.
                    free.extend((base..base + CHUNK as u32).rev());
                }
                let i = free.pop().expect("a free slot was just added");
                let since = idle.then(|| self.now.get().unwrap_or_else(Instant::now));
                chunks[i as usize / CHUNK][i as usize % CHUNK] = Some((at, waker.clone(), since));
                *slot = i;
            }
        }
    }

    fn unregister(&self, slot: u32) {
        let i = slot as usize;
        self.chunks.borrow_mut()[i / CHUNK][i % CHUNK] = None;
        self.free.borrow_mut().push(slot);
    }

    /// Runs `fut` until it finishes (`Some`) or `after` from the last tick passes
    /// (`None`, `fut` dropped). Before the first tick it counts from now.
    pub fn timeout<F: Future>(&self, after: std::time::Duration, fut: F) -> Timeout<'_, F> {
        const FOREVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
        let now = self.now.get().unwrap_or_else(Instant::now);
        self.timeout_at(now + after.min(FOREVER), fut)
    }

    /// Runs `fut` until it finishes (`Some`) or `at` passes (`None`, `fut` dropped).
    pub fn timeout_at<F: Future>(&self, at: Instant, fut: F) -> Timeout<'_, F> {
        Timeout {
            fut,
            at,
            timers: self,
            slot: NO_SLOT,
            idle: false,
        }
    }

    /// As [`Timers::timeout_at`], for a wait between requests: it also ends (`None`)
    /// once [`Timers::close_idle`] was called.
    pub fn idle_until<F: Future>(&self, at: Instant, fut: F) -> Timeout<'_, F> {
        Timeout {
            fut,
            at,
            timers: self,
            slot: NO_SLOT,
            idle: true,
        }
    }
}

/// `Timeout::slot` when the wait is not registered. A sentinel instead of an `Option`:
/// with the `idle` flag this keeps the future the size it had without it.
const NO_SLOT: u32 = u32::MAX;

/// The future of [`Timers::timeout_at`] and [`Timers::idle_until`].
pub struct Timeout<'a, F> {
    fut: F,
    at: Instant,
    timers: &'a Timers,
    slot: u32,
    idle: bool,
}

impl<F: Future> Future for Timeout<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is never moved out of the pinned struct (structural pinning);
        // the other fields are plain data that may move.
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(out) = fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.slot != NO_SLOT {
            if let Some(at) = this.timers.deadline(this.slot) {
                this.at = this.at.min(at);
            }
        }
        if this.timers.expired(this.at, this.idle) {
            return Poll::Ready(None);
        }
        this.timers
            .register(&mut this.slot, this.at, this.idle, cx.waker());
        Poll::Pending
    }
}

impl<F> Drop for Timeout<'_, F> {
    fn drop(&mut self) {
        let slot = std::mem::replace(&mut self.slot, NO_SLOT);
        if slot != NO_SLOT {
            self.timers.unregister(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::time::Duration;

    #[monoio::test(timer_enabled = true)]
    async fn a_wait_ends_at_the_first_tick_past_its_deadline() {
        let timers = std::rc::Rc::new(Timers::default());
        let t0 = Instant::now();
        let t = timers.clone();
        let ticker = monoio::spawn(async move {
            for i in 1..=4u64 {
                monoio::time::sleep(Duration::from_millis(5)).await;
                t.tick(t0 + Duration::from_secs(i));
            }
        });
        let never = std::future::pending::<()>();
        assert_eq!(
            timers
                .timeout_at(t0 + Duration::from_millis(2500), never)
                .await,
            None
        );
        let live: usize = timers
            .chunks
            .borrow()
            .iter()
            .map(|c| c.iter().flatten().count())
            .sum();
        assert_eq!(live, 0, "unregistered");
        assert_eq!(
            timers.timeout_at(t0, async { 7 }).await,
            Some(7),
            "ready wins"
        );
        ticker.await;
    }

    #[monoio::test(timer_enabled = true)]
    async fn the_oldest_idle_wait_ends_first_and_busy_waits_are_left_alone() {
        let timers = Rc::new(Timers::default());
        let now = Instant::now();
        timers.tick(now);
        let ended = Rc::new(RefCell::new(Vec::new()));
        for (name, secs, idle) in [("busy", 1, false), ("newer", 30, true), ("older", 20, true)] {
            let (t, e) = (timers.clone(), ended.clone());
            monoio::spawn(async move {
                let at = now + Duration::from_secs(secs);
                let wait = std::future::pending::<()>();
                let r = if idle {
                    t.idle_until(at, wait).await
                } else {
                    t.timeout_at(at, wait).await
                };
                assert!(r.is_none());
                e.borrow_mut().push(name);
            });
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
        assert!(timers.end_oldest_idle());
        monoio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(*ended.borrow(), ["older"]);
        assert!(timers.end_oldest_idle());
        monoio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(*ended.borrow(), ["older", "newer"]);
        assert!(!timers.end_oldest_idle(), "the busy wait is not idle");
    }

    #[monoio::test(timer_enabled = true)]
    async fn closing_ends_idle_waits_only() {
        let timers = std::rc::Rc::new(Timers::default());
        let far = Instant::now() + Duration::from_secs(3600);
        let t = timers.clone();
        let closer = monoio::spawn(async move {
            monoio::time::sleep(Duration::from_millis(5)).await;
            t.close_idle();
        });
        let idle = timers.idle_until(far, std::future::pending::<()>());
        assert_eq!(idle.await, None, "an idle wait ends at close_idle");
        closer.await;
        let busy = timers.timeout_at(far, async { 1 });
        assert_eq!(busy.await, Some(1), "other waits are unaffected");
        assert_eq!(
            timers.idle_until(far, std::future::pending::<()>()).await,
            None,
            "and later idle waits end at once"
        );
    }
}

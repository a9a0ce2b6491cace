//! Coarse per-worker timers for the waits on the request path: keep-alive, request
//! head, response head, response write.
//!
//! monoio's `Sleep` is 640 bytes, which would be most of what an idle keep-alive
//! connection costs, and each one is a timer-wheel insert and remove. These waits need
//! no precision (their timeouts are seconds), so they register `(deadline, waker)` in
//! this worker-owned slab instead, and the worker's tick (every 50 ms) wakes the
//! expired ones. Owned by one worker; nothing here is shared between threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Waits per storage chunk. Fixed chunks instead of one growing `Vec`: growth by
/// doubling leaves the old copies resident, which showed as bytes per idle connection.
const CHUNK: usize = 512;

type Slot = Option<(Instant, Waker)>;

/// One worker's coarse timers.
#[derive(Debug, Default)]
pub struct Timers {
    chunks: RefCell<Vec<Box<[Slot; CHUNK]>>>,
    free: RefCell<Vec<u32>>,
    now: Cell<Option<Instant>>,
}

impl Timers {
    /// Records the worker's clock and wakes every wait whose deadline passed.
    pub fn tick(&self, now: Instant) {
        self.now.set(Some(now));
        for chunk in self.chunks.borrow().iter() {
            for (at, waker) in chunk.iter().flatten() {
                if *at <= now {
                    waker.wake_by_ref();
                }
            }
        }
    }

    fn expired(&self, at: Instant) -> bool {
        self.now.get().is_some_and(|now| now >= at)
    }

    fn register(&self, slot: &mut Option<u32>, at: Instant, waker: &Waker) {
        let mut chunks = self.chunks.borrow_mut();
        match *slot {
            Some(i) => {
                let i = i as usize;
                if let Some((_, w)) = &mut chunks[i / CHUNK][i % CHUNK] {
                    if !w.will_wake(waker) {
                        w.clone_from(waker);
                    }
                }
            }
            None => {
                let mut free = self.free.borrow_mut();
                if free.is_empty() {
                    let base = (chunks.len() * CHUNK) as u32;
                    chunks.push(Box::new([const { None }; CHUNK]));
                    // Lowest index on top, so the first chunks fill first.
                    free.extend((base..base + CHUNK as u32).rev());
                }
                let i = free.pop().expect("a free slot was just added");
                chunks[i as usize / CHUNK][i as usize % CHUNK] = Some((at, waker.clone()));
                *slot = Some(i);
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
            slot: None,
        }
    }
}

/// The future of [`Timers::timeout_at`].
pub struct Timeout<'a, F> {
    fut: F,
    at: Instant,
    timers: &'a Timers,
    slot: Option<u32>,
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
        if this.timers.expired(this.at) {
            return Poll::Ready(None);
        }
        this.timers.register(&mut this.slot, this.at, cx.waker());
        Poll::Pending
    }
}

impl<F> Drop for Timeout<'_, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.timers.unregister(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}

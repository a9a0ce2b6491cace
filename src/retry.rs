//! The retry budget: retries may add at most a fraction of a group's requests, over a
//! sliding window, so retries cannot multiply the load on a failing upstream.
//!
//! One budget per upstream group per worker (`Cell`s, no sharing), kept across reloads
//! by group name; a small floor lets a quiet worker still retry a few requests.

use std::cell::Cell;
use std::time::Instant;

/// Length of the sliding window, in one-second buckets.
const BUCKETS: usize = 10;
/// Retries always allowed per window, so a quiet worker can still retry.
const MIN_RETRIES: f64 = 3.0;

/// Requests and retries of one group on one worker over the last `BUCKETS` seconds.
#[derive(Debug)]
pub struct Budget {
    ratio: Cell<f64>,
    origin: Instant,
    /// (second, requests, retries) per bucket; a bucket from an older second is stale.
    buckets: [Cell<(u64, u32, u32)>; BUCKETS],
}

impl Budget {
    /// A budget allowing retries up to `ratio` of requests (plus a small floor).
    pub fn new(ratio: f64, origin: Instant) -> Budget {
        Budget {
            ratio: Cell::new(ratio),
            origin,
            buckets: std::array::from_fn(|_| Cell::new((0, 0, 0))),
        }
    }

    fn bucket(&self, now: Instant) -> (&Cell<(u64, u32, u32)>, u64) {
        let sec = now.saturating_duration_since(self.origin).as_secs();
        let b = &self.buckets[(sec % BUCKETS as u64) as usize];
        if b.get().0 != sec {
            b.set((sec, 0, 0));
        }
        (b, sec)
    }

    /// A reload changed `retry_budget`; the window's counts carry over.
    pub fn set_ratio(&self, ratio: f64) {
        self.ratio.set(ratio);
    }

    /// Counts a request.
    pub fn request(&self, now: Instant) {
        let (b, _) = self.bucket(now);
        let (s, req, ret) = b.get();
        b.set((s, req.saturating_add(1), ret));
    }

    /// True when one more retry fits the budget now.
    pub fn allows(&self, now: Instant) -> bool {
        let (_, sec) = self.bucket(now);
        let (mut req, mut ret) = (0u64, 0u64);
        for b in &self.buckets {
            let (s, q, r) = b.get();
            if sec.saturating_sub(s) < BUCKETS as u64 {
                req += u64::from(q);
                ret += u64::from(r);
            }
        }
        (ret as f64) < self.ratio.get() * req as f64 + MIN_RETRIES
    }

    /// Spends one retry if the budget allows it.
    pub fn try_spend(&self, now: Instant) -> bool {
        if !self.allows(now) {
            return false;
        }
        let (b, _) = self.bucket(now);
        let (s, req, ret) = b.get();
        b.set((s, req, ret.saturating_add(1)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_capped_at_the_ratio_plus_a_floor() {
        let t0 = Instant::now();
        let b = Budget::new(0.2, t0);
        for _ in 0..100 {
            b.request(t0);
        }
        let spent = (0..100).filter(|_| b.try_spend(t0)).count();
        assert_eq!(spent, 23, "20% of 100 plus the floor of 3");
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let b = Budget::new(0.2, t0);
        for _ in 0..10 {
            b.request(t0);
        }
        while b.try_spend(t0) {}
        assert!(!b.allows(t0 + Duration::from_secs(5)));
        assert!(
            b.allows(t0 + Duration::from_secs(11)),
            "old retries fell out"
        );
    }
}

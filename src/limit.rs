//! Rate limiting: a token bucket per key per route, on each worker (the route's rate
//! and burst split evenly over the workers, as SO_REUSEPORT spreads clients evenly),
//! so taking a token touches no other core. Keys are hashed (no allocation per request);
//! the number of keys a route tracks per worker is bounded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// Most keys one route tracks on one worker. A full bucket carries no information (a
/// new key starts full), so those go first; beyond that the least recently seen key is
/// forgotten (it starts over with a full bucket).
pub const MAX_KEYS: usize = 65_536;

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One route's buckets on one worker.
#[derive(Debug)]
pub struct Limiter {
    /// Tokens per second, this worker's share.
    rate: f64,
    /// Most tokens a bucket holds, this worker's share (at least 1).
    burst: f64,
    buckets: RefCell<HashMap<u64, Bucket, crate::hash::FnvBuild>>,
    max_keys: usize,
}

impl Limiter {
    /// A limiter for `rate` requests per second with `burst`, shared over `workers`.
    pub fn new(rate: f64, burst: u32, workers: usize) -> Limiter {
        let workers = workers.max(1) as f64;
        Limiter {
            rate: rate / workers,
            burst: (f64::from(burst) / workers).ceil().max(1.0),
            buckets: RefCell::new(HashMap::default()),
            max_keys: MAX_KEYS,
        }
    }

    /// Takes a token for `key` at `now`; `Err(seconds)` when there is none, with how
    /// long until there will be one (for `Retry-After`, at least 1).
    pub fn take(&self, key: u64, now: Instant) -> Result<(), u32> {
        let mut map = self.buckets.borrow_mut();
        if map.len() >= self.max_keys && !map.contains_key(&key) {
            self.evict(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / self.rate).ceil();
        Err(if wait.is_finite() {
            wait.clamp(1.0, 86_400.0) as u32
        } else {
            86_400
        })
    }

    /// Makes room for a new key: buckets that refilled go, else the least recently seen.
    fn evict(&self, map: &mut HashMap<u64, Bucket, crate::hash::FnvBuild>, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
        if map.len() >= self.max_keys {
            if let Some(k) = map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.buckets.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = Limiter::new(10.0, 5, 1);
        let t = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.take(1, t), Ok(()));
        }
        assert_eq!(l.take(1, t), Err(1));
        assert_eq!(l.take(2, t), Ok(()), "another key has its own bucket");
        // 10/s: one token per 100 ms.
        assert_eq!(l.take(1, t + Duration::from_millis(100)), Ok(()));
        assert!(l.take(1, t + Duration::from_millis(150)).is_err());
        assert_eq!(l.take(1, t + Duration::from_secs(10)), Ok(()), "refilled");
    }

    #[test]
    fn the_rate_and_burst_split_over_workers() {
        let l = Limiter::new(100.0, 10, 2);
        let t = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.take(7, t), Ok(()));
        }
        assert!(l.take(7, t).is_err(), "half the burst on each of 2 workers");
        let slow = Limiter::new(1.0 / 60.0, 1, 1);
        assert_eq!(slow.take(1, t), Ok(()));
        assert_eq!(slow.take(1, t), Err(60), "Retry-After says a minute");
    }

    #[test]
    fn keys_stay_bounded() {
        let mut l = Limiter::new(1.0, 1, 1);
        l.max_keys = 100;
        let t = Instant::now();
        for k in 0..1000u64 {
            let _ = l.take(k, t + Duration::from_millis(k));
        }
        assert!(l.keys() <= 100, "{}", l.keys());
    }
}

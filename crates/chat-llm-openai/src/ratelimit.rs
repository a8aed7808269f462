//! A token bucket per asking user, so one user cannot spend the endpoint's
//! quota for everybody.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Token buckets keyed by user name, at most `tracked` of them.
#[derive(Debug)]
pub(crate) struct UserRateLimiter {
    burst: f64,
    per_sec: f64,
    tracked: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, burst: f64, per_sec: f64) {
        let secs = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * per_sec).min(burst);
        self.at = now;
    }
}

impl UserRateLimiter {
    /// `burst` requests at once, `rate` more per `interval`.
    pub(crate) fn new(burst: u32, rate: u32, interval: Duration, tracked: usize) -> Self {
        UserRateLimiter {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(rate) / interval.as_secs_f64().max(1e-9),
            tracked: tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `user`'s bucket; false when it is empty.
    pub(crate) fn check(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(user) && buckets.len() >= self.tracked {
            // Drop the buckets that have refilled: forgetting them changes
            // nothing. If every bucket is in use, forget them all rather
            // than grow without bound.
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets.retain(|_, b| {
                b.refill(now, burst, per_sec);
                b.tokens < burst
            });
            if buckets.len() >= self.tracked {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.refill(now, self.burst, self.per_sec);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_per_user() {
        let rl = UserRateLimiter::new(2, 1, Duration::from_secs(10), 100);
        assert!(rl.check("alice"));
        assert!(rl.check("alice"));
        assert!(!rl.check("alice"));
        assert!(rl.check("bob"), "users have their own buckets");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(rl.check("alice"));
        assert!(!rl.check("alice"));
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_users_are_bounded() {
        let rl = UserRateLimiter::new(1, 1, Duration::from_secs(1), 10);
        for i in 0..1000 {
            assert!(rl.check(&format!("user{i}")));
        }
        assert!(rl.buckets.lock().unwrap().len() <= 10);
    }
}

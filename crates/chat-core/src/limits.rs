//! Bounds as named settings ([`Limits`]), the per-user token-bucket rate
//! limiter, and connection admission with a short, bounded wait queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{EngineError, ErrorCode};

/// Every bound of the engine, with defaults fit for a single node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest client frame, in bytes. Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Largest message body, in bytes. Default 4 KiB.
    pub max_message_bytes: usize,
    /// Most frames queued to one client. Default 1024.
    pub max_queue_frames: usize,
    /// Most bytes queued to one client. Default 1 MiB.
    pub max_queue_bytes: usize,
    /// Token bucket: messages a user may send in a burst. Default 20.
    pub rate_burst: u32,
    /// Token bucket: messages a user may send per `rate_interval`. Default 10.
    pub rate_messages: u32,
    /// Token bucket refill interval. Default 1 s.
    pub rate_interval: Duration,
    /// Concurrent sessions admitted. Default 10,000.
    pub max_sessions: usize,
    /// Connections allowed to wait for a session slot. Default 256.
    pub admission_queue: usize,
    /// How long a connection waits for a slot before `server_busy`.
    /// Default 5 s.
    pub admission_wait: Duration,
    /// Bot replies running at once. Default 64.
    pub bot_concurrency: usize,
    /// Longest a bot reply may take before a fallback. Default 60 s.
    pub bot_timeout: Duration,
    /// Recent messages given to a bot as context. Default 20.
    pub bot_context: u32,
    /// Largest history page. Default 200.
    pub history_page_max: u32,
    /// Most rooms in a `rooms` listing. Default 500.
    pub rooms_listed_max: u32,
    /// Out-of-order stored events held per room before a gap is filled from
    /// the store at once. Default 1024.
    pub reorder_buffer: usize,
    /// How long a fan-out gap may stay open before it is filled from the
    /// store. Default 200 ms.
    pub gap_timeout: Duration,
    /// Password hashes computed at once (each takes `argon2_memory_kib`).
    /// Default 4.
    pub hash_concurrency: usize,
    /// Password hashes waiting for a hashing thread; beyond it, logins get
    /// `server_busy`. Default 256.
    pub hash_queue: usize,
    /// Session token lifetime. Default 7 days.
    pub token_ttl: Duration,
    /// argon2id memory cost in KiB. Default 19,456 (OWASP's minimum).
    pub argon2_memory_kib: u32,
    /// argon2id iterations. Default 2.
    pub argon2_iterations: u32,
    /// Rooms one session may subscribe to. Default 1,000.
    pub max_subscriptions: usize,
    /// Longest stored bot reply, in bytes; longer replies are cut. Default
    /// 16 KiB.
    pub max_bot_reply_bytes: usize,
    /// Users whose rate buckets are tracked before idle ones are dropped.
    /// Default 100,000.
    pub rate_tracked_users: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 4 * 1024,
            max_queue_frames: 1024,
            max_queue_bytes: 1024 * 1024,
            rate_burst: 20,
            rate_messages: 10,
            rate_interval: Duration::from_secs(1),
            max_sessions: 10_000,
            admission_queue: 256,
            admission_wait: Duration::from_secs(5),
            bot_concurrency: 64,
            bot_timeout: Duration::from_secs(60),
            bot_context: 20,
            history_page_max: 200,
            rooms_listed_max: 500,
            reorder_buffer: 1024,
            gap_timeout: Duration::from_millis(200),
            hash_concurrency: 4,
            hash_queue: 256,
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            max_subscriptions: 1_000,
            max_bot_reply_bytes: 16 * 1024,
            rate_tracked_users: 100_000,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl Limits {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, v: $ty) -> Self {
                    self.$name = v;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Limits::max_frame_bytes`].
    max_frame_bytes: usize,
    /// Sets [`Limits::max_message_bytes`].
    max_message_bytes: usize,
    /// Sets [`Limits::max_queue_frames`].
    max_queue_frames: usize,
    /// Sets [`Limits::max_queue_bytes`].
    max_queue_bytes: usize,
    /// Sets [`Limits::rate_burst`].
    rate_burst: u32,
    /// Sets [`Limits::rate_messages`].
    rate_messages: u32,
    /// Sets [`Limits::rate_interval`].
    rate_interval: Duration,
    /// Sets [`Limits::max_sessions`].
    max_sessions: usize,
    /// Sets [`Limits::admission_queue`].
    admission_queue: usize,
    /// Sets [`Limits::admission_wait`].
    admission_wait: Duration,
    /// Sets [`Limits::bot_concurrency`].
    bot_concurrency: usize,
    /// Sets [`Limits::bot_timeout`].
    bot_timeout: Duration,
    /// Sets [`Limits::bot_context`].
    bot_context: u32,
    /// Sets [`Limits::history_page_max`].
    history_page_max: u32,
    /// Sets [`Limits::rooms_listed_max`].
    rooms_listed_max: u32,
    /// Sets [`Limits::reorder_buffer`].
    reorder_buffer: usize,
    /// Sets [`Limits::gap_timeout`].
    gap_timeout: Duration,
    /// Sets [`Limits::hash_concurrency`].
    hash_concurrency: usize,
    /// Sets [`Limits::hash_queue`].
    hash_queue: usize,
    /// Sets [`Limits::token_ttl`].
    token_ttl: Duration,
    /// Sets [`Limits::argon2_memory_kib`].
    argon2_memory_kib: u32,
    /// Sets [`Limits::argon2_iterations`].
    argon2_iterations: u32,
    /// Sets [`Limits::max_subscriptions`].
    max_subscriptions: usize,
    /// Sets [`Limits::max_bot_reply_bytes`].
    max_bot_reply_bytes: usize,
    /// Sets [`Limits::rate_tracked_users`].
    rate_tracked_users: usize,
}

impl Limits {
    /// Cheap password hashing for tests (never for production).
    #[must_use]
    pub fn fast_hashing_for_tests(self) -> Self {
        self.argon2_memory_kib(256).argon2_iterations(1)
    }

    pub(crate) fn validate(&self) -> Result<(), crate::error::BuildError> {
        use crate::error::BuildError::InvalidSetting;
        let checks: [(&'static str, bool); 7] = [
            ("max_frame_bytes", self.max_frame_bytes >= 256),
            ("max_message_bytes", self.max_message_bytes >= 1),
            ("max_queue_frames", self.max_queue_frames >= 4),
            ("max_sessions", self.max_sessions >= 1),
            ("rate_interval", !self.rate_interval.is_zero()),
            ("bot_concurrency", self.bot_concurrency >= 1),
            ("hash_concurrency", self.hash_concurrency >= 1),
        ];
        for (name, ok) in checks {
            if !ok {
                return Err(InvalidSetting {
                    name,
                    reason: "out of range",
                });
            }
        }
        if self.max_queue_bytes < self.max_frame_bytes {
            return Err(InvalidSetting {
                name: "max_queue_bytes",
                reason: "must hold at least one frame of max_frame_bytes",
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per user: `burst` tokens, refilled at `per` every
/// `interval`. Uses tokio's clock, so tests control it with `pause()`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter from the engine's limits.
    pub fn new(limits: &Limits) -> Self {
        RateLimiter {
            burst: f64::from(limits.rate_burst.max(1)),
            per_sec: f64::from(limits.rate_messages) / limits.rate_interval.as_secs_f64(),
            max_tracked: limits.rate_tracked_users.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `user`; false when the bucket is empty.
    pub fn check(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_tracked && !buckets.contains_key(user) {
            // Forget users whose buckets have refilled: they lose nothing.
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_sec < burst
            });
        }
        let b = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A session slot; dropping it frees the slot.
#[derive(Debug)]
pub struct AdmissionPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl AdmissionPermit {
    /// A permit outside admission control (REST calls, tests).
    pub fn unlimited() -> Self {
        AdmissionPermit { _permit: None }
    }
}

/// Admission control: at most `max_sessions` at once; up to
/// `admission_queue` more wait up to `admission_wait` for a slot, and
/// anyone beyond that is told `server_busy` at once.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait: Duration,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(limits.max_sessions)),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.admission_queue,
            wait: limits.admission_wait,
        }
    }

    pub(crate) async fn admit(&self) -> Result<AdmissionPermit, EngineError> {
        let busy = || EngineError::new(ErrorCode::ServerBusy, "server is at its connection limit");
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(AdmissionPermit { _permit: Some(p) });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let res = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match res {
            Ok(Ok(p)) => Ok(AdmissionPermit { _permit: Some(p) }),
            _ => Err(busy()),
        }
    }

    pub(crate) fn close(&self) {
        self.slots.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn token_bucket_allows_burst_then_refills() {
        let limits = Limits::default()
            .rate_burst(3)
            .rate_messages(1)
            .rate_interval(Duration::from_secs(1));
        let rl = RateLimiter::new(&limits);
        assert!(rl.check("a") && rl.check("a") && rl.check("a"));
        assert!(!rl.check("a"));
        assert!(rl.check("b"), "buckets are per user");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(rl.check("a"));
        assert!(!rl.check("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn admission_waits_then_refuses() {
        let limits = Limits::default()
            .max_sessions(1)
            .admission_queue(1)
            .admission_wait(Duration::from_secs(1));
        let adm = Arc::new(Admission::new(&limits));
        let first = adm.admit().await.unwrap();
        // One may wait; it gets the slot when the first leaves.
        let waiter = {
            let adm = adm.clone();
            tokio::spawn(async move { adm.admit().await })
        };
        tokio::task::yield_now().await;
        // The queue is full: refused at once.
        let err = adm.admit().await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ServerBusy);
        drop(first);
        assert!(waiter.await.unwrap().is_ok());
        // Nobody leaves now: the waiter times out with server_busy.
        let _held = adm.admit().await;
        let err = adm.admit().await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ServerBusy);
    }
}

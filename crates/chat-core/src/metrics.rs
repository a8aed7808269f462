//! Counters and histograms the engine keeps, for transports to export
//! (the WebSocket transport renders them in Prometheus text format).
//!
//! Plain atomics: recording is a relaxed add on the hot path, never a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (Prometheus `le` semantics), the
    /// total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let buckets = LATENCY_BUCKETS_US
            .iter()
            .zip(&self.buckets)
            .map(|(&le, c)| {
                acc += c.load(Ordering::Relaxed);
                (le as f64 / 1e6, acc)
            })
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the engine measures.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Sessions connected now.
    pub sessions: Gauge,
    /// Sessions logged in now.
    pub authenticated: Gauge,
    /// Room subscriptions held now on this node.
    pub subscriptions: Gauge,
    /// Client frames handled.
    pub frames_in: Counter,
    /// Messages stored (acknowledged).
    pub messages_in: Counter,
    /// Sends that went to the store with others in one request: a
    /// connection's pipelined sends (see
    /// [`Connection::handle_frames`](crate::Connection::handle_frames)).
    pub sends_batched: Counter,
    /// Frames queued to sessions by fan-out (one per recipient).
    pub deliveries: Counter,
    /// Subscribers disconnected because their queue was full.
    pub lagged: Counter,
    /// Requests refused by the rate limiter.
    pub rate_limited: Counter,
    /// Connections refused by admission control.
    pub admission_rejected: Counter,
    /// Frames that failed to decode.
    pub bad_frames: Counter,
    /// Stored messages fetched from the store to fill a fan-out gap.
    pub gap_filled: Counter,
    /// Store append latency (until durable).
    pub store_append: Histogram,
    /// Store failures.
    pub store_errors: Counter,
    /// Bot replies started.
    pub bot_requests: Counter,
    /// Bot replies that failed (a fallback was sent).
    pub bot_failures: Counter,
    /// Bot reply latency, request to final text.
    pub bot_latency: Histogram,
}

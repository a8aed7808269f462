//! Helpers of the broker's integration tests: a throw-away `redis-server`,
//! a TCP proxy that can cut one node off, and a test client that drives an
//! engine through its bounded queues.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod proxy;
pub mod redis;

use std::time::Duration;

/// Polls `done` every 10 ms until it holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

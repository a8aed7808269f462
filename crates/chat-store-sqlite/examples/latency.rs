//! Run with: `cargo run --release -p chat-store-sqlite --example latency`
//!
//! Measures the SQLite store's durable append throughput and per-append ack
//! latency (p50/p99/p99.9/max) from 1, 16 and 256 concurrent writers, and the
//! latency of a 50-message history page on a room of a million messages.
//! `CHAT_BENCH_DIR` picks the directory for the database files (default: the
//! system temporary directory); `CHAT_BENCH_MAX_BATCH`,
//! `CHAT_BENCH_COMMIT_DELAY_US` and `CHAT_BENCH_WAL_AUTOCHECKPOINT` override
//! those settings. `CHAT_BENCH_CLIENT_ID=1` gives every message a fresh
//! `client_id` (idempotency key), and then reports how long reopening takes
//! to reload the idempotency window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chat_core::{HistoryQuery, Store};
use chat_store_sqlite::{SqliteSettings, SqliteStore};

#[path = "../benches/support/mod.rs"]
mod support;

/// The `p`-th percentile (0..=100) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn dir() -> tempfile::TempDir {
    match std::env::var_os("CHAT_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn settings(path: std::path::PathBuf) -> SqliteSettings {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut settings = SqliteSettings::new(path);
    if let Some(n) = var("CHAT_BENCH_MAX_BATCH") {
        settings = settings.max_batch(usize::try_from(n).unwrap());
    }
    if let Some(us) = var("CHAT_BENCH_COMMIT_DELAY_US") {
        settings = settings.commit_delay(Duration::from_micros(us));
    }
    if let Some(n) = var("CHAT_BENCH_WAL_AUTOCHECKPOINT") {
        settings = settings.wal_autocheckpoint(u32::try_from(n).unwrap());
    }
    settings
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{what}: n={} p50={:?} p99={:?} p99.9={:?} max={:?}",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or_default(),
    );
}

#[tokio::main]
async fn main() {
    let dir = dir();
    let store = SqliteStore::open_async(settings(dir.path().join("appends.db")))
        .await
        .unwrap();
    store
        .create_room(support::room("bench"), &[])
        .await
        .unwrap();
    let keyed = std::env::var("CHAT_BENCH_CLIENT_ID").is_ok_and(|v| v == "1");
    for (writers, total) in [(1u64, 5_000u64), (16, 50_000), (256, 500_000)] {
        // Warm up, then measure.
        support::appends(&store, "bench", writers, total / 10, keyed).await;
        let before = store.metrics();
        let (elapsed, latencies) = support::appends(&store, "bench", writers, total, keyed).await;
        let after = store.metrics();
        let commits = after.commits - before.commits;
        println!(
            "{writers} writers: {total} durable appends in {elapsed:.2?} = {:.0}/s, \
             {commits} commits (avg batch {:.1})",
            total as f64 / elapsed.as_secs_f64(),
            total as f64 / commits.max(1) as f64,
        );
        report(&format!("{writers} writers ack latency"), latencies);
    }
    store.close().await.unwrap();
    drop(store);
    if keyed {
        let started = Instant::now();
        let store = SqliteStore::open_async(settings(dir.path().join("appends.db")))
            .await
            .unwrap();
        println!(
            "reopened in {:.2?}, {} idempotency keys reloaded",
            started.elapsed(),
            store.metrics().idempotency_keys
        );
        store.close().await.unwrap();
    }

    let store = support::big_room(&dir.path().join("history.db")).await;
    let mut latencies = Vec::with_capacity(20_000);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let q = match i % 3 {
            0 => HistoryQuery::latest(50),
            1 => HistoryQuery::before(1 + x % support::BIG_ROOM_MESSAGES, 50),
            _ => HistoryQuery::after(x % support::BIG_ROOM_MESSAGES, 50),
        };
        let t = Instant::now();
        let page = store.history("big", q).await.unwrap();
        latencies.push(t.elapsed());
        assert!(!page.is_empty());
    }
    report("history page of 50 on a 1,000,000-message room", latencies);
}

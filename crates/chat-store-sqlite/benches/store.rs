//! Criterion benchmarks of the SQLite store: durable appends per second from
//! 1, 16 and 256 concurrent writers, without and with a `client_id`
//! (idempotency key), and history paging on a room of a million messages.
//!
//! Run with: `cargo bench -p chat-store-sqlite --bench store`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use chat_core::{HistoryQuery, Store};
use chat_store_sqlite::{SqliteSettings, SqliteStore};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod support;

fn durable_appends(c: &mut Criterion) {
    appends_group(c, "durable_appends", &[1, 16, 256], false);
}

/// As `durable_appends`, each message with a fresh `client_id`: the cost of
/// the idempotency window against the plain group.
fn durable_appends_keyed(c: &mut Criterion) {
    appends_group(c, "durable_appends_keyed", &[16, 256], true);
}

fn appends_group(c: &mut Criterion, name: &str, writer_counts: &[u64], keyed: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let store = SqliteStore::open_async(SqliteSettings::new(dir.path().join("appends.db")))
            .await
            .unwrap();
        store
            .create_room(support::room("bench"), &[])
            .await
            .unwrap();
        store
    });
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for &writers in writer_counts {
        group.bench_with_input(BenchmarkId::from_parameter(writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                rt.block_on(support::appends(&store, "bench", w, iters.max(w), keyed))
                    .0
            });
        });
    }
    group.finish();
    let m = store.metrics();
    eprintln!(
        "writer: {} requests in {} commits (largest batch {}), {} idempotency keys held",
        m.requests, m.commits, m.largest_batch, m.idempotency_keys
    );
}

fn history(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(support::big_room(&dir.path().join("history.db")));
    let mut group = c.benchmark_group("history_1m_room");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next_seq = move || {
        // xorshift: spread the pages over the whole room.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        1 + x % support::BIG_ROOM_MESSAGES
    };
    group.bench_function("latest_50", |b| {
        b.iter(|| {
            rt.block_on(store.history("big", HistoryQuery::latest(50)))
                .unwrap()
        })
    });
    group.bench_function("before_random_50", |b| {
        b.iter(|| {
            let q = HistoryQuery::before(next_seq(), 50);
            rt.block_on(store.history("big", q)).unwrap()
        })
    });
    group.bench_function("after_random_50", |b| {
        b.iter(|| {
            let q = HistoryQuery::after(next_seq(), 50);
            rt.block_on(store.history("big", q)).unwrap()
        })
    });
    group.bench_function("seq_at_random", |b| {
        b.iter(|| {
            let ts = 1_700_000_000_000 + next_seq();
            rt.block_on(store.seq_at("big", ts)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, durable_appends, durable_appends_keyed, history);
criterion_main!(benches);

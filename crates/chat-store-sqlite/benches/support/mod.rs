//! Fixtures shared by the benchmark and the latency example.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_core::{MessageKind, NewMessage, Role, RoomRecord, Store};
use chat_store_sqlite::{SqliteSettings, SqliteStore};

/// Messages in the history fixture's room.
pub(crate) const BIG_ROOM_MESSAGES: u64 = 1_000_000;

pub(crate) fn room(name: &str) -> RoomRecord {
    RoomRecord {
        name: name.to_owned(),
        kind: "public".to_owned(),
        topic: String::new(),
        created_by: "bench".to_owned(),
        created_at: 1,
    }
}

/// Makes every benchmark `client_id` unique, across runs of `appends` too:
/// a repeated one would measure the duplicate path, not a send.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(0);

/// Message `i` of `sender`, stamped with the wall clock as the engine stamps
/// sends, with a fresh `client_id` when `keyed`.
pub(crate) fn message(room: &str, sender: &str, i: u64, keyed: bool) -> NewMessage {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    NewMessage {
        room: room.to_owned(),
        sender: sender.to_owned(),
        body: format!("message {i} from {sender}, a typical line of chat text"),
        kind: MessageKind::User,
        client_id: keyed.then(|| {
            let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
            format!("c-{id:016x}")
        }),
        ts,
        file: None,
    }
}

/// Creates room `big` holding [`BIG_ROOM_MESSAGES`] messages, written in one
/// transaction straight into the file (the fixture is not what is measured),
/// then opens the store on it.
pub(crate) async fn big_room(path: &Path) -> SqliteStore {
    let store = SqliteStore::open_async(SqliteSettings::new(path))
        .await
        .unwrap();
    store
        .create_room(room("big"), &[("bench".to_owned(), Role::Admin)])
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let started = Instant::now();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {BIG_ROOM_MESSAGES})
         INSERT INTO messages (room_id, seq, ts, sender, kind, body, client_id)
         SELECT (SELECT id FROM rooms WHERE name = 'big'), x, 1700000000000 + x,
                'user' || (x % 100), 'user',
                'message ' || x || ' from user' || (x % 100) || ', a typical line of chat text',
                NULL
         FROM n;
         COMMIT;
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
    drop(conn);
    eprintln!(
        "fixture: {BIG_ROOM_MESSAGES} messages in {:?}",
        started.elapsed()
    );
    SqliteStore::open_async(SqliteSettings::new(path))
        .await
        .unwrap()
}

/// Runs `total` appends to room `room` from `writers` concurrent tasks, each
/// with a fresh `client_id` when `keyed`, and returns the wall time and each
/// append's latency.
pub(crate) async fn appends(
    store: &SqliteStore,
    room: &str,
    writers: u64,
    total: u64,
    keyed: bool,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let room: Arc<str> = room.into();
        let count = total / writers + u64::from(w < total % writers);
        tasks.push(tokio::spawn(async move {
            let sender = format!("writer{w}");
            let mut latencies = Vec::with_capacity(count as usize);
            for i in 0..count {
                let m = message(&room, &sender, i, keyed);
                let t = Instant::now();
                store.append(m).await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    (started.elapsed(), latencies)
}

//! The idempotency window on its own: pending keys, commit and rollback,
//! both bounds, and the rebuild from a file.

use std::time::Duration;

use rusqlite::Connection;

use crate::idempotency::{self, IdempotencyWindow};
use crate::{schema, SqliteSettings};

fn window(window: Duration, keys: usize) -> IdempotencyWindow {
    IdempotencyWindow::new(
        &SqliteSettings::new("unused.db")
            .idempotency_window(window)
            .idempotency_keys(keys),
    )
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn keys_differ_by_room_sender_and_client_id() {
    let w = window(HOUR, 10);
    let k = w.key(1, "alice", "c1");
    assert_eq!(k, w.key(1, "alice", "c1"));
    for other in [
        w.key(2, "alice", "c1"),
        w.key(1, "bob", "c1"),
        w.key(1, "alice", "c2"),
        // The boundary between sender and client id is part of the key.
        w.key(1, "alic", "ec1"),
    ] {
        assert_ne!(k, other);
    }
}

#[test]
fn pending_keys_are_found_within_the_batch_and_kept_after_commit() {
    let mut w = window(HOUR, 10);
    let k = w.key(1, "alice", "c1");
    assert_eq!(w.find(k, 100), None);
    w.record(k, 7, 100);
    assert_eq!(w.find(k, 100), Some(7), "a second send in the same batch");
    assert_eq!(w.len(), 0, "pending keys are not held yet");
    w.commit();
    assert_eq!(w.len(), 1);
    assert_eq!(w.find(k, 200), Some(7), "a retry in a later batch");
}

/// The rollback case: a batch that does not commit leaves no key behind,
/// and keys committed before it stay.
#[test]
fn a_discarded_batch_forgets_its_keys_only() {
    let mut w = window(HOUR, 10);
    let kept = w.key(1, "alice", "kept");
    w.record(kept, 1, 100);
    w.commit();
    let lost = w.key(1, "alice", "lost");
    w.record(lost, 2, 110);
    assert_eq!(w.find(lost, 110), Some(2));
    w.discard();
    assert_eq!(w.find(lost, 120), None);
    assert_eq!(w.find(kept, 120), Some(1));
    // The next batch reuses seq 2 for another key; committing it does not
    // bring the discarded one back.
    let next = w.key(1, "bob", "next");
    w.record(next, 2, 130);
    w.commit();
    assert_eq!(w.find(lost, 140), None);
    assert_eq!(w.find(next, 140), Some(2));
    assert_eq!(w.len(), 2);
}

#[test]
fn the_oldest_keys_leave_first_past_the_count() {
    let mut w = window(HOUR, 3);
    let keys: Vec<_> = (0..5).map(|i| w.key(1, "a", &format!("c{i}"))).collect();
    for (seq, k) in keys.iter().enumerate().take(2) {
        w.record(*k, seq as i64 + 1, 100);
    }
    w.commit();
    // One batch may pass the bound; the commit trims it.
    for (seq, k) in keys.iter().enumerate().skip(2) {
        w.record(*k, seq as i64 + 1, 100);
    }
    w.commit();
    assert_eq!(w.len(), 3);
    assert_eq!(w.find(keys[0], 100), None);
    assert_eq!(w.find(keys[1], 100), None);
    for (seq, k) in keys.iter().enumerate().skip(2) {
        assert_eq!(w.find(*k, 100), Some(seq as i64 + 1));
    }
}

#[test]
fn a_retry_a_window_later_is_not_found_and_old_keys_leave() {
    let mut w = window(Duration::from_millis(1000), 100);
    let old = w.key(1, "a", "old");
    w.record(old, 1, 5_000);
    w.commit();
    assert_eq!(w.find(old, 5_999), Some(1));
    assert_eq!(w.find(old, 6_000), None, "exactly one window later");
    // The clock is the newest committed ts: a message one window younger
    // pushes the old key out.
    let young = w.key(1, "a", "young");
    w.record(young, 2, 5_999);
    w.commit();
    assert_eq!(w.len(), 2);
    let newest = w.key(1, "a", "newest");
    w.record(newest, 3, 6_000);
    w.commit();
    assert_eq!(w.len(), 2);
    assert_eq!(w.find(old, 5_000), None, "evicted, whatever the retry's ts");
    assert_eq!(w.find(young, 6_000), Some(2));
}

#[test]
fn a_key_stored_again_keeps_its_newest_message_when_the_old_one_leaves() {
    let mut w = window(Duration::from_millis(1000), 3);
    let k = w.key(1, "a", "c");
    w.record(k, 1, 0);
    w.commit();
    // Past the window the retry was stored anew, at seq 2.
    assert_eq!(w.find(k, 1_000), None);
    w.record(k, 2, 1_000);
    w.commit();
    // The first entry left with its age; the second still answers.
    assert_eq!(w.find(k, 1_500), Some(2));
    let others: Vec<_> = (0..2).map(|i| w.key(1, "b", &i.to_string())).collect();
    for (i, o) in others.iter().enumerate() {
        w.record(*o, 3 + i as i64, 1_100);
    }
    w.commit();
    assert_eq!(w.find(k, 1_500), Some(2));
    assert_eq!(w.len(), 3);
}

/// A file at the current schema with keyed messages in two rooms.
fn file_with_keys(rows: &[(i64, i64, i64, &str, Option<&str>)]) -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    conn.execute_batch(
        "INSERT INTO rooms (id, name, kind, topic, created_by, created_at)
         VALUES (1, 'r1', 'public', '', 'a', 0), (2, 'r2', 'public', '', 'a', 0);",
    )
    .unwrap();
    for (room, seq, ts, sender, client_id) in rows {
        conn.execute(
            "INSERT INTO messages (room_id, seq, ts, sender, kind, body, client_id)
             VALUES (?1, ?2, ?3, ?4, 'user', 'x', ?5)",
            rusqlite::params![room, seq, ts, sender, client_id],
        )
        .unwrap();
    }
    conn
}

#[test]
fn the_rebuild_loads_the_newest_keys_within_the_window() {
    let conn = file_with_keys(&[
        (1, 1, 1_000, "a", Some("too-old")),
        (1, 2, 5_000, "a", None),
        (1, 3, 6_000, "a", Some("past-count")),
        (2, 1, 7_000, "b", Some("k1")),
        (1, 4, 8_000, "a", Some("k2")),
        (2, 2, 9_000, "b", Some("k3")),
        (1, 5, 10_500, "a", None),
    ]);
    let settings = SqliteSettings::new("unused.db")
        .idempotency_window(Duration::from_millis(5_000))
        .idempotency_keys(3);
    let w = IdempotencyWindow::load(&conn, &settings).unwrap();
    assert_eq!(w.len(), 3);
    assert_eq!(w.find(w.key(2, "b", "k1"), 9_500), Some(1));
    assert_eq!(w.find(w.key(1, "a", "k2"), 9_500), Some(4));
    assert_eq!(w.find(w.key(2, "b", "k3"), 9_500), Some(2));
    assert_eq!(w.find(w.key(1, "a", "past-count"), 9_500), None);
    assert_eq!(w.find(w.key(1, "a", "too-old"), 1_500), None);

    // With room for more keys, only the age bound applies, measured from
    // the newest keyed message (9,000): "too-old" is 8 s older.
    let w = IdempotencyWindow::load(&conn, &settings.idempotency_keys(10)).unwrap();
    assert_eq!(w.len(), 4);
    assert_eq!(w.find(w.key(1, "a", "past-count"), 9_500), Some(3));
    assert_eq!(w.find(w.key(1, "a", "too-old"), 1_500), None);
}

#[test]
fn the_rebuild_of_an_empty_file_is_empty() {
    let conn = file_with_keys(&[(1, 1, 5, "a", None)]);
    let w = IdempotencyWindow::load(&conn, &SqliteSettings::new("unused.db")).unwrap();
    assert_eq!(w.len(), 0);
}

/// The rebuild walks the keyed-ts index backwards: no scan of all messages,
/// no sort.
#[test]
fn the_rebuild_walks_the_keyed_ts_index() {
    let conn = file_with_keys(&[]);
    let mut st = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", idempotency::LOAD))
        .unwrap();
    let plan: Vec<String> = st
        .query_map([10], |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plan, ["SCAN messages USING INDEX messages_keyed_ts"]);
}

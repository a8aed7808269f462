//! The idempotency window through the store: retries in one batch, across
//! batches, after a clean reopen and from a crash image, both bounds, and a
//! batch that does not commit.

use std::path::Path;
use std::time::Duration;

use chat_core::{Appended, HistoryQuery, NewMessage, Store};
use chat_store_sqlite::{SqliteSettings, SqliteStore};

use crate::batching::is_batch_aborted;
use crate::support::{create_room, msg, open_temp, poison_commits, queue, stall_writer};

fn keyed(sender: &str, client_id: &str, ts: u64) -> NewMessage {
    let mut m = msg("lobby", sender, &format!("{client_id} at {ts}"));
    m.client_id = Some(client_id.to_owned());
    m.ts = ts;
    m
}

async fn send(store: &SqliteStore, sender: &str, client_id: &str, ts: u64) -> Appended {
    store.append(keyed(sender, client_id, ts)).await.unwrap()
}

async fn open_with(
    path: &Path,
    settings: impl Fn(SqliteSettings) -> SqliteSettings,
) -> SqliteStore {
    SqliteStore::open_async(settings(SqliteSettings::new(path)))
        .await
        .unwrap()
}

async fn bodies(store: &SqliteStore) -> Vec<String> {
    let page = store
        .history("lobby", HistoryQuery::latest(100))
        .await
        .unwrap();
    page.into_iter().map(|m| m.body).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_in_later_batches_return_the_original() {
    let (store, _dir, _path) = open_temp();
    create_room(&store, "lobby").await;
    let first = send(&store, "alice", "c1", 1_000).await;
    send(&store, "alice", "c2", 1_001).await;
    send(&store, "bob", "c1", 1_002).await;
    for ts in [1_003, 50_000] {
        let retry = send(&store, "alice", "c1", ts).await;
        assert!(retry.duplicate);
        assert_eq!(retry.message, first.message);
    }
    assert_eq!(store.last_seq("lobby").await.unwrap(), 3);
    assert_eq!(store.metrics().idempotency_keys, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_keys_in_one_batch_store_once_each() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    let (lock, plug) = stall_writer(&store, &path).await;
    let mut tasks = Vec::new();
    for (i, client_id) in ["k1", "k2", "k1", "k3", "k2", "k1"].into_iter().enumerate() {
        let s = store.clone();
        let m = keyed("alice", client_id, 1_000 + i as u64);
        tasks.push(queue(&store, async move { s.append(m).await.unwrap() }).await);
    }
    let commits = store.metrics().commits;
    lock.release();
    plug.await.unwrap();
    let mut answers = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        answers.push((a.message.seq, a.duplicate));
    }
    assert_eq!(
        answers,
        [
            (1, false),
            (2, false),
            (1, true),
            (3, false),
            (2, true),
            (1, true)
        ]
    );
    // The plug's batch and the appends' batch.
    assert_eq!(store.metrics().commits - commits, 2);
    assert_eq!(
        bodies(&store).await,
        ["k1 at 1000", "k2 at 1001", "k3 at 1003"]
    );
    // The batch's keys are held once it committed.
    assert!(send(&store, "alice", "k3", 2_000).await.duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_recognized_after_a_clean_reopen() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    let originals = [
        send(&store, "alice", "c1", 1_000).await,
        send(&store, "bob", "c1", 1_001).await,
    ];
    store.close().await.unwrap();
    drop(store);

    let store = open_with(&path, |s| s).await;
    assert_eq!(store.metrics().idempotency_keys, 2);
    for (sender, original) in ["alice", "bob"].into_iter().zip(originals) {
        let retry = send(&store, sender, "c1", 2_000).await;
        assert!(retry.duplicate);
        assert_eq!(retry.message, original.message);
    }
    assert!(!send(&store, "carol", "c1", 2_001).await.duplicate);
    assert_eq!(store.last_seq("lobby").await.unwrap(), 3);
}

/// The files as a kill -9 leaves them: every ack is in the WAL (fsynced),
/// nothing was closed or checkpointed. The store stays open while the copy
/// is taken; it is idle, so the files do not change under the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_recognized_from_a_crash_image() {
    let (store, dir, path) = open_temp();
    create_room(&store, "lobby").await;
    let mut originals = Vec::new();
    for i in 0..20u64 {
        originals.push(send(&store, "alice", &format!("c{i}"), 1_000 + i).await);
    }
    let image = dir.path().join("image.db");
    let wal = path.with_extension("db-wal");
    assert!(wal.exists(), "the acks are still in the WAL");
    std::fs::copy(&path, &image).unwrap();
    std::fs::copy(&wal, image.with_extension("db-wal")).unwrap();

    let crashed = open_with(&image, |s| s).await;
    assert_eq!(crashed.metrics().idempotency_keys, 20);
    for (i, original) in originals.iter().enumerate() {
        let retry = send(&crashed, "alice", &format!("c{i}"), 5_000).await;
        assert!(retry.duplicate, "c{i}");
        assert_eq!(retry.message, original.message);
    }
    assert_eq!(crashed.last_seq("lobby").await.unwrap(), 20);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_the_count_bound_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let store = open_with(&path, |s| s.idempotency_keys(3)).await;
    create_room(&store, "lobby").await;
    for (i, k) in ["k1", "k2", "k3", "k4"].into_iter().enumerate() {
        send(&store, "alice", k, 1_000 + i as u64).await;
    }
    assert_eq!(store.metrics().idempotency_keys, 3);
    // k1 is the oldest of four: forgotten. k2 is still held.
    let late = send(&store, "alice", "k1", 2_000).await;
    assert!(!late.duplicate);
    assert_eq!(late.message.seq, 5);
    // Storing k1 again pushed k2 out; k4 is held.
    assert!(!send(&store, "alice", "k2", 2_001).await.duplicate);
    assert!(send(&store, "alice", "k4", 2_002).await.duplicate);
    assert!(send(&store, "alice", "k1", 2_003).await.duplicate);
    assert_eq!(store.last_seq("lobby").await.unwrap(), 6);
    store.close().await.unwrap();
    drop(store);

    // The rebuild holds the newest three keyed messages: k1, k2 (stored
    // again) and k4; k3 is past the bound.
    let store = open_with(&path, |s| s.idempotency_keys(3)).await;
    assert_eq!(store.metrics().idempotency_keys, 3);
    for (k, seq) in [("k4", 4), ("k1", 5), ("k2", 6)] {
        let retry = send(&store, "alice", k, 3_000).await;
        assert!(retry.duplicate, "{k}");
        assert_eq!(retry.message.seq, seq);
    }
    assert!(!send(&store, "alice", "k3", 3_001).await.duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_a_window_after_the_original_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let window = |s: SqliteSettings| s.idempotency_window(Duration::from_secs(1));
    let store = open_with(&path, window).await;
    create_room(&store, "lobby").await;
    let first = send(&store, "alice", "c1", 10_000).await;
    assert!(send(&store, "alice", "c1", 10_999).await.duplicate);
    let again = send(&store, "alice", "c1", 11_000).await;
    assert!(!again.duplicate, "exactly one window later");
    assert_eq!(again.message.seq, first.message.seq + 1);
    // The new message starts a window of its own.
    let retry = send(&store, "alice", "c1", 11_999).await;
    assert!(retry.duplicate);
    assert_eq!(retry.message, again.message);
    // One key, held at its newest message.
    assert_eq!(store.metrics().idempotency_keys, 1);
    store.close().await.unwrap();
    drop(store);

    // On open, the window is measured from the newest keyed message: the
    // original at 10,000 is a window older than the 11,000 one.
    let store = open_with(&path, window).await;
    assert_eq!(store.metrics().idempotency_keys, 1);
    assert!(send(&store, "alice", "c1", 11_500).await.duplicate);
    // A keyed message 10 s later ages the others out, live and on reopen.
    send(&store, "bob", "b1", 21_000).await;
    assert_eq!(store.metrics().idempotency_keys, 1);
    store.close().await.unwrap();
    drop(store);
    let store = open_with(&path, window).await;
    assert_eq!(store.metrics().idempotency_keys, 1);
    assert!(send(&store, "bob", "b1", 21_500).await.duplicate);
    assert!(!send(&store, "alice", "c1", 21_500).await.duplicate);
}

/// A batch whose COMMIT fails: the keys its appends recorded must not stay.
/// The window keeps them pending until COMMIT and the writer discards them
/// on rollback (the key count shows it); were one kept, the check of a hit
/// against the stored row would still refuse to answer with the message
/// that took its `seq`. Either way the retry is stored anew, and its own
/// retry finds the new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_a_batch_that_did_not_commit_is_not_held() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    send(&store, "alice", "before", 1_000).await;
    poison_commits(&path);
    let (lock, plug) = stall_writer(&store, &path).await;
    let mut lost = Vec::new();
    for m in [keyed("alice", "lost", 1_001), {
        let mut m = msg("lobby", "alice", "poison");
        m.client_id = Some("poison".into());
        m
    }] {
        let s = store.clone();
        lost.push(queue(&store, async move { s.append(m).await }).await);
    }
    lock.release();
    plug.await.unwrap();
    for a in lost {
        let e = a.await.unwrap().unwrap_err();
        assert!(is_batch_aborted(&e), "{e:?}");
    }
    assert_eq!(store.metrics().idempotency_keys, 1);

    // Another message takes the seq the lost one had; the lost key's retry
    // is a new message, not that one.
    let other = send(&store, "alice", "other", 1_002).await;
    assert_eq!(other.message.seq, 2);
    // The lost batch's keys did not join the window with the next commit.
    assert_eq!(store.metrics().idempotency_keys, 2);
    let retry = send(&store, "alice", "lost", 1_003).await;
    assert!(!retry.duplicate);
    assert_eq!(retry.message.seq, 3);
    let again = send(&store, "alice", "lost", 1_004).await;
    assert!(again.duplicate);
    assert_eq!(again.message, retry.message);
    assert_eq!(
        bodies(&store).await,
        ["before at 1000", "other at 1002", "lost at 1003"]
    );
}

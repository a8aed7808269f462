//! Helpers shared by the tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_core::{MessageKind, NewMessage, Role, RoomRecord, Store, TokenRecord};
use chat_store_sqlite::{SqliteSettings, SqliteStore};
use tokio::task::JoinHandle;

/// A fresh store in a temporary directory (kept alive by the caller).
pub(crate) fn open_temp() -> (SqliteStore, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let store = SqliteStore::open(SqliteSettings::new(&path)).unwrap();
    (store, dir, path)
}

pub(crate) fn room(name: &str) -> RoomRecord {
    RoomRecord {
        name: name.to_owned(),
        kind: "public".to_owned(),
        topic: String::new(),
        created_by: "alice".to_owned(),
        created_at: 1,
    }
}

pub(crate) async fn create_room(store: &SqliteStore, name: &str) {
    store
        .create_room(room(name), &[("alice".to_owned(), Role::Admin)])
        .await
        .unwrap();
}

pub(crate) fn msg(room: &str, sender: &str, body: &str) -> NewMessage {
    NewMessage {
        room: room.to_owned(),
        sender: sender.to_owned(),
        body: body.to_owned(),
        kind: MessageKind::User,
        client_id: None,
        file: None,
        ts: 1_000,
    }
}

/// Polls `done` until it holds; fails the test after ten seconds.
pub(crate) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Holds SQLite's write lock from another connection, so the store's writer
/// blocks in `BEGIN IMMEDIATE` and requests pile up in its queue: the tests
/// use it to decide exactly what goes into one batch.
pub(crate) struct WriteLock(rusqlite::Connection);

impl WriteLock {
    pub(crate) fn take(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(conn)
    }

    pub(crate) fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// Makes the COMMIT of any batch holding a message whose body is
/// `poison` fail, after every request in it succeeded: a deferred foreign
/// key, checked at COMMIT, that a trigger on such a message breaks.
pub(crate) fn poison_commits(path: &Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t_parent (id INTEGER PRIMARY KEY);
             CREATE TABLE t_child (pid INTEGER REFERENCES t_parent (id)
                                   DEFERRABLE INITIALLY DEFERRED);
             CREATE TRIGGER poison AFTER INSERT ON messages WHEN NEW.body = 'poison'
             BEGIN INSERT INTO t_child VALUES (42); END;",
        )
        .unwrap();
}

/// Blocks the writer in `BEGIN IMMEDIATE` on a plug request, so the next
/// requests wait in the queue and form one batch once the lock is released.
pub(crate) async fn stall_writer(store: &SqliteStore, path: &Path) -> (WriteLock, JoinHandle<()>) {
    let lock = WriteLock::take(path);
    let before = store.metrics().batches;
    let s = store.clone();
    let plug = tokio::spawn(async move {
        let t = TokenRecord {
            token_hash: "plug".into(),
            user: "alice".into(),
            expires_at: 1,
        };
        s.put_token(t).await.unwrap();
    });
    wait_until("the writer blocks on the lock", || {
        store.metrics().batches == before + 1
    })
    .await;
    (lock, plug)
}

/// Spawns a request and waits until it sits in the writer's queue, so
/// requests queue in the order they are spawned.
pub(crate) async fn queue<T: Send + 'static>(
    store: &SqliteStore,
    request: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    let before = store.metrics().queued;
    let handle = tokio::spawn(request);
    wait_until("the request is queued", || {
        store.metrics().queued == before + 1
    })
    .await;
    handle
}

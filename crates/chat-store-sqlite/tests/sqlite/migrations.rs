//! Schema versions: a new file, an empty file, version 1 and version 3
//! files written with the old DDL, and a file from the future.

use chat_core::{HistoryQuery, Role, Store, StoreError};
use chat_store_sqlite::{SqliteSettings, SqliteStore, SCHEMA_VERSION};
use rusqlite::Connection;

use crate::support::msg;

/// The schema as version 1 of this crate wrote it, copied here on purpose:
/// the test must keep describing old files when the crate's DDL moves on.
const V1_DDL: &str = "
CREATE TABLE users (name TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE tokens (token_hash TEXT PRIMARY KEY NOT NULL, user TEXT NOT NULL,
    expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX tokens_user ON tokens (user);
CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    topic TEXT NOT NULL, created_by TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX rooms_kind ON rooms (kind, name);
CREATE TABLE memberships (room_id INTEGER NOT NULL REFERENCES rooms (id), user TEXT NOT NULL,
    role TEXT NOT NULL, PRIMARY KEY (room_id, user)) WITHOUT ROWID;
CREATE INDEX memberships_user ON memberships (user, room_id);
CREATE TABLE messages (room_id INTEGER NOT NULL REFERENCES rooms (id), seq INTEGER NOT NULL,
    ts INTEGER NOT NULL, sender TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    client_id TEXT, PRIMARY KEY (room_id, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_client_id
    ON messages (room_id, sender, client_id) WHERE client_id IS NOT NULL;
PRAGMA user_version = 1;
";

/// What versions 2 and 3 added to a version 1 file, copied here for the same
/// reason; applied after [`V1_DDL`] it makes a version 3 file, the last with
/// the unique `messages_client_id` index.
const V2_V3_DDL: &str = "
CREATE INDEX messages_ts ON messages (room_id, ts);
CREATE TABLE bots (name TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}', created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE files (id TEXT PRIMARY KEY NOT NULL, room_id INTEGER NOT NULL REFERENCES rooms (id),
    uploader TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, mime_type TEXT NOT NULL,
    sha256 TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX files_room ON files (room_id, created_at);
ALTER TABLE messages ADD COLUMN file TEXT;
CREATE INDEX files_uploader ON files (uploader);
CREATE TABLE read_markers (user TEXT NOT NULL, room_id INTEGER NOT NULL REFERENCES rooms (id),
    seq INTEGER NOT NULL, PRIMARY KEY (user, room_id)) WITHOUT ROWID;
PRAGMA user_version = 3;
";

fn version(path: &std::path::Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn objects(path: &std::path::Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut st = conn
        .prepare("SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    let names = st.query_map([], |r| r.get(0)).unwrap();
    names.collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_new_file_and_an_empty_file_get_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("new.db");
    let empty = dir.path().join("empty.db");
    std::fs::File::create(&empty).unwrap();
    for path in [&missing, &empty] {
        drop(SqliteStore::open(SqliteSettings::new(path)).unwrap());
        assert_eq!(version(path), SCHEMA_VERSION);
        let names = objects(path);
        for table in [
            "users",
            "tokens",
            "rooms",
            "memberships",
            "messages",
            "bots",
            "files",
        ] {
            assert!(
                names.iter().any(|n| n == table),
                "{table} missing: {names:?}"
            );
        }
        // Opening again is a no-op.
        drop(SqliteStore::open(SqliteSettings::new(path)).unwrap());
        assert_eq!(version(path), SCHEMA_VERSION);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_migrated_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(V1_DDL).unwrap();
        conn.execute_batch(
            "INSERT INTO users VALUES ('alice', '$argon2id$old', 7);
             INSERT INTO tokens VALUES ('feed', 'alice', 99);
             INSERT INTO rooms (id, name, kind, topic, created_by, created_at)
                 VALUES (1, 'lobby', 'public', 'old times', 'alice', 5);
             INSERT INTO memberships VALUES (1, 'alice', 'admin');
             INSERT INTO messages VALUES (1, 1, 100, 'alice', 'user', 'first', NULL);
             INSERT INTO messages VALUES (1, 2, 200, 'bot', 'bot', 'second', 'c9');",
        )
        .unwrap();
    }
    assert_eq!(version(&path), 1);

    let store = SqliteStore::open_async(SqliteSettings::new(&path))
        .await
        .unwrap();
    assert_eq!(version(&path), SCHEMA_VERSION);
    let names = objects(&path);
    for added in ["bots", "files", "files_room", "messages_ts"] {
        assert!(
            names.iter().any(|n| n == added),
            "{added} missing: {names:?}"
        );
    }
    // Everything written by version 1 reads back.
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().password_hash,
        "$argon2id$old"
    );
    assert_eq!(store.token("feed").await.unwrap().unwrap().expires_at, 99);
    assert_eq!(
        store.room("lobby").await.unwrap().unwrap().topic,
        "old times"
    );
    assert_eq!(
        store.member_role("lobby", "alice").await.unwrap(),
        Some(Role::Admin)
    );
    let page = store
        .history("lobby", HistoryQuery::latest(10))
        .await
        .unwrap();
    assert_eq!(
        page.iter()
            .map(|m| (m.seq, m.body.as_str()))
            .collect::<Vec<_>>(),
        [(1, "first"), (2, "second")]
    );
    assert_eq!(page[1].client_id.as_deref(), Some("c9"));
    assert_eq!(store.seq_at("lobby", 150).await.unwrap(), 2);
    // seq goes on from the old rows, and old client ids still de-duplicate.
    assert_eq!(
        store
            .append(msg("lobby", "alice", "third"))
            .await
            .unwrap()
            .message
            .seq,
        3
    );
    let mut again = msg("lobby", "bot", "second again");
    again.client_id = Some("c9".into());
    let again = store.append(again).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.seq, 2);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_file_moves_to_the_idempotency_window_and_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(V1_DDL).unwrap();
        conn.execute_batch(V2_V3_DDL).unwrap();
        conn.execute_batch(
            "INSERT INTO rooms (id, name, kind, topic, created_by, created_at)
                 VALUES (1, 'lobby', 'public', '', 'alice', 5), (2, 'den', 'public', '', 'bob', 5);
             INSERT INTO messages (room_id, seq, ts, sender, kind, body, client_id) VALUES
                 (1, 1, 1000, 'alice', 'user', 'unkeyed', NULL),
                 (1, 2, 2000, 'alice', 'user', 'a1', 'c1'),
                 (1, 3, 3000, 'bob', 'user', 'b1', 'c1'),
                 (2, 1, 4000, 'alice', 'user', 'a1 in den', 'c1');",
        )
        .unwrap();
    }
    assert_eq!(version(&path), 3);
    assert!(objects(&path).iter().any(|n| n == "messages_client_id"));

    let window = std::time::Duration::from_secs(10);
    let store = SqliteStore::open_async(SqliteSettings::new(&path).idempotency_window(window))
        .await
        .unwrap();
    assert_eq!(version(&path), SCHEMA_VERSION);
    let names = objects(&path);
    assert!(
        !names.iter().any(|n| n == "messages_client_id"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "messages_keyed_ts"), "{names:?}");
    assert_eq!(store.metrics().idempotency_keys, 3);

    // The keys written by version 3 are recognized.
    for (room, sender, seq, body) in [
        ("lobby", "alice", 2, "a1"),
        ("lobby", "bob", 3, "b1"),
        ("den", "alice", 1, "a1 in den"),
    ] {
        let mut retry = msg(room, sender, "retry");
        retry.client_id = Some("c1".into());
        retry.ts = 5_000;
        let retry = store.append(retry).await.unwrap();
        assert!(retry.duplicate, "{room}/{sender}");
        assert_eq!(
            (retry.message.seq, retry.message.body.as_str()),
            (seq, body)
        );
    }
    // A retry a window after its original is a new message: the unique
    // index that would have refused it is gone.
    let mut late = msg("lobby", "alice", "late");
    late.client_id = Some("c1".into());
    late.ts = 12_000;
    let late = store.append(late).await.unwrap();
    assert!(!late.duplicate);
    assert_eq!(late.message.seq, 4);
    store.close().await.unwrap();
}

#[test]
fn a_file_from_a_newer_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    let future = SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE from_the_future (x); PRAGMA user_version = {future};"
        ))
        .unwrap();
    let err = SqliteStore::open(SqliteSettings::new(&path)).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported }
            if found == future && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(version(&path), future);
    assert_eq!(objects(&path), ["from_the_future"]);
    let mode: String = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the journal mode was changed");
}

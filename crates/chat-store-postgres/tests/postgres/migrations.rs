//! Schema versions: a new schema, a version 1 schema written with the old
//! DDL, a schema from the future, nodes starting at once, and the session
//! settings every connection gets.

use chat_core::{HistoryQuery, Role, Store, StoreError};
use chat_store_postgres::tokio_postgres::Client;
use chat_store_postgres::{PostgresSettings, PostgresStore, SCHEMA_VERSION};

use crate::support::{fresh_settings, msg, postgres};

/// The schema as version 1 of this crate wrote it, copied here on purpose:
/// the test must keep describing old schemas when the crate's DDL moves on.
const V1_DDL: &str = "
CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL,
    expires_at BIGINT NOT NULL);
CREATE INDEX tokens_user ON tokens (user_name);
CREATE TABLE rooms (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, topic TEXT NOT NULL,
    created_by TEXT NOT NULL, created_at BIGINT NOT NULL, next_seq BIGINT NOT NULL DEFAULT 1);
CREATE INDEX rooms_kind ON rooms (kind, name);
CREATE TABLE memberships (room_id BIGINT NOT NULL REFERENCES rooms (id),
    user_name TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (room_id, user_name));
CREATE INDEX memberships_user ON memberships (user_name, room_id);
CREATE TABLE messages (room_id BIGINT NOT NULL REFERENCES rooms (id), seq BIGINT NOT NULL,
    ts BIGINT NOT NULL, sender TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    client_id TEXT, PRIMARY KEY (room_id, seq));
CREATE UNIQUE INDEX messages_client_id
    ON messages (room_id, sender, client_id) WHERE client_id IS NOT NULL;
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
";

async fn admin() -> Option<Client> {
    Some(postgres::admin(postgres::shared().await?).await)
}

async fn versions(c: &Client, schema: &str) -> Vec<i32> {
    c.query(
        &format!("SELECT version FROM \"{schema}\".schema_version"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Tables and indexes of a schema, by name.
async fn objects(c: &Client, schema: &str) -> Vec<String> {
    c.query(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'i') ORDER BY 1",
        &[&schema],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_schema_gets_the_current_version_and_reopening_changes_nothing() {
    let (Some(settings), Some(c)) = (fresh_settings().await, admin().await) else {
        return;
    };
    let schema = settings.schema.clone();
    drop(PostgresStore::open(settings.clone()).await.unwrap());
    assert_eq!(versions(&c, &schema).await, [SCHEMA_VERSION as i32]);
    let names = objects(&c, &schema).await;
    for table in [
        "users",
        "tokens",
        "rooms",
        "memberships",
        "messages",
        "messages_ts",
    ] {
        assert!(
            names.iter().any(|n| n == table),
            "{table} missing: {names:?}"
        );
    }
    drop(PostgresStore::open(settings).await.unwrap());
    assert_eq!(versions(&c, &schema).await, [SCHEMA_VERSION as i32]);
    assert_eq!(objects(&c, &schema).await, names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_and_keeps_its_data() {
    let (Some(settings), Some(c)) = (fresh_settings().await, admin().await) else {
        return;
    };
    let schema = settings.schema.clone();
    c.batch_execute(&format!(
        "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"; {V1_DDL}
         INSERT INTO users VALUES ('alice', '$argon2id$old', 7);
         INSERT INTO tokens VALUES ('feed', 'alice', 99);
         INSERT INTO rooms (name, kind, topic, created_by, created_at, next_seq)
             VALUES ('lobby', 'public', 'old times', 'alice', 5, 3);
         INSERT INTO memberships SELECT id, 'alice', 'admin' FROM rooms;
         INSERT INTO messages SELECT id, 1, 100, 'alice', 'user', 'first', NULL FROM rooms;
         INSERT INTO messages SELECT id, 2, 200, 'bot', 'bot', 'second', 'c9' FROM rooms;
         SET search_path TO DEFAULT;"
    ))
    .await
    .unwrap();
    assert!(!objects(&c, &schema)
        .await
        .contains(&"messages_ts".to_owned()));

    let store = PostgresStore::open(settings).await.unwrap();
    assert_eq!(versions(&c, &schema).await, [SCHEMA_VERSION as i32]);
    assert!(objects(&c, &schema)
        .await
        .contains(&"messages_ts".to_owned()));
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
    let third = store
        .append(msg("lobby", "alice", "third", None))
        .await
        .unwrap();
    assert_eq!(third.message.seq, 3);
    let again = store
        .append(msg("lobby", "bot", "second again", Some("c9")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_version_is_refused_untouched() {
    let (Some(settings), Some(c)) = (fresh_settings().await, admin().await) else {
        return;
    };
    let schema = settings.schema.clone();
    let future = SCHEMA_VERSION as i32 + 1;
    c.batch_execute(&format!(
        "CREATE SCHEMA \"{schema}\";
         CREATE TABLE \"{schema}\".schema_version (version INTEGER NOT NULL);
         INSERT INTO \"{schema}\".schema_version VALUES ({future});
         CREATE TABLE \"{schema}\".from_the_future (x INTEGER);"
    ))
    .await
    .unwrap();
    let err = PostgresStore::open(settings).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported }
            if found == future as u32 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(versions(&c, &schema).await, [future]);
    assert_eq!(
        objects(&c, &schema).await,
        ["from_the_future", "schema_version"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let (Some(settings), Some(c)) = (fresh_settings().await, admin().await) else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| tokio::spawn(PostgresStore::open(settings.clone())))
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    assert_eq!(
        versions(&c, &settings.schema).await,
        [SCHEMA_VERSION as i32]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_commit_synchronously_in_the_store_schema() {
    let Some(server) = postgres::shared().await else {
        return;
    };
    // A database whose default would acknowledge commits before they are
    // flushed: the store's sessions must not inherit it.
    let c = postgres::admin(server).await;
    // One statement each: CREATE DATABASE cannot run in a transaction.
    c.batch_execute("CREATE DATABASE lazy").await.unwrap();
    c.batch_execute("ALTER DATABASE lazy SET synchronous_commit = off")
        .await
        .unwrap();
    let url = server.url().replace("/chat", "/lazy");
    let (raw, conn) = chat_store_postgres::tokio_postgres::connect(
        &url,
        chat_store_postgres::tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let raw_setting: String = raw
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw_setting, "off");

    let store = PostgresStore::open(PostgresSettings::new(url).schema("chat_lazy"))
        .await
        .unwrap();
    assert_eq!(
        store.server_setting("synchronous_commit").await.unwrap(),
        "on"
    );
    assert!(store
        .server_setting("search_path")
        .await
        .unwrap()
        .contains("chat_lazy"));
    assert_eq!(
        store.server_setting("statement_timeout").await.unwrap(),
        "30s"
    );
    assert_eq!(
        store.server_setting("application_name").await.unwrap(),
        "chat-engine"
    );
}

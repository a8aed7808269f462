//! The schema, its versioned migrations, and each connection's session
//! settings.
//!
//! The version lives in the one-row table `schema_version` of the store's
//! schema. [`MIGRATIONS`]`[i]` brings a schema from version `i` to `i + 1`;
//! opening runs the missing ones in one transaction, under an advisory lock
//! so that nodes starting together migrate once. A schema written by newer
//! code (a version above [`SCHEMA_VERSION`]) is refused and left untouched.

use deadpool_postgres::Client;

use crate::{Error, PostgresSettings};

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = 3;

/// Version 1: accounts, tokens, rooms, memberships and messages.
///
/// `rooms.next_seq` is the `seq` the room's next message gets: an append
/// increments it with `UPDATE ... RETURNING`, which row-locks the room until
/// the append commits, so concurrent appends to one room (from any node)
/// get consecutive `seq`s in commit order. Messages are keyed by
/// `(room_id, seq)`, so a history page is one index range scan.
const V1: &str = "
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens (user_name);

CREATE TABLE rooms (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_seq   BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX rooms_kind ON rooms (kind, name);

CREATE TABLE memberships (
    room_id   BIGINT NOT NULL REFERENCES rooms (id),
    user_name TEXT NOT NULL,
    role      TEXT NOT NULL,
    PRIMARY KEY (room_id, user_name)
);
CREATE INDEX memberships_user ON memberships (user_name, room_id);

CREATE TABLE messages (
    room_id   BIGINT NOT NULL REFERENCES rooms (id),
    seq       BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    sender    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    body      TEXT NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room_id, seq)
);
CREATE UNIQUE INDEX messages_client_id
    ON messages (room_id, sender, client_id) WHERE client_id IS NOT NULL;
";

/// Version 2: paging by time (`seq_at` is one probe of this index).
const V2: &str = "
CREATE INDEX messages_ts ON messages (room_id, ts, seq);
";

/// Version 3: shared files (metadata; the bytes live in the engine's file
/// vault), a message's file reference (as JSON, like the SQLite store), and
/// read markers for unread counts.
///
/// `files.n` orders files created in the same millisecond by insertion.
const V3: &str = "
ALTER TABLE messages ADD COLUMN file TEXT;

CREATE TABLE files (
    id         TEXT PRIMARY KEY,
    n          BIGINT GENERATED ALWAYS AS IDENTITY,
    room_id    BIGINT NOT NULL REFERENCES rooms (id),
    uploader   TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    mime_type  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX files_room ON files (room_id, created_at, n);
CREATE INDEX files_uploader ON files (uploader);

CREATE TABLE read_markers (
    user_name TEXT NOT NULL,
    room_id   BIGINT NOT NULL REFERENCES rooms (id),
    seq       BIGINT NOT NULL,
    PRIMARY KEY (user_name, room_id)
);
";

/// `MIGRATIONS[i]` brings a schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2, V3];

/// The statements every new connection runs first: the store's schema, and
/// `synchronous_commit = on` whatever the server's default, so a commit
/// returns only once it is flushed (ack means durable).
pub(crate) fn session_sql(settings: &PostgresSettings) -> String {
    // The schema name was checked to need no quoting beyond the quotes.
    format!(
        "SET search_path TO \"{}\"; SET synchronous_commit TO on; SET statement_timeout TO {};",
        settings.schema,
        settings.statement_timeout.as_millis().max(1)
    )
}

/// Creates the schema if needed and runs the missing migrations, in one
/// transaction under an advisory lock; returns the version found before.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<u32, Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('chat-store-postgres:' || $1::text))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
    ))
    .await?;
    let row = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await?;
    let found = match row {
        Some(row) => {
            let v: i32 = row.try_get(0)?;
            u32::try_from(v).map_err(|_| Error::CorruptRow {
                column: "schema_version.version",
                value: v.to_string(),
            })?
        }
        None => 0,
    };
    if found > SCHEMA_VERSION {
        // Dropping the transaction rolls it back: nothing was changed.
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        tx.commit().await?;
        return Ok(found);
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(schema, from, to = from + 1, "migrating chat store schema");
        tx.batch_execute(sql).await?;
    }
    let version = SCHEMA_VERSION as i32;
    if found == 0 {
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    } else {
        tx.execute("UPDATE schema_version SET version = $1", &[&version])
            .await?;
    }
    tx.commit().await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_a_migration() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }

    #[test]
    fn sessions_are_durable_and_in_the_schema() {
        let s = PostgresSettings::new("postgres://x/y")
            .schema("chat_1")
            .statement_timeout(std::time::Duration::from_secs(3));
        assert_eq!(
            session_sql(&s),
            "SET search_path TO \"chat_1\"; SET synchronous_commit TO on; SET statement_timeout TO 3000;"
        );
    }
}

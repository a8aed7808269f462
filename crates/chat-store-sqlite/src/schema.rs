//! The schema, its versioned migrations, and how connections are opened.
//!
//! The version lives in `PRAGMA user_version`. [`MIGRATIONS`]`[i]` brings a
//! file from version `i` to `i + 1`; opening runs the missing ones in one
//! transaction. A file written by newer code (a version above
//! [`SCHEMA_VERSION`]) is refused before anything in it is touched.

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::{Error, SqliteSettings};

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = 4;

/// Version 1: accounts, tokens, rooms, memberships and messages (its
/// `messages_client_id` index is dropped by version 4).
///
/// Messages are clustered by `(room_id, seq)` (a `WITHOUT ROWID` table), so
/// a history page is one range scan; `seq` is assigned by the writer as the
/// room's newest `seq` plus one inside the committing transaction, and the
/// primary key refuses a repeated `seq`.
const V1: &str = "
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_user ON tokens (user);

CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX rooms_kind ON rooms (kind, name);

CREATE TABLE memberships (
    room_id INTEGER NOT NULL REFERENCES rooms (id),
    user    TEXT NOT NULL,
    role    TEXT NOT NULL,
    PRIMARY KEY (room_id, user)
) WITHOUT ROWID;
CREATE INDEX memberships_user ON memberships (user, room_id);

CREATE TABLE messages (
    room_id   INTEGER NOT NULL REFERENCES rooms (id),
    seq       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    body      TEXT NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_client_id
    ON messages (room_id, sender, client_id) WHERE client_id IS NOT NULL;
";

/// Version 2: paging by time (`seq_at`), bot and file metadata.
const V2: &str = "
CREATE INDEX messages_ts ON messages (room_id, ts);

CREATE TABLE bots (
    name       TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    config     TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE files (
    id         TEXT PRIMARY KEY NOT NULL,
    room_id    INTEGER NOT NULL REFERENCES rooms (id),
    uploader   TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mime_type  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX files_room ON files (room_id, created_at);
";

/// Version 3: a message may share a file (its reference, as JSON; the
/// file's own row is in `files`), and read markers for unread counts.
const V3: &str = "
ALTER TABLE messages ADD COLUMN file TEXT;
CREATE INDEX files_uploader ON files (uploader);
CREATE TABLE read_markers (
    user    TEXT NOT NULL,
    room_id INTEGER NOT NULL REFERENCES rooms (id),
    seq     INTEGER NOT NULL,
    PRIMARY KEY (user, room_id)
) WITHOUT ROWID;
";

/// Version 4: idempotency moves to a bounded window in memory (see
/// `idempotency.rs`). The unique index over all keyed history goes: each
/// sending client had its own insertion point in it, so every batch
/// rewrote a page per client. What replaces it serves only the window's
/// rebuild on open, newest first: the keyed messages by `ts`, which grows,
/// so appends touch the index's rightmost page. Without the unique index,
/// a retry older than the window is stored again, as documented.
const V4: &str = "
DROP INDEX IF EXISTS messages_client_id;
CREATE INDEX messages_keyed_ts ON messages (ts) WHERE client_id IS NOT NULL;
";

/// `MIGRATIONS[i]` brings a file from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2, V3, V4];

/// The file's schema version.
pub(crate) fn user_version(conn: &Connection) -> Result<u32, Error> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

fn refuse_newer(found: u32) -> Result<(), Error> {
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Opens the read-write connection the writer thread owns: refuses a newer
/// schema before changing anything, then sets WAL, `synchronous=FULL` (a
/// commit is on disk when it returns) and migrates.
pub(crate) fn open_writer(settings: &SqliteSettings) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(&settings.path, flags)?;
    conn.busy_timeout(settings.busy_timeout)?;
    refuse_newer(user_version(&conn)?)?;

    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::WalUnsupported(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", settings.wal_autocheckpoint)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(settings.statement_cache);
    migrate(&mut conn)?;
    Ok(conn)
}

/// Runs the missing migrations in one transaction and records the version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, Error> {
    if user_version(conn)? == SCHEMA_VERSION {
        return Ok(SCHEMA_VERSION);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated.
    let found = user_version(&tx)?;
    refuse_newer(found)?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(from, to = from + 1, "migrating chat store schema");
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}

/// Opens one read-only connection of the reader pool.
pub(crate) fn open_reader(settings: &SqliteSettings) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&settings.path, flags)?;
    conn.busy_timeout(settings.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(settings.statement_cache);
    refuse_newer(user_version(&conn)?)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_connection_is_durable_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&SqliteSettings::new(dir.path().join("chat.db"))).unwrap();
        let pragma = |name: &str| -> String {
            conn.pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        // 2 = FULL: a commit returns after the WAL is fsynced.
        assert_eq!(pragma("synchronous"), "Integer(2)");
        assert_eq!(pragma("foreign_keys"), "Integer(1)");
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn every_version_has_a_migration() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
        let conn = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
    }
}

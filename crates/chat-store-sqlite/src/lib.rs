//! A [`chat_core::Store`] over SQLite: users, tokens, rooms, memberships and
//! messages in one file, with a per-room gap-free `seq`, durable acks and
//! group commit.
//!
//! # Example
//!
//! ```
//! use chat_core::{HistoryQuery, MessageKind, NewMessage, RoomRecord, Store};
//! use chat_store_sqlite::{SqliteSettings, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("chat.db");
//! let store = SqliteStore::open_async(SqliteSettings::new(&path)).await?;
//! let lobby = RoomRecord {
//!     name: "lobby".into(),
//!     kind: "public".into(),
//!     topic: String::new(),
//!     created_by: "alice".into(),
//!     created_at: 0,
//! };
//! store.create_room(lobby, &[]).await?;
//! let sent = store
//!     .append(NewMessage {
//!         room: "lobby".into(),
//!         sender: "alice".into(),
//!         body: "hello".into(),
//!         kind: MessageKind::User,
//!         client_id: Some("c-1".into()),
//!         ts: 1_700_000_000_000,
//!         file: None,
//!     })
//!     .await?;
//! // The append returned: it is committed and on disk.
//! assert_eq!(sent.message.seq, 1);
//! let page = store.history("lobby", HistoryQuery::latest(50)).await?;
//! assert_eq!(page[0].body, "hello");
//! store.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `settings`: [`SqliteSettings`], every bound with its default.
//! - `schema`: the DDL, versioned migrations run on open
//!   ([`SCHEMA_VERSION`] in `PRAGMA user_version`), connection set-up.
//! - `writer`: the writer thread, batching and group commit; `ops`: the SQL of
//!   each write; `idempotency`: the window of recent `client_id`s the writer
//!   checks retries against.
//! - `reader`: the pool of read-only connections; `queries`: the SQL of each
//!   read.
//! - `store`: [`SqliteStore`], the [`Store`](chat_core::Store) implementation.
//!
//! # Why one writer thread and group commit?
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every
//! commit waits for an `fsync`. One thread (a plain `std::thread`, never an
//! async worker) owns the only read-write connection; writes queue to it,
//! and it runs everything queued in one transaction with one `fsync`. Under
//! load the batch grows, so throughput rises with concurrency while each ack
//! still means "on disk". Each request runs in its own savepoint, so one bad
//! request fails alone; a batch that does not commit fails every request in
//! it.
//!
//! # Why an idempotency window?
//!
//! A `client_id` makes a send idempotent: a retry with the same (room,
//! sender, `client_id`) gets the stored message back, marked `duplicate`.
//! This store recognizes retries within a bounded window: the original must
//! be less than [`SqliteSettings::idempotency_window`] older (24 hours by
//! default, in message `ts`) and among the newest
//! [`SqliteSettings::idempotency_keys`] keyed messages (1,000,000 by
//! default); an older retry is stored as a new message. The writer thread
//! keeps those keys in memory and reloads them from the file on open, in
//! place of a unique index over all history, which cost every keyed send a
//! B-tree seek and the batch a rewritten index page per sending client. A
//! key joins the window only once its batch committed.
//!
//! ```
//! # use chat_core::{MessageKind, NewMessage, RoomRecord, Store};
//! # use chat_store_sqlite::{SqliteSettings, SqliteStore};
//! # use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let settings = SqliteSettings::new(dir.path().join("chat.db"))
//!     .idempotency_window(Duration::from_secs(60))
//!     .idempotency_keys(10_000);
//! let store = SqliteStore::open_async(settings).await?;
//! # let room = RoomRecord { name: "lobby".into(), kind: "public".into(),
//! #     topic: String::new(), created_by: "alice".into(), created_at: 0 };
//! # store.create_room(room, &[]).await?;
//! let send = |ts: u64| NewMessage {
//!     room: "lobby".into(),
//!     sender: "alice".into(),
//!     body: "hello".into(),
//!     kind: MessageKind::User,
//!     client_id: Some("c-1".into()),
//!     ts,
//!     file: None,
//! };
//! let first = store.append(send(1_000)).await?;
//! // A retry 30 s later is recognized...
//! let retry = store.append(send(31_000)).await?;
//! assert!(retry.duplicate);
//! assert_eq!(retry.message.seq, first.message.seq);
//! // ...one 60 s after the original is a new message.
//! let late = store.append(send(61_000)).await?;
//! assert!(!late.duplicate);
//! assert_eq!(late.message.seq, 2);
//! # store.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Why WAL and a reader pool?
//!
//! In WAL mode readers see the last commit and never block the writer (nor
//! it them). Reads run on a few read-only connections in
//! `tokio::task::spawn_blocking`, so the async workers never wait on disk.
//!
//! # One process per file
//!
//! The writer assumes it is the only one writing the file. A second process
//! writing the same file cannot corrupt it (the primary key refuses a reused
//! `seq`), but its appends and ours would fail on each other, and the
//! `client_id`s it stores are not in our idempotency window.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod idempotency;
mod members;
mod ops;
mod queries;
mod reader;
mod rows;
mod schema;
mod settings;
mod store;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use chat_core::StoreError;

pub use schema::SCHEMA_VERSION;
pub use settings::{
    SqliteSettings, DEFAULT_BUSY_TIMEOUT, DEFAULT_COMMIT_DELAY, DEFAULT_IDEMPOTENCY_KEYS,
    DEFAULT_IDEMPOTENCY_WINDOW, DEFAULT_MAX_BATCH, DEFAULT_MEMBER_CACHE, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_READERS, DEFAULT_ROOM_CACHE, DEFAULT_STATEMENT_CACHE, DEFAULT_WAL_AUTOCHECKPOINT,
};
pub use store::{SqliteStore, StoreMetrics};

/// Failures of the SQLite backend. The store's methods return
/// [`StoreError`]; these travel inside [`StoreError::Backend`] (downcast to
/// inspect them), except [`Error::SchemaTooNew`], which becomes
/// [`StoreError::SchemaTooNew`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer version of this crate.
    #[error("schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// Version found in the file.
        found: u32,
        /// Newest version this code understands.
        supported: u32,
    },
    /// A setting is out of range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// Setting name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file system does not support WAL mode (SQLite kept `journal_mode`
    /// at the value given).
    #[error("journal mode is {0:?}, WAL is required")]
    WalUnsupported(String),
    /// A value does not fit SQLite's signed 64-bit integers.
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A stored value is not one this code writes.
    #[error("unexpected value {value:?} in {column}")]
    CorruptRow {
        /// Table and column.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// The batch this request was part of did not commit (failed `COMMIT`,
    /// or SQLite rolled the transaction back); nothing of it was stored.
    #[error("the batch transaction did not commit: {0}")]
    BatchAborted(#[source] Arc<rusqlite::Error>),
    /// The writer thread could not be started.
    #[error("could not start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A read's blocking task panicked or was cancelled.
    #[error("a read task failed: {0}")]
    ReaderTask(String),
}

impl From<rusqlite::types::FromSqlError> for Error {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        Error::Sqlite(e.into())
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::SchemaTooNew { found, supported } => {
                StoreError::SchemaTooNew { found, supported }
            }
            other => StoreError::backend(other),
        }
    }
}

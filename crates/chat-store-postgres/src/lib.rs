//! A [`chat_core::Store`] over PostgreSQL: the shared history of a chat
//! service running as several nodes. PostgreSQL assigns each room's
//! gap-free `seq` inside the appending transaction, so nodes never
//! coordinate among themselves.
//!
//! # Example
//!
//! ```no_run
//! use chat_core::{HistoryQuery, MessageKind, NewMessage, RoomRecord, Store};
//! use chat_store_postgres::{PostgresSettings, PostgresStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = PostgresSettings::new("postgres://chat@127.0.0.1:5432/chat")
//!     .schema("chat")
//!     .pool_size(16);
//! // Creates the schema's tables, or migrates them, on open.
//! let store = PostgresStore::open(settings).await?;
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
//! // The append returned: it is committed and flushed.
//! assert_eq!(sent.message.seq, 1);
//! let page = store.history("lobby", HistoryQuery::latest(50)).await?;
//! assert_eq!(page[0].body, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! Settings are checked before anything connects:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use chat_store_postgres::{PostgresSettings, PostgresStore};
//!
//! let bad = PostgresSettings::new("postgres://127.0.0.1/chat").schema("no-dashes");
//! assert!(PostgresStore::open(bad).await.is_err());
//! # }
//! ```
//!
//! # Layout
//!
//! - `settings`: [`PostgresSettings`], every bound with its default.
//! - `schema`: the DDL, versioned migrations run on open
//!   ([`SCHEMA_VERSION`] in the `schema_version` table), session settings.
//! - `writes`: the SQL of each write; `queries`: the SQL of each read;
//!   `rows`: conversions of rows and values.
//! - `store`: [`PostgresStore`], the [`Store`](chat_core::Store)
//!   implementation over a bounded connection pool.
//!
//! # Why the room row assigns `seq`
//!
//! An append runs `UPDATE rooms SET next_seq = next_seq + 1 ... RETURNING`
//! and inserts the message with the returned number, in one transaction.
//! The update row-locks the room until the commit, so concurrent appends to
//! one room, from any node, take numbers one after another and commit in
//! that order: `seq` is gap-free and a reader never sees seq `n + 1` before
//! `n`. Appends to different rooms do not wait for each other. A repeated
//! `(room, sender, client_id)` conflicts on a unique index; the transaction
//! is rolled back (the number is not consumed) and the earlier message is
//! returned.
//!
//! The cost: one room takes at most about one append per commit flush
//! (the lock is held through the flush), around a thousand or two a second
//! on ordinary disks; different rooms append in parallel and share flushes
//! (see `BENCHMARKS.md` in the repository).
//!
//! # Ack means durable
//!
//! Every connection sets `synchronous_commit = on`, whatever the server's
//! default, and every write commits before it returns, so an `Ok` write is
//! in the server's flushed WAL (and on synchronous standbys, if the server
//! has them). [`Store::flush`](chat_core::Store::flush) has nothing left to
//! do. If the connection drops during a `COMMIT`, the outcome is unknown to
//! the caller, which gets an error; a retry with the same client id returns
//! the message if it was stored.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod queries;
mod rows;
mod schema;
mod settings;
mod store;
mod writes;

use chat_core::StoreError;

pub use schema::SCHEMA_VERSION;
pub use settings::{
    PostgresSettings, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, DEFAULT_STATEMENT_TIMEOUT,
};
pub use store::{PoolStatus, PostgresStore};
/// The PostgreSQL client this crate uses, for naming TLS connectors.
pub use tokio_postgres;

/// Failures of the PostgreSQL backend. The store's methods return
/// [`StoreError`]; these travel inside [`StoreError::Backend`] (downcast to
/// inspect them), except [`Error::SchemaTooNew`], which becomes
/// [`StoreError::SchemaTooNew`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PostgreSQL (or the connection to it) reported an error.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool (timed out waiting for a
    /// free one, or could not open one).
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The connection string does not parse.
    #[error("invalid connection string: {0}")]
    Config(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("could not build the connection pool: {0}")]
    Build(String),
    /// The schema was written by a newer version of this crate.
    #[error("schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// Version found in the schema.
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
    /// A value does not fit PostgreSQL's signed 64-bit `BIGINT`.
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A file reference could not be encoded as JSON.
    #[error("could not encode a file reference: {0}")]
    Json(#[source] serde_json::Error),
    /// A stored value is not one this code writes.
    #[error("unexpected value {value:?} in {column}")]
    CorruptRow {
        /// Table and column.
        column: &'static str,
        /// The value found.
        value: String,
    },
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

#[cfg(test)]
mod tests {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_error::<super::Error>();
    }

    #[test]
    fn schema_too_new_keeps_its_meaning() {
        let e: chat_core::StoreError = super::Error::SchemaTooNew {
            found: 9,
            supported: 2,
        }
        .into();
        assert!(matches!(
            e,
            chat_core::StoreError::SchemaTooNew {
                found: 9,
                supported: 2
            }
        ));
    }
}

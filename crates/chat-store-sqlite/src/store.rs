//! [`SqliteStore`]: the [`Store`] implementation tying the writer thread and
//! the reader pool together.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::{
    Appended, FileRecord, HistoryQuery, Message, NewMessage, Role, RoomRecord, Store, StoreError,
    TokenRecord, UserRecord,
};
use tokio::sync::{mpsc, oneshot};

use crate::idempotency::IdempotencyWindow;
use crate::members::MemberCache;
use crate::queries;
use crate::reader::Readers;
use crate::rows::Db;
use crate::writer::{self, Command, JoinGuard, Reply, Stats};
use crate::{schema, SqliteSettings};

/// A [`Store`] over one SQLite file. Cheap to clone: clones share the writer
/// thread and the reader pool, which stop when the last clone is dropped (or
/// on [`close`](Self::close)).
///
/// Writes return once their batch is committed with `fsync`. A write whose
/// caller stops waiting (its future dropped) after it was queued still runs;
/// it is simply not answered.
///
/// # Idempotency is bounded
///
/// An [`append`](Store::append) with the same (room, sender, `client_id`)
/// as a stored message returns that message with `duplicate: true` and
/// stores nothing, if the original is both
///
/// - less than [`idempotency_window`](SqliteSettings::idempotency_window)
///   older than the retry, comparing the messages' `ts` (default 24 hours),
///   and
/// - among the newest [`idempotency_keys`](SqliteSettings::idempotency_keys)
///   messages stored with a `client_id` (default 1,000,000).
///
/// An older retry is stored as a new message with a new `seq`. The keys are
/// held in memory by the writer thread (not in a unique index, which made
/// every keyed send rewrite index pages), and reloaded from the file on
/// open, so a restart or a crash forgets none of them. They cover what this
/// store wrote and what the file held when it was opened: another process
/// writing the same file is not seen (see the crate docs).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Fields drop in order: readers close first, so the writer's connection
    // is the file's last and checkpoints it on close; the sender drops
    // before the guard joins the writer, or the writer would never stop.
    readers: Readers,
    members: Arc<MemberCache>,
    tx: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    settings: SqliteSettings,
    _writer: JoinGuard,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.settings.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `settings.path`, migrates it to
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION), and starts the writer
    /// thread and the reader pool.
    ///
    /// This blocks on file I/O; inside an async runtime prefer
    /// [`open_async`](Self::open_async).
    ///
    /// # Errors
    ///
    /// [`StoreError::SchemaTooNew`] for a file written by newer code (left
    /// untouched); [`StoreError::Backend`] wrapping an [`Error`](crate::Error)
    /// for invalid settings or a file SQLite cannot open.
    pub fn open(settings: SqliteSettings) -> Result<SqliteStore, StoreError> {
        settings.validate().db()?;
        let conn = schema::open_writer(&settings).db()?;
        let keys = IdempotencyWindow::load(&conn, &settings).db()?;
        let readers = Readers::open(&settings).db()?;
        let stats = Arc::new(Stats::default());
        let members = Arc::new(MemberCache::new(settings.member_cache));
        let (tx, guard) = writer::spawn(
            conn,
            keys,
            &settings,
            Arc::clone(&stats),
            Arc::clone(&members),
        )
        .db()?;
        tracing::debug!(path = %settings.path.display(), "chat store opened");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                tx,
                readers,
                members,
                stats,
                settings,
                _writer: guard,
            }),
        })
    }

    /// [`open`](Self::open) on a blocking thread, for async callers.
    pub async fn open_async(settings: SqliteSettings) -> Result<SqliteStore, StoreError> {
        tokio::task::spawn_blocking(move || Self::open(settings))
            .await
            .map_err(StoreError::backend)?
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> &SqliteSettings {
        &self.inner.settings
    }

    /// A snapshot of the writer's counters.
    pub fn metrics(&self) -> StoreMetrics {
        let s = &self.inner.stats;
        let tx = &self.inner.tx;
        StoreMetrics {
            requests: s.requests.load(Ordering::Relaxed),
            failed_requests: s.failed_requests.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            aborted_batches: s.aborted_batches.load(Ordering::Relaxed),
            largest_batch: s.largest_batch.load(Ordering::Relaxed),
            idempotency_keys: s.idempotency_keys.load(Ordering::Relaxed),
            queued: tx.max_capacity().saturating_sub(tx.capacity()),
        }
    }

    /// Stops taking writes, commits everything queued, closes the writer's
    /// connection and waits for it. Later writes (from any clone) fail with
    /// [`StoreError::Closed`]; reads keep working until the last clone drops.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.write(Command::Close).await
    }

    /// Queues a command and waits for its answer, which the writer sends once
    /// the command's batch is committed.
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.write(|tx| Command::CreateUser(user, tx)).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        self.inner
            .readers
            .run(move |c| queries::user(c, &name))
            .await
    }

    async fn put_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.write(|tx| Command::PutToken(token, tx)).await
    }

    async fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = token_hash.to_owned();
        self.inner
            .readers
            .run(move |c| queries::token(c, &hash))
            .await
    }

    async fn delete_token(&self, token_hash: &str) -> Result<(), StoreError> {
        let hash = token_hash.to_owned();
        self.write(|tx| Command::DeleteToken(hash, tx)).await
    }

    async fn create_room(
        &self,
        room: RoomRecord,
        members: &[(String, Role)],
    ) -> Result<(), StoreError> {
        let members = members.to_vec();
        self.write(|tx| Command::CreateRoom(room, members, tx))
            .await
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError> {
        let name = name.to_owned();
        self.inner
            .readers
            .run(move |c| queries::room(c, &name))
            .await
    }

    async fn rooms_of_kinds(
        &self,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        let kinds = kinds.to_vec();
        self.inner
            .readers
            .run(move |c| queries::rooms_of_kinds(c, &kinds, limit))
            .await
    }

    async fn memberships(&self, user: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
        let user = user.to_owned();
        self.inner
            .readers
            .run(move |c| queries::memberships(c, &user))
            .await
    }

    async fn set_member(&self, room: &str, user: &str, role: Role) -> Result<(), StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(|tx| Command::SetMember(room, user, role, tx))
            .await
    }

    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.write(|tx| Command::RemoveMember(room, user, tx)).await
    }

    async fn member_role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
        let generation = match self.inner.members.get(room, user) {
            Ok(role) => return Ok(role),
            Err(generation) => generation,
        };
        let (r, u) = (room.to_owned(), user.to_owned());
        let role = self
            .inner
            .readers
            .run(move |c| queries::member_role(c, &r, &u))
            .await?;
        self.inner.members.fill(generation, room, user, role);
        Ok(role)
    }

    async fn members(&self, room: &str) -> Result<Vec<(String, Role)>, StoreError> {
        let room = room.to_owned();
        self.inner
            .readers
            .run(move |c| queries::members(c, &room))
            .await
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.write(|tx| Command::Append(message, tx)).await
    }

    /// One request to the writer for all of them: they go into one batch,
    /// in order, and are answered together after its commit.
    async fn append_many(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let n = messages.len();
        let closed = || (0..n).map(|_| Err(StoreError::Closed)).collect();
        if n == 0 {
            return Vec::new();
        }
        let (reply, answer) = oneshot::channel();
        let cmd = Command::AppendMany(messages, reply);
        if self.inner.tx.send(cmd).await.is_err() {
            return closed();
        }
        answer.await.unwrap_or_else(|_| closed())
    }

    async fn set_read_marker(&self, user: &str, room: &str, seq: u64) -> Result<(), StoreError> {
        let (user, room) = (user.to_owned(), room.to_owned());
        self.write(|tx| Command::SetReadMarker(user, room, seq, tx))
            .await
    }

    async fn read_markers(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let user = user.to_owned();
        self.inner
            .readers
            .run(move |c| queries::read_markers(c, &user))
            .await
    }

    async fn put_file(&self, file: FileRecord) -> Result<(), StoreError> {
        self.write(|tx| Command::PutFile(file, tx)).await
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let id = id.to_owned();
        self.inner.readers.run(move |c| queries::file(c, &id)).await
    }

    async fn files(&self, room: &str, limit: u32) -> Result<Vec<FileRecord>, StoreError> {
        let room = room.to_owned();
        self.inner
            .readers
            .run(move |c| queries::files(c, &room, limit))
            .await
    }

    async fn bytes_uploaded_by(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.inner
            .readers
            .run(move |c| queries::bytes_uploaded_by(c, &user))
            .await
    }

    async fn history(&self, room: &str, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        let room = room.to_owned();
        self.inner
            .readers
            .run(move |c| queries::history(c, &room, query))
            .await
    }

    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        let room = room.to_owned();
        self.inner
            .readers
            .run(move |c| queries::last_seq(c, &room))
            .await
    }

    async fn seq_at(&self, room: &str, ts: u64) -> Result<u64, StoreError> {
        let room = room.to_owned();
        self.inner
            .readers
            .run(move |c| queries::seq_at(c, &room, ts))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.tx.is_closed() {
            return Err(StoreError::Closed);
        }
        self.inner.readers.run(queries::ping).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.write(Command::Flush).await
    }
}

/// Counters of the writer thread, from [`SqliteStore::metrics`].
///
/// `requests / commits` is the average group-commit batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreMetrics {
    /// Write requests run (appends, user, token, room and member changes).
    pub requests: u64,
    /// Write requests answered with an error (including those of aborted
    /// batches).
    pub failed_requests: u64,
    /// Batch transactions begun.
    pub batches: u64,
    /// Batch transactions committed (one `fsync` each).
    pub commits: u64,
    /// Batches whose transaction did not commit; every request in them failed.
    pub aborted_batches: u64,
    /// Most write requests in one batch so far.
    pub largest_batch: u64,
    /// Idempotency keys held in memory right now (see
    /// [`SqliteSettings::idempotency_keys`]).
    pub idempotency_keys: u64,
    /// Requests waiting in the writer's queue right now.
    pub queued: usize,
}

//! The writer thread: the only connection that writes, and group commit.
//!
//! Requests arrive on a bounded queue. The thread takes everything queued (up
//! to [`max_batch`](crate::SqliteSettings::max_batch)), runs it in one
//! transaction with one savepoint per request that writes more than one
//! statement (an append is one, atomic on its own), commits once (one `fsync`),
//! and only then answers each caller. A request that fails is rolled back (to
//! its savepoint, or by SQLite for a single statement) and answered with its
//! error while the rest commit; a batch
//! whose transaction is lost (failed `COMMIT`, or SQLite rolled it back after
//! an I/O error) answers every request with an error: no false acks.
//!
//! The idempotency keys an append records stay pending until the batch's
//! `COMMIT` returns; a batch that does not commit discards them, so the
//! window never answers a retry with a message that is not on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{Appended, NewMessage, Role, RoomRecord, StoreError, TokenRecord, UserRecord};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::idempotency::IdempotencyWindow;
use crate::members::{MemberCache, Touched};
use crate::ops::Ops;
use crate::Error;

/// How long the writer sleeps between looks at the queue while it waits for
/// a batch to fill (see `Writer::fill`).
const COMMIT_DELAY_STEP: Duration = Duration::from_micros(25);

/// Where the writer answers one request.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Where the writer answers an [`Command::AppendMany`].
pub(crate) type ManyReply = oneshot::Sender<Vec<Result<Appended, StoreError>>>;

/// One request to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    Append(NewMessage, Reply<Appended>),
    /// Several appends of one caller, run in order in one batch
    /// (`Store::append_many`); one answer each.
    AppendMany(Vec<NewMessage>, ManyReply),
    CreateUser(UserRecord, Reply<()>),
    PutToken(TokenRecord, Reply<()>),
    DeleteToken(String, Reply<()>),
    CreateRoom(RoomRecord, Vec<(String, Role)>, Reply<()>),
    SetMember(String, String, Role, Reply<()>),
    RemoveMember(String, String, Reply<bool>),
    PutFile(chat_core::FileRecord, Reply<()>),
    SetReadMarker(String, String, u64, Reply<()>),
    /// Answered once everything queued before it is committed.
    Flush(Reply<()>),
    /// Stop taking requests, finish the queued ones, close the connection,
    /// then answer.
    Close(Reply<()>),
}

/// Counters the writer keeps; read through
/// [`SqliteStore::metrics`](crate::SqliteStore::metrics).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) aborted_batches: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    pub(crate) idempotency_keys: AtomicU64,
}

/// A request's answer, held until its batch commits.
enum Done {
    Appended(Reply<Appended>, Result<Appended, StoreError>),
    Many(ManyReply, Vec<Result<Appended, StoreError>>),
    Bool(Reply<bool>, Result<bool, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
}

impl Done {
    /// How many of its requests failed.
    fn failures(&self) -> u64 {
        let failed = |ok: bool| u64::from(!ok);
        match self {
            Done::Appended(_, r) => failed(r.is_ok()),
            Done::Many(_, rs) => rs.iter().map(|r| failed(r.is_ok())).sum(),
            Done::Bool(_, r) => failed(r.is_ok()),
            Done::Unit(_, r) => failed(r.is_ok()),
        }
    }

    /// How many requests it answers.
    fn requests(&self) -> u64 {
        match self {
            Done::Many(_, rs) => rs.len() as u64,
            _ => 1,
        }
    }

    /// Answers the caller. When the batch did not commit (`lost`), a success
    /// becomes an error: nothing of it was stored. A caller that stopped
    /// waiting is not an error.
    fn send(self, lost: Option<&Arc<rusqlite::Error>>) {
        fn finish<T>(
            r: Result<T, StoreError>,
            lost: Option<&Arc<rusqlite::Error>>,
        ) -> Result<T, StoreError> {
            match (r, lost) {
                (Ok(_), Some(e)) => Err(Error::BatchAborted(Arc::clone(e)).into()),
                (r, _) => r,
            }
        }
        match self {
            Done::Appended(tx, r) => drop(tx.send(finish(r, lost))),
            Done::Many(tx, rs) => drop(tx.send(rs.into_iter().map(|r| finish(r, lost)).collect())),
            Done::Bool(tx, r) => drop(tx.send(finish(r, lost))),
            Done::Unit(tx, r) => drop(tx.send(finish(r, lost))),
        }
    }
}

/// The error recorded when SQLite rolled the batch back by itself.
fn rolled_back() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some("SQLite rolled back the batch transaction".to_owned()),
    )
}

/// Starts the writer thread on `conn`, with the idempotency window `keys`
/// loaded from it; returns its queue and join guard.
pub(crate) fn spawn(
    conn: Connection,
    keys: IdempotencyWindow,
    settings: &crate::SqliteSettings,
    stats: Arc<Stats>,
    members: Arc<MemberCache>,
) -> Result<(mpsc::Sender<Command>, JoinGuard), Error> {
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    stats
        .idempotency_keys
        .store(keys.len() as u64, Ordering::Relaxed);
    let writer = Writer {
        ops: Ops::new(conn, settings.room_cache, keys),
        rx,
        stats,
        max_batch: settings.max_batch,
        commit_delay: settings.commit_delay,
        last_batch: 0,
        done: Vec::with_capacity(settings.max_batch),
        lost: None,
        close_replies: Vec::new(),
        members,
        touched: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("chat-store-sqlite-writer".to_owned())
        .spawn(move || writer.run())
        .map_err(Error::Spawn)?;
    Ok((tx, JoinGuard(Some(thread))))
}

/// Waits for the writer thread when the store is dropped, so a program that
/// drops its store and exits leaves a closed, checkpointed file.
///
/// It must be dropped after the queue's sender (declare it after the sender),
/// otherwise the thread never sees the queue close. Inside an async runtime it
/// does not wait (that would block a worker thread); the writer still finishes
/// the queued requests and exits by itself. Use
/// [`SqliteStore::close`](crate::SqliteStore::close) to wait there.
#[derive(Debug)]
pub(crate) struct JoinGuard(Option<std::thread::JoinHandle<()>>);

impl Drop for JoinGuard {
    fn drop(&mut self) {
        let Some(thread) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        if thread.join().is_err() {
            tracing::error!("the chat store writer thread panicked");
        }
    }
}

struct Writer {
    ops: Ops,
    rx: mpsc::Receiver<Command>,
    stats: Arc<Stats>,
    max_batch: usize,
    commit_delay: Duration,
    /// Requests in the last batch.
    last_batch: usize,
    /// Answers of the running batch (kept to reuse its allocation).
    done: Vec<Done>,
    /// Why the running batch's transaction is gone, if it is.
    lost: Option<Arc<rusqlite::Error>>,
    close_replies: Vec<Reply<()>>,
    /// The roles cache, told about membership changes after each batch.
    members: Arc<MemberCache>,
    /// Membership changes of the running batch.
    touched: Vec<Touched>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while self.fill(&mut batch) {
            self.run_batch(&mut batch);
        }
        if let Err((_, e)) = self.ops.into_conn().close() {
            tracing::error!(error = %e, "closing the chat store writer connection failed");
        }
        for tx in self.close_replies {
            drop(tx.send(Ok(())));
        }
        tracing::debug!("chat store writer stopped");
    }

    /// Waits for a request, then takes every queued one up to `max_batch`.
    /// False once the queue is closed and drained.
    ///
    /// The callers answered by the last batch usually send again at once, but
    /// their requests trickle in while the async side wakes them. Committing
    /// the first few alone would spend a whole `fsync` on a sliver and make
    /// the rest wait for it; so while the batch holds less than half of the
    /// last one, the writer waits up to `commit_delay` for more. With one
    /// writer the last batch held one request, and nothing waits.
    fn fill(&mut self, batch: &mut Vec<Command>) -> bool {
        let Some(first) = self.rx.blocking_recv() else {
            return false;
        };
        batch.push(first);
        self.drain(batch);
        let want = (self.last_batch / 2).min(self.max_batch);
        if batch.len() < want && !self.commit_delay.is_zero() {
            let deadline = Instant::now() + self.commit_delay;
            while batch.len() < want && !self.rx.is_closed() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep((deadline - now).min(COMMIT_DELAY_STEP));
                self.drain(batch);
            }
        }
        self.last_batch = batch.len();
        true
    }

    /// Takes every queued request, up to `max_batch`.
    fn drain(&mut self, batch: &mut Vec<Command>) {
        while batch.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
    }

    fn exec(&self, sql: &str) -> Result<(), rusqlite::Error> {
        self.ops.conn().prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn run_batch(&mut self, batch: &mut Vec<Command>) {
        let writes: usize = batch
            .iter()
            .map(|c| match c {
                Command::Flush(_) | Command::Close(_) => 0,
                Command::AppendMany(ms, _) => ms.len(),
                _ => 1,
            })
            .sum();
        if writes == 0 {
            // Everything before these was committed by earlier batches.
            for cmd in batch.drain(..) {
                if let Some(done) = self.run_one(cmd) {
                    done.send(None);
                }
            }
            return;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(writes as u64, Ordering::Relaxed);
        self.stats
            .largest_batch
            .fetch_max(writes as u64, Ordering::Relaxed);

        self.lost = self.exec("BEGIN IMMEDIATE").err().map(Arc::new);
        for cmd in batch.drain(..) {
            match self.lost.clone() {
                Some(lost) => self.reject(cmd, &lost),
                None => {
                    if let Some(done) = self.run_one(cmd) {
                        self.done.push(done);
                    }
                }
            }
        }
        if self.lost.is_none() {
            match self.exec("COMMIT") {
                Ok(()) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    let keys = self.ops.commit_keys();
                    self.stats
                        .idempotency_keys
                        .store(keys as u64, Ordering::Relaxed);
                }
                Err(e) => self.lost = Some(Arc::new(e)),
            }
        }
        if let Some(lost) = &self.lost {
            tracing::error!(error = %lost, requests = writes, "chat store batch did not commit");
            self.stats.aborted_batches.fetch_add(1, Ordering::Relaxed);
            // A failed COMMIT can leave the transaction open (deferred
            // constraint, busy); end it. Nothing to do when SQLite already did.
            if !self.ops.conn().is_autocommit() {
                if let Err(e) = self.exec("ROLLBACK") {
                    tracing::error!(error = %e, "rolling back the chat store batch failed");
                }
            }
            self.ops.forget_rooms();
            self.ops.discard_keys();
        }
        // Committed or rolled back: either way, reads from now on see the
        // file as it is, so the cache must not answer for what changed.
        self.members.invalidate(&mut self.touched);
        let lost = self.lost.take();
        for done in self.done.drain(..) {
            let failed = match lost {
                Some(_) => done.requests(),
                None => done.failures(),
            };
            self.stats
                .failed_requests
                .fetch_add(failed, Ordering::Relaxed);
            done.send(lost.as_ref());
        }
    }

    /// Answers a request that never ran because its batch was already lost.
    fn reject(&mut self, cmd: Command, lost: &Arc<rusqlite::Error>) {
        let err = || StoreError::from(Error::BatchAborted(Arc::clone(lost)));
        match cmd {
            Command::Append(_, tx) => drop(tx.send(Err(err()))),
            Command::AppendMany(ms, tx) => {
                self.stats
                    .failed_requests
                    .fetch_add(ms.len() as u64, Ordering::Relaxed);
                drop(tx.send(ms.iter().map(|_| Err(err())).collect()));
                return;
            }
            Command::RemoveMember(_, _, tx) => drop(tx.send(Err(err()))),
            Command::CreateUser(_, tx)
            | Command::PutFile(_, tx)
            | Command::SetReadMarker(_, _, _, tx)
            | Command::PutToken(_, tx)
            | Command::DeleteToken(_, tx)
            | Command::CreateRoom(_, _, tx)
            | Command::SetMember(_, _, _, tx)
            | Command::Flush(tx) => drop(tx.send(Err(err()))),
            // Closing does not depend on the batch.
            close @ Command::Close(_) => {
                drop(self.run_one(close));
                return;
            }
        }
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one request in its own savepoint; `None` for requests answered
    /// elsewhere (close).
    fn run_one(&mut self, cmd: Command) -> Option<Done> {
        Some(match cmd {
            Command::Append(m, tx) => Done::Appended(tx, self.statement(|ops| ops.append(m))),
            Command::AppendMany(ms, tx) => {
                let results = ms
                    .into_iter()
                    .map(|m| self.statement(|ops| ops.append(m)))
                    .collect();
                Done::Many(tx, results)
            }
            Command::CreateUser(u, tx) => Done::Unit(tx, self.step(|ops| ops.create_user(u))),
            Command::PutToken(t, tx) => Done::Unit(tx, self.step(|ops| ops.put_token(t))),
            Command::PutFile(f, tx) => Done::Unit(tx, self.step(|ops| ops.put_file(f))),
            Command::SetReadMarker(user, room, seq, tx) => {
                Done::Unit(tx, self.step(|ops| ops.set_read_marker(&user, &room, seq)))
            }
            Command::DeleteToken(h, tx) => Done::Unit(tx, self.step(|ops| ops.delete_token(&h))),
            Command::CreateRoom(room, members, tx) => {
                self.touched.push(Touched::Room(room.name.clone()));
                Done::Unit(tx, self.step(|ops| ops.create_room(room, &members)))
            }
            Command::SetMember(room, user, role, tx) => {
                let done = Done::Unit(tx, self.step(|ops| ops.set_member(&room, &user, role)));
                self.touched.push(Touched::Member(room, user));
                done
            }
            Command::RemoveMember(room, user, tx) => {
                let done = Done::Bool(tx, self.step(|ops| ops.remove_member(&room, &user)));
                self.touched.push(Touched::Member(room, user));
                done
            }
            Command::Flush(tx) => Done::Unit(tx, Ok(())),
            Command::Close(tx) => {
                // Finish what is queued, then stop (see `run`).
                self.close_replies.push(tx);
                self.rx.close();
                return None;
            }
        })
    }

    /// Runs `f`, which writes with one SQL statement at most, without a
    /// savepoint: SQLite makes each statement atomic on its own (with a
    /// statement journal where the statement needs one), so a failed one
    /// leaves no trace. A savepoint would copy every page the statement
    /// touches into the statement journal; for appends, the hot path, that
    /// and the savepoint's own two statements were a third of the writer's
    /// time. Records the batch as lost when SQLite ended the transaction.
    fn statement<T>(
        &mut self,
        f: impl FnOnce(&mut Ops) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = f(&mut self.ops);
        if self.ops.conn().is_autocommit() {
            self.lost = Some(Arc::new(rolled_back()));
        }
        result
    }

    /// Runs `f` inside a savepoint: released on success, rolled back on
    /// failure so the request leaves no trace. Records the batch as lost when
    /// the savepoint statements fail or SQLite ended the transaction.
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut Ops) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Err(e) = self.exec("SAVEPOINT request") {
            let e = Arc::new(e);
            self.lost = Some(Arc::clone(&e));
            return Err(Error::BatchAborted(e).into());
        }
        let result = f(&mut self.ops);
        let control = match &result {
            Ok(_) => self.exec("RELEASE request"),
            Err(_) => self
                .exec("ROLLBACK TO request")
                .and_then(|()| self.exec("RELEASE request")),
        };
        if let Err(e) = control {
            self.lost = Some(Arc::new(e));
        } else if self.ops.conn().is_autocommit() {
            self.lost = Some(Arc::new(rolled_back()));
        }
        result
    }
}

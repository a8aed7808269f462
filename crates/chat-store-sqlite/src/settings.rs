//! [`SqliteSettings`]: every bound and tunable of the store, named, with a
//! default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;

/// Default number of read-only connections in the reader pool.
pub const DEFAULT_READERS: usize = 4;
/// Default most requests the writer runs in one transaction.
pub const DEFAULT_MAX_BATCH: usize = 1024;
/// Default longest wait for a batch to fill before committing it.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(500);
/// Default capacity of the writer's request queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default time a connection waits on a lock held by another process.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default WAL size, in pages, past which a commit checkpoints.
pub const DEFAULT_WAL_AUTOCHECKPOINT: u32 = 4096;
/// Default number of prepared statements cached per connection.
pub const DEFAULT_STATEMENT_CACHE: usize = 64;
/// Default number of rooms whose id and newest `seq` the writer caches.
pub const DEFAULT_ROOM_CACHE: usize = 16_384;
/// Default number of (room, user) roles kept in memory.
pub const DEFAULT_MEMBER_CACHE: usize = 65_536;
/// Default age, in message time, up to which a retried `client_id` is
/// recognized: 24 hours.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Default most idempotency keys held in memory (about 70 MB at the bound).
pub const DEFAULT_IDEMPOTENCY_KEYS: usize = 1_000_000;

/// How to open and run a [`SqliteStore`](crate::SqliteStore).
///
/// Start from [`SqliteSettings::new`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use chat_store_sqlite::SqliteSettings;
///
/// let settings = SqliteSettings::new("chat.db")
///     .readers(8)
///     .max_batch(512)
///     .busy_timeout(Duration::from_secs(2));
/// assert_eq!(settings.readers, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteSettings {
    /// The database file; created (with its schema) when missing.
    pub path: PathBuf,
    /// Read-only connections serving reads, each used by one blocking task
    /// at a time (default [`DEFAULT_READERS`]). More readers serve more
    /// concurrent history requests at the cost of memory per connection.
    pub readers: usize,
    /// Most requests the writer thread runs in one transaction, committed
    /// with one `fsync` (default [`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// Longest time the writer waits for a batch to fill before it commits
    /// (default [`DEFAULT_COMMIT_DELAY`]; zero never waits). It waits only
    /// while the batch holds less than half as many requests as the last
    /// one: under load the callers just answered send again within
    /// microseconds, and one `fsync` for all of them beats one for the first
    /// few and another for the rest. A lone writer never waits.
    pub commit_delay: Duration,
    /// Requests that may wait for the writer; past it, writers wait for room
    /// in the queue (default [`DEFAULT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// How long a connection waits for a lock another process holds before
    /// failing with "database is locked" (default [`DEFAULT_BUSY_TIMEOUT`]).
    pub busy_timeout: Duration,
    /// WAL size in pages past which a commit checkpoints it back into the
    /// database file (`PRAGMA wal_autocheckpoint`, default
    /// [`DEFAULT_WAL_AUTOCHECKPOINT`]). Larger means fewer, longer
    /// checkpoints and a larger `-wal` file.
    pub wal_autocheckpoint: u32,
    /// Prepared statements cached per connection (default
    /// [`DEFAULT_STATEMENT_CACHE`]).
    pub statement_cache: usize,
    /// Rooms whose id and newest `seq` the writer keeps in memory (default
    /// [`DEFAULT_ROOM_CACHE`]); a miss costs two index look-ups.
    pub room_cache: usize,
    /// (room, user) roles kept in memory (default
    /// [`DEFAULT_MEMBER_CACHE`]), so the role check of a send does not read
    /// the file; exact, because this store's writer makes every change.
    /// Past the bound the cache starts over. 0 turns it off.
    pub member_cache: usize,
    /// How long, in message time, a `client_id` stays recognized (default
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`], at least one millisecond).
    ///
    /// An append with the same (room, sender, `client_id`) as a stored
    /// message is a retry, answered with the stored message (`duplicate:
    /// true`) and storing nothing, when both hold:
    ///
    /// - the retry's `ts` is less than `idempotency_window` after the
    ///   original's `ts` (times are the messages' own `ts`, which the engine
    ///   stamps on append; the writer reads no clock), and
    /// - the original is among the newest
    ///   [`idempotency_keys`](Self::idempotency_keys) messages stored with a
    ///   `client_id`.
    ///
    /// An older retry is stored as a new message with a new `seq`. The keys
    /// live in memory (see [`SqliteStore`](crate::SqliteStore)); on open they
    /// are reloaded from the newest keyed messages within this window of the
    /// newest one, so a restart forgets nothing the window still holds.
    pub idempotency_window: Duration,
    /// Most idempotency keys held in memory (default
    /// [`DEFAULT_IDEMPOTENCY_KEYS`], at least 1): past it the oldest keys are
    /// forgotten first, whatever their age (see
    /// [`idempotency_window`](Self::idempotency_window)). A key costs 40
    /// to 90 bytes whatever the length of names and ids (its 64-bit hash,
    /// `seq` and `ts` in a hash table that grows by doubling, plus its place
    /// in the eviction queue): 1,000,000 keys take about 70 MB. At 1,000
    /// keyed sends per second the default holds about 17 minutes of keys;
    /// size it as (keyed sends per second) × (longest retry delay to
    /// recognize).
    pub idempotency_keys: usize,
}

impl SqliteSettings {
    /// Settings for the database at `path`, every other value at its default.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteSettings {
            path: path.as_ref().to_path_buf(),
            readers: DEFAULT_READERS,
            max_batch: DEFAULT_MAX_BATCH,
            commit_delay: DEFAULT_COMMIT_DELAY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            wal_autocheckpoint: DEFAULT_WAL_AUTOCHECKPOINT,
            statement_cache: DEFAULT_STATEMENT_CACHE,
            room_cache: DEFAULT_ROOM_CACHE,
            member_cache: DEFAULT_MEMBER_CACHE,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            idempotency_keys: DEFAULT_IDEMPOTENCY_KEYS,
        }
    }

    /// Sets [`path`](Self::path).
    #[must_use]
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = path.as_ref().to_path_buf();
        self
    }

    /// Sets [`readers`](Self::readers).
    #[must_use]
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// Sets [`max_batch`](Self::max_batch).
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`commit_delay`](Self::commit_delay).
    #[must_use]
    pub fn commit_delay(mut self, commit_delay: Duration) -> Self {
        self.commit_delay = commit_delay;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    #[must_use]
    pub fn queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }

    /// Sets [`busy_timeout`](Self::busy_timeout).
    #[must_use]
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Sets [`wal_autocheckpoint`](Self::wal_autocheckpoint).
    #[must_use]
    pub fn wal_autocheckpoint(mut self, pages: u32) -> Self {
        self.wal_autocheckpoint = pages;
        self
    }

    /// Sets [`statement_cache`](Self::statement_cache).
    #[must_use]
    pub fn statement_cache(mut self, statements: usize) -> Self {
        self.statement_cache = statements;
        self
    }

    /// Sets [`member_cache`](Self::member_cache).
    #[must_use]
    pub fn member_cache(mut self, entries: usize) -> Self {
        self.member_cache = entries;
        self
    }

    /// Sets [`room_cache`](Self::room_cache).
    #[must_use]
    pub fn room_cache(mut self, rooms: usize) -> Self {
        self.room_cache = rooms;
        self
    }

    /// Sets [`idempotency_window`](Self::idempotency_window).
    #[must_use]
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// Sets [`idempotency_keys`](Self::idempotency_keys).
    #[must_use]
    pub fn idempotency_keys(mut self, keys: usize) -> Self {
        self.idempotency_keys = keys;
        self
    }

    /// Checks every value is in range.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("readers", self.readers),
            ("max_batch", self.max_batch),
            ("queue_capacity", self.queue_capacity),
            ("idempotency_keys", self.idempotency_keys),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidSetting {
                    name,
                    reason: "must be at least 1",
                });
            }
        }
        if self.commit_delay > Duration::from_secs(1) {
            return Err(Error::InvalidSetting {
                name: "commit_delay",
                reason: "must be at most one second",
            });
        }
        if self.idempotency_window < Duration::from_millis(1) {
            return Err(Error::InvalidSetting {
                name: "idempotency_window",
                reason: "must be at least one millisecond",
            });
        }
        // tokio's bounded channel refuses larger capacities.
        if self.queue_capacity > usize::MAX >> 3 {
            return Err(Error::InvalidSetting {
                name: "queue_capacity",
                reason: "too large",
            });
        }
        Ok(())
    }
}

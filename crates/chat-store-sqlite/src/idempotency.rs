//! The idempotency window: the recent (room, sender, `client_id`) keys and
//! the `seq` each was stored at, held in memory by the writer thread.
//!
//! An append with a `client_id` asks the window instead of an index of the
//! file. A retry is recognized when its key is in the window and its `ts` is
//! less than [`idempotency_window`](crate::SqliteSettings::idempotency_window)
//! after the original's; the window holds the newest
//! [`idempotency_keys`](crate::SqliteSettings::idempotency_keys) keyed
//! messages and forgets the oldest first, or once the newest message is a
//! whole window younger than them. On open it is rebuilt from the file
//! ([`IdempotencyWindow::load`]), through an index on `ts` of the keyed
//! messages.
//!
//! # Why not a unique index?
//!
//! A unique index on (room, sender, `client_id`) over all history gives
//! every sending client its own insertion point in the index, so each batch
//! rewrites (and writes to the WAL) about one index page per client, and each
//! append pays a B-tree seek first. Through the whole server that cost a
//! third of the send throughput. The `ts` index that replaces it grows at
//! its right edge, one page for a whole batch.
//!
//! # Why hashes, not the keys?
//!
//! The window holds a 64-bit keyed hash of each key (`std`'s `RandomState`,
//! seeded per process), not its strings: a key then costs the same few dozen
//! bytes whatever the length of names and ids, and recording one allocates
//! nothing. A hit is checked against the stored row, which the writer loads
//! anyway to answer the retry; a row that does not carry the same sender and
//! `client_id` (a hash collision) is a miss, so the window never answers
//! with another message. What a collision can cost: two live keys with the
//! same hash share one slot, and a retry of the older one is stored again —
//! with a million keys held, a chance of about one in 2^44 per send.
//!
//! # Transactions
//!
//! The writer runs many appends in one transaction (see `writer.rs`). Keys
//! stored by the running batch are *pending*: appends later in the same
//! batch see them (two sends with one `client_id` in one batch store once),
//! and they join the window only once the batch's `COMMIT` succeeded
//! ([`commit`](IdempotencyWindow::commit)). A batch that does not commit
//! drops them ([`discard`](IdempotencyWindow::discard)); a request rolled
//! back to its savepoint never records its key (it is recorded after its
//! last statement). So the window never names a message that is not on
//! disk; and were it ever to, the check against the stored row would turn
//! the hit into a miss.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use rusqlite::Connection;

use crate::rows::to_u64;
use crate::{Error, SqliteSettings};

/// A key's hash: (room id, sender, `client_id`) through the window's keyed
/// hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key(u64);

/// Where and when a key's message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    seq: i64,
    ts: u64,
}

/// One keyed message, in the order they were stored (the eviction queue).
#[derive(Debug, Clone, Copy)]
struct Queued {
    key: Key,
    seq: i64,
}

/// A hasher for [`Key`]s, which are hashes already: it passes them through.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (a `Key` is one `u64`); fold anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The rebuild's query: the newest keyed messages, a backward walk of the
/// `messages_keyed_ts` index.
pub(crate) const LOAD: &str = "SELECT room_id, seq, ts, sender, client_id FROM messages
     WHERE client_id IS NOT NULL ORDER BY ts DESC LIMIT ?1";

type KeyMap = HashMap<Key, Stored, BuildHasherDefault<Prehashed>>;

/// The recent keys, committed and pending; see the module docs.
#[derive(Debug)]
pub(crate) struct IdempotencyWindow {
    /// The window in milliseconds of message time.
    window_ms: u64,
    /// Most keyed messages held.
    max_keys: usize,
    hasher: RandomState,
    /// Committed keys, each at its newest message.
    keys: KeyMap,
    /// Committed keyed messages, oldest first. An entry whose key has since
    /// been stored again is stale: it no longer owns its slot in `keys`.
    order: VecDeque<Queued>,
    /// The newest `ts` committed: the window's clock.
    newest_ts: u64,
    /// Keys stored by the running batch, for look-ups within it.
    pending: KeyMap,
    /// The same, in the order they were stored.
    pending_order: Vec<(Key, Stored)>,
}

impl IdempotencyWindow {
    /// An empty window bounded by `settings`.
    pub(crate) fn new(settings: &SqliteSettings) -> Self {
        IdempotencyWindow {
            window_ms: u64::try_from(settings.idempotency_window.as_millis()).unwrap_or(u64::MAX),
            max_keys: settings.idempotency_keys,
            hasher: RandomState::new(),
            keys: KeyMap::default(),
            order: VecDeque::new(),
            newest_ts: 0,
            pending: KeyMap::default(),
            pending_order: Vec::new(),
        }
    }

    /// Rebuilds the window from the file: the newest
    /// [`idempotency_keys`](crate::SqliteSettings::idempotency_keys) keyed
    /// messages less than a window older than the newest keyed message.
    /// One backward walk of the `messages_keyed_ts` index.
    pub(crate) fn load(conn: &Connection, settings: &SqliteSettings) -> Result<Self, Error> {
        let mut window = Self::new(settings);
        let limit = i64::try_from(window.max_keys).unwrap_or(i64::MAX);
        let mut st = conn.prepare(LOAD)?;
        let mut rows = st.query([limit])?;
        let mut newest = None;
        while let Some(row) = rows.next()? {
            let ts = to_u64("messages.ts", row.get(2)?)?;
            let newest = *newest.get_or_insert(ts);
            if ts.saturating_add(window.window_ms) <= newest {
                break;
            }
            let (room_id, seq): (i64, i64) = (row.get(0)?, row.get(1)?);
            let key = window.key(
                room_id,
                row.get_ref(3)?.as_str()?,
                row.get_ref(4)?.as_str()?,
            );
            // Newest first: a key stored twice keeps its newer message.
            window.keys.entry(key).or_insert(Stored { seq, ts });
            window.order.push_front(Queued { key, seq });
        }
        window.newest_ts = newest.unwrap_or(0);
        tracing::debug!(keys = window.keys.len(), "idempotency window loaded");
        Ok(window)
    }

    /// The key of (room id, sender, `client_id`).
    pub(crate) fn key(&self, room_id: i64, sender: &str, client_id: &str) -> Key {
        Key(self.hasher.hash_one((room_id, sender, client_id)))
    }

    /// The `seq` stored under `key`, pending or committed, if a retry
    /// stamped `ts` is within the window of it. The caller checks the row.
    pub(crate) fn find(&self, key: Key, ts: u64) -> Option<i64> {
        let stored = self.pending.get(&key).or_else(|| self.keys.get(&key))?;
        (ts < stored.ts.saturating_add(self.window_ms)).then_some(stored.seq)
    }

    /// Records a key the running batch stored at `seq`; it joins the window
    /// at [`commit`](Self::commit).
    pub(crate) fn record(&mut self, key: Key, seq: i64, ts: u64) {
        let stored = Stored { seq, ts };
        self.pending.insert(key, stored);
        self.pending_order.push((key, stored));
    }

    /// The running batch committed: its keys join the window, and the
    /// oldest keys past either bound leave it.
    pub(crate) fn commit(&mut self) {
        self.pending.clear();
        for (key, stored) in self.pending_order.drain(..) {
            self.keys.insert(key, stored);
            self.order.push_back(Queued {
                key,
                seq: stored.seq,
            });
            self.newest_ts = self.newest_ts.max(stored.ts);
        }
        self.evict();
    }

    /// The running batch did not commit: its keys are forgotten.
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
        self.pending_order.clear();
    }

    /// Keys held (committed).
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Drops the oldest entries while more than `max_keys` are queued, or
    /// while the oldest is stale or a whole window older than the newest.
    fn evict(&mut self) {
        while let Some(front) = self.order.front().copied() {
            let live = self
                .keys
                .get(&front.key)
                .filter(|s| s.seq == front.seq)
                .copied();
            let expired =
                live.is_none_or(|s| s.ts.saturating_add(self.window_ms) <= self.newest_ts);
            if self.order.len() <= self.max_keys && !expired {
                break;
            }
            self.order.pop_front();
            if live.is_some() {
                self.keys.remove(&front.key);
            }
        }
    }
}

//! The write operations, as the writer thread runs them inside the batch
//! transaction (each in its own savepoint, see `writer.rs`).
//!
//! `seq` comes from a cache of each room's newest `seq`, loaded from the
//! primary-key index on first use and advanced by every insert. The cache
//! describes the open transaction: the writer clears it whenever a batch is
//! rolled back, and an operation touches it only after its last statement
//! succeeded, so a request rolled back to its savepoint leaves it unchanged.
//!
//! Idempotency keys follow the same rule: an append records its key in the
//! [`IdempotencyWindow`] after its insert, as pending; the writer commits the
//! pending keys after `COMMIT` and discards them after a rollback.

use std::collections::HashMap;

use chat_core::{
    Appended, Message, NewMessage, Role, RoomRecord, StoreError, TokenRecord, UserRecord,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::idempotency::IdempotencyWindow;
use crate::rows::{self, kind_str, role_str, to_i64, Db};
use crate::Error;

/// A room's id and newest `seq`, as of the open transaction.
#[derive(Debug, Clone, Copy)]
struct RoomSlot {
    id: i64,
    last_seq: i64,
}

/// The writer's connection, its room cache and the idempotency window.
#[derive(Debug)]
pub(crate) struct Ops {
    conn: Connection,
    rooms: HashMap<String, RoomSlot>,
    room_cache: usize,
    keys: IdempotencyWindow,
}

impl Ops {
    pub(crate) fn new(conn: Connection, room_cache: usize, keys: IdempotencyWindow) -> Self {
        Ops {
            conn,
            rooms: HashMap::new(),
            room_cache,
            keys,
        }
    }

    /// The batch committed: its idempotency keys join the window. Returns
    /// the number of keys the window holds.
    pub(crate) fn commit_keys(&mut self) -> usize {
        self.keys.commit();
        self.keys.len()
    }

    /// The batch was rolled back: its idempotency keys are forgotten.
    pub(crate) fn discard_keys(&mut self) {
        self.keys.discard();
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn into_conn(self) -> Connection {
        self.conn
    }

    /// Forgets every cached room; called when a batch is rolled back.
    pub(crate) fn forget_rooms(&mut self) {
        self.rooms.clear();
    }

    /// The room's id and newest `seq`, from the cache or the indexes.
    fn room(&mut self, name: &str) -> Result<Option<RoomSlot>, StoreError> {
        if let Some(slot) = self.rooms.get(name) {
            return Ok(Some(*slot));
        }
        let slot = self
            .conn
            .prepare_cached(
                "SELECT id, COALESCE((SELECT MAX(seq) FROM messages WHERE room_id = rooms.id), 0)
                 FROM rooms WHERE name = ?1",
            )
            .and_then(|mut st| {
                st.query_row([name], |r| {
                    Ok(RoomSlot {
                        id: r.get(0)?,
                        last_seq: r.get(1)?,
                    })
                })
                .optional()
            })
            .db()?;
        if let Some(slot) = slot {
            if self.rooms.len() >= self.room_cache {
                self.rooms.clear();
            }
            self.rooms.insert(name.to_owned(), slot);
        }
        Ok(slot)
    }

    fn room_id(&mut self, name: &str) -> Result<i64, StoreError> {
        Ok(self.room(name)?.ok_or(StoreError::NotFound)?.id)
    }

    pub(crate) fn create_user(&mut self, u: UserRecord) -> Result<(), StoreError> {
        let created_at = to_i64("created_at", u.created_at).db()?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .and_then(|mut st| st.execute(params![u.name, u.password_hash, created_at]))
            .db()?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists);
        }
        Ok(())
    }

    pub(crate) fn put_token(&mut self, t: TokenRecord) -> Result<(), StoreError> {
        let expires_at = to_i64("expires_at", t.expires_at).db()?;
        self.conn
            .prepare_cached(
                "INSERT INTO tokens (token_hash, user, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (token_hash) DO UPDATE
                 SET user = excluded.user, expires_at = excluded.expires_at",
            )
            .and_then(|mut st| st.execute(params![t.token_hash, t.user, expires_at]))
            .db()?;
        Ok(())
    }

    pub(crate) fn put_file(&mut self, f: chat_core::FileRecord) -> Result<(), StoreError> {
        let slot = self.room(&f.room)?.ok_or(StoreError::NotFound)?;
        let size = to_i64("size", f.file.size).db()?;
        let created_at = to_i64("created_at", f.created_at).db()?;
        let res = self
            .conn
            .prepare_cached(
                "INSERT INTO files (id, room_id, uploader, name, size, mime_type, sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    f.file.id, slot.id, f.uploader, f.file.name, size, f.file.mime, f.sha256, created_at
                ])
            });
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(e) => Err(Error::Sqlite(e).into()),
        }
    }

    pub(crate) fn set_read_marker(
        &mut self,
        user: &str,
        room: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        let slot = self.room(room)?.ok_or(StoreError::NotFound)?;
        let seq = to_i64("seq", seq).db()?;
        self.conn
            .prepare_cached(
                "INSERT INTO read_markers (user, room_id, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, room_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            )
            .and_then(|mut st| st.execute(params![user, slot.id, seq]))
            .db()?;
        Ok(())
    }

    pub(crate) fn delete_token(&mut self, token_hash: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM tokens WHERE token_hash = ?1")
            .and_then(|mut st| st.execute([token_hash]))
            .db()?;
        Ok(())
    }

    pub(crate) fn create_room(
        &mut self,
        room: RoomRecord,
        members: &[(String, Role)],
    ) -> Result<(), StoreError> {
        let created_at = to_i64("created_at", room.created_at).db()?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO rooms (name, kind, topic, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    room.name,
                    room.kind,
                    room.topic,
                    room.created_by,
                    created_at
                ])
            })
            .db()?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists);
        }
        let id = self.conn.last_insert_rowid();
        for (user, role) in members {
            self.upsert_member(id, user, *role)?;
        }
        Ok(())
    }

    fn upsert_member(&mut self, room_id: i64, user: &str, role: Role) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO memberships (room_id, user, role) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room_id, user) DO UPDATE SET role = excluded.role",
            )
            .and_then(|mut st| st.execute(params![room_id, user, role_str(role)]))
            .db()?;
        Ok(())
    }

    pub(crate) fn set_member(
        &mut self,
        room: &str,
        user: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        let id = self.room_id(room)?;
        self.upsert_member(id, user, role)
    }

    pub(crate) fn remove_member(&mut self, room: &str, user: &str) -> Result<bool, StoreError> {
        let id = self.room_id(room)?;
        let removed = self
            .conn
            .prepare_cached("DELETE FROM memberships WHERE room_id = ?1 AND user = ?2")
            .and_then(|mut st| st.execute(params![id, user]))
            .db()?;
        Ok(removed > 0)
    }

    /// Appends with the room's next `seq`, or returns the earlier message
    /// with the same (room, sender, client_id) if the idempotency window
    /// still holds it. Writes with one statement and nothing else that a
    /// failure would have to undo: the writer runs it without a savepoint.
    pub(crate) fn append(&mut self, m: NewMessage) -> Result<Appended, StoreError> {
        let slot = self.room(&m.room)?.ok_or(StoreError::NotFound)?;
        let key = match &m.client_id {
            Some(client_id) => {
                let key = self.keys.key(slot.id, &m.sender, client_id);
                if let Some(seq) = self.keys.find(key, m.ts) {
                    if let Some(message) = self.original(slot.id, seq, &m)? {
                        return Ok(Appended {
                            message,
                            duplicate: true,
                        });
                    }
                }
                Some(key)
            }
            None => None,
        };
        let ts = to_i64("ts", m.ts).db()?;
        let seq = slot.last_seq + 1;
        let file_json = match &m.file {
            Some(f) => Some(serde_json::to_string(f).map_err(StoreError::backend)?),
            None => None,
        };
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (room_id, seq, ts, sender, kind, body, client_id, file)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    slot.id,
                    seq,
                    ts,
                    m.sender,
                    kind_str(m.kind),
                    m.body,
                    m.client_id,
                    file_json
                ])
            });
        if let Err(e) = inserted {
            // The cached seq may be stale (another process wrote the file):
            // reload it next time rather than fail forever.
            self.rooms.remove(&m.room);
            return Err(Error::Sqlite(e).into());
        }
        if let Some(cached) = self.rooms.get_mut(&m.room) {
            cached.last_seq = seq;
        }
        let stored_seq = rows::to_u64("messages.seq", seq).db()?;
        // Last, once nothing can fail: the key is pending until COMMIT.
        if let Some(key) = key {
            self.keys.record(key, seq, m.ts);
        }
        Ok(Appended {
            message: Message {
                room: m.room,
                seq: stored_seq,
                sender: m.sender,
                body: m.body,
                ts: m.ts,
                kind: m.kind,
                client_id: m.client_id,
                file: m.file,
            },
            duplicate: false,
        })
    }

    /// The message at (`room_id`, `seq`), which the idempotency window named
    /// for `m`'s key, if it is `m`'s original: same sender and `client_id`.
    /// Anything else (a hash collision) is `None`, and `m` is stored.
    fn original(
        &self,
        room_id: i64,
        seq: i64,
        m: &NewMessage,
    ) -> Result<Option<Message>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, ts, sender, kind, body, client_id, file
                 FROM messages WHERE room_id = ?1 AND seq = ?2",
            )
            .db()?;
        let mut found = st.query(params![room_id, seq]).db()?;
        let Some(row) = found.next().db()? else {
            tracing::debug!(room = %m.room, seq, "idempotency key names no stored message");
            return Ok(None);
        };
        let message = rows::message(&m.room, row).db()?;
        if message.sender == m.sender && message.client_id == m.client_id {
            Ok(Some(message))
        } else {
            tracing::debug!(room = %m.room, seq, "idempotency key hash collision");
            Ok(None)
        }
    }
}

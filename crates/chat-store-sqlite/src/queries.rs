//! The read queries, run on a reader connection in a blocking task.
//!
//! History pages are range scans of the `(room_id, seq)` primary key and
//! `seq_at` one probe of the `(room_id, ts)` index, so both cost the same on
//! a room of ten messages and of millions.

use chat_core::{HistoryQuery, Message, Role, RoomRecord, StoreError, TokenRecord, UserRecord};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::rows::{self, clamp_i64, parse_role, to_u64, Db};
use crate::Error;

fn room_record(row: &Row<'_>) -> Result<RoomRecord, Error> {
    Ok(RoomRecord {
        name: row.get(0)?,
        kind: row.get(1)?,
        topic: row.get(2)?,
        created_by: row.get(3)?,
        created_at: to_u64("rooms.created_at", row.get(4)?)?,
    })
}

/// The id of a room, `NotFound` when there is none.
fn room_id(conn: &Connection, room: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT id FROM rooms WHERE name = ?1")
        .and_then(|mut st| st.query_row([room], |r| r.get(0)).optional())
        .db()?
        .ok_or(StoreError::NotFound)
}

pub(crate) fn ping(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("SELECT 1")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
        .db()?;
    Ok(())
}

pub(crate) fn user(conn: &Connection, name: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = conn
        .prepare_cached("SELECT name, password_hash, created_at FROM users WHERE name = ?1")
        .and_then(|mut st| {
            st.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .db()?;
    row.map(|(name, password_hash, created_at)| {
        Ok(UserRecord {
            name,
            password_hash,
            created_at: to_u64("users.created_at", created_at).db()?,
        })
    })
    .transpose()
}

pub(crate) fn token(conn: &Connection, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
    let row = conn
        .prepare_cached("SELECT token_hash, user, expires_at FROM tokens WHERE token_hash = ?1")
        .and_then(|mut st| {
            st.query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .db()?;
    row.map(|(token_hash, user, expires_at)| {
        Ok(TokenRecord {
            token_hash,
            user,
            expires_at: to_u64("tokens.expires_at", expires_at).db()?,
        })
    })
    .transpose()
}

pub(crate) fn room(conn: &Connection, name: &str) -> Result<Option<RoomRecord>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT name, kind, topic, created_by, created_at FROM rooms WHERE name = ?1",
        )
        .db()?;
    let mut rows = st.query([name]).db()?;
    match rows.next().db()? {
        Some(row) => Ok(Some(room_record(row).db()?)),
        None => Ok(None),
    }
}

pub(crate) fn rooms_of_kinds(
    conn: &Connection,
    kinds: &[String],
    limit: u32,
) -> Result<Vec<RoomRecord>, StoreError> {
    let kinds = serde_json::to_string(kinds).map_err(StoreError::backend)?;
    let mut st = conn
        .prepare_cached(
            "SELECT name, kind, topic, created_by, created_at FROM rooms
             WHERE kind IN (SELECT value FROM json_each(?1)) ORDER BY name LIMIT ?2",
        )
        .db()?;
    let mut rows = st.query(params![kinds, limit]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        out.push(room_record(row).db()?);
    }
    Ok(out)
}

pub(crate) fn memberships(
    conn: &Connection,
    user: &str,
) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT r.name, r.kind, r.topic, r.created_by, r.created_at, m.role
             FROM memberships m JOIN rooms r ON r.id = m.room_id
             WHERE m.user = ?1 ORDER BY r.name",
        )
        .db()?;
    let mut rows = st.query([user]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        let role = parse_role(row.get_ref(5).db()?.as_str().db()?).db()?;
        out.push((room_record(row).db()?, role));
    }
    Ok(out)
}

pub(crate) fn member_role(
    conn: &Connection,
    room: &str,
    user: &str,
) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = conn
        .prepare_cached(
            "SELECT m.role FROM memberships m JOIN rooms r ON r.id = m.room_id
             WHERE r.name = ?1 AND m.user = ?2",
        )
        .and_then(|mut st| st.query_row([room, user], |r| r.get(0)).optional())
        .db()?;
    role.map(|r| parse_role(&r).db()).transpose()
}

pub(crate) fn members(conn: &Connection, room: &str) -> Result<Vec<(String, Role)>, StoreError> {
    let id = room_id(conn, room)?;
    let mut st = conn
        .prepare_cached("SELECT user, role FROM memberships WHERE room_id = ?1 ORDER BY user")
        .db()?;
    let mut rows = st.query([id]).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        let role = parse_role(row.get_ref(1).db()?.as_str().db()?).db()?;
        out.push((row.get(0).db()?, role));
    }
    Ok(out)
}

pub(crate) fn history(
    conn: &Connection,
    room: &str,
    q: HistoryQuery,
) -> Result<Vec<Message>, StoreError> {
    let id = room_id(conn, room)?;
    if q.limit == 0 {
        return Ok(Vec::new());
    }
    let after = q.after.map_or(0, clamp_i64);
    let before = q.before.map_or(i64::MAX, clamp_i64);
    // With `after`, read forward from it; otherwise backward from `before`.
    let forward = q.after.is_some();
    let sql = if forward {
        "SELECT seq, ts, sender, kind, body, client_id, file FROM messages
         WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4"
    } else {
        "SELECT seq, ts, sender, kind, body, client_id, file FROM messages
         WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
    };
    let mut st = conn.prepare_cached(sql).db()?;
    let mut rows = st.query(params![id, after, before, q.limit]).db()?;
    let mut out = Vec::with_capacity(q.limit.min(1024) as usize);
    while let Some(row) = rows.next().db()? {
        out.push(rows::message(room, row).db()?);
    }
    if !forward {
        out.reverse();
    }
    Ok(out)
}

fn max_seq(conn: &Connection, id: i64) -> Result<u64, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM messages WHERE room_id = ?1")
        .and_then(|mut st| st.query_row([id], |r| r.get(0)))
        .db()?;
    to_u64("messages.seq", max.unwrap_or(0)).db()
}

pub(crate) fn last_seq(conn: &Connection, room: &str) -> Result<u64, StoreError> {
    max_seq(conn, room_id(conn, room)?)
}

/// The `seq` of the earliest message at or after `ts`, one index probe.
/// Timestamps grow with `seq` (the engine stamps messages as it appends
/// them), so this is the first `seq` at or after `ts`, as the trait asks; were
/// two concurrent appends stamped out of order, the answer is off by them.
pub(crate) fn seq_at(conn: &Connection, room: &str, ts: u64) -> Result<u64, StoreError> {
    let id = room_id(conn, room)?;
    let seq: Option<i64> = conn
        .prepare_cached(
            "SELECT seq FROM messages WHERE room_id = ?1 AND ts >= ?2
             ORDER BY ts ASC, seq ASC LIMIT 1",
        )
        .and_then(|mut st| {
            st.query_row(params![id, clamp_i64(ts)], |r| r.get(0))
                .optional()
        })
        .db()?;
    match seq {
        Some(seq) => to_u64("messages.seq", seq).db(),
        None => Ok(max_seq(conn, id)? + 1),
    }
}

/// A file by id, with its room's name.
pub(crate) fn file(
    conn: &Connection,
    id: &str,
) -> Result<Option<chat_core::FileRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT f.id, f.name, f.size, f.mime_type, f.uploader, f.sha256, f.created_at, r.name
         FROM files f JOIN rooms r ON r.id = f.room_id WHERE f.id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([id], |r| {
            let room: String = r.get(7)?;
            Ok(crate::rows::file(room, r))
        })
        .optional()
    })
    .db()?
    .transpose()
    .db()
}

/// A room's files, newest first.
pub(crate) fn files(
    conn: &Connection,
    room: &str,
    limit: u32,
) -> Result<Vec<chat_core::FileRecord>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT f.id, f.name, f.size, f.mime_type, f.uploader, f.sha256, f.created_at
             FROM files f JOIN rooms r ON r.id = f.room_id
             WHERE r.name = ?1 ORDER BY f.created_at DESC, f.rowid DESC LIMIT ?2",
        )
        .db()?;
    let rows = st
        .query_map(params![room, limit], |r| {
            Ok(crate::rows::file(room.to_owned(), r))
        })
        .db()?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.db()?.db()?);
    }
    Ok(out)
}

/// Total bytes a user uploaded.
pub(crate) fn bytes_uploaded_by(conn: &Connection, user: &str) -> Result<u64, StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(size), 0) FROM files WHERE uploader = ?1")
        .and_then(|mut st| st.query_row([user], |r| r.get(0)))
        .db()?;
    crate::rows::to_u64("files.size", total).db()
}

/// A user's read markers: (room, seq).
pub(crate) fn read_markers(
    conn: &Connection,
    user: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT r.name, m.seq FROM read_markers m JOIN rooms r ON r.id = m.room_id
             WHERE m.user = ?1 ORDER BY r.name",
        )
        .db()?;
    let rows = st
        .query_map([user], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .db()?;
    let mut out = Vec::new();
    for row in rows {
        let (room, seq) = row.db()?;
        out.push((room, crate::rows::to_u64("read_markers.seq", seq).db()?));
    }
    Ok(out)
}

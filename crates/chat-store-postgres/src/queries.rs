//! The reads, one statement (one round trip) each.
//!
//! Reads that must tell "no such room" from "nothing there" select the room
//! row and `LEFT JOIN` what they look for, so an unknown room is no row at
//! all. History pages are range scans of the `(room_id, seq)` primary key,
//! `seq_at` one probe of the `(room_id, ts, seq)` index and `last_seq` a
//! read of the room's counter: all cost the same on a room of ten messages
//! and of millions.

use chat_core::{
    FileRecord, HistoryQuery, Message, Role, RoomRecord, StoreError, TokenRecord, UserRecord,
};
use deadpool_postgres::ClientWrapper;

use crate::rows::{self, clamp_i64, parse_role, to_u64, Db};

pub(crate) async fn ping(c: &ClientWrapper) -> Result<(), StoreError> {
    c.simple_query("SELECT 1").await.db()?;
    Ok(())
}

pub(crate) async fn setting(c: &ClientWrapper, name: &str) -> Result<String, StoreError> {
    let st = c.prepare_cached("SELECT current_setting($1)").await.db()?;
    c.query_one(&st, &[&name]).await.db()?.try_get(0).db()
}

pub(crate) async fn user(c: &ClientWrapper, name: &str) -> Result<Option<UserRecord>, StoreError> {
    let st = c
        .prepare_cached("SELECT name, password_hash, created_at FROM users WHERE name = $1")
        .await
        .db()?;
    let Some(row) = c.query_opt(&st, &[&name]).await.db()? else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        name: row.try_get(0).db()?,
        password_hash: row.try_get(1).db()?,
        created_at: to_u64("users.created_at", row.try_get(2).db()?).db()?,
    }))
}

pub(crate) async fn token(
    c: &ClientWrapper,
    hash: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT token_hash, user_name, expires_at FROM tokens WHERE token_hash = $1",
        )
        .await
        .db()?;
    let Some(row) = c.query_opt(&st, &[&hash]).await.db()? else {
        return Ok(None);
    };
    Ok(Some(TokenRecord {
        token_hash: row.try_get(0).db()?,
        user: row.try_get(1).db()?,
        expires_at: to_u64("tokens.expires_at", row.try_get(2).db()?).db()?,
    }))
}

pub(crate) async fn room(c: &ClientWrapper, name: &str) -> Result<Option<RoomRecord>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT name, kind, topic, created_by, created_at FROM rooms WHERE name = $1",
        )
        .await
        .db()?;
    match c.query_opt(&st, &[&name]).await.db()? {
        Some(row) => Ok(Some(rows::room_record(&row, 0).db()?)),
        None => Ok(None),
    }
}

pub(crate) async fn rooms_of_kinds(
    c: &ClientWrapper,
    kinds: &[String],
    limit: u32,
) -> Result<Vec<RoomRecord>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT name, kind, topic, created_by, created_at FROM rooms
             WHERE kind = ANY($1) ORDER BY name LIMIT $2",
        )
        .await
        .db()?;
    let rows = c.query(&st, &[&kinds, &i64::from(limit)]).await.db()?;
    rows.iter()
        .map(|row| rows::room_record(row, 0).db())
        .collect()
}

pub(crate) async fn memberships(
    c: &ClientWrapper,
    user: &str,
) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT r.name, r.kind, r.topic, r.created_by, r.created_at, m.role
             FROM memberships m JOIN rooms r ON r.id = m.room_id
             WHERE m.user_name = $1 ORDER BY r.name",
        )
        .await
        .db()?;
    let rows = c.query(&st, &[&user]).await.db()?;
    rows.iter()
        .map(|row| {
            let role = parse_role(row.try_get(5).db()?).db()?;
            Ok((rows::room_record(row, 0).db()?, role))
        })
        .collect()
}

pub(crate) async fn member_role(
    c: &ClientWrapper,
    room: &str,
    user: &str,
) -> Result<Option<Role>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT m.role FROM memberships m JOIN rooms r ON r.id = m.room_id
             WHERE r.name = $1 AND m.user_name = $2",
        )
        .await
        .db()?;
    match c.query_opt(&st, &[&room, &user]).await.db()? {
        Some(row) => Ok(Some(parse_role(row.try_get(0).db()?).db()?)),
        None => Ok(None),
    }
}

pub(crate) async fn members(
    c: &ClientWrapper,
    room: &str,
) -> Result<Vec<(String, Role)>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT m.user_name, m.role FROM rooms r
             LEFT JOIN memberships m ON m.room_id = r.id
             WHERE r.name = $1 ORDER BY m.user_name",
        )
        .await
        .db()?;
    let rows = c.query(&st, &[&room]).await.db()?;
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        // A room without members is one row of NULLs.
        if let Some(user) = row.try_get::<_, Option<String>>(0).db()? {
            out.push((user, parse_role(row.try_get(1).db()?).db()?));
        }
    }
    Ok(out)
}

const HISTORY_FORWARD: &str = "
SELECT m.seq, m.ts, m.sender, m.kind, m.body, m.client_id, m.file FROM rooms r
LEFT JOIN LATERAL (
    SELECT seq, ts, sender, kind, body, client_id, file FROM messages
    WHERE room_id = r.id AND seq > $2 AND seq < $3 ORDER BY seq ASC LIMIT $4
) m ON true
WHERE r.name = $1";

const HISTORY_BACKWARD: &str = "
SELECT m.seq, m.ts, m.sender, m.kind, m.body, m.client_id, m.file FROM rooms r
LEFT JOIN LATERAL (
    SELECT seq, ts, sender, kind, body, client_id, file FROM messages
    WHERE room_id = r.id AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4
) m ON true
WHERE r.name = $1";

pub(crate) async fn history(
    c: &ClientWrapper,
    room: &str,
    q: HistoryQuery,
) -> Result<Vec<Message>, StoreError> {
    let after = q.after.map_or(0, clamp_i64);
    let before = q.before.map_or(i64::MAX, clamp_i64);
    // With `after`, read forward from it; otherwise backward from `before`.
    let forward = q.after.is_some();
    let sql = if forward {
        HISTORY_FORWARD
    } else {
        HISTORY_BACKWARD
    };
    let st = c.prepare_cached(sql).await.db()?;
    let rows = c
        .query(&st, &[&room, &after, &before, &i64::from(q.limit)])
        .await
        .db()?;
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        // An empty page is one row of NULLs.
        if row.try_get::<_, Option<i64>>(0).db()?.is_some() {
            out.push(rows::message(room, row, 0).db()?);
        }
    }
    if !forward {
        out.reverse();
    }
    Ok(out)
}

pub(crate) async fn last_seq(c: &ClientWrapper, room: &str) -> Result<u64, StoreError> {
    let st = c
        .prepare_cached("SELECT next_seq - 1 FROM rooms WHERE name = $1")
        .await
        .db()?;
    let row = c
        .query_opt(&st, &[&room])
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
    to_u64("rooms.next_seq", row.try_get(0).db()?).db()
}

/// The `seq` of the earliest message at or after `ts`. Timestamps grow with
/// `seq` (the engine stamps messages as it appends them), so this is the
/// first `seq` at or after `ts`, as the trait asks; were two concurrent
/// appends stamped out of order, the answer is off by them.
pub(crate) async fn seq_at(c: &ClientWrapper, room: &str, ts: u64) -> Result<u64, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT r.next_seq, (SELECT m.seq FROM messages m
                 WHERE m.room_id = r.id AND m.ts >= $2 ORDER BY m.ts, m.seq LIMIT 1)
             FROM rooms r WHERE r.name = $1",
        )
        .await
        .db()?;
    let row = c
        .query_opt(&st, &[&room, &clamp_i64(ts)])
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
    let seq: Option<i64> = row.try_get(1).db()?;
    let seq = match seq {
        Some(seq) => seq,
        // None at or after `ts`: one past the newest.
        None => row.try_get(0).db()?,
    };
    to_u64("messages.seq", seq).db()
}

const FILE_COLUMNS: &str =
    "f.id, f.name, f.size, f.mime_type, f.uploader, f.sha256, f.created_at, r.name";

pub(crate) async fn file(c: &ClientWrapper, id: &str) -> Result<Option<FileRecord>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files f JOIN rooms r ON r.id = f.room_id WHERE f.id = $1"
        ))
        .await
        .db()?;
    match c.query_opt(&st, &[&id]).await.db()? {
        Some(row) => Ok(Some(rows::file_record(&row).db()?)),
        None => Ok(None),
    }
}

/// A room's files, newest first (by time, then by insertion).
pub(crate) async fn files(
    c: &ClientWrapper,
    room: &str,
    limit: u32,
) -> Result<Vec<FileRecord>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files f JOIN rooms r ON r.id = f.room_id
             WHERE r.name = $1 ORDER BY f.created_at DESC, f.n DESC LIMIT $2"
        ))
        .await
        .db()?;
    let rows = c.query(&st, &[&room, &i64::from(limit)]).await.db()?;
    rows.iter().map(|row| rows::file_record(row).db()).collect()
}

pub(crate) async fn bytes_uploaded_by(c: &ClientWrapper, user: &str) -> Result<u64, StoreError> {
    let st = c
        .prepare_cached("SELECT COALESCE(SUM(size), 0)::BIGINT FROM files WHERE uploader = $1")
        .await
        .db()?;
    let total: i64 = c.query_one(&st, &[&user]).await.db()?.try_get(0).db()?;
    to_u64("files.size", total).db()
}

pub(crate) async fn read_markers(
    c: &ClientWrapper,
    user: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT r.name, m.seq FROM read_markers m JOIN rooms r ON r.id = m.room_id
             WHERE m.user_name = $1 ORDER BY r.name",
        )
        .await
        .db()?;
    let rows = c.query(&st, &[&user]).await.db()?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0).db()?,
                to_u64("read_markers.seq", row.try_get(1).db()?).db()?,
            ))
        })
        .collect()
}

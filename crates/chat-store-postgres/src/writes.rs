//! The writes. Each commits before it returns, with `synchronous_commit`
//! on, so a returned write is flushed to the server's WAL.
//!
//! Single-statement writes run in autocommit; uniqueness is decided by the
//! server (`ON CONFLICT`), never by a read-then-write race between nodes.

use chat_core::{
    Appended, FileRecord, Message, NewMessage, Role, RoomRecord, StoreError, TokenRecord,
    UserRecord,
};
use deadpool_postgres::ClientWrapper;

use crate::rows::{self, kind_str, role_str, to_i64, Db};
use crate::Error;

pub(crate) async fn create_user(c: &ClientWrapper, u: &UserRecord) -> Result<(), StoreError> {
    let st = c
        .prepare_cached(
            "INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .await
        .db()?;
    let created_at = to_i64("created_at", u.created_at).db()?;
    let n = c
        .execute(&st, &[&u.name, &u.password_hash, &created_at])
        .await
        .db()?;
    if n == 0 {
        return Err(StoreError::AlreadyExists);
    }
    Ok(())
}

pub(crate) async fn put_token(c: &ClientWrapper, t: &TokenRecord) -> Result<(), StoreError> {
    let st = c
        .prepare_cached(
            "INSERT INTO tokens (token_hash, user_name, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (token_hash)
             DO UPDATE SET user_name = EXCLUDED.user_name, expires_at = EXCLUDED.expires_at",
        )
        .await
        .db()?;
    let expires_at = to_i64("expires_at", t.expires_at).db()?;
    c.execute(&st, &[&t.token_hash, &t.user, &expires_at])
        .await
        .db()?;
    Ok(())
}

pub(crate) async fn delete_token(c: &ClientWrapper, hash: &str) -> Result<(), StoreError> {
    let st = c
        .prepare_cached("DELETE FROM tokens WHERE token_hash = $1")
        .await
        .db()?;
    c.execute(&st, &[&hash]).await.db()?;
    Ok(())
}

pub(crate) async fn create_room(
    c: &mut ClientWrapper,
    room: &RoomRecord,
    members: &[(String, Role)],
) -> Result<(), StoreError> {
    // One row per user, the last role given winning: one statement cannot
    // upsert the same row twice.
    let mut unique: Vec<(&str, &str)> = Vec::with_capacity(members.len());
    for (user, role) in members {
        match unique.iter_mut().find(|(u, _)| *u == user.as_str()) {
            Some(entry) => entry.1 = role_str(*role),
            None => unique.push((user, role_str(*role))),
        }
    }
    let (users, roles): (Vec<&str>, Vec<&str>) = unique.into_iter().unzip();
    let created_at = to_i64("created_at", room.created_at).db()?;

    let tx = c.transaction().await.db()?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO rooms (name, kind, topic, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .await
        .db()?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &room.name,
        &room.kind,
        &room.topic,
        &room.created_by,
        &created_at,
    ];
    let Some(row) = tx.query_opt(&insert, &params).await.db()? else {
        // Dropping the transaction rolls it back.
        return Err(StoreError::AlreadyExists);
    };
    let id: i64 = row.try_get(0).db()?;
    if !users.is_empty() {
        let add = tx
            .prepare_cached(
                "INSERT INTO memberships (room_id, user_name, role)
                 SELECT $1, u, r FROM unnest($2::text[], $3::text[]) AS t(u, r)",
            )
            .await
            .db()?;
        tx.execute(&add, &[&id, &users, &roles]).await.db()?;
    }
    tx.commit().await.db()
}

pub(crate) async fn set_member(
    c: &ClientWrapper,
    room: &str,
    user: &str,
    role: Role,
) -> Result<(), StoreError> {
    let st = c
        .prepare_cached(
            "INSERT INTO memberships (room_id, user_name, role)
             SELECT id, $2, $3 FROM rooms WHERE name = $1
             ON CONFLICT (room_id, user_name) DO UPDATE SET role = EXCLUDED.role",
        )
        .await
        .db()?;
    let n = c
        .execute(&st, &[&room, &user, &role_str(role)])
        .await
        .db()?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn remove_member(
    c: &ClientWrapper,
    room: &str,
    user: &str,
) -> Result<bool, StoreError> {
    let st = c
        .prepare_cached(
            "WITH r AS (SELECT id FROM rooms WHERE name = $1),
                  d AS (DELETE FROM memberships
                        WHERE room_id = (SELECT id FROM r) AND user_name = $2 RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM r), EXISTS (SELECT 1 FROM d)",
        )
        .await
        .db()?;
    let row = c.query_one(&st, &[&room, &user]).await.db()?;
    if !row.try_get::<_, bool>(0).db()? {
        return Err(StoreError::NotFound);
    }
    row.try_get(1).db()
}

/// Takes the room's next `seq` (row-locking the room until commit, so
/// appends to one room commit in `seq` order) and inserts the message with
/// it; a repeated client id inserts nothing.
const APPEND: &str = "
WITH r AS (
    UPDATE rooms SET next_seq = next_seq + 1 WHERE name = $1 RETURNING id, next_seq - 1 AS seq
)
INSERT INTO messages (room_id, seq, ts, sender, kind, body, client_id, file)
SELECT id, seq, $2, $3, $4, $5, $6, $7 FROM r
ON CONFLICT (room_id, sender, client_id) WHERE client_id IS NOT NULL DO NOTHING
RETURNING seq";

const EARLIER: &str = "
SELECT m.seq, m.ts, m.sender, m.kind, m.body, m.client_id, m.file
FROM messages m JOIN rooms r ON r.id = m.room_id
WHERE r.name = $1 AND m.sender = $2 AND m.client_id = $3";

pub(crate) async fn append(c: &mut ClientWrapper, m: NewMessage) -> Result<Appended, StoreError> {
    let ts = to_i64("ts", m.ts).db()?;
    let kind = kind_str(m.kind);
    let file = rows::file_json(m.file.as_ref()).db()?;
    let stored = |seq: i64, m: NewMessage| -> Result<Appended, StoreError> {
        Ok(Appended {
            message: Message {
                seq: rows::to_u64("messages.seq", seq).db()?,
                room: m.room,
                sender: m.sender,
                body: m.body,
                ts: m.ts,
                kind: m.kind,
                client_id: m.client_id,
                file: m.file,
            },
            duplicate: false,
        })
    };
    let Some(client_id) = m.client_id.clone() else {
        // Nothing can conflict: one statement in autocommit, one round trip.
        let st = c.prepare_cached(APPEND).await.db()?;
        let none: Option<&str> = None;
        let row = c
            .query_opt(
                &st,
                &[&m.room, &ts, &m.sender, &kind, &m.body, &none, &file],
            )
            .await
            .db()?
            .ok_or(StoreError::NotFound)?;
        return stored(row.try_get(0).db()?, m);
    };

    // A repeated client id must not consume a seq: run the append in a
    // transaction and roll it back when the insert conflicts.
    let tx = c.transaction().await.db()?;
    let st = tx.prepare_cached(APPEND).await.db()?;
    let row = tx
        .query_opt(
            &st,
            &[&m.room, &ts, &m.sender, &kind, &m.body, &client_id, &file],
        )
        .await
        .db()?;
    if let Some(row) = row {
        let seq = row.try_get(0).db()?;
        tx.commit().await.db()?;
        return stored(seq, m);
    }
    tx.rollback().await.db()?;
    // Unknown room, or the client id is taken: the earlier message (the
    // room's row lock made sure it had committed) is visible now.
    let st = c.prepare_cached(EARLIER).await.db()?;
    match c
        .query_opt(&st, &[&m.room, &m.sender, &client_id])
        .await
        .db()?
    {
        Some(row) => Ok(Appended {
            message: rows::message(&m.room, &row, 0).db()?,
            duplicate: true,
        }),
        None => {
            let exists = c
                .query_opt("SELECT 1 FROM rooms WHERE name = $1", &[&m.room])
                .await
                .db()?
                .is_some();
            if exists {
                // The conflicting row vanished: messages are never deleted.
                Err(Error::CorruptRow {
                    column: "messages.client_id",
                    value: client_id,
                })
                .db()
            } else {
                Err(StoreError::NotFound)
            }
        }
    }
}

pub(crate) async fn put_file(c: &ClientWrapper, f: &FileRecord) -> Result<(), StoreError> {
    let st = c
        .prepare_cached(
            "WITH r AS (SELECT id FROM rooms WHERE name = $2),
                  i AS (INSERT INTO files
                            (id, room_id, uploader, name, size, mime_type, sha256, created_at)
                        SELECT $1, id, $3, $4, $5, $6, $7, $8 FROM r
                        ON CONFLICT (id) DO NOTHING RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM r), EXISTS (SELECT 1 FROM i)",
        )
        .await
        .db()?;
    let size = to_i64("size", f.file.size).db()?;
    let created_at = to_i64("created_at", f.created_at).db()?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &f.file.id,
        &f.room,
        &f.uploader,
        &f.file.name,
        &size,
        &f.file.mime,
        &f.sha256,
        &created_at,
    ];
    let row = c.query_one(&st, &params).await.db()?;
    if !row.try_get::<_, bool>(0).db()? {
        return Err(StoreError::NotFound);
    }
    if !row.try_get::<_, bool>(1).db()? {
        return Err(StoreError::AlreadyExists);
    }
    Ok(())
}

/// Moves a read marker forward; never back.
pub(crate) async fn set_read_marker(
    c: &ClientWrapper,
    user: &str,
    room: &str,
    seq: u64,
) -> Result<(), StoreError> {
    let st = c
        .prepare_cached(
            "INSERT INTO read_markers (user_name, room_id, seq)
             SELECT $1, id, $3 FROM rooms WHERE name = $2
             ON CONFLICT (user_name, room_id)
             DO UPDATE SET seq = GREATEST(read_markers.seq, EXCLUDED.seq)",
        )
        .await
        .db()?;
    let seq = to_i64("seq", seq).db()?;
    let n = c.execute(&st, &[&user, &room, &seq]).await.db()?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

//! Conversions between core types and SQLite values: roles and message kinds
//! as text, `u64` as SQLite's signed 64-bit integers.

use chat_core::{Message, MessageKind, Role, StoreError};
use rusqlite::Row;

use crate::Error;

/// Converts a rusqlite result into a store result.
pub(crate) trait Db<T> {
    /// Wraps the error as [`StoreError::Backend`].
    fn db(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| Error::Sqlite(e).into())
    }
}

impl<T> Db<T> for Result<T, rusqlite::types::FromSqlError> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| Error::from(e).into())
    }
}

impl<T> Db<T> for Result<T, Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(StoreError::from)
    }
}

pub(crate) fn role_str(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Member => "member",
        Role::Bot => "bot",
    }
}

pub(crate) fn parse_role(text: &str) -> Result<Role, Error> {
    match text {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        "bot" => Ok(Role::Bot),
        other => Err(Error::CorruptRow {
            column: "memberships.role",
            value: other.to_owned(),
        }),
    }
}

pub(crate) fn kind_str(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::User => "user",
        MessageKind::Bot => "bot",
        MessageKind::System => "system",
    }
}

pub(crate) fn parse_kind(text: &str) -> Result<MessageKind, Error> {
    match text {
        "user" => Ok(MessageKind::User),
        "bot" => Ok(MessageKind::Bot),
        "system" => Ok(MessageKind::System),
        other => Err(Error::CorruptRow {
            column: "messages.kind",
            value: other.to_owned(),
        }),
    }
}

/// A `u64` to store; SQLite integers are signed.
pub(crate) fn to_i64(what: &'static str, value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// A `u64` bound for a query, clamped to SQLite's range: no stored value is
/// above `i64::MAX`, so clamping keeps the comparison's meaning.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored integer read back as `u64`.
pub(crate) fn to_u64(column: &'static str, value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::CorruptRow {
        column,
        value: value.to_string(),
    })
}

/// A message row selected as `seq, ts, sender, kind, body, client_id, file`.
pub(crate) fn message(room: &str, row: &Row<'_>) -> Result<Message, Error> {
    let kind = parse_kind(row.get_ref(3)?.as_str()?)?;
    Ok(Message {
        room: room.to_owned(),
        seq: to_u64("messages.seq", row.get(0)?)?,
        ts: to_u64("messages.ts", row.get(1)?)?,
        sender: row.get(2)?,
        kind,
        body: row.get(4)?,
        client_id: row.get(5)?,
        file: parse_file(row.get::<_, Option<String>>(6)?)?,
    })
}

/// A message's file reference, stored as JSON.
pub(crate) fn parse_file(json: Option<String>) -> Result<Option<chat_core::FileRef>, Error> {
    json.map(|j| {
        serde_json::from_str(&j).map_err(|_| Error::CorruptRow {
            column: "messages.file",
            value: j,
        })
    })
    .transpose()
}

/// A file row selected as `id, name, size, mime_type, uploader, sha256,
/// created_at` (plus the room's name, given).
pub(crate) fn file(room: String, row: &Row<'_>) -> Result<chat_core::FileRecord, Error> {
    Ok(chat_core::FileRecord {
        file: chat_core::FileRef {
            id: row.get(0)?,
            name: row.get(1)?,
            size: to_u64("files.size", row.get(2)?)?,
            mime: row.get(3)?,
        },
        room,
        uploader: row.get(4)?,
        sha256: row.get(5)?,
        created_at: to_u64("files.created_at", row.get(6)?)?,
    })
}

//! Conversions between core types and PostgreSQL values: roles and message
//! kinds as text, `u64` as `BIGINT` (signed 64-bit).

use chat_core::{FileRecord, FileRef, Message, MessageKind, Role, RoomRecord, StoreError};
use tokio_postgres::Row;

use crate::Error;

/// Converts a backend result into a store result.
pub(crate) trait Db<T> {
    /// Wraps the error as [`StoreError::Backend`] (or the matching variant).
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<Error>> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| e.into().into())
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

/// A `u64` to store; `BIGINT` is signed.
pub(crate) fn to_i64(what: &'static str, value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// A `u64` bound for a query, clamped to `BIGINT`'s range: no stored value
/// is above `i64::MAX`, so clamping keeps the comparison's meaning.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored `BIGINT` read back as `u64`.
pub(crate) fn to_u64(column: &'static str, value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::CorruptRow {
        column,
        value: value.to_string(),
    })
}

/// A room row selected as `name, kind, topic, created_by, created_at`
/// starting at column `at`.
pub(crate) fn room_record(row: &Row, at: usize) -> Result<RoomRecord, Error> {
    Ok(RoomRecord {
        name: row.try_get(at)?,
        kind: row.try_get(at + 1)?,
        topic: row.try_get(at + 2)?,
        created_by: row.try_get(at + 3)?,
        created_at: to_u64("rooms.created_at", row.try_get(at + 4)?)?,
    })
}

/// A message row selected as `seq, ts, sender, kind, body, client_id,
/// file` starting at column `at`.
pub(crate) fn message(room: &str, row: &Row, at: usize) -> Result<Message, Error> {
    Ok(Message {
        room: room.to_owned(),
        seq: to_u64("messages.seq", row.try_get(at)?)?,
        ts: to_u64("messages.ts", row.try_get(at + 1)?)?,
        sender: row.try_get(at + 2)?,
        kind: parse_kind(row.try_get(at + 3)?)?,
        body: row.try_get(at + 4)?,
        client_id: row.try_get(at + 5)?,
        file: parse_file(row.try_get(at + 6)?)?,
    })
}

/// A message's file reference as stored: JSON text.
pub(crate) fn file_json(file: Option<&FileRef>) -> Result<Option<String>, Error> {
    file.map(|f| serde_json::to_string(f).map_err(Error::Json))
        .transpose()
}

/// A stored file reference read back.
pub(crate) fn parse_file(json: Option<String>) -> Result<Option<FileRef>, Error> {
    json.map(|j| {
        serde_json::from_str(&j).map_err(|_| Error::CorruptRow {
            column: "messages.file",
            value: j,
        })
    })
    .transpose()
}

/// A file row selected as `id, name, size, mime_type, uploader, sha256,
/// created_at, room name`.
pub(crate) fn file_record(row: &Row) -> Result<FileRecord, Error> {
    Ok(FileRecord {
        file: FileRef {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            size: to_u64("files.size", row.try_get(2)?)?,
            mime: row.try_get(3)?,
        },
        uploader: row.try_get(4)?,
        sha256: row.try_get(5)?,
        created_at: to_u64("files.created_at", row.try_get(6)?)?,
        room: row.try_get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_corrupt() {
        for role in [Role::Admin, Role::Member, Role::Bot] {
            assert_eq!(parse_role(role_str(role)).unwrap(), role);
        }
        for kind in [MessageKind::User, MessageKind::Bot, MessageKind::System] {
            assert_eq!(parse_kind(kind_str(kind)).unwrap(), kind);
        }
        assert!(matches!(parse_role("owner"), Err(Error::CorruptRow { .. })));
        assert!(matches!(parse_kind("x"), Err(Error::CorruptRow { .. })));
    }

    #[test]
    fn file_references_round_trip_as_json() {
        let f = FileRef {
            id: "f1".into(),
            name: "cat.png".into(),
            size: 10,
            mime: "image/png".into(),
        };
        let json = file_json(Some(&f)).unwrap();
        assert_eq!(parse_file(json).unwrap(), Some(f));
        assert_eq!(file_json(None).unwrap(), None);
        assert!(matches!(
            parse_file(Some("{".into())),
            Err(Error::CorruptRow { .. })
        ));
    }

    #[test]
    fn integers_outside_bigint_are_refused_or_clamped() {
        assert!(matches!(
            to_i64("ts", u64::MAX),
            Err(Error::OutOfRange { .. })
        ));
        assert_eq!(clamp_i64(u64::MAX), i64::MAX);
        assert!(matches!(
            to_u64("messages.seq", -1),
            Err(Error::CorruptRow { .. })
        ));
    }
}

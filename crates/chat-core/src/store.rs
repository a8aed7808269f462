//! The [`Store`] extension point: users, tokens, rooms, memberships and
//! messages with a per-room `seq` assigned at append.
//!
//! A store must keep two promises the engine builds on:
//! - **Ack means durable**: when [`Store::append`] returns `Ok`, the message
//!   survives a crash of the process.
//! - **Gap-free order**: `seq` starts at 1 in every room and grows by one per
//!   stored message, even under concurrent appends and across restarts.
//!
//! The `conformance` module (feature `test-support`) holds the tests every store runs.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::protocol::{FileRef, Message, MessageKind, Role};

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Unique, normalised (lower-case) user name.
    pub name: String,
    /// PHC string of the password's argon2id hash; empty for bots.
    pub password_hash: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// A session token as stored: only its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Owner.
    pub user: String,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at: u64,
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Unique room name.
    pub name: String,
    /// Room kind name; its policy is a [`Room`](crate::Room).
    pub kind: String,
    /// Topic.
    pub topic: String,
    /// Creator.
    pub created_by: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// A message to append; the store assigns `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Room name.
    pub room: String,
    /// Author.
    pub sender: String,
    /// Text.
    pub body: String,
    /// Author kind.
    pub kind: MessageKind,
    /// Idempotency key, unique per (room, sender) within the store's
    /// idempotency window (see [`Store::append`]).
    pub client_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// The file the message shares, if any.
    pub file: Option<FileRef>,
}

/// A shared file's metadata as stored (its bytes live in the engine's file
/// vault, by content hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The file's reference (id, name, size, type).
    pub file: FileRef,
    /// Room it was shared in; access follows the room.
    pub room: String,
    /// Who uploaded it.
    pub uploader: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message with its `seq`.
    pub message: Message,
    /// True when a message with the same (room, sender, client_id) had been
    /// stored before; `message` is then that earlier message.
    pub duplicate: bool,
}

/// Which page of history to read.
///
/// With `after`, the page holds the oldest messages above it (reading
/// forward); otherwise the newest messages below `before` (or the newest of
/// all), reading backward. Pages are always returned in ascending `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Exclusive upper bound.
    pub before: Option<u64>,
    /// Exclusive lower bound.
    pub after: Option<u64>,
    /// Most messages to return.
    pub limit: u32,
}

impl HistoryQuery {
    /// The newest `limit` messages.
    pub fn latest(limit: u32) -> Self {
        HistoryQuery {
            limit,
            ..Self::default()
        }
    }

    /// The oldest `limit` messages after `seq`.
    pub fn after(seq: u64, limit: u32) -> Self {
        HistoryQuery {
            after: Some(seq),
            limit,
            ..Self::default()
        }
    }

    /// The newest `limit` messages before `seq`.
    pub fn before(seq: u64, limit: u32) -> Self {
        HistoryQuery {
            before: Some(seq),
            limit,
            ..Self::default()
        }
    }
}

/// Persistence for the engine. Implementations run their blocking work off
/// the async worker threads (invariant 7).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a user; `AlreadyExists` when the name is taken.
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError>;
    /// Looks a user up by normalised name.
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Stores a token record.
    async fn put_token(&self, token: TokenRecord) -> Result<(), StoreError>;
    /// Looks a token up by its hash.
    async fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Deletes a token (logout, revocation). Deleting a missing token is Ok.
    async fn delete_token(&self, token_hash: &str) -> Result<(), StoreError>;

    /// Creates a room with its first members in one transaction;
    /// `AlreadyExists` when the name is taken.
    async fn create_room(
        &self,
        room: RoomRecord,
        members: &[(String, Role)],
    ) -> Result<(), StoreError>;
    /// Looks a room up by name.
    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError>;
    /// Rooms of the given kinds, by name, at most `limit`.
    async fn rooms_of_kinds(
        &self,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError>;
    /// The rooms a user is a member of, with the user's role.
    async fn memberships(&self, user: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError>;

    /// Adds a member or changes their role.
    async fn set_member(&self, room: &str, user: &str, role: Role) -> Result<(), StoreError>;
    /// Removes a member; returns whether they were one.
    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    /// A user's role in a room, if a member.
    async fn member_role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError>;
    /// All members of a room, by name.
    async fn members(&self, room: &str) -> Result<Vec<(String, Role)>, StoreError>;

    /// Appends a message, assigning the room's next `seq` in the same
    /// transaction. Returns only once the message is durable. A repeated
    /// (room, sender, client_id) returns the earlier message, marked
    /// `duplicate`, and stores nothing. A store may bound how long it
    /// recognizes a repeat (an idempotency window, documented by the
    /// store); within it the answer is exact.
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError>;
    /// Appends several messages as [`append`](Self::append) would, one
    /// after another and in order (so their `seq`s in a room follow the
    /// order given); one result per message, in the same order. One that
    /// fails does not stop the rest. The default appends one at a time;
    /// a store that can make them durable together (one commit) should
    /// override it: a connection's pipelined sends arrive this way.
    async fn append_many(&self, messages: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.append(message).await);
        }
        results
    }
    /// A page of history; see [`HistoryQuery`].
    async fn history(&self, room: &str, query: HistoryQuery) -> Result<Vec<Message>, StoreError>;
    /// The newest `seq` of a room (0 when empty).
    async fn last_seq(&self, room: &str) -> Result<u64, StoreError>;
    /// The first `seq` whose timestamp is at or after `ts` (one past the
    /// newest when none is), for paging history by time.
    async fn seq_at(&self, room: &str, ts: u64) -> Result<u64, StoreError>;

    /// Records a shared file's metadata. Stores without file support keep
    /// the default, which refuses with [`StoreError::Unsupported`].
    async fn put_file(&self, _file: FileRecord) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("files"))
    }
    /// A file's metadata by id.
    async fn file(&self, _id: &str) -> Result<Option<FileRecord>, StoreError> {
        Err(StoreError::Unsupported("files"))
    }
    /// A room's files, newest first, at most `limit`.
    async fn files(&self, _room: &str, _limit: u32) -> Result<Vec<FileRecord>, StoreError> {
        Err(StoreError::Unsupported("files"))
    }
    /// Total size of the files a user has uploaded (for quotas).
    async fn bytes_uploaded_by(&self, _user: &str) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported("files"))
    }

    /// Records that `user` has read `room` up to `seq` (never moving back).
    async fn set_read_marker(&self, _user: &str, _room: &str, _seq: u64) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("read markers"))
    }
    /// Every read marker of a user: (room, seq).
    async fn read_markers(&self, _user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Err(StoreError::Unsupported("read markers"))
    }

    /// Checks the store can serve requests (for health checks).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Waits until everything accepted so far is durable (for shutdown).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;

//! The wire protocol: [`ClientFrame`] and [`ServerFrame`], defined once for
//! every transport, and the size-limited [`Codec`].
//!
//! Frames are JSON objects tagged by `type`. Every client request may carry an
//! optional numeric `id`; the reply to it (or the error) echoes that `id`, so a
//! client can match replies to requests while events keep arriving.
//! `docs/protocol.md` shows an example of every frame.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Protocol version announced in [`ServerFrame::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// A user's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages membership and roles.
    Admin,
    /// An ordinary member.
    Member,
    /// A bot that is a member of the room.
    Bot,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A person.
    #[default]
    User,
    /// A bot reply.
    Bot,
    /// The server itself (joins, leaves, notices).
    System,
}

/// A shared file, as referenced by the message that shared it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Opaque, unguessable file id.
    pub id: String,
    /// Sanitised file name (never a path).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type, from the file's content.
    pub mime: String,
}

/// A stored chat message, as delivered to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Room name.
    pub room: String,
    /// Position in the room's total order, starting at 1, without gaps.
    pub seq: u64,
    /// Author's user name (or bot name).
    pub sender: String,
    /// Message text.
    pub body: String,
    /// Milliseconds since the Unix epoch, assigned by the server.
    pub ts: u64,
    /// Who wrote it.
    #[serde(default)]
    pub kind: MessageKind,
    /// The client's idempotency key, when the client sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The file this message shares, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
}

/// A file as listed by `list_files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file.
    pub file: FileRef,
    /// Who shared it.
    pub uploader: String,
    /// When, milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// A room as listed to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Unique room name.
    pub name: String,
    /// Room kind (`public`, `private`, `direct`, `announcement`, `bot`, or a
    /// host-defined kind).
    pub kind: String,
    /// Free text topic.
    #[serde(default)]
    pub topic: String,
    /// Sequence number of the newest message (0 when empty).
    #[serde(default)]
    pub last_seq: u64,
    /// The caller's role, if a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The newest `seq` the caller marked read (`mark_read`).
    #[serde(default)]
    pub last_read: u64,
    /// Messages after `last_read` (for members).
    #[serde(default)]
    pub unread: u64,
}

/// A room member as listed by `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// User or bot name.
    pub user: String,
    /// Role in the room.
    pub role: Role,
    /// Whether the member has a live session subscribed anywhere on this node.
    #[serde(default)]
    pub online: bool,
}

/// A cursor for resuming one room: the last `seq` the client has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Room name.
    pub room: String,
    /// Last seen `seq`: everything after it is replayed before live
    /// messages. Absent: nothing is replayed, live messages only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// Presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Has a live session.
    Online,
    /// Connected but idle.
    Away,
    /// No live session.
    Offline,
}

/// What a bot is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum BotTask {
    /// Answer a question or a message.
    Answer {
        /// The question.
        prompt: String,
    },
    /// Summarise the last `count` messages of the room.
    Summarize {
        /// How many recent messages to summarise.
        count: u32,
    },
    /// Suggest short replies to the conversation, for the asking user only.
    SmartReplies,
}

/// A change of room membership, broadcast to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Joined by themselves.
    Joined,
    /// Added by an admin.
    Invited,
    /// Left by themselves.
    Left,
    /// Removed by an admin.
    Removed,
    /// Role changed.
    RoleChanged,
}

/// A frame sent by a client, with its optional request `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply so the client can match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The request itself.
    #[serde(flatten)]
    pub frame: ClientFrame,
}

/// Every request a client can make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// Create an account and log in.
    Signup {
        /// User name: 1-32 of `a-z 0-9 _ . -`, case-insensitive.
        username: String,
        /// Password, 8 to 1024 bytes.
        password: String,
    },
    /// Log in with a password; the reply carries a fresh session token.
    Login {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// Log in with a token from an earlier `authed` reply.
    Auth {
        /// Session token.
        token: String,
    },
    /// Revoke the current token and end the login.
    Logout,
    /// Issue a fresh token for the logged-in user (answered by `authed`);
    /// the current one stays valid until it expires or is logged out.
    RefreshToken,
    /// Create a room; the creator becomes its admin.
    CreateRoom {
        /// Room name: 1-64 of `a-z 0-9 _ -`.
        room: String,
        /// Room kind; `public` when absent.
        #[serde(default = "default_kind")]
        kind: String,
        /// Topic.
        #[serde(default)]
        topic: String,
    },
    /// Open (or create) the direct-message room with another user or a bot.
    OpenDirect {
        /// The other party.
        user: String,
    },
    /// Join a room the caller may join.
    Join {
        /// Room name.
        room: String,
    },
    /// Leave a room.
    Leave {
        /// Room name.
        room: String,
    },
    /// List the rooms the caller can see.
    ListRooms,
    /// List a room's members.
    Members {
        /// Room name.
        room: String,
    },
    /// Add a user (or a bot) to a room (admins only).
    Invite {
        /// Room name.
        room: String,
        /// User to add.
        user: String,
    },
    /// Remove a member from a room (admins only).
    Remove {
        /// Room name.
        room: String,
        /// Member to remove.
        user: String,
    },
    /// Change a member's role (admins only).
    SetRole {
        /// Room name.
        room: String,
        /// Member.
        user: String,
        /// New role (`admin` or `member`).
        role: Role,
    },
    /// Post a message. Resending with the same `client_id` stores it once.
    Send {
        /// Room name.
        room: String,
        /// Text.
        body: String,
        /// Idempotency key chosen by the client, up to 64 bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// Read a page of history.
    History {
        /// Room name.
        room: String,
        /// Only messages with `seq` below this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// Only messages with `seq` above this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// Page size; capped by the server's setting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Receive a room's live messages, first replaying everything after each
    /// cursor's `last_seq` (resume).
    Subscribe {
        /// One cursor per room.
        rooms: Vec<Cursor>,
    },
    /// Stop receiving a room's live messages.
    Unsubscribe {
        /// Room name.
        room: String,
    },
    /// Tell a room the caller is typing.
    Typing {
        /// Room name.
        room: String,
    },
    /// Set the caller's presence.
    SetPresence {
        /// New status.
        status: Presence,
    },
    /// Ask a bot of the room to do something; the reply streams to the room
    /// (answers, summaries) or to the caller alone (smart replies).
    Ask {
        /// Room name.
        room: String,
        /// Which bot; the room's first bot (or the default bot) when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bot: Option<String>,
        /// What to do.
        #[serde(flatten)]
        task: BotTask,
    },
    /// Starts a chunked file upload to a room; answered by `upload_ready`.
    UploadStart {
        /// Room name.
        room: String,
        /// File name (sanitised by the server).
        name: String,
        /// Size in bytes; the upload must deliver exactly this much.
        size: u64,
    },
    /// One chunk of an upload, base64 (standard alphabet, padded).
    UploadChunk {
        /// Upload handle from `upload_ready`.
        upload: u64,
        /// The bytes, base64.
        data: String,
    },
    /// Completes an upload: the file is stored and shared in the room as a
    /// message (answered by `ack`).
    UploadFinish {
        /// Upload handle.
        upload: u64,
        /// Optional text of the message that shares the file.
        #[serde(default)]
        body: String,
        /// Idempotency key of that message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// Abandons an upload; nothing is kept.
    UploadAbort {
        /// Upload handle.
        upload: u64,
    },
    /// Reads a piece of a file; answered by `file_chunk`.
    Download {
        /// File id.
        file: String,
        /// Byte offset to read from.
        #[serde(default)]
        offset: u64,
    },
    /// Lists a room's files; answered by `files`.
    ListFiles {
        /// Room name.
        room: String,
    },
    /// Marks a room read up to `seq` (for unread counts on every device).
    MarkRead {
        /// Room name.
        room: String,
        /// Newest `seq` read.
        seq: u64,
    },
    /// Liveness check; answered by `pong`.
    Ping,
}

fn default_kind() -> String {
    "public".to_owned()
}

/// Every frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// First frame on every connection.
    Hello {
        /// Server name and version.
        server: String,
        /// Protocol version.
        protocol: u32,
        /// Largest frame the server accepts, in bytes.
        max_frame_bytes: usize,
    },
    /// Logged in (signup, login or token).
    Authed {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// User name.
        user: String,
        /// Session token for `auth` and REST bearer auth.
        token: String,
        /// Token expiry, milliseconds since the Unix epoch.
        expires_at: u64,
    },
    /// A generic success reply.
    Ok {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Reply to create, join and open-direct.
    Room {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        room: RoomInfo,
    },
    /// Reply to `list_rooms`.
    Rooms {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Visible rooms.
        rooms: Vec<RoomInfo>,
    },
    /// Reply to `members`.
    Members {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room name.
        room: String,
        /// Members.
        members: Vec<MemberInfo>,
    },
    /// A message was stored durably: its `seq`.
    Ack {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room name.
        room: String,
        /// Assigned sequence number.
        seq: u64,
        /// Echo of the client's idempotency key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// True when this `client_id` had been stored before (a retry).
        #[serde(default)]
        duplicate: bool,
    },
    /// A message in a subscribed room, live or replayed.
    Message {
        /// The message.
        message: Message,
    },
    /// Reply to `history`.
    History {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room name.
        room: String,
        /// Messages in ascending `seq` order.
        messages: Vec<Message>,
        /// More messages exist beyond this page.
        has_more: bool,
    },
    /// Replay for a subscribed room is complete; live messages follow.
    Subscribed {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room name.
        room: String,
        /// The newest `seq` delivered so far.
        last_seq: u64,
    },
    /// Someone joined, left, was added or removed, or changed role.
    MemberEvent {
        /// Room name.
        room: String,
        /// Who.
        user: String,
        /// What changed.
        change: MemberChange,
        /// The role after the change, when still a member.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    /// A user's presence changed in a room the receiver follows.
    Presence {
        /// Room name.
        room: String,
        /// Who.
        user: String,
        /// New status.
        status: Presence,
    },
    /// Someone is typing.
    Typing {
        /// Room name.
        room: String,
        /// Who.
        user: String,
    },
    /// A piece of a bot reply being streamed.
    BotDelta {
        /// Room name.
        room: String,
        /// Bot name.
        bot: String,
        /// Identifies one reply among concurrent ones.
        stream: u64,
        /// Text to append.
        delta: String,
        /// True for a reply streamed to the asker alone (smart replies).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        private: bool,
    },
    /// A streamed bot reply finished; the stored message (if any) follows as
    /// an ordinary `message` with this `seq`.
    BotDone {
        /// Room name.
        room: String,
        /// Bot name.
        bot: String,
        /// The stream that finished.
        stream: u64,
        /// Sequence number of the stored reply; absent for private replies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// True when the bot failed and the text is a fallback.
        #[serde(default)]
        fallback: bool,
    },
    /// Suggested replies, for the asking user only.
    Suggestions {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room name.
        room: String,
        /// Suggested texts.
        replies: Vec<String>,
    },
    /// An upload may proceed: send chunks of at most `chunk_bytes`.
    UploadReady {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Handle for the chunks.
        upload: u64,
        /// Largest chunk, in bytes before base64.
        chunk_bytes: usize,
    },
    /// A piece of a file.
    FileChunk {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// File.
        file: FileRef,
        /// Offset of this piece.
        offset: u64,
        /// The bytes, base64.
        data: String,
        /// True when this piece ends the file.
        eof: bool,
    },
    /// Reply to `list_files`: newest first.
    Files {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room name.
        room: String,
        /// The files.
        files: Vec<FileInfo>,
    },
    /// The receiver was mentioned (`@name`) in a room, whether or not it is
    /// subscribed to it.
    Mention {
        /// Room name.
        room: String,
        /// The message's `seq`.
        seq: u64,
        /// Who wrote it.
        from: String,
        /// The start of the message.
        excerpt: String,
    },
    /// Reply to `ping`.
    Pong {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request failed, or the connection is about to close.
    Error {
        /// Request id, when the error answers a request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation; not for matching.
        message: String,
    },
    /// The server is closing this connection, and why.
    Closing {
        /// Why (`shutting_down`, `lagged`, `idle`, ...).
        reason: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl ServerFrame {
    /// The request id this frame answers, if it is a reply (events carry
    /// none). Clients match replies to requests with it.
    pub fn reply_id(&self) -> Option<u64> {
        match self {
            ServerFrame::Authed { id, .. }
            | ServerFrame::Ok { id }
            | ServerFrame::Room { id, .. }
            | ServerFrame::Rooms { id, .. }
            | ServerFrame::Members { id, .. }
            | ServerFrame::Ack { id, .. }
            | ServerFrame::History { id, .. }
            | ServerFrame::Subscribed { id, .. }
            | ServerFrame::Suggestions { id, .. }
            | ServerFrame::UploadReady { id, .. }
            | ServerFrame::FileChunk { id, .. }
            | ServerFrame::Files { id, .. }
            | ServerFrame::Pong { id }
            | ServerFrame::Error { id, .. } => *id,
            ServerFrame::Hello { .. }
            | ServerFrame::Message { .. }
            | ServerFrame::MemberEvent { .. }
            | ServerFrame::Presence { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::BotDelta { .. }
            | ServerFrame::BotDone { .. }
            | ServerFrame::Mention { .. }
            | ServerFrame::Closing { .. } => None,
        }
    }
}

/// Why a client frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the frame.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The frame is not UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// The frame is not a valid request (bad JSON, unknown type, missing
    /// field, wrong type).
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::NotUtf8 | DecodeError::Malformed(_) => ErrorCode::BadFrame,
        }
    }
}

/// Largest nesting depth accepted in a client frame. serde_json stops at 128
/// on its own; a protocol frame never needs more than a handful of levels.
const MAX_NESTING: usize = 32;

/// Encodes server frames and decodes client frames, enforcing a size limit.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    max_frame_bytes: usize,
}

impl Codec {
    /// A codec that rejects client frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Codec { max_frame_bytes }
    }

    /// The frame size limit.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Decodes one client frame from raw bytes (one WebSocket text message or
    /// one line, without the newline).
    pub fn decode(&self, bytes: &[u8]) -> Result<Request, DecodeError> {
        if bytes.len() > self.max_frame_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.max_frame_bytes,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
        self.decode_str(text)
    }

    /// Decodes one client frame from text.
    pub fn decode_str(&self, text: &str) -> Result<Request, DecodeError> {
        if text.len() > self.max_frame_bytes {
            return Err(DecodeError::TooLarge {
                size: text.len(),
                limit: self.max_frame_bytes,
            });
        }
        if nesting_depth(text.as_bytes()) > MAX_NESTING {
            return Err(DecodeError::Malformed("nesting too deep".to_owned()));
        }
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// Encodes a server frame as JSON text, ready to be shared by every
    /// recipient.
    pub fn encode(frame: &ServerFrame) -> Bytes {
        // Serialising these types cannot fail: every map key is a string and
        // no Serialize impl returns an error.
        match serde_json::to_vec(frame) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::error!(error = %e, "server frame failed to encode");
                Bytes::from_static(br#"{"type":"error","code":"internal","message":"encode"}"#)
            }
        }
    }

    /// Encodes a client request (for clients and tests).
    pub fn encode_request(request: &Request) -> Bytes {
        match serde_json::to_vec(request) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::error!(error = %e, "client frame failed to encode");
                Bytes::from_static(br#"{"type":"ping"}"#)
            }
        }
    }

    /// Decodes a server frame (for clients and tests).
    pub fn decode_server(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// Counts the deepest bracket nesting outside strings, so that a frame of a
/// million `[` is refused before the parser recurses into it.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Per-room cursors as a map, for clients that keep them that way.
pub fn cursors(map: &BTreeMap<String, u64>) -> Vec<Cursor> {
    map.iter()
        .map(|(room, &last_seq)| Cursor {
            room: room.clone(),
            last_seq: Some(last_seq),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![".{0,40}", "[a-z0-9_]{1,16}"]
    }

    fn arb_role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Admin), Just(Role::Member), Just(Role::Bot)]
    }

    fn arb_task() -> impl Strategy<Value = BotTask> {
        prop_oneof![
            arb_string().prop_map(|prompt| BotTask::Answer { prompt }),
            any::<u32>().prop_map(|count| BotTask::Summarize { count }),
            Just(BotTask::SmartReplies),
        ]
    }

    fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
        let s = arb_string;
        prop_oneof![
            (s(), s()).prop_map(|(username, password)| ClientFrame::Signup { username, password }),
            (s(), s()).prop_map(|(username, password)| ClientFrame::Login { username, password }),
            s().prop_map(|token| ClientFrame::Auth { token }),
            Just(ClientFrame::Logout),
            Just(ClientFrame::RefreshToken),
            (s(), s(), s()).prop_map(|(room, kind, topic)| ClientFrame::CreateRoom {
                room,
                kind,
                topic
            }),
            s().prop_map(|user| ClientFrame::OpenDirect { user }),
            s().prop_map(|room| ClientFrame::Join { room }),
            s().prop_map(|room| ClientFrame::Leave { room }),
            Just(ClientFrame::ListRooms),
            s().prop_map(|room| ClientFrame::Members { room }),
            (s(), s()).prop_map(|(room, user)| ClientFrame::Invite { room, user }),
            (s(), s()).prop_map(|(room, user)| ClientFrame::Remove { room, user }),
            (s(), s(), arb_role()).prop_map(|(room, user, role)| ClientFrame::SetRole {
                room,
                user,
                role
            }),
            (s(), s(), proptest::option::of(s())).prop_map(|(room, body, client_id)| {
                ClientFrame::Send {
                    room,
                    body,
                    client_id,
                }
            }),
            (
                s(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(room, before, after, limit)| ClientFrame::History {
                    room,
                    before,
                    after,
                    limit
                }),
            proptest::collection::vec(
                (s(), proptest::option::of(any::<u64>()))
                    .prop_map(|(room, last_seq)| Cursor { room, last_seq }),
                0..4
            )
            .prop_map(|rooms| ClientFrame::Subscribe { rooms }),
            s().prop_map(|room| ClientFrame::Unsubscribe { room }),
            s().prop_map(|room| ClientFrame::Typing { room }),
            prop_oneof![
                Just(Presence::Online),
                Just(Presence::Away),
                Just(Presence::Offline)
            ]
            .prop_map(|status| ClientFrame::SetPresence { status }),
            (s(), proptest::option::of(s()), arb_task())
                .prop_map(|(room, bot, task)| ClientFrame::Ask { room, bot, task }),
            (s(), s(), any::<u64>()).prop_map(|(room, name, size)| ClientFrame::UploadStart {
                room,
                name,
                size
            }),
            (any::<u64>(), s())
                .prop_map(|(upload, data)| ClientFrame::UploadChunk { upload, data }),
            (any::<u64>(), s(), proptest::option::of(s())).prop_map(|(upload, body, client_id)| {
                ClientFrame::UploadFinish {
                    upload,
                    body,
                    client_id,
                }
            }),
            any::<u64>().prop_map(|upload| ClientFrame::UploadAbort { upload }),
            (s(), any::<u64>()).prop_map(|(file, offset)| ClientFrame::Download { file, offset }),
            s().prop_map(|room| ClientFrame::ListFiles { room }),
            (s(), any::<u64>()).prop_map(|(room, seq)| ClientFrame::MarkRead { room, seq }),
            Just(ClientFrame::Ping),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            arb_string(),
            any::<u64>(),
            arb_string(),
            arb_string(),
            any::<u64>(),
            proptest::option::of(arb_string()),
        )
            .prop_map(|(room, seq, sender, body, ts, client_id)| Message {
                room,
                seq,
                sender,
                body,
                ts,
                kind: MessageKind::User,
                client_id,
                file: None,
            })
    }

    fn arb_server_frame() -> impl Strategy<Value = ServerFrame> {
        let id = || proptest::option::of(any::<u64>());
        prop_oneof![
            (arb_string(), any::<u32>(), any::<u32>()).prop_map(|(server, protocol, max)| {
                ServerFrame::Hello {
                    server,
                    protocol,
                    max_frame_bytes: max as usize,
                }
            }),
            (id(), arb_string(), arb_string(), any::<u64>()).prop_map(
                |(id, user, token, expires_at)| ServerFrame::Authed {
                    id,
                    user,
                    token,
                    expires_at
                }
            ),
            id().prop_map(|id| ServerFrame::Ok { id }),
            (
                id(),
                arb_string(),
                any::<u64>(),
                proptest::option::of(arb_string()),
                any::<bool>()
            )
                .prop_map(|(id, room, seq, client_id, duplicate)| ServerFrame::Ack {
                    id,
                    room,
                    seq,
                    client_id,
                    duplicate
                }),
            arb_message().prop_map(|message| ServerFrame::Message { message }),
            (
                id(),
                arb_string(),
                proptest::collection::vec(arb_message(), 0..3),
                any::<bool>()
            )
                .prop_map(|(id, room, messages, has_more)| ServerFrame::History {
                    id,
                    room,
                    messages,
                    has_more
                }),
            (arb_string(), arb_string(), any::<u64>(), arb_string()).prop_map(
                |(room, bot, stream, delta)| ServerFrame::BotDelta {
                    room,
                    bot,
                    stream,
                    delta,
                    private: stream % 2 == 0,
                }
            ),
            (id(), arb_string()).prop_map(|(id, message)| ServerFrame::Error {
                id,
                code: ErrorCode::Forbidden,
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_client_frame_round_trips(id in proptest::option::of(any::<u64>()), frame in arb_client_frame()) {
            let req = Request { id, frame };
            let bytes = Codec::encode_request(&req);
            let back = Codec::new(1 << 20).decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, req);
        }

        #[test]
        fn every_server_frame_round_trips(frame in arb_server_frame()) {
            let bytes = Codec::encode(&frame);
            let back = Codec::decode_server(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Any outcome is fine as long as it is a value, not a panic.
            let _ = Codec::new(256).decode(&bytes);
        }

        #[test]
        fn arbitrary_json_yields_typed_errors(json in arb_json()) {
            let text = json.to_string();
            match Codec::new(1 << 16).decode_str(&text) {
                Ok(_) => {}
                Err(e) => prop_assert!(matches!(e.code(), ErrorCode::BadFrame | ErrorCode::FrameTooLarge)),
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            prop_oneof![
                Just("send".to_owned()),
                Just("type".to_owned()),
                ".{0,8}".prop_map(String::from)
            ]
            .prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("room".to_owned()),
                        Just("body".to_owned()),
                        "[a-z]{1,6}".prop_map(String::from)
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn oversize_frame_is_refused_before_parsing() {
        let codec = Codec::new(16);
        let err = codec.decode(&[b' '; 17]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn deeply_nested_json_is_refused() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = Codec::new(1 << 20).decode_str(&text).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadFrame);
    }

    #[test]
    fn replies_name_their_request_and_events_do_not() {
        let ack = ServerFrame::Ack {
            id: Some(3),
            room: "r".into(),
            seq: 1,
            client_id: None,
            duplicate: false,
        };
        assert_eq!(ack.reply_id(), Some(3));
        assert_eq!(ServerFrame::Ok { id: None }.reply_id(), None);
        let typing = ServerFrame::Typing {
            room: "r".into(),
            user: "a".into(),
        };
        assert_eq!(typing.reply_id(), None);
    }

    #[test]
    fn request_id_is_optional_and_echoable() {
        let r = Codec::new(1024)
            .decode_str(r#"{"type":"send","id":7,"room":"lobby","body":"hi"}"#)
            .unwrap();
        assert_eq!(r.id, Some(7));
        assert!(matches!(r.frame, ClientFrame::Send { ref room, .. } if room == "lobby"));
        let r = Codec::new(1024).decode_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(
            r,
            Request {
                id: None,
                frame: ClientFrame::Ping
            }
        );
    }
}

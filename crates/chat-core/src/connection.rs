//! One client's connection to the engine: its login, its subscriptions, and
//! the handling of every [`ClientFrame`].
//!
//! Access is checked here for every request, whatever transport it came
//! from (invariant 5). Rooms a caller may not see answer `not_found`, never
//! `forbidden`, so private room names do not leak.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use std::sync::Arc;

use crate::engine::{now_ms, user_channel, Checked, Engine, PendingUpload};
use crate::error::{EngineError, ErrorCode};
use crate::fanout::Activation;
use crate::limits::AdmissionPermit;
use crate::protocol::{
    BotTask, ClientFrame, Codec, Cursor, FileInfo, MemberChange, MemberInfo, Presence, Request,
    Role, RoomInfo, ServerFrame,
};
use crate::room::{direct_room_name, valid_room_name, Action};
use crate::session::{Session, SessionId};
use crate::store::{HistoryQuery, NewMessage, RoomRecord};
use crate::{auth, broker::RoomEvent};

/// Default history page size when the client gives none.
const DEFAULT_PAGE: u32 = 50;
/// Messages read from the store per step of a replay.
const REPLAY_PAGE: u32 = 500;
/// Longest client idempotency key, in bytes.
const MAX_CLIENT_ID_BYTES: usize = 64;
/// Longest room topic, in bytes.
const MAX_TOPIC_BYTES: usize = 256;
/// Shortest time between two typing events of one connection.
const TYPING_GAP_MS: u32 = 1000;

/// The wall clock in milliseconds, wrapping at 2^32.
fn wrapping_ms() -> u32 {
    // Truncation is the point: differences are taken wrapping.
    (now_ms() & u64::from(u32::MAX)) as u32
}

/// A client's connection: created by [`Engine::connect`] or
/// [`Engine::open`]; the transport feeds it frames with
/// [`handle_frame`](Connection::handle_frame), or those that arrived
/// together with [`handle_frames`](Connection::handle_frames). Dropping it
/// ends the client's subscriptions and presence.
pub struct Connection {
    engine: Engine,
    session: Arc<dyn Session>,
    user: Option<Arc<str>>,
    token_hash: Option<TokenHash>,
    subs: RoomSet,
    /// When it last sent a typing event: the wall clock's milliseconds,
    /// wrapping at 2^32 (four bytes instead of sixteen in every
    /// connection; at worst one event is held back when the last came a
    /// multiple of 49.7 days before).
    typed: u32,
    /// REST calls: not a live session, so no presence.
    detached: bool,
    /// Uploads in progress over frames, by handle.
    uploads: Uploads,
    _permit: AdmissionPermit,
}

/// What a send that passed its checks needs once its message is stored:
/// the ack's fields and the room, for the bots.
struct Prepared {
    id: Option<u64>,
    room: String,
    client_id: Option<String>,
    user: Arc<str>,
    checked: Checked,
}

/// Sends gathered by [`Connection::handle_frames`]: their messages, and
/// what each needs once stored, in the same order.
#[derive(Default)]
struct Sends {
    messages: Vec<NewMessage>,
    prepared: Vec<Prepared>,
}

/// The rooms a connection is subscribed to: a sorted list, one small
/// allocation of exactly its length (a hash set's table is several times
/// that, kept by every idle connection; a `Vec` is a word longer in every
/// connection, for growth that subscriptions, changed rarely, do not
/// need); at most
/// [`Limits::max_subscriptions`](crate::Limits::max_subscriptions) long.
#[derive(Debug, Default)]
struct RoomSet(Box<[Box<str>]>);

impl RoomSet {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, room: &str) {
        if let Err(at) = self.0.binary_search_by(|r| (**r).cmp(room)) {
            let mut rooms = std::mem::take(&mut self.0).into_vec();
            rooms.insert(at, room.into());
            self.0 = rooms.into_boxed_slice();
        }
    }

    fn remove(&mut self, room: &str) {
        if let Ok(at) = self.0.binary_search_by(|r| (**r).cmp(room)) {
            let mut rooms = std::mem::take(&mut self.0).into_vec();
            rooms.remove(at);
            self.0 = rooms.into_boxed_slice();
        }
    }
}

/// The hash of the token a connection logged in with (logout revokes
/// it): the usual hex SHA-256 is kept as its 32 bytes, inline, since every
/// connection holds one; anything else a store hands out, as it is.
enum TokenHash {
    Sha256([u8; 32]),
    Other(Box<str>),
}

impl TokenHash {
    fn new(hex: String) -> Self {
        let mut raw = [0u8; 32];
        let digits = hex.as_bytes();
        let parsed = digits.len() == 64
            && digits.chunks(2).zip(raw.iter_mut()).all(|(pair, byte)| {
                match (hex_digit(pair[0]), hex_digit(pair[1])) {
                    (Some(hi), Some(lo)) => {
                        *byte = hi << 4 | lo;
                        true
                    }
                    _ => false,
                }
            });
        if parsed {
            TokenHash::Sha256(raw)
        } else {
            TokenHash::Other(hex.into_boxed_str())
        }
    }

    fn to_hex(&self) -> String {
        match self {
            TokenHash::Sha256(raw) => crate::auth::hex(raw),
            TokenHash::Other(s) => s.to_string(),
        }
    }
}

/// A lowercase hex digit's value (`hash_token` writes lowercase).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Uploads in progress over frames, by handle: a short list (at most
/// `max_uploads_per_session` long) rather than a hash table, boxed on a
/// connection's first upload (every idle connection carries the pointer,
/// not the list).
#[derive(Default)]
struct Uploads(Option<Box<UploadList>>);

#[derive(Default)]
struct UploadList {
    list: Vec<(u64, PendingUpload)>,
    /// The last handle given out: handles are never reused on a
    /// connection, so a stale one cannot reach a newer upload.
    last: u64,
}

impl Uploads {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |u| u.list.len())
    }

    /// Adds `upload` under a new handle, returned.
    fn insert(&mut self, upload: PendingUpload) -> u64 {
        let u = self.0.get_or_insert_with(Box::default);
        u.last += 1;
        u.list.push((u.last, upload));
        u.last
    }

    fn get_mut(&mut self, handle: &u64) -> Option<&mut PendingUpload> {
        self.0
            .as_mut()?
            .list
            .iter_mut()
            .find(|(h, _)| h == handle)
            .map(|(_, upload)| upload)
    }

    fn remove(&mut self, handle: &u64) -> Option<PendingUpload> {
        let u = self.0.as_mut()?;
        let at = u.list.iter().position(|(h, _)| h == handle)?;
        let (_, upload) = u.list.swap_remove(at);
        if u.list.is_empty() {
            u.list = Vec::new();
        }
        Some(upload)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session.id())
            .field("user", &self.user)
            .field("subscriptions", &self.subs.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(
        engine: Engine,
        session: Arc<dyn Session>,
        permit: AdmissionPermit,
        detached: bool,
    ) -> Self {
        Connection {
            engine,
            session,
            user: None,
            token_hash: None,
            subs: RoomSet::default(),
            typed: wrapping_ms().wrapping_sub(TYPING_GAP_MS),
            detached,
            uploads: Uploads::default(),
            _permit: permit,
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// This connection's session id.
    pub fn session_id(&self) -> SessionId {
        self.session.id()
    }

    /// Decodes and handles one raw frame. A frame that does not decode gets
    /// an `error` reply and the connection stays usable.
    pub async fn handle_frame(&mut self, bytes: &[u8]) {
        match self.engine.codec().decode(bytes) {
            Ok(req) => self.handle(req).await,
            Err(e) => self.bad_frame(&e),
        }
    }

    /// Handles raw frames that arrived together, with the same replies, in
    /// the same order, as [`handle_frame`](Self::handle_frame) on each in
    /// turn; but consecutive sends are stored with one store request (one
    /// batch, in order) and acked together. For a transport that finds
    /// several of a client's frames in one read: a client that pipelines
    /// its sends pays for one commit wait, not one each.
    pub async fn handle_frames<B: AsRef<[u8]>>(&mut self, frames: &[B]) {
        let mut sends = Sends::default();
        for bytes in frames {
            let req = match self.engine.codec().decode(bytes.as_ref()) {
                Ok(req) => req,
                Err(e) => {
                    self.flush_sends(&mut sends).await;
                    self.bad_frame(&e);
                    continue;
                }
            };
            let Request {
                id,
                frame:
                    ClientFrame::Send {
                        room,
                        body,
                        client_id,
                    },
            } = req
            else {
                self.flush_sends(&mut sends).await;
                self.handle(req).await;
                continue;
            };
            self.engine.metrics().frames_in.inc();
            match self.prepare_send(id, room, body, client_id).await {
                Ok((message, send)) => {
                    sends.messages.push(message);
                    sends.prepared.push(send);
                }
                Err(e) => {
                    self.flush_sends(&mut sends).await;
                    self.reply_error(id, &e);
                }
            }
        }
        self.flush_sends(&mut sends).await;
    }

    /// Stores, publishes and acks the sends [`handle_frames`] gathered.
    ///
    /// [`handle_frames`]: Self::handle_frames
    async fn flush_sends(&mut self, sends: &mut Sends) {
        if sends.messages.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut sends.messages);
        let results = self.engine.append_and_publish_many(messages).await;
        for (send, res) in sends.prepared.drain(..).zip(results) {
            let id = send.id;
            if let Err(e) = async { self.after_append(send, res?).await }.await {
                self.reply_error(id, &e);
            }
        }
    }

    fn bad_frame(&self, e: &crate::protocol::DecodeError) {
        self.engine.metrics().bad_frames.inc();
        tracing::debug!(session = self.session.id(), error = %e, "bad frame");
        self.reply(&ServerFrame::Error {
            id: None,
            code: e.code(),
            message: e.to_string(),
        });
    }

    fn reply_error(&self, id: Option<u64>, e: &EngineError) {
        self.reply(&ServerFrame::Error {
            id,
            code: e.code(),
            message: e.message().to_owned(),
        });
    }

    /// Handles one decoded request; the reply (or error) goes to the session.
    pub async fn handle(&mut self, req: Request) {
        self.engine.metrics().frames_in.inc();
        let id = req.id;
        match self.dispatch(id, req.frame).await {
            Ok(Some(frame)) => self.reply(&frame),
            Ok(None) => {}
            Err(e) => self.reply_error(id, &e),
        }
    }

    fn reply(&self, frame: &ServerFrame) {
        Engine::reply_to(&self.session, frame);
    }

    fn require_user(&self) -> Result<Arc<str>, EngineError> {
        self.user
            .clone()
            .ok_or_else(|| EngineError::new(ErrorCode::Unauthenticated, "log in first"))
    }

    /// Looks a room up with the caller's role; `not_found` when the caller
    /// may not even see it.
    async fn check(&self, room: &str, user: &str) -> Result<Checked, EngineError> {
        self.engine.check(room, user, Action::See).await
    }

    async fn check_action(
        &self,
        room: &str,
        user: &str,
        action: Action,
    ) -> Result<Checked, EngineError> {
        self.engine.check(room, user, action).await
    }

    /// Creates and stores a new token for `user`: (token, hash, expiry).
    async fn mint_token(&self, user: &str) -> Result<(String, String, u64), EngineError> {
        let (token, hash) = auth::new_token();
        let ttl = u64::try_from(self.engine.limits().token_ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at = now_ms().saturating_add(ttl);
        self.engine
            .store()
            .put_token(crate::TokenRecord {
                token_hash: hash.clone(),
                user: user.to_owned(),
                expires_at,
            })
            .await?;
        Ok((token, hash, expires_at))
    }

    async fn issue_token(
        &mut self,
        id: Option<u64>,
        user: String,
    ) -> Result<ServerFrame, EngineError> {
        let (token, hash, expires_at) = self.mint_token(&user).await?;
        self.set_user(user.clone(), hash);
        Ok(ServerFrame::Authed {
            id,
            user,
            token,
            expires_at,
        })
    }

    fn set_user(&mut self, user: String, token_hash: String) {
        self.end_login();
        if !self.detached {
            self.engine.presence_delta(&user, true);
            self.engine.metrics().authenticated.inc();
        }
        if !self.detached {
            self.engine
                .inner
                .fanout
                .subscribe_live(&user_channel(&user), self.session.clone());
        }
        self.user = Some(Arc::from(user));
        self.token_hash = Some(TokenHash::new(token_hash));
    }

    /// Logs out locally: ends subscriptions and presence.
    fn end_login(&mut self) {
        for room in std::mem::take(&mut self.subs).0.into_vec() {
            self.engine
                .inner
                .fanout
                .unsubscribe(&room, self.session.id());
        }
        if let Some(user) = self.user.take() {
            self.engine
                .inner
                .fanout
                .unsubscribe_live(&user_channel(&user), self.session.id());
            if !self.detached {
                self.engine.presence_delta(&user, false);
                self.engine.metrics().authenticated.dec();
            }
        }
        self.token_hash = None;
    }

    pub(crate) async fn login_with_token(
        &mut self,
        id: Option<u64>,
        token: &str,
    ) -> Result<ServerFrame, EngineError> {
        // One store read: the record carries the user, hash and expiry.
        let rec = self.engine.token_record(token).await?;
        self.set_user(rec.user.clone(), rec.token_hash);
        Ok(ServerFrame::Authed {
            id,
            user: rec.user,
            token: token.to_owned(),
            expires_at: rec.expires_at,
        })
    }

    async fn publish_member(
        &self,
        room: &str,
        user: &str,
        change: MemberChange,
        role: Option<Role>,
    ) {
        let frame = ServerFrame::MemberEvent {
            room: room.to_owned(),
            user: user.to_owned(),
            change,
            role,
        };
        let revoke =
            matches!(change, MemberChange::Left | MemberChange::Removed).then(|| Arc::from(user));
        self.engine
            .publish(RoomEvent {
                room: Arc::from(room),
                seq: None,
                frame: Codec::encode(&frame),
                revoke,
            })
            .await;
    }

    /// Runs one request. `Ok(None)` means the replies were already sent.
    ///
    /// Sends and pings run inline; every other request runs boxed, so that
    /// the state of the rarer requests (uploads, room administration, ...)
    /// is not built and moved for every message.
    pub(crate) async fn dispatch(
        &mut self,
        id: Option<u64>,
        frame: ClientFrame,
    ) -> Result<Option<ServerFrame>, EngineError> {
        match frame {
            ClientFrame::Ping => Ok(Some(ServerFrame::Pong { id })),
            ClientFrame::Send {
                room,
                body,
                client_id,
            } => self.send(id, room, body, client_id).await,
            frame => Box::pin(self.dispatch_rest(id, frame)).await,
        }
    }

    /// A `send`: checks, stores and publishes, acks, then mentions and bots.
    async fn send(
        &mut self,
        id: Option<u64>,
        room: String,
        body: String,
        client_id: Option<String>,
    ) -> Result<Option<ServerFrame>, EngineError> {
        let (message, send) = self.prepare_send(id, room, body, client_id).await?;
        let appended = self.engine.append_and_publish(message).await?;
        self.after_append(send, appended).await?;
        Ok(None)
    }

    /// A send's checks, in the order a client sees their errors: login,
    /// body, `client_id`, rate, then the room's access rules.
    async fn prepare_send(
        &mut self,
        id: Option<u64>,
        room: String,
        body: String,
        client_id: Option<String>,
    ) -> Result<(NewMessage, Prepared), EngineError> {
        let engine = &self.engine;
        let user = self.require_user()?;
        if body.trim().is_empty() {
            return Err(EngineError::invalid("empty message"));
        }
        if body.len() > engine.limits().max_message_bytes {
            return Err(EngineError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "messages are at most {} bytes",
                    engine.limits().max_message_bytes
                ),
            ));
        }
        if client_id
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CLIENT_ID_BYTES || c.is_empty())
        {
            return Err(EngineError::invalid("client_id is 1 to 64 bytes"));
        }
        if !engine.inner.rate.check(&user) {
            engine.metrics().rate_limited.inc();
            return Err(EngineError::new(ErrorCode::RateLimited, "slow down"));
        }
        let checked = self.check_action(&room, &user, Action::Post).await?;
        let message = NewMessage {
            room: room.clone(),
            sender: user.to_string(),
            body,
            kind: crate::MessageKind::User,
            client_id: client_id.clone(),
            ts: now_ms(),
            file: None,
        };
        let send = Prepared {
            id,
            room,
            client_id,
            user,
            checked,
        };
        Ok((message, send))
    }

    /// The ack of a stored send, then its mentions and the bots it calls.
    async fn after_append(
        &mut self,
        send: Prepared,
        appended: crate::store::Appended,
    ) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let Prepared {
            id,
            room,
            client_id,
            user,
            checked,
        } = send;
        self.reply(&ServerFrame::Ack {
            id,
            room: room.clone(),
            seq: appended.message.seq,
            client_id,
            duplicate: appended.duplicate,
        });
        if !appended.duplicate {
            if appended.message.body.contains('@') {
                // Boxed: rare, and its state would weigh on every send.
                Box::pin(engine.notify_mentions(&appended.message)).await;
            }
            for bot in engine
                .bots_to_answer(&checked.rec, &appended.message.body)
                .await?
            {
                let prompt = appended.message.body.clone();
                engine.spawn_bot(
                    bot,
                    room.clone(),
                    user.to_string(),
                    BotTask::Answer { prompt },
                    None,
                );
            }
        }
        Ok(())
    }

    /// Every request but a send or a ping (see [`Connection::dispatch`]).
    async fn dispatch_rest(
        &mut self,
        id: Option<u64>,
        frame: ClientFrame,
    ) -> Result<Option<ServerFrame>, EngineError> {
        let engine = self.engine.clone();
        let inner = &engine.inner;
        match frame {
            ClientFrame::Ping => Ok(Some(ServerFrame::Pong { id })),
            ClientFrame::Signup { username, password } => {
                let name = auth::normalize_username(&username)?;
                let hash = inner.hasher.hash(password).await?;
                engine.create_user(&name, hash).await?;
                tracing::info!(user = %name, "signed up");
                self.issue_token(id, name).await.map(Some)
            }
            ClientFrame::Login { username, password } => {
                let bad =
                    || EngineError::new(ErrorCode::BadCredentials, "wrong user name or password");
                let Ok(name) = auth::normalize_username(&username) else {
                    return Err(bad());
                };
                let stored = inner.store.user(&name).await?.map(|u| u.password_hash);
                if !inner.hasher.verify(password, stored).await? {
                    return Err(bad());
                }
                self.issue_token(id, name).await.map(Some)
            }
            ClientFrame::Auth { token } => self.login_with_token(id, &token).await.map(Some),
            ClientFrame::RefreshToken => {
                let user = self.require_user()?;
                let (token, hash, expires_at) = self.mint_token(&user).await?;
                // The session stays logged in and subscribed; logout now
                // revokes the new token.
                self.token_hash = Some(TokenHash::new(hash));
                Ok(Some(ServerFrame::Authed {
                    id,
                    user: user.to_string(),
                    token,
                    expires_at,
                }))
            }
            ClientFrame::Logout => {
                if let Some(hash) = &self.token_hash {
                    inner.store.delete_token(&hash.to_hex()).await?;
                }
                self.end_login();
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::CreateRoom { room, kind, topic } => {
                let user = self.require_user()?;
                if !valid_room_name(&room) {
                    return Err(EngineError::invalid(
                        "room names are 1-64 characters of a-z, 0-9, _ and -",
                    ));
                }
                if topic.len() > MAX_TOPIC_BYTES {
                    return Err(EngineError::invalid("topic too long"));
                }
                let policy = inner
                    .kinds
                    .get(&kind)
                    .filter(|k| k.creatable())
                    .ok_or_else(|| {
                        EngineError::invalid(format!("cannot create rooms of kind {kind:?}"))
                    })?;
                let rec = RoomRecord {
                    name: room,
                    kind: policy.kind().to_owned(),
                    topic,
                    created_by: user.to_string(),
                    created_at: now_ms(),
                };
                inner
                    .store
                    .create_room(rec.clone(), &[(user.to_string(), Role::Admin)])
                    .await?;
                Ok(Some(ServerFrame::Room {
                    id,
                    room: engine.room_info(&rec, 0, Some(Role::Admin)),
                }))
            }
            ClientFrame::OpenDirect { user: other } => {
                let user = self.require_user()?;
                let other = auth::normalize_username(&other)?;
                if other == *user {
                    return Err(EngineError::invalid("a direct room needs another user"));
                }
                if !engine.user_exists(&other).await? {
                    return Err(EngineError::not_found("user"));
                }
                let name = direct_room_name(&user, &other);
                if engine.room(&name).await?.is_none() {
                    let other_role = if engine.is_bot(&other) {
                        Role::Bot
                    } else {
                        Role::Member
                    };
                    let rec = RoomRecord {
                        name: name.clone(),
                        kind: "direct".to_owned(),
                        topic: String::new(),
                        created_by: user.to_string(),
                        created_at: now_ms(),
                    };
                    let members = [
                        (user.to_string(), Role::Member),
                        (other.clone(), other_role),
                    ];
                    match inner.store.create_room(rec, &members).await {
                        Ok(()) => {
                            // Tell the other side their new direct room exists.
                            let frame = ServerFrame::MemberEvent {
                                room: name.clone(),
                                user: other.clone(),
                                change: MemberChange::Invited,
                                role: Some(other_role),
                            };
                            engine
                                .publish_ephemeral(&user_channel(&other), &frame)
                                .await;
                        }
                        Err(crate::StoreError::AlreadyExists) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let c = self.check(&name, &user).await?;
                let last = inner.store.last_seq(&name).await?;
                Ok(Some(ServerFrame::Room {
                    id,
                    room: engine.room_info(&c.rec, last, c.role),
                }))
            }
            ClientFrame::Join { room } => {
                let user = self.require_user()?;
                let c = self.check(&room, &user).await?;
                let role = match c.role {
                    Some(r) => r,
                    None => {
                        if !c.policy.permits(Action::Join, None) {
                            return Err(EngineError::forbidden());
                        }
                        inner.store.set_member(&room, &user, Role::Member).await?;
                        self.publish_member(&room, &user, MemberChange::Joined, Some(Role::Member))
                            .await;
                        Role::Member
                    }
                };
                let last = inner.store.last_seq(&room).await?;
                Ok(Some(ServerFrame::Room {
                    id,
                    room: engine.room_info(&c.rec, last, Some(role)),
                }))
            }
            ClientFrame::Leave { room } => {
                let user = self.require_user()?;
                let c = self.check(&room, &user).await?;
                if c.role.is_none() {
                    return Err(EngineError::not_found("membership"));
                }
                if !c.policy.creatable() {
                    return Err(EngineError::invalid("direct rooms cannot be left"));
                }
                inner.store.remove_member(&room, &user).await?;
                self.publish_member(&room, &user, MemberChange::Left, None)
                    .await;
                self.subs.remove(&room);
                inner.fanout.unsubscribe(&room, self.session.id());
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::ListRooms => {
                let user = self.require_user()?;
                let max = engine.limits().rooms_listed_max;
                let listed: Vec<String> = inner
                    .kinds
                    .values()
                    .filter(|k| k.permits(Action::See, None))
                    .map(|k| k.kind().to_owned())
                    .collect();
                let mut rooms: Vec<(RoomRecord, Option<Role>)> = inner
                    .store
                    .memberships(&user)
                    .await?
                    .into_iter()
                    .map(|(r, role)| (r, Some(role)))
                    .collect();
                let mut seen: HashSet<String> = rooms.iter().map(|(r, _)| r.name.clone()).collect();
                for r in inner.store.rooms_of_kinds(&listed, max).await? {
                    if seen.insert(r.name.clone()) {
                        rooms.push((r, None));
                    }
                }
                rooms.truncate(max as usize);
                let read: HashMap<String, u64> = match inner.store.read_markers(&user).await {
                    Ok(m) => m.into_iter().collect(),
                    Err(crate::StoreError::Unsupported(_)) => HashMap::new(),
                    Err(e) => return Err(e.into()),
                };
                let mut out: Vec<RoomInfo> = Vec::with_capacity(rooms.len());
                for (r, role) in rooms {
                    let last = inner.store.last_seq(&r.name).await?;
                    let mut info = engine.room_info(&r, last, role);
                    if role.is_some() {
                        info.last_read = read.get(&r.name).copied().unwrap_or(0).min(last);
                        info.unread = last - info.last_read;
                    }
                    out.push(info);
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Some(ServerFrame::Rooms { id, rooms: out }))
            }
            ClientFrame::Members { room } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Read).await?;
                let members = inner
                    .store
                    .members(&room)
                    .await?
                    .into_iter()
                    .map(|(u, role)| MemberInfo {
                        online: engine.presence_of(&u) != Presence::Offline,
                        user: u,
                        role,
                    })
                    .collect();
                Ok(Some(ServerFrame::Members { id, room, members }))
            }
            ClientFrame::Invite { room, user: target } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Manage).await?;
                let target = auth::normalize_username(&target)?;
                if !engine.user_exists(&target).await? {
                    return Err(EngineError::not_found("user"));
                }
                let role = if engine.is_bot(&target) {
                    Role::Bot
                } else {
                    Role::Member
                };
                if inner.store.member_role(&room, &target).await?.is_none() {
                    inner.store.set_member(&room, &target, role).await?;
                    self.publish_member(&room, &target, MemberChange::Invited, Some(role))
                        .await;
                    // The invitee is not subscribed yet: tell them directly.
                    let frame = ServerFrame::MemberEvent {
                        room: room.clone(),
                        user: target.clone(),
                        change: MemberChange::Invited,
                        role: Some(role),
                    };
                    engine
                        .publish_ephemeral(&user_channel(&target), &frame)
                        .await;
                }
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::Remove { room, user: target } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Manage).await?;
                let target = auth::normalize_username(&target)?;
                if !inner.store.remove_member(&room, &target).await? {
                    return Err(EngineError::not_found("member"));
                }
                self.publish_member(&room, &target, MemberChange::Removed, None)
                    .await;
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::SetRole {
                room,
                user: target,
                role,
            } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Manage).await?;
                if role == Role::Bot {
                    return Err(EngineError::invalid(
                        "the bot role is given by inviting a bot",
                    ));
                }
                let target = auth::normalize_username(&target)?;
                match inner.store.member_role(&room, &target).await? {
                    None => return Err(EngineError::not_found("member")),
                    Some(Role::Bot) => return Err(EngineError::invalid("bots keep the bot role")),
                    Some(_) => {}
                }
                inner.store.set_member(&room, &target, role).await?;
                self.publish_member(&room, &target, MemberChange::RoleChanged, Some(role))
                    .await;
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::Send {
                room,
                body,
                client_id,
            } => self.send(id, room, body, client_id).await,
            ClientFrame::History {
                room,
                before,
                after,
                limit,
            } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Read).await?;
                let limit = limit
                    .unwrap_or(DEFAULT_PAGE)
                    .min(engine.limits().history_page_max);
                let query = HistoryQuery {
                    before,
                    after,
                    limit: limit.saturating_add(1),
                };
                let mut messages = inner.store.history(&room, query).await?;
                let has_more = messages.len() > limit as usize;
                if has_more {
                    if after.is_some() {
                        messages.truncate(limit as usize);
                    } else {
                        messages.remove(0);
                    }
                }
                Ok(Some(ServerFrame::History {
                    id,
                    room,
                    messages,
                    has_more,
                }))
            }
            ClientFrame::Subscribe { rooms } => {
                let user = self.require_user()?;
                if self.subs.len() + rooms.len() > engine.limits().max_subscriptions {
                    return Err(EngineError::invalid(format!(
                        "at most {} subscriptions per session",
                        engine.limits().max_subscriptions
                    )));
                }
                for cursor in rooms {
                    let reply = match self.subscribe(id, &user, &cursor).await {
                        // `subscribed` went out with the subscription.
                        Ok(()) => continue,
                        Err(e) => ServerFrame::Error {
                            id,
                            code: e.code(),
                            message: format!("{}: {}", cursor.room, e.message()),
                        },
                    };
                    // The replay may have left the queue full: wait for room
                    // rather than lag the client out with its own reply.
                    self.session.writable().await;
                    if self.session.is_closed() {
                        break;
                    }
                    self.reply(&reply);
                }
                Ok(None)
            }
            ClientFrame::Unsubscribe { room } => {
                self.require_user()?;
                self.subs.remove(&room);
                inner.fanout.unsubscribe(&room, self.session.id());
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::Typing { room } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Post).await?;
                let now = wrapping_ms();
                // At most one typing event per second per connection.
                if now.wrapping_sub(self.typed) >= TYPING_GAP_MS {
                    self.typed = now;
                    let frame = ServerFrame::Typing {
                        room: room.clone(),
                        user: user.to_string(),
                    };
                    engine.publish_ephemeral(&room, &frame).await;
                }
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::SetPresence { status } => {
                let user = self.require_user()?;
                if status == Presence::Offline {
                    return Err(EngineError::invalid("log out to go offline"));
                }
                if !self.detached {
                    engine.set_status(&user, status);
                }
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::MarkRead { room, seq } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Read).await?;
                let last = inner.store.last_seq(&room).await?;
                inner
                    .store
                    .set_read_marker(&user, &room, seq.min(last))
                    .await?;
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::UploadStart { room, name, size } => {
                let user = self.require_user()?;
                let max = engine
                    .file_settings()
                    .map_or(0, |f| f.max_uploads_per_session);
                if self.uploads.len() >= max.max(1) {
                    return Err(EngineError::invalid("too many uploads in progress"));
                }
                let pending = engine.begin_upload(&user, &room, &name, size).await?;
                let upload = self.uploads.insert(pending);
                let chunk_bytes = engine.file_settings().map_or(0, |f| f.chunk_bytes);
                Ok(Some(ServerFrame::UploadReady {
                    id,
                    upload,
                    chunk_bytes,
                }))
            }
            ClientFrame::UploadChunk { upload, data } => {
                self.require_user()?;
                let chunk_max = engine.file_settings().map_or(0, |f| f.chunk_bytes);
                let pending = self
                    .uploads
                    .get_mut(&upload)
                    .ok_or_else(|| EngineError::not_found("upload"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|_| EngineError::invalid("chunk is not base64"));
                let res = match bytes {
                    Ok(b) if b.len() > chunk_max => Err(EngineError::invalid(format!(
                        "chunks are at most {chunk_max} bytes"
                    ))),
                    Ok(b) => pending.write(&b).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = res {
                    // A refused chunk ends the upload; its partial file goes.
                    self.uploads.remove(&upload);
                    return Err(e);
                }
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::UploadFinish {
                upload,
                body,
                client_id,
            } => {
                self.require_user()?;
                let pending = self
                    .uploads
                    .remove(&upload)
                    .ok_or_else(|| EngineError::not_found("upload"))?;
                let room = pending.room().to_owned();
                let appended = engine
                    .finish_upload(pending, body, client_id.clone())
                    .await?;
                Ok(Some(ServerFrame::Ack {
                    id,
                    room,
                    seq: appended.message.seq,
                    client_id,
                    duplicate: appended.duplicate,
                }))
            }
            ClientFrame::UploadAbort { upload } => {
                self.uploads.remove(&upload);
                Ok(Some(ServerFrame::Ok { id }))
            }
            ClientFrame::Download { file, offset } => {
                let user = self.require_user()?;
                let rec = engine.file_for(&user, &file).await?;
                let chunk = engine.file_settings().map_or(0, |f| f.chunk_bytes);
                if offset > rec.file.size {
                    return Err(EngineError::invalid("offset past the end of the file"));
                }
                let bytes = engine.read_file(&rec, offset, chunk).await?;
                let eof = offset + bytes.len() as u64 >= rec.file.size;
                Ok(Some(ServerFrame::FileChunk {
                    id,
                    file: rec.file,
                    offset,
                    data: base64::engine::general_purpose::STANDARD.encode(&bytes),
                    eof,
                }))
            }
            ClientFrame::ListFiles { room } => {
                let user = self.require_user()?;
                self.check_action(&room, &user, Action::Read).await?;
                let files = inner
                    .store
                    .files(&room, 200)
                    .await?
                    .into_iter()
                    .map(|f| FileInfo {
                        file: f.file,
                        uploader: f.uploader,
                        created_at: f.created_at,
                    })
                    .collect();
                Ok(Some(ServerFrame::Files { id, room, files }))
            }
            ClientFrame::Ask { room, bot, task } => {
                let user = self.require_user()?;
                let private = matches!(task, BotTask::SmartReplies);
                let action = if private { Action::Read } else { Action::Post };
                self.check_action(&room, &user, action).await?;
                if !inner.rate.check(&user) {
                    engine.metrics().rate_limited.inc();
                    return Err(EngineError::new(ErrorCode::RateLimited, "slow down"));
                }
                let bot = engine.pick_bot(&room, bot.as_deref()).await?;
                if let BotTask::Answer { prompt } = &task {
                    if prompt.trim().is_empty() || prompt.len() > engine.limits().max_message_bytes
                    {
                        return Err(EngineError::invalid("the question is empty or too long"));
                    }
                }
                // Acknowledge first, so the request's `ok` always precedes
                // the suggestions that echo the same id.
                self.reply(&ServerFrame::Ok { id });
                let target = private.then(|| (self.session.clone(), id));
                engine.spawn_bot(bot, room, user.to_string(), task, target);
                Ok(None)
            }
        }
    }

    /// Subscribes to one room: registers in catch-up mode, replays history
    /// after the cursor, then goes live with no gap and no duplicate, its
    /// `subscribed` reply queued between the replay and the first live
    /// event.
    async fn subscribe(
        &mut self,
        id: Option<u64>,
        user: &Arc<str>,
        cursor: &Cursor,
    ) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let inner = &engine.inner;
        let room = cursor.room.as_str();
        self.check_action(room, user, Action::Read).await?;
        inner
            .fanout
            .subscribe(room, self.session.clone(), Some(user.clone()))
            .await?;
        self.subs.insert(room);
        let mut replayed = match cursor.last_seq {
            Some(s) => s,
            // Live only: start after whatever is stored now.
            None => inner.store.last_seq(room).await?,
        };
        // Replay from the store (only with a cursor), then go live; if live
        // events overflowed the catch-up buffer meanwhile, replay on from
        // the store and try again.
        let mut replay = cursor.last_seq.is_some();
        loop {
            if replay {
                replayed = self.replay(room, replayed).await?;
            }
            loop {
                let subscribed = |last_seq| {
                    Codec::encode(&ServerFrame::Subscribed {
                        id,
                        room: room.to_owned(),
                        last_seq,
                    })
                };
                match inner
                    .fanout
                    .activate(room, self.session.id(), replayed, subscribed)
                {
                    Activation::Live => return Ok(()),
                    Activation::Pending => self.session.writable().await,
                    Activation::Replay => break,
                    Activation::Gone => {
                        self.subs.remove(room);
                        return Err(EngineError::new(ErrorCode::Lagged, "lagged during replay"));
                    }
                }
            }
            replay = true;
        }
    }

    /// Sends every stored message of `room` after `from`, paced by the
    /// session's queue; returns the newest `seq` sent.
    async fn replay(&self, room: &str, mut from: u64) -> Result<u64, EngineError> {
        loop {
            let page = self
                .engine
                .store()
                .history(room, HistoryQuery::after(from, REPLAY_PAGE))
                .await?;
            let n = page.len();
            for message in page {
                self.session.writable().await;
                if self.session.is_closed() {
                    return Err(EngineError::new(
                        ErrorCode::Lagged,
                        "session closed during replay",
                    ));
                }
                from = message.seq;
                Engine::send_to(&self.session, &ServerFrame::Message { message });
            }
            if n < REPLAY_PAGE as usize {
                return Ok(from);
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.end_login();
        if !self.detached {
            self.engine.forget_session(self.session.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RoomSet, TokenHash};

    #[test]
    fn token_hashes_keep_their_hex_form() {
        let hex = crate::auth::hash_token("a token");
        let h = TokenHash::new(hex.clone());
        assert!(matches!(h, TokenHash::Sha256(_)));
        assert_eq!(h.to_hex(), hex);
        for odd in ["ABCDEF", "not hex at all", "", &hex.to_uppercase()] {
            let h = TokenHash::new(odd.to_owned());
            assert!(matches!(h, TokenHash::Other(_)), "{odd}");
            assert_eq!(h.to_hex(), odd);
        }
    }

    /// Every session keeps its connection, so every byte counts (a
    /// WebSocket session's fields fit 256 bytes with it).
    #[test]
    fn a_connection_fits_128_bytes() {
        let size = std::mem::size_of::<super::Connection>();
        assert!(size <= 128, "{size}");
    }

    #[test]
    fn room_set_keeps_each_room_once_in_order_and_frees_when_empty() {
        let mut set = RoomSet::default();
        for room in ["lobby", "dev", "lobby", "ops", "dev"] {
            set.insert(room);
        }
        let rooms: Vec<&str> = set.0.iter().map(|r| &**r).collect();
        assert_eq!(rooms, ["dev", "lobby", "ops"]);
        set.remove("lobby");
        set.remove("nowhere");
        assert_eq!(set.len(), 2);
        set.remove("dev");
        set.remove("ops");
        assert_eq!(set.len(), 0);
        assert!(set.0.is_empty());
    }
}

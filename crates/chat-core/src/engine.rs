//! The engine facade: [`EngineBuilder`] wires a store, a broker, bots, room
//! kinds and limits; [`Engine`] admits connections, hands out
//! [`Connection`]s, runs bots and shuts down gracefully.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{watch, Notify, Semaphore};

use crate::auth::Hasher;
use crate::bot::{Bot, BotRequest};
use crate::broker::{Broker, LocalBroker, RoomEvent};
use crate::connection::Connection;
use crate::error::{BotError, BuildError, EngineError, ErrorCode};
use crate::fanout::{Fanout, FanoutSettings};
use crate::files::{FileSettings, FileVault, Upload};
use crate::limits::{Admission, AdmissionPermit, Limits, RateLimiter};
use crate::memory::MemoryStore;
use crate::metrics::Metrics;
use crate::protocol::{
    BotTask, ClientFrame, Codec, FileRef, MessageKind, Presence, Role, RoomInfo, ServerFrame,
};
use crate::room::{Action, AnnouncementRoom, BotRoom, DirectRoom, PrivateRoom, PublicRoom, Room};
use crate::session::{Outbox, OutboxLimits, OutboxReceiver, Session, SessionId};
use crate::store::{FileRecord, HistoryQuery, NewMessage, RoomRecord, Store, UserRecord};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Builds an [`Engine`].
#[must_use]
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    broker: Option<Arc<dyn Broker>>,
    bots: Vec<Arc<dyn Bot>>,
    kinds: Vec<Arc<dyn Room>>,
    limits: Limits,
    server_name: String,
    files: Option<FileSettings>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field(
                "bots",
                &self.bots.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .field(
                "kinds",
                &self.kinds.iter().map(|k| k.kind()).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            store: None,
            broker: None,
            bots: Vec::new(),
            kinds: vec![
                Arc::new(PublicRoom),
                Arc::new(PrivateRoom),
                Arc::new(DirectRoom),
                Arc::new(AnnouncementRoom),
                Arc::new(BotRoom),
            ],
            limits: Limits::default(),
            server_name: concat!("chat-core/", env!("CARGO_PKG_VERSION")).to_owned(),
            files: None,
        }
    }
}

impl EngineBuilder {
    /// The store (default: a fresh [`MemoryStore`]).
    pub fn store(self, store: impl Store) -> Self {
        self.store_arc(Arc::new(store))
    }

    /// The store, already shared.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The broker (default: [`LocalBroker`], a single node).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Adds a bot. The first bot added answers `ask` in rooms without one.
    pub fn bot(self, bot: impl Bot) -> Self {
        self.bot_arc(Arc::new(bot))
    }

    /// Adds a shared bot.
    pub fn bot_arc(mut self, bot: Arc<dyn Bot>) -> Self {
        self.bots.push(bot);
        self
    }

    /// Adds (or replaces a built-in) room kind.
    pub fn room_kind(mut self, kind: impl Room) -> Self {
        let kind: Arc<dyn Room> = Arc::new(kind);
        self.kinds.retain(|k| k.kind() != kind.kind());
        self.kinds.push(kind);
        self
    }

    /// The limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Enables file sharing, with files kept in `settings.dir`.
    pub fn files(mut self, settings: FileSettings) -> Self {
        self.files = Some(settings);
        self
    }

    /// The name announced in `hello`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// Checks the settings and builds the engine.
    pub fn build(self) -> Result<Engine, BuildError> {
        self.limits.validate()?;
        let mut bots = HashMap::new();
        let mut bot_order = Vec::new();
        for bot in self.bots {
            let name = bot.name().to_owned();
            if crate::auth::normalize_username(&name).ok().as_deref() != Some(name.as_str()) {
                return Err(BuildError::InvalidSetting {
                    name: "bot name",
                    reason: "bot names are 1-32 of a-z 0-9 _ . -",
                });
            }
            if bots.insert(name.clone(), bot).is_some() {
                return Err(BuildError::Duplicate { what: "bot", name });
            }
            bot_order.push(name);
        }
        let kinds = self
            .kinds
            .into_iter()
            .map(|k| (k.kind().to_owned(), k))
            .collect();
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(LocalBroker::new()) as Arc<dyn Broker>);
        let metrics = Arc::new(Metrics::default());
        let limits = self.limits;
        let fanout = Fanout::new(
            store.clone(),
            metrics.clone(),
            FanoutSettings {
                catch_up_buffer: limits.max_queue_frames,
                reorder_buffer: limits.reorder_buffer.max(1),
                gap_timeout: limits.gap_timeout,
            },
        );
        broker.attach(fanout.clone());
        let (shutdown, _) = watch::channel(false);
        let vault = match self.files {
            Some(f) => Some(Arc::new(FileVault::open(f).map_err(BuildError::Files)?)),
            None => None,
        };
        let inner = Inner {
            vault,
            codec: Codec::new(limits.max_frame_bytes),
            hasher: Hasher::new(&limits)?,
            rate: RateLimiter::new(&limits),
            admission: Admission::new(&limits),
            bot_slots: Arc::new(Semaphore::new(limits.bot_concurrency)),
            store,
            broker,
            fanout,
            bots,
            bot_order,
            kinds,
            metrics,
            shutdown,
            sessions: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            server_name: self.server_name,
            limits,
        };
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }
}

/// Most room records cached; past it the cache starts over.
const ROOM_CACHE_MAX: usize = 100_000;

pub(crate) struct Inner {
    pub(crate) vault: Option<Arc<FileVault>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) bots: HashMap<String, Arc<dyn Bot>>,
    pub(crate) bot_order: Vec<String>,
    pub(crate) kinds: HashMap<String, Arc<dyn Room>>,
    pub(crate) limits: Limits,
    pub(crate) codec: Codec,
    pub(crate) hasher: Hasher,
    pub(crate) rate: RateLimiter,
    admission: Admission,
    pub(crate) metrics: Arc<Metrics>,
    bot_slots: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    sessions: Mutex<HashMap<SessionId, Arc<dyn Session>>>,
    /// Live sessions and chosen status per logged-in user, on this node.
    presence: Mutex<HashMap<String, (usize, Presence)>>,
    /// Room records by name; rooms are never deleted and their kind never
    /// changes, so entries never go stale.
    rooms: RwLock<HashMap<String, RoomRecord>>,
    next_stream: AtomicU64,
    inflight: AtomicUsize,
    idle: Notify,
    server_name: String,
}

/// The error of an append task that did not finish (it panicked).
fn task_failed() -> EngineError {
    EngineError::new(ErrorCode::Internal, "append task failed")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a task as in flight for graceful shutdown while alive.
pub(crate) struct InflightGuard(Arc<Inner>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The chat engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("server", &self.inner.server_name)
            .field("bots", &self.inner.bot_order)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with the defaults: in-memory store, local broker, the
    /// built-in room kinds, no bots.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The engine's limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The codec for client frames (with the frame size limit).
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Names of the registered bots, in registration order.
    pub fn bots(&self) -> &[String] {
        &self.inner.bot_order
    }

    /// Waits for a session slot (admission control). Over the limit, waits
    /// in a bounded queue for a bounded time, then fails with `server_busy`.
    pub async fn admit(&self) -> Result<AdmissionPermit, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::new(ErrorCode::ShuttingDown, "shutting down"));
        }
        let res = self.inner.admission.admit().await;
        if res.is_err() {
            self.inner.metrics.admission_rejected.inc();
        }
        res
    }

    /// Starts a connection whose outbound side is `session`. Sends `hello`.
    pub fn connect(&self, session: Arc<dyn Session>, permit: AdmissionPermit) -> Connection {
        lock(&self.inner.sessions).insert(session.id(), session.clone());
        self.inner.metrics.sessions.inc();
        let hello = ServerFrame::Hello {
            server: self.inner.server_name.clone(),
            protocol: crate::protocol::PROTOCOL_VERSION,
            max_frame_bytes: self.inner.limits.max_frame_bytes,
        };
        if session.deliver(Codec::encode(&hello)).is_err() {
            session.close(ErrorCode::Lagged);
        }
        if self.is_shutting_down() {
            session.close(ErrorCode::ShuttingDown);
        }
        Connection::new(self.clone(), session, permit, false)
    }

    /// Starts a connection with a bounded [`Outbox`] sized by the limits;
    /// the transport drains the returned receiver.
    pub fn open(&self, permit: AdmissionPermit) -> (Connection, OutboxReceiver) {
        let (outbox, rx) = Outbox::new(self.outbox_limits());
        (self.connect(outbox.session(), permit), rx)
    }

    fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            max_frames: self.inner.limits.max_queue_frames,
            max_bytes: self.inner.limits.max_queue_bytes,
        }
    }

    /// Runs one request outside any live connection (REST): logs in with
    /// `token` when given, then returns the reply frame. Subscriptions are
    /// refused: they need a connection.
    pub async fn call(
        &self,
        token: Option<&str>,
        frame: ClientFrame,
    ) -> Result<ServerFrame, EngineError> {
        if matches!(frame, ClientFrame::Subscribe { .. }) {
            return Err(EngineError::invalid("subscribe needs a live connection"));
        }
        let (outbox, mut rx) = Outbox::new(self.outbox_limits());
        let mut conn = Connection::new(
            self.clone(),
            outbox.session(),
            AdmissionPermit::unlimited(),
            true,
        );
        if let Some(token) = token {
            conn.login_with_token(None, token).await?;
        }
        if let Some(reply) = conn.dispatch(None, frame).await? {
            return Ok(reply);
        }
        // Requests such as `send` queue their reply themselves; a detached
        // connection subscribes to nothing, so its queue holds only replies.
        while let Some(bytes) = rx.try_recv() {
            match Codec::decode_server(&bytes) {
                Ok(ServerFrame::Error { code, message, .. }) => {
                    return Err(EngineError::new(code, message))
                }
                Ok(frame) => return Ok(frame),
                Err(_) => continue,
            }
        }
        Err(EngineError::new(ErrorCode::Internal, "no reply"))
    }

    /// The user a token belongs to, if it is valid.
    pub async fn authenticate(&self, token: &str) -> Result<String, EngineError> {
        Ok(self.token_record(token).await?.user)
    }

    /// The stored record of a valid token; an expired one is deleted.
    pub(crate) async fn token_record(
        &self,
        token: &str,
    ) -> Result<crate::TokenRecord, EngineError> {
        let hash = crate::auth::hash_token(token);
        let rec =
            self.inner.store.token(&hash).await?.ok_or_else(|| {
                EngineError::new(ErrorCode::InvalidToken, "unknown or revoked token")
            })?;
        if rec.expires_at <= now_ms() {
            let _ = self.inner.store.delete_token(&hash).await;
            return Err(EngineError::new(ErrorCode::TokenExpired, "token expired"));
        }
        Ok(rec)
    }

    /// Creates a room owned by the server if it does not exist yet, and
    /// makes the named bots members (for a host's start-up, e.g. `lobby`).
    pub async fn ensure_room(
        &self,
        name: &str,
        kind: &str,
        topic: &str,
        bots: &[&str],
    ) -> Result<(), EngineError> {
        if !self.inner.kinds.contains_key(kind) {
            return Err(EngineError::invalid(format!("unknown room kind {kind:?}")));
        }
        let rec = RoomRecord {
            name: name.to_owned(),
            kind: kind.to_owned(),
            topic: topic.to_owned(),
            created_by: "system".to_owned(),
            created_at: now_ms(),
        };
        match self.inner.store.create_room(rec, &[]).await {
            Ok(()) | Err(crate::StoreError::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
        for bot in bots {
            if !self.inner.bots.contains_key(*bot) {
                return Err(EngineError::not_found("bot"));
            }
            self.inner.store.set_member(name, bot, Role::Bot).await?;
        }
        Ok(())
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// A receiver that turns `true` when shutdown begins; transports stop
    /// accepting on it.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Graceful shutdown: refuses new sessions, closes every session with
    /// `shutting_down`, waits up to `grace` for in-flight sends and bot
    /// replies, then flushes the store.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), EngineError> {
        self.inner.shutdown.send_replace(true);
        self.inner.admission.close();
        let sessions: Vec<_> = lock(&self.inner.sessions).values().cloned().collect();
        for s in sessions {
            s.close(ErrorCode::ShuttingDown);
        }
        let wait_idle = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.inflight.load(Ordering::Acquire) == 0 {
                    break;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, wait_idle).await.is_err() {
            tracing::warn!(
                inflight = self.inner.inflight.load(Ordering::Acquire),
                "shutdown grace elapsed with work in flight"
            );
        }
        self.inner.store.flush().await?;
        Ok(())
    }

    pub(crate) fn inflight(&self) -> InflightGuard {
        self.inner.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.inner.clone())
    }

    pub(crate) fn forget_session(&self, id: SessionId) {
        if lock(&self.inner.sessions).remove(&id).is_some() {
            self.inner.metrics.sessions.dec();
        }
    }

    /// Looks a room up, through the cache.
    pub(crate) async fn room(&self, name: &str) -> Result<Option<RoomRecord>, EngineError> {
        if let Some(r) = self
            .inner
            .rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Some(r.clone()));
        }
        let rec = self.inner.store.room(name).await?;
        if let Some(r) = &rec {
            let mut rooms = self.inner.rooms.write().unwrap_or_else(|p| p.into_inner());
            if rooms.len() >= ROOM_CACHE_MAX {
                rooms.clear();
            }
            rooms.insert(name.to_owned(), r.clone());
        }
        Ok(rec)
    }

    /// The policy of a room kind.
    pub(crate) fn kind(&self, kind: &str) -> Result<Arc<dyn Room>, EngineError> {
        self.inner.kinds.get(kind).cloned().ok_or_else(|| {
            EngineError::new(
                ErrorCode::Internal,
                format!("room kind {kind:?} is not registered"),
            )
        })
    }

    pub(crate) fn room_info(
        &self,
        rec: &RoomRecord,
        last_seq: u64,
        role: Option<Role>,
    ) -> RoomInfo {
        RoomInfo {
            name: rec.name.clone(),
            kind: rec.kind.clone(),
            topic: rec.topic.clone(),
            last_seq,
            role,
            last_read: 0,
            unread: 0,
        }
    }

    /// Sends a `mention` to every member named `@name` in a new message
    /// (other than its author and bots), through each user's own channel,
    /// so every session of theirs on every node hears it.
    pub(crate) async fn notify_mentions(&self, message: &crate::Message) {
        let mut named: Vec<&str> = Vec::new();
        for (i, _) in message.body.match_indices('@') {
            let rest = &message.body[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
                .unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches(['.', '-']);
            if !name.is_empty() && !named.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                named.push(name);
            }
        }
        for name in named.into_iter().take(MAX_MENTIONS) {
            let name = name.to_ascii_lowercase();
            if name == message.sender || self.is_bot(&name) {
                continue;
            }
            match self.inner.store.member_role(&message.room, &name).await {
                Ok(Some(_)) => {}
                _ => continue,
            }
            let frame = ServerFrame::Mention {
                room: message.room.clone(),
                seq: message.seq,
                from: message.sender.clone(),
                excerpt: truncate_utf8(&message.body, 140).to_owned(),
            };
            self.publish_ephemeral(&user_channel(&name), &frame).await;
        }
    }

    /// Publishes an ephemeral event to a room.
    pub(crate) async fn publish_ephemeral(&self, room: &str, frame: &ServerFrame) {
        self.publish(RoomEvent::ephemeral(room, Codec::encode(frame)))
            .await;
    }

    pub(crate) async fn publish(&self, event: RoomEvent) {
        if let Err(e) = self.inner.broker.publish(event).await {
            // Stored messages are recovered by seq from the store; only
            // ephemeral events are lost here.
            tracing::warn!(error = %e, "broker publish failed");
        }
    }

    /// Appends a message and publishes it (see
    /// [`append_and_publish_many`](Self::append_and_publish_many)).
    pub(crate) async fn append_and_publish(
        &self,
        msg: NewMessage,
    ) -> Result<crate::store::Appended, EngineError> {
        let mut results = self.append_and_publish_many(vec![msg]).await;
        results.pop().unwrap_or_else(|| Err(task_failed()))
    }

    /// Appends messages in order and publishes each one stored; one result
    /// per message, in order. Runs as its own task so that a caller going
    /// away cannot leave a stored message unpublished. Several (a
    /// connection's pipelined sends) go to the store in one request.
    pub(crate) async fn append_and_publish_many(
        &self,
        msgs: Vec<NewMessage>,
    ) -> Vec<Result<crate::store::Appended, EngineError>> {
        let n = msgs.len();
        if n > 1 {
            self.inner.metrics.sends_batched.add(n as u64);
        }
        let engine = self.clone();
        let guard = self.inflight();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let started = tokio::time::Instant::now();
            let store = &engine.inner.store;
            let results = match <[NewMessage; 1]>::try_from(msgs) {
                Ok([one]) => vec![store.append(one).await],
                Err(msgs) => store.append_many(msgs).await,
            };
            let took = started.elapsed();
            for res in &results {
                engine.inner.metrics.store_append.observe(took);
                match res {
                    Ok(appended) => engine.publish_appended(appended).await,
                    Err(_) => engine.inner.metrics.store_errors.inc(),
                }
            }
            results
        });
        match task.await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(EngineError::from))
                .collect(),
            Err(_) => (0..n).map(|_| Err(task_failed())).collect(),
        }
    }

    /// Counts and publishes a message the store just took (not a repeat).
    async fn publish_appended(&self, appended: &crate::store::Appended) {
        if appended.duplicate {
            return;
        }
        self.inner.metrics.messages_in.inc();
        let m = &appended.message;
        let event = RoomEvent {
            room: Arc::from(m.room.as_str()),
            seq: Some(m.seq),
            frame: Codec::encode(&ServerFrame::Message { message: m.clone() }),
            revoke: None,
        };
        self.publish(event).await;
    }

    /// Looks a room up with the caller's role, refusing with `not_found`
    /// when the caller may not even see it, and with `forbidden` when it
    /// may see it but not do `action`.
    pub(crate) async fn check(
        &self,
        room: &str,
        user: &str,
        action: Action,
    ) -> Result<Checked, EngineError> {
        let rec = self
            .room(room)
            .await?
            .ok_or_else(|| EngineError::not_found("room"))?;
        let policy = self.kind(&rec.kind)?;
        let role = self.inner.store.member_role(room, user).await?;
        if !policy.permits(Action::See, role) {
            return Err(EngineError::not_found("room"));
        }
        if !policy.permits(action, role) {
            return Err(EngineError::forbidden());
        }
        Ok(Checked { rec, policy, role })
    }

    fn vault(&self) -> Result<&Arc<FileVault>, EngineError> {
        self.inner
            .vault
            .as_ref()
            .ok_or_else(|| EngineError::invalid("file sharing is not enabled on this server"))
    }

    /// The file settings, when file sharing is enabled.
    pub fn file_settings(&self) -> Option<&FileSettings> {
        self.inner.vault.as_deref().map(FileVault::settings)
    }

    /// Starts an upload of `size` bytes named `name` by `user` to `room`,
    /// after the room's access rules, the size limit, the type (by name)
    /// and the user's quota. Write the bytes with [`PendingUpload::write`],
    /// then call [`finish_upload`](Self::finish_upload).
    pub async fn begin_upload(
        &self,
        user: &str,
        room: &str,
        name: &str,
        size: u64,
    ) -> Result<PendingUpload, EngineError> {
        let vault = self.vault()?.clone();
        self.check(room, user, Action::Post).await?;
        if !self.inner.rate.check(user) {
            self.inner.metrics.rate_limited.inc();
            return Err(EngineError::new(ErrorCode::RateLimited, "slow down"));
        }
        let used = self.inner.store.bytes_uploaded_by(user).await?;
        if used.saturating_add(size) > vault.settings().user_quota_bytes {
            return Err(EngineError::new(
                ErrorCode::Forbidden,
                "this upload would exceed your storage quota",
            ));
        }
        let upload = vault.begin(name, size).await?;
        Ok(PendingUpload {
            upload,
            room: room.to_owned(),
            user: user.to_owned(),
        })
    }

    /// Completes an upload: the file is stored and shared in its room as a
    /// message with `body` as text. Returns the message's append result.
    pub async fn finish_upload(
        &self,
        pending: PendingUpload,
        body: String,
        client_id: Option<String>,
    ) -> Result<crate::store::Appended, EngineError> {
        if body.len() > self.inner.limits.max_message_bytes {
            return Err(EngineError::new(
                ErrorCode::MessageTooLarge,
                "caption too long",
            ));
        }
        let PendingUpload { upload, room, user } = pending;
        let stored = upload.finish().await?;
        let id = match &client_id {
            // A retry of the same upload (same client id) maps to the same
            // file id, so it is recorded once and the message append below
            // answers with the earlier message.
            Some(cid) => {
                use sha2::Digest as _;
                let digest =
                    sha2::Sha256::digest(format!("file\0{room}\0{user}\0{cid}").as_bytes());
                crate::auth::hex(&digest[..16])
            }
            // 128 random bits, hex: unguessable and path-free.
            None => crate::auth::new_token().1[..32].to_owned(),
        };
        let file = FileRef {
            id,
            name: stored.name,
            size: stored.size,
            mime: stored.mime,
        };
        let record = FileRecord {
            file: file.clone(),
            room: room.clone(),
            uploader: user.clone(),
            sha256: stored.sha256,
            created_at: now_ms(),
        };
        match self.inner.store.put_file(record).await {
            Ok(()) | Err(crate::StoreError::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
        self.append_and_publish(NewMessage {
            room,
            sender: user,
            body,
            kind: MessageKind::User,
            client_id,
            ts: now_ms(),
            file: Some(file),
        })
        .await
    }

    /// A file's record, if `user` may read the room it was shared in;
    /// `not_found` otherwise (guessing an id reveals nothing).
    pub async fn file_for(&self, user: &str, id: &str) -> Result<FileRecord, EngineError> {
        self.vault()?;
        let rec = self
            .inner
            .store
            .file(id)
            .await?
            .ok_or_else(|| EngineError::not_found("file"))?;
        match self.check(&rec.room, user, Action::Read).await {
            Ok(_) => Ok(rec),
            Err(_) => Err(EngineError::not_found("file")),
        }
    }

    /// Where a file's content lives on disk (for streaming downloads).
    pub fn file_path(&self, rec: &FileRecord) -> Result<std::path::PathBuf, EngineError> {
        self.vault()?
            .blob_path(&rec.sha256)
            .ok_or_else(|| EngineError::not_found("file"))
    }

    /// Reads up to `len` bytes of a file from `offset`.
    pub async fn read_file(
        &self,
        rec: &FileRecord,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, EngineError> {
        self.vault()?.read(&rec.sha256, offset, len).await
    }

    /// Whether `name` is a registered bot.
    pub(crate) fn is_bot(&self, name: &str) -> bool {
        self.inner.bots.contains_key(name)
    }

    /// Whether a user or bot of that name exists.
    pub(crate) async fn user_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(self.is_bot(name) || self.inner.store.user(name).await?.is_some())
    }

    pub(crate) async fn create_user(&self, name: &str, hash: String) -> Result<(), EngineError> {
        if self.is_bot(name) || name == "system" {
            return Err(EngineError::new(
                ErrorCode::AlreadyExists,
                "user name taken",
            ));
        }
        let rec = UserRecord {
            name: name.to_owned(),
            password_hash: hash,
            created_at: now_ms(),
        };
        self.inner
            .store
            .create_user(rec)
            .await
            .map_err(|e| match e {
                crate::StoreError::AlreadyExists => {
                    EngineError::new(ErrorCode::AlreadyExists, "user name taken")
                }
                e => e.into(),
            })
    }

    /// Counts a live session of `user`; presence changes are published to
    /// the user's rooms.
    pub(crate) fn presence_delta(&self, user: &str, up: bool) {
        let changed = {
            let mut p = lock(&self.inner.presence);
            if up {
                let e = p.entry(user.to_owned()).or_insert((0, Presence::Online));
                e.0 += 1;
                (e.0 == 1).then_some(Presence::Online)
            } else {
                match p.get_mut(user) {
                    Some(e) if e.0 > 1 => {
                        e.0 -= 1;
                        None
                    }
                    Some(_) => {
                        p.remove(user);
                        Some(Presence::Offline)
                    }
                    None => None,
                }
            }
        };
        if let Some(status) = changed {
            self.announce_presence(user, status);
        }
    }

    pub(crate) fn set_status(&self, user: &str, status: Presence) {
        let changed = {
            let mut p = lock(&self.inner.presence);
            match p.get_mut(user) {
                Some(e) if e.1 != status => {
                    e.1 = status;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.announce_presence(user, status);
        }
    }

    pub(crate) fn presence_of(&self, user: &str) -> Presence {
        if self.is_bot(user) {
            return Presence::Online;
        }
        lock(&self.inner.presence)
            .get(user)
            .map_or(Presence::Offline, |e| e.1)
    }

    fn announce_presence(&self, user: &str, status: Presence) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let engine = self.clone();
        let user = user.to_owned();
        handle.spawn(async move {
            let rooms = match engine.inner.store.memberships(&user).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "presence: cannot list rooms");
                    return;
                }
            };
            for (room, _) in rooms {
                let frame = ServerFrame::Presence {
                    room: room.name.clone(),
                    user: user.clone(),
                    status,
                };
                engine.publish_ephemeral(&room.name, &frame).await;
            }
        });
    }

    /// Picks the bot for an `ask` in a room: the named one, else the room's
    /// first bot member, else the first registered bot.
    pub(crate) async fn pick_bot(
        &self,
        room: &str,
        named: Option<&str>,
    ) -> Result<Arc<dyn Bot>, EngineError> {
        if let Some(name) = named {
            return self
                .inner
                .bots
                .get(name)
                .cloned()
                .ok_or_else(|| EngineError::not_found("bot"));
        }
        for (member, role) in self.inner.store.members(room).await? {
            if role == Role::Bot {
                if let Some(b) = self.inner.bots.get(&member) {
                    return Ok(b.clone());
                }
            }
        }
        self.inner
            .bot_order
            .first()
            .and_then(|n| self.inner.bots.get(n))
            .cloned()
            .ok_or_else(|| EngineError::not_found("bot"))
    }

    /// Bots that should answer a new message in a room: every bot member
    /// where the kind says so, and mentioned (`@name`) bot members.
    pub(crate) async fn bots_to_answer(
        &self,
        room: &RoomRecord,
        body: &str,
    ) -> Result<Vec<Arc<dyn Bot>>, EngineError> {
        if self.inner.bots.is_empty() {
            return Ok(Vec::new());
        }
        let answer_all = self.kind(&room.kind)?.bots_answer_all();
        let mentioned: Vec<&String> = self
            .inner
            .bot_order
            .iter()
            .filter(|b| mentions(body, b))
            .collect();
        if !answer_all && mentioned.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (member, role) in self.inner.store.members(&room.name).await? {
            if role != Role::Bot {
                continue;
            }
            if answer_all || mentioned.iter().any(|m| **m == member) {
                if let Some(b) = self.inner.bots.get(&member) {
                    out.push(b.clone());
                }
            }
        }
        Ok(out)
    }

    /// Runs a bot reply as its own task: deltas are broadcast (or sent to
    /// `private` alone), the final text is stored as a message (or sent as
    /// suggestions). Never leaves the room waiting: failures and timeouts
    /// produce the bot's fallback.
    pub(crate) fn spawn_bot(
        &self,
        bot: Arc<dyn Bot>,
        room: String,
        asker: String,
        task: BotTask,
        private: Option<(Arc<dyn Session>, Option<u64>)>,
    ) {
        let engine = self.clone();
        let guard = self.inflight();
        tokio::spawn(async move {
            let _guard = guard;
            engine.run_bot(bot, room, asker, task, private).await;
        });
    }

    async fn run_bot(
        &self,
        bot: Arc<dyn Bot>,
        room: String,
        asker: String,
        task: BotTask,
        private: Option<(Arc<dyn Session>, Option<u64>)>,
    ) {
        let inner = &self.inner;
        inner.metrics.bot_requests.inc();
        let started = tokio::time::Instant::now();
        let stream_id = inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let bot_name = bot.name().to_owned();
        let deadline = started + inner.limits.bot_timeout;
        let max_bytes = inner.limits.max_bot_reply_bytes;

        let send = |frame: ServerFrame| {
            let engine = self.clone();
            let room = room.clone();
            let private = private.clone();
            async move {
                match private {
                    Some((session, _)) => {
                        // A private reply that does not fit is dropped; the
                        // session's own queue bound decides, as for any frame.
                        let _ = session.deliver(Codec::encode(&frame));
                    }
                    None => engine.publish_ephemeral(&room, &frame).await,
                }
            }
        };

        let result: Result<String, BotError> = async {
            let _slot = tokio::time::timeout_at(deadline, inner.bot_slots.clone().acquire_owned())
                .await
                .map_err(|_| BotError::Busy)?
                .map_err(|_| BotError::Busy)?;
            let context_len = match &task {
                BotTask::Summarize { count } => (*count).clamp(1, 500),
                _ => inner.limits.bot_context,
            };
            let context = inner
                .store
                .history(&room, HistoryQuery::latest(context_len))
                .await
                .map_err(|e| BotError::Backend(Box::new(e)))?;
            let mut stream = bot.reply(BotRequest::new(&room, &asker, task.clone(), context));
            let mut text = String::new();
            loop {
                let item = tokio::time::timeout_at(deadline, stream.next())
                    .await
                    .map_err(|_| BotError::Timeout)?;
                let Some(delta) = item else { break };
                let delta = delta?;
                if delta.is_empty() || text.len() >= max_bytes {
                    continue;
                }
                let room_left = max_bytes - text.len();
                let delta = truncate_utf8(&delta, room_left).to_owned();
                text.push_str(&delta);
                send(ServerFrame::BotDelta {
                    room: room.clone(),
                    bot: bot_name.clone(),
                    stream: stream_id,
                    delta,
                    private: private.is_some(),
                })
                .await;
            }
            if text.trim().is_empty() {
                return Err(BotError::Protocol("empty reply".to_owned()));
            }
            Ok(text)
        }
        .await;

        let (text, fallback) = match result {
            Ok(t) => (t, false),
            Err(e) => {
                inner.metrics.bot_failures.inc();
                tracing::warn!(bot = %bot_name, %room, error = %e, "bot failed; sending fallback");
                (bot.fallback(&e), true)
            }
        };
        inner.metrics.bot_latency.observe(started.elapsed());

        match &private {
            Some((session, id)) => {
                let replies = text
                    .lines()
                    .map(|l| l.trim().trim_start_matches(['-', '*', '•']).trim())
                    .filter(|l| !l.is_empty())
                    .take(5)
                    .map(str::to_owned)
                    .collect();
                let frames = [
                    ServerFrame::BotDone {
                        room: room.clone(),
                        bot: bot_name.clone(),
                        stream: stream_id,
                        seq: None,
                        fallback,
                    },
                    ServerFrame::Suggestions {
                        id: *id,
                        room: room.clone(),
                        replies,
                    },
                ];
                for f in frames {
                    let _ = session.deliver(Codec::encode(&f));
                }
            }
            None => {
                let msg = NewMessage {
                    room: room.clone(),
                    sender: bot_name.clone(),
                    body: text,
                    kind: MessageKind::Bot,
                    client_id: None,
                    ts: now_ms(),
                    file: None,
                };
                let seq = match self.append_and_publish(msg).await {
                    Ok(a) => Some(a.message.seq),
                    Err(e) => {
                        tracing::warn!(bot = %bot_name, %room, error = %e, "bot reply not stored");
                        None
                    }
                };
                send(ServerFrame::BotDone {
                    room: room.clone(),
                    bot: bot_name,
                    stream: stream_id,
                    seq,
                    fallback,
                })
                .await;
            }
        }
    }

    /// Encodes and queues a frame to one session; a full queue closes it.
    pub(crate) fn send_to(session: &Arc<dyn Session>, frame: &ServerFrame) {
        Self::send_bytes(session, Codec::encode(frame));
    }

    /// Queues the answer to the session's own request (see
    /// [`Session::deliver_reply`]).
    pub(crate) fn reply_to(session: &Arc<dyn Session>, frame: &ServerFrame) {
        let queued = session.deliver_reply(Codec::encode(frame));
        Self::lag_if_refused(session, queued);
    }

    pub(crate) fn send_bytes(session: &Arc<dyn Session>, bytes: Bytes) {
        let queued = session.deliver(bytes);
        Self::lag_if_refused(session, queued);
    }

    /// A session whose queue refused a frame is closed as `lagged` (it
    /// resumes by `seq`), unless it is closed already.
    fn lag_if_refused(session: &Arc<dyn Session>, queued: Result<(), crate::session::Full>) {
        if queued.is_err() && !session.is_closed() {
            session.close(ErrorCode::Lagged);
        }
    }
}

/// A room record with its policy and the caller's role, after an access
/// check.
pub(crate) struct Checked {
    pub(crate) rec: RoomRecord,
    pub(crate) policy: Arc<dyn Room>,
    pub(crate) role: Option<Role>,
}

/// An upload accepted by [`Engine::begin_upload`]; dropping it deletes
/// what was written.
#[derive(Debug)]
pub struct PendingUpload {
    upload: Upload,
    room: String,
    user: String,
}

impl PendingUpload {
    /// Appends bytes; more than the declared size, or content whose type
    /// does not match, is refused (drop the upload then).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), EngineError> {
        self.upload.write(data).await
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.upload.received()
    }

    /// The room it goes to.
    pub fn room(&self) -> &str {
        &self.room
    }
}

/// Most users notified for one message.
const MAX_MENTIONS: usize = 20;

/// The channel carrying a user's own notifications. `~` cannot appear in a
/// room name, so it never collides with a room.
pub(crate) fn user_channel(user: &str) -> String {
    format!("~{user}")
}

/// Whether `body` mentions `@name` as a whole word.
fn mentions(body: &str, name: &str) -> bool {
    body.match_indices('@').any(|(i, _)| {
        let rest = &body[i + 1..];
        rest.len() >= name.len()
            && rest.as_bytes()[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && rest[name.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
    })
}

/// The longest prefix of `s` of at most `max` bytes ending on a char
/// boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_whole_words() {
        assert!(mentions("hey @helper what's up", "helper"));
        assert!(mentions("@Helper, hi", "helper"));
        assert!(mentions("end @helper", "helper"));
        assert!(!mentions("@helpers", "helper"));
        assert!(!mentions("helper", "helper"));
        assert!(!mentions("@hel", "helper"));
    }

    #[test]
    fn truncation_keeps_utf8() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}

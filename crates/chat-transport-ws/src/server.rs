//! The accept loop and one HTTP connection's life: optional TLS handshake,
//! HTTP/1.1 with upgrades, then (for `GET /ws`) the WebSocket session in a
//! task of its own. Shutdown as in mini-redis: a `watch` tells every
//! connection, and `serve` waits (bounded) for them all.
//!
//! The session gets its own task because a tokio task's allocation is as
//! large as its future's largest state for the whole of its life: run in
//! the HTTP task, an idle WebSocket would keep hyper's connection state's
//! room (about 9 KiB) for hours. The HTTP task returns the upgraded
//! connection to the accept loop, which spawns the session. A session is
//! not in the accept loop's task set: an idle one sleeps without a task
//! (see [`crate::ws`]) and is woken into a new one, so `serve` counts live
//! sessions ([`Sessions`]) and waits for that count when it stops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::Engine;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore, SemaphorePermit};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::error::Error;
use crate::metrics::TransportStats;
use crate::settings::WsSettings;
use crate::ws::PendingWs;
use chat_net::clock::{self, Clock};
use chat_net::Dorm;

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) settings: WsSettings,
    pub(crate) stats: TransportStats,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Slots for HTTP uploads in progress.
    pub(crate) uploads: Semaphore,
    /// The WebSocket sessions' shared ping clock.
    pub(crate) ping: Arc<Clock>,
    /// The WebSocket sessions alive, running or asleep.
    pub(crate) sessions: Sessions,
    /// The runtime `serve` runs on, where a sleeping session wakes up.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Where sleeping plain sessions keep their sockets; `None` if the OS
    /// refused an epoll set (they sleep in tokio's reactor then).
    pub(crate) dorm: Option<Arc<Dorm>>,
    /// Slots under `max_connections`.
    limit: Semaphore,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The dorm's task, stopped with the server whichever way `serve` ends.
struct DormTask(Arc<Dorm>);

impl Drop for DormTask {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A count of the WebSocket sessions alive, which `serve` waits for when
/// it stops (a sleeping session is no task to join).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: AtomicUsize,
    ended: Notify,
}

impl Sessions {
    /// Counts one more session.
    pub(crate) fn opened(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts one session less.
    pub(crate) fn closed(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ended.notify_waiters();
        }
    }

    /// How many are alive.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until none is alive.
    async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the count is read: a last session ending
            // in between is not missed.
            ended.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// Serves the engine over HTTP/1.1 and WebSocket on `listener` until
/// `shutdown` resolves (or the engine is shut down by someone else).
///
/// Then it stops accepting, shuts the engine down (every WebSocket gets a
/// `closing` frame and close code 1001, the store is flushed; calling
/// [`Engine::shutdown`] twice is harmless), lets in-flight HTTP requests
/// finish, and returns once every connection has ended, or after
/// [`WsSettings::shutdown_grace`] plus [`WsSettings::close_timeout`] at
/// most: HTTP connections still open then are dropped; a WebSocket
/// session still saying goodbye ends within its own bounds
/// ([`WsSettings::close_timeout`], [`WsSettings::write_timeout`]).
///
/// Per-connection failures (bad requests, failed TLS handshakes, resets)
/// are logged and never end the server.
pub async fn serve<F>(
    listener: TcpListener,
    engine: Engine,
    settings: WsSettings,
    shutdown: F,
) -> Result<(), Error>
where
    F: Future<Output = ()> + Send,
{
    settings.validate()?;
    if let Some(f) = engine.file_settings() {
        // An upload_chunk frame carries chunk_bytes in base64, plus JSON.
        let frame = f.chunk_bytes.div_ceil(3) * 4 + 256;
        if frame > settings.max_message_bytes {
            tracing::warn!(
                chunk_bytes = f.chunk_bytes,
                max_message_bytes = settings.max_message_bytes,
                "file chunks do not fit in a WebSocket message: uploads over frames will fail"
            );
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_connections = settings.max_connections;
    let dorm = match Dorm::start() {
        Ok(dorm) => Some(DormTask(dorm)),
        Err(e) => {
            tracing::warn!(error = %e, "no dorm: sleeping sessions keep their sockets in the reactor");
            None
        }
    };
    let shared = Arc::new(Shared {
        // Our records take over from rustls after each handshake, with
        // the secrets it extracts (`chat_net::tls`): allowed once, here.
        tls: settings.tls.as_deref().map(|config| {
            let mut config = config.clone();
            config.enable_secret_extraction = true;
            Arc::new(config)
        }),
        engine: engine.clone(),
        uploads: Semaphore::new(settings.max_http_uploads),
        settings,
        stats: TransportStats::default(),
        shutdown: stop_rx,
        ping: Arc::new(Clock::default()),
        sessions: Sessions::default(),
        runtime: tokio::runtime::Handle::current(),
        dorm: dorm.as_ref().map(|d| d.0.clone()),
        limit: Semaphore::new(max_connections),
    });
    // Ended with the server (below), whichever way it stops.
    let ping_clock = tokio::spawn(shared.ping.clone().run(
        clock::period(shared.settings.ping_interval),
        shared.dorm.clone(),
    ));
    let mut tasks: JoinSet<Option<Upgraded>> = JoinSet::new();
    let mut engine_down = engine.shutdown_signal();
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            () = until_true(&mut engine_down) => {}
        }
    };
    tokio::pin!(stop);
    tracing::info!(addr = ?listener.local_addr().ok(), tls = shared.tls.is_some(), "serving HTTP and WebSocket");

    let mut backoff = Duration::from_millis(5);
    // A slot under `max_connections`, taken before accepting.
    let mut slot: Option<SemaphorePermit<'_>> = None;
    let result = loop {
        tokio::select! {
            biased;
            () = &mut stop => break Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                start_session(done);
            }
            p = shared.limit.acquire(), if slot.is_none() => match p {
                Ok(p) => slot = Some(p),
                Err(_) => break Ok(()),
            },
            accepted = listener.accept(), if slot.is_some() => match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(5);
                    if let Some(permit) = slot.take() {
                        let slot = Slot::taken(permit, shared.clone());
                        let span = tracing::debug_span!("conn", %peer);
                        tasks.spawn(connection(tcp, peer, slot).instrument(span));
                    }
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => break Err(Error::Listener(e)),
            },
        }
    };
    drop(listener);

    tracing::info!(
        connections = tasks.len(),
        "shutting down: no longer accepting"
    );
    stop_tx.send_replace(true);
    let s = &shared.settings;
    let engine_result = engine.shutdown(s.shutdown_grace).await;
    let drained = tokio::time::timeout(s.close_timeout, async {
        // An upgrade that lands now still gets its session, which closes
        // it properly (1001, going away).
        while let Some(done) = tasks.join_next().await {
            start_session(done);
        }
        // Every session was told (the engine closed it, which wakes a
        // sleeping one): each says goodbye within `close_timeout`.
        shared.sessions.all_ended().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            sessions = shared.sessions.live(),
            "connections still open after close_timeout; dropping them"
        );
        // Sessions end on their own bounds (`close_timeout`, `write_timeout`).
        tasks.shutdown().await;
    }
    ping_clock.abort();
    drop(dorm);
    tracing::info!("server stopped");
    result?;
    engine_result.map_err(Error::Shutdown)
}

/// A WebSocket upgrade handed back by an HTTP connection's task.
struct Upgraded {
    pending: PendingWs,
    place: Place,
}

/// A connection's slot under `max_connections`, given back when dropped
/// (a pointer, where a semaphore permit that owns its semaphore is two:
/// every idle WebSocket holds one). Derefs to the server's shared state.
pub(crate) struct Slot(Arc<Shared>);

impl Slot {
    /// The slot `permit` took, kept past the permit's borrow.
    fn taken(permit: SemaphorePermit<'_>, shared: Arc<Shared>) -> Self {
        permit.forget();
        Slot(shared)
    }
}

impl std::ops::Deref for Slot {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.limit.add_permits(1);
    }
}

/// An upgraded connection's place, held by its WebSocket session for its
/// whole life, running or asleep: its slot, and its count in the HTTP and
/// WebSocket gauges and in the server's live sessions, all given back when
/// dropped. Derefs to the server's shared state.
pub(crate) struct Place(Slot);

impl Place {
    fn new(slot: Slot) -> Self {
        slot.stats.connection_opened();
        slot.stats.ws_opened();
        slot.sessions.opened();
        Place(slot)
    }
}

impl std::ops::Deref for Place {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.stats.connection_closed();
        self.0.stats.ws_closed();
        self.0.sessions.closed();
    }
}

/// Spawns the WebSocket session of a finished HTTP task that upgraded.
fn start_session(done: Result<Option<Upgraded>, tokio::task::JoinError>) {
    if let Ok(Some(up)) = done {
        // Not in `tasks`: the session may sleep without a task and wake in
        // another; `Sessions` counts it instead. It holds the place.
        tokio::spawn(crate::ws::run(up.pending, up.place));
    }
}

/// Waits until the watched flag is true (forever if its sender is gone).
pub(crate) async fn until_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Accept errors that concern one connection or pass with time.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | TimedOut
    ) || matches!(
        e.raw_os_error(),
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of resources for now.
        Some(24 | 23 | 105 | 12)
    )
}

/// One accepted connection up to the end of its HTTP phase: the upgraded
/// WebSocket, if a request asked for one, is returned with the slot.
async fn connection(tcp: TcpStream, peer: SocketAddr, slot: Slot) -> Option<Upgraded> {
    let shared = slot.0.clone();
    let open = shared.stats.http_connection();
    let _ = tcp.set_nodelay(true);
    let pending = match shared.tls.clone() {
        None => http(shared.clone(), tcp, peer).await,
        Some(config) => {
            let timeout = shared.settings.handshake_timeout;
            match tokio::time::timeout(timeout, chat_net::tls::accept(tcp, config)).await {
                Ok(Ok(tls)) => http(shared.clone(), tls, peer).await,
                Ok(Err(e)) => {
                    shared.stats.tls_failures.inc();
                    tracing::info!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    shared.stats.tls_failures.inc();
                    tracing::info!("TLS handshake timed out");
                    None
                }
            }
        }
    };
    // Counted by the hand-over before this task's own count goes.
    let upgraded = pending.map(|pending| Upgraded {
        pending,
        place: Place::new(slot),
    });
    drop(open);
    upgraded
}

/// Serves HTTP/1.1 on one connection; returns the WebSocket upgrade a
/// request asked for, if any.
async fn http<I>(shared: Arc<Shared>, io: I, peer: SocketAddr) -> Option<PendingWs>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot: Arc<Mutex<Option<PendingWs>>> = Arc::new(Mutex::new(None));
    let service = {
        let (shared, slot) = (shared.clone(), slot.clone());
        hyper::service::service_fn(move |req| {
            let (shared, slot) = (shared.clone(), slot.clone());
            async move {
                Ok::<_, std::convert::Infallible>(
                    crate::router::route(shared, req, slot, peer).await,
                )
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings.header_read_timeout)
        .keep_alive(true);
    let mut conn = Box::pin(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    let mut down = shared.shutdown.clone();
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = until_true(&mut down) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(shared.settings.close_timeout, conn.as_mut()).await {
                Ok(res) => res,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
    drop(conn);
    let pending = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    pending
}

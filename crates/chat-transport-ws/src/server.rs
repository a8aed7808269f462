//! The accept loop and one HTTP connection's life: optional TLS handshake,
//! HTTP/1.1 with upgrades, then (for `GET /ws`) the WebSocket session in
//! the same task. Shutdown as in mini-redis: a `watch` tells every
//! connection, and `serve` waits (bounded) for them all.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::Engine;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::error::Error;
use crate::metrics::TransportStats;
use crate::settings::WsSettings;
use crate::ws::PendingWs;

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) settings: WsSettings,
    pub(crate) stats: TransportStats,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Slots for HTTP uploads in progress.
    pub(crate) uploads: Semaphore,
    tls: Option<TlsAcceptor>,
}

/// Serves the engine over HTTP/1.1 and WebSocket on `listener` until
/// `shutdown` resolves (or the engine is shut down by someone else).
///
/// Then it stops accepting, shuts the engine down (every WebSocket gets a
/// `closing` frame and close code 1001, the store is flushed; calling
/// [`Engine::shutdown`] twice is harmless), lets in-flight HTTP requests
/// finish, and returns once every connection has ended, or after
/// [`WsSettings::shutdown_grace`] plus [`WsSettings::close_timeout`] at
/// most, dropping the stragglers.
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
    let shared = Arc::new(Shared {
        tls: settings.tls.clone().map(TlsAcceptor::from),
        engine: engine.clone(),
        uploads: Semaphore::new(settings.max_http_uploads),
        settings,
        stats: TransportStats::default(),
        shutdown: stop_rx,
    });
    let limit = Arc::new(Semaphore::new(shared.settings.max_connections));
    let mut tasks = JoinSet::new();
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
    let result = loop {
        let permit = tokio::select! {
            biased;
            () = &mut stop => break Ok(()),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Ok(()),
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break Ok(()),
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(5);
                let shared = shared.clone();
                let span = tracing::debug_span!("conn", %peer);
                tasks.spawn(connection(shared, tcp, peer, permit).instrument(span));
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => break Err(Error::Listener(e)),
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
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections still open after close_timeout; dropping them"
        );
        tasks.shutdown().await;
    }
    tracing::info!("server stopped");
    result?;
    engine_result.map_err(Error::Shutdown)
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

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _open = shared.stats.http_connection();
    let _ = tcp.set_nodelay(true);
    match shared.tls.clone() {
        None => http(shared.clone(), tcp, peer).await,
        Some(acceptor) => {
            let timeout = shared.settings.handshake_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => http(shared.clone(), tls, peer).await,
                Ok(Err(e)) => {
                    shared.stats.tls_failures.inc();
                    tracing::info!(error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    shared.stats.tls_failures.inc();
                    tracing::info!("TLS handshake timed out");
                }
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection; when a request upgraded it to a
/// WebSocket, runs that session once hyper has handed the socket over.
async fn http<I>(shared: Arc<Shared>, io: I, peer: SocketAddr)
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
    // Boxed so that its state is freed before a long WebSocket session.
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
    if let Some(pending) = pending {
        crate::ws::run(shared, pending).await;
    }
}

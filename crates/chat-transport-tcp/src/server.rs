//! The accept loop: TLS handshake under a timeout, admission by the engine,
//! then one task per connection; graceful shutdown in the mini-redis style.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{Codec, Connection, Engine, OutboxReceiver, ServerFrame};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::session;
use crate::TcpSettings;

/// Longest pause after a failed `accept` (e.g. out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `engine` over TLS on `listener` until `shutdown` resolves or the
/// engine begins its own shutdown.
///
/// Each connection: TLS handshake (bounded by
/// [`TcpSettings::handshake_timeout`] and [`TcpSettings::max_handshakes`]),
/// then [`Engine::admit`] (over the limit: an `error` frame with
/// `server_busy` and the connection closes), then newline-delimited JSON
/// frames both ways until either side closes.
///
/// On shutdown it stops accepting, tells every connection to close (each
/// writes a `closing` frame with `shutting_down`, bounded by
/// [`TcpSettings::write_timeout`] and [`TcpSettings::close_linger`]),
/// drops connections still in their handshake, and resolves once every
/// connection task has ended.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    tls: Arc<rustls::ServerConfig>,
    settings: TcpSettings,
    shutdown: impl Future,
) {
    let acceptor = TlsAcceptor::from(tls);
    let settings = Arc::new(settings);
    let handshakes = Arc::new(Semaphore::new(settings.max_handshakes.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; `recv` returns `None` once all
    // of them have ended (mini-redis `shutdown_complete`).
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut engine_stop = engine.shutdown_signal();
    let engine_stopping = async move {
        // An engine that is dropped has stopped as well.
        let _ = engine_stop.wait_for(|stopping| *stopping).await;
    };
    tokio::pin!(shutdown, engine_stopping);
    let mut backoff = Duration::from_millis(10);

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "TLS TCP transport listening");
    }
    loop {
        let permit = tokio::select! {
            p = handshakes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
            () = &mut engine_stopping => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
            () = &mut engine_stopping => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                let conn = Accepted {
                    engine: engine.clone(),
                    acceptor: acceptor.clone(),
                    settings: settings.clone(),
                    stop: stop_rx.clone(),
                    _done: done_tx.clone(),
                };
                tokio::spawn(conn.run(tcp, peer, permit));
            }
            Err(e) => {
                // Usually out of file descriptors: wait for some to free up.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }

    tracing::info!("TLS TCP transport stopping");
    drop(listener);
    stop_tx.send_replace(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    tracing::info!("TLS TCP transport stopped");
}

/// What a connection task needs.
struct Accepted {
    engine: Engine,
    acceptor: TlsAcceptor,
    settings: Arc<TcpSettings>,
    stop: watch::Receiver<bool>,
    /// Dropped when the task ends; `serve` waits for all of them.
    _done: mpsc::Sender<()>,
}

impl Accepted {
    /// The connection's task. A plain function returning an `async move`
    /// block: an `async fn` would keep its arguments twice for the
    /// connection's whole life.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run(
        mut self,
        tcp: TcpStream,
        peer: SocketAddr,
        handshake: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send {
        async move {
            // The handshake and admission run in a boxed future of their
            // own: their state (TLS stream by value, timers; a few KiB) is
            // freed once they finish instead of staying in the
            // connection's task for its whole life.
            let Some((halves, conn, rx)) = Box::pin(self.admit(tcp, peer, handshake)).await else {
                return;
            };
            tracing::debug!(%peer, session = conn.session_id(), "connection open");
            let max_line = self
                .settings
                .max_line_bytes
                .unwrap_or_else(|| self.engine.codec().max_frame_bytes());
            session::run(halves, conn, rx, &self.settings, max_line, self.stop).await;
            tracing::debug!(%peer, "connection closed");
        }
    }

    /// TLS handshake, then admission by the engine; `None` when either
    /// fails (a refused client gets an `error` frame first).
    async fn admit(
        &mut self,
        tcp: TcpStream,
        peer: SocketAddr,
        handshake: OwnedSemaphorePermit,
    ) -> Option<(Halves, Connection, OutboxReceiver)> {
        let _ = tcp.set_nodelay(true);
        let accept =
            tokio::time::timeout(self.settings.handshake_timeout, self.acceptor.accept(tcp));
        let mut tls = tokio::select! {
            r = accept => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            },
            _ = self.stop.wait_for(|s| *s) => return None,
        };
        drop(handshake);

        let admitted = tokio::select! {
            r = self.engine.admit() => r,
            _ = self.stop.wait_for(|s| *s) => return None,
        };
        match admitted {
            Ok(permit) => {
                let (conn, rx) = self.engine.open(permit);
                Some((tokio::io::split(tls), conn, rx))
            }
            Err(e) => {
                tracing::debug!(%peer, code = %e.code(), "connection not admitted");
                let mut line = Codec::encode(&ServerFrame::Error {
                    id: None,
                    code: e.code(),
                    message: e.message().to_owned(),
                })
                .to_vec();
                line.push(b'\n');
                let _ = tokio::time::timeout(self.settings.write_timeout, async {
                    tls.write_all(&line).await?;
                    tls.shutdown().await
                })
                .await;
                None
            }
        }
    }
}

/// The two halves of an accepted TLS stream.
type Halves = (
    ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>,
    WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the idle memory of a connection: the task's future must not
    /// grow back to include the handshake, admission or request-handling
    /// state (that made it over 6 KiB before they were boxed), nor keep its
    /// arguments twice (2,016 bytes as `async fn`s, 1,688 now).
    #[tokio::test]
    async fn connection_task_future_stays_small() {
        let engine = Engine::builder().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = crate::self_signed(dir.path(), &[]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let (done, _done_rx) = mpsc::channel(1);
        let conn = Accepted {
            engine,
            acceptor: TlsAcceptor::from(cert.server_config().unwrap()),
            settings: Arc::new(TcpSettings::default()),
            stop,
            _done: done,
        };
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let task = conn.run(tcp, peer, permit);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1800, "connection future is {size} bytes");
        drop((task, client));
    }
}

//! The accept loop: TLS handshake under a timeout, admission by the engine,
//! then the connection's session (which sleeps without a task while it is
//! quiet); graceful shutdown in the mini-redis style.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{Codec, Engine, ServerFrame};
use chat_net::Tls;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::session::{self, Live, Shared};
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
/// TLS runs on [`chat_net::Tls`] (rustls' unbuffered API; after the
/// handshake only the record keys are kept), for which the server turns
/// on `enable_secret_extraction` in its own copy of `tls`.
///
/// On shutdown it stops accepting, tells every connection to close (each
/// writes a `closing` frame with `shutting_down`, bounded by
/// [`TcpSettings::write_timeout`] and [`TcpSettings::close_linger`]),
/// drops connections still in their handshake, and resolves once every
/// connection has ended.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    tls: Arc<rustls::ServerConfig>,
    settings: TcpSettings,
    shutdown: impl Future,
) {
    let shared = Arc::new(Shared::new(engine, settings));
    run(listener, shared, tls, shutdown).await;
}

/// [`serve`] with the server's shared state made by the caller (the
/// crate's tests look at its dorm).
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future,
) {
    // Our records take over from rustls after each handshake, with the
    // secrets it extracts: allowed once, here.
    let tls = {
        let mut config = (*tls).clone();
        config.enable_secret_extraction = true;
        Arc::new(config)
    };
    let engine = &shared.engine;
    // Ended with the server, whichever way it ends.
    let _background = Background {
        clock: tokio::spawn(
            shared
                .clock
                .clone()
                .run(session::clock_period(&shared.settings), shared.dorm.clone()),
        ),
        dorm: shared.dorm.clone(),
    };
    let handshakes = Arc::new(Semaphore::new(shared.settings.max_handshakes.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a clone (a session, asleep or not, in its
    // fields); `recv` returns `None` once all of them have ended
    // (mini-redis `shutdown_complete`).
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
                let handshake = Handshake {
                    shared: shared.clone(),
                    tls: tls.clone(),
                    stop: stop_rx.clone(),
                };
                tokio::spawn(connection(handshake, tcp, peer, permit, done_tx.clone()));
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
    // Every session is running, waiting on the clock or resting in the
    // dorm: each one woken here sees the flag.
    shared.stopping.store(true, Ordering::Release);
    shared.clock.wake_everyone(shared.dorm.as_deref()).await;
    drop(done_tx);
    let _ = done_rx.recv().await;
    tracing::info!("TLS TCP transport stopped");
}

/// The server's clock and dorm tasks: ended when `serve` returns or is
/// dropped.
struct Background {
    clock: tokio::task::JoinHandle<()>,
    dorm: Option<Arc<chat_net::Dorm>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.clock.abort();
        if let Some(dorm) = &self.dorm {
            dorm.stop();
        }
    }
}

/// A connection's task: the handshake and admission, then the session
/// until it ends or first falls asleep (then what wakes it runs it in a
/// new task).
/// (A plain function returning an `async move` block: an `async fn`
/// would keep its arguments twice for the connection's whole life.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn connection(
    handshake: Handshake,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    // Dropped when the session ends; `serve` waits for all of them.
    done: mpsc::Sender<()>,
) -> impl Future<Output = ()> + Send {
    async move {
        // The handshake and admission run in a boxed future of their own:
        // their state (rustls' handshake, timers) is freed once they
        // finish.
        let Some(live) = Box::pin(handshake.admit(tcp, peer, permit, done)).await else {
            return;
        };
        tracing::debug!(%peer, "connection open");
        chat_net::sleep::run(live).await;
    }
}

/// What a connection needs until it is admitted.
struct Handshake {
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    stop: watch::Receiver<bool>,
}

impl Handshake {
    /// TLS handshake, then admission by the engine; `None` when either
    /// fails (a refused client gets an `error` frame first).
    async fn admit(
        mut self,
        tcp: TcpStream,
        peer: SocketAddr,
        handshake: OwnedSemaphorePermit,
        done: mpsc::Sender<()>,
    ) -> Option<Box<Live<Tls>>> {
        let _ = tcp.set_nodelay(true);
        let settings = &self.shared.settings;
        let accept = tokio::time::timeout(
            settings.handshake_timeout,
            chat_net::tls::accept(tcp, self.tls.clone()),
        );
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

        let engine = &self.shared.engine;
        let admitted = tokio::select! {
            r = engine.admit() => r,
            _ = self.stop.wait_for(|s| *s) => return None,
        };
        match admitted {
            Ok(permit) => {
                let (conn, rx) = engine.open(permit);
                tracing::debug!(%peer, session = conn.session_id(), "admitted");
                Some(Box::new(Live::new(
                    self.shared.clone(),
                    tls,
                    conn,
                    rx,
                    done,
                )))
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
                let _ = tokio::time::timeout(settings.write_timeout, async {
                    tls.write_all(&line).await?;
                    tls.shutdown().await
                })
                .await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards a connection's first task (the handshake, then the session
    /// until it first sleeps): its future must not grow back to include
    /// the handshake, admission or request-handling state, nor the
    /// session's fields (boxed for its life), nor keep its arguments twice
    /// (1,688 bytes before the session was written by hand).
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
        let handshake = Handshake {
            shared: Arc::new(Shared::new(engine, TcpSettings::default())),
            tls: cert.server_config().unwrap(),
            stop,
        };
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let task = connection(handshake, tcp, peer, permit, done);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 192, "connection future is {size} bytes");
        drop((task, client));
    }

    use chat_core::{ClientFrame, Cursor, ErrorCode, Limits, Request};
    use tokio::sync::oneshot;

    use crate::client::{Client, Connector, Trust};

    const WAIT: Duration = Duration::from_secs(10);

    /// The next frame that is not a heartbeat.
    async fn next(c: &mut Client) -> ServerFrame {
        loop {
            let f = tokio::time::timeout(WAIT, c.recv())
                .await
                .expect("a frame in time")
                .unwrap()
                .expect("a frame, not the end");
            if f != (ServerFrame::Pong { id: None }) {
                return f;
            }
        }
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    fn req(id: u64, frame: ClientFrame) -> Request {
        Request {
            id: Some(id),
            frame,
        }
    }

    /// Quiet sessions sleep without a task and rest in the dorm (out of
    /// tokio's reactor), their
    /// heartbeats are written there without taking the socket back, and
    /// a client's line, a fanned-out message and the shutdown still reach
    /// them.
    #[tokio::test]
    async fn quiet_sessions_rest_in_the_dorm_and_wake_for_what_they_wait_on() {
        let engine = Engine::builder()
            .limits(Limits::default().fast_hashing_for_tests())
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = crate::self_signed(dir.path(), &[]).unwrap();
        let settings = TcpSettings::default().heartbeat_interval(Duration::from_millis(300));
        let shared = Arc::new(Shared::new(engine, settings));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(
            listener,
            shared.clone(),
            cert.server_config().unwrap(),
            stopped,
        ));
        let connector = Connector::new(&Trust::Fingerprint(cert.fingerprint)).unwrap();
        let mut clients = Vec::new();
        for _ in 0..8 {
            let mut c = connector.connect(&addr, None).await.unwrap();
            assert!(matches!(next(&mut c).await, ServerFrame::Hello { .. }));
            clients.push(c);
        }
        for (i, name) in ["alice", "bob"].into_iter().enumerate() {
            let signup = ClientFrame::Signup {
                username: name.into(),
                password: "correct horse".into(),
            };
            clients[i].send(&req(1, signup)).await.unwrap();
            assert!(matches!(
                next(&mut clients[i]).await,
                ServerFrame::Authed { .. }
            ));
        }
        let create = ClientFrame::CreateRoom {
            room: "lobby".into(),
            kind: "public".into(),
            topic: String::new(),
        };
        clients[0].send(&req(2, create)).await.unwrap();
        assert!(matches!(
            next(&mut clients[0]).await,
            ServerFrame::Room { .. }
        ));
        let sub = ClientFrame::Subscribe {
            rooms: vec![Cursor {
                room: "lobby".into(),
                last_seq: Some(0),
            }],
        };
        clients[0].send(&req(3, sub)).await.unwrap();
        assert!(matches!(
            next(&mut clients[0]).await,
            ServerFrame::Subscribed { .. }
        ));
        let join = ClientFrame::Join {
            room: "lobby".into(),
        };
        clients[1].send(&req(2, join)).await.unwrap();
        assert!(matches!(
            next(&mut clients[1]).await,
            ServerFrame::Room { .. }
        ));

        let dorm = shared.dorm.clone().expect("a dorm");
        until("all 8 resting", || dorm.sleepers() == 8).await;
        // ... and asleep, without a task.
        let asleep = || shared.asleep.load(Ordering::Relaxed);
        until("all 8 asleep", || asleep() == 8).await;
        // Heartbeats are written at rest: no socket is taken back for them.
        let risen = shared.risen.load(Ordering::Relaxed);
        for _ in 0..2 {
            let f = tokio::time::timeout(WAIT, clients[7].recv()).await.unwrap();
            assert_eq!(f.unwrap(), Some(ServerFrame::Pong { id: None }));
        }
        assert_eq!(shared.risen.load(Ordering::Relaxed), risen);
        assert_eq!(dorm.sleepers(), 8);

        // A line wakes its session (its socket rises); bob's message
        // reaches alice, resting, through her outbox.
        let send = ClientFrame::Send {
            room: "lobby".into(),
            body: "hello alice".into(),
            client_id: None,
        };
        clients[1].send(&req(4, send)).await.unwrap();
        let ack = next(&mut clients[1]).await;
        assert!(
            matches!(ack, ServerFrame::Ack { id: Some(4), .. }),
            "{ack:?}"
        );
        // (Presence and membership events come first.)
        let message = loop {
            if let ServerFrame::Message { message } = next(&mut clients[0]).await {
                break message;
            }
        };
        assert_eq!(message.body, "hello alice");
        assert!(shared.risen.load(Ordering::Relaxed) >= risen + 2);

        // A hundred requests at once (at least sixteen in one epoch of the
        // clock): bob's session keeps its task, then sleeps.
        until("all 8 asleep again", || asleep() == 8).await;
        for i in 0..100 {
            clients[1]
                .send(&req(100 + i, ClientFrame::Ping))
                .await
                .unwrap();
            let pong = next(&mut clients[1]).await;
            assert!(
                matches!(pong, ServerFrame::Pong { id: Some(_) }),
                "{pong:?}"
            );
        }
        let awake = tokio::time::timeout(
            Duration::from_millis(300),
            until("bob awake", || asleep() == 7),
        )
        .await;
        assert!(awake.is_ok(), "a lively session fell asleep");

        // The shutdown reaches every session, resting or not.
        until("all 8 resting again", || dorm.sleepers() == 8).await;
        until("all 8 asleep again", || asleep() == 8).await;
        let _ = stop.send(());
        for c in &mut clients {
            let mut last = None;
            while let Some(f) = tokio::time::timeout(WAIT, c.recv()).await.unwrap().unwrap() {
                last = Some(f);
            }
            assert!(
                matches!(
                    last,
                    Some(ServerFrame::Closing {
                        reason: ErrorCode::ShuttingDown,
                        ..
                    })
                ),
                "{last:?}"
            );
        }
        tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
        assert_eq!(dorm.sleepers(), 0);
        assert_eq!(asleep(), 0);
    }
}

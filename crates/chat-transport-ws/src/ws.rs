//! `GET /ws`: the upgrade handshake, and one WebSocket session carrying one
//! JSON frame per text message.
//!
//! The session is its own task (spawned once hyper hands the socket over)
//! running a reader and a writer concurrently: the reader parses the
//! client's frames ([`crate::frame`]) and hands each text message to
//! [`Connection::handle_frame`](chat_core::Connection::handle_frame) (which
//! may wait on the store); the writer drains the session's bounded outbox
//! in batches (one write per batch, each frame's JSON written as it was
//! encoded once by the engine, with only a 2-10 byte header built per
//! send) and pings a quiet client. An idle session holds no buffer: reads
//! go through a buffer its worker thread shares, writes through one that
//! lives until it is written.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chat_core::{
    AdmissionPermit, Codec, ErrorCode, Outbox, OutboxLimits, OutboxReceiver, Recv, ServerFrame,
    Session,
};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::frame::{encode_control, encode_text, Control, Decoder, FrameError, Inbound};
use crate::http::{self, Body};
use crate::server::Shared;
use crate::WsSettings;

/// An accepted upgrade waiting for hyper to hand the socket over.
pub(crate) struct PendingWs {
    on_upgrade: hyper::upgrade::OnUpgrade,
    permit: AdmissionPermit,
    peer: SocketAddr,
}

/// The WebSocket close code sent when the server closes a session for
/// `reason`:
///
/// | reason | code |
/// |---|---|
/// | `shutting_down` | 1001 going away |
/// | `frame_too_large`, `message_too_large` | 1009 message too big |
/// | `bad_frame` (invalid UTF-8 in a text message) | 1007 invalid payload |
/// | `server_busy` | 1013 try again later |
/// | `internal`, `store_failed` | 1011 internal error |
/// | `lagged` (the client read too slowly; reconnect and resume by `seq`) | 4000 |
/// | `idle` (nothing received, pongs included, for the idle timeout) | 4001 |
/// | anything else | 1008 policy violation |
///
/// WebSocket protocol violations close with 1002. The close reason text is
/// the error code (`"lagged"`), and a `closing` frame with the same code and
/// an explanation precedes the Close.
pub fn close_code(reason: ErrorCode) -> u16 {
    match reason {
        ErrorCode::ShuttingDown => 1001,
        ErrorCode::FrameTooLarge | ErrorCode::MessageTooLarge => 1009,
        ErrorCode::BadFrame => 1007,
        ErrorCode::ServerBusy => 1013,
        ErrorCode::Internal | ErrorCode::StoreFailed => 1011,
        ErrorCode::Lagged => 4000,
        ErrorCode::Idle => 4001,
        _ => 1008,
    }
}

fn explain(reason: ErrorCode) -> &'static str {
    match reason {
        ErrorCode::ShuttingDown => "the server is shutting down; reconnect later and resume by seq",
        ErrorCode::Lagged => "you fell behind; reconnect and resume by seq",
        ErrorCode::Idle => "nothing received for too long",
        ErrorCode::FrameTooLarge => "message exceeds the size limit",
        ErrorCode::BadFrame => "text message is not valid UTF-8",
        _ => "the server closed the session",
    }
}

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks the upgrade request, takes an admission permit and answers 101.
pub(crate) async fn upgrade(
    shared: &Shared,
    mut req: Request<Incoming>,
    slot: &Mutex<Option<PendingWs>>,
    peer: SocketAddr,
) -> Response<Body> {
    if !header_has(&req, UPGRADE, "websocket") || !header_has(&req, CONNECTION, "upgrade") {
        return http::error_with_status(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        );
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut res = http::error_with_status(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "only WebSocket version 13 is supported",
        );
        res.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return res;
    }
    let Some(key) = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
    else {
        return http::error(
            ErrorCode::BadFrame,
            "missing or malformed Sec-WebSocket-Key",
        );
    };
    let accept = accept_key(key.as_bytes());
    if *shared.shutdown.borrow() {
        return http::error(ErrorCode::ShuttingDown, "shutting down");
    }
    let permit = match shared.engine.admit().await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(%peer, code = %e.code(), "WebSocket refused by admission control");
            return http::error(e.code(), e.message());
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(PendingWs {
        on_upgrade,
        permit,
        peer,
    });
    let mut res = Response::new(http::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// The `Sec-WebSocket-Accept` value for a client's key (RFC 6455, 4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

impl PendingWs {
    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The client sent Close, with this status code if any.
    ClientClosed(Option<u16>),
    /// The socket failed or reached EOF; nothing more can be sent.
    Gone(String),
    /// The engine closed the session, or the transport decided to.
    Server(ErrorCode),
    /// The client's bytes are not valid WebSocket frames (the stream can
    /// no longer be read frame by frame).
    Frame(FrameError),
}

thread_local! {
    /// The read buffer the worker thread's sessions share: bytes are parsed
    /// as soon as they are read, so no session keeps one of its own.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The connection and the bytes waiting to be written to it. The session's
/// reader and writer share it (one task, so the lock is never contended);
/// every frame is queued whole, so whichever of them drives the write,
/// frames never interleave.
struct Socket<Io> {
    io: Io,
    /// Encoded frames not yet written, from `written` on; released once
    /// written, so an idle connection holds no buffer.
    out: Vec<u8>,
    written: usize,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Socket<Io> {
    /// Reads up to `max` bytes into the thread's shared buffer and hands
    /// them to `take`; 0 means end of stream.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        take: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < max {
                scratch.resize(max, 0);
            }
            let mut rb = ReadBuf::new(&mut scratch[..max]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            take(got);
            Poll::Ready(Ok(got.len()))
        })
    }

    /// Writes everything queued, then flushes.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.written > 0 {
            self.out = Vec::new();
            self.written = 0;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

fn lock<Io>(sock: &Mutex<Socket<Io>>) -> std::sync::MutexGuard<'_, Socket<Io>> {
    sock.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads more of the client's bytes into `dec`; 0 means end of stream.
async fn read_more<Io: AsyncRead + AsyncWrite + Unpin>(
    sock: &Mutex<Socket<Io>>,
    dec: &mut Decoder,
    max: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| lock(sock).poll_read(cx, max, |b| dec.push(b))).await
}

/// Writes what is queued, bounded by `timeout`.
async fn drain<Io: AsyncRead + AsyncWrite + Unpin>(
    sock: &Mutex<Socket<Io>>,
    timeout: Duration,
) -> Result<(), End> {
    // Most writes finish at once: only a write that has to wait for the
    // client pays for a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(lock(sock).poll_drain(cx))).await;
    let done = match first {
        Poll::Ready(r) => r,
        // Boxed: the timer lives only while a write waits, not in every
        // idle session.
        Poll::Pending => Box::pin(tokio::time::timeout(
            timeout,
            std::future::poll_fn(|cx| lock(sock).poll_drain(cx)),
        ))
        .await
        .map_err(|_| End::Gone("write timed out".to_owned()))?,
    };
    done.map_err(|e| End::Gone(e.to_string()))
}

/// Runs one WebSocket session to its end.
pub(crate) async fn run(shared: Arc<Shared>, pending: PendingWs) {
    let PendingWs {
        on_upgrade,
        permit,
        peer,
    } = pending;
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "upgrade failed");
            return;
        }
    };
    // A plain connection is driven as the `TcpStream` itself, without
    // hyper's boxed wrapper; TLS goes through the wrapper, its session
    // boxed so that plain sessions' tasks are not sized for both.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => session(shared, parts.io.into_inner(), parts.read_buf, permit, peer).await,
        Err(upgraded) => {
            let io = TokioIo::new(upgraded);
            Box::pin(session(shared, io, Bytes::new(), permit, peer)).await;
        }
    }
}

/// Runs the session over `io`; `early` are bytes the client sent right
/// after the handshake, read before the upgrade (a slice of hyper's read
/// buffer: copied and released at once, or the session would keep that
/// whole buffer).
async fn session<Io: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    io: Io,
    early: Bytes,
    permit: AdmissionPermit,
    peer: SocketAddr,
) {
    let s = &shared.settings;
    let sock = Mutex::new(Socket {
        io,
        out: Vec::new(),
        written: 0,
    });
    let _open = shared.stats.ws_connection();
    let engine = &shared.engine;
    let limits = engine.limits();
    let (outbox, mut rx) = Outbox::new(OutboxLimits {
        max_frames: limits.max_queue_frames,
        max_bytes: limits.max_queue_bytes,
    });
    let mut conn = engine.connect(Arc::new(outbox.clone()), permit);
    let session = conn.session_id();
    tracing::debug!(%peer, session, "WebSocket session open");
    let mut dec = Decoder::new(s.max_message_bytes);
    dec.push(&early);
    drop(early);
    let clock = Clock::new();
    let end = {
        let reader = async {
            loop {
                let msg = match dec.next() {
                    Ok(Some(m)) => m,
                    Ok(None) => match read_more(&sock, &mut dec, s.read_buffer_bytes).await {
                        Ok(0) => return End::Gone("end of stream".to_owned()),
                        Ok(_) => continue,
                        Err(e) => return End::Gone(e.to_string()),
                    },
                    Err(e) => return End::Frame(e),
                };
                clock.touch();
                match msg {
                    // Boxed: the handler's state (it may wait on the
                    // store) lives only while a frame is handled, not in
                    // every idle session's task.
                    Inbound::Text(text) => Box::pin(conn.handle_frame(&text)).await,
                    Inbound::Binary(bytes) => {
                        engine.metrics().bad_frames.inc();
                        tracing::info!(%peer, session, bytes, "binary WebSocket message refused");
                        let frame = ServerFrame::Error {
                            id: None,
                            code: ErrorCode::BadFrame,
                            message: "binary messages are not supported: send one JSON frame per text message".to_owned(),
                        };
                        if outbox.deliver(Codec::encode(&frame)).is_err() {
                            outbox.close(ErrorCode::Lagged);
                        }
                    }
                    Inbound::Ping(data) => {
                        encode_control(&mut lock(&sock).out, Control::Pong(&data));
                        if let Err(end) = drain(&sock, s.write_timeout).await {
                            return end;
                        }
                    }
                    Inbound::Pong => {}
                    Inbound::Close(code) => return End::ClientClosed(code),
                }
            }
        };
        let writer = async {
            let mut buf: Vec<Bytes> = Vec::new();
            // Inline, reset after each tick: no timer allocation per session.
            let tick = tokio::time::sleep(s.ping_interval);
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    r = rx.recv_many(&mut buf, s.write_batch_frames) => match r {
                        Recv::Frames => {
                            gather(&mut rx, &mut buf, s).await;
                            if let Err(end) = write_frames(&sock, &buf, s).await {
                                return end;
                            }
                            // An idle session keeps no batch buffer.
                            buf = Vec::new();
                        }
                        Recv::Closed(reason) => return End::Server(reason),
                    },
                    () = &mut tick => {
                        let quiet = clock.quiet_for();
                        if quiet >= s.idle_timeout {
                            return End::Server(ErrorCode::Idle);
                        }
                        if quiet >= s.ping_interval {
                            encode_control(&mut lock(&sock).out, Control::Ping);
                            if let Err(end) = drain(&sock, s.write_timeout).await {
                                return end;
                            }
                        }
                        tick.as_mut().reset(Instant::now() + s.ping_interval);
                    }
                }
            }
        };
        tokio::select! {
            e = reader => e,
            e = writer => e,
        }
    };
    // Boxed: the closing handshake's state is needed once, at the end.
    Box::pin(finish(
        &shared, &sock, &mut dec, &mut rx, end, peer, session,
    ))
    .await;
    drop(conn);
}

/// With [`WsSettings::write_coalesce`](crate::WsSettings::write_coalesce),
/// waits that long for more frames to write with those in `buf` (up to a
/// batch), but not for a reply: one taken or one queued meanwhile ends the
/// wait.
async fn gather(rx: &mut OutboxReceiver, buf: &mut Vec<Bytes>, s: &WsSettings) {
    if s.write_coalesce.is_zero() || buf.len() >= s.write_batch_frames || rx.took_reply() {
        return;
    }
    // Boxed, as the timer is only needed while gathering.
    Box::pin(async {
        tokio::select! {
            () = tokio::time::sleep(s.write_coalesce) => {}
            () = rx.reply_queued() => {}
        }
    })
    .await;
    while buf.len() < s.write_batch_frames {
        match rx.try_recv() {
            Some(frame) => buf.push(frame),
            None => break,
        }
    }
}

/// Writes `frames` as text frames, each payload the engine's shared JSON
/// bytes as they are (no re-encoding, no UTF-8 re-validation), with one
/// write per `write_buffer_bytes`.
async fn write_frames<Io: AsyncRead + AsyncWrite + Unpin>(
    sock: &Mutex<Socket<Io>>,
    frames: &[Bytes],
    s: &WsSettings,
) -> Result<(), End> {
    let mut next = 0;
    while next < frames.len() {
        {
            let mut sock = lock(sock);
            while let Some(frame) = frames.get(next) {
                if sock.out.len() >= s.write_buffer_bytes {
                    break;
                }
                encode_text(&mut sock.out, frame);
                next += 1;
            }
        }
        drain(sock, s.write_timeout).await?;
    }
    Ok(())
}

/// Sends the `closing` frame and the Close (unless the client went away or
/// closed first), then waits, bounded, for the client's side of the close.
async fn finish<Io: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    sock: &Mutex<Socket<Io>>,
    dec: &mut Decoder,
    rx: &mut OutboxReceiver,
    end: End,
    peer: SocketAddr,
    session: u64,
) {
    let s = &shared.settings;
    let reason = match end {
        End::Gone(why) => {
            tracing::debug!(%peer, session, why = %why, "WebSocket gone");
            return;
        }
        End::ClientClosed(code) => {
            tracing::debug!(%peer, session, ?code, "WebSocket closed by the client");
            // Replies to what the client sent before its Close still go
            // out; then its status is echoed (RFC 6455, 5.5.1) and the
            // server hangs up.
            {
                let mut sock = lock(sock);
                while let Some(frame) = rx.try_recv() {
                    encode_text(&mut sock.out, &frame);
                }
                encode_control(&mut sock.out, Control::Close(code.map(|c| (c, ""))));
            }
            if drain(sock, s.close_timeout).await.is_ok() {
                shut_down(sock, s.close_timeout).await;
            }
            return;
        }
        End::Frame(FrameError::TooLarge { size, max }) => {
            tracing::info!(%peer, session, size, max, "WebSocket message too large");
            Some(ErrorCode::FrameTooLarge)
        }
        End::Frame(FrameError::BadUtf8) => Some(ErrorCode::BadFrame),
        End::Frame(FrameError::Protocol(why)) => {
            tracing::info!(%peer, session, why, "WebSocket protocol violation");
            None
        }
        End::Server(reason) => Some(reason),
    };
    // After a framing error the rest of the stream cannot be parsed: the
    // client's Close is not looked for, only its end.
    let readable = matches!(end, End::Server(_));
    {
        let mut sock = lock(sock);
        match reason {
            Some(reason) => {
                tracing::info!(%peer, session, reason = %reason, "closing WebSocket");
                let closing = ServerFrame::Closing {
                    reason,
                    message: explain(reason).to_owned(),
                };
                encode_text(&mut sock.out, &Codec::encode(&closing));
                let close = (close_code(reason), reason.as_str());
                encode_control(&mut sock.out, Control::Close(Some(close)));
            }
            None => encode_control(
                &mut sock.out,
                Control::Close(Some((1002, "protocol error"))),
            ),
        }
    }
    let _ = tokio::time::timeout(s.close_timeout, async {
        if drain(sock, s.close_timeout).await.is_err() {
            return;
        }
        loop {
            if readable {
                match dec.next() {
                    Ok(Some(Inbound::Close(_))) | Err(_) => break,
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                }
                match read_more(sock, dec, s.read_buffer_bytes).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            } else {
                let discard = std::future::poll_fn(|cx| {
                    lock(sock).poll_read(cx, s.read_buffer_bytes, |_| {})
                });
                match discard.await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
        shut_down(sock, s.close_timeout).await;
    })
    .await;
}

/// Ends the stream cleanly (TLS close_notify, then FIN), bounded.
async fn shut_down<Io: AsyncRead + AsyncWrite + Unpin>(
    sock: &Mutex<Socket<Io>>,
    timeout: Duration,
) {
    let shutdown = std::future::poll_fn(|cx| Pin::new(&mut lock(sock).io).poll_shutdown(cx));
    let _ = tokio::time::timeout(timeout, shutdown).await;
}

/// When the client was last heard from, shared by the reader and the
/// writer of one session.
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

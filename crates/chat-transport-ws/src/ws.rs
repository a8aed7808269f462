//! `GET /ws`: the upgrade handshake, and one WebSocket session carrying one
//! JSON frame per text message.
//!
//! The session runs a reader and a writer concurrently in the connection's
//! one task: the reader hands each text message to
//! [`Connection::handle_frame`](chat_core::Connection::handle_frame) (which
//! may wait on the store), the writer drains the session's bounded outbox
//! in batches (one flush per batch, each frame's JSON written as it was
//! encoded once by the engine, with only a 2-10 byte header built per
//! send) and pings a quiet client.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{
    AdmissionPermit, Codec, ErrorCode, Outbox, OutboxLimits, OutboxReceiver, Recv, ServerFrame,
    Session,
};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

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
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
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

impl PendingWs {
    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The client sent Close.
    ClientClosed,
    /// The socket failed or reached EOF; nothing more can be sent.
    Gone(String),
    /// The engine closed the session, or the transport decided to.
    Server(ErrorCode),
    /// The client broke the WebSocket protocol.
    Protocol(String),
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Sink = futures_util::stream::SplitSink<Ws, Message>;
type Stream = futures_util::stream::SplitStream<Ws>;

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
    let s = &shared.settings;
    let config = WebSocketConfig::default()
        .read_buffer_size(s.read_buffer_bytes)
        .write_buffer_size(s.write_buffer_bytes)
        .max_write_buffer_size(s.max_write_buffer_bytes)
        .max_message_size(Some(s.max_message_bytes))
        .max_frame_size(Some(s.max_message_bytes));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
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
    let (mut sink, mut stream) = ws.split();
    let clock = Clock::new();
    let end = {
        let reader = async {
            loop {
                let msg = match stream.next().await {
                    None => return End::Gone("end of stream".to_owned()),
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return classify(e),
                };
                clock.touch();
                match msg {
                    // Boxed: the handler's state (it may wait on the
                    // store) lives only while a frame is handled, not in
                    // every idle session's task.
                    Message::Text(text) => Box::pin(conn.handle_frame(text.as_bytes())).await,
                    Message::Binary(data) => {
                        engine.metrics().bad_frames.inc();
                        tracing::info!(%peer, session, bytes = data.len(), "binary WebSocket message refused");
                        let frame = ServerFrame::Error {
                            id: None,
                            code: ErrorCode::BadFrame,
                            message: "binary messages are not supported: send one JSON frame per text message".to_owned(),
                        };
                        if outbox.deliver(Codec::encode(&frame)).is_err() {
                            outbox.close(ErrorCode::Lagged);
                        }
                    }
                    Message::Close(_) => return End::ClientClosed,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
        };
        let writer = async {
            let mut buf: Vec<Bytes> = Vec::new();
            let mut tick =
                tokio::time::interval_at(Instant::now() + s.ping_interval, s.ping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = rx.recv_many(&mut buf, s.write_batch_frames) => match r {
                        Recv::Frames => {
                            gather(&mut rx, &mut buf, s).await;
                            if let Err(end) = write_batch(&mut sink, &mut buf, s.write_timeout).await {
                                return end;
                            }
                            if buf.capacity() > s.write_batch_frames {
                                buf = Vec::new();
                            }
                        }
                        Recv::Closed(reason) => return End::Server(reason),
                    },
                    _ = tick.tick() => {
                        let quiet = clock.quiet_for();
                        if quiet >= s.idle_timeout {
                            return End::Server(ErrorCode::Idle);
                        }
                        if quiet >= s.ping_interval {
                            let ping = tokio::time::timeout(s.write_timeout, sink.send(Message::Ping(Bytes::new())));
                            if !matches!(ping.await, Ok(Ok(()))) {
                                return End::Gone("ping failed".to_owned());
                            }
                        }
                    }
                }
            }
        };
        tokio::select! {
            e = reader => e,
            e = writer => e,
        }
    };
    finish(&shared, sink, stream, &end, peer, session).await;
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
    tokio::select! {
        () = tokio::time::sleep(s.write_coalesce) => {}
        () = rx.reply_queued() => {}
    }
    while buf.len() < s.write_batch_frames {
        match rx.try_recv() {
            Some(frame) => buf.push(frame),
            None => break,
        }
    }
}

/// Writes `frames` with one flush, bounded by `timeout`.
async fn write_batch(
    sink: &mut Sink,
    frames: &mut Vec<Bytes>,
    timeout: Duration,
) -> Result<(), End> {
    let write = async {
        for frame in frames.drain(..) {
            sink.feed(text_frame(frame)).await?;
        }
        sink.flush().await
    };
    tokio::pin!(write);
    // Most writes finish at once: only a write that has to wait for the
    // client pays for a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(r) => r,
        Poll::Pending => tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| End::Gone("write timed out".to_owned()))?,
    };
    done.map_err(|e| End::Gone(e.to_string()))
}

/// A text frame whose payload is the engine's shared JSON bytes, sent as
/// is: no re-encoding and no UTF-8 re-validation.
fn text_frame(json: Bytes) -> Message {
    Message::Frame(Frame::message(json, OpCode::Data(Data::Text), true))
}

fn classify(e: WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            tracing::info!(size, max_size, "WebSocket message too large");
            End::Server(ErrorCode::FrameTooLarge)
        }
        WsError::Capacity(e) => End::Protocol(e.to_string()),
        WsError::Utf8(_) => End::Server(ErrorCode::BadFrame),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Gone("reset without closing handshake".to_owned())
        }
        WsError::Protocol(e) => End::Protocol(e.to_string()),
        e => End::Gone(e.to_string()),
    }
}

/// Sends the `closing` frame and the Close (unless the client went away or
/// closed first), then waits, bounded, for the client's side of the close.
async fn finish(
    shared: &Shared,
    mut sink: Sink,
    mut stream: Stream,
    end: &End,
    peer: SocketAddr,
    session: u64,
) {
    let s = &shared.settings;
    let (code, text): (u16, String) = match end {
        End::Gone(why) => {
            tracing::debug!(%peer, session, why = %why, "WebSocket gone");
            return;
        }
        End::ClientClosed => {
            tracing::debug!(%peer, session, "WebSocket closed by the client");
            // Reading on flushes tungstenite's reply to the client's Close.
            let _ = tokio::time::timeout(s.close_timeout, async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
            return;
        }
        End::Protocol(why) => {
            tracing::info!(%peer, session, why = %why, "WebSocket protocol violation");
            (1002, "protocol error".to_owned())
        }
        End::Server(reason) => {
            tracing::info!(%peer, session, reason = %reason, "closing WebSocket");
            let closing = ServerFrame::Closing {
                reason: *reason,
                message: explain(*reason).to_owned(),
            };
            let _ = tokio::time::timeout(
                s.close_timeout,
                sink.feed(text_frame(Codec::encode(&closing))),
            )
            .await;
            (close_code(*reason), reason.as_str().to_owned())
        }
    };
    let close = Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: text.into(),
    }));
    let _ = tokio::time::timeout(s.close_timeout, async {
        if sink.send(close).await.is_ok() {
            while let Some(Ok(_)) = stream.next().await {}
        }
    })
    .await;
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

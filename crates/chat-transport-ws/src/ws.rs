//! `GET /ws`: the upgrade handshake, and one WebSocket session carrying one
//! JSON frame per text message.
//!
//! The session is its own task (spawned once hyper hands the socket over):
//! a future written by hand ([`Live`]) that parses the client's frames
//! ([`crate::frame`]) and hands the text messages, in order, a run of those
//! already read at a time, to
//! [`Connection::handle_frames`](chat_core::Connection::handle_frames)
//! (which may wait on the store), while it drains the session's
//! bounded outbox in batches (one write per batch, each frame's JSON
//! written as it was encoded once by the engine, with only a 2-10 byte
//! header built per send) and pings a quiet client. An idle session holds
//! no buffer: reads go through a buffer its worker thread shares, writes
//! through one that lives until it is written.
//!
//! A quiet session *sleeps*: its task ends, and the session (its fields,
//! boxed) is held only by its one waker ([`chat_net::sleep`]), which its
//! socket, its outbox and the ping clock already have. The first of them to fire
//! spawns a task for it again. So an idle connection costs no tokio task;
//! a session with steady traffic ([`LIVELY`](chat_net::pace::LIVELY) in one ping epoch) keeps its
//! task rather than pay for a new one at every message. A plain session
//! that sleeps with little traffic (under [`RESTLESS`](chat_net::pace::RESTLESS) in the epoch) also
//! takes its socket out of tokio's reactor, into the server's
//! [`Dorm`](chat_net::Dorm) (tokio's registration is the largest piece of an
//! idle connection); woken there, it looks at what woke it
//! ([`Live::doze`]) and takes the socket back only if there is work.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chat_core::{
    AdmissionPermit, Codec, Connection, ErrorCode, Outbox, OutboxLimits, OutboxReceiver, Recv,
    ServerFrame, Session,
};
use futures_util::future::Either;
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
use crate::server::{Place, Shared};
use chat_net::rounds::{rounds, Step, ROUNDS};
use chat_net::sleep::{self, Sleeper};
use chat_net::socket::Arrived;
use chat_net::{Pace, Plain, Rest, Socket, Stream, Tls};

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

/// Reads more of the client's bytes into `dec`; 0 means end of stream.
async fn read_more<Io: Stream>(
    sock: &mut Socket<Io>,
    dec: &mut Decoder,
    max: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| sock.poll_read(cx, max, |b| dec.push(b))).await
}

/// Writes what is queued, bounded by `timeout`.
async fn drain<Io: Stream>(sock: &mut Socket<Io>, timeout: Duration) -> io::Result<()> {
    let write = std::future::poll_fn(|cx| sock.poll_drain(cx));
    match tokio::time::timeout(timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Runs one WebSocket session to its end, holding `place` until then.
///
/// Plain functions returning `async move` blocks, values passed straight
/// into the futures that use them: an `async fn` keeps its arguments
/// twice, and a local bound across an `.await` keeps its room in the task
/// even once moved, which for a session held by a million idle
/// connections is memory that counts.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run(mut pending: PendingWs, place: Place) -> impl Future<Output = ()> + Send {
    async move {
        let upgraded = (&mut pending.on_upgrade).await;
        start(place, upgraded, pending.permit, pending.peer).await;
    }
}

/// The session once hyper hands the socket over: a plain connection is
/// driven as the `TcpStream` itself, a TLS one as our [`Tls`], both
/// without hyper's boxed wrapper (any other stream keeps it); the TLS
/// session's future is boxed so that plain sessions' tasks are not sized
/// for both.
fn start(
    place: Place,
    upgraded: hyper::Result<hyper::upgrade::Upgraded>,
    permit: AdmissionPermit,
    peer: SocketAddr,
) -> Either<impl Future<Output = ()> + Send, Pin<Box<dyn Future<Output = ()> + Send>>> {
    let upgraded = match upgraded {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "upgrade failed");
            return Either::Right(Box::pin(std::future::ready(())));
        }
    };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Either::Left(sleep::run(Box::new(Live::new(
            place,
            Plain::Up(parts.io.into_inner()),
            parts.read_buf,
            permit,
            peer,
        )))),
        Err(upgraded) => Either::Right(match upgraded.downcast::<TokioIo<Tls>>() {
            Ok(parts) => boxed(place, parts.io.into_inner(), parts.read_buf, permit, peer),
            Err(upgraded) => boxed(
                place,
                Other(TokioIo::new(upgraded)),
                Bytes::new(),
                permit,
                peer,
            ),
        }),
    }
}

/// A stream hyper upgraded but did not hand over as one of ours: it keeps
/// its registration while the session sleeps.
struct Other(TokioIo<hyper::upgrade::Upgraded>);

impl AsyncRead for Other {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Other {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Stream for Other {}

/// A session over `io`, its future boxed.
fn boxed<Io: Stream>(
    place: Place,
    io: Io,
    early: Bytes,
    permit: AdmissionPermit,
    peer: SocketAddr,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(sleep::run(Box::new(Live::new(
        place, io, early, permit, peer,
    ))))
}

/// What a run of requests hands back: the connection, and the frame or
/// decoding error that ended the run.
type Handled = (Connection, Option<Result<Option<Inbound>, FrameError>>);

/// One WebSocket session, written as a future by hand: an idle session is
/// these fields and nothing else (an `async` reader and writer would each
/// keep their own locals and timers alive side by side). It reads and
/// handles the client's frames in order (a run of text messages already
/// read at a time), while it writes what the engine queues, pings a quiet
/// client, and ends with how the session ended; [`finish`] then says
/// goodbye.
struct Live<Io> {
    sock: Socket<Io>,
    /// What the session holds only while it works; taken away when it
    /// falls asleep with all of it empty.
    work: Option<Box<Work>>,
    /// The engine's connection; moved into `handling` while text messages
    /// are handled.
    conn: Option<Connection>,
    /// The session's queue (its sending half is the engine's).
    rx: OutboxReceiver,
    /// When the client last sent anything.
    heard: Instant,
    /// Its place on the server's shared ping clock, and its chat traffic
    /// (a message from the client, a batch from the outbox) epoch by epoch.
    pace: Pace,
    /// The connection's place (and the server's shared state).
    shared: Place,
}

/// A session's state that is empty whenever it is idle: boxed apart, so
/// that a sleeping session is only [`Live`]'s other fields (its box a size
/// class smaller), and what a busy one uses comes with one allocation.
struct Work {
    /// The client's bytes being parsed (a frame in pieces).
    dec: Decoder,
    /// The requests being handled, which hand the connection back with
    /// what was read after them, if anything.
    handling: Option<Pin<Box<dyn Future<Output = Handled> + Send>>>,
    /// Frames taken from the outbox, not yet encoded (a batch held for the
    /// coalescing window, or the rest of one over `write_buffer_bytes`).
    batch: Vec<Bytes>,
    /// Armed while a write waits for the client: its `write_timeout`.
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Armed while frames are held for `write_coalesce`.
    gather_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Work {
    /// Whether it holds nothing (and may be dropped).
    fn is_idle(&self) -> bool {
        self.dec.is_empty()
            && self.handling.is_none()
            && self.batch.is_empty()
            && self.write_timer.is_none()
            && self.gather_timer.is_none()
    }
}

/// The session's [`Work`], made when first needed.
fn work<'a>(slot: &'a mut Option<Box<Work>>, settings: &crate::WsSettings) -> &'a mut Work {
    slot.get_or_insert_with(|| {
        Box::new(Work {
            dec: Decoder::new(settings.max_message_bytes),
            handling: None,
            batch: Vec::new(),
            write_timer: None,
            gather_timer: None,
        })
    })
}

impl<Io: Stream> Sleeper for Live<Io> {
    type End = End;

    fn poll_awake(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        for _ in 0..ROUNDS {
            if self.sock.io.resting() {
                if let Err(end) = self.doze(cx) {
                    return Poll::Ready(Some(end));
                }
            }
            if !self.sock.io.resting() {
                match self.step(cx) {
                    Step::End(end) => return Poll::Ready(Some(end)),
                    Step::Yield => return Poll::Pending,
                    Step::Quiet if !self.sleepy() => return Poll::Pending,
                    Step::Quiet => {}
                }
                let rests = self.pace.may_rest();
                if let (Some(dorm), true) = (self.shared.dorm.as_deref(), rests) {
                    match self.sock.io.rest(dorm, cx.waker()) {
                        Rest::Resting => {
                            self.shared.stats.ws_resting.inc();
                            // The clock wakes the dorm's sleepers at each
                            // tick; one that began before the socket lay
                            // down is looked at now.
                            if !self.pace.is_current(&self.shared.ping) {
                                continue;
                            }
                        }
                        Rest::Stays => {}
                        Rest::Back => {
                            // Once refused, it stays in the reactor for good.
                            self.pace.never_rest();
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
            }
            // Quiet, waiting only on what its waker is registered with.
            if self.work.as_ref().is_some_and(|w| w.is_idle()) {
                self.work = None;
            }
            return Poll::Ready(None);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    #[allow(clippy::manual_async_fn)] // as `run`: no arguments kept twice
    fn finish(mut self: Box<Self>, end: End) -> impl Future<Output = ()> + Send {
        async move {
            let live = &mut *self;
            let w = work(&mut live.work, &live.shared.settings);
            // A request still being handled is dropped with the session.
            w.handling = None;
            if matches!(end, End::ClientClosed(_)) {
                // Frames taken before the client's Close still go out.
                for frame in std::mem::take(&mut w.batch) {
                    encode_text(&mut live.sock.out, &frame);
                }
            }
            let session = live.rx.id();
            finish(
                &live.shared,
                &mut live.sock,
                &mut w.dec,
                &mut live.rx,
                end,
                session,
            )
            .await;
        }
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared.runtime
    }

    fn asleep(&self, asleep: bool) {
        if asleep {
            self.shared.stats.ws_asleep.inc();
        } else {
            self.shared.stats.ws_asleep.dec();
        }
    }
}

impl<Io: Stream> Live<Io> {
    /// Does rounds of work until one makes no progress (`Quiet`), the
    /// session ends, or it has done its share (`Yield`). Each side leaves
    /// a waker registered when it makes no progress.
    fn step(&mut self, cx: &mut Context<'_>) -> Step<End> {
        rounds(cx, |cx, busy| {
            self.read_side(cx, busy)
                .or_else(|| self.write_side(cx, busy))
                .or_else(|| self.check_tick(cx, busy))
        })
    }

    /// Whether the session may sleep (after a quiet `step`): it is not
    /// lively, and waits only on its client, its outbox and the ping
    /// clock, whose wakers outlive a task. An idle connection then costs
    /// no task (its allocation was over a third of an idle connection's
    /// memory), and a busy one does not pay for a new task at every
    /// message.
    fn sleepy(&self) -> bool {
        !self.pace.lively()
            && self.conn.is_some()
            && !self.sock.has_output()
            && self.work.as_ref().is_none_or(|w| {
                w.handling.is_none()
                    && w.batch.is_empty()
                    && w.gather_timer.is_none()
                    && w.write_timer.is_none()
            })
    }
}

impl<Io: Stream> Live<Io> {
    /// A session over `io`, registered with the engine; `early` are bytes
    /// the client sent right after the handshake, read before the upgrade
    /// (a slice of hyper's read buffer: copied, and released at once, or
    /// the session would keep that whole buffer).
    fn new(shared: Place, io: Io, early: Bytes, permit: AdmissionPermit, peer: SocketAddr) -> Self {
        let engine = &shared.engine;
        let limits = engine.limits();
        let (outbox, rx) = Outbox::new(OutboxLimits {
            max_frames: limits.max_queue_frames,
            max_bytes: limits.max_queue_bytes,
        });
        let conn = engine.connect(outbox.session(), permit);
        tracing::debug!(%peer, session = rx.id(), "WebSocket session open");
        let mut slot = None;
        if !early.is_empty() {
            work(&mut slot, &shared.settings).dec.push(&early);
        }
        Live {
            sock: Socket::new(io),
            work: slot,
            conn: Some(conn),
            rx,
            heard: Instant::now(),
            pace: Pace::new::<Io>(&shared.ping),
            shared,
        }
    }

    /// Finishes the request in progress, or parses (reading if need be)
    /// the next frame and acts on it.
    fn read_side(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Option<End> {
        let mut held = None;
        if let Some(w) = self.work.as_mut() {
            if let Some(handling) = w.handling.as_mut() {
                let Poll::Ready((conn, next)) = handling.as_mut().poll(cx) else {
                    return None;
                };
                self.conn = Some(conn);
                w.handling = None;
                *busy = true;
                held = next;
            }
        }
        let parsed = match held {
            Some(next) => next,
            None => self.work.as_mut().map_or(Ok(None), |w| w.dec.next()),
        };
        let msg = match parsed {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                let s = &self.shared.settings;
                let slot = &mut self.work;
                let push = |b: &[u8]| work(slot, s).dec.push(b);
                return match self.sock.poll_read(cx, s.read_buffer_bytes, push) {
                    Poll::Ready(Ok(0)) => Some(End::Gone("end of stream".to_owned())),
                    Poll::Ready(Ok(_)) => {
                        *busy = true;
                        None
                    }
                    Poll::Ready(Err(e)) => Some(End::Gone(e.to_string())),
                    Poll::Pending => None,
                };
            }
            Err(e) => return Some(End::Frame(e)),
        };
        *busy = true;
        self.heard = Instant::now();
        if matches!(msg, Inbound::Text(_) | Inbound::Binary(_)) {
            self.pace.stir();
        }
        match msg {
            Inbound::Text(text) => {
                let Some(mut conn) = self.conn.take() else {
                    return Some(End::Server(ErrorCode::Internal));
                };
                // Text messages already read are handled together (a
                // client's pipelined sends: one store request). What ends
                // the run is held until they are done, as it came after.
                let w = work(&mut self.work, &self.shared.settings);
                let mut run = vec![text];
                let mut next = None;
                while run.len() < self.shared.settings.read_batch_frames {
                    match w.dec.next() {
                        Ok(Some(Inbound::Text(t))) => {
                            self.pace.stir();
                            run.push(t);
                        }
                        Ok(None) => break,
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                // Boxed: the handler's state (it may wait on the store)
                // lives only while frames are handled.
                w.handling = Some(Box::pin(async move {
                    conn.handle_frames(&run).await;
                    (conn, next)
                }));
            }
            Inbound::Binary(bytes) => {
                self.shared.engine.metrics().bad_frames.inc();
                tracing::info!(bytes, "binary WebSocket message refused");
                let frame = ServerFrame::Error {
                    id: None,
                    code: ErrorCode::BadFrame,
                    message:
                        "binary messages are not supported: send one JSON frame per text message"
                            .to_owned(),
                };
                let outbox = self.rx.outbox();
                if outbox.deliver(Codec::encode(&frame)).is_err() {
                    outbox.close(ErrorCode::Lagged);
                }
            }
            Inbound::Ping(data) => encode_control(&mut self.sock.out, Control::Pong(&data)),
            Inbound::Pong => {}
            Inbound::Close(code) => return Some(End::ClientClosed(code)),
        }
        None
    }

    /// Writes what is queued (bounded by `write_timeout`), then takes the
    /// next batch from the outbox (waiting `write_coalesce` for more unless
    /// a reply is among them) and encodes it.
    fn write_side(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Option<End> {
        let s = &self.shared.settings;
        if self.sock.has_output() {
            match self.sock.poll_drain(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(w) = self.work.as_mut() {
                        w.write_timer = None;
                    }
                    *busy = true;
                }
                Poll::Ready(Err(e)) => return Some(End::Gone(e.to_string())),
                Poll::Pending => {
                    // Most writes finish at once: only one that has to
                    // wait for the client pays for a timer. Meanwhile new
                    // frames stay in the bounded outbox.
                    let timer = work(&mut self.work, s)
                        .write_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(s.write_timeout)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Some(End::Gone("write timed out".to_owned()));
                    }
                    return None;
                }
            }
        }
        if self.work.as_ref().is_none_or(|w| w.batch.is_empty()) {
            match self.take_batch(cx) {
                Poll::Ready(Ok(())) => *busy = true,
                Poll::Ready(Err(end)) => return Some(end),
                Poll::Pending => return None,
            }
        }
        let s = &self.shared.settings;
        let w = work(&mut self.work, s);
        if let Some(timer) = w.gather_timer.as_mut() {
            // Frames that arrive meanwhile wait in the outbox, under its
            // bound; a reply queued ends the wait.
            let over = timer.as_mut().poll(cx).is_ready();
            if !over && self.rx.poll_reply_queued(cx).is_pending() {
                return None;
            }
            w.gather_timer = None;
            while w.batch.len() < s.write_batch_frames {
                match self.rx.try_recv() {
                    Some(frame) => w.batch.push(frame),
                    None => break,
                }
            }
        }
        // The engine's shared JSON bytes as they are (no re-encoding, no
        // UTF-8 re-validation), up to `write_buffer_bytes` per write.
        let mut taken = 0;
        for frame in &w.batch {
            if self.sock.out.len() >= s.write_buffer_bytes {
                break;
            }
            encode_text(&mut self.sock.out, frame);
            taken += 1;
        }
        if taken == w.batch.len() {
            // An idle session keeps no batch storage.
            w.batch = Vec::new();
        } else {
            w.batch.drain(..taken);
        }
        *busy = true;
        None
    }

    /// Takes frames from the outbox into the batch (empty before): chat
    /// traffic, held for `write_coalesce` unless the batch is full or has
    /// a reply. The session's [`Work`] is made only when there are some.
    fn take_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        let s = &self.shared.settings;
        let mut got = Vec::new();
        match self.rx.poll_recv_many(cx, &mut got, s.write_batch_frames) {
            Poll::Ready(Recv::Frames) => {}
            Poll::Ready(Recv::Closed(reason)) => return Poll::Ready(Err(End::Server(reason))),
            Poll::Pending => return Poll::Pending,
        }
        self.pace.stir();
        let gather = !s.write_coalesce.is_zero()
            && got.len() < s.write_batch_frames
            && !self.rx.took_reply();
        let w = work(&mut self.work, s);
        w.batch = got;
        if gather {
            w.gather_timer = Some(Box::pin(tokio::time::sleep(s.write_coalesce)));
        }
        Poll::Ready(Ok(()))
    }

    /// A session woken with its socket in the dorm looks at what woke it,
    /// and takes the socket back into tokio's reactor only if there is
    /// work: most wake-ups of an idle session are the ping clock's, which
    /// need a look at the time and, every other epoch, a ping, written
    /// straight to the socket.
    fn doze(&mut self, cx: &mut Context<'_>) -> Result<(), End> {
        let work = self.look(cx);
        if matches!(work, Ok(false)) {
            return Ok(());
        }
        if let Some(dorm) = self.shared.dorm.as_deref() {
            let risen = self.sock.io.rise(dorm);
            self.shared.stats.ws_resting.dec();
            self.shared.stats.ws_risen.inc();
            // Out of the dorm, it waits on the clock's list again.
            self.pace.rejoin();
            risen.map_err(|e| End::Gone(e.to_string()))?;
        }
        work.map(|_| ())
    }

    /// What [`Live::doze`] looks at: the client's bytes, the outbox and
    /// the ping clock. True when there is work for the running session;
    /// every source it waits on holds its waker otherwise.
    fn look(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let s = &self.shared.settings;
        let slot = &mut self.work;
        match self
            .sock
            .read_at_rest(s.read_buffer_bytes, |b| work(slot, s).dec.push(b))
        {
            Ok(Arrived::Nothing) => {}
            Ok(Arrived::Some) => self.heard = Instant::now(),
            Ok(Arrived::More) => {
                self.heard = Instant::now();
                return Ok(true);
            }
            Err(e) => return Err(End::Gone(e.to_string())),
        }
        // Keep-alives are answered here; anything else (a message, a
        // close, part of a frame) is work for the running session.
        if let Some(w) = self.work.as_mut() {
            while w.dec.keepalive_next() {
                match w.dec.next() {
                    Ok(Some(Inbound::Ping(data))) => {
                        encode_control(&mut self.sock.out, Control::Pong(&data));
                    }
                    Ok(Some(Inbound::Pong)) => {}
                    _ => return Ok(true),
                }
            }
            if !w.dec.is_empty() {
                return Ok(true);
            }
        }
        match self.take_batch(cx) {
            Poll::Ready(Ok(())) => return Ok(true),
            Poll::Ready(Err(end)) => return Err(end),
            Poll::Pending => {}
        }
        // A new epoch is looked at, then the next one waited for.
        if let Step::End(end) = rounds(cx, |cx, busy| self.check_tick(cx, busy)) {
            return Err(end);
        }
        // What the socket does not take (and TLS records it holds) the
        // running session writes.
        self.sock
            .write_resting()
            .map_err(|e| End::Gone(e.to_string()))
    }

    /// At each epoch of the server's ping clock: closes a client quiet for
    /// `idle_timeout`, pings one quiet for `ping_interval`.
    fn check_tick(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Option<End> {
        let resting = self.sock.io.resting();
        if !self.pace.poll_epoch(&self.shared.ping, resting, cx) {
            return None;
        }
        // A new epoch: look, then wait for the next one (next round).
        *busy = true;
        let s = &self.shared.settings;
        let quiet = self.heard.elapsed();
        if quiet >= s.idle_timeout {
            return Some(End::Server(ErrorCode::Idle));
        }
        if quiet >= s.ping_interval {
            encode_control(&mut self.sock.out, Control::Ping);
        }
        None
    }
}

/// Sends the `closing` frame and the Close (unless the client went away or
/// closed first), then waits, bounded, for the client's side of the close.
async fn finish<Io: Stream>(
    shared: &Shared,
    sock: &mut Socket<Io>,
    dec: &mut Decoder,
    rx: &mut OutboxReceiver,
    end: End,
    session: u64,
) {
    let s = &shared.settings;
    let reason = match end {
        End::Gone(why) => {
            tracing::debug!(session, why = %why, "WebSocket gone");
            return;
        }
        End::ClientClosed(code) => {
            tracing::debug!(session, ?code, "WebSocket closed by the client");
            // Replies to what the client sent before its Close still go
            // out; then its status is echoed (RFC 6455, 5.5.1) and the
            // server hangs up.
            while let Some(frame) = rx.try_recv() {
                encode_text(&mut sock.out, &frame);
            }
            encode_control(&mut sock.out, Control::Close(code.map(|c| (c, ""))));
            if drain(sock, s.close_timeout).await.is_ok() {
                shut_down(sock, s.close_timeout).await;
            }
            return;
        }
        End::Frame(FrameError::TooLarge { size, max }) => {
            tracing::info!(session, size, max, "WebSocket message too large");
            Some(ErrorCode::FrameTooLarge)
        }
        End::Frame(FrameError::BadUtf8) => Some(ErrorCode::BadFrame),
        End::Frame(FrameError::Protocol(why)) => {
            tracing::info!(session, why, "WebSocket protocol violation");
            None
        }
        End::Server(reason) => Some(reason),
    };
    // After a framing error the rest of the stream cannot be parsed: the
    // client's Close is not looked for, only its end.
    let readable = matches!(end, End::Server(_));
    match reason {
        Some(reason) => {
            tracing::info!(session, reason = %reason, "closing WebSocket");
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
                let discard =
                    std::future::poll_fn(|cx| sock.poll_read(cx, s.read_buffer_bytes, |_| {}));
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
async fn shut_down<Io: Stream>(sock: &mut Socket<Io>, timeout: Duration) {
    let shutdown = std::future::poll_fn(|cx| Pin::new(&mut sock.io).poll_shutdown(cx));
    let _ = tokio::time::timeout(timeout, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle session is these fields, boxed, for as long as it sleeps
    /// (its [`Work`] dropped): they fit a 256-byte allocation (a size class
    /// of jemalloc's; the next is 320). A busy one adds its `Work` (104
    /// bytes, boxed).
    #[test]
    fn a_sessions_fields_fit_256_bytes() {
        let size = std::mem::size_of::<Live<Plain>>();
        assert!(size <= 256, "{size}");
        assert!(std::mem::size_of::<Work>() <= 112);
    }

    /// A TLS session's fields: rustls' connection object is not among
    /// them once the handshake is over (`chat_net`'s records).
    #[test]
    fn a_tls_sessions_fields_fit_512_bytes() {
        let size = std::mem::size_of::<Live<Tls>>();
        assert!(size <= 512, "{size}");
    }
}

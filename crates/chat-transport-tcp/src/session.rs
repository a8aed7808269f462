//! One admitted connection: a future written by hand ([`Live`]) that
//! reads the client's lines and hands them to the engine's connection
//! (which may wait on the store) in order, a run of lines already read at a
//! time ([`Connection::handle_frames`]: pipelined sends are stored
//! together), while it writes what the engine queues in batches (one write per
//! batch) and a heartbeat to a quiet client; then [`finish`] says goodbye.
//!
//! An idle connection is these fields and nothing else: no task (a quiet
//! session sleeps, held by its one waker, and what wakes it spawns a task
//! for it again: [`chat_net::sleep`]; one with steady traffic, [`LIVELY`](chat_net::pace::LIVELY),
//! keeps its task), no buffer (reads go through a buffer the worker thread
//! shares, writes through one that lives until it is written), no timer
//! (the server's one [`Clock`] wakes every session for its heartbeat and
//! idle checks), and no registration in tokio's reactor: its socket rests
//! in the server's [`Dorm`](chat_net::Dorm) and the session looks at what
//! woke it there, taking the socket back only when there is work (a line
//! from the client, frames from the engine, a write the socket did not
//! take at once). The TLS stream ([`chat_net::Tls`]) keeps only its record
//! keys once the handshake is over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chat_core::{Codec, Connection, Engine, ErrorCode, OutboxReceiver, Recv, ServerFrame};
use chat_net::rounds::{rounds, Step, ROUNDS};
use chat_net::socket::Arrived;
use chat_net::{Clock, Dorm, Pace, Rest, Sleeper, Socket, Stream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::line::{Line, LineReader};
use crate::TcpSettings;

/// Frames taken from the outbox per socket write.
const BATCH: usize = 64;

/// Bytes read from the socket per read, into the worker thread's buffer.
const READ_BYTES: usize = 8 * 1024;

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) settings: TcpSettings,
    /// The longest line accepted.
    pub(crate) max_line: usize,
    /// The sessions' heartbeat and idle clock.
    pub(crate) clock: Arc<Clock>,
    /// Where quiet sessions keep their sockets; `None` if the OS refused
    /// an epoll set (they stay in tokio's reactor then).
    pub(crate) dorm: Option<Arc<Dorm>>,
    /// Set when `serve` stops; the clock then wakes every session to see it.
    pub(crate) stopping: AtomicBool,
    /// Sockets taken back from the dorm, for work.
    pub(crate) risen: AtomicU64,
    /// Sessions asleep, without a task.
    pub(crate) asleep: AtomicUsize,
    /// The runtime `serve` runs on, where a sleeping session wakes up.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    /// The state for a server of `engine`, with its dorm (on the current
    /// runtime) and clock (not yet running).
    pub(crate) fn new(engine: Engine, settings: TcpSettings) -> Shared {
        let dorm = match Dorm::start() {
            Ok(dorm) => Some(dorm),
            Err(e) => {
                tracing::warn!(error = %e, "no dorm: quiet sessions keep their sockets in the reactor");
                None
            }
        };
        let max_line = settings
            .max_line_bytes
            .unwrap_or_else(|| engine.codec().max_frame_bytes());
        Shared {
            engine,
            max_line,
            clock: Arc::new(Clock::default()),
            dorm,
            stopping: AtomicBool::new(false),
            risen: AtomicU64::new(0),
            asleep: AtomicUsize::new(0),
            runtime: tokio::runtime::Handle::current(),
            settings,
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed its side, or the socket failed: nothing more is
    /// sent but TLS close_notify.
    Gone,
    /// A write failed or timed out: the connection is dropped.
    Broken,
    /// The engine closed the session (`lagged`, `shutting_down`, ...).
    Closed(ErrorCode),
    /// `serve` stops.
    Stop,
    /// No complete line within the idle timeout.
    Idle,
    /// A line over the limit.
    TooLong,
}

/// What a run of lines hands back: the connection, and what ended the
/// run (a line too long, the end) if anything did.
type Handled = (Connection, Option<Line>);

/// One connection's session. See the module docs.
pub(crate) struct Live<Io> {
    sock: Socket<Io>,
    lines: LineReader,
    /// The engine's connection; moved into `handling` while lines are
    /// handled.
    conn: Option<Connection>,
    /// The requests being handled, which hand the connection back with
    /// what ended the run (a line too long, the end), if anything. Boxed:
    /// the engine's request future is several KiB, and lives only while
    /// lines are handled.
    handling: Option<Pin<Box<dyn Future<Output = Handled> + Send>>>,
    /// The session's queue (its sending half is the engine's).
    rx: OutboxReceiver,
    /// When the client last completed a line, and when the server last
    /// wrote (for the heartbeat).
    heard: Instant,
    wrote: Instant,
    /// Its place on the server's clock, and its chat traffic (a line from
    /// the client, a batch from the outbox) epoch by epoch.
    pace: Pace,
    /// Armed while a write waits for the client: its `write_timeout`.
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    shared: Arc<Shared>,
    /// Dropped when the session ends; `serve` waits for all of them.
    _done: mpsc::Sender<()>,
}

impl<Io: Stream> Sleeper for Live<Io> {
    type End = End;

    fn poll_awake(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        for _ in 0..ROUNDS {
            if self.shared.stopping() {
                return Poll::Ready(Some(End::Stop));
            }
            if self.sock.io.resting() {
                match self.doze(cx) {
                    Err(end) => return Poll::Ready(Some(end)),
                    Ok(false) => return Poll::Ready(None),
                    Ok(true) => {}
                }
            }
            match self.step(cx) {
                Step::End(end) => return Poll::Ready(Some(end)),
                Step::Yield => return Poll::Pending,
                Step::Quiet if !self.sleepy() => return Poll::Pending,
                Step::Quiet => {}
            }
            let rests = self.pace.may_rest() && self.lines.is_empty();
            let Some(dorm) = self.shared.dorm.as_deref().filter(|_| rests) else {
                return Poll::Ready(None);
            };
            match self.sock.io.rest(dorm, cx.waker()) {
                Rest::Resting => {
                    // An epoch (or the stop) that began before the socket
                    // lay down woke the dorm without it: looked at now.
                    if self.pace.is_current(&self.shared.clock) && !self.shared.stopping() {
                        return Poll::Ready(None);
                    }
                }
                Rest::Stays => return Poll::Ready(None),
                Rest::Back => {
                    // Once refused, it stays in the reactor for good.
                    self.pace.never_rest();
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn finish(self: Box<Self>, end: End) -> impl Future<Output = ()> + Send {
        finish(self, end)
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared.runtime
    }

    fn asleep(&self, asleep: bool) {
        if asleep {
            self.shared.asleep.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.asleep.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<Io: Stream> Live<Io> {
    /// A session for an admitted connection over `io`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        io: Io,
        conn: Connection,
        rx: OutboxReceiver,
        done: mpsc::Sender<()>,
    ) -> Self {
        let now = Instant::now();
        Live {
            sock: Socket::new(io),
            lines: LineReader::new(shared.max_line),
            conn: Some(conn),
            handling: None,
            rx,
            heard: now,
            wrote: now,
            pace: Pace::new::<Io>(&shared.clock),
            write_timer: None,
            shared,
            _done: done,
        }
    }

    /// Whether the session may sleep without a task (after a quiet
    /// `step`): it is not lively, and waits only on its client, its outbox
    /// and the clock, whose wakers outlive a task.
    fn sleepy(&self) -> bool {
        !self.pace.lively()
            && self.handling.is_none()
            && self.conn.is_some()
            && !self.sock.has_output()
            && self.write_timer.is_none()
    }

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

    /// Finishes the request in progress, or takes (reading if need be)
    /// the next line and starts handling it.
    fn read_side(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Option<End> {
        let mut held = None;
        if let Some(handling) = self.handling.as_mut() {
            let Poll::Ready((conn, next)) = handling.as_mut().poll(cx) else {
                return None;
            };
            self.conn = Some(conn);
            self.handling = None;
            *busy = true;
            held = next;
        }
        let line = match held.or_else(|| self.lines.next()) {
            Some(Line::Frame(line)) => line,
            Some(Line::TooLong) => return Some(End::TooLong),
            Some(Line::Eof) => return Some(End::Gone),
            None => {
                let lines = &mut self.lines;
                return match self.sock.poll_read(cx, READ_BYTES, |b| lines.push(b)) {
                    Poll::Ready(Ok(0)) => Some(End::Gone),
                    Poll::Ready(Ok(_)) => {
                        *busy = true;
                        None
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "read failed");
                        Some(End::Gone)
                    }
                    Poll::Pending => None,
                };
            }
        };
        *busy = true;
        self.heard = Instant::now();
        self.pace.stir();
        let Some(mut conn) = self.conn.take() else {
            return Some(End::Closed(ErrorCode::Internal));
        };
        // Lines already read are handled together (a client's pipelined
        // sends: one store request). What ends the run is held until they
        // are done, as it came after.
        let mut run = vec![line];
        let mut next = None;
        while run.len() < self.shared.settings.read_batch_lines {
            match self.lines.next() {
                Some(Line::Frame(l)) => {
                    self.pace.stir();
                    run.push(l);
                }
                None => break,
                stop => {
                    next = stop;
                    break;
                }
            }
        }
        self.handling = Some(Box::pin(async move {
            conn.handle_frames(&run).await;
            (conn, next)
        }));
        None
    }

    /// Writes what is queued (bounded by `write_timeout`), then takes the
    /// next batch from the outbox into the output, one line per frame.
    fn write_side(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Option<End> {
        if self.sock.has_output() {
            match self.sock.poll_drain(cx) {
                Poll::Ready(Ok(())) => {
                    self.write_timer = None;
                    *busy = true;
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "write failed");
                    return Some(End::Broken);
                }
                Poll::Pending => {
                    // Most writes finish at once: only one that has to
                    // wait for the client pays for a timer. Meanwhile new
                    // frames stay in the bounded outbox.
                    let timeout = self.shared.settings.write_timeout;
                    let timer = self
                        .write_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if timer.as_mut().poll(cx).is_ready() {
                        tracing::debug!("write timed out; dropping the client");
                        return Some(End::Broken);
                    }
                    return None;
                }
            }
        }
        match self.take_batch(cx) {
            Poll::Ready(Ok(())) => {
                *busy = true;
                None
            }
            Poll::Ready(Err(end)) => Some(end),
            Poll::Pending => None,
        }
    }

    /// Takes what the outbox holds (up to `BATCH` frames) into the output.
    fn take_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        let mut frames: Vec<Bytes> = Vec::new();
        match self.rx.poll_recv_many(cx, &mut frames, BATCH) {
            Poll::Ready(Recv::Frames) => {
                push_lines(&mut self.sock.out, frames.iter().map(Bytes::as_ref));
                self.wrote = Instant::now();
                self.pace.stir();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Recv::Closed(code)) => Poll::Ready(Err(End::Closed(code))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A session woken with its socket in the dorm looks at what woke it,
    /// and takes the socket back into tokio's reactor only if there is
    /// work: most wake-ups of an idle session are the clock's, which need
    /// a look at the time and, now and then, a heartbeat, written straight
    /// to the socket. True when the socket is back.
    fn doze(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let work = self.look(cx)?;
        if !work {
            return Ok(false);
        }
        if let Some(dorm) = self.shared.dorm.as_deref() {
            // Out of the dorm, it waits on the clock's list again.
            self.pace.rejoin();
            self.shared.risen.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.sock.io.rise(dorm) {
                tracing::debug!(error = %e, "a socket could not leave the dorm");
                return Err(End::Broken);
            }
        }
        Ok(true)
    }

    /// What [`Live::doze`] looks at: the client's bytes, the outbox and
    /// the clock. True when there is work for the running session; every
    /// source it waits on holds its waker otherwise.
    fn look(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let lines = &mut self.lines;
        match self.sock.read_at_rest(READ_BYTES, |b| lines.push(b)) {
            Ok(Arrived::Nothing) => {}
            // Anything a client sends is a request for the engine.
            Ok(Arrived::Some | Arrived::More) => return Ok(true),
            Err(e) => {
                tracing::debug!(error = %e, "read at rest");
                return Err(End::Gone);
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
        self.sock.write_resting().map_err(|e| {
            tracing::debug!(error = %e, "write at rest");
            End::Broken
        })
    }

    /// At each epoch of the server's clock: closes a client that has not
    /// completed a line for `idle_timeout`, writes a heartbeat to one the
    /// server has not written to for `heartbeat_interval`.
    fn check_tick(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Option<End> {
        let resting = self.sock.io.resting();
        if !self.pace.poll_epoch(&self.shared.clock, resting, cx) {
            return None;
        }
        // A new epoch: look, then wait for the next one (next round).
        *busy = true;
        let s = &self.shared.settings;
        if self.heard.elapsed() >= s.idle_timeout {
            return Some(End::Idle);
        }
        if s.heartbeat()
            .is_some_and(|every| self.wrote.elapsed() >= every)
        {
            let ping = Codec::encode(&ServerFrame::Pong { id: None });
            push_lines(&mut self.sock.out, [ping.as_ref()]);
            self.wrote = Instant::now();
        }
        None
    }
}

/// The clock's period for `settings`: half the shorter of the heartbeat
/// interval and the idle timeout, so each is acted on between one and one
/// and a half of itself.
pub(crate) fn clock_period(settings: &TcpSettings) -> Duration {
    let shortest = settings
        .heartbeat()
        .map_or(settings.idle_timeout, |h| h.min(settings.idle_timeout));
    chat_net::clock::period(shortest)
}

/// Sends the last frames for how the session ended (`closing` with the
/// reason; `error` first for an oversized line) and closes TLS, then
/// reads what the client still sends, bounded, so closing does not reset
/// the connection before the client has read them.
async fn finish<Io: Stream>(live: Box<Live<Io>>, end: End) {
    let Live {
        mut sock,
        conn,
        handling,
        mut rx,
        shared,
        ..
    } = *live;
    // A request still being handled is dropped with the session.
    drop((handling, conn));
    let s = &shared.settings;
    if let Some(dorm) = shared.dorm.as_deref() {
        if let Err(e) = sock.io.rise(dorm) {
            tracing::debug!(error = %e, "a socket could not leave the dorm");
            return;
        }
    }
    let last: Vec<ServerFrame> = match end {
        End::Broken => return,
        End::Gone => Vec::new(),
        End::Closed(code) => vec![closing(code)],
        End::Stop => vec![closing(ErrorCode::ShuttingDown)],
        End::Idle => vec![closing(ErrorCode::Idle)],
        End::TooLong => vec![
            ServerFrame::Error {
                id: None,
                code: ErrorCode::FrameTooLarge,
                message: format!("line longer than {} bytes", shared.max_line),
            },
            closing(ErrorCode::FrameTooLarge),
        ],
    };
    // When the transport ends it (idle, an oversized line, the stop),
    // what the engine had already queued (replies to earlier requests,
    // `hello`) goes out before the last frames; a session the engine
    // closed drops its queue, as the outbox does, and the client resumes
    // by `seq`.
    if matches!(end, End::Idle | End::TooLong | End::Stop) {
        while let Some(frame) = rx.try_recv() {
            push_lines(&mut sock.out, [frame.as_ref()]);
        }
    }
    let last: Vec<Bytes> = last.iter().map(Codec::encode).collect();
    push_lines(&mut sock.out, last.iter().map(Bytes::as_ref));
    // The session ends before the socket: nothing is queued for nobody.
    drop(rx);
    let goodbye = async {
        std::future::poll_fn(|cx| sock.poll_drain(cx)).await?;
        // TLS close_notify, then TCP FIN.
        std::future::poll_fn(|cx| sock.poll_shutdown(cx)).await
    };
    if tokio::time::timeout(s.write_timeout, goodbye)
        .await
        .is_err()
    {
        return;
    }
    // Linger only when the server closed first (the client may still be
    // sending); a client that closed its side has nothing left to send.
    if end != End::Gone {
        linger(&mut sock, s.close_linger, s.close_linger_bytes).await;
    }
}

/// Reads and discards what the client still sends, for a bounded time and
/// byte count.
async fn linger<Io: Stream>(sock: &mut Socket<Io>, linger: Duration, max_bytes: usize) {
    let mut left = max_bytes;
    let _ = tokio::time::timeout(linger, async {
        while left > 0 {
            let read = std::future::poll_fn(|cx| sock.poll_read(cx, READ_BYTES, |_| {}));
            match read.await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// The `closing` frame for a reason.
fn closing(reason: ErrorCode) -> ServerFrame {
    let message = match reason {
        ErrorCode::ShuttingDown => "the server is shutting down; reconnect and resume",
        ErrorCode::Lagged => "you did not read fast enough; reconnect and resume by seq",
        ErrorCode::Idle => "no frame received for too long",
        ErrorCode::FrameTooLarge => "a line exceeded the frame size limit",
        _ => "the server closed the connection",
    };
    ServerFrame::Closing {
        reason,
        message: message.to_owned(),
    }
}

/// Appends frames to `out`, each followed by `\n`.
pub(crate) fn push_lines<'a>(out: &mut Vec<u8>, frames: impl IntoIterator<Item = &'a [u8]>) {
    for f in frames {
        out.extend_from_slice(f);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle TLS connection's session is these fields, boxed, for as
    /// long as the connection lives (rustls' connection object is not
    /// among them once the handshake is over).
    #[test]
    fn a_tls_sessions_fields_fit_512_bytes() {
        let size = std::mem::size_of::<Live<chat_net::Tls>>();
        assert!(size <= 512, "{size}");
    }
}

//! The [`Session`] extension point: the outbound side of one connected
//! client, and [`Outbox`], the bounded queue every built-in transport uses.
//!
//! The engine never waits on a client: [`Session::deliver`] either queues a
//! frame at once or refuses it, and a refused live delivery closes that
//! session with [`ErrorCode::Lagged`] (invariant 4). Frames are shared
//! [`Bytes`]: one encoding of an event serves every recipient.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ErrorCode;

/// Identifies one session within an engine.
pub type SessionId = u64;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique session id.
pub fn next_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// The queue is full; the frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session queue is full or closed")]
pub struct Full;

/// The outbound side of one client, implemented by each transport (or by
/// [`Outbox`], which they share).
#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// This session's id.
    fn id(&self) -> SessionId;
    /// Queues one encoded frame without waiting. `Err(Full)` when the queue
    /// is over its bound or the session is closed.
    fn deliver(&self, frame: Bytes) -> Result<(), Full>;
    /// Queues the answer to one of the client's own requests (an ack, a
    /// reply, an error for it). A transport that holds frames back to write
    /// several at once writes at once when a reply is queued, so batching
    /// never makes a client wait for its own answers. Defaults to
    /// [`deliver`](Session::deliver).
    fn deliver_reply(&self, frame: Bytes) -> Result<(), Full> {
        self.deliver(frame)
    }
    /// Waits until [`deliver`](Session::deliver) would accept a frame, or the
    /// session closes. Used to pace history replay.
    async fn writable(&self);
    /// Closes the session: the transport sends a `closing` frame with
    /// `reason` and drops the connection.
    fn close(&self, reason: ErrorCode);
    /// Whether the session has been closed.
    fn is_closed(&self) -> bool;
}

/// Bounds of an [`Outbox`].
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most frames queued at once.
    pub max_frames: usize,
    /// Most bytes queued at once.
    pub max_bytes: usize,
}

/// The queue's state. Counts and bounds are `u32` (bounds over 4 GiB are
/// capped there) so that the whole queue, kept by every idle connection,
/// fits a 128-byte allocation (unit test below).
#[derive(Debug)]
struct State {
    /// Frames, each marked when it is a reply.
    queue: VecDeque<(Bytes, bool)>,
    bytes: u32,
    /// Replies in `queue`.
    replies: u32,
    closed: Option<ErrorCode>,
    /// The writer waiting for frames or for a reply (one consumer, so one
    /// waker, kept under the queue's lock: no separate notifier per
    /// session).
    waker: Option<Waker>,
    /// Those waiting for room ([`Session::writable`]: history replay),
    /// woken when the writer takes frames or the queue closes. Empty, no
    /// allocation, nearly always.
    writers: Vec<Waker>,
    /// Whether the receiver's last take included a reply (here, in the
    /// state's spare bytes, rather than in the receiver that every session
    /// keeps).
    took_reply: bool,
}

#[derive(Debug)]
struct Shared {
    id: SessionId,
    max_frames: u32,
    max_bytes: u32,
    state: Mutex<State>,
}

/// A bounded outbound queue: the [`Session`] half is given to the engine, the
/// [`OutboxReceiver`] half is drained by the transport's writer.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The transport's end of an [`Outbox`].
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// What the writer gets from [`OutboxReceiver::recv_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// Some frames were appended to the buffer.
    Frames,
    /// The session was closed for this reason; send it and hang up.
    Closed(ErrorCode),
}

impl Outbox {
    /// This queue as the engine's [`Session`] (see
    /// [`Engine::connect`](crate::Engine::connect)), sharing the queue
    /// itself: no second allocation and no second indirection on every
    /// delivery, as `Arc::new(outbox.clone())` would have.
    pub fn session(&self) -> Arc<dyn Session> {
        self.shared.clone()
    }

    /// A new queue with its receiving end.
    pub fn new(limits: OutboxLimits) -> (Outbox, OutboxReceiver) {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let shared = Arc::new(Shared {
            id: next_session_id(),
            max_frames: cap(limits.max_frames),
            max_bytes: cap(limits.max_bytes),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                replies: 0,
                closed: None,
                waker: None,
                writers: Vec::new(),
                took_reply: false,
            }),
        });
        (
            Outbox {
                shared: shared.clone(),
            },
            OutboxReceiver { shared },
        )
    }
}

/// Keeps `cx`'s waker in `slot` (cloned only when it changed).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes those waiting for room, outside the lock.
    fn wake_writers(mut st: std::sync::MutexGuard<'_, State>) {
        if st.writers.is_empty() {
            return;
        }
        let writers = std::mem::take(&mut st.writers);
        drop(st);
        for w in writers {
            w.wake();
        }
    }

    fn push(&self, frame: Bytes, reply: bool) -> Result<(), Full> {
        let mut st = self.lock();
        // Over `max_bytes` (a u32) when it does not fit one.
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        if st.closed.is_some()
            || st.queue.len() >= self.max_frames as usize
            || u64::from(st.bytes) + u64::from(len) > u64::from(self.max_bytes)
        {
            return Err(Full);
        }
        st.bytes += len;
        st.replies += u32::from(reply);
        st.queue.push_back((frame, reply));
        // The writer drains everything once woken: wake it for the first
        // frame, and for a reply (it may be holding frames back).
        let wake = if st.queue.len() == 1 || reply {
            st.waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = wake {
            w.wake();
        }
        Ok(())
    }
}

#[async_trait]
impl Session for Shared {
    fn id(&self) -> SessionId {
        self.id
    }

    fn deliver(&self, frame: Bytes) -> Result<(), Full> {
        self.push(frame, false)
    }

    fn deliver_reply(&self, frame: Bytes) -> Result<(), Full> {
        self.push(frame, true)
    }

    async fn writable(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            if st.closed.is_some()
                || (st.queue.len() < self.max_frames as usize && st.bytes < self.max_bytes / 2)
            {
                return Poll::Ready(());
            }
            if !st.writers.iter().any(|w| w.will_wake(cx.waker())) {
                st.writers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    fn close(&self, reason: ErrorCode) {
        let mut st = self.lock();
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        let waker = st.waker.take();
        Shared::wake_writers(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }
}

/// An [`Outbox`] is a handle on its queue: every call goes to the queue.
#[async_trait]
impl Session for Outbox {
    fn id(&self) -> SessionId {
        self.shared.id()
    }

    fn deliver(&self, frame: Bytes) -> Result<(), Full> {
        self.shared.deliver(frame)
    }

    fn deliver_reply(&self, frame: Bytes) -> Result<(), Full> {
        self.shared.deliver_reply(frame)
    }

    async fn writable(&self) {
        self.shared.writable().await;
    }

    fn close(&self, reason: ErrorCode) {
        self.shared.close(reason);
    }

    fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl OutboxReceiver {
    /// The session id of this queue.
    pub fn id(&self) -> SessionId {
        self.shared.id
    }

    /// The queue's sending half, for a transport queueing a frame of its
    /// own (so that it need not keep both halves in every session).
    pub fn outbox(&self) -> Outbox {
        Outbox {
            shared: self.shared.clone(),
        }
    }

    /// Waits for frames and moves up to `max` of them into `buf` in one go,
    /// so the writer can batch them into one socket write. A closed session
    /// reports [`Recv::Closed`] at once: queued frames are dropped because
    /// the client resumes by `seq` anyway.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, max: usize) -> Recv {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, buf, max)).await
    }

    /// [`recv_many`](Self::recv_many) for a transport written as a
    /// hand-made future: takes up to `max` frames into `buf`, or registers
    /// `cx`'s waker and returns `Pending`. The receiver keeps one waker:
    /// the one of the last poll (of this or of
    /// [`poll_reply_queued`](Self::poll_reply_queued)).
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<Bytes>,
        max: usize,
    ) -> Poll<Recv> {
        let mut st = self.shared.lock();
        if let Some(reason) = st.closed {
            return Poll::Ready(Recv::Closed(reason));
        }
        if st.queue.is_empty() {
            register(&mut st.waker, cx);
            return Poll::Pending;
        }
        st.took_reply = false;
        let n = st.queue.len().min(max.max(1));
        buf.reserve(n);
        let state = &mut *st;
        for (frame, reply) in state.queue.drain(..n) {
            state.bytes -= u32::try_from(frame.len()).unwrap_or(u32::MAX);
            if reply {
                state.replies -= 1;
                state.took_reply = true;
            }
            buf.push(frame);
        }
        if state.queue.is_empty() {
            // An idle session keeps no queue storage.
            state.queue = VecDeque::new();
        }
        Shared::wake_writers(st);
        Poll::Ready(Recv::Frames)
    }

    /// Takes whatever is queued without waiting (for tests and for flushing
    /// a final reply).
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let mut st = self.shared.lock();
        let (frame, reply) = st.queue.pop_front()?;
        st.bytes -= u32::try_from(frame.len()).unwrap_or(u32::MAX);
        if reply {
            st.replies -= 1;
            st.took_reply = true;
        }
        if st.queue.is_empty() {
            // As in `poll_recv_many`: an idle session keeps no storage.
            st.queue = VecDeque::new();
        }
        Shared::wake_writers(st);
        Some(frame)
    }

    /// Whether the frames taken since the last
    /// [`recv_many`](Self::recv_many) began include a reply
    /// ([`Session::deliver_reply`]): a writer gathering frames writes at
    /// once then.
    pub fn took_reply(&self) -> bool {
        self.shared.lock().took_reply
    }

    /// Resolves once a reply is queued (or the session closed): a writer
    /// waiting to gather more frames stops waiting.
    pub async fn reply_queued(&self) {
        std::future::poll_fn(|cx| self.poll_reply_queued(cx)).await;
    }

    /// [`reply_queued`](Self::reply_queued) as a poll: `Ready` once a reply
    /// is queued or the session closed, else registers `cx`'s waker (which
    /// the first frame queued into an empty queue also wakes).
    pub fn poll_reply_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.shared.lock();
        if st.replies > 0 || st.closed.is_some() {
            return Poll::Ready(());
        }
        register(&mut st.waker, cx);
        Poll::Pending
    }

    /// The close reason, if the session was closed.
    pub fn closed(&self) -> Option<ErrorCode> {
        self.shared.lock().closed
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // The transport is gone: refuse further deliveries so fan-out drops
        // this subscriber instead of queueing for nobody.
        let mut st = self.shared.lock();
        if st.closed.is_none() {
            st.closed = Some(ErrorCode::Internal);
        }
        st.queue.clear();
        st.bytes = 0;
        st.replies = 0;
        Shared::wake_writers(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection keeps its queue: with the `Arc`'s two counts
    /// it fits a 128-byte allocation (jemalloc's and glibc's size classes).
    #[test]
    fn an_outbox_fits_128_bytes() {
        assert!(
            std::mem::size_of::<Shared>() + 16 <= 128,
            "{}",
            std::mem::size_of::<Shared>()
        );
    }

    fn limits(frames: usize, bytes: usize) -> OutboxLimits {
        OutboxLimits {
            max_frames: frames,
            max_bytes: bytes,
        }
    }

    #[tokio::test]
    async fn bounded_by_frames_and_bytes() {
        let (tx, mut rx) = Outbox::new(limits(2, 10));
        tx.deliver(Bytes::from_static(b"1234")).unwrap();
        assert_eq!(tx.deliver(Bytes::from_static(b"1234567")), Err(Full));
        tx.deliver(Bytes::from_static(b"12")).unwrap();
        assert_eq!(tx.deliver(Bytes::from_static(b"1")), Err(Full));
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, Recv::Frames);
        assert_eq!(buf.len(), 2);
        tx.deliver(Bytes::from_static(b"1234567")).unwrap();
    }

    #[tokio::test]
    async fn close_wins_over_queued_frames() {
        let (tx, mut rx) = Outbox::new(limits(8, 100));
        tx.deliver(Bytes::from_static(b"x")).unwrap();
        tx.close(ErrorCode::Lagged);
        assert!(tx.is_closed());
        assert_eq!(tx.deliver(Bytes::from_static(b"y")), Err(Full));
        let mut buf = Vec::new();
        assert_eq!(
            rx.recv_many(&mut buf, 10).await,
            Recv::Closed(ErrorCode::Lagged)
        );
    }

    #[tokio::test]
    async fn writable_waits_for_the_reader() {
        let (tx, mut rx) = Outbox::new(limits(1, 100));
        tx.deliver(Bytes::from_static(b"x")).unwrap();
        let waiter = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.writable().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(rx.try_recv().is_some());
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn replies_are_marked_for_the_writer() {
        let (out, mut rx) = Outbox::new(limits(10, 1000));
        out.deliver(Bytes::from_static(b"event")).unwrap();
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 10).await, Recv::Frames);
        assert!(!rx.took_reply());
        // A writer gathering more is woken by a reply, not by an event.
        {
            let waiting = rx.reply_queued();
            tokio::pin!(waiting);
            out.deliver(Bytes::from_static(b"event 2")).unwrap();
            let pending = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(waiting.as_mut(), cx).is_pending())
            })
            .await;
            assert!(pending, "an event woke the reply wait");
            out.deliver_reply(Bytes::from_static(b"ack")).unwrap();
            waiting.await;
        }
        assert_eq!(rx.try_recv().as_deref(), Some(&b"event 2"[..]));
        assert!(!rx.took_reply());
        assert_eq!(rx.try_recv().as_deref(), Some(&b"ack"[..]));
        assert!(rx.took_reply());
        // The next take starts afresh.
        out.deliver(Bytes::from_static(b"event 3")).unwrap();
        buf.clear();
        assert_eq!(rx.recv_many(&mut buf, 10).await, Recv::Frames);
        assert!(!rx.took_reply());
    }

    /// Counts its wake-ups.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_waker_is_woken_by_the_first_frame_a_reply_and_close() {
        let count = Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || count.0.load(Ordering::SeqCst);
        let (out, mut rx) = Outbox::new(limits(10, 1000));
        let mut buf = Vec::new();
        assert!(rx.poll_recv_many(&mut cx, &mut buf, 10).is_pending());
        out.deliver(Bytes::from_static(b"e1")).unwrap();
        assert_eq!(woken(), 1, "the first frame wakes the writer");
        // No waker registered meanwhile: nothing to wake.
        out.deliver(Bytes::from_static(b"e2")).unwrap();
        assert_eq!(woken(), 1);
        assert_eq!(
            rx.poll_recv_many(&mut cx, &mut buf, 10),
            Poll::Ready(Recv::Frames)
        );
        assert_eq!(buf.len(), 2);
        // Gathering: an event into an empty queue wakes (the writer looks
        // and waits on), a reply wakes even into a non-empty queue.
        assert!(rx.poll_reply_queued(&mut cx).is_pending());
        out.deliver(Bytes::from_static(b"e3")).unwrap();
        assert_eq!(woken(), 2);
        assert!(rx.poll_reply_queued(&mut cx).is_pending());
        out.deliver(Bytes::from_static(b"e4")).unwrap();
        assert_eq!(woken(), 2, "a second event does not wake");
        out.deliver_reply(Bytes::from_static(b"ack")).unwrap();
        assert_eq!(woken(), 3, "a reply does");
        assert!(rx.poll_reply_queued(&mut cx).is_ready());
        buf.clear();
        assert_eq!(
            rx.poll_recv_many(&mut cx, &mut buf, 10),
            Poll::Ready(Recv::Frames)
        );
        assert!(rx.took_reply());
        assert!(rx.poll_recv_many(&mut cx, &mut buf, 10).is_pending());
        out.close(ErrorCode::Lagged);
        assert_eq!(woken(), 4, "close wakes");
        assert_eq!(
            rx.poll_recv_many(&mut cx, &mut buf, 10),
            Poll::Ready(Recv::Closed(ErrorCode::Lagged))
        );
    }

    #[tokio::test]
    async fn dropped_receiver_refuses_delivery() {
        let (tx, rx) = Outbox::new(limits(8, 100));
        drop(rx);
        assert_eq!(tx.deliver(Bytes::from_static(b"x")), Err(Full));
    }
}

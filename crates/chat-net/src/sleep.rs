//! Sessions that sleep without a task.
//!
//! A quiet session's task ends, and the session (its fields, boxed) is
//! held only by its one waker (`Wakeup`), which everything it waits on
//! (its socket or the dorm, its outbox, the clock) already has. The first
//! of them to fire spawns a task for it again. So an idle connection costs
//! no tokio task; nothing is registered anew to sleep or wake, and a
//! wake-up arriving while the session falls asleep keeps it up (a
//! three-state atomic: running, notified, asleep).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

use crate::rounds::ROUNDS;

/// A session written as a future by hand that may sleep without a task.
pub trait Sleeper: Send + 'static {
    /// How the session ends.
    type End: Send + 'static;

    /// Polls the awake session with its one waker (`cx`'s, which outlives
    /// any task): `Ready(Some(end))` when it ended; `Ready(None)` when it
    /// is quiet and may sleep (everything it waits on holds `cx`'s waker);
    /// `Pending` when it keeps its task (busy, or woken to come back).
    fn poll_awake(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::End>>;

    /// Says goodbye once it ended, in the task that saw the end.
    fn finish(self: Box<Self>, end: Self::End) -> impl Future<Output = ()> + Send;

    /// The runtime a sleeping session wakes up in.
    fn runtime(&self) -> &tokio::runtime::Handle;

    /// Told as the session falls asleep (`true`) and wakes (`false`), for
    /// a gauge.
    fn asleep(&self, _asleep: bool) {}
}

/// Runs `session` until it ends (then its goodbye), or until it falls
/// asleep: then whatever wakes it runs it again in a new task.
pub fn run<S: Sleeper>(session: Box<S>) -> impl Future<Output = ()> + Send {
    awake(session, Arc::new(Wakeup::default()))
}

/// One task's run of a session. (A plain function returning an `async
/// move` block: an `async fn` would keep its arguments twice.)
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn awake<S: Sleeper>(session: Box<S>, wakeup: Arc<Wakeup<S>>) -> impl Future<Output = ()> + Send {
    async move {
        let Some((session, end)) = (Awake {
            waker: Waker::from(wakeup.clone()),
            session: Some(session),
            wakeup,
        })
        .await
        else {
            return;
        };
        // Boxed: the goodbye's state is needed once, at the end.
        Box::pin(session.finish(end)).await;
    }
}

/// The task's state for [`Wakeup::state`].
const RUNNING: u8 = 0;
/// Woken while its task runs: the task polls it again before it sleeps.
const NOTIFIED: u8 = 1;
/// No task: the session is in [`Wakeup::asleep`].
const ASLEEP: u8 = 2;

/// A session's one waker, for its whole life: while a task runs the
/// session, a wake-up is passed on to that task; while the session sleeps
/// the first wake-up spawns a task for it again.
struct Wakeup<S> {
    state: AtomicU8,
    task: AtomicWaker,
    asleep: Mutex<Option<Box<S>>>,
}

impl<S> Default for Wakeup<S> {
    fn default() -> Self {
        Wakeup {
            state: AtomicU8::new(RUNNING),
            task: AtomicWaker::new(),
            asleep: Mutex::new(None),
        }
    }
}

impl<S: Sleeper> std::task::Wake for Wakeup<S> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = if state == ASLEEP { RUNNING } else { NOTIFIED };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state != ASLEEP {
            self.task.wake();
            return;
        }
        let Some(session) = self.asleep.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        session.asleep(false);
        let runtime = session.runtime().clone();
        runtime.spawn(awake(session, self.clone()));
    }
}

/// A session's run in one task, until it ends (with how it ended) or falls
/// asleep (`None`: the task is done, the session is its [`Wakeup`]'s).
struct Awake<S> {
    /// Boxed for its whole life: falling asleep and waking (at every tick
    /// of the clock, for an idle session) moves a pointer, and the task is
    /// small.
    session: Option<Box<S>>,
    wakeup: Arc<Wakeup<S>>,
    /// `wakeup` as a waker, made once.
    waker: Waker,
}

impl<S: Sleeper> Future for Awake<S> {
    type Output = Option<(Box<S>, S::End)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let wakeup = &*this.wakeup;
        wakeup.task.register(cx.waker());
        let mut inner = Context::from_waker(&this.waker);
        // A wake-up from here on finds the state RUNNING, marks it
        // NOTIFIED and wakes this task.
        wakeup.state.store(RUNNING, Ordering::Release);
        // A session woken again each time it falls asleep yields after a
        // few rounds like any busy one.
        for _ in 0..ROUNDS {
            let Some(session) = this.session.as_mut() else {
                return Poll::Ready(None);
            };
            match session.poll_awake(&mut inner) {
                Poll::Ready(Some(end)) => {
                    return Poll::Ready(this.session.take().map(|s| (s, end)));
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {}
            }
            // Quiet, waiting only on what its waker is registered with:
            // hand the session to the waker and end the task, unless a
            // wake-up came in meanwhile.
            let Some(session) = this.session.take() else {
                return Poll::Ready(None);
            };
            session.asleep(true);
            *wakeup.asleep.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
            // The task's waker would keep the ended task's allocation alive
            // for as long as the session sleeps. (A wake-up from here on
            // wakes no task, but marks the state NOTIFIED: seen just below.)
            drop(wakeup.task.take());
            if wakeup
                .state
                .compare_exchange(RUNNING, ASLEEP, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Ready(None);
            }
            // NOTIFIED: only this task moves the state on from there.
            this.session = wakeup
                .asleep
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(session) = &this.session {
                session.asleep(false);
            }
            wakeup.task.register(cx.waker());
            wakeup.state.store(RUNNING, Ordering::Release);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

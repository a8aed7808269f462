//! The clock every session of a server shares for its pings, heartbeats
//! and idle checks: one timer for the whole server instead of one per
//! session (a tokio timer is over 100 bytes, kept by every idle
//! connection).
//!
//! Every `period` the clock starts a new epoch and wakes the sessions
//! waiting for it; a session that sees a new epoch checks how long its
//! client has been quiet, and waits for the next one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::Duration;

use crate::dorm::Dorm;

/// Sessions a tick wakes before it lets them run.
const WAKE_SLICE: usize = 256;

/// The shared clock. See the module docs.
#[derive(Debug, Default)]
pub struct Clock {
    /// Wraps around (after 2^32 epochs): sessions only compare it for
    /// equality, and it keeps their copy at four bytes.
    epoch: AtomicU32,
    /// Sessions waiting for the next epoch (at most one entry each per
    /// epoch, two for one leaving the dorm), but for those whose sockets
    /// rest in the dorm: each tick wakes the dorm's sleepers.
    waiting: Mutex<Vec<Waker>>,
}

impl Clock {
    /// The current epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Wakes `cx`'s task at the next epoch. Returns the epoch current once
    /// registered: if it is not the one the caller saw, an epoch began
    /// meanwhile and the caller should look again now.
    pub fn wait(&self, cx: &Context<'_>) -> u32 {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cx.waker().clone());
        self.epoch()
    }

    /// Starts a new epoch and hands back the sessions waiting for it.
    fn start_epoch(&self) -> Vec<Waker> {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts a new epoch and wakes every waiting session at once.
    #[cfg(test)]
    pub(crate) fn wake_everyone_now(&self) {
        for waker in self.start_epoch() {
            waker.wake();
        }
    }

    /// Starts a new epoch and wakes every session waiting for it, and
    /// every sleeper in `dorm`: what a tick does. A server stopping calls
    /// it after setting its own stop flag, so that every session looks at
    /// that flag: one registered after this call finds the epoch changed.
    pub async fn wake_everyone(&self, dorm: Option<&Dorm>) {
        // A slice at a time: the woken sessions run (and their tasks
        // end) before the next slice is woken, so a tick never has
        // every session's task allocated at once.
        let mut waiting = self.start_epoch().into_iter();
        loop {
            let mut woken = 0;
            for waker in waiting.by_ref().take(WAKE_SLICE) {
                waker.wake();
                woken += 1;
            }
            if woken < WAKE_SLICE {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut from = dorm.map(|_| 0);
        while let (Some(dorm), Some(at)) = (dorm, from) {
            from = dorm.wake_slice(at);
            tokio::task::yield_now().await;
        }
    }

    /// Ticks every `period`, forever (the server aborts it when it stops),
    /// waking the sessions waiting for the next epoch and the sleepers in
    /// `dorm`.
    pub async fn run(
        self: std::sync::Arc<Self>,
        period: Duration,
        dorm: Option<std::sync::Arc<Dorm>>,
    ) {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.wake_everyone(dorm.as_deref()).await;
        }
    }
}

/// A session's place on the [`Clock`]: the epoch it last looked at, and
/// whether it is registered for the next one, in four bytes (the flag in
/// the top bit: epochs are compared on the other 31, which wrap after
/// 2^31 ticks).
#[derive(Debug, Clone, Copy)]
pub struct Epoch(u32);

/// [`Epoch`]'s flag: registered on the clock's list for the next epoch.
const WAITING: u32 = 1 << 31;

impl Epoch {
    /// At the clock's current epoch, not yet registered for the next.
    pub fn new(clock: &Clock) -> Self {
        Epoch(clock.epoch() & !WAITING)
    }

    fn seen(self) -> u32 {
        self.0 & !WAITING
    }

    /// Whether the clock is still at the epoch last looked at.
    pub fn is_current(self, clock: &Clock) -> bool {
        clock.epoch() & !WAITING == self.seen()
    }

    /// Whether a new epoch has begun since the last look: the session
    /// acts on it, and the next call registers for the one after. If not,
    /// `cx` is woken at the next one (registered once per epoch), unless
    /// the session's socket is `resting`: each tick wakes the dorm's
    /// sleepers, who are not on the clock's list.
    pub fn poll_new(&mut self, clock: &Clock, resting: bool, cx: &Context<'_>) -> bool {
        let mut now = clock.epoch() & !WAITING;
        if now == self.seen() {
            if self.0 & WAITING != 0 {
                return false;
            }
            self.0 |= WAITING;
            if resting {
                return false;
            }
            now = clock.wait(cx) & !WAITING;
            if now == self.seen() {
                return false;
            }
        }
        self.0 = now;
        true
    }

    /// The session's socket left the dorm: it registers on the clock's
    /// list again at its next look.
    pub fn rejoin(&mut self) {
        self.0 &= !WAITING;
    }
}

/// The clock's period for an interval (a ping's, a heartbeat's): half of
/// it, so a client is pinged between one and one and a half intervals
/// after it went quiet.
pub fn period(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::testing::Counter;

    #[test]
    fn a_tick_wakes_each_waiting_session_once_and_starts_an_epoch() {
        let clock = Clock::default();
        let counters: Vec<Arc<Counter>> = (0..3).map(|_| Arc::new(Counter::default())).collect();
        for c in &counters {
            let waker = Waker::from(c.clone());
            assert_eq!(clock.wait(&Context::from_waker(&waker)), 0);
        }
        clock.wake_everyone_now();
        assert_eq!(clock.epoch(), 1);
        for c in &counters {
            assert_eq!(c.count(), 1);
        }
        // Nobody waits now: the next tick wakes no one.
        clock.wake_everyone_now();
        assert_eq!(clock.epoch(), 2);
        for c in &counters {
            assert_eq!(c.count(), 1);
        }
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(15));
    }

    #[test]
    fn an_epoch_is_seen_once_and_the_next_waited_for_once() {
        let clock = Clock::default();
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let cx = Context::from_waker(&waker);
        let mut epoch = Epoch::new(&clock);
        assert!(!epoch.poll_new(&clock, false, &cx));
        // Registered once, however often it looks within the epoch.
        assert!(!epoch.poll_new(&clock, false, &cx));
        assert_eq!(clock.waiting.lock().unwrap().len(), 1);
        clock.wake_everyone_now();
        assert_eq!(counter.count(), 1);
        assert!(epoch.poll_new(&clock, false, &cx));
        assert!(epoch.is_current(&clock));
        assert_eq!(std::mem::size_of::<Epoch>(), 4);
        // Resting: the dorm's tick wakes it, not the clock's list.
        assert!(!epoch.poll_new(&clock, true, &cx));
        assert!(clock.waiting.lock().unwrap().is_empty());
        epoch.rejoin();
        assert!(!epoch.poll_new(&clock, false, &cx));
        assert_eq!(clock.waiting.lock().unwrap().len(), 1);
    }
}

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
    fn tick(&self) {
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
        clock.tick();
        assert_eq!(clock.epoch(), 1);
        for c in &counters {
            assert_eq!(c.count(), 1);
        }
        // Nobody waits now: the next tick wakes no one.
        clock.tick();
        assert_eq!(clock.epoch(), 2);
        for c in &counters {
            assert_eq!(c.count(), 1);
        }
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(15));
    }
}

//! A session's pace, epoch by epoch of the [`Clock`]: how much chat
//! traffic it had, whether that keeps its task, and whether its socket
//! may rest in the dorm while it sleeps.

use std::task::Context;

use crate::clock::{Clock, Epoch};
use crate::stream::Stream;

/// Chat traffic in one epoch of the clock that keeps a session's task
/// until the end of the next epoch: a session with less sleeps whenever
/// it is quiet (a chat member reading along, a client sending
/// keep-alives); a busier one does not pay for a new task at every
/// message.
pub const LIVELY: u8 = 16;

/// Chat traffic in one epoch of the clock after which a sleeping
/// session keeps its socket in tokio's reactor until the epoch ends:
/// waking there costs no system call, and moving a socket to the dorm and
/// back costs four (a subscriber to a busy room would pay them per
/// message until `LIVELY`). Below it (an idle connection, a quiet room,
/// a client between a few requests) the socket rests in the dorm.
pub const RESTLESS: u8 = 8;

/// Whether a quiet session's socket may rest in the dorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestRule {
    /// Whenever the session is quiet with traffic under `RESTLESS`.
    Allowed,
    /// Not before the clock's next epoch ([`Stream::REST_WHEN_NEW`]).
    AfterAnEpoch,
    /// Never: the dorm refused its socket once.
    Never,
}

impl RestRule {
    /// The rule for a new session over `Io`.
    fn new<Io: Stream>() -> Self {
        if Io::REST_WHEN_NEW {
            RestRule::Allowed
        } else {
            RestRule::AfterAnEpoch
        }
    }

    /// A new epoch of the clock began.
    fn new_epoch(&mut self) {
        if *self == RestRule::AfterAnEpoch {
            *self = RestRule::Allowed;
        }
    }
}

/// See the module docs. Eight bytes.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    epoch: Epoch,
    /// Chat traffic in this epoch, counted up to `LIVELY`.
    traffic: u8,
    /// This epoch or the last one reached `LIVELY`.
    lively: bool,
    rest: RestRule,
}

impl Pace {
    /// A new session's pace over `Io`, at the clock's current epoch.
    pub fn new<Io: Stream>(clock: &Clock) -> Self {
        Pace {
            epoch: Epoch::new(clock),
            traffic: 0,
            lively: false,
            rest: RestRule::new::<Io>(),
        }
    }

    /// One piece of chat traffic: a message from the client, or a batch
    /// of frames for it.
    pub fn stir(&mut self) {
        self.traffic = self.traffic.saturating_add(1);
        if self.traffic >= LIVELY {
            self.lively = true;
        }
    }

    /// Whether the session keeps its task while quiet.
    pub fn lively(&self) -> bool {
        self.lively
    }

    /// Whether a quiet session's socket may rest in the dorm now.
    pub fn may_rest(&self) -> bool {
        self.rest == RestRule::Allowed && self.traffic < RESTLESS
    }

    /// The dorm refused the socket: it stays in the reactor for good.
    pub fn never_rest(&mut self) {
        self.rest = RestRule::Never;
    }

    /// Whether a new epoch began since the last look ([`Epoch::poll_new`]);
    /// if so, the new epoch's count starts.
    pub fn poll_epoch(&mut self, clock: &Clock, resting: bool, cx: &Context<'_>) -> bool {
        if !self.epoch.poll_new(clock, resting, cx) {
            return false;
        }
        self.rest.new_epoch();
        self.lively = self.traffic >= LIVELY;
        self.traffic = 0;
        true
    }

    /// Whether the clock is still at the epoch last looked at.
    pub fn is_current(&self, clock: &Clock) -> bool {
        self.epoch.is_current(clock)
    }

    /// The socket left the dorm ([`Epoch::rejoin`]).
    pub fn rejoin(&mut self) {
        self.epoch.rejoin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Waker;

    use crate::stream::Plain;
    use crate::testing::Counter;

    #[test]
    fn traffic_keeps_a_task_and_the_socket_for_an_epoch_more() {
        let clock = Clock::default();
        let waker = Waker::from(Arc::new(Counter::default()));
        let cx = Context::from_waker(&waker);
        let mut pace = Pace::new::<Plain>(&clock);
        assert_eq!(std::mem::size_of::<Pace>(), 8);
        assert!(pace.may_rest() && !pace.lively());
        for _ in 0..RESTLESS {
            pace.stir();
        }
        assert!(!pace.may_rest() && !pace.lively());
        for _ in RESTLESS..LIVELY {
            pace.stir();
        }
        assert!(pace.lively());
        // Lively through the next epoch, then quiet.
        clock.wake_everyone_now();
        assert!(pace.poll_epoch(&clock, false, &cx));
        assert!(pace.lively() && pace.may_rest());
        clock.wake_everyone_now();
        assert!(pace.poll_epoch(&clock, false, &cx));
        assert!(!pace.lively());
        pace.never_rest();
        assert!(!pace.may_rest());
    }
}

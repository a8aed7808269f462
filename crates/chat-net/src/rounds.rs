//! How a session written as a future by hand does its work in one poll:
//! rounds of reading, writing and looking at the clock, until a round
//! makes no progress, the session ends, or it has done its share.

use std::task::Context;

/// Rounds of work one poll of a session does before it yields, so a
/// client that keeps its session busy cannot hold a worker thread.
pub const ROUNDS: usize = 16;

/// How [`rounds`] left the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<E> {
    /// It ended, this way.
    End(E),
    /// Nothing to do: what it waits on has its waker.
    Quiet,
    /// It used its rounds and asked to be polled again.
    Yield,
}

/// Runs `round` until one makes no progress (`Quiet`: `round` left
/// `busy` false, and each source it polled holds the waker), ends the
/// session (`Some`), or [`ROUNDS`] are done (`Yield`, the task woken to
/// come back).
pub fn rounds<E>(
    cx: &mut Context<'_>,
    mut round: impl FnMut(&mut Context<'_>, &mut bool) -> Option<E>,
) -> Step<E> {
    for _ in 0..ROUNDS {
        let mut busy = false;
        if let Some(end) = round(cx, &mut busy) {
            return Step::End(end);
        }
        if !busy {
            return Step::Quiet;
        }
    }
    cx.waker().wake_by_ref();
    Step::Yield
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Waker;

    use crate::testing::Counter;

    #[test]
    fn rounds_stop_when_quiet_at_the_end_or_after_their_share() {
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut left = 3;
        let step = rounds(&mut cx, |_, busy| {
            *busy = left > 0;
            left -= 1;
            None::<()>
        });
        assert_eq!((step, left), (Step::Quiet, -1));
        assert_eq!(rounds(&mut cx, |_, _| Some(7)), Step::End(7));
        assert_eq!(counter.count(), 0);
        let step = rounds(&mut cx, |_, busy| {
            *busy = true;
            None::<()>
        });
        assert_eq!(step, Step::Yield);
        assert_eq!(counter.count(), 1, "a session that yields is woken");
    }
}

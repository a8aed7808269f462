//! Where the sockets of sleeping sessions wait for their
//! clients: one epoll set of the server's own, outside tokio's reactor.
//!
//! tokio keeps a registration of about 256 bytes (cache-line aligned) for
//! every socket it watches, the largest single piece of an idle
//! connection once its session sleeps. A sleeping plain session gives its
//! socket back to the standard library (`TcpStream::into_std`, which ends
//! that registration) and lies it down here: the dorm's epoll set holds
//! the socket with a small number, its bed, and the dorm keeps the
//! session's waker in that bed (16 bytes). The set's own descriptor is
//! one tokio registration for them all: when a client sends something (or
//! hangs up), the dorm's task wakes the session, which reads what came and
//! takes its socket back into tokio (`from_std`). (A thread of its own
//! waiting on the set cost a hand-off between threads per wake-up: 0.5 ms
//! more per request of a session that sleeps between requests, against
//! 0.2 ms this way, in `chat-bench churn`.)
//!
//! A wake-up found in the event list after its sleeper got up (or for a
//! bed already given to someone else) wakes a session for nothing: it
//! looks and sleeps again. No pointer crosses the kernel, so nothing can
//! be woken after it is gone.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::io::unix::AsyncFd;

/// Events taken from the dorm's epoll set per wait.
const EVENTS: usize = 256;

/// Sleepers [`Dorm::wake_slice`] wakes at once.
const WAKE_SLICE: usize = 256;

/// The token of the dorm's own wake-up, which tells its task to stop.
const STOP: Token = Token(usize::MAX);

/// The dorm. See the module docs.
#[derive(Debug)]
pub struct Dorm {
    registry: Registry,
    beds: Mutex<Beds>,
    stopping: AtomicBool,
    stop: mio::Waker,
}

/// Sleepers' wakers by bed number, and the beds free.
#[derive(Debug, Default)]
struct Beds {
    wakers: Vec<Option<Waker>>,
    free: Vec<u32>,
}

/// A socket's place in the dorm, given back with [`Dorm::get_up`].
#[derive(Debug)]
pub struct Bed(u32);

impl Dorm {
    /// A dorm and its task (on the current runtime), which runs until
    /// [`Dorm::stop`].
    pub fn start() -> io::Result<Arc<Dorm>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let stop = mio::Waker::new(poll.registry(), STOP)?;
        // Deprecated in favour of an `unsafe` constructor (this workspace
        // forbids `unsafe`) because an `AsRawFd` value may close or swap
        // its descriptor while registered; a `mio::Poll` owns its epoll
        // descriptor, unchanged, until it is dropped with the `AsyncFd`.
        #[allow(deprecated)]
        let poll = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let dorm = Arc::new(Dorm {
            registry,
            beds: Mutex::new(Beds::default()),
            stopping: AtomicBool::new(false),
            stop,
        });
        tokio::spawn(dorm.clone().watch(poll));
        Ok(dorm)
    }

    /// Ends the dorm's task (sockets still lying in it then wake no one;
    /// the server stops after its sessions have ended).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Err(e) = self.stop.wake() {
            tracing::warn!(error = %e, "the dorm's task could not be told to stop");
        }
    }

    /// Watches `fd` for input (or its end) and wakes `waker` then, until
    /// [`Dorm::get_up`]. A socket with input waiting already wakes it at
    /// once.
    pub fn lie_down(&self, fd: RawFd, waker: &Waker) -> io::Result<Bed> {
        let bed = {
            let mut beds = self.lock();
            let bed = match beds.free.pop() {
                Some(bed) => bed,
                None => {
                    let Ok(bed) = u32::try_from(beds.wakers.len()) else {
                        return Err(io::Error::other("the dorm is full"));
                    };
                    beds.wakers.push(None);
                    bed
                }
            };
            beds.wakers[bed as usize] = Some(waker.clone());
            bed
        };
        let token = Token(bed as usize);
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            self.free(bed);
            return Err(e);
        }
        Ok(Bed(bed))
    }

    /// Takes `fd` out of the dorm and frees its bed.
    pub fn get_up(&self, fd: RawFd, bed: Bed) {
        // Fails only if the descriptor is not in the set, which a bed
        // given out by `lie_down` rules out; the bed is freed regardless.
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::debug!(error = %e, "taking a socket out of the dorm");
        }
        self.free(bed.0);
    }

    /// Wakes the sleepers in beds `from..` up to `WAKE_SLICE` of them (the
    /// ping clock's tick: sleepers are not on its list), the lock not held
    /// while waking. Returns where the next slice starts, `None` after the
    /// last. The clock lets the woken sessions run between slices, so a
    /// tick never has every sleeper's task allocated at once.
    pub fn wake_slice(&self, from: usize) -> Option<usize> {
        let (woken, next): (Vec<Waker>, usize) = {
            let beds = self.lock();
            let slice = beds.wakers.get(from..)?;
            let slice = &slice[..slice.len().min(WAKE_SLICE)];
            if slice.is_empty() {
                return None;
            }
            (
                slice.iter().flatten().cloned().collect(),
                from + slice.len(),
            )
        };
        for waker in woken {
            waker.wake();
        }
        Some(next)
    }

    /// How many sockets lie in the dorm.
    pub fn sleepers(&self) -> usize {
        let beds = self.lock();
        beds.wakers.len() - beds.free.len()
    }

    fn free(&self, bed: u32) {
        let mut beds = self.lock();
        if let Some(slot) = beds.wakers.get_mut(bed as usize) {
            if slot.take().is_some() {
                beds.free.push(bed);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Beds> {
        self.beds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the sleepers whose sockets have input, until [`Dorm::stop`]:
    /// the dorm's task. Ends early only if the epoll set itself fails,
    /// after which sleeping sessions wake for their outbox, the ping clock
    /// and shutdown, not for their clients: logged as an error.
    async fn watch(self: Arc<Self>, mut poll: AsyncFd<Poll>) {
        let mut events = Events::with_capacity(EVENTS);
        let mut woken = Vec::with_capacity(EVENTS);
        loop {
            let mut ready = match poll.readable_mut().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(error = %e, "the dorm's epoll set failed");
                    return;
                }
            };
            // Watched edge-triggered: emptied before waiting again.
            loop {
                if let Err(e) = ready
                    .get_inner_mut()
                    .poll(&mut events, Some(Duration::ZERO))
                {
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::error!(error = %e, "the dorm's epoll set failed");
                    return;
                }
                {
                    let beds = self.lock();
                    woken.extend(
                        events
                            .iter()
                            .filter_map(|e| beds.wakers.get(e.token().0)?.clone()),
                    );
                }
                // Woken outside the lock: a waking session may get up at once.
                for waker in woken.drain(..) {
                    waker.wake();
                }
                if self.stopping.load(Ordering::Acquire) {
                    return;
                }
                if events.iter().count() < EVENTS {
                    break;
                }
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use crate::testing::Counter;

    async fn until(counter: &Counter, n: usize) {
        for _ in 0..500 {
            if counter.count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not woken {n} times");
    }

    #[tokio::test]
    async fn a_sleeper_is_woken_by_input_until_it_gets_up_and_beds_are_reused() {
        let dorm = Dorm::start().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let other = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (other_server, _) = listener.accept().unwrap();

        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let bed = dorm.lie_down(server.as_raw_fd(), &waker).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(counter.count(), 0, "woken with no input");

        client.write_all(b"x").unwrap();
        until(&counter, 1).await;

        dorm.get_up(server.as_raw_fd(), bed);
        client.write_all(b"y").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(counter.count(), 1, "woken after getting up");

        // A socket that already has input wakes its sleeper as it lies down;
        // the freed bed is given out again.
        let second = Arc::new(Counter::default());
        let bed = dorm
            .lie_down(server.as_raw_fd(), &Waker::from(second.clone()))
            .unwrap();
        assert_eq!(bed.0, 0);
        until(&second, 1).await;
        // The client going away wakes it too.
        let third = Arc::new(Counter::default());
        let other_bed = dorm
            .lie_down(other_server.as_raw_fd(), &Waker::from(third.clone()))
            .unwrap();
        assert_eq!(other_bed.0, 1);
        assert_eq!(dorm.sleepers(), 2);
        drop(other);
        until(&third, 1).await;
        // The clock's tick wakes every sleeper, input or not.
        let (before, third_before) = (second.count(), third.count());
        let mut from = Some(0);
        while let Some(at) = from {
            from = dorm.wake_slice(at);
        }
        assert_eq!(second.count(), before + 1);
        assert_eq!(third.count(), third_before + 1);
        assert_eq!(counter.count(), 1, "woken after getting up");
        dorm.get_up(server.as_raw_fd(), bed);
        dorm.get_up(other_server.as_raw_fd(), other_bed);
        dorm.stop();
    }
}

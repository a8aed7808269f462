//! A session's stream and the bytes waiting to be written to it, read
//! through a buffer the worker thread shares: an idle session holds no
//! buffer of its own.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::ReadBuf;

use crate::stream::Stream;

thread_local! {
    /// The read buffer the worker thread's sessions share: bytes are parsed
    /// as soon as they are read, so no session keeps one of its own.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads one look at a resting socket makes before it leaves the rest to
/// the running session: a client sending that much is not idle.
pub const READS_AT_REST: usize = 4;

/// What [`Socket::read_at_rest`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrived {
    /// Nothing had arrived.
    Nothing,
    /// Bytes, all of them read.
    Some,
    /// Bytes, and maybe more: the running session reads on.
    More,
}

/// A session's stream and its output. Frames are queued whole in `out`,
/// so a ping or a pong queued while a batch is half written goes out
/// after it.
#[derive(Debug)]
pub struct Socket<Io> {
    /// The stream.
    pub io: Io,
    /// Encoded frames not yet written, from `written` on; released once
    /// written, so an idle connection holds no buffer.
    pub out: Vec<u8>,
    /// How much of `out` is written.
    pub written: usize,
    /// Bytes were written and not yet flushed (TLS may still hold records).
    pub unflushed: bool,
}

impl<Io: Stream> Socket<Io> {
    /// A socket with nothing queued.
    pub fn new(io: Io) -> Self {
        Socket {
            io,
            out: Vec::new(),
            written: 0,
            unflushed: false,
        }
    }

    /// Reads up to `max` bytes into the thread's shared buffer and hands
    /// them to `take`; 0 means end of stream.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        take: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < max {
                scratch.resize(max, 0);
            }
            let mut rb = ReadBuf::new(&mut scratch[..max]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            take(got);
            Poll::Ready(Ok(got.len()))
        })
    }

    /// While the socket rests in the dorm, which wakes on new input only:
    /// reads what has arrived to the end (`WouldBlock`), `max` bytes at a
    /// time, handing it to `take`; after [`READS_AT_REST`] reads the rest
    /// is left to the running session. The end of the stream is an
    /// `UnexpectedEof` error.
    pub fn read_at_rest(&mut self, max: usize, mut take: impl FnMut(&[u8])) -> io::Result<Arrived> {
        let mut arrived = Arrived::Nothing;
        for _ in 0..READS_AT_REST {
            match self.read_resting(max, &mut take) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of stream",
                    ))
                }
                Ok(_) => arrived = Arrived::Some,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(arrived),
                // tokio retries it once the socket is back.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Arrived::More),
                Err(e) => return Err(e),
            }
        }
        Ok(Arrived::More)
    }

    /// One read at rest, without waiting; 0 means end of stream.
    fn read_resting(&mut self, max: usize, take: impl FnOnce(&[u8])) -> io::Result<usize> {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < max {
                scratch.resize(max, 0);
            }
            let n = self.io.read_resting(&mut scratch[..max])?;
            take(&scratch[..n]);
            Ok(n)
        })
    }

    /// While the socket rests in the dorm: writes what is queued as far as
    /// the socket takes it without waiting. `Ok(true)` when something is
    /// left for the running session to write or flush (the socket was
    /// full, or TLS holds records).
    pub fn write_resting(&mut self) -> io::Result<bool> {
        while self.written < self.out.len() {
            match self.io.write_resting(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written > 0 {
            self.out = Vec::new();
            self.written = 0;
        }
        Ok(self.io.buffered())
    }

    /// Whether frames are waiting to be written or flushed.
    pub fn has_output(&self) -> bool {
        self.written < self.out.len() || self.unflushed || self.io.buffered()
    }

    /// Writes everything queued, then flushes.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.unflushed = true;
        }
        if self.written > 0 {
            self.out = Vec::new();
            self.written = 0;
        }
        if self.unflushed || self.io.buffered() {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Ends the stream cleanly (TLS close_notify, then FIN).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

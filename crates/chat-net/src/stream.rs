//! The streams a session runs over, and how each sleeps: a plain socket
//! leaves tokio's reactor for the server's [`Dorm`] while its session
//! sleeps, and so does a TLS one ([`Tls`](crate::tls::Tls) runs over
//! [`Plain`]); any other stream keeps the trait's defaults and stays
//! where it is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::dorm::{Bed, Dorm};

/// How [`Stream::rest`] went.
#[derive(Debug, PartialEq, Eq)]
pub enum Rest {
    /// The socket is in the dorm, which wakes the session on input.
    Resting,
    /// The stream stays in tokio's reactor, whose registration keeps the
    /// waker it was last polled with.
    Stays,
    /// The socket left the reactor and came back (the dorm refused it):
    /// its registration is new and holds no waker; poll it before sleeping.
    Back,
}

/// A session's stream: tokio's reads and writes while the session runs,
/// and, while it sleeps, whether the socket can wait outside tokio.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether a new session's socket may rest from its first sleep, or
    /// only once the ping clock's next epoch has begun.
    const REST_WHEN_NEW: bool = true;

    /// Moves the socket into `dorm`, to wake `waker` on input.
    fn rest(&mut self, _dorm: &Dorm, _waker: &Waker) -> Rest {
        Rest::Stays
    }

    /// Whether the socket is in the dorm.
    fn resting(&self) -> bool {
        false
    }

    /// Takes the socket out of `dorm`, back into tokio's reactor.
    fn rise(&mut self, _dorm: &Dorm) -> io::Result<()> {
        Ok(())
    }

    /// While resting: reads what has arrived, without waiting
    /// (`WouldBlock` when nothing has).
    fn read_resting(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// While resting: writes what the socket takes without waiting.
    fn write_resting(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Whether bytes written wait in the stream itself for a flush (TLS
    /// records the socket did not take).
    fn buffered(&self) -> bool {
        false
    }
}

/// A plain connection's socket: in tokio's reactor while its session runs,
/// in the dorm while it sleeps.
#[derive(Debug)]
pub enum Plain {
    /// In tokio's reactor.
    Up(TcpStream),
    /// In the dorm, in this bed.
    Resting(std::net::TcpStream, Bed),
    /// Lost moving between the two (the OS refused); reads and writes fail
    /// and the session ends.
    Lost,
}

fn lost() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket lost while resting")
}

impl Stream for Plain {
    fn rest(&mut self, dorm: &Dorm, waker: &Waker) -> Rest {
        use std::os::fd::AsRawFd;
        let tokio = match std::mem::replace(self, Plain::Lost) {
            Plain::Up(tokio) => tokio,
            other => {
                *self = other;
                return Rest::Stays;
            }
        };
        let std = match tokio.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::warn!(error = %e, "a socket could not leave the reactor");
                return Rest::Back;
            }
        };
        match dorm.lie_down(std.as_raw_fd(), waker) {
            Ok(bed) => {
                *self = Plain::Resting(std, bed);
                Rest::Resting
            }
            Err(e) => {
                tracing::warn!(error = %e, "the dorm refused a socket");
                match TcpStream::from_std(std) {
                    Ok(tokio) => *self = Plain::Up(tokio),
                    Err(e) => tracing::warn!(error = %e, "a socket could not rejoin the reactor"),
                }
                Rest::Back
            }
        }
    }

    fn resting(&self) -> bool {
        matches!(self, Plain::Resting(..))
    }

    fn rise(&mut self, dorm: &Dorm) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (std, bed) = match std::mem::replace(self, Plain::Lost) {
            Plain::Resting(std, bed) => (std, bed),
            other => {
                *self = other;
                return Ok(());
            }
        };
        dorm.get_up(std.as_raw_fd(), bed);
        *self = Plain::Up(TcpStream::from_std(std)?);
        Ok(())
    }

    fn read_resting(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Plain::Resting(std, _) => io::Read::read(std, buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_resting(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Plain::Resting(std, _) => io::Write::write(std, buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for Plain {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Plain::Up(s) => Pin::new(s).poll_read(cx, buf),
            _ => Poll::Ready(Err(lost())),
        }
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Plain::Up(s) => Pin::new(s).poll_write(cx, buf),
            _ => Poll::Ready(Err(lost())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Plain::Up(s) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Err(lost())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Plain::Up(s) => Pin::new(s).poll_shutdown(cx),
            _ => Poll::Ready(Err(lost())),
        }
    }
}

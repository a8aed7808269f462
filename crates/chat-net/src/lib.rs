//! Socket plumbing the chat transports share (`chat-transport-ws` and
//! `chat-transport-tcp`), for connections that cost little while idle:
//!
//! - [`Socket`]: a session's stream and its queued output, read through a
//!   buffer its worker thread shares.
//! - [`Plain`] and the [`Stream`] trait: a socket that leaves tokio's
//!   reactor while its session sleeps and rests in the server's [`Dorm`]
//!   (one epoll set of its own), and comes back when there is work.
//! - [`Tls`]: server-side TLS on rustls' unbuffered API over a [`Plain`]
//!   socket, with no buffer held while idle and, after the handshake, only
//!   the record keys kept ([`tls::accept`]).
//! - [`Clock`]: one timer for every session's pings and idle checks;
//!   [`Epoch`], a session's place on it; [`Pace`], its traffic epoch by
//!   epoch (whether it keeps its task, whether its socket may rest).
//! - [`rounds`](rounds::rounds): a hand-written session's work in one poll;
//!   [`sleep`]: such a session sleeping without a task ([`Sleeper`]).
//!
//! # Example
//!
//! A session that waits with its socket in the dorm, outside tokio's
//! reactor, and is woken by its client's bytes:
//!
//! ```
//! use std::task::Poll;
//! use chat_net::socket::Arrived;
//! use chat_net::{Dorm, Plain, Rest, Socket, Stream};
//! use tokio::io::AsyncWriteExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
//! let (tcp, _) = listener.accept().await?;
//! let dorm = Dorm::start()?;
//! let mut sock = Socket::new(Plain::Up(tcp));
//!
//! client.write_all(b"hello").await?;
//! let mut got = Vec::new();
//! std::future::poll_fn(|cx| {
//!     if !sock.io.resting() {
//!         // Asleep: the dorm wakes this task when the client writes.
//!         assert_eq!(sock.io.rest(&dorm, cx.waker()), Rest::Resting);
//!         return Poll::Pending;
//!     }
//!     match sock.read_at_rest(64, |b| got.extend_from_slice(b)) {
//!         Ok(Arrived::Nothing) => Poll::Pending,
//!         Ok(_) => Poll::Ready(Ok(())),
//!         Err(e) => Poll::Ready(Err(e)),
//!     }
//! })
//! .await?;
//! assert_eq!(got, b"hello");
//! sock.io.rise(&dorm)?; // back in tokio's reactor, to read and write
//! dorm.stop();
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod clock;
pub mod dorm;
pub mod pace;
mod records;
pub mod rounds;
pub mod sleep;
pub mod socket;
pub mod stream;
#[cfg(test)]
mod testing;
pub mod tls;

pub use clock::{Clock, Epoch};
pub use dorm::Dorm;
pub use pace::Pace;
pub use sleep::Sleeper;
pub use socket::Socket;
pub use stream::{Plain, Rest, Stream};
pub use tls::Tls;

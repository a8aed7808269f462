//! Raw TLS TCP transport for [`chat_core`]: the same JSON frames as the
//! WebSocket transport, one frame per `\n`-terminated line, over TLS 1.2 or
//! 1.3 (rustls with the `ring` provider). Bring your own
//! `Arc<rustls::ServerConfig>` (this crate re-exports [`rustls`]) or build
//! one from PEM files or a self-signed certificate kept in a data folder.
//!
//! # Example
//!
//! Serve an engine on a loopback port with a self-signed certificate, sign
//! up through the [`client`] pinned to that certificate, and shut down:
//!
//! ```
//! use chat_core::{ClientFrame, Engine, Limits, Request, ServerFrame};
//! use chat_transport_tcp::client::{Connector, Trust};
//! use chat_transport_tcp::{serve, TcpSettings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("chat-tcp-doc-{}", std::process::id()));
//! let engine = Engine::builder()
//!     .limits(Limits::default().fast_hashing_for_tests())
//!     .build()?;
//! let cert = chat_transport_tcp::self_signed(&dir, &[])?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?.to_string();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(
//!     listener,
//!     engine,
//!     cert.server_config()?,
//!     TcpSettings::default(),
//!     stopped,
//! ));
//!
//! let trust = Trust::Fingerprint(cert.fingerprint);
//! let mut client = Connector::new(&trust)?.connect(&addr, None).await?;
//! let signup = ClientFrame::Signup { username: "alice".into(), password: "correct horse".into() };
//! client.send(&Request { id: Some(1), frame: signup }).await?;
//! loop {
//!     match client.recv().await? {
//!         Some(ServerFrame::Hello { .. }) => continue,
//!         Some(ServerFrame::Authed { id, user, .. }) => {
//!             assert_eq!((id, user.as_str()), (Some(1), "alice"));
//!             break;
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//!
//! let _ = stop.send(());
//! server.await?; // resolves once every connection has closed
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`server`]: [`serve`], the accept loop, TLS handshake timeout, admission
//!   and graceful shutdown; `session`: one connection's session, reading
//!   lines and writing frames.
//! - [`TcpSettings`]: every timeout and bound of the server side.
//! - `line`: bounded line reading shared by server and client.
//! - [`tls`]: the crypto provider, protocol versions and PEM loading;
//!   [`cert`]: [`Fingerprint`] and the self-signed certificate helper.
//! - [`client`]: [`Connector`](client::Connector), [`Client`](client::Client)
//!   and the [`Trust`](client::Trust) options (CA file, pinned fingerprint,
//!   insecure); [`files`]: encoding of file chunks and safe local names
//!   for downloads.
//! - `fuzzing` (feature `fuzzing` only): drives the line reader over
//!   in-memory input split at arbitrary points, for the `tcp_line` fuzz
//!   target.
//!
//! # Behaviour on the wire
//!
//! - The server speaks first: `hello`, as on every transport.
//! - A line longer than [`TcpSettings::max_line_bytes`] (default: the
//!   engine's frame limit) is not buffered: as soon as the limit is passed
//!   the server sends `error` with code `frame_too_large`, then `closing`
//!   with the same reason, and closes. A line that long means the client
//!   ignores `hello.max_frame_bytes`; skipping the rest of it could mean
//!   reading without end.
//! - Heartbeat: after [`TcpSettings::heartbeat_interval`] without writing
//!   (up to half an interval more: one clock ticks for every session),
//!   the server sends `{"type":"pong"}` (a `pong` without `id`). Clients
//!   send anything (e.g. `{"type":"ping"}`) at least every
//!   [`TcpSettings::idle_timeout`], or get `closing` with reason `idle`.
//! - Blank lines and a `\r` before the `\n` are accepted.
//!
//! # Why the per-connection memory stays small
//!
//! An idle connection costs the server about 3.4 KiB of RSS (`chat-bench
//! idle --spawn-server --transport tcp --hold 35`; BENCHMARKS.md):
//!
//! - TLS runs on [`chat_net::Tls`], on rustls' unbuffered API: no TLS
//!   buffer is held while idle, and once the handshake is over rustls'
//!   connection object is gone; what is left is the two record keys and
//!   the key schedule.
//! - The session is a future written by hand, its fields boxed for its
//!   life (under 512 bytes); a quiet one sleeps without a task, held by
//!   its one waker ([`chat_net::sleep`]). Lines are read through a buffer the worker thread shares; the
//!   heap holds only an incomplete line, released when it completes.
//!   Outgoing frames are joined into one buffer per batch, freed once
//!   written. The handshake, the admission wait and the handling of each
//!   request run in boxed futures, freed when they finish.
//! - No timer per connection: one clock per server wakes the sessions for
//!   their heartbeats and idle checks.
//! - A quiet session's socket leaves tokio's reactor (whose registration
//!   is 256 bytes) and rests in the server's dorm, one epoll set of its
//!   own ([`chat_net::Dorm`]); a heartbeat is written there, and the socket
//!   comes back only for a line from the client, frames from the engine,
//!   or a write the socket did not take at once.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cert;
pub mod client;
mod error;
pub mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod line;
pub mod server;
mod session;
mod settings;
pub mod tls;
mod verify;

pub use cert::{self_signed, Fingerprint, SelfSigned};
pub use error::Error;
pub use server::serve;
pub use settings::TcpSettings;

/// The rustls this crate is built against, to build configs with.
pub use rustls;

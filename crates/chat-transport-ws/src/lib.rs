//! HTTP + WebSocket transport for [`chat_core`]: serves an [`Engine`] on
//! hyper 1.x, with optional TLS through rustls (its unbuffered API: an
//! idle TLS connection holds no buffer).
//!
//! One listener serves:
//! - `GET /ws`: the chat protocol over WebSocket, one JSON frame
//!   ([`chat_core::ClientFrame`] / [`chat_core::ServerFrame`]) per text message;
//! - the REST API under `/api/` (see [`rest`] for the routes), file
//!   uploads and downloads streamed to and from the engine's vault among
//!   them (see [`files`]);
//! - `GET /health` (liveness and store reachability, 200 or 503 with JSON)
//!   and `GET /metrics` (Prometheus text format 0.0.4; names in
//!   [`metrics`]);
//! - `GET /`: the web client, a single page embedded in the binary.
//!
//! # Example
//!
//! Serve an engine on a free port, and shut it down:
//!
//! ```
//! use chat_core::{Engine, Limits};
//! use chat_transport_ws::{serve, WsSettings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder().limits(Limits::default().fast_hashing_for_tests()).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, engine, WsSettings::default(), async {
//!     let _ = stopped.await;
//! }));
//!
//! // ... clients connect to ws://{addr}/ws and http://{addr}/api/ ...
//! # let _ = addr;
//! stop.send(()).ok();
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! With TLS, pass a rustls configuration (this crate re-exports
//! [`rustls`]): `WsSettings::default().tls(Arc::new(server_config))`.
//!
//! # WebSocket behaviour
//!
//! - The server pings a client that has been quiet for
//!   [`WsSettings::ping_interval`]; one that stays silent (no message, no
//!   pong) for [`WsSettings::idle_timeout`] is closed with `idle` (4001).
//! - A message over [`WsSettings::max_message_bytes`] is refused by the
//!   WebSocket layer before it is read: `closing` frame and close 1009.
//! - A binary message gets an `error` frame with code `bad_frame` and the
//!   connection stays usable (counted in `chat_bad_frames_total`); so does
//!   a text message that is not a valid frame.
//! - Every server-side close sends a `closing` frame first, then a Close
//!   whose code says why ([`close_code`]): 1001 at shutdown, 4000 when the
//!   client lagged (resume by `seq`), 1009 too big, 1007 invalid UTF-8.
//!   A frame that breaks the protocol (unmasked, reserved bits, unknown
//!   opcode, bad fragmentation, an oversized or fragmented control frame)
//!   closes with 1002. A client's Close is answered with its own code once
//!   the replies to its earlier requests are written; a client's ping is
//!   answered with a pong.
//!
//! # Layout
//!
//! - `server.rs`: [`serve`], the accept loop, TLS, HTTP connections and
//!   shutdown; `router.rs`: routing and `/health`. The TLS stream, the
//!   dorm where a sleeping session's socket waits and the ping clock are
//!   [`chat_net`]'s, shared with the TLS TCP transport.
//! - `ws.rs`: the upgrade and the WebSocket session; `frame.rs`: the
//!   WebSocket framing (parsing the client's frames, encoding the
//!   server's); `rest.rs`: the REST API;
//!   `api.rs`: REST request parsing (routes, percent-decoding, query,
//!   headers), no I/O; `files.rs`: streamed file uploads and downloads;
//!   `metrics.rs`: Prometheus rendering; `web.rs` and `web/`: the client.
//! - `fuzzing.rs` (feature `fuzzing` only): the request parsing and the
//!   frame decoder on arbitrary bytes, for `fuzz/fuzz_targets/http_request.rs`
//!   and `fuzz/fuzz_targets/ws_frames.rs`.
//! - [`WsSettings`]: every bound and timeout; [`Error`].
//!
//! # Why its own WebSocket framing?
//!
//! The session speaks RFC 6455 itself (`frame.rs`; the handshake is
//! hyper's upgrade). General WebSocket libraries keep a read buffer and a
//! write buffer per connection for its whole life, which made them most of
//! an idle connection's memory (`BENCHMARKS.md`: 12.6 KiB with
//! tokio-tungstenite's defaults, 5 KiB tuned). Here bytes are read into a
//! buffer each worker thread shares and parsed at once, a connection keeps
//! bytes only while a frame is incomplete, and outgoing frames are written
//! from a buffer freed once written: an idle connection holds no buffer.
//! Outgoing messages are the engine's JSON as encoded once, behind a 2-10
//! byte header, and a batch goes out in one write. The decoder is tested
//! against arbitrary input split anywhere (unit tests, proptest, the
//! `ws_frames` fuzz target) and against real clients (`tests/framing.rs`).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod error;
pub mod files;
mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http;
pub mod metrics;
pub mod rest;
mod router;
mod server;
mod settings;
mod web;
mod ws;

pub use error::Error;
pub use server::serve;
pub use settings::WsSettings;
pub use ws::close_code;

pub use rustls;

#[doc(no_inline)]
pub use chat_core::Engine;

//! A transport-agnostic, embeddable real-time chat engine.
//!
//! `chat-core` owns the protocol, the rules and the fan-out; transports
//! (WebSocket, TLS TCP), stores (SQLite, PostgreSQL) and bots (an LLM, the
//! built-in offline bot) are adapters that plug into its extension points.
//!
//! # Example
//!
//! Embed the engine with the in-memory store, connect two clients through
//! channels (no sockets), and chat:
//!
//! ```
//! use chat_core::{AdmissionPermit, ClientFrame, Codec, Cursor, Engine, Limits, Request, ServerFrame};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder()
//!     .limits(Limits::default().fast_hashing_for_tests())
//!     .build()?;
//! let (mut alice, mut alice_rx) = engine.open(engine.admit().await?);
//! let (mut bob, mut bob_rx) = engine.open(engine.admit().await?);
//!
//! let req = |frame| Request { id: None, frame };
//! for (conn, name) in [(&mut alice, "alice"), (&mut bob, "bob")] {
//!     conn.handle(req(ClientFrame::Signup { username: name.into(), password: "correct horse".into() })).await;
//! }
//! alice.handle(req(ClientFrame::CreateRoom { room: "lobby".into(), kind: "public".into(), topic: String::new() })).await;
//! bob.handle(req(ClientFrame::Join { room: "lobby".into() })).await;
//! bob.handle(req(ClientFrame::Subscribe { rooms: vec![Cursor { room: "lobby".into(), last_seq: Some(0) }] })).await;
//! alice.handle(req(ClientFrame::Send { room: "lobby".into(), body: "hello bob".into(), client_id: None })).await;
//!
//! // Bob's queue: hello, authed, room, subscribed, then the message.
//! let mut got = None;
//! while let Some(bytes) = bob_rx.try_recv() {
//!     if let ServerFrame::Message { message } = Codec::decode_server(&bytes)? {
//!         got = Some(message);
//!     }
//! }
//! let message = got.expect("bob got the message");
//! assert_eq!((message.seq, message.sender.as_str(), message.body.as_str()), (1, "alice", "hello bob"));
//! # drop(alice_rx);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`protocol`]: [`ClientFrame`], [`ServerFrame`] and the size-limited [`Codec`].
//! - [`engine`]: [`Engine`] and [`EngineBuilder`]; [`connection`]: one client's
//!   [`Connection`], where every request is checked and run.
//! - [`room`]: the [`Room`] trait (a kind's access policy) and the built-in kinds.
//! - [`session`]: the [`Session`] trait (a client's outbound side) and the
//!   bounded [`Outbox`].
//! - [`broker`]: the [`Broker`] trait and [`LocalBroker`]; the fan-out behind
//!   it orders, de-duplicates and gap-fills by `seq`.
//! - [`store`]: the [`Store`] trait and its conformance suite; [`memory`]: [`MemoryStore`].
//! - [`bot`]: the [`Bot`] trait; [`auth`]: hashing and tokens; [`limits`]: every bound.
//!
//! # Why the engine, not the transport, decides access
//!
//! Every transport and REST endpoint reaches rooms only through
//! [`Connection`], so one set of rules guards them all: a private room or a
//! direct room cannot be read through a side door.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod bot;
pub mod broker;
pub mod connection;
pub mod engine;
pub mod error;
mod fanout;
pub mod files;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod offline;
pub mod protocol;
pub mod room;
pub mod session;
pub mod store;

pub use bot::{Bot, BotRequest, BotStream};
pub use broker::{Broker, EventSink, LocalBroker, RoomEvent};
pub use connection::Connection;
pub use engine::{Engine, EngineBuilder, PendingUpload};
pub use error::{BotError, BoxError, BrokerError, BuildError, EngineError, ErrorCode, StoreError};
pub use files::FileSettings;
pub use limits::{AdmissionPermit, Limits};
pub use memory::MemoryStore;
pub use metrics::Metrics;
pub use offline::{OfflineBot, OfflineSettings};
pub use protocol::{
    BotTask, ClientFrame, Codec, Cursor, DecodeError, FileInfo, FileRef, MemberChange, MemberInfo,
    Message, MessageKind, Presence, Request, Role, RoomInfo, ServerFrame,
};
pub use room::{Action, Room};
pub use session::{Outbox, OutboxLimits, OutboxReceiver, Recv, Session, SessionId};
pub use store::{
    Appended, FileRecord, HistoryQuery, NewMessage, RoomRecord, Store, TokenRecord, UserRecord,
};

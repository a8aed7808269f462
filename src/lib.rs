//! The chat server assembled from the workspace's crates, for the
//! `chat-server` example and the end-to-end tests.
//!
//! - [`config`]: settings from flags, environment and an optional file.
//! - [`server`]: [`server::start`] wires SQLite, the bots and both
//!   transports around one engine; [`server::Running::shutdown`] stops it
//!   gracefully.
#![deny(missing_docs)]

pub mod config;
pub mod server;

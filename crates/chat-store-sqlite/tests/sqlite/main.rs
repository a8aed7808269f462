//! Integration tests of the SQLite store: group commit and failures inside a
//! batch, the idempotency window, migrations, crash safety (kill -9),
//! settings and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batching;
#[cfg(unix)]
mod crash;
mod idempotency;
mod lifecycle;
mod migrations;
mod support;

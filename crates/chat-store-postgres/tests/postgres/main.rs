//! Integration tests of the PostgreSQL store on a real, throw-away server:
//! the shared conformance suite, migrations, and two store instances on one
//! database (two nodes) appending concurrently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod concurrency;
mod conformance;
mod migrations;

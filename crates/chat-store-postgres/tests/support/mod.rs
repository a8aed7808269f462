//! Helpers of the store's integration tests: one throw-away PostgreSQL
//! server per test binary, and a fresh schema per test so tests stay
//! independent and run in parallel.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod postgres;

use std::sync::atomic::{AtomicUsize, Ordering};

use chat_core::{MessageKind, NewMessage, RoomRecord};
use chat_store_postgres::{PostgresSettings, PostgresStore};

/// Settings for a schema no other test uses, on the shared server; `None`
/// when PostgreSQL is missing (and `CI` is unset).
pub async fn fresh_settings() -> Option<PostgresSettings> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = postgres::shared().await?;
    let schema = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
    Some(
        PostgresSettings::new(server.url())
            .schema(schema)
            .pool_size(8),
    )
}

/// A store on a fresh schema; `None` when PostgreSQL is missing.
pub async fn fresh_store() -> Option<PostgresStore> {
    let settings = fresh_settings().await?;
    Some(PostgresStore::open(settings).await.unwrap())
}

pub fn room(name: &str) -> RoomRecord {
    RoomRecord {
        name: name.to_owned(),
        kind: "public".to_owned(),
        topic: String::new(),
        created_by: "alice".to_owned(),
        created_at: 1,
    }
}

pub fn msg(room: &str, sender: &str, body: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.to_owned(),
        sender: sender.to_owned(),
        body: body.to_owned(),
        kind: MessageKind::User,
        client_id: client_id.map(str::to_owned),
        ts: 1_000,
        file: None,
    }
}

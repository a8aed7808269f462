//! Fault injection: a store that fails (disk full, I/O error) turns into an
//! error for the sender and no ack: never a false ack, never a broadcast of
//! something that was not stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::{
    Appended, Engine, ErrorCode, HistoryQuery, MemoryStore, Message, NewMessage, Role, RoomRecord,
    ServerFrame, Store, StoreError, TokenRecord, UserRecord,
};
use support::{error_code, Client};

/// A MemoryStore whose appends fail while `failing` is set, like a full
/// disk.
#[derive(Default)]
struct Flaky {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait]
impl Store for Flaky {
    async fn create_user(&self, u: UserRecord) -> Result<(), StoreError> {
        self.inner.create_user(u).await
    }
    async fn user(&self, n: &str) -> Result<Option<UserRecord>, StoreError> {
        self.inner.user(n).await
    }
    async fn put_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        self.inner.put_token(t).await
    }
    async fn token(&self, h: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token(h).await
    }
    async fn delete_token(&self, h: &str) -> Result<(), StoreError> {
        self.inner.delete_token(h).await
    }
    async fn create_room(&self, r: RoomRecord, m: &[(String, Role)]) -> Result<(), StoreError> {
        self.inner.create_room(r, m).await
    }
    async fn room(&self, n: &str) -> Result<Option<RoomRecord>, StoreError> {
        self.inner.room(n).await
    }
    async fn rooms_of_kinds(&self, k: &[String], l: u32) -> Result<Vec<RoomRecord>, StoreError> {
        self.inner.rooms_of_kinds(k, l).await
    }
    async fn memberships(&self, u: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
        self.inner.memberships(u).await
    }
    async fn set_member(&self, r: &str, u: &str, role: Role) -> Result<(), StoreError> {
        self.inner.set_member(r, u, role).await
    }
    async fn remove_member(&self, r: &str, u: &str) -> Result<bool, StoreError> {
        self.inner.remove_member(r, u).await
    }
    async fn member_role(&self, r: &str, u: &str) -> Result<Option<Role>, StoreError> {
        self.inner.member_role(r, u).await
    }
    async fn members(&self, r: &str) -> Result<Vec<(String, Role)>, StoreError> {
        self.inner.members(r).await
    }
    async fn append(&self, m: NewMessage) -> Result<Appended, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other(
                "No space left on device",
            )));
        }
        self.inner.append(m).await
    }
    async fn history(&self, r: &str, q: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.inner.history(r, q).await
    }
    async fn last_seq(&self, r: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(r).await
    }
    async fn seq_at(&self, r: &str, ts: u64) -> Result<u64, StoreError> {
        self.inner.seq_at(r, ts).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_never_acks_and_never_broadcasts() {
    let store = Arc::new(Flaky::default());
    let e = Engine::builder()
        .limits(support::limits())
        .store_arc(store.clone())
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;

    alice.send("r", "stored").await;
    store.failing.store(true, Ordering::SeqCst);
    let r = alice.send("r", "lost to a full disk").await;
    assert_eq!(error_code(&r), Some(ErrorCode::StoreFailed), "{r:?}");
    // The error does not leak backend details to the client.
    let ServerFrame::Error { message, .. } = &r else {
        panic!()
    };
    assert!(!message.contains("No space"), "{message}");
    store.failing.store(false, Ordering::SeqCst);
    let ServerFrame::Ack { seq, .. } = alice.send("r", "after recovery").await else {
        panic!()
    };
    assert_eq!(seq, 2, "the failed message took no seq");

    // Bob saw exactly the stored messages, gap-free.
    let got: Vec<(u64, String)> = [bob.next_message().await, bob.next_message().await]
        .into_iter()
        .map(|m| (m.seq, m.body))
        .collect();
    assert_eq!(
        got,
        [(1, "stored".to_owned()), (2, "after recovery".to_owned())]
    );
    assert_eq!(e.metrics().store_errors.get(), 1);
}

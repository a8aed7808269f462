//! A store that fails on demand (see [`Flaky`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chat_core::{
    Appended, Engine, HistoryQuery, MemoryStore, Message, NewMessage, Role, RoomRecord, Store,
    StoreError, TokenRecord, UserRecord,
};

/// A MemoryStore whose appends fail while `failing` is set, like a full
/// disk, and always for the body [`POISON`]; it records the size of each
/// `append_many`.
#[derive(Default)]
pub struct Flaky {
    inner: MemoryStore,
    pub failing: AtomicBool,
    pub batches: Mutex<Vec<usize>>,
}

/// An engine on a [`Flaky`] store, with `alice` (who made the public room
/// `r`) and `bob` (a member, subscribed to it).
pub async fn room() -> (Arc<Flaky>, Engine, super::Client, super::Client) {
    let store = Arc::new(Flaky::default());
    let e = Engine::builder()
        .limits(super::limits())
        .store_arc(store.clone())
        .build()
        .unwrap();
    let mut alice = super::Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = super::Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    (store, e, alice, bob)
}

/// A message body whose append always fails.
pub const POISON: &str = "poison: no space left";

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
        if self.failing.load(Ordering::SeqCst) || m.body == POISON {
            return Err(StoreError::backend(std::io::Error::other(
                "No space left on device",
            )));
        }
        self.inner.append(m).await
    }
    async fn append_many(&self, ms: Vec<NewMessage>) -> Vec<Result<Appended, StoreError>> {
        self.batches.lock().unwrap().push(ms.len());
        let mut results = Vec::new();
        for m in ms {
            results.push(self.append(m).await);
        }
        results
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

//! The shared `Store` conformance suite, on a fresh file per test.

use chat_core::{
    Appended, HistoryQuery, Message, NewMessage, Role, RoomRecord, Store, StoreError, TokenRecord,
    UserRecord,
};

use crate::{SqliteSettings, SqliteStore};

/// A store in its own temporary directory, removed when the store drops.
pub(crate) struct TempStore {
    pub(crate) store: SqliteStore,
    pub(crate) _dir: tempfile::TempDir,
}

impl TempStore {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteSettings::new(dir.path().join("chat.db"))).unwrap();
        TempStore { store, _dir: dir }
    }
}

#[async_trait::async_trait]
impl Store for TempStore {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.store.create_user(user).await
    }
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.store.user(name).await
    }
    async fn put_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.store.put_token(token).await
    }
    async fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.store.token(token_hash).await
    }
    async fn delete_token(&self, token_hash: &str) -> Result<(), StoreError> {
        self.store.delete_token(token_hash).await
    }
    async fn create_room(
        &self,
        room: RoomRecord,
        members: &[(String, Role)],
    ) -> Result<(), StoreError> {
        self.store.create_room(room, members).await
    }
    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError> {
        self.store.room(name).await
    }
    async fn rooms_of_kinds(
        &self,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        self.store.rooms_of_kinds(kinds, limit).await
    }
    async fn memberships(&self, user: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
        self.store.memberships(user).await
    }
    async fn set_member(&self, room: &str, user: &str, role: Role) -> Result<(), StoreError> {
        self.store.set_member(room, user, role).await
    }
    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.store.remove_member(room, user).await
    }
    async fn member_role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
        self.store.member_role(room, user).await
    }
    async fn members(&self, room: &str) -> Result<Vec<(String, Role)>, StoreError> {
        self.store.members(room).await
    }
    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.store.append(message).await
    }
    async fn history(&self, room: &str, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.store.history(room, query).await
    }
    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        self.store.last_seq(room).await
    }
    async fn seq_at(&self, room: &str, ts: u64) -> Result<u64, StoreError> {
        self.store.seq_at(room, ts).await
    }
    async fn put_file(&self, file: chat_core::FileRecord) -> Result<(), StoreError> {
        self.store.put_file(file).await
    }
    async fn file(&self, id: &str) -> Result<Option<chat_core::FileRecord>, StoreError> {
        self.store.file(id).await
    }
    async fn files(
        &self,
        room: &str,
        limit: u32,
    ) -> Result<Vec<chat_core::FileRecord>, StoreError> {
        self.store.files(room, limit).await
    }
    async fn bytes_uploaded_by(&self, user: &str) -> Result<u64, StoreError> {
        self.store.bytes_uploaded_by(user).await
    }
    async fn set_read_marker(&self, user: &str, room: &str, seq: u64) -> Result<(), StoreError> {
        self.store.set_read_marker(user, room, seq).await
    }
    async fn read_markers(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.store.read_markers(user).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

chat_core::store_conformance_tests!(TempStore::new());

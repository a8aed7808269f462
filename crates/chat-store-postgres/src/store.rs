//! [`PostgresStore`]: the [`Store`] implementation over a bounded pool of
//! connections.

use std::sync::Arc;

use async_trait::async_trait;
use chat_core::{
    Appended, FileRecord, HistoryQuery, Message, NewMessage, Role, RoomRecord, Store, StoreError,
    TokenRecord, UserRecord,
};
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

use crate::rows::Db;
use crate::{queries, schema, writes, Error, PostgresSettings};

/// A [`Store`] over one PostgreSQL database (and schema), shared by every
/// node of a chat service. Cheap to clone: clones share the pool.
///
/// Every write is committed (with `synchronous_commit` on) before it
/// returns. Requests run on at most
/// [`pool_size`](PostgresSettings::pool_size) connections; the rest wait up
/// to [`acquire_timeout`](PostgresSettings::acquire_timeout).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    settings: PostgresSettings,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.settings.schema)
            .field("pool", &self.inner.pool.status())
            .finish_non_exhaustive()
    }
}

/// A snapshot of the pool, from [`PostgresStore::pool_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Most connections the pool opens.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections not in use.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

impl PostgresStore {
    /// Connects over plain TCP or a Unix socket (no TLS), creates the
    /// schema if needed and migrates it to
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
    ///
    /// # Errors
    ///
    /// [`StoreError::SchemaTooNew`] for a schema written by newer code (left
    /// untouched); [`StoreError::Backend`] wrapping an [`Error`] for invalid
    /// settings or a server that cannot be reached.
    pub async fn open(settings: PostgresSettings) -> Result<PostgresStore, StoreError> {
        Self::open_with_tls(settings, tokio_postgres::NoTls).await
    }

    /// [`open`](Self::open) with a TLS connector for `tokio-postgres`
    /// (e.g. from `tokio-postgres-rustls` or `postgres-native-tls`).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub async fn open_with_tls<T>(
        settings: PostgresSettings,
        tls: T,
    ) -> Result<PostgresStore, StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let config = settings.pg_config().db()?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                // A connection the server closed is noticed by its
                // connection task; checking `is_closed` costs no round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let session: Arc<str> = schema::session_sql(&settings).into();
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.acquire_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .post_create(Hook::async_fn(move |client, _| {
                let session = Arc::clone(&session);
                Box::pin(async move {
                    client
                        .batch_execute(&session)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| Error::Build(e.to_string()))
            .db()?;
        let store = PostgresStore {
            inner: Arc::new(Inner { pool, settings }),
        };
        let mut client = store.client().await?;
        let found = schema::migrate(&mut client, &store.inner.settings.schema)
            .await
            .db()?;
        tracing::debug!(
            schema = %store.inner.settings.schema,
            found,
            version = schema::SCHEMA_VERSION,
            "chat store opened"
        );
        Ok(store)
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> &PostgresSettings {
        &self.inner.settings
    }

    /// A snapshot of the connection pool.
    pub fn pool_status(&self) -> PoolStatus {
        let s = self.inner.pool.status();
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    /// A server setting as the store's connections see it
    /// (`current_setting(name)`), for diagnostics: e.g.
    /// `synchronous_commit` is `on` and `search_path` is the store's schema.
    pub async fn server_setting(&self, name: &str) -> Result<String, StoreError> {
        queries::setting(&*self.client().await?, name).await
    }

    /// Closes the pool: later requests (from any clone) fail with
    /// [`StoreError::Closed`]; connections close as their requests finish.
    pub fn close(&self) {
        self.inner.pool.close();
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner.pool.get().await.map_err(|e| match e {
            PoolError::Closed => StoreError::Closed,
            other => Error::Pool(other).into(),
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        writes::create_user(&*self.client().await?, &user).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        queries::user(&*self.client().await?, name).await
    }

    async fn put_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        writes::put_token(&*self.client().await?, &token).await
    }

    async fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        queries::token(&*self.client().await?, token_hash).await
    }

    async fn delete_token(&self, token_hash: &str) -> Result<(), StoreError> {
        writes::delete_token(&*self.client().await?, token_hash).await
    }

    async fn create_room(
        &self,
        room: RoomRecord,
        members: &[(String, Role)],
    ) -> Result<(), StoreError> {
        writes::create_room(&mut *self.client().await?, &room, members).await
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError> {
        queries::room(&*self.client().await?, name).await
    }

    async fn rooms_of_kinds(
        &self,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        queries::rooms_of_kinds(&*self.client().await?, kinds, limit).await
    }

    async fn memberships(&self, user: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
        queries::memberships(&*self.client().await?, user).await
    }

    async fn set_member(&self, room: &str, user: &str, role: Role) -> Result<(), StoreError> {
        writes::set_member(&*self.client().await?, room, user, role).await
    }

    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        writes::remove_member(&*self.client().await?, room, user).await
    }

    async fn member_role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
        queries::member_role(&*self.client().await?, room, user).await
    }

    async fn members(&self, room: &str) -> Result<Vec<(String, Role)>, StoreError> {
        queries::members(&*self.client().await?, room).await
    }

    async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        writes::append(&mut *self.client().await?, message).await
    }

    async fn history(&self, room: &str, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        queries::history(&*self.client().await?, room, query).await
    }

    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        queries::last_seq(&*self.client().await?, room).await
    }

    async fn seq_at(&self, room: &str, ts: u64) -> Result<u64, StoreError> {
        queries::seq_at(&*self.client().await?, room, ts).await
    }

    async fn put_file(&self, file: FileRecord) -> Result<(), StoreError> {
        writes::put_file(&*self.client().await?, &file).await
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        queries::file(&*self.client().await?, id).await
    }

    async fn files(&self, room: &str, limit: u32) -> Result<Vec<FileRecord>, StoreError> {
        queries::files(&*self.client().await?, room, limit).await
    }

    async fn bytes_uploaded_by(&self, user: &str) -> Result<u64, StoreError> {
        queries::bytes_uploaded_by(&*self.client().await?, user).await
    }

    async fn set_read_marker(&self, user: &str, room: &str, seq: u64) -> Result<(), StoreError> {
        writes::set_read_marker(&*self.client().await?, user, room, seq).await
    }

    async fn read_markers(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        queries::read_markers(&*self.client().await?, user).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        queries::ping(&*self.client().await?).await
    }

    /// Every write is committed before it returns: nothing to flush.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

//! The reader pool: read-only connections, each used by one blocking task at
//! a time, so reads never run on the async worker threads (invariant 7) and
//! never wait for the writer (WAL readers see the last commit).

use std::sync::Mutex;

use chat_core::StoreError;
use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::rows::Db;
use crate::{schema, Error, SqliteSettings};

/// A fixed number of read-only connections.
#[derive(Debug)]
pub(crate) struct Readers {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: a read waits here, not on a thread.
    permits: Semaphore,
    settings: SqliteSettings,
}

impl Readers {
    /// Opens `settings.readers` connections.
    pub(crate) fn open(settings: &SqliteSettings) -> Result<Self, Error> {
        let idle = (0..settings.readers)
            .map(|_| schema::open_reader(settings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Readers {
            idle: Mutex::new(idle),
            permits: Semaphore::new(settings.readers),
            settings: settings.clone(),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The lock only guards push/pop; a panic cannot leave it half-done.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a free connection in a blocking task.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let popped = self.idle().pop();
        let conn = match popped {
            Some(conn) => conn,
            // A connection is lost only when a read panicked; replace it.
            None => schema::open_reader(&self.settings).db()?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::from(Error::ReaderTask(e.to_string())))?;
        self.idle().push(conn);
        result
    }
}

//! Opening, closing, dropping, settings and unexpected data.

use chat_core::{HistoryQuery, Store, StoreError};
use chat_store_sqlite::{Error, SqliteSettings, SqliteStore};

use crate::support::{create_room, msg, open_temp};

#[test]
fn errors_are_send_sync_static() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();
}

#[test]
fn dropping_the_store_commits_and_closes_and_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(SqliteSettings::new(&path)).unwrap();
    rt.block_on(async {
        create_room(&store, "lobby").await;
        for i in 0..3 {
            store
                .append(msg("lobby", "a", &i.to_string()))
                .await
                .unwrap();
        }
    });
    // Outside the runtime, dropping waits for the writer to close the file:
    // the WAL is checkpointed and removed.
    drop(store);
    assert!(!path.with_extension("db-wal").exists());

    let store = SqliteStore::open(SqliteSettings::new(&path)).unwrap();
    rt.block_on(async {
        assert_eq!(store.last_seq("lobby").await.unwrap(), 3);
        let next = store.append(msg("lobby", "a", "3")).await.unwrap();
        assert_eq!(next.message.seq, 4);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_commits_queued_writes_then_refuses_new_ones() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    store.ping().await.unwrap();
    let s = store.clone();
    let last = tokio::spawn(async move { s.append(msg("lobby", "a", "last")).await });
    store.close().await.unwrap();
    // Queued before the close, or refused: never lost after an ack.
    let last = last.await.unwrap();
    assert!(matches!(last, Ok(_) | Err(StoreError::Closed)), "{last:?}");
    assert!(matches!(
        store.append(msg("lobby", "a", "late")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.flush().await, Err(StoreError::Closed)));
    assert!(matches!(store.ping().await, Err(StoreError::Closed)));
    // Reads go on until the store is dropped.
    let page = store
        .history("lobby", HistoryQuery::latest(10))
        .await
        .unwrap();
    assert_eq!(page.len(), usize::from(last.is_ok()));

    let reopened = SqliteStore::open_async(SqliteSettings::new(&path))
        .await
        .unwrap();
    assert_eq!(reopened.last_seq("lobby").await.unwrap(), page.len() as u64);
}

#[test]
fn settings_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = SqliteSettings::new(dir.path().join("chat.db"));
    for settings in [
        base.clone().readers(0),
        base.clone().max_batch(0),
        base.clone().queue_capacity(0),
        base.clone().commit_delay(std::time::Duration::from_secs(2)),
        base.clone().idempotency_keys(0),
        base.clone()
            .idempotency_window(std::time::Duration::from_micros(999)),
    ] {
        match SqliteStore::open(settings) {
            Err(StoreError::Backend(e)) => assert!(
                matches!(
                    e.downcast_ref::<Error>(),
                    Some(Error::InvalidSetting { .. })
                ),
                "{e}"
            ),
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_stored_value_is_an_error_not_a_panic() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "INSERT INTO messages (room_id, seq, ts, sender, kind, body)
             VALUES (1, 1, 5, 'x', 'alien', 'hi');
             INSERT INTO memberships (room_id, user, role) VALUES (1, 'eve', 'overlord');",
        )
        .unwrap();
    for result in [
        store
            .history("lobby", HistoryQuery::latest(5))
            .await
            .map(drop),
        store.member_role("lobby", "eve").await.map(drop),
    ] {
        match result {
            Err(StoreError::Backend(e)) => assert!(
                matches!(e.downcast_ref::<Error>(), Some(Error::CorruptRow { .. })),
                "{e}"
            ),
            other => panic!("expected a corrupt row error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused() {
    let (store, _dir, _path) = open_temp();
    create_room(&store, "lobby").await;
    let mut m = msg("lobby", "a", "from the far future");
    m.ts = u64::MAX;
    assert!(matches!(store.append(m).await, Err(StoreError::Backend(_))));
    // Bounds past SQLite's range still page correctly.
    store.append(msg("lobby", "a", "now")).await.unwrap();
    let q = HistoryQuery {
        before: Some(u64::MAX),
        after: None,
        limit: 5,
    };
    assert_eq!(store.history("lobby", q).await.unwrap().len(), 1);
    assert_eq!(store.seq_at("lobby", u64::MAX).await.unwrap(), 2);
}

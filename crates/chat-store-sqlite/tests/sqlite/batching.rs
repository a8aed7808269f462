//! Group commit: what one batch holds, and how failures inside it behave.

use std::collections::HashSet;

use chat_core::{HistoryQuery, NewMessage, Role, Store, StoreError, UserRecord};
use chat_store_sqlite::Error;

use crate::support::{
    create_room, msg, open_temp, poison_commits, queue, room, stall_writer, wait_until,
};

pub(crate) fn is_batch_aborted(e: &StoreError) -> bool {
    match e {
        StoreError::Backend(inner) => {
            matches!(inner.downcast_ref::<Error>(), Some(Error::BatchAborted(_)))
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_runs_everything_queued_in_one_transaction() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "busy").await;
    let (lock, plug) = stall_writer(&store, &path).await;
    let mut tasks = Vec::new();
    for i in 0..256 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.append(msg("busy", "w", &i.to_string())).await.unwrap()
        }));
    }
    wait_until("256 appends are queued", || store.metrics().queued == 256).await;
    let commits = store.metrics().commits;
    lock.release();
    plug.await.unwrap();
    let mut seqs = HashSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap().message.seq));
    }
    assert_eq!(seqs, (1..=256).collect::<HashSet<u64>>());
    let m = store.metrics();
    // The plug's batch, then all 256 appends in one.
    assert_eq!(m.commits - commits, 2, "{m:?}");
    assert_eq!(m.largest_batch, 256, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let (store, _dir, _path) = open_temp();
    create_room(&store, "busy").await;
    let before = store.metrics();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(256));
    let mut tasks = Vec::new();
    for i in 0..256 {
        let (s, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for j in 0..4 {
                s.append(msg("busy", "w", &format!("{i}-{j}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = store.metrics();
    let commits = m.commits - before.commits;
    assert_eq!(m.requests - before.requests, 1024);
    assert!(commits < 1024 / 4, "1024 appends took {commits} commits");
    assert_eq!(store.last_seq("busy").await.unwrap(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_fails_alone_and_leaves_no_trace() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    let bob = UserRecord {
        name: "bob".into(),
        password_hash: String::new(),
        created_at: 1,
    };
    store.create_user(bob.clone()).await.unwrap();
    // Make the second statement of a two-statement request fail.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_mallory BEFORE INSERT ON memberships
             WHEN NEW.user = 'mallory' BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();

    let (lock, plug) = stall_writer(&store, &path).await;
    let s = store.clone();
    let bad = queue(&store, async move {
        let members = [
            ("alice".into(), Role::Admin),
            ("mallory".into(), Role::Member),
        ];
        s.create_room(room("bad"), &members).await
    })
    .await;
    let s = store.clone();
    let one = queue(
        &store,
        async move { s.append(msg("lobby", "a", "one")).await },
    )
    .await;
    let s = store.clone();
    let dup = queue(&store, async move { s.create_user(bob).await }).await;
    let s = store.clone();
    let good = queue(&store, async move {
        s.create_room(room("good"), &[("alice".into(), Role::Admin)])
            .await
    })
    .await;
    let s = store.clone();
    let two = queue(
        &store,
        async move { s.append(msg("lobby", "a", "two")).await },
    )
    .await;
    let commits = store.metrics().commits;
    lock.release();
    plug.await.unwrap();

    assert!(matches!(bad.await.unwrap(), Err(StoreError::Backend(_))));
    assert_eq!(one.await.unwrap().unwrap().message.seq, 1);
    assert!(matches!(dup.await.unwrap(), Err(StoreError::AlreadyExists)));
    good.await.unwrap().unwrap();
    assert_eq!(two.await.unwrap().unwrap().message.seq, 2);
    assert_eq!(store.metrics().commits - commits, 2);

    // The failed request's first statement was rolled back with it.
    assert_eq!(store.room("bad").await.unwrap(), None);
    assert!(matches!(
        store.members("bad").await,
        Err(StoreError::NotFound)
    ));
    assert!(store.room("good").await.unwrap().is_some());
    assert_eq!(store.last_seq("lobby").await.unwrap(), 2);
}

/// Makes appends of the body `poison` fail after their row and index
/// entries are written (a trigger).
fn poison_appends(path: &std::path::Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_poison AFTER INSERT ON messages
             WHEN NEW.body = 'poison' BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
}

/// The bodies of a room's first messages, in order.
async fn bodies(store: &chat_store_sqlite::SqliteStore, room: &str) -> Vec<String> {
    let page = store.history(room, HistoryQuery::after(0, 100)).await;
    page.unwrap().into_iter().map(|m| m.body).collect()
}

/// Appends run without a savepoint of their own (SQLite makes each
/// statement atomic): one that fails after its row went in is undone alone,
/// takes no `seq`, and leaves no idempotency key behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_append_fails_alone_and_leaves_no_trace() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    poison_appends(&path);
    let keyed = |body: &str, client_id: &str| NewMessage {
        client_id: Some(client_id.to_owned()),
        ..msg("lobby", "a", body)
    };

    let (lock, plug) = stall_writer(&store, &path).await;
    let mut queued = Vec::new();
    for (body, client_id) in [("one", "k1"), ("poison", "k2"), ("two", "k3")] {
        let s = store.clone();
        let m = keyed(body, client_id);
        queued.push(queue(&store, async move { s.append(m).await }).await);
    }
    let commits = store.metrics().commits;
    lock.release();
    plug.await.unwrap();
    let mut results = Vec::new();
    for q in queued {
        results.push(q.await.unwrap());
    }
    assert_eq!(
        store.metrics().commits - commits,
        2,
        "the plug's batch, then ours"
    );
    assert_eq!(results[0].as_ref().unwrap().message.seq, 1);
    assert!(
        matches!(&results[1], Err(StoreError::Backend(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().message.seq, 2, "no seq taken");

    // The failed append's key was not kept: a retry is stored anew.
    let retry = store.append(keyed("cured", "k2")).await.unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.message.seq, 3);
    assert_eq!(bodies(&store, "lobby").await, ["one", "two", "cured"]);
}

/// `append_many` is one request to the writer: its messages commit
/// together, in order, and one that fails fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_many_commits_in_order_in_one_batch_and_a_failure_fails_alone() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    poison_appends(&path);
    let before = store.metrics();
    let sent = ["one", "two", "poison", "three"];
    let results = store
        .append_many(sent.iter().map(|b| msg("lobby", "a", b)).collect())
        .await;
    let seqs: Vec<Option<u64>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|a| a.message.seq))
        .collect();
    assert_eq!(seqs, [Some(1), Some(2), None, Some(3)]);
    assert!(matches!(&results[2], Err(StoreError::Backend(_))));
    let after = store.metrics();
    assert_eq!(after.commits - before.commits, 1, "one commit");
    assert_eq!(after.requests - before.requests, 4);
    assert_eq!(after.failed_requests - before.failed_requests, 1);
    assert!(store.append_many(Vec::new()).await.is_empty());
    assert_eq!(bodies(&store, "lobby").await, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_request_of_the_batch() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    store.append(msg("lobby", "a", "before")).await.unwrap();
    poison_commits(&path);

    let (lock, plug) = stall_writer(&store, &path).await;
    let mut appends = Vec::new();
    for body in ["ok1", "poison", "ok2"] {
        let s = store.clone();
        appends.push(
            queue(
                &store,
                async move { s.append(msg("lobby", "a", body)).await },
            )
            .await,
        );
    }
    let s = store.clone();
    let many = queue(&store, async move {
        let ms = vec![msg("lobby", "a", "ok3"), msg("lobby", "a", "ok4")];
        s.append_many(ms).await
    })
    .await;
    let s = store.clone();
    let carol = queue(&store, async move {
        s.create_user(UserRecord {
            name: "carol".into(),
            password_hash: String::new(),
            created_at: 1,
        })
        .await
    })
    .await;
    let s = store.clone();
    let flush = queue(&store, async move { s.flush().await }).await;
    let aborted = store.metrics().aborted_batches;
    lock.release();
    plug.await.unwrap();

    for a in appends {
        let e = a.await.unwrap().unwrap_err();
        assert!(is_batch_aborted(&e), "{e:?}");
    }
    for r in many.await.unwrap() {
        assert!(is_batch_aborted(&r.unwrap_err()));
    }
    assert!(is_batch_aborted(&carol.await.unwrap().unwrap_err()));
    assert!(is_batch_aborted(&flush.await.unwrap().unwrap_err()));
    assert_eq!(store.metrics().aborted_batches, aborted + 1);

    // No false acks: nothing of the batch is stored, and seq goes on gap-free.
    assert_eq!(store.user("carol").await.unwrap(), None);
    assert_eq!(store.last_seq("lobby").await.unwrap(), 1);
    let next = store.append(msg("lobby", "a", "after")).await.unwrap();
    assert_eq!(next.message.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_client_id_in_one_batch_is_a_duplicate() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    let (lock, plug) = stall_writer(&store, &path).await;
    let mut tasks = Vec::new();
    for body in ["first", "second"] {
        let s = store.clone();
        let mut m = msg("lobby", "alice", body);
        m.client_id = Some("c1".into());
        tasks.push(queue(&store, async move { s.append(m).await.unwrap() }).await);
    }
    lock.release();
    plug.await.unwrap();
    let first = tasks.remove(0).await.unwrap();
    let second = tasks.remove(0).await.unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.message, first.message);
    assert_eq!(store.last_seq("lobby").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_once_earlier_writes_are_committed() {
    let (store, _dir, path) = open_temp();
    create_room(&store, "lobby").await;
    let (lock, plug) = stall_writer(&store, &path).await;
    let s = store.clone();
    let append = queue(
        &store,
        async move { s.append(msg("lobby", "a", "x")).await },
    )
    .await;
    let s = store.clone();
    let flush = queue(&store, async move { s.flush().await }).await;
    lock.release();
    flush.await.unwrap().unwrap();
    // Visible to a connection of its own, outside the store.
    let count: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    plug.await.unwrap();
    append.await.unwrap().unwrap();
}

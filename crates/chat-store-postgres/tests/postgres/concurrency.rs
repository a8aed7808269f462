//! Two store instances on one database and schema, as two nodes have:
//! concurrent appends get gap-free seqs committed in seq order, and a
//! client id retried through both nodes at once is stored once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chat_core::{HistoryQuery, Role, Store};
use chat_store_postgres::PostgresStore;

use crate::support::{fresh_settings, msg, room};

/// Two stores ("nodes") on one fresh schema.
async fn two_nodes() -> Option<(PostgresStore, PostgresStore)> {
    let settings = fresh_settings().await?;
    let a = PostgresStore::open(settings.clone()).await.unwrap();
    let b = PostgresStore::open(settings).await.unwrap();
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_at_once_get_gap_free_seqs_in_commit_order() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let rooms = ["r0", "r1", "r2"];
    for r in rooms {
        a.create_room(room(r), &[("alice".into(), Role::Admin)])
            .await
            .unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    // A reader on node B never sees seq n + 1 before n.
    let reader = tokio::spawn({
        let (b, done) = (b.clone(), done.clone());
        async move {
            let mut seen = 0u64;
            let mut pages = 0;
            while !done.load(Ordering::SeqCst) || pages == 0 {
                let page = b
                    .history("r0", HistoryQuery::after(seen, 1000))
                    .await
                    .unwrap();
                for m in page {
                    assert_eq!(
                        m.seq,
                        seen + 1,
                        "a later seq was visible before an earlier one"
                    );
                    seen = m.seq;
                }
                pages += 1;
            }
            seen
        }
    });
    let mut tasks = Vec::new();
    for w in 0..16 {
        let node = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..30 {
                let r = rooms[(w + i) % rooms.len()];
                let body = format!("w{w} m{i}");
                let cid = (i % 3 == 0).then(|| format!("w{w}-{i}"));
                let appended = node
                    .append(msg(r, &format!("w{w}"), &body, cid.as_deref()))
                    .await
                    .unwrap();
                assert!(!appended.duplicate);
                acked.push((r, appended.message.seq, body));
            }
            acked
        }));
    }
    let mut by_room: HashMap<&str, BTreeMap<u64, String>> = HashMap::new();
    for t in tasks {
        for (r, seq, body) in t.await.unwrap() {
            assert!(
                by_room.entry(r).or_default().insert(seq, body).is_none(),
                "seq {seq} of {r} assigned twice"
            );
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut total = 0;
    for r in rooms {
        let acked = &by_room[r];
        let n = acked.len() as u64;
        total += n;
        assert_eq!(
            acked.keys().copied().collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>()
        );
        for node in [&a, &b] {
            assert_eq!(node.last_seq(r).await.unwrap(), n);
            let stored = node.history(r, HistoryQuery::after(0, 1000)).await.unwrap();
            let stored: BTreeMap<u64, String> =
                stored.into_iter().map(|m| (m.seq, m.body)).collect();
            assert_eq!(&stored, acked);
        }
    }
    assert_eq!(total, 16 * 30);
    let seen = reader.await.unwrap();
    assert!(seen <= by_room["r0"].len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_sent_through_both_nodes_at_once_is_stored_once() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    a.create_room(room("r"), &[]).await.unwrap();
    for i in 0..40 {
        let cid = format!("c{i}");
        let (x, y) = tokio::join!(
            a.append(msg("r", "alice", "from a", Some(&cid))),
            b.append(msg("r", "alice", "from b", Some(&cid))),
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(
            x.message, y.message,
            "both nodes answer with the one stored message"
        );
        assert!(x.duplicate != y.duplicate, "exactly one of them stored it");
        assert_eq!(x.message.seq, i + 1);
    }
    assert_eq!(a.last_seq("r").await.unwrap(), 40);
    // Another sender's equal client id is another message.
    let bob = b.append(msg("r", "bob", "mine", Some("c0"))).await.unwrap();
    assert!(!bob.duplicate);
    assert_eq!(bob.message.seq, 41);
}

//! Several nodes over Redis and PostgreSQL, as real `chat-server` processes:
//! clients spread across three nodes see the same messages in the same
//! order; a node killed with SIGKILL under load loses nothing, and its
//! clients resume on another node with nothing lost or doubled; Redis
//! restarted mid-run recovers by itself.
//!
//! redis-server and PostgreSQL come from Debian's packages
//! (`scripts/services-setup.sh`); the tests start them on free loopback
//! ports, and fail when `CI` is set and they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/chat-store-postgres/tests/support/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres;
#[path = "../crates/chat-broker-redis/tests/support/proxy.rs"]
#[allow(dead_code, unreachable_pub)]
mod proxy;
#[path = "../crates/chat-broker-redis/tests/support/redis.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use chat_core::{ClientFrame, Request, ServerFrame};
use support::{code, Client, Server};

/// Three (or `n`) nodes sharing one Redis and one PostgreSQL schema.
struct Cluster {
    nodes: Vec<Server>,
    _dirs: Vec<tempfile::TempDir>,
    redis: redis::RedisServer,
}

async fn cluster(n: usize) -> Option<Cluster> {
    let pg = postgres::shared().await?;
    cluster_via(n, pg.url()).await
}

/// A cluster whose nodes reach PostgreSQL at `pg_url`.
async fn cluster_via(n: usize, pg_url: String) -> Option<Cluster> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // The launcher polls with sleeps: keep it off the runtime's workers.
    let redis = tokio::task::spawn_blocking(redis::RedisServer::start)
        .await
        .unwrap()?;
    let schema = format!("multinode{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let files = tempfile::tempdir().unwrap();
    let args = [
        "--redis".to_owned(),
        redis.url(),
        "--postgres".to_owned(),
        pg_url,
        "--postgres-schema".to_owned(),
        schema,
        "--files-dir".to_owned(),
        files.path().to_str().unwrap().to_owned(),
    ];
    let mut dirs = vec![files];
    let mut nodes = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Server::start_with(dir.path(), &refs));
        dirs.push(dir);
    }
    Some(Cluster {
        nodes,
        _dirs: dirs,
        redis,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_room_one_order() {
    let Some(c) = cluster(3).await else { return };
    let mut alice = Client::ws(&c.nodes[0]).await;
    let mut bob = Client::tcp(&c.nodes[1]).await;
    let mut carol = Client::ws(&c.nodes[2]).await;
    alice.signup("alice").await;
    bob.signup("bob").await;
    carol.signup("carol").await;
    alice
        .ok(ClientFrame::CreateRoom {
            room: "mix".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    for cl in [&mut bob, &mut carol] {
        cl.ok(ClientFrame::Join { room: "mix".into() }).await;
    }
    for cl in [&mut alice, &mut bob, &mut carol] {
        cl.subscribe("mix", None).await;
    }
    const EACH: usize = 30;
    for i in 0..EACH {
        for (n, cl) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
            let frame = ClientFrame::Send {
                room: "mix".into(),
                body: format!("{n}:{i}"),
                client_id: None,
            };
            cl.send(&Request { id: None, frame }).await;
        }
    }
    let mut views = Vec::new();
    for cl in [&mut alice, &mut bob, &mut carol] {
        let msgs = cl.messages(3 * EACH).await;
        views.push(
            msgs.into_iter()
                .map(|m| (m.seq, m.body))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(views[0], views[1]);
    assert_eq!(views[0], views[2]);
    let seqs: Vec<u64> = views[0].iter().map(|v| v.0).collect();
    assert_eq!(seqs, (1..=(3 * EACH) as u64).collect::<Vec<_>>());
}

/// Sends `from..to` with client ids `tag-i` in windows, collecting acks,
/// until the connection dies; returns the acks.
async fn burst(c: &mut Client, tag: &str, from: u32, to: u32) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    let mut i = from;
    while i < to {
        let end = (i + 25).min(to);
        for k in i..end {
            let frame = ClientFrame::Send {
                room: "load".into(),
                body: format!("{tag}-{k}"),
                client_id: Some(format!("{tag}-{k}")),
            };
            c.send(&Request { id: None, frame }).await;
        }
        let mut got = 0;
        while got < end - i {
            match c.recv().await {
                Some(ServerFrame::Ack {
                    seq,
                    client_id: Some(cid),
                    ..
                }) => {
                    acked.insert(cid, seq);
                    got += 1;
                }
                Some(_) => {}
                None => return acked,
            }
        }
        i = end;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_its_clients_resume_elsewhere() {
    let Some(mut c) = cluster(3).await else {
        return;
    };
    let mut admin = Client::ws(&c.nodes[0]).await;
    admin.signup("admin").await;
    admin
        .ok(ClientFrame::CreateRoom {
            room: "load".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    // A reader on the node that will die, and one on a survivor.
    let mut doomed_reader = Client::ws(&c.nodes[1]).await;
    let doomed_token = doomed_reader.signup("doomed").await;
    doomed_reader
        .ok(ClientFrame::Join {
            room: "load".into(),
        })
        .await;
    doomed_reader.subscribe("load", Some(0)).await;
    let mut survivor = Client::tcp(&c.nodes[2]).await;
    survivor.signup("survivor").await;
    survivor
        .ok(ClientFrame::Join {
            room: "load".into(),
        })
        .await;
    survivor.subscribe("load", Some(0)).await;

    // Senders on node 0 (survives) and node 1 (killed).
    let mut s0 = Client::ws(&c.nodes[0]).await;
    s0.signup("s0").await;
    s0.ok(ClientFrame::Join {
        room: "load".into(),
    })
    .await;
    let mut s1 = Client::tcp(&c.nodes[1]).await;
    let s1_token = s1.signup("s1").await;
    s1.ok(ClientFrame::Join {
        room: "load".into(),
    })
    .await;
    let t0 = tokio::spawn(async move { burst(&mut s0, "a", 0, 400).await });
    let t1 = tokio::spawn(async move { burst(&mut s1, "b", 0, 400).await });

    // Kill node 1 once the room is well under way.
    let mut seen_doomed = Vec::new();
    while seen_doomed.len() < 150 {
        seen_doomed.extend(doomed_reader.messages(1).await.into_iter().map(|m| m.seq));
    }
    c.nodes[1].kill9();
    let acked_a = t0.await.unwrap();
    let acked_b = t1.await.unwrap();
    assert_eq!(acked_a.len(), 400, "node 0's sender is unaffected");
    assert!(acked_b.len() < 400, "node 1 died mid-burst");

    // node 1's sender moves to node 2 and resends everything not acked,
    // with the same client ids: retries of messages that did land are
    // recognised, none is stored twice.
    let mut s1 = Client::ws(&c.nodes[2]).await;
    s1.auth(&s1_token).await;
    let mut acked_b2 = BTreeMap::new();
    for k in 0..400u32 {
        let cid = format!("b-{k}");
        if acked_b.contains_key(&cid) {
            continue;
        }
        let r = s1
            .ok(ClientFrame::Send {
                room: "load".into(),
                body: cid.clone(),
                client_id: Some(cid.clone()),
            })
            .await;
        let ServerFrame::Ack { seq, .. } = r else {
            panic!("{r:?}")
        };
        acked_b2.insert(cid, seq);
    }
    let total = 800usize;

    // The reader of the dead node resumes on node 0 from its last seq.
    let last = *seen_doomed.last().unwrap();
    let mut resumed = Client::ws(&c.nodes[0]).await;
    resumed.auth(&doomed_token).await;
    resumed.subscribe("load", Some(last)).await;
    let rest: Vec<u64> = resumed
        .messages(total - last as usize)
        .await
        .into_iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(rest, ((last + 1)..=total as u64).collect::<Vec<_>>());

    // The survivor saw everything once, in order; history agrees, and
    // every acked message is at its seq.
    let seen: Vec<_> = survivor.messages(total).await;
    let seqs: Vec<u64> = seen.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    let by_seq: HashMap<u64, &str> = seen.iter().map(|m| (m.seq, m.body.as_str())).collect();
    for (cid, seq) in acked_a.iter().chain(&acked_b).chain(&acked_b2) {
        assert_eq!(by_seq.get(seq).copied(), Some(cid.as_str()));
    }
    let mut bodies: Vec<&str> = by_seq.values().copied().collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), total, "a message was stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_recovers_by_itself() {
    let Some(mut c) = cluster(2).await else {
        return;
    };
    let mut alice = Client::ws(&c.nodes[0]).await;
    alice.signup("alice").await;
    alice
        .ok(ClientFrame::CreateRoom {
            room: "r".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    let mut bob = Client::tcp(&c.nodes[1]).await;
    bob.signup("bob").await;
    bob.ok(ClientFrame::Join { room: "r".into() }).await;
    bob.subscribe("r", None).await;
    alice
        .ok(ClientFrame::Send {
            room: "r".into(),
            body: "before".into(),
            client_id: None,
        })
        .await;
    assert_eq!(bob.messages(1).await[0].seq, 1);

    c.redis.stop();
    // Stored and acknowledged while Redis is down.
    for i in 0..5 {
        alice
            .ok(ClientFrame::Send {
                room: "r".into(),
                body: format!("during {i}"),
                client_id: None,
            })
            .await;
    }
    tokio::task::block_in_place(|| c.redis.restart());
    alice
        .ok(ClientFrame::Send {
            room: "r".into(),
            body: "after".into(),
            client_id: None,
        })
        .await;
    let got: Vec<(u64, String)> = bob
        .messages(6)
        .await
        .into_iter()
        .map(|m| (m.seq, m.body))
        .collect();
    let expected: Vec<(u64, String)> = (2..=7)
        .map(|s| {
            (
                s,
                if s == 7 {
                    "after".to_owned()
                } else {
                    format!("during {}", s - 2)
                },
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_means_errors_never_false_acks_and_recovery_by_itself() {
    let Some(pg) = postgres::shared().await else {
        return;
    };
    // The nodes reach PostgreSQL through a proxy the test can cut.
    let proxy = proxy::Proxy::start(format!("127.0.0.1:{}", pg.port()).parse().unwrap()).await;
    let url = format!("postgres://postgres@{}/chat", proxy.addr());
    let Some(c) = cluster_via(2, url).await else {
        return;
    };
    let mut alice = Client::ws(&c.nodes[0]).await;
    alice.signup("alice").await;
    alice
        .ok(ClientFrame::CreateRoom {
            room: "r".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    let mut bob = Client::tcp(&c.nodes[1]).await;
    bob.signup("bob").await;
    bob.ok(ClientFrame::Join { room: "r".into() }).await;
    bob.subscribe("r", None).await;
    alice
        .ok(ClientFrame::Send {
            room: "r".into(),
            body: "before".into(),
            client_id: None,
        })
        .await;
    assert_eq!(bob.messages(1).await[0].body, "before");

    proxy.cut();
    // While the database is gone: an error for each send, never an ack.
    for i in 0..3 {
        let r = alice
            .call(ClientFrame::Send {
                room: "r".into(),
                body: format!("lost {i}"),
                client_id: None,
            })
            .await;
        assert_eq!(code(&r), Some(chat_core::ErrorCode::StoreFailed), "{r:?}");
    }
    // The node itself keeps answering.
    assert!(matches!(
        alice.call(ClientFrame::Ping).await,
        ServerFrame::Pong { .. }
    ));

    proxy.restore();
    // The pool reconnects by itself; retry (with one client id) until the
    // send is acknowledged.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let seq = loop {
        let r = alice
            .call(ClientFrame::Send {
                room: "r".into(),
                body: "after".into(),
                client_id: Some("after-1".into()),
            })
            .await;
        if let ServerFrame::Ack { seq, .. } = r {
            break seq;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(seq, 2, "nothing from the outage was stored");
    let got = bob.messages(1).await;
    assert_eq!((got[0].seq, got[0].body.as_str()), (2, "after"));
}

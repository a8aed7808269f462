//! Two engines ("nodes") sharing one store, each with its own broker on one
//! real `redis-server`: clients on either node see the same messages in the
//! same order, exactly once, across a Redis restart and across one node
//! being cut off from Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chat_broker_redis::{RedisBroker, RedisSettings};
use chat_core::{Broker, Engine, MemoryStore, Message, RoomEvent, Store};
use support::client::{limits, Client};
use support::proxy::Proxy;
use support::redis::RedisServer;
use support::wait_until;

/// Fast reconnects and health checks, so the tests run quickly.
fn settings(url: &str) -> RedisSettings {
    RedisSettings::new(url)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .ping_interval(Duration::from_millis(200))
        .publish_timeout(Duration::from_millis(500))
}

struct Node {
    engine: Engine,
    broker: Arc<RedisBroker>,
}

async fn node(store: &Arc<dyn Store>, url: &str) -> Node {
    let broker = Arc::new(RedisBroker::connect(settings(url)).await.unwrap());
    let engine = Engine::builder()
        .limits(limits())
        .store_arc(store.clone())
        .broker(broker.clone())
        .build()
        .unwrap();
    Node { engine, broker }
}

/// A room "r" with a sender and a watcher subscribed on each node.
struct Room {
    alice: Client,
    bob: Client,
    watch_a: Client,
    watch_b: Client,
}

async fn room(a: &Node, b: &Node) -> Room {
    let mut alice = Client::signup(&a.engine, "alice").await;
    alice.create("r").await;
    let mut bob = Client::signup(&b.engine, "bob").await;
    bob.join("r").await;
    let mut watch_a = Client::signup(&a.engine, "wa").await;
    let mut watch_b = Client::signup(&b.engine, "wb").await;
    for w in [&mut watch_a, &mut watch_b] {
        w.join("r").await;
        w.subscribe("r").await;
    }
    Room {
        alice,
        bob,
        watch_a,
        watch_b,
    }
}

fn summary(msgs: &[Message]) -> Vec<(u64, String, String)> {
    msgs.iter()
        .map(|m| (m.seq, m.sender.clone(), m.body.clone()))
        .collect()
}

/// Both watchers get messages `from..=to`, in order, identical.
async fn expect_same(r: &mut Room, from: u64, to: u64) -> Vec<(u64, String, String)> {
    let n = (to - from + 1) as usize;
    let a = summary(&r.watch_a.messages(n).await);
    let b = summary(&r.watch_b.messages(n).await);
    let seqs: Vec<u64> = a.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (from..=to).collect::<Vec<_>>(), "node A order");
    assert_eq!(a, b, "nodes A and B disagree");
    a
}

/// Sends one more message and checks it is the next thing both watchers
/// get: nothing was delivered twice before it.
async fn expect_nothing_extra(r: &mut Room, next: u64) {
    assert_eq!(r.alice.send("r", "end").await, next);
    for w in [&mut r.watch_a, &mut r.watch_b] {
        let m = w.next_message().await;
        assert_eq!((m.seq, m.body.as_str()), (next, "end"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_see_the_same_messages_in_the_same_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (a, b) = (
        node(&store, &redis.url()).await,
        node(&store, &redis.url()).await,
    );
    let mut r = room(&a, &b).await;

    // Both nodes send at once.
    let (mut alice, mut bob) = (r.alice, r.bob);
    let send_a = tokio::spawn(async move {
        for i in 0..50 {
            alice.send("r", &format!("a{i}")).await;
        }
        alice
    });
    let send_b = tokio::spawn(async move {
        for i in 0..50 {
            bob.send("r", &format!("b{i}")).await;
        }
        bob
    });
    (r.alice, r.bob) = (send_a.await.unwrap(), send_b.await.unwrap());

    let got = expect_same(&mut r, 1, 100).await;
    // Each sender's messages in its own order.
    for who in ["alice", "bob"] {
        let bodies: Vec<&str> = got
            .iter()
            .filter(|m| m.1 == who)
            .map(|m| m.2.as_str())
            .collect();
        let prefix = &who[..1];
        let want: Vec<String> = (0..50).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(bodies, want);
    }
    expect_nothing_extra(&mut r, 101).await;
    // The remote half went through Redis.
    assert!(a.broker.metrics().delivered >= 50);
    assert!(b.broker.metrics().delivered >= 50);
    assert_eq!(a.broker.metrics().decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_recovers_by_itself_after_redis_restarts() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (a, b) = (
        node(&store, &redis.url()).await,
        node(&store, &redis.url()).await,
    );
    let mut r = room(&a, &b).await;
    for i in 1..=4 {
        let c = if i % 2 == 0 { &mut r.bob } else { &mut r.alice };
        assert_eq!(c.send("r", &format!("before {i}")).await, i);
    }
    expect_same(&mut r, 1, 4).await;

    redis.stop();
    wait_until("both brokers notice", Duration::from_secs(10), || {
        !a.broker.is_connected() && !b.broker.is_connected()
    })
    .await;
    // Publishing fails fast; messages are still stored and acked.
    let started = tokio::time::Instant::now();
    let err = a
        .broker
        .publish(RoomEvent::ephemeral(
            "elsewhere",
            bytes::Bytes::from_static(b"{}"),
        ))
        .await;
    assert!(err.is_err());
    assert!(started.elapsed() < Duration::from_millis(200));
    for i in 5..=10 {
        let c = if i % 2 == 0 { &mut r.bob } else { &mut r.alice };
        let started = tokio::time::Instant::now();
        assert_eq!(c.send("r", &format!("during {i}")).await, i);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "ack took {:?}",
            started.elapsed()
        );
    }

    redis.restart();
    // Nothing else is sent: the resync after reconnecting brings the rest.
    expect_same(&mut r, 5, 10).await;
    assert!(a.broker.wait_connected(Duration::from_secs(10)).await);
    assert!(b.broker.wait_connected(Duration::from_secs(10)).await);
    for i in 11..=14 {
        let c = if i % 2 == 0 { &mut r.bob } else { &mut r.alice };
        assert_eq!(c.send("r", &format!("after {i}")).await, i);
    }
    expect_same(&mut r, 11, 14).await;
    expect_nothing_extra(&mut r, 15).await;
    assert!(a.broker.metrics().connects >= 2);
    assert!(a.broker.metrics().publish_failures >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_makes_the_others_resync() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // A reaches Redis through the proxy, B directly.
    let (a, b) = (
        node(&store, &proxy.url()).await,
        node(&store, &redis.url()).await,
    );
    let mut r = room(&a, &b).await;
    assert_eq!(r.alice.send("r", "one").await, 1);
    expect_same(&mut r, 1, 1).await;

    proxy.cut();
    wait_until("A notices", Duration::from_secs(10), || {
        !a.broker.is_connected()
    })
    .await;
    assert!(b.broker.is_connected());
    for (i, body) in [(2, "two"), (3, "three")] {
        assert_eq!(r.alice.send("r", body).await, i);
    }
    // A's own subscriber is served locally meanwhile.
    let local = r.watch_a.messages(2).await;
    assert_eq!(local.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);

    proxy.restore();
    // No later message reveals the gap to B: A's resync notice does.
    let remote = r.watch_b.messages(2).await;
    assert_eq!(summary(&remote), summary(&local));
    assert!(b.broker.metrics().resync_notices >= 1);
    expect_nothing_extra(&mut r, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_is_counted_and_skipped() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (a, b) = (
        node(&store, &redis.url()).await,
        node(&store, &redis.url()).await,
    );
    let mut r = room(&a, &b).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for junk in [&b"\xffjunk"[..], b"", &[1, 0x80, 0, 0]] {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(b.broker.channel())
            .arg(junk)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(receivers, 2);
    }
    assert_eq!(r.alice.send("r", "still fine").await, 1);
    expect_same(&mut r, 1, 1).await;
    wait_until("B counts the junk", Duration::from_secs(5), || {
        b.broker.metrics().decode_errors == 3
    })
    .await;
    assert!(b.broker.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_found_by_health_checks() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let quick = settings(&proxy.url())
        .ping_interval(Duration::from_millis(100))
        .response_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300));
    let broker = Arc::new(RedisBroker::connect(quick).await.unwrap());
    let engine = Engine::builder()
        .limits(limits())
        .store_arc(store.clone())
        .broker(broker.clone())
        .build()
        .unwrap();
    let a = Node { engine, broker };
    let b = node(&store, &redis.url()).await;
    let mut r = room(&a, &b).await;
    assert_eq!(r.alice.send("r", "one").await, 1);
    expect_same(&mut r, 1, 1).await;

    // Nothing is closed: only an unanswered PING reveals the partition.
    proxy.freeze();
    wait_until("A's health check fails", Duration::from_secs(10), || {
        !a.broker.is_connected()
    })
    .await;
    assert_eq!(r.alice.send("r", "two").await, 2);
    proxy.thaw();
    assert!(a.broker.wait_connected(Duration::from_secs(10)).await);
    let remote = r.watch_b.messages(1).await;
    assert_eq!((remote[0].seq, remote[0].body.as_str()), (2, "two"));
    assert_eq!(r.watch_a.next_message().await.seq, 2);
    expect_nothing_extra(&mut r, 3).await;
    assert!(a.broker.metrics().disconnects >= 1);
    assert_eq!(b.broker.metrics().disconnects, 0);
}

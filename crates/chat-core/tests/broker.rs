//! Invariant 2 when the broker misbehaves: events that arrive out of order
//! are re-ordered, and events that never arrive are filled from the store,
//! so every subscriber still sees every message once, in `seq` order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chat_core::session::Full;
use chat_core::{
    Broker, BrokerError, Engine, ErrorCode, EventSink, Outbox, OutboxLimits, RoomEvent,
    ServerFrame, Session, SessionId,
};
use support::Client;

/// Loses the events whose seq is in `drop`, and holds back those in `hold`
/// until the next stored message's event has gone through.
#[derive(Default)]
struct Lossy {
    sink: Mutex<Option<Arc<dyn EventSink>>>,
    drop: HashSet<u64>,
    hold: HashSet<u64>,
    held: Mutex<Vec<RoomEvent>>,
}

#[async_trait]
impl Broker for Lossy {
    fn attach(&self, sink: Arc<dyn EventSink>) {
        *self.sink.lock().unwrap() = Some(sink);
    }
    async fn publish(&self, event: RoomEvent) -> Result<(), BrokerError> {
        let sink = self.sink.lock().unwrap().clone().unwrap();
        match event.seq {
            Some(s) if self.drop.contains(&s) => {}
            Some(s) if self.hold.contains(&s) => self.held.lock().unwrap().push(event),
            Some(_) => {
                sink.deliver(event);
                let held: Vec<_> = self.held.lock().unwrap().drain(..).collect();
                for e in held {
                    sink.deliver(e);
                }
            }
            None => sink.deliver(event),
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_reordered_events_still_arrive_once_in_order() {
    let broker = Arc::new(Lossy {
        drop: [3, 7, 8].into(),
        hold: [5, 12].into(),
        ..Lossy::default()
    });
    let e = Engine::builder()
        .limits(support::limits().gap_timeout(std::time::Duration::from_millis(20)))
        .broker(broker)
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    for i in 1..=15 {
        alice.send("r", &format!("m{i}")).await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < 15 {
        let m = bob.next_message().await;
        assert_eq!(m.body, format!("m{}", m.seq));
        seqs.push(m.seq);
    }
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    assert_eq!(e.metrics().gap_filled.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_event_is_recovered_by_resync() {
    let broker = Arc::new(Lossy {
        drop: [4, 5].into(),
        ..Lossy::default()
    });
    let e = Engine::builder()
        .limits(support::limits())
        .broker(broker.clone())
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    for i in 1..=5 {
        alice.send("r", &format!("m{i}")).await;
    }
    for i in 1..=3 {
        assert_eq!(bob.next_message().await.seq, i);
    }
    // Nothing after seq 5 reveals the gap; a reconnecting broker resyncs.
    let sink = broker.sink.lock().unwrap().clone().unwrap();
    sink.resync();
    assert_eq!(bob.next_message().await.seq, 4);
    assert_eq!(bob.next_message().await.seq, 5);
    // A second resync finds nothing new and delivers no duplicate.
    sink.resync();
    alice.send("r", "m6").await;
    assert_eq!(bob.next_message().await.seq, 6);
}

/// Regression (found by `chat-bench churn`): a subscriber resuming while a
/// stored message's event is still on its way must not make the room skip
/// that event for the subscribers already live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_reads_ahead_of_the_broker_skips_nothing_for_others() {
    // The event for seq 3 is held back until seq 4 has gone through: the
    // store has 3 before the fan-out hears of it.
    let broker = Arc::new(Lossy {
        hold: [3].into(),
        ..Lossy::default()
    });
    let e = Engine::builder()
        .limits(support::limits())
        .broker(broker)
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    let mut carol = Client::signup(&e, "carol").await;
    carol.join("r").await;
    for i in 1..=3 {
        alice.send("r", &format!("m{i}")).await;
    }
    // Carol resumes from 0: her replay reads 1..=3 from the store, while the
    // event of 3 is still on its way.
    carol.subscribe("r", Some(0)).await;
    alice.send("r", "m4").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(bob.next_message().await.seq);
    }
    assert_eq!(got, [1, 2, 3, 4], "bob, live all along, lost a message");
    let mut carols = Vec::new();
    for _ in 0..4 {
        carols.push(carol.next_message().await.seq);
    }
    assert_eq!(carols, [1, 2, 3, 4]);
}

/// A session whose next `writable` wait (the engine's way to pace a
/// subscriber's replay) tells the test, then holds until the test lets it
/// go: a window in which the test publishes.
struct Paused {
    inner: Arc<dyn Session>,
    parked: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait]
impl Session for Paused {
    fn id(&self) -> SessionId {
        self.inner.id()
    }
    fn deliver(&self, frame: Bytes) -> Result<(), Full> {
        self.inner.deliver(frame)
    }
    fn deliver_reply(&self, frame: Bytes) -> Result<(), Full> {
        self.inner.deliver_reply(frame)
    }
    async fn writable(&self) {
        let parked = self.parked.lock().unwrap().take();
        if let Some(parked) = parked {
            let _ = parked.send(());
            let release = self.release.lock().unwrap().take();
            if let Some(release) = release {
                let _ = release.await;
            }
        }
        self.inner.writable().await;
    }
    fn close(&self, reason: ErrorCode) {
        self.inner.close(reason);
    }
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Regression (found by `chat-bench churn --transport wss`): `subscribed`
/// marks where the replay ends, so no live message may come before it.
/// The engine once queued the reply after a wait for room in the queue,
/// and a message published in that wait went out first (seq 3 before
/// `subscribed` with `last_seq` 2). The test publishes in the first such
/// wait after the subscription; without one, right after the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_message_comes_before_subscribed() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    alice.send("r", "m1").await;
    alice.send("r", "m2").await;
    let (outbox, rx) = Outbox::new(OutboxLimits {
        max_frames: 1024,
        max_bytes: 1 << 20,
    });
    let (parked_tx, parked_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    let session = Arc::new(Paused {
        inner: outbox.session(),
        parked: Mutex::new(None),
        release: Mutex::new(Some(release_rx)),
    });
    let mut bob = Client::signup_with(&e, "bob", session.clone(), rx).await;
    bob.join("r").await;
    // Resuming at the end of the room: nothing to replay.
    *session.parked.lock().unwrap() = Some(parked_tx);
    let publish = async {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), parked_rx).await;
        alice.send("r", "m3").await;
        let _ = release_tx.send(());
    };
    let (reply, ()) = tokio::join!(bob.subscribe("r", Some(2)), publish);
    let ServerFrame::Subscribed { last_seq, .. } = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(last_seq, 2);
    let early: Vec<u64> = bob
        .backlog
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect();
    assert!(early.is_empty(), "messages before subscribed: {early:?}");
    assert_eq!(bob.next_message().await.seq, 3);
}

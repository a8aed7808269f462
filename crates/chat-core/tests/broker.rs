//! Invariant 2 when the broker misbehaves: events that arrive out of order
//! are re-ordered, and events that never arrive are filled from the store,
//! so every subscriber still sees every message once, in `seq` order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chat_core::{Broker, BrokerError, Engine, EventSink, RoomEvent};
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

//! Invariants 2, 3 and 4: per-room total order, resume by seq, and a slow
//! consumer that never slows a room.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chat_core::{ClientFrame, Engine, ErrorCode, ServerFrame};
use support::{error_code, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_every_subscriber_sees_every_message_once_in_order() {
    const SENDERS: usize = 8;
    const PER_SENDER: usize = 50;
    const SUBSCRIBERS: usize = 6;
    let e = support::engine();
    let mut admin = Client::signup(&e, "admin").await;
    admin.create("busy", "public").await;

    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut c = Client::signup(&e, &format!("sub{i}")).await;
        c.join("busy").await;
        assert!(matches!(
            c.subscribe("busy", None).await,
            ServerFrame::Subscribed { .. }
        ));
        subs.push(c);
    }
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while seqs.len() < SENDERS * PER_SENDER {
                    seqs.push(c.next_message().await.seq);
                }
                seqs
            })
        })
        .collect();

    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let e = e.clone();
        senders.push(tokio::spawn(async move {
            let mut c = Client::signup(&e, &format!("sender{s}")).await;
            c.join("busy").await;
            for i in 0..PER_SENDER {
                let r = c.send("busy", &format!("{s}-{i}")).await;
                assert!(matches!(r, ServerFrame::Ack { .. }), "{r:?}");
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let expected: Vec<u64> = (1..=(SENDERS * PER_SENDER) as u64).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), expected, "gap, duplicate or reorder");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_told_lagged_and_nobody_waits() {
    let e = Engine::builder()
        .limits(support::limits().max_queue_frames(16))
        .build()
        .unwrap();
    let mut admin = Client::signup(&e, "admin").await;
    admin.create("room", "public").await;
    let mut fast = Client::signup(&e, "fast").await;
    fast.join("room").await;
    fast.subscribe("room", None).await;
    let mut slow = Client::signup(&e, "slow").await;
    slow.join("room").await;
    slow.subscribe("room", None).await;

    // `slow` never reads: its 16-frame queue fills. `fast` reads each
    // message as it comes, within a deadline that a blocked room would miss.
    const N: u64 = 200;
    for i in 1..=N {
        admin.send("room", &format!("m{i}")).await;
        let m = tokio::time::timeout(Duration::from_secs(5), fast.next_message())
            .await
            .expect("the fast reader was held up");
        assert_eq!(m.seq, i);
    }
    assert_eq!(slow.rx.closed(), Some(ErrorCode::Lagged));
    assert_eq!(e.metrics().lagged.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_gets_exactly_the_missed_messages_then_live() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    for i in 1..=10 {
        alice.send("r", &format!("m{i}")).await;
    }
    // Bob saw up to seq 4, then reconnects while alice keeps sending.
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    let sender = {
        let e = e.clone();
        tokio::spawn(async move {
            let mut carol = Client::signup(&e, "carol").await;
            carol.join("r").await;
            for i in 11..=600 {
                carol.send("r", &format!("m{i}")).await;
            }
        })
    };
    let r = bob.subscribe("r", Some(4)).await;
    assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    let mut seqs = Vec::new();
    while seqs.len() < 596 {
        let m = bob.next_message().await;
        assert_eq!(m.body, format!("m{}", m.seq));
        seqs.push(m.seq);
    }
    sender.await.unwrap();
    assert_eq!(seqs, (5..=600).collect::<Vec<_>>());
    // Nothing more, no duplicates pending.
    let r = bob.call(ClientFrame::Ping).await;
    assert!(matches!(r, ServerFrame::Pong { .. }));
    assert!(bob
        .backlog
        .iter()
        .all(|f| !matches!(f, ServerFrame::Message { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_paces_a_replay_larger_than_the_queue() {
    let e = Engine::builder()
        .limits(support::limits().max_queue_frames(8))
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    for i in 1..=100 {
        alice.send("r", &format!("m{i}")).await;
    }
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    // The replay of 100 through an 8-frame queue waits for bob to read
    // instead of lagging him out.
    let Client {
        mut conn, mut rx, ..
    } = bob;
    let subscribing = tokio::spawn(async move {
        conn.handle(chat_core::Request {
            id: Some(99),
            frame: ClientFrame::Subscribe {
                rooms: vec![chat_core::Cursor {
                    room: "r".into(),
                    last_seq: Some(0),
                }],
            },
        })
        .await;
        conn
    });
    let mut seqs = Vec::new();
    let mut subscribed = None;
    while subscribed.is_none() {
        let mut buf = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv_many(&mut buf, 4)).await;
        assert_eq!(got.expect("replay stalled"), chat_core::Recv::Frames);
        for bytes in buf {
            match chat_core::Codec::decode_server(&bytes).unwrap() {
                ServerFrame::Message { message } => seqs.push(message.seq),
                ServerFrame::Subscribed { last_seq, .. } => subscribed = Some(last_seq),
                _ => {}
            }
        }
    }
    let _conn = subscribing.await.unwrap();
    assert_eq!(subscribed, Some(100));
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert!(rx.closed().is_none());
}

#[tokio::test]
async fn idempotent_send_stores_once() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let send = |body: &str| ClientFrame::Send {
        room: "r".into(),
        body: body.into(),
        client_id: Some("c-1".into()),
    };
    let ServerFrame::Ack {
        seq: first,
        duplicate: false,
        ..
    } = alice.call(send("hello")).await
    else {
        panic!()
    };
    let ServerFrame::Ack {
        seq: again,
        duplicate: true,
        ..
    } = alice.call(send("hello")).await
    else {
        panic!()
    };
    assert_eq!(first, again);
    // Another user's identical client id is another message; it cannot
    // overwrite alice's.
    let mut mallory = Client::signup(&e, "mallory").await;
    mallory.join("r").await;
    let ServerFrame::Ack {
        seq,
        duplicate: false,
        ..
    } = mallory.call(send("overwritten")).await
    else {
        panic!()
    };
    assert_eq!(seq, 2);
    let ServerFrame::History { messages, .. } = alice
        .call(ClientFrame::History {
            room: "r".into(),
            before: None,
            after: None,
            limit: None,
        })
        .await
    else {
        panic!()
    };
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].body, "hello");
}

#[tokio::test]
async fn limits_give_typed_errors() {
    let e = Engine::builder()
        .limits(
            support::limits()
                .max_message_bytes(10)
                .rate_burst(3)
                .rate_messages(1),
        )
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let r = alice.send("r", "this is far too long").await;
    assert_eq!(error_code(&r), Some(ErrorCode::MessageTooLarge));
    let r = alice.send("r", "   ").await;
    assert_eq!(error_code(&r), Some(ErrorCode::Invalid));
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(error_code(&alice.send("r", "hi").await));
    }
    // Refused messages cost no token: the burst of 3 passes, 2 are limited.
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 3, "{codes:?}");
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Some(ErrorCode::RateLimited))
            .count(),
        2
    );
    // Bad frames get an error and the connection stays usable.
    alice.conn.handle_frame(b"{not json").await;
    assert_eq!(error_code(&alice.next().await), Some(ErrorCode::BadFrame));
    alice.conn.handle_frame(&vec![b' '; 70_000]).await;
    assert_eq!(
        error_code(&alice.next().await),
        Some(ErrorCode::FrameTooLarge)
    );
    assert!(matches!(
        alice.call(ClientFrame::Ping).await,
        ServerFrame::Pong { .. }
    ));
}

#[tokio::test]
async fn history_pages_with_has_more() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    for i in 1..=25 {
        alice.send("r", &format!("m{i}")).await;
    }
    let page = |before, after, limit| ClientFrame::History {
        room: "r".into(),
        before,
        after,
        limit,
    };
    let ServerFrame::History {
        messages, has_more, ..
    } = alice.call(page(None, None, Some(10))).await
    else {
        panic!()
    };
    assert_eq!((messages[0].seq, messages[9].seq, has_more), (16, 25, true));
    let ServerFrame::History {
        messages, has_more, ..
    } = alice.call(page(Some(6), None, Some(10))).await
    else {
        panic!()
    };
    assert_eq!((messages.len(), has_more), (5, false));
    let ServerFrame::History {
        messages, has_more, ..
    } = alice.call(page(None, Some(20), Some(3))).await
    else {
        panic!()
    };
    assert_eq!((messages[0].seq, messages.len(), has_more), (21, 3, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_tells_every_session() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    let mut bob = Client::signup(&e, "bob").await;
    e.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(alice.rx.closed(), Some(ErrorCode::ShuttingDown));
    assert_eq!(bob.rx.closed(), Some(ErrorCode::ShuttingDown));
    assert_eq!(e.admit().await.unwrap_err().code(), ErrorCode::ShuttingDown);
    drop(alice.call(ClientFrame::Ping));
    drop(bob.call(ClientFrame::Ping));
}

#[tokio::test]
async fn admission_refuses_with_server_busy() {
    let e = Engine::builder()
        .limits(
            support::limits()
                .max_sessions(2)
                .admission_queue(0)
                .admission_wait(Duration::from_millis(10)),
        )
        .build()
        .unwrap();
    let _a = Client::connect(&e).await;
    let b = Client::connect(&e).await;
    let err = e.admit().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServerBusy);
    drop(b);
    assert!(e.admit().await.is_ok(), "a slot frees when a client leaves");
}

/// Regression (flaked in CI): events buffered during a replay through a
/// small queue must wait for room, not lag the client out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_during_a_paced_replay_wait_for_room() {
    let e = Engine::builder()
        .limits(support::limits().max_queue_frames(8))
        .build()
        .unwrap();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    for i in 1..=60 {
        alice.send("r", &format!("m{i}")).await;
    }
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    let Client {
        mut conn, mut rx, ..
    } = bob;
    let subscribing = tokio::spawn(async move {
        conn.handle(chat_core::Request {
            id: Some(99),
            frame: ClientFrame::Subscribe {
                rooms: vec![chat_core::Cursor {
                    room: "r".into(),
                    last_seq: Some(0),
                }],
            },
        })
        .await;
        conn
    });
    // Read slowly; once the replay is under way, alice posts ten more, which
    // land in bob's catch-up buffer.
    let mut seqs = Vec::new();
    let mut subscribed = false;
    let mut posted = false;
    while !(subscribed && seqs.len() == 70) {
        if !posted && seqs.len() >= 20 {
            for i in 61..=70 {
                alice.send("r", &format!("m{i}")).await;
            }
            posted = true;
        }
        let mut buf = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv_many(&mut buf, 1)).await;
        assert_eq!(got.expect("replay stalled"), chat_core::Recv::Frames);
        for bytes in buf {
            match chat_core::Codec::decode_server(&bytes).unwrap() {
                ServerFrame::Message { message } => seqs.push(message.seq),
                ServerFrame::Subscribed { .. } => subscribed = true,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _conn = subscribing.await.unwrap();
    assert_eq!(seqs, (1..=70).collect::<Vec<_>>());
    assert!(rx.closed().is_none(), "bob was disconnected");
}

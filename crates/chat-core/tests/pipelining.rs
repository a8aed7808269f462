//! Frames that arrive together (`Connection::handle_frames`): the replies
//! are those of handling each frame in turn, in the same order, while
//! consecutive sends go to the store in one request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use chat_core::{ClientFrame, Codec, ErrorCode, Request, ServerFrame};
use support::flaky::POISON;

/// A reply, without what differs between two runs (timestamps, texts).
#[derive(Debug, PartialEq)]
enum Seen {
    Ack { id: u64, seq: u64 },
    Error { id: Option<u64>, code: ErrorCode },
    Pong { id: u64 },
}

fn send(id: u64, room: &str, body: &str) -> Bytes {
    Codec::encode_request(&Request {
        id: Some(id),
        frame: ClientFrame::Send {
            room: room.into(),
            body: body.into(),
            client_id: Some(format!("c{id}")),
        },
    })
}

/// Sends, a frame that does not decode, a send the room's rules refuse,
/// one the store fails, and a ping, interleaved.
fn frames() -> Vec<Bytes> {
    vec![
        send(10, "r", "one"),
        send(11, "r", "two"),
        Bytes::from_static(b"{not json"),
        send(12, "r", "three"),
        send(13, "nowhere", "refused"),
        send(14, "r", POISON),
        send(15, "r", "four"),
        Codec::encode_request(&Request {
            id: Some(16),
            frame: ClientFrame::Ping,
        }),
        send(17, "r", "five"),
        send(18, "r", "six"),
    ]
}

/// Runs [`frames`] on a fresh engine, all at once or one at a time;
/// returns the replies, the store's `append_many` sizes, and what a
/// subscriber saw.
async fn run(together: bool) -> (Vec<Seen>, Vec<usize>, Vec<(u64, String)>) {
    let (store, e, mut alice, mut bob) = support::flaky::room().await;

    let frames = frames();
    if together {
        alice.conn.handle_frames(&frames).await;
    } else {
        for f in &frames {
            alice.conn.handle_frame(f).await;
        }
    }
    let mut seen = Vec::new();
    while seen.len() < frames.len() {
        seen.push(match alice.next().await {
            ServerFrame::Ack { id, seq, .. } => Seen::Ack {
                id: id.unwrap(),
                seq,
            },
            ServerFrame::Error { id, code, .. } => Seen::Error { id, code },
            ServerFrame::Pong { id } => Seen::Pong { id: id.unwrap() },
            _ => continue,
        });
    }
    let mut messages = Vec::new();
    for _ in 0..6 {
        let m = bob.next_message().await;
        messages.push((m.seq, m.body));
    }
    let batches = store.batches.lock().unwrap().clone();
    assert_eq!(
        e.metrics().sends_batched.get(),
        batches.iter().sum::<usize>() as u64
    );
    (seen, batches, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_handled_together_reply_as_one_at_a_time_and_store_sends_together() {
    let (together, batches, messages) = run(true).await;
    let (one_by_one, none, messages_one_by_one) = run(false).await;

    let expected = vec![
        Seen::Ack { id: 10, seq: 1 },
        Seen::Ack { id: 11, seq: 2 },
        Seen::Error {
            id: None,
            code: ErrorCode::BadFrame,
        },
        Seen::Ack { id: 12, seq: 3 },
        Seen::Error {
            id: Some(13),
            code: ErrorCode::NotFound,
        },
        Seen::Error {
            id: Some(14),
            code: ErrorCode::StoreFailed,
        },
        Seen::Ack { id: 15, seq: 4 },
        Seen::Pong { id: 16 },
        Seen::Ack { id: 17, seq: 5 },
        Seen::Ack { id: 18, seq: 6 },
    ];
    assert_eq!(together, expected);
    assert_eq!(one_by_one, expected);

    // Runs of sends went to the store together: [one, two] (ended by the
    // bad frame), [poison, four] (the refused send stored `three` alone;
    // the ping ended the run), [five, six]. One at a time, never.
    assert_eq!(batches, [2, 2, 2]);
    assert!(none.is_empty(), "{none:?}");

    // The subscriber saw every stored message once, in order.
    let bodies = ["one", "two", "three", "four", "five", "six"];
    let want: Vec<(u64, String)> = (1..).zip(bodies.map(String::from)).collect();
    assert_eq!(messages, want);
    assert_eq!(messages_one_by_one, want);
}

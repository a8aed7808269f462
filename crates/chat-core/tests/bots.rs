//! Invariant 9 and the bot path: deltas stream to the room, the final text
//! is stored as a message, failures and timeouts give a fallback, and people
//! keep chatting at full speed while bots think.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chat_core::{
    Bot, BotError, BotRequest, BotStream, BotTask, ClientFrame, Engine, MessageKind, ServerFrame,
};
use futures_util::StreamExt;
use support::Client;

/// Streams its reply in fixed pieces.
struct Chunky;
impl Bot for Chunky {
    fn name(&self) -> &str {
        "chunky"
    }
    fn reply(&self, req: BotRequest) -> BotStream {
        let text = match req.task {
            BotTask::Answer { prompt } => format!("You said: {prompt}"),
            BotTask::Summarize { count } => format!("summary of {}/{count}", req.context.len()),
            BotTask::SmartReplies => "Yes\nNo\nMaybe".to_owned(),
        };
        let pieces: Vec<Result<String, BotError>> = text
            .split_inclusive(' ')
            .map(|s| Ok(s.to_owned()))
            .collect();
        futures_util::stream::iter(pieces).boxed()
    }
}

/// Fails half-way through.
struct Broken;
impl Bot for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn reply(&self, _req: BotRequest) -> BotStream {
        futures_util::stream::iter(vec![
            Ok("partial ".to_owned()),
            Err(BotError::Protocol("stream cut".into())),
        ])
        .boxed()
    }
    fn fallback(&self, _e: &BotError) -> String {
        "broken is resting".to_owned()
    }
}

/// Never answers.
struct Silent;
impl Bot for Silent {
    fn name(&self) -> &str {
        "silent"
    }
    fn reply(&self, _req: BotRequest) -> BotStream {
        futures_util::stream::pending().boxed()
    }
}

fn engine(timeout: Duration) -> Engine {
    Engine::builder()
        .limits(support::limits().bot_timeout(timeout))
        .bot(Chunky)
        .bot(Broken)
        .bot(Silent)
        .build()
        .unwrap()
}

async fn room_with(e: &Engine, bots: &[&str]) -> Client {
    let mut alice = Client::signup(e, "alice").await;
    alice.create("r", "public").await;
    for b in bots {
        let r = alice
            .call(ClientFrame::Invite {
                room: "r".into(),
                user: (*b).into(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Ok { .. }), "{r:?}");
    }
    alice.subscribe("r", None).await;
    alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_streams_deltas_then_stores_the_reply() {
    let e = engine(Duration::from_secs(10));
    let mut alice = room_with(&e, &["chunky"]).await;
    alice.send("r", "hey @chunky how are you").await;
    let mut deltas = String::new();
    let mut stored = None;
    loop {
        match alice.next().await {
            ServerFrame::BotDelta { bot, delta, .. } => {
                assert_eq!(bot, "chunky");
                deltas.push_str(&delta);
            }
            ServerFrame::Message { message } if message.kind == MessageKind::Bot => {
                stored = Some(message)
            }
            ServerFrame::BotDone { seq, fallback, .. } => {
                assert!(!fallback);
                assert_eq!(seq, stored.as_ref().map(|m| m.seq));
                break;
            }
            _ => {}
        }
    }
    let stored = stored.unwrap();
    assert_eq!(stored.body, "You said: hey @chunky how are you");
    assert_eq!(stored.body, deltas);
    assert_eq!((stored.sender.as_str(), stored.seq), ("chunky", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mention_no_reply_in_a_public_room() {
    let e = engine(Duration::from_secs(10));
    let mut alice = room_with(&e, &["chunky"]).await;
    alice
        .send("r", "just chatting, chunky is not addressed")
        .await;
    alice.send("r", "@chunky!").await;
    // The first bot reply answers the second message.
    loop {
        if let ServerFrame::Message { message } = alice.next().await {
            if message.kind == MessageKind::Bot {
                assert_eq!(message.body, "You said: @chunky!");
                assert_eq!(message.seq, 3);
                break;
            }
        }
    }
    assert_eq!(e.metrics().bot_requests.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bot_sends_its_fallback_and_is_counted() {
    let e = engine(Duration::from_secs(10));
    let mut alice = room_with(&e, &["broken"]).await;
    alice
        .ask(
            "r",
            BotTask::Answer {
                prompt: "anyone?".into(),
            },
        )
        .await;
    loop {
        match alice.next().await {
            ServerFrame::Message { message } if message.kind == MessageKind::Bot => {
                assert_eq!(message.body, "broken is resting");
            }
            ServerFrame::BotDone { fallback, seq, .. } => {
                assert!(fallback);
                assert!(seq.is_some());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(e.metrics().bot_failures.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_keep_chatting_while_bots_hang() {
    // The bots hang far longer than the test lasts: any wait on them would
    // blow the per-message deadline.
    let e = engine(Duration::from_secs(600));
    let mut alice = room_with(&e, &["silent"]).await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    for _ in 0..20 {
        alice
            .ask(
                "r",
                BotTask::Answer {
                    prompt: "hello?".into(),
                },
            )
            .await;
    }
    for i in 0..100 {
        let body = format!("people talk {i}");
        alice.send("r", &body).await;
        let m = tokio::time::timeout(Duration::from_secs(2), bob.next_message())
            .await
            .expect("chat was held up by the bots");
        assert_eq!(m.body, body);
    }
    assert_eq!(e.metrics().bot_failures.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bot_times_out_into_a_fallback() {
    let e = engine(Duration::from_millis(200));
    let mut alice = room_with(&e, &["silent"]).await;
    for _ in 0..5 {
        alice
            .ask(
                "r",
                BotTask::Answer {
                    prompt: "hello?".into(),
                },
            )
            .await;
    }
    let mut fallbacks = 0;
    while fallbacks < 5 {
        match alice.next().await {
            ServerFrame::BotDone {
                fallback: true,
                seq: Some(_),
                ..
            } => fallbacks += 1,
            ServerFrame::BotDone { .. } => panic!("expected a fallback"),
            _ => {}
        }
    }
    assert_eq!(e.metrics().bot_failures.get(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_replies_go_to_the_asker_only() {
    let e = engine(Duration::from_secs(10));
    let mut alice = room_with(&e, &["chunky"]).await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    alice.send("r", "lunch?").await;
    let ServerFrame::Ok { id: Some(id) } = alice.ask("r", BotTask::SmartReplies).await else {
        panic!()
    };
    let r = alice.reply_to(id).await;
    let ServerFrame::Suggestions { replies, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(replies, ["Yes", "No", "Maybe"]);
    // Bob saw the message and nothing of the suggestions.
    assert_eq!(bob.next_message().await.body, "lunch?");
    let pong = bob.call(ClientFrame::Ping).await;
    assert!(matches!(pong, ServerFrame::Pong { .. }));
    assert!(bob.backlog.iter().all(|f| !matches!(
        f,
        ServerFrame::Suggestions { .. } | ServerFrame::BotDelta { .. }
    )));
    // Nothing was stored for the suggestions.
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
    assert_eq!(messages.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_room_with_a_bot_answers_every_message() {
    let e = engine(Duration::from_secs(10));
    let mut alice = Client::signup(&e, "alice").await;
    let ServerFrame::Room { room, .. } = alice
        .call(ClientFrame::OpenDirect {
            user: "chunky".into(),
        })
        .await
    else {
        panic!()
    };
    alice.subscribe(&room.name, None).await;
    alice.send(&room.name, "ping").await;
    loop {
        if let ServerFrame::Message { message } = alice.next().await {
            if message.kind == MessageKind::Bot {
                assert_eq!(message.body, "You said: ping");
                break;
            }
        }
    }
}

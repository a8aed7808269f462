//! Drives a chat-core `Engine` through channels: one user asks a bot in a
//! room and collects what the room sees.

use std::time::Duration;

use chat_core::{
    BotTask, ClientFrame, Codec, Cursor, Engine, Limits, OutboxReceiver, Recv, Request, ServerFrame,
};

/// What one `ask` produced in the room.
#[derive(Debug, Default)]
pub struct Asked {
    /// `bot_delta` texts, in order.
    pub deltas: Vec<String>,
    /// `bot_done`'s fallback flag.
    pub fallback: bool,
    /// The stored reply's body.
    pub stored: String,
}

/// An engine with `bot` and fast password hashing.
pub fn engine(bot: impl chat_core::Bot) -> Engine {
    Engine::builder()
        .limits(Limits::default().fast_hashing_for_tests())
        .bot(bot)
        .build()
        .unwrap()
}

/// Signs `alice` up, creates and subscribes to `lobby`, asks `bot`, and
/// waits (at most `wait`) for the stored reply.
pub async fn ask(engine: &Engine, bot: &str, task: BotTask, wait: Duration) -> Asked {
    let (mut conn, mut rx) = engine.open(engine.admit().await.unwrap());
    let req = |frame| Request { id: None, frame };
    conn.handle(req(ClientFrame::Signup {
        username: "alice".into(),
        password: "correct horse".into(),
    }))
    .await;
    conn.handle(req(ClientFrame::CreateRoom {
        room: "lobby".into(),
        kind: "public".into(),
        topic: String::new(),
    }))
    .await;
    conn.handle(req(ClientFrame::Subscribe {
        rooms: vec![Cursor {
            room: "lobby".into(),
            last_seq: Some(0),
        }],
    }))
    .await;
    conn.handle(req(ClientFrame::Ask {
        room: "lobby".into(),
        bot: Some(bot.into()),
        task,
    }))
    .await;
    tokio::time::timeout(wait, collect(&mut rx, bot))
        .await
        .expect("the bot's reply arrives in time")
}

async fn collect(rx: &mut OutboxReceiver, bot: &str) -> Asked {
    let mut asked = Asked::default();
    let mut done = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if let Recv::Closed(reason) = rx.recv_many(&mut buf, 64).await {
            panic!("session closed: {reason}");
        }
        for bytes in &buf {
            match Codec::decode_server(bytes).unwrap() {
                ServerFrame::BotDelta { delta, .. } => asked.deltas.push(delta),
                ServerFrame::BotDone { fallback, .. } => {
                    asked.fallback = fallback;
                    done = true;
                }
                ServerFrame::Message { message } if message.sender == bot => {
                    asked.stored = message.body;
                    if done {
                        return asked;
                    }
                }
                _ => {}
            }
        }
        if done && !asked.stored.is_empty() {
            return asked;
        }
    }
}

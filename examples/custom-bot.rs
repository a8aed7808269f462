//! Run with: `cargo run --example custom-bot`
//!
//! A custom `Bot` in a few lines: it answers every message in a `bot` room
//! with the message reversed, streamed one word at a time. The example
//! drives the engine in-process and prints what a subscriber sees.

use chat_core::{
    Bot, BotRequest, BotStream, BotTask, ClientFrame, Codec, Cursor, Engine, Limits, Request,
    ServerFrame,
};
use futures_util::StreamExt;

/// Reverses what it is told.
struct Reverser;

impl Bot for Reverser {
    fn name(&self) -> &str {
        "reverser"
    }

    fn reply(&self, request: BotRequest) -> BotStream {
        let text = match request.task {
            BotTask::Answer { prompt } => prompt.chars().rev().collect::<String>(),
            _ => "I only reverse things.".to_owned(),
        };
        let words: Vec<_> = text
            .split_inclusive(' ')
            .map(|w| Ok(w.to_owned()))
            .collect();
        futures_util::stream::iter(words).boxed()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .limits(Limits::default())
        .bot(Reverser)
        .build()?;
    engine
        .ensure_room(
            "mirror",
            "bot",
            "Everything you say, reversed",
            &["reverser"],
        )
        .await?;

    let (mut conn, mut outbox) = engine.open(engine.admit().await?);
    for frame in [
        ClientFrame::Signup {
            username: "ada".into(),
            password: "analytical engine".into(),
        },
        ClientFrame::Join {
            room: "mirror".into(),
        },
        ClientFrame::Subscribe {
            rooms: vec![Cursor {
                room: "mirror".into(),
                last_seq: None,
            }],
        },
        ClientFrame::Send {
            room: "mirror".into(),
            body: "hello there bot".into(),
            client_id: None,
        },
    ] {
        conn.handle(Request { id: None, frame }).await;
    }

    let mut buf = Vec::new();
    loop {
        buf.clear();
        outbox.recv_many(&mut buf, 16).await;
        for bytes in &buf {
            match Codec::decode_server(bytes)? {
                ServerFrame::BotDelta { delta, .. } => println!("  … {delta:?}"),
                ServerFrame::Message { message } => {
                    println!(
                        "[{}#{}] {}: {}",
                        message.room, message.seq, message.sender, message.body
                    );
                    if message.sender == "reverser" {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }
}

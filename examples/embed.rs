//! Run with: `cargo run --example embed`
//!
//! Embeds the engine, with the in-memory store, in another tokio program:
//! the host owns the transport (here: plain in-process channels standing in
//! for its own sockets) and just moves frames in and out; the engine does
//! accounts, rooms, access rules, ordering and fan-out.

use chat_core::{ClientFrame, Codec, Cursor, Engine, OfflineBot, Recv, Request, ServerFrame};
use tokio::sync::mpsc;

/// One client of the host program: frames it wants to send in, frames the
/// engine sends out.
async fn client(
    engine: Engine,
    name: &'static str,
    mut inbox: mpsc::Receiver<ClientFrame>,
    out: mpsc::Sender<String>,
) {
    let Ok(permit) = engine.admit().await else {
        return;
    };
    let (mut conn, mut outbox) = engine.open(permit);
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Recv::Frames = outbox.recv_many(&mut buf, 32).await {
            for bytes in buf.drain(..) {
                if let Ok(ServerFrame::Message { message }) = Codec::decode_server(&bytes) {
                    let _ = out
                        .send(format!(
                            "{name} sees [{}] {}: {}",
                            message.seq, message.sender, message.body
                        ))
                        .await;
                }
            }
        }
    });
    while let Some(frame) = inbox.recv().await {
        conn.handle(Request { id: None, frame }).await;
    }
    drop(conn);
    writer.abort();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().bot(OfflineBot::default()).build()?;
    engine
        .ensure_room("lobby", "public", "", &["helper"])
        .await?;

    let (out_tx, mut out_rx) = mpsc::channel(64);
    let mut inputs = Vec::new();
    for name in ["grace", "linus"] {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(client(engine.clone(), name, rx, out_tx.clone()));
        for frame in [
            ClientFrame::Signup {
                username: name.into(),
                password: "correct horse battery".into(),
            },
            ClientFrame::Join {
                room: "lobby".into(),
            },
            ClientFrame::Subscribe {
                rooms: vec![Cursor {
                    room: "lobby".into(),
                    last_seq: Some(0),
                }],
            },
        ] {
            tx.send(frame).await?;
        }
        inputs.push(tx);
    }
    inputs[0]
        .send(ClientFrame::Send {
            room: "lobby".into(),
            body: "@helper how do I create a private room?".into(),
            client_id: None,
        })
        .await?;

    // Both users see grace's question and the bot's answer.
    for _ in 0..4 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), out_rx.recv()).await {
            Ok(Some(line)) => println!("{line}"),
            _ => break,
        }
    }
    engine.shutdown(std::time::Duration::from_secs(1)).await?;
    Ok(())
}

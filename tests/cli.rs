//! The `chat-cli` example driven end to end through pipes against a TLS TCP
//! server running in the test process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tcp.rs"]
mod tcp;

use chat_core::{ClientFrame, Request};
use tcp::{Cli, TcpServer};

const PASSWORD: &str = "correct horse";

fn req(frame: ClientFrame) -> Request {
    Request { id: None, frame }
}

/// Signs `user` up and into `room` through the engine directly (no
/// transport), and sends `body` there.
async fn post_as(server: &TcpServer, user: &str, room: &str, body: &str) {
    let engine = &server.engine;
    let (mut conn, _rx) = engine.open(engine.admit().await.unwrap());
    conn.handle(req(ClientFrame::Login {
        username: user.into(),
        password: PASSWORD.into(),
    }))
    .await;
    if conn.user().is_none() {
        conn.handle(req(ClientFrame::Signup {
            username: user.into(),
            password: PASSWORD.into(),
        }))
        .await;
    }
    conn.handle(req(ClientFrame::Join { room: room.into() }))
        .await;
    conn.handle(req(ClientFrame::Send {
        room: room.into(),
        body: body.into(),
        client_id: None,
    }))
    .await;
}

#[tokio::test]
async fn cli_signs_up_creates_a_room_and_chats() {
    let server = TcpServer::start().await;
    let binary = tcp::cli_binary();
    let fp = server.cert.fingerprint.to_string();
    let addr = server.addr();
    let args = [
        "--addr",
        &addr,
        "--fingerprint",
        &fp,
        "--user",
        "alice",
        "--signup",
    ];
    let mut cli = Cli::spawn(&binary, &args, PASSWORD);
    cli.expect("* logged in as alice").await;

    cli.type_line("/create lobby").await;
    cli.expect("* now in lobby").await;
    cli.expect("* following lobby").await;

    cli.type_line("hello world").await;
    cli.expect("[lobby #1] alice: hello world").await;
    cli.expect("* ack lobby #1").await;

    // Someone else's message shows up while the user is typing.
    post_as(&server, "bob", "lobby", "hi alice").await;
    cli.expect("[lobby #2] bob: hi alice").await;

    cli.type_line("/rooms").await;
    cli.expect("  lobby (public, last #2)").await;
    cli.type_line("/who").await;
    let who = cli.expect("* in lobby:").await;
    assert!(
        who.contains("alice (admin, online)") && who.contains("bob"),
        "{who}"
    );
    // A bot reply streams onto one line, closed by its stored seq.
    cli.type_line("/ask how do I join a room?").await;
    let answer = cli.expect("[lobby] helper: ").await;
    assert!(answer.ends_with("(#3)"), "{answer}");

    cli.type_line("/nonsense").await;
    cli.expect("! unknown command").await;

    cli.quit().await;
}

#[tokio::test]
async fn cli_reconnects_and_resumes_by_seq() {
    let mut server = TcpServer::start().await;
    let binary = tcp::cli_binary();
    let fp = server.cert.fingerprint.to_string();
    let addr = server.addr();
    let args = [
        "--addr",
        &addr,
        "--fingerprint",
        &fp,
        "--user",
        "carol",
        "--signup",
    ];
    let mut cli = Cli::spawn(&binary, &args, PASSWORD);
    cli.expect("* logged in as carol").await;
    cli.type_line("/create lobby").await;
    cli.expect("* following lobby").await;
    cli.type_line("before the restart").await;
    cli.expect("* ack lobby #1").await;

    // The transport goes away; a message is posted meanwhile.
    server.stop().await;
    cli.expect("! server closing: shutting_down").await;
    cli.expect("* reconnecting").await;
    post_as(&server, "dave", "lobby", "while you were away").await;
    server.restart().await;

    // Logged in again by token, resumed after #1: #2 once, #1 not again.
    cli.expect("* logged in as carol").await;
    cli.expect("[lobby #2] dave: while you were away").await;
    cli.expect("* following lobby (up to #2)").await;
    let replayed_one = cli
        .seen
        .iter()
        .filter(|l| l.starts_with("[lobby #1]"))
        .count();
    assert_eq!(
        replayed_one,
        1,
        "message #1 shown again:\n{}",
        cli.seen.join("\n")
    );

    cli.type_line("after the restart").await;
    cli.expect("* ack lobby #3").await;
    cli.quit().await;
}

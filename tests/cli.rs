//! The `chat-cli` example driven end to end through pipes against a TLS TCP
//! server running in the test process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tcp.rs"]
mod tcp;

use chat_core::{ClientFrame, Codec, Connection, OutboxReceiver, Request, ServerFrame};
use tcp::{Cli, TcpServer, TempDir};

const PASSWORD: &str = "correct horse";

fn req(frame: ClientFrame) -> Request {
    Request { id: None, frame }
}

/// A connection to the engine (no transport) logged in as `user`, signed
/// up first if needed.
async fn as_user(server: &TcpServer, user: &str) -> (Connection, OutboxReceiver) {
    let engine = &server.engine;
    let (mut conn, rx) = engine.open(engine.admit().await.unwrap());
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
    assert!(conn.user().is_some(), "{user} could not log in");
    (conn, rx)
}

/// Signs `user` up and into `room` through the engine directly, and sends
/// `body` there.
async fn post_as(server: &TcpServer, user: &str, room: &str, body: &str) {
    let (mut conn, _rx) = as_user(server, user).await;
    conn.handle(req(ClientFrame::Join { room: room.into() }))
        .await;
    conn.handle(req(ClientFrame::Send {
        room: room.into(),
        body: body.into(),
        client_id: None,
    }))
    .await;
}

/// `user`'s unread count in `room`, as `list_rooms` reports it.
async fn unread(server: &TcpServer, user: &str, room: &str) -> u64 {
    let (mut conn, mut rx) = as_user(server, user).await;
    conn.handle(Request {
        id: Some(77),
        frame: ClientFrame::ListRooms,
    })
    .await;
    while let Some(bytes) = rx.try_recv() {
        if let Ok(ServerFrame::Rooms { rooms, .. }) = Codec::decode_server(&bytes) {
            return rooms.iter().find(|r| r.name == room).unwrap().unread;
        }
    }
    panic!("no rooms reply");
}

/// Waits until `user` has read everything in `room` (the client marks
/// read on its own schedule).
async fn wait_read(server: &TcpServer, user: &str, room: &str) {
    let deadline = tokio::time::Instant::now() + tcp::WAIT;
    while unread(server, user, room).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{room} never marked read by {user}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn cli_args<'a>(addr: &'a str, fp: &'a str, user: &'a str) -> [&'a str; 7] {
    [
        "--addr",
        addr,
        "--fingerprint",
        fp,
        "--user",
        user,
        "--signup",
    ]
}

/// The file id in a line showing a shared file (`... id=<ID>]`).
fn file_id(line: &str) -> String {
    let from = line.find("id=").unwrap() + 3;
    line[from..].trim_end_matches(']').to_owned()
}

/// `size` bytes that sniff as PNG.
fn png(size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x: u32 = 0x9e37_79b9;
    while bytes.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x.to_le_bytes()[0]);
    }
    bytes.truncate(size);
    bytes
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

#[tokio::test]
async fn cli_uploads_and_another_cli_downloads_byte_for_byte() {
    let server = TcpServer::start().await;
    let binary = tcp::cli_binary();
    let fp = server.cert.fingerprint.to_string();
    let addr = server.addr();
    let src = TempDir::new("chat-cli-src");
    let dl = TempDir::new("chat-cli-dl");

    let mut alice = Cli::spawn(&binary, &cli_args(&addr, &fp, "alice"), PASSWORD);
    alice.expect("* logged in as alice").await;
    alice.type_line("/create share").await;
    alice.expect("* following share").await;

    // Three chunks of the default 32 KiB: the window and the progress.
    let bytes = png(70_000);
    let path = src.0.join("x.png");
    std::fs::write(&path, &bytes).unwrap();
    alice
        .type_line(&format!("/upload {} the chart", path.display()))
        .await;
    alice.expect("* uploading x.png: 25%").await;
    let shared = alice
        .expect("[share #1] alice: the chart [file: x.png 70 KB id=")
        .await;
    let id = file_id(&shared);
    alice
        .expect("* uploaded x.png (70 KB) to share as #1")
        .await;

    // A file whose content is not what its name says is refused.
    let fake = src.0.join("fake.png");
    std::fs::write(&fake, "just text").unwrap();
    alice
        .type_line(&format!("/upload {}", fake.display()))
        .await;
    alice
        .expect("! upload of fake.png to share failed: invalid")
        .await;

    let mut bob = Cli::spawn_in(&binary, &cli_args(&addr, &fp, "bob"), PASSWORD, &dl.0);
    bob.expect("* logged in as bob").await;
    bob.type_line("/join share").await;
    let seen = bob.expect("[share #1] alice: the chart [file: x.png").await;
    assert_eq!(file_id(&seen), id);
    bob.type_line("/files").await;
    let listed = bob.expect(&id).await;
    assert!(listed.contains("x.png  70 KB  by alice"), "{listed}");

    // To an explicit path...
    let copy = src.0.join("copy.png");
    bob.type_line(&format!("/download {id} {}", copy.display()))
        .await;
    bob.expect(&format!("* saved x.png (70 KB) to {}", copy.display()))
        .await;
    assert!(
        std::fs::read(&copy).unwrap() == bytes,
        "explicit path differs"
    );
    // ...and to ./x.png in the current folder, never over an existing file.
    bob.type_line(&format!("/download {id}")).await;
    bob.expect("* saved x.png (70 KB) to ./x.png").await;
    assert!(
        std::fs::read(dl.0.join("x.png")).unwrap() == bytes,
        "./x.png differs"
    );
    std::fs::write(dl.0.join("x.png"), "mine").unwrap();
    bob.type_line(&format!("/download {id}")).await;
    bob.expect("! download failed: ./x.png exists; not overwriting it")
        .await;
    assert_eq!(std::fs::read(dl.0.join("x.png")).unwrap(), b"mine");
    bob.type_line(&format!("/download {id} {}", copy.display()))
        .await;
    bob.expect("! cannot download:").await;
    bob.type_line("/download not-an-id").await;
    bob.expect("! cannot download:").await;
    bob.type_line(&format!("/download {}", "0".repeat(32)))
        .await;
    bob.expect("! download failed: not_found").await;

    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn cli_notifies_mentions_and_invitations_and_counts_unread() {
    let server = TcpServer::start().await;
    let binary = tcp::cli_binary();
    let fp = server.cert.fingerprint.to_string();
    let addr = server.addr();
    let mut carol = Cli::spawn(&binary, &cli_args(&addr, &fp, "carol"), PASSWORD);
    carol.expect("* logged in as carol").await;
    let mut alice = Cli::spawn(&binary, &cli_args(&addr, &fp, "alice"), PASSWORD);
    alice.expect("* logged in as alice").await;
    alice.type_line("/create lobby").await;
    alice.expect("* following lobby").await;
    alice.type_line("/create other").await;
    alice.expect("* following other").await;

    // Mentioned in a room that is not the current one: a bell and a line.
    post_as(&server, "bob", "lobby", "@alice can you look at the plan?").await;
    let note = alice
        .expect("!! @mention in #lobby from bob: @alice can you look at the plan?")
        .await;
    assert!(note.starts_with('\x07'), "no bell: {note:?}");
    post_as(&server, "bob", "lobby", "second").await;
    alice.expect("[lobby #2] bob: second").await;

    alice.type_line("/rooms").await;
    alice.expect("  lobby (public, last #2, 2 unread)").await;
    // Switching to the room marks what was shown read.
    alice.type_line("/join lobby").await;
    alice.expect("* now in lobby").await;
    wait_read(&server, "alice", "lobby").await;
    // So does reading it as it arrives.
    post_as(&server, "bob", "lobby", "third").await;
    alice.expect("[lobby #3] bob: third").await;
    wait_read(&server, "alice", "lobby").await;
    alice.type_line("/rooms").await;
    alice.expect("  lobby (public, last #3)").await;

    // Invitations arrive without following the room.
    alice.type_line("/create team --private").await;
    alice.expect("* following team").await;
    alice.type_line("/invite team carol").await;
    alice.expect("* invited carol to team").await;
    carol.expect("* you were added to #team").await;

    // A direct room opened by someone else is followed at once.
    let (mut dave, _rx) = as_user(&server, "dave").await;
    dave.handle(req(ClientFrame::OpenDirect {
        user: "carol".into(),
    }))
    .await;
    carol
        .expect("* dave opened a direct conversation with you: dm:carol:dave")
        .await;
    carol.expect("* following dm:carol:dave").await;
    dave.handle(req(ClientFrame::Send {
        room: "dm:carol:dave".into(),
        body: "psst".into(),
        client_id: None,
    }))
    .await;
    carol.expect("[dm:carol:dave #1] dave: psst").await;

    alice.quit().await;
    carol.quit().await;
}

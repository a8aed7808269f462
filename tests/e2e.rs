//! End to end, against the real `chat-server` process: both transports in
//! one room, privacy across transports, a SIGKILL during a burst, and a
//! graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};

use chat_core::{ClientFrame, ErrorCode, ServerFrame};
use support::{code, Client, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_tcp_users_see_the_same_messages_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = Client::ws(&server).await;
    let mut bob = Client::tcp(&server).await;
    let mut carol = Client::ws(&server).await;
    alice.signup("alice").await;
    bob.signup("bob").await;
    carol.signup("carol").await;
    alice
        .ok(ClientFrame::CreateRoom {
            room: "mix".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    for c in [&mut bob, &mut carol] {
        c.ok(ClientFrame::Join { room: "mix".into() }).await;
    }
    for c in [&mut alice, &mut bob, &mut carol] {
        c.subscribe("mix", None).await;
    }
    // Interleave sends from both transports; don't wait for acks so they
    // race inside the server.
    const EACH: usize = 40;
    for i in 0..EACH {
        for (n, c) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
            let frame = ClientFrame::Send {
                room: "mix".into(),
                body: format!("{n}:{i}"),
                client_id: None,
            };
            c.send(&chat_core::Request { id: None, frame }).await;
        }
    }
    let mut views = Vec::new();
    for c in [&mut alice, &mut bob, &mut carol] {
        let msgs = c.messages(3 * EACH).await;
        views.push(
            msgs.into_iter()
                .map(|m| (m.seq, m.sender, m.body))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(views[0], views[1], "WebSocket and TCP differ");
    assert_eq!(views[0], views[2]);
    let seqs: Vec<u64> = views[0].iter().map(|v| v.0).collect();
    assert_eq!(seqs, (1..=(3 * EACH) as u64).collect::<Vec<_>>());
    // Each sender's own messages keep their order.
    for sender in ["alice", "bob", "carol"] {
        let mine: Vec<&String> = views[0]
            .iter()
            .filter(|v| v.1 == sender)
            .map(|v| &v.2)
            .collect();
        let n = ["alice", "bob", "carol"]
            .iter()
            .position(|s| *s == sender)
            .unwrap();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{n}:{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
}

/// `--https true`: the browser's port speaks HTTPS and WSS with the same
/// certificate as the terminal port. A WSS user and a TLS TCP user chat;
/// the WSS user reconnects and resumes by `seq`; `/health` answers over
/// HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_tls_tcp_users_chat_and_resume_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--https", "true"]);
    let mut alice = Client::wss(&server).await;
    let token = alice.signup("alice").await;
    alice
        .ok(ClientFrame::CreateRoom {
            room: "tls".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    alice.subscribe("tls", None).await;
    let mut bob = Client::tcp(&server).await;
    bob.signup("bob").await;
    bob.ok(ClientFrame::Join { room: "tls".into() }).await;
    bob.subscribe("tls", None).await;
    for i in 0..3 {
        bob.ok(ClientFrame::Send {
            room: "tls".into(),
            body: format!("from bob {i}"),
            client_id: None,
        })
        .await;
    }
    let got = alice.messages(3).await;
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["from bob 0", "from bob 1", "from bob 2"]);
    let last = got[2].seq;
    drop(alice);
    for i in 3..5 {
        bob.ok(ClientFrame::Send {
            room: "tls".into(),
            body: format!("from bob {i}"),
            client_id: None,
        })
        .await;
    }
    let mut alice = Client::wss(&server).await;
    alice.auth(&token).await;
    alice.subscribe("tls", Some(last)).await;
    let resumed = alice.messages(2).await;
    let seqs: Vec<u64> = resumed.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [last + 1, last + 2]);
    // Plain HTTP on the HTTPS port gets a TLS alert, not a page.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&server.http).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(support::WAIT, s.read_to_end(&mut answer))
        .await
        .expect("the server kept a failed handshake open")
        .unwrap();
    assert_eq!(
        answer.first(),
        Some(&21),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_and_dms_stay_private_across_transports() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut alice = Client::tcp(&server).await;
    let mut bob = Client::ws(&server).await;
    let mut eve_ws = Client::ws(&server).await;
    let mut eve_tcp = Client::tcp(&server).await;
    alice.signup("alice").await;
    bob.signup("bob").await;
    let eve_token = eve_ws.signup("eve").await;
    eve_tcp.auth(&eve_token).await;

    alice
        .ok(ClientFrame::CreateRoom {
            room: "plans".into(),
            kind: "private".into(),
            topic: String::new(),
        })
        .await;
    alice
        .ok(ClientFrame::Send {
            room: "plans".into(),
            body: "secret".into(),
            client_id: None,
        })
        .await;
    let ServerFrame::Room { room: dm, .. } = alice
        .ok(ClientFrame::OpenDirect { user: "bob".into() })
        .await
    else {
        panic!()
    };
    bob.ok(ClientFrame::Send {
        room: dm.name.clone(),
        body: "psst".into(),
        client_id: None,
    })
    .await;

    for eve in [&mut eve_ws, &mut eve_tcp] {
        for room in ["plans", dm.name.as_str()] {
            for frame in [
                ClientFrame::Join { room: room.into() },
                ClientFrame::History {
                    room: room.into(),
                    before: None,
                    after: None,
                    limit: None,
                },
                ClientFrame::Subscribe {
                    rooms: vec![chat_core::Cursor {
                        room: room.into(),
                        last_seq: Some(0),
                    }],
                },
                ClientFrame::Send {
                    room: room.into(),
                    body: "let me in".into(),
                    client_id: None,
                },
                ClientFrame::Members { room: room.into() },
            ] {
                let r = eve.call(frame).await;
                assert_eq!(code(&r), Some(ErrorCode::NotFound), "{room}: {r:?}");
            }
        }
        let ServerFrame::Rooms { rooms, .. } = eve.call(ClientFrame::ListRooms).await else {
            panic!()
        };
        assert!(
            rooms.iter().all(|r| r.name != "plans" && r.name != dm.name),
            "{rooms:?}"
        );
    }

    // And over REST, with eve's bearer token.
    for room in ["plans", dm.name.as_str()] {
        let (status, body) = http_get(
            &server.http,
            &format!("/api/rooms/{room}/messages"),
            &eve_token,
        )
        .await;
        assert_eq!(status, 404, "{room}: {body}");
        assert!(!body.contains("secret") && !body.contains("psst"), "{body}");
    }
    let (status, _) = http_get(&server.http, "/api/rooms/plans/messages", "not-a-token").await;
    assert_eq!(status, 401);
}

/// A bare HTTP/1.1 GET with a bearer token: (status, body).
async fn http_get(addr: &str, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(support::WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());

    let mut admin = Client::ws(&server).await;
    let admin_token = admin.signup("admin").await;
    admin
        .ok(ClientFrame::CreateRoom {
            room: "burst".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    // A reader that will resume after the crash, remembering what it saw.
    let mut reader = Client::tcp(&server).await;
    let reader_token = reader.signup("reader").await;
    reader
        .ok(ClientFrame::Join {
            room: "burst".into(),
        })
        .await;
    reader.subscribe("burst", Some(0)).await;

    // Four senders on both transports fire without waiting; the acks they
    // collect before the kill are the promises under test.
    let mut tasks = Vec::new();
    for s in 0..4 {
        let mut c = if s % 2 == 0 {
            Client::ws(&server).await
        } else {
            Client::tcp(&server).await
        };
        c.signup(&format!("sender{s}")).await;
        c.ok(ClientFrame::Join {
            room: "burst".into(),
        })
        .await;
        tasks.push(tokio::spawn(async move {
            // Windows of 50 sends in flight, then their acks; a closed
            // connection ends the burst.
            let mut acked = BTreeMap::new();
            for window in 0..40u32 {
                for i in window * 50..(window + 1) * 50 {
                    let frame = ClientFrame::Send {
                        room: "burst".into(),
                        body: format!("s{s}-{i}"),
                        client_id: Some(format!("s{s}-{i}")),
                    };
                    c.send(&chat_core::Request { id: None, frame }).await;
                }
                let mut got = 0;
                while got < 50 {
                    match c.recv().await {
                        Some(ServerFrame::Ack {
                            seq,
                            client_id: Some(cid),
                            ..
                        }) => {
                            acked.insert(cid, seq);
                            got += 1;
                        }
                        Some(_) => {}
                        None => return acked,
                    }
                }
            }
            acked
        }));
    }
    // Kill once a good number of messages are durable.
    let mut seen = 0;
    while seen < 300 {
        seen += reader.messages(1).await.len();
    }
    server.kill9();
    let mut acked: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() >= 200,
        "only {} acks before the kill",
        acked.len()
    );

    // Restart on the same data: every acknowledged message is there, at its
    // seq, and the room is gap-free.
    let server = Server::start(dir.path());
    let mut admin = Client::ws(&server).await;
    admin.auth(&admin_token).await;
    let all = admin.history_all("burst").await;
    let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "gap after restart"
    );
    let by_seq: HashMap<u64, &str> = all.iter().map(|m| (m.seq, m.body.as_str())).collect();
    for (cid, seq) in &acked {
        assert_eq!(
            by_seq.get(seq).copied(),
            Some(cid.as_str()),
            "acked {cid} at {seq} is lost"
        );
    }

    // The reader resumes from the last seq it saw and gets the rest exactly
    // once.
    let last_seen = seen as u64;
    let mut reader = Client::tcp(&server).await;
    reader.auth(&reader_token).await;
    reader.subscribe("burst", Some(last_seen)).await;
    let rest: Vec<u64> = reader
        .backlog
        .drain(..)
        .filter_map(|f| match f {
            ServerFrame::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        rest,
        ((last_seen + 1)..=all.len() as u64).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_tells_clients_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut ws = Client::ws(&server).await;
    let mut tcp = Client::tcp(&server).await;
    let token = ws.signup("alice").await;
    tcp.signup("bob").await;
    ws.ok(ClientFrame::CreateRoom {
        room: "r".into(),
        kind: "public".into(),
        topic: String::new(),
    })
    .await;
    for i in 0..50 {
        ws.ok(ClientFrame::Send {
            room: "r".into(),
            body: format!("m{i}"),
            client_id: None,
        })
        .await;
    }
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    for c in [&mut ws, &mut tcp] {
        let mut reason = None;
        while let Some(f) = c.next().await {
            if let ServerFrame::Closing { reason: r, .. } = f {
                reason = Some(r);
            }
        }
        assert_eq!(reason, Some(ErrorCode::ShuttingDown));
    }
    let server = Server::start(dir.path());
    let mut c = Client::ws(&server).await;
    c.auth(&token).await;
    assert_eq!(c.history_all("r").await.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_bot_answers_in_the_lobby_with_no_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = Client::ws(&server).await;
    c.signup("newcomer").await;
    let ServerFrame::Rooms { rooms, .. } = c.ok(ClientFrame::ListRooms).await else {
        panic!()
    };
    assert!(rooms.iter().any(|r| r.name == "lobby"), "{rooms:?}");
    c.ok(ClientFrame::Join {
        room: "lobby".into(),
    })
    .await;
    c.subscribe("lobby", None).await;
    c.ok(ClientFrame::Send {
        room: "lobby".into(),
        body: "@helper how do I send a direct message?".into(),
        client_id: None,
    })
    .await;
    let mut deltas = String::new();
    loop {
        match c.next().await.expect("closed") {
            ServerFrame::BotDelta { bot, delta, .. } => {
                assert_eq!(bot, "helper");
                deltas.push_str(&delta);
            }
            ServerFrame::Message { message } if message.sender == "helper" => {
                assert_eq!(message.body, deltas, "the stored reply is what streamed");
                assert!(
                    message.body.to_lowercase().contains("direct"),
                    "{}",
                    message.body
                );
                break;
            }
            _ => {}
        }
    }
}

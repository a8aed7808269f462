//! The protocol over TLS on loopback: chat, trust options, heartbeat, idle
//! timeout, admission and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chat_core::{ClientFrame, Cursor, ErrorCode, Limits, ServerFrame};
use chat_transport_tcp::client::{Connector, Trust};
use chat_transport_tcp::{Error, TcpSettings};
use support::*;

#[tokio::test]
async fn signup_create_subscribe_send_ack_and_message() {
    let server = TestServer::start(TcpSettings::default()).await;
    let mut alice = server.client().await;
    let hello = expect(&mut alice, "hello", |_| true).await;
    assert!(
        matches!(hello, ServerFrame::Hello { max_frame_bytes, .. } if max_frame_bytes == 64 * 1024)
    );

    let signup = ClientFrame::Signup {
        username: "alice".into(),
        password: "correct horse".into(),
    };
    alice.send(&req(1, signup)).await.unwrap();
    let authed = expect(&mut alice, "authed", |f| {
        matches!(f, ServerFrame::Authed { .. })
    })
    .await;
    assert!(matches!(authed, ServerFrame::Authed { id: Some(1), ref user, .. } if user == "alice"));

    let create = ClientFrame::CreateRoom {
        room: "lobby".into(),
        kind: "public".into(),
        topic: String::new(),
    };
    alice.send(&req(2, create)).await.unwrap();
    expect(&mut alice, "room", |f| {
        matches!(f, ServerFrame::Room { id: Some(2), .. })
    })
    .await;

    let mut bob = signed_up(&server, "bob").await;
    bob.send(&req(
        2,
        ClientFrame::Join {
            room: "lobby".into(),
        },
    ))
    .await
    .unwrap();
    expect(&mut bob, "room", |f| {
        matches!(f, ServerFrame::Room { id: Some(2), .. })
    })
    .await;
    for c in [&mut alice, &mut bob] {
        let sub = ClientFrame::Subscribe {
            rooms: vec![Cursor {
                room: "lobby".into(),
                last_seq: Some(0),
            }],
        };
        c.send(&req(3, sub)).await.unwrap();
        expect(c, "subscribed", |f| {
            matches!(f, ServerFrame::Subscribed { id: Some(3), .. })
        })
        .await;
    }

    let send = ClientFrame::Send {
        room: "lobby".into(),
        body: "hello bob".into(),
        client_id: Some("c1".into()),
    };
    alice.send(&req(4, send)).await.unwrap();
    // The sender sees its own message (published first) and the ack.
    let (mut ack, mut echoed) = (None, None);
    while ack.is_none() || echoed.is_none() {
        match expect(&mut alice, "ack and message", |_| true).await {
            f @ ServerFrame::Ack { .. } => ack = Some(f),
            ServerFrame::Message { message } => echoed = Some(message),
            _ => {}
        }
    }
    let ack = ack.unwrap();
    assert!(
        matches!(
            ack,
            ServerFrame::Ack {
                id: Some(4),
                seq: 1,
                duplicate: false,
                ..
            }
        ),
        "{ack:?}"
    );
    let m = expect(&mut bob, "message", |f| {
        matches!(f, ServerFrame::Message { .. })
    })
    .await;
    let ServerFrame::Message { message } = m else {
        unreachable!()
    };
    for message in [message, echoed.unwrap()] {
        assert_eq!(
            (message.seq, message.sender.as_str(), message.body.as_str()),
            (1, "alice", "hello bob")
        );
    }

    // A bad line gets an error and the connection stays usable.
    let (mut rd, mut wr) = bob.split();
    wr.send_line(b"{not json").await.unwrap();
    wr.send_line(br#"{"type":"ping","id":9}"#).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(within(rd.recv()).await.unwrap().unwrap());
    }
    assert!(
        matches!(
            got[0],
            ServerFrame::Error {
                code: ErrorCode::BadFrame,
                ..
            }
        ),
        "{got:?}"
    );
    assert!(
        matches!(got[1], ServerFrame::Pong { id: Some(9) }),
        "{got:?}"
    );
    drop((rd, wr, alice));
    server.stop().await;
}

#[tokio::test]
async fn trust_by_ca_file_and_refusal_of_a_wrong_pin() {
    let server = TestServer::start(TcpSettings::default()).await;
    let ca = Trust::CaFile(server.dir.path().join(chat_transport_tcp::cert::CERT_FILE));
    let connector = Connector::new(&ca).unwrap();
    let mut c = connector.connect(&server.addr, None).await.unwrap();
    assert_eq!(c.peer_fingerprint(), Some(server.fingerprint));
    expect(&mut c, "hello", |f| matches!(f, ServerFrame::Hello { .. })).await;
    drop(c);
    // The certificate names localhost too.
    let mut c = connector
        .connect(&server.addr, Some("localhost"))
        .await
        .unwrap();
    expect(&mut c, "hello", |f| matches!(f, ServerFrame::Hello { .. })).await;
    drop(c);
    // ...but not another name.
    let err = connector
        .connect(&server.addr, Some("chat.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    let wrong = Trust::Fingerprint("00".repeat(32).parse().unwrap());
    let err = Connector::new(&wrong)
        .unwrap()
        .connect(&server.addr, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");

    let mut c = Connector::new(&Trust::Insecure)
        .unwrap()
        .connect(&server.addr, None)
        .await
        .unwrap();
    expect(&mut c, "hello", |f| matches!(f, ServerFrame::Hello { .. })).await;
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn heartbeat_is_a_pong_without_id() {
    let settings = TcpSettings::default().heartbeat_interval(Duration::from_millis(100));
    let server = TestServer::start(settings).await;
    let mut c = server.client().await;
    expect(&mut c, "hello", |f| matches!(f, ServerFrame::Hello { .. })).await;
    for _ in 0..2 {
        let f = expect(&mut c, "heartbeat", |_| true).await;
        assert_eq!(f, ServerFrame::Pong { id: None });
    }
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn idle_client_gets_closing_idle() {
    let settings = TcpSettings::default()
        .idle_timeout(Duration::from_millis(300))
        .heartbeat_interval(Duration::ZERO);
    let server = TestServer::start(settings).await;
    let mut c = server.client().await;
    let started = tokio::time::Instant::now();
    let frames = rest(&mut c).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(matches!(frames[0], ServerFrame::Hello { .. }));
    assert!(
        matches!(
            frames.last(),
            Some(ServerFrame::Closing {
                reason: ErrorCode::Idle,
                ..
            })
        ),
        "{frames:?}"
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn over_the_session_limit_gets_server_busy() {
    let limits = Limits::default().max_sessions(1).admission_queue(0);
    let server = TestServer::with_engine(engine(limits), TcpSettings::default()).await;
    let mut first = server.client().await;
    expect(&mut first, "hello", |f| {
        matches!(f, ServerFrame::Hello { .. })
    })
    .await;
    let mut second = server.client().await;
    let frames = rest(&mut second).await;
    assert!(
        matches!(
            frames.as_slice(),
            [ServerFrame::Error {
                code: ErrorCode::ServerBusy,
                ..
            }]
        ),
        "{frames:?}"
    );
    drop((first, second));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_waits_for_them() {
    let server = TestServer::start(TcpSettings::default()).await;
    let mut a = signed_up(&server, "alice").await;
    let mut b = server.client().await;
    expect(&mut b, "hello", |f| matches!(f, ServerFrame::Hello { .. })).await;
    let addr = server.addr.clone();
    server.stop().await;
    for c in [&mut a, &mut b] {
        let frames = rest(c).await;
        assert!(
            matches!(
                frames.last(),
                Some(ServerFrame::Closing {
                    reason: ErrorCode::ShuttingDown,
                    ..
                })
            ),
            "{frames:?}"
        );
    }
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn engine_shutdown_stops_the_transport() {
    let server = TestServer::start(TcpSettings::default()).await;
    let mut a = signed_up(&server, "alice").await;
    server
        .engine
        .shutdown(Duration::from_secs(1))
        .await
        .unwrap();
    let frames = rest(&mut a).await;
    assert!(
        matches!(
            frames.last(),
            Some(ServerFrame::Closing {
                reason: ErrorCode::ShuttingDown,
                ..
            })
        ),
        "{frames:?}"
    );
    // serve resolves by itself, without its shutdown future.
    drop(a);
    server.wait_without_stopping().await;
}

/// Lines written at once (a client pipelining its sends) are stored
/// together and acked in order; with `read_batch_lines(1)`, one by one.
#[tokio::test]
async fn pipelined_sends_are_stored_together_and_acked_in_order() {
    for batch in [32, 1] {
        let server = TestServer::start(TcpSettings::default().read_batch_lines(batch)).await;
        let mut alice = signed_up(&server, "alice").await;
        let create = ClientFrame::CreateRoom {
            room: "lobby".into(),
            kind: "public".into(),
            topic: String::new(),
        };
        call(&mut alice, 2, create).await;
        let (mut rd, mut wr) = alice.split();
        let mut lines = Vec::new();
        for i in 10..30u64 {
            let send = ClientFrame::Send {
                room: "lobby".into(),
                body: format!("m{i}"),
                client_id: None,
            };
            lines.extend_from_slice(&chat_core::Codec::encode_request(&req(i, send)));
            lines.push(b'\n');
        }
        wr.send_raw(&lines).await.unwrap();
        let mut acks = Vec::new();
        within(async {
            while acks.len() < 20 {
                match rd.recv().await.unwrap() {
                    Some(ServerFrame::Ack {
                        id: Some(id), seq, ..
                    }) => acks.push((id, seq)),
                    Some(other) => panic!("{other:?}"),
                    None => panic!("closed"),
                }
            }
        })
        .await;
        assert_eq!(acks, (10..30).zip(1..=20).collect::<Vec<(u64, u64)>>());
        let batched = server.engine.metrics().sends_batched.get();
        if batch == 1 {
            assert_eq!(batched, 0);
        } else {
            // All 20 arrive in one read on loopback; at least a run of
            // them went to the store together.
            assert!(batched >= 2, "{batched} sends stored together");
        }
        server.stop().await;
    }
}

//! The chat protocol over real WebSocket connections on 127.0.0.1, plain
//! and over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chat_core::{ErrorCode, ServerFrame};
use serde_json::json;
use support::{ws_connect, Client, TestServer};
use tokio::io::{AsyncRead, AsyncWrite};

/// Alice and Bob chat in a room; each sees the other's message once, in
/// order, with the seq from the ack.
async fn chat<S: AsyncRead + AsyncWrite + Unpin>(alice: &mut Client<S>, bob: &mut Client<S>) {
    alice.signup("alice").await;
    bob.signup("bob").await;
    let r = alice
        .call(json!({"type": "create_room", "room": "lobby", "kind": "public", "topic": "hi"}))
        .await;
    assert!(matches!(r, ServerFrame::Room { .. }), "{r:?}");
    assert!(matches!(
        bob.call(json!({"type": "join", "room": "lobby"})).await,
        ServerFrame::Room { .. }
    ));
    for c in [&mut *alice, &mut *bob] {
        let r = c
            .call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 0}]}))
            .await;
        assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    }
    let ack = alice
        .call(json!({"type": "send", "room": "lobby", "body": "hello bob", "client_id": "c1"}))
        .await;
    let ServerFrame::Ack { seq, .. } = ack else {
        panic!("{ack:?}")
    };
    let got = bob
        .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
        .await;
    let ServerFrame::Message { message } = got else {
        unreachable!()
    };
    assert_eq!(
        (message.seq, message.sender.as_str(), message.body.as_str()),
        (seq, "alice", "hello bob")
    );
    let ack = bob
        .call(json!({"type": "send", "room": "lobby", "body": "hi alice"}))
        .await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 2, .. }), "{ack:?}");
    let got = alice
        .next_matching(|f| matches!(f, ServerFrame::Message { message } if message.sender == "bob"))
        .await;
    assert!(
        matches!(got, ServerFrame::Message { message } if message.body == "hi alice" && message.seq == 2)
    );
}

#[tokio::test]
async fn two_users_chat_over_websocket() {
    let server = TestServer::start(support::settings()).await;
    let mut alice = ws_connect(server.addr).await;
    let mut bob = ws_connect(server.addr).await;
    chat(&mut alice, &mut bob).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn two_users_chat_over_tls() {
    let (server_cfg, client_cfg) = support::tls_pair();
    let server = TestServer::start(support::settings().tls(server_cfg)).await;
    let connector = tokio_rustls::TlsConnector::from(client_cfg);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let name = chat_transport_ws::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (ws, res) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
            .await
            .unwrap();
        assert_eq!(res.status(), 101);
        clients.push(Client::new(ws).await);
    }
    let (mut alice, mut bob) = {
        let mut it = clients.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    chat(&mut alice, &mut bob).await;

    // A plain-text client cannot talk to the TLS port; the server goes on.
    let r = tokio::time::timeout(
        support::WAIT,
        tokio_tungstenite::client_async(
            format!("ws://{}/ws", server.addr),
            tokio::net::TcpStream::connect(server.addr).await.unwrap(),
        ),
    )
    .await
    .unwrap();
    assert!(r.is_err());
    let ack = alice
        .call(json!({"type": "send", "room": "lobby", "body": "still here"}))
        .await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 3, .. }), "{ack:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bot_reply_streams_then_is_stored() {
    let server = TestServer::start(support::settings()).await;
    let mut alice = ws_connect(server.addr).await;
    alice.signup("alice").await;
    alice
        .call(json!({"type": "create_room", "room": "lobby"}))
        .await;
    alice
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 0}]}))
        .await;
    let r = alice
        .call(json!({"type": "ask", "room": "lobby", "task": "answer", "prompt": "why?"}))
        .await;
    assert!(matches!(r, ServerFrame::Ok { .. }), "{r:?}");
    // Deltas stream first; the stored reply is published, then bot_done
    // names its seq.
    let (mut deltas, mut stored) = (String::new(), Vec::new());
    let done_seq = loop {
        match alice.next().await {
            ServerFrame::BotDelta { delta, .. } => deltas.push_str(&delta),
            ServerFrame::Message { message } => stored.push(message),
            ServerFrame::BotDone { seq, fallback, .. } => {
                assert!(!fallback);
                break seq.unwrap();
            }
            _ => {}
        }
    };
    assert_eq!(deltas, "Streaming an answer to: why?");
    let stored = stored
        .into_iter()
        .find(|m| m.seq == done_seq)
        .expect("stored reply before bot_done");
    assert_eq!(
        (stored.body.as_str(), stored.sender.as_str()),
        (deltas.as_str(), "helper")
    );
    server.stop().await.unwrap();
}

/// With `write_coalesce`, a writer waits that long for company before it
/// writes events, and a burst of pipelined sends still reaches a subscriber
/// complete and in order, acks included.
#[tokio::test]
async fn coalesced_writes_keep_every_frame_in_order() {
    let coalesce = Duration::from_millis(60);
    let server = TestServer::start(support::settings().write_coalesce(coalesce)).await;
    let mut alice = ws_connect(server.addr).await;
    let mut bob = ws_connect(server.addr).await;
    support::two_in_a_room(&mut alice, "alice", &mut bob, "bob", "lobby").await;
    let r = alice
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 0}]}))
        .await;
    assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");

    let started = std::time::Instant::now();
    let ack = bob
        .call(json!({"type": "send", "room": "lobby", "body": "m0"}))
        .await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 1, .. }), "{ack:?}");
    let first = alice
        .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
        .await;
    assert!(matches!(first, ServerFrame::Message { ref message } if message.seq == 1));
    assert!(
        started.elapsed() >= coalesce,
        "the event came after {:?}, before the coalescing window",
        started.elapsed()
    );
    // 200 sends without waiting for their acks.
    for i in 1..=200 {
        let req = json!({"type": "send", "room": "lobby", "body": format!("m{i}"), "id": 1000 + i});
        bob.send_text(req.to_string()).await;
    }
    let mut acks = Vec::new();
    while acks.len() < 200 {
        match bob.next().await {
            ServerFrame::Ack {
                id: Some(id), seq, ..
            } => acks.push((id, seq)),
            ServerFrame::Message { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let want: Vec<(u64, u64)> = (1..=200).map(|i| (1000 + i, i + 1)).collect();
    assert_eq!(acks, want);
    let mut seqs = vec![1];
    while seqs.len() < 201 {
        if let ServerFrame::Message { message } = alice.next().await {
            assert_eq!(message.body, format!("m{}", message.seq - 1));
            seqs.push(message.seq);
        }
    }
    assert_eq!(seqs, (1..=201).collect::<Vec<u64>>());
    server.stop().await.unwrap();
}

/// Coalescing holds events back, never a client's own replies: the sender's
/// ack comes at once (its own copy of the message with it), while another
/// subscriber's copy waits for the window.
#[tokio::test]
async fn coalescing_never_holds_back_replies() {
    let coalesce = Duration::from_secs(2);
    let server = TestServer::start(support::settings().write_coalesce(coalesce)).await;
    let mut alice = ws_connect(server.addr).await;
    let mut bob = ws_connect(server.addr).await;
    // Sign-up replies, room creation and subscriptions are replies too: none
    // of them waits.
    let setup = std::time::Instant::now();
    support::two_in_a_room(&mut alice, "alice", &mut bob, "bob", "lobby").await;
    for c in [&mut alice, &mut bob] {
        let r = c
            .call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 0}]}))
            .await;
        assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    }
    assert!(
        setup.elapsed() < coalesce,
        "setup took {:?}",
        setup.elapsed()
    );

    let started = std::time::Instant::now();
    let ack = alice
        .call(json!({"type": "send", "room": "lobby", "body": "hello"}))
        .await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 1, .. }), "{ack:?}");
    let acked = started.elapsed();
    assert!(acked < coalesce / 2, "the ack waited {acked:?}");
    let got = bob
        .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
        .await;
    assert!(matches!(got, ServerFrame::Message { ref message } if message.body == "hello"));
    assert!(
        started.elapsed() >= coalesce,
        "bob's copy came after {:?}, inside the window",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reconnect_resumes_by_seq_without_loss_or_duplicates() {
    let server = TestServer::start(support::settings()).await;
    let mut alice = ws_connect(server.addr).await;
    let token = alice.signup("alice").await;
    alice
        .call(json!({"type": "create_room", "room": "lobby"}))
        .await;
    for i in 1..=3 {
        alice
            .call(json!({"type": "send", "room": "lobby", "body": format!("m{i}")}))
            .await;
    }
    drop(alice);
    // Meanwhile someone else posts.
    let mut bob = ws_connect(server.addr).await;
    bob.signup("bob").await;
    bob.call(json!({"type": "join", "room": "lobby"})).await;
    for i in 4..=5 {
        bob.call(json!({"type": "send", "room": "lobby", "body": format!("m{i}")}))
            .await;
    }
    let mut again = ws_connect(server.addr).await;
    let r = again.call(json!({"type": "auth", "token": token})).await;
    assert!(
        matches!(r, ServerFrame::Authed { ref user, .. } if user == "alice"),
        "{r:?}"
    );
    let r = again
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 3}]}))
        .await;
    assert!(
        matches!(r, ServerFrame::Subscribed { last_seq: 5, .. }),
        "{r:?}"
    );
    let seqs: Vec<u64> = again
        .backlog
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Message { message } => Some(message.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_and_binary_frames_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start(support::settings()).await;
    let mut c = ws_connect(server.addr).await;
    c.send_text("{not json").await;
    let f = c.next().await;
    assert!(
        matches!(
            f,
            ServerFrame::Error {
                code: ErrorCode::BadFrame,
                ..
            }
        ),
        "{f:?}"
    );
    c.send_text(r#"{"type":"no_such_frame"}"#).await;
    assert!(matches!(
        c.next().await,
        ServerFrame::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1u8, 2, 3].into(),
    ))
    .await
    .unwrap();
    let f = c.next().await;
    let ServerFrame::Error { code, message, .. } = f else {
        panic!("{f:?}")
    };
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("binary"), "{message}");
    // Still usable, and other clients never noticed.
    assert!(matches!(
        c.call(json!({"type": "ping"})).await,
        ServerFrame::Pong { .. }
    ));
    let r = support::http(server.addr, "GET", "/metrics", None, None).await;
    assert!(
        r.text().contains("chat_bad_frames_total 3\n"),
        "{}",
        r.text()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn frames_over_the_engine_limit_get_an_error_frame() {
    let engine = chat_core::Engine::builder()
        .limits(support::limits().max_frame_bytes(1024))
        .build()
        .unwrap();
    let server = TestServer::start_with(engine, support::settings()).await;
    let mut c = ws_connect(server.addr).await;
    c.send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000)))
        .await;
    assert!(matches!(
        c.next().await,
        ServerFrame::Error {
            code: ErrorCode::FrameTooLarge,
            ..
        }
    ));
    assert!(matches!(
        c.call(json!({"type": "ping"})).await,
        ServerFrame::Pong { .. }
    ));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversize_messages_close_with_1009_and_others_keep_chatting() {
    let server = TestServer::start(support::settings().max_message_bytes(4096)).await;
    let mut other = ws_connect(server.addr).await;
    let mut c = ws_connect(server.addr).await;
    c.send_text(format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(10_000)
    ))
    .await;
    let (frames, code) = c.until_close().await;
    assert_eq!(code, Some(1009));
    assert!(
        frames.iter().any(|f| matches!(
            f,
            ServerFrame::Closing {
                reason: ErrorCode::FrameTooLarge,
                ..
            }
        )),
        "{frames:?}"
    );
    assert!(matches!(
        other.call(json!({"type": "ping"})).await,
        ServerFrame::Pong { .. }
    ));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed_as_idle() {
    // The silent client reads only after the lively one is done: the
    // server must still be waiting for its close reply by then, or the
    // client's pong replies would hit a closed socket.
    let settings = support::settings()
        .ping_interval(Duration::from_millis(100))
        .idle_timeout(Duration::from_millis(350))
        .close_timeout(Duration::from_secs(10));
    let server = TestServer::start(settings).await;
    // This client answers pings (tungstenite does while reading): it stays.
    let mut lively = ws_connect(server.addr).await;
    // This one never reads, so never answers a ping.
    let mut silent = ws_connect(server.addr).await;
    let pinger = tokio::spawn(async move {
        // Reading for a while answers the server's pings.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
        let mut pings = 0;
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut lively.ws)).await
        {
            if m.is_ping() {
                pings += 1;
            }
        }
        (pings, lively)
    });
    let (pings, mut lively) = pinger.await.unwrap();
    assert!(pings >= 2, "pings: {pings}");
    assert!(matches!(
        lively.call(json!({"type": "ping"})).await,
        ServerFrame::Pong { .. }
    ));
    let (frames, code) = silent.until_close().await;
    assert_eq!(code, Some(4001));
    assert!(
        frames.iter().any(|f| matches!(
            f,
            ServerFrame::Closing {
                reason: ErrorCode::Idle,
                ..
            }
        )),
        "{frames:?}"
    );
    drop((lively, silent));
    server.stop().await.unwrap();
}

/// Reads `/metrics` until `line` is in it (bounded).
async fn until_metric(addr: std::net::SocketAddr, line: &str) {
    until_metric_via(addr, None, line).await;
}

/// `/metrics` over plain HTTP, or over HTTPS through `tls`.
async fn metrics_text(
    addr: std::net::SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> String {
    match tls {
        None => support::http(addr, "GET", "/metrics", None, None).await,
        Some(tls) => support::https(addr, tls, "GET", "/metrics").await,
    }
    .text()
}

/// Waits until `/metrics` (read through `tls` if given) has `line`.
async fn until_metric_via(
    addr: std::net::SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    line: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(addr, tls).await;
        if text.contains(line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {line:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a counter or gauge in `/metrics`.
async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    metric_via(addr, None, name).await
}

/// [`metric`], read through `tls` if given.
async fn metric_via(
    addr: std::net::SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    name: &str,
) -> u64 {
    let text = metrics_text(addr, tls).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Sends a WebSocket ping and waits (bounded) for its pong.
async fn ping_pong<S>(client: &mut support::Client<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    futures_util::SinkExt::send(
        &mut client.ws,
        tokio_tungstenite::tungstenite::Message::Ping(b"still there?".to_vec().into()),
    )
    .await
    .unwrap();
    let ponged = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match futures_util::StreamExt::next(&mut client.ws).await {
                Some(Ok(m)) if m.is_pong() => return m.into_data(),
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(ponged.unwrap().as_ref(), b"still there?");
}

/// An idle session holds no task: it sleeps on its socket, its outbox and
/// the ping clock, and whichever stirs first runs it again: the client's
/// next frame, a message fanned out to it, a ping due, the shutdown. A
/// session with steady traffic keeps its task until an epoch of the ping
/// clock goes by with little.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_sleep_without_a_task_and_wake_for_what_they_wait_on() {
    let mut server = TestServer::start(
        support::settings()
            .ping_interval(Duration::from_secs(2))
            .close_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut alice = ws_connect(server.addr).await;
    let mut bob = ws_connect(server.addr).await;
    support::two_in_a_room(&mut alice, "alice", &mut bob, "bob", "lobby").await;
    let r = bob
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby"}]}))
        .await;
    assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    // Forty more that never send a frame.
    let mut quiet = Vec::new();
    for _ in 0..40 {
        quiet.push(ws_connect(server.addr).await);
    }
    until_metric(server.addr, "chat_ws_sessions_asleep 42\n").await;
    // Their sockets wait in the dorm, outside tokio's reactor.
    until_metric(server.addr, "chat_ws_sockets_resting 42\n").await;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(tasks < 42, "{tasks} tasks for 42 idle sessions");

    // Alice's frame wakes her session; the fan-out wakes Bob's.
    for i in 0..3 {
        let ack = alice
            .call(json!({"type": "send", "room": "lobby", "body": format!("m{i}")}))
            .await;
        assert!(matches!(ack, ServerFrame::Ack { .. }), "{ack:?}");
        let got = bob
            .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
            .await;
        assert!(
            matches!(&got, ServerFrame::Message { message, .. } if message.body == format!("m{i}")),
            "{got:?}"
        );
        until_metric(server.addr, "chat_ws_sessions_asleep 42\n").await;
        until_metric(server.addr, "chat_ws_sockets_resting 42\n").await;
    }

    // A hundred requests at once (at least sixteen in one epoch of a
    // second, however the epochs fall, even on a slow machine): Alice's
    // session stays up, then sleeps.
    for _ in 0..100 {
        let r = alice.call(json!({"type": "ping"})).await;
        assert!(matches!(r, ServerFrame::Pong { .. }), "{r:?}");
    }
    // (Read again if a tick of the clock has the others up for a moment.)
    let awake = tokio::time::timeout(
        Duration::from_millis(300),
        until_metric(server.addr, "chat_ws_sessions_asleep 41\n"),
    )
    .await;
    assert!(awake.is_ok(), "a lively session fell asleep");
    until_metric(server.addr, "chat_ws_sessions_asleep 42\n").await;

    // The ping clock wakes a sleeper whose client went quiet: pinged.
    let pinged = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match futures_util::StreamExt::next(&mut quiet[0].ws).await {
                Some(Ok(m)) if m.is_ping() => return,
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(pinged.is_ok(), "a sleeping session was never pinged");

    // A keep-alive from a resting client is answered at rest: a pong, the
    // socket left in the dorm. (Alice's messages above took hers back.)
    until_metric(server.addr, "chat_ws_sockets_resting 42\n").await;
    let risen = metric(server.addr, "chat_ws_sockets_risen_total").await;
    assert!(risen >= 3, "{risen} sockets taken back for three messages");
    ping_pong(&mut quiet[1]).await;
    assert_eq!(
        metric(server.addr, "chat_ws_sockets_risen_total").await,
        risen
    );
    until_metric(server.addr, "chat_ws_sockets_resting 42\n").await;

    // A client hanging up on a resting socket ends its session.
    drop(quiet.pop());
    until_metric(server.addr, "chat_ws_connections 41\n").await;
    until_metric(server.addr, "chat_ws_sockets_resting 41\n").await;

    // The shutdown wakes every sleeper to say goodbye.
    server.shutdown();
    for c in quiet.iter_mut().chain([&mut alice, &mut bob]) {
        let (_, code) = c.until_close().await;
        assert_eq!(code, Some(1001));
    }
    server.stop().await.unwrap();
}

/// WSS sessions sleep like plain ones, and their sockets rest in the dorm
/// too (TLS runs over the same socket type, its buffers released): the
/// fan-out wakes a subscriber and is delivered, the client's frames are
/// read, a keep-alive is answered at rest, a hang-up ends the session,
/// and the shutdown reaches every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_sessions_rest_in_the_dorm_and_wake_for_what_they_wait_on() {
    let (server_cfg, client_cfg) = support::tls_pair();
    let mut server = TestServer::start(
        support::settings()
            .tls(server_cfg)
            .ping_interval(Duration::from_secs(2))
            .close_timeout(Duration::from_secs(2)),
    )
    .await;
    let tls = tokio_rustls::TlsConnector::from(client_cfg);
    let addr = server.addr;
    let mut alice = support::wss_connect(addr, &tls).await;
    let mut bob = support::wss_connect(addr, &tls).await;
    support::two_in_a_room(&mut alice, "alice", &mut bob, "bob", "lobby").await;
    let r = bob
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby"}]}))
        .await;
    assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    let mut quiet = Vec::new();
    for _ in 0..10 {
        quiet.push(support::wss_connect(addr, &tls).await);
    }
    until_metric_via(addr, Some(&tls), "chat_ws_sockets_resting 12\n").await;

    for i in 0..3 {
        let ack = alice
            .call(json!({"type": "send", "room": "lobby", "body": format!("m{i}")}))
            .await;
        assert!(matches!(ack, ServerFrame::Ack { .. }), "{ack:?}");
        let got = bob
            .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
            .await;
        assert!(
            matches!(&got, ServerFrame::Message { message, .. } if message.body == format!("m{i}")),
            "{got:?}"
        );
        until_metric_via(addr, Some(&tls), "chat_ws_sockets_resting 12\n").await;
    }

    let risen = metric_via(addr, Some(&tls), "chat_ws_sockets_risen_total").await;
    assert!(risen >= 3, "{risen} sockets taken back for three messages");
    ping_pong(&mut quiet[1]).await;
    assert_eq!(
        metric_via(addr, Some(&tls), "chat_ws_sockets_risen_total").await,
        risen
    );

    drop(quiet.pop());
    until_metric_via(addr, Some(&tls), "chat_ws_sockets_resting 11\n").await;

    server.shutdown();
    for c in quiet.iter_mut() {
        let (_, code) = c.until_close().await;
        assert_eq!(code, Some(1001));
    }
    for c in [&mut alice, &mut bob] {
        let (_, code) = c.until_close().await;
        assert_eq!(code, Some(1001));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_says_going_away_and_serve_returns() {
    let mut server =
        TestServer::start(support::settings().close_timeout(Duration::from_secs(2))).await;
    let addr = server.addr;
    let mut a = ws_connect(addr).await;
    let mut b = ws_connect(addr).await;
    a.signup("alice").await;
    let started = tokio::time::Instant::now();
    server.shutdown();
    for c in [&mut a, &mut b] {
        let (frames, code) = c.until_close().await;
        assert_eq!(code, Some(1001));
        assert!(
            frames.iter().any(|f| matches!(
                f,
                ServerFrame::Closing {
                    reason: ErrorCode::ShuttingDown,
                    ..
                }
            )),
            "{frames:?}"
        );
    }
    server.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn upgrade_without_websocket_headers_is_refused() {
    let server = TestServer::start(support::settings()).await;
    let r = support::http(server.addr, "GET", "/ws", None, None).await;
    assert_eq!(r.status, 426);
    assert_eq!(r.error_code(), "upgrade_required");
    server.stop().await.unwrap();
}

/// Invariant 4 with write coalescing: frames held for the window still
/// count against the session's bounded queue, so a room busier than the
/// queue lags that subscriber out (close 4000, it resumes by `seq`) instead
/// of growing it, while the sender keeps getting every ack at once.
#[tokio::test]
async fn a_queue_that_fills_during_the_window_lags_only_its_subscriber() {
    let engine = chat_core::Engine::builder()
        .limits(support::limits().max_queue_frames(16))
        .build()
        .unwrap();
    let settings = support::settings().write_coalesce(Duration::from_secs(3));
    let server = TestServer::start_with(engine, settings).await;
    let mut alice = ws_connect(server.addr).await;
    let mut bob = ws_connect(server.addr).await;
    support::two_in_a_room(&mut alice, "alice", &mut bob, "bob", "lobby").await;
    let r = bob
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 0}]}))
        .await;
    assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    // 40 messages within bob's 3 s window: more than his 16-frame queue.
    for i in 1..=40u64 {
        let ack = alice
            .call(json!({"type": "send", "room": "lobby", "body": format!("m{i}")}))
            .await;
        assert!(
            matches!(ack, ServerFrame::Ack { seq, .. } if seq == i),
            "{ack:?}"
        );
    }
    let (frames, code) = bob.until_close().await;
    assert_eq!(code, Some(4000), "{frames:?}");
    assert!(frames
        .iter()
        .any(|f| matches!(f, ServerFrame::Closing { reason, .. } if *reason == ErrorCode::Lagged)));
    server.stop().await.unwrap();
}

/// A client that writes several sends at once (with its Close after them)
/// gets them stored together, acked in order, and the Close handled last;
/// with `read_batch_frames(1)` each is handled on its own, same replies.
#[tokio::test]
async fn pipelined_sends_are_stored_together_and_acked_in_order_before_a_close() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    for batch in [32, 1] {
        let settings = support::settings().read_batch_frames(batch);
        let server = TestServer::start(settings).await;
        let mut alice = ws_connect(server.addr).await;
        let mut bob = ws_connect(server.addr).await;
        support::two_in_a_room(&mut alice, "alice", &mut bob, "bob", "lobby").await;

        // One write: 20 sends and a Close.
        for i in 1..=20u64 {
            let req = json!({"type": "send", "room": "lobby", "body": format!("m{i}"), "id": i});
            bob.ws
                .feed(Message::Text(req.to_string().into()))
                .await
                .unwrap();
        }
        let bye = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        bob.ws.feed(Message::Close(Some(bye))).await.unwrap();
        bob.ws.flush().await.unwrap();

        let (frames, code) = bob.until_close().await;
        let acks: Vec<(u64, u64)> = frames
            .iter()
            .map(|f| match f {
                ServerFrame::Ack {
                    id: Some(id), seq, ..
                } => (*id, *seq),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(acks, (1..=20).map(|i| (i, i)).collect::<Vec<_>>());
        assert_eq!(code, Some(1000));
        let batched = server.engine.metrics().sends_batched.get();
        if batch == 1 {
            assert_eq!(batched, 0);
        } else {
            // All 20 arrive in one read on loopback; at least a run of
            // them went to the store together.
            assert!(batched >= 2, "{batched} sends stored together");
        }
        server.stop().await.unwrap();
    }
}

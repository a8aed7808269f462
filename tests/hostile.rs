//! Hostile clients against the real server: each case ends with a clear
//! error or close code, and two ordinary users keep chatting at normal
//! latency throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use chat_core::{ClientFrame, ErrorCode, Request, ServerFrame};
use support::{code, Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Two ordinary users chatting in `calm` while a case runs: one sends, the
/// other measures how long each message takes to arrive.
struct Bystanders {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Bystanders {
    async fn start(server: &Server) -> Bystanders {
        let mut a = Client::ws(server).await;
        let mut b = Client::tcp(server).await;
        a.signup("calm-a").await;
        b.signup("calm-b").await;
        a.ok(ClientFrame::CreateRoom {
            room: "calm".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
        b.ok(ClientFrame::Join {
            room: "calm".into(),
        })
        .await;
        b.subscribe("calm", None).await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut latencies = Vec::new();
            // Bounded: at most 2,000 messages, five a second.
            for i in 0..2_000 {
                // Chat at least a second's worth, however short the case.
                if *stopped.borrow() && i >= 5 {
                    break;
                }
                let sent = Instant::now();
                a.ok(ClientFrame::Send {
                    room: "calm".into(),
                    body: format!("calm {i}"),
                    client_id: None,
                })
                .await;
                let m = b.messages(1).await;
                assert_eq!(m[0].body, format!("calm {i}"));
                latencies.push(sent.elapsed());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            latencies
        });
        Bystanders { stop, task }
    }

    /// Stops them and checks they chatted at normal latency all along.
    async fn finish(self) {
        let _ = self.stop.send(true);
        let mut l = self.task.await.expect("the bystanders' chat failed");
        assert!(l.len() >= 3, "the bystanders barely chatted: {}", l.len());
        l.sort();
        let p99 = l[(l.len() * 99 / 100).min(l.len() - 1)];
        // Loopback on a shared 2-core machine: generous, but a stalled room
        // (seconds) would fail it.
        assert!(p99 < Duration::from_millis(750), "bystander p99 {p99:?}");
    }
}

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), extra);
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_and_stuck_tls_handshakes_are_dropped() {
    let (_d, server) = start(&[]);
    let calm = Bystanders::start(&server).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&server.http).await.unwrap();
        // Half a request, never finished.
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        idle.push(s);
        // And a TLS connection that never says hello.
        idle.push(TcpStream::connect(&server.tcp).await.unwrap());
    }
    // The server drops every one of them after its header / handshake
    // timeout (10 s by default).
    let deadline = Instant::now() + Duration::from_secs(25);
    for mut s in idle {
        let mut buf = [0u8; 512];
        let left = deadline.saturating_duration_since(Instant::now());
        loop {
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("a stalled connection was kept open"),
            }
        }
    }
    calm.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_as_lagged() {
    never_reads(false).await;
}

/// The same over TLS TCP, whose sessions sleep and rest as WebSocket ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_tcp_client_that_never_reads_is_disconnected_as_lagged() {
    never_reads(true).await;
}

/// A subscriber (over TLS TCP if `tcp`) that stops reading while a room
/// floods: dropped as lagged, told why, and the room goes on.
async fn never_reads(tcp: bool) {
    let (_d, server) = start(&[]);
    let calm = Bystanders::start(&server).await;
    let mut flooder = Client::ws(&server).await;
    flooder.signup("flooder").await;
    flooder
        .ok(ClientFrame::CreateRoom {
            room: "loud".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    let mut sleeper = if tcp {
        Client::tcp(&server).await
    } else {
        Client::ws(&server).await
    };
    sleeper.signup("sleeper").await;
    sleeper
        .ok(ClientFrame::Join {
            room: "loud".into(),
        })
        .await;
    sleeper.subscribe("loud", None).await;
    // The sleeper stops reading; 3,000 messages of 4 KB (12 MB) overflow its
    // socket buffers and then its bounded queue.
    let body = "z".repeat(4_000);
    for i in 0..3_000u32 {
        let frame = ClientFrame::Send {
            room: "loud".into(),
            body: body.clone(),
            client_id: None,
        };
        flooder
            .send(&Request {
                id: Some(u64::from(i)),
                frame,
            })
            .await;
        if i % 100 == 99 {
            // Keep the flooder's own acks drained.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(1), flooder.recv()).await
            {}
        }
    }
    // When the sleeper wakes up, the server has told it why it was dropped.
    let mut reason = None;
    while let Some(f) = sleeper.next().await {
        if let ServerFrame::Closing { reason: r, .. } = f {
            reason = Some(r);
        }
    }
    assert_eq!(reason, Some(ErrorCode::Lagged));
    calm.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_over_the_rate_limit_are_refused_for_the_flooder_only() {
    let (_d, server) = start(&["--rate-burst", "10", "--rate-per-second", "5"]);
    let calm = Bystanders::start(&server).await;
    let mut flooder = Client::tcp(&server).await;
    flooder.signup("flooder").await;
    flooder
        .ok(ClientFrame::CreateRoom {
            room: "spam".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    let mut limited = 0;
    for i in 0..200 {
        let frame = ClientFrame::Send {
            room: "spam".into(),
            body: format!("spam {i}"),
            client_id: None,
        };
        if code(&flooder.call(frame).await) == Some(ErrorCode::RateLimited) {
            limited += 1;
        }
    }
    assert!(limited >= 150, "only {limited} of 200 refused");
    calm.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_admission_limit_get_server_busy() {
    let (_d, server) = start(&["--max-sessions", "20"]);
    let calm = Bystanders::start(&server).await;
    // 60 more clients for 18 free slots: each is either admitted (its first
    // frame is `hello`) or told `server_busy`, at once (HTTP 503) or after
    // a short wait in the bounded admission queue: never dropped silently.
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let url = format!("ws://{}/ws", server.http);
        tasks.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            match tokio_tungstenite::connect_async(url).await {
                Ok((mut ws, _)) => {
                    let first = tokio::time::timeout(Duration::from_secs(15), ws.next()).await;
                    let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) = first
                    else {
                        panic!("no first frame: {first:?}");
                    };
                    match chat_core::Codec::decode_server(t.as_bytes()).unwrap() {
                        ServerFrame::Hello { .. } => Some(ws),
                        ServerFrame::Error {
                            code: ErrorCode::ServerBusy,
                            ..
                        } => None,
                        other => panic!("{other:?}"),
                    }
                }
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status(), 503);
                    None
                }
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let mut admitted = Vec::new();
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(ws) => admitted.push(ws),
            None => busy += 1,
        }
    }
    assert_eq!(admitted.len(), 18);
    assert_eq!(busy, 42);
    calm.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_nested_frames_get_clear_answers() {
    let (_d, server) = start(&[]);
    let calm = Bystanders::start(&server).await;
    let mut c = Client::ws(&server).await;
    c.signup("mallory").await;
    // Deeply nested JSON: an error, the connection stays usable.
    c.send_raw_ws(format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes())
        .await;
    assert_eq!(code(&c.next().await.unwrap()), Some(ErrorCode::BadFrame));
    // Not JSON, and JSON of no known request.
    c.send_raw_ws(b"hello?".to_vec()).await;
    assert_eq!(code(&c.next().await.unwrap()), Some(ErrorCode::BadFrame));
    c.send_raw_ws(br#"{"type":"launch_missiles"}"#.to_vec())
        .await;
    assert_eq!(code(&c.next().await.unwrap()), Some(ErrorCode::BadFrame));
    // Invalid UTF-8 (sent as binary): refused, still usable.
    c.send_raw_ws(vec![0xff, 0xfe, b'{', 0x80]).await;
    assert_eq!(code(&c.next().await.unwrap()), Some(ErrorCode::BadFrame));
    assert!(matches!(
        c.call(ClientFrame::Ping).await,
        ServerFrame::Pong { .. }
    ));
    // Oversized: closed with 1009 after a closing frame.
    c.send_raw_ws(vec![b' '; 200_000]).await;
    assert_eq!(c.close_code().await, Some(1009));
    calm.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tokens_and_reused_message_ids_get_nowhere() {
    let (_d, server) = start(&[]);
    let calm = Bystanders::start(&server).await;
    let mut alice = Client::ws(&server).await;
    let token = alice.signup("alice").await;
    alice
        .ok(ClientFrame::CreateRoom {
            room: "r".into(),
            kind: "public".into(),
            topic: String::new(),
        })
        .await;
    let ServerFrame::Ack { seq, .. } = alice
        .ok(ClientFrame::Send {
            room: "r".into(),
            body: "original".into(),
            client_id: Some("id-1".into()),
        })
        .await
    else {
        panic!()
    };
    // Mallory reuses alice's message id: a new message of hers, alice's
    // stays as it was.
    let mut mallory = Client::tcp(&server).await;
    mallory.signup("mallory").await;
    mallory.ok(ClientFrame::Join { room: "r".into() }).await;
    let ServerFrame::Ack {
        seq: m_seq,
        duplicate,
        ..
    } = mallory
        .ok(ClientFrame::Send {
            room: "r".into(),
            body: "overwritten!".into(),
            client_id: Some("id-1".into()),
        })
        .await
    else {
        panic!()
    };
    assert!(!duplicate);
    assert_ne!(m_seq, seq);
    let all = alice.history_all("r").await;
    assert_eq!(all.iter().find(|m| m.seq == seq).unwrap().body, "original");
    // A logged-out token replayed, and made-up ones, are refused.
    alice.ok(ClientFrame::Logout).await;
    let mut replay = Client::tcp(&server).await;
    let r = replay.call(ClientFrame::Auth { token }).await;
    assert_eq!(code(&r), Some(ErrorCode::InvalidToken));
    let r = replay
        .call(ClientFrame::Auth {
            token: "A".repeat(43),
        })
        .await;
    assert_eq!(code(&r), Some(ErrorCode::InvalidToken));
    let r = replay.call(ClientFrame::ListRooms).await;
    assert_eq!(code(&r), Some(ErrorCode::Unauthenticated));
    calm.finish().await;
}

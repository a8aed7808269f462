//! The server's own WebSocket framing against real clients on 127.0.0.1:
//! fragmented messages, frames split across TCP writes, control frames,
//! the closing handshake and protocol violations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use chat_core::{Codec, ErrorCode, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{ws_connect, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::Message;

/// A raw connection after the upgrade handshake, for frames no WebSocket
/// library would send.
async fn raw(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The key from RFC 6455, 1.3, and its accept value.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    tcp
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames (unmasked) until a Close or the end of the stream:
/// the text payloads but the greeting, and the Close's code.
async fn read_until_close(tcp: &mut TcpStream) -> (Vec<ServerFrame>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        let mut h = [0u8; 2];
        if tokio::time::timeout(WAIT, tcp.read_exact(&mut h))
            .await
            .unwrap()
            .is_err()
        {
            return (texts, None);
        }
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7F {
            126 => usize::from(tcp.read_u16().await.unwrap()),
            127 => usize::try_from(tcp.read_u64().await.unwrap()).unwrap(),
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        match h[0] {
            0x81 => match Codec::decode_server(&payload).unwrap() {
                ServerFrame::Hello { .. } => {}
                frame => texts.push(frame),
            },
            0x88 => return (texts, Some(u16::from_be_bytes([payload[0], payload[1]]))),
            other => panic!("unexpected frame {other:#x}"),
        }
    }
}

#[tokio::test]
async fn fragmented_messages_and_client_pings_are_understood() {
    let server = TestServer::start(support::settings()).await;
    let mut c = ws_connect(server.addr).await;
    let request = json!({"type": "ping", "id": 7}).to_string().into_bytes();
    let (a, b) = request.split_at(5);
    let (b, rest) = b.split_at(3);
    c.ws.feed(Message::Frame(Frame::message(
        Bytes::copy_from_slice(a),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    // A control frame may come between fragments.
    c.ws.feed(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    c.ws.feed(Message::Frame(Frame::message(
        Bytes::copy_from_slice(b),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    c.ws.send(Message::Frame(Frame::message(
        Bytes::copy_from_slice(rest),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let mut pong = None;
    let mut reply = None;
    while pong.is_none() || reply.is_none() {
        match tokio::time::timeout(WAIT, c.ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => pong = Some(p),
            Some(Ok(Message::Text(t))) => reply = Some(Codec::decode_server(t.as_bytes()).unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pong.unwrap(), Bytes::from_static(b"are you there"));
    assert!(
        matches!(reply, Some(ServerFrame::Pong { id: Some(7) })),
        "{reply:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn frames_trickling_in_byte_by_byte_are_joined() {
    let server = TestServer::start(support::settings()).await;
    let mut tcp = raw(server.addr).await;
    let pad = "p".repeat(3000);
    let mut wire = Vec::new();
    for id in 1..=3 {
        let req = json!({"type": "ping", "id": id, "pad": pad}).to_string();
        wire.extend(client_frame(0x81, req.as_bytes()));
    }
    // Uneven pieces, each its own write, so frames and headers are cut
    // anywhere on the server's side.
    let mut rest = &wire[..];
    let mut n = 1;
    while !rest.is_empty() {
        let take = n.min(rest.len());
        tcp.write_all(&rest[..take]).await.unwrap();
        tcp.flush().await.unwrap();
        rest = &rest[take..];
        n = n % 997 + 7;
        if n % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tcp.write_all(&client_frame(0x88, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let (frames, code) = read_until_close(&mut tcp).await;
    let ids: Vec<_> = frames
        .iter()
        .map(|f| match f {
            ServerFrame::Pong { id } => id.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    // The client's Close is echoed, then the server hangs up.
    assert_eq!(code, Some(1000));
    let mut end = [0u8; 1];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut end))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_clients_close_code_is_echoed() {
    let server = TestServer::start(support::settings()).await;
    let mut c = ws_connect(server.addr).await;
    c.ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4321),
        reason: "done here".into(),
    })))
    .await
    .unwrap();
    let (_, code) = c.until_close().await;
    assert_eq!(code, Some(4321));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_bad_text_with_1007() {
    let server = TestServer::start(support::settings()).await;
    // An unmasked client frame.
    let mut tcp = raw(server.addr).await;
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let (frames, code) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1002));
    assert!(frames.is_empty(), "{frames:?}");
    // An unknown opcode.
    let mut tcp = raw(server.addr).await;
    tcp.write_all(&client_frame(0x83, b"")).await.unwrap();
    assert_eq!(read_until_close(&mut tcp).await.1, Some(1002));
    // A continuation with no message before it.
    let mut tcp = raw(server.addr).await;
    tcp.write_all(&client_frame(0x80, b"x")).await.unwrap();
    assert_eq!(read_until_close(&mut tcp).await.1, Some(1002));
    // Text that is not UTF-8: the closing frame says why.
    let mut tcp = raw(server.addr).await;
    tcp.write_all(&client_frame(0x81, &[b'{', 0xC3, 0x28]))
        .await
        .unwrap();
    let (frames, code) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1007));
    assert!(
        frames.iter().any(|f| matches!(
            f,
            ServerFrame::Closing {
                reason: ErrorCode::BadFrame,
                ..
            }
        )),
        "{frames:?}"
    );
    // The server is fine.
    let mut c = ws_connect(server.addr).await;
    assert!(matches!(
        c.call(json!({"type": "ping"})).await,
        ServerFrame::Pong { .. }
    ));
    server.stop().await.unwrap();
}

/// A TLS subscriber that reads nothing while megabytes are published to
/// it: the server's writes back up into the kernel and TLS buffers (the
/// session waits on the socket, its queue holding the rest), and once the
/// client reads, every message arrives, in order.
#[tokio::test]
async fn a_tls_reader_that_falls_behind_gets_everything_once_it_reads() {
    const COUNT: usize = 4_000;
    let (server_cfg, client_cfg) = support::tls_pair();
    let limits = support::limits()
        .max_queue_frames(2 * COUNT)
        .max_queue_bytes(64 << 20);
    let engine = chat_core::Engine::builder().limits(limits).build().unwrap();
    let server = TestServer::start_with(engine, support::settings().tls(server_cfg)).await;
    let connector = tokio_rustls::TlsConnector::from(client_cfg);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let name = chat_transport_ws::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
            .await
            .unwrap();
        clients.push(support::Client::new(ws).await);
    }
    let (mut reader, mut writer) = {
        let mut it = clients.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    support::two_in_a_room(&mut writer, "writer", &mut reader, "reader", "news").await;
    let r = reader
        .call(json!({"type": "subscribe", "rooms": [{"room": "news", "last_seq": 0}]}))
        .await;
    assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    let body = "b".repeat(3_000);
    for _ in 0..COUNT {
        let ack = writer
            .call(json!({"type": "send", "room": "news", "body": body}))
            .await;
        assert!(matches!(ack, ServerFrame::Ack { .. }), "{ack:?}");
    }
    let mut seqs = Vec::new();
    while seqs.len() < COUNT {
        if let ServerFrame::Message { message } = reader.next().await {
            seqs.push(message.seq);
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "out of order");
    server.stop().await.unwrap();
}

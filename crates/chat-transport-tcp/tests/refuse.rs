//! What the server refuses: TLS 1.0 and 1.1, plain TCP, slow handshakes,
//! endless lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chat_core::{ErrorCode, ServerFrame};
use chat_transport_tcp::TcpSettings;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TLS record content types.
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
/// The `protocol_version` alert.
const PROTOCOL_VERSION: u8 = 70;

/// A TLS 1.0/1.1 style ClientHello: `version` in the hello, no
/// `supported_versions` extension, CBC and GCM suites.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    let suites: &[u16] = &[0xc02f, 0xc02b, 0xc013, 0xc014, 0x002f, 0x0035];
    let mut ext = Vec::new();
    // supported_groups: x25519, secp256r1
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms (a TLS 1.2 extension, which rustls requires
    // before it looks at the version): ecdsa_p256_sha256, rsa_pss_sha256,
    // rsa_pkcs1_sha256
    ext.extend([
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    let mut body = Vec::new();
    body.extend(version.to_be_bytes());
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend(u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1u8]; // client_hello
    hs.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![HANDSHAKE, 0x03, 0x01];
    record.extend(u16::try_from(hs.len()).unwrap().to_be_bytes());
    record.extend(hs);
    record
}

/// Everything the server sends until it closes (reset counts as closed).
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    within(async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Splits bytes into TLS records `(type, payload)`; panics on anything
/// that is not a well-formed record.
fn records(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "truncated record header: {bytes:?}");
        assert_eq!(bytes[1], 3, "not a TLS record: {bytes:?}");
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        assert!(bytes.len() >= 5 + len, "truncated record: {bytes:?}");
        out.push((bytes[0], bytes[5..5 + len].to_vec()));
        bytes = &bytes[5 + len..];
    }
    out
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_with_a_protocol_version_alert() {
    let server = TestServer::start(TcpSettings::default()).await;
    for version in [0x0301u16, 0x0302] {
        let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let reply = read_to_close(&mut tcp).await;
        let recs = records(&reply);
        assert!(
            matches!(recs.as_slice(), [(ALERT, alert)] if alert == &[2, PROTOCOL_VERSION]),
            "version {version:#06x}: expected one fatal protocol_version alert, got {recs:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn plain_tcp_json_gets_nothing_but_an_alert() {
    let server = TestServer::start(TcpSettings::default()).await;
    let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
    tcp.write_all(b"{\"type\":\"signup\",\"username\":\"eve\",\"password\":\"correct horse\"}\n")
        .await
        .unwrap();
    let reply = read_to_close(&mut tcp).await;
    assert!(
        !reply.contains(&b'{'),
        "JSON leaked: {:?}",
        String::from_utf8_lossy(&reply)
    );
    // One fatal alert (rustls says decode_error), and the socket closes.
    let recs = records(&reply);
    assert!(
        matches!(recs.as_slice(), [(ALERT, alert)] if alert.len() == 2 && alert[0] == 2),
        "expected one fatal alert, got {recs:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start(TcpSettings::default().handshake_timeout(timeout)).await;
    // One says nothing at all, one stops halfway through its ClientHello.
    let hello = legacy_client_hello(0x0303);
    for sent in [&[][..], &hello[..hello.len() / 2]] {
        let started = tokio::time::Instant::now();
        let mut tcp = TcpStream::connect(&server.addr).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let reply = read_to_close(&mut tcp).await;
        let waited = started.elapsed();
        assert!(reply.is_empty(), "{reply:?}");
        assert!(
            waited >= timeout - Duration::from_millis(50),
            "dropped after {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "dropped after {waited:?}");
    }
    // The server still serves.
    let mut c = server.client().await;
    expect(&mut c, "hello", |f| matches!(f, ServerFrame::Hello { .. })).await;
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn a_ten_mib_line_is_cut_off_with_frame_too_large() {
    let server = TestServer::start(TcpSettings::default()).await;
    let (mut rd, mut wr) = server.client().await.split();
    // The writer sends 10 MiB without a newline, then keeps going up to a
    // cap: the server must stop it long before by closing the connection.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 * 1024 * 1024 {
            if wr.send_raw(&chunk).await.is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut frames = Vec::new();
    within(async {
        while let Ok(Some(f)) = rd.recv().await {
            frames.push(f);
        }
    })
    .await;
    assert!(matches!(frames[0], ServerFrame::Hello { .. }), "{frames:?}");
    assert!(
        matches!(
            frames[1],
            ServerFrame::Error {
                code: ErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{frames:?}"
    );
    assert!(
        matches!(
            frames[2],
            ServerFrame::Closing {
                reason: ErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{frames:?}"
    );
    assert_eq!(frames.len(), 3);
    drop(rd);
    let sent = within(writer).await.unwrap();
    assert!(
        sent < 64 * 1024 * 1024,
        "the server kept reading an endless line"
    );
    server.stop().await;
}

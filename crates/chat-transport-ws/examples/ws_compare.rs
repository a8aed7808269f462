//! Run with: `cargo run --release -p chat-transport-ws --example ws_compare -- all`
//!
//! Compares WebSocket crates on the two numbers the transport is designed
//! for: server memory (RSS) per idle connection, and fan-out throughput (one
//! writer broadcasting to N local connections over loopback).
//!
//! Every variant runs the same server stack as the transport: hyper 1.x
//! HTTP/1.1 with an upgrade on `GET /ws`, then the WebSocket crate under
//! test on the upgraded socket, and one `chat_core::Outbox` per connection
//! drained in batches (up to 64 frames, one flush) by a writer running
//! concurrently with the reader in the connection's one task. The client
//! (the same for every variant: tokio-tungstenite) runs in a child process
//! so that its memory is not counted.
//!
//! Usage: `ws_compare <variant|all> [idle_conns] [fanout_conns] [messages]`
//! with variants `tungstenite` (default config), `tungstenite-small`
//! (4 KiB read buffer, every frame written at once), `tungstenite-tuned`
//! (1 KiB read buffer, writes batched until flush), `fastwebsockets`
//! (its own writer behind a `BufWriter`) and `fastwebsockets-rawwrite`
//! (fastwebsockets reads; frames written with one vectored write per batch).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::{Outbox, OutboxLimits, OutboxReceiver, Recv, Session};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Tungstenite,
    TungsteniteSmall,
    TungsteniteTuned,
    Fast,
    FastRawWrite,
}

impl Variant {
    fn parse(s: &str) -> Option<Variant> {
        match s {
            "tungstenite" => Some(Variant::Tungstenite),
            "tungstenite-small" => Some(Variant::TungsteniteSmall),
            "tungstenite-tuned" => Some(Variant::TungsteniteTuned),
            "fastwebsockets" => Some(Variant::Fast),
            "fastwebsockets-rawwrite" => Some(Variant::FastRawWrite),
            _ => None,
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Server {
    conns: AtomicUsize,
    outboxes: Mutex<Vec<Outbox>>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        return client(&args[2..]);
    }
    let which = args.get(1).map_or("all", String::as_str);
    let idle: usize = args.get(2).map_or(5_000, |s| s.parse().unwrap());
    let fan: usize = args.get(3).map_or(1_000, |s| s.parse().unwrap());
    let msgs: usize = args.get(4).map_or(1_000, |s| s.parse().unwrap());
    let variants: Vec<&str> = if which == "all" {
        vec![
            "tungstenite",
            "tungstenite-small",
            "tungstenite-tuned",
            "fastwebsockets",
            "fastwebsockets-rawwrite",
        ]
    } else {
        vec![which]
    };
    for v in variants {
        // Each variant in a fresh process so that allocator state is fresh.
        if which == "all" {
            let status = Command::new(std::env::current_exe().unwrap())
                .args([v, &idle.to_string(), &fan.to_string(), &msgs.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            continue;
        }
        let variant = Variant::parse(v).expect("unknown variant");
        run(variant, idle, fan, msgs);
    }
}

fn run(variant: Variant, idle: usize, fan: usize, msgs: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (idle_kib, idle_n) = measure(variant, idle, 0).await;
        let (_, _) = (idle_kib, idle_n);
        let (rate, _) = measure(variant, fan, msgs).await;
        println!(
            "{:<18} idle: {} conns, {:.0} bytes RSS/conn | fan-out: {} conns x {} msgs = {:.0} deliveries/s",
            format!("{variant:?}"),
            idle,
            idle_kib,
            fan,
            msgs,
            rate
        );
    });
}

/// With `msgs == 0`: opens `n` idle connections and returns bytes of RSS
/// per connection. Otherwise broadcasts `msgs` frames to `n` connections
/// and returns deliveries per second.
async fn measure(variant: Variant, n: usize, msgs: usize) -> (f64, usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server {
        conns: AtomicUsize::new(0),
        outboxes: Mutex::new(Vec::new()),
    });
    let accept = tokio::spawn(accept_loop(listener, server.clone(), variant));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "client",
            &addr.to_string(),
            &n.to_string(),
            &msgs.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::task::spawn_blocking(move || {
        let l = lines.next().unwrap().unwrap();
        (l, lines)
    });
    let (line, mut lines) = ready.await.unwrap();
    assert_eq!(line, "ready");
    while server.conns.load(Ordering::Acquire) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let result = if msgs == 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib();
        ((after.saturating_sub(before) * 1024) as f64 / n as f64, 0)
    } else {
        let outboxes = server.outboxes.lock().await.clone();
        let payload = Bytes::from(format!(
            r#"{{"type":"message","message":{{"room":"lobby","seq":1,"sender":"alice","body":"{}","ts":1700000000000,"kind":"user"}}}}"#,
            "x".repeat(40)
        ));
        let started = Instant::now();
        for _ in 0..msgs {
            for o in &outboxes {
                while o.deliver(payload.clone()).is_err() {
                    o.writable().await;
                }
            }
        }
        let done = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
            .await
            .unwrap();
        assert_eq!(done, "done");
        let secs = started.elapsed().as_secs_f64();
        ((n * msgs) as f64 / secs, 0)
    };
    child.stdin.take();
    let _ = child.kill();
    let _ = child.wait();
    accept.abort();
    for o in server.outboxes.lock().await.drain(..) {
        o.close(chat_core::ErrorCode::ShuttingDown);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    result
}

async fn accept_loop(listener: TcpListener, server: Arc<Server>, variant: Variant) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let server = server.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { upgrade(req, server, variant) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn upgrade(
    mut req: Request<Incoming>,
    server: Arc<Server>,
    variant: Variant,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .unwrap()
        .as_bytes()
        .to_vec();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = TokioIo::new(on_upgrade.await.unwrap());
        let (outbox, rx) = Outbox::new(OutboxLimits {
            max_frames: 1024,
            max_bytes: 1 << 20,
        });
        server.outboxes.lock().await.push(outbox);
        server.conns.fetch_add(1, Ordering::Release);
        match variant {
            Variant::Tungstenite | Variant::TungsteniteSmall | Variant::TungsteniteTuned => {
                tungstenite_conn(io, rx, variant).await
            }
            Variant::Fast => fast_conn(io, rx).await,
            Variant::FastRawWrite => fast_raw_conn(io, rx).await,
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Empty::new())
        .unwrap())
}

async fn tungstenite_conn<S>(io: S, mut rx: OutboxReceiver, variant: Variant)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;
    let mut config = WebSocketConfig::default();
    if variant == Variant::TungsteniteSmall {
        config = config.read_buffer_size(4096).write_buffer_size(0);
    }
    if variant == Variant::TungsteniteTuned {
        config = config.read_buffer_size(1024);
    }
    let ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let reader = async move { while let Some(Ok(_)) = stream.next().await {} };
    let writer = async move {
        let mut buf = Vec::new();
        while let Recv::Frames = rx.recv_many(&mut buf, 64).await {
            for b in buf.drain(..) {
                // As the transport does: the shared JSON bytes as a raw
                // text frame, without UTF-8 re-validation.
                let frame = Frame::message(b, OpCode::Data(Data::Text), true);
                if sink.feed(Message::Frame(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! { () = reader => {}, () = writer => {} }
}

async fn fast_conn<S>(io: S, mut rx: OutboxReceiver)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use fastwebsockets::{Frame, Payload, Role};
    let (r, w) = tokio::io::split(io);
    let (mut read, mut write) =
        fastwebsockets::after_handshake_split(r, tokio::io::BufWriter::new(w), Role::Server);
    let reader = async move {
        let mut ignore = |_f: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
        while read.read_frame(&mut ignore).await.is_ok() {}
    };
    let writer = async move {
        let mut buf = Vec::new();
        while let Recv::Frames = rx.recv_many(&mut buf, 64).await {
            for b in buf.drain(..) {
                if write
                    .write_frame(Frame::text(Payload::Borrowed(&b)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if write.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! { () = reader => {}, () = writer => {} }
}

/// fastwebsockets reads; data frames are written directly: a 2-10 byte
/// header built per frame, and one vectored write per batch, so nothing is
/// buffered per connection between batches.
async fn fast_raw_conn<S>(io: S, mut rx: OutboxReceiver)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use fastwebsockets::{Frame, Role};
    use tokio::io::AsyncWriteExt;
    let (r, mut w) = tokio::io::split(io);
    let (mut read, _unused) =
        fastwebsockets::after_handshake_split(r, tokio::io::sink(), Role::Server);
    let reader = async move {
        let mut ignore = |_f: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
        while read.read_frame(&mut ignore).await.is_ok() {}
    };
    let writer = async move {
        let mut buf = Vec::new();
        let mut heads: Vec<([u8; 10], usize)> = Vec::new();
        while let Recv::Frames = rx.recv_many(&mut buf, 64).await {
            heads.clear();
            for b in &buf {
                heads.push(header(b.len()));
            }
            let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(buf.len() * 2);
            for (b, (h, n)) in buf.iter().zip(&heads) {
                slices.push(std::io::IoSlice::new(&h[..*n]));
                slices.push(std::io::IoSlice::new(b));
            }
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                match w.write_vectored(rest).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => std::io::IoSlice::advance_slices(&mut rest, k),
                }
            }
            drop(slices);
            buf.clear();
        }
    };
    tokio::select! { () = reader => {}, () = writer => {} }
}

/// A server (unmasked) text frame header for a payload of `len` bytes.
fn header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x81;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= 0xffff {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// The client process: opens `n` connections, says `ready`, then (with
/// `msgs > 0`) counts `n * msgs` text messages and says `done`.
fn client(args: &[String]) {
    let addr: SocketAddr = args[0].parse().unwrap();
    let n: usize = args[1].parse().unwrap();
    let msgs: usize = args[2].parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let received = Arc::new(AtomicUsize::new(0));
        let all = Arc::new(tokio::sync::Notify::new());
        let mut handles = Vec::new();
        for _ in 0..n {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
                .await
                .unwrap();
            let (received, all) = (received.clone(), all.clone());
            handles.push(tokio::spawn(async move {
                let (_sink, mut stream) = ws.split();
                let mut mine = 0;
                while mine < msgs {
                    match stream.next().await {
                        Some(Ok(m)) if m.is_text() => {
                            mine += 1;
                            if received.fetch_add(1, Ordering::AcqRel) + 1 == n * msgs {
                                all.notify_one();
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
                // Hold the connection open until killed.
                std::future::pending::<()>().await;
            }));
        }
        println!("ready");
        std::io::stdout().flush().unwrap();
        if msgs > 0 {
            all.notified().await;
            println!("done");
            std::io::stdout().flush().unwrap();
        }
        std::future::pending::<()>().await;
    });
}

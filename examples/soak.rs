//! Run with: `cargo run --release --example soak -- [minutes] [clients]`
//! (defaults: 10 minutes, 200 clients).
//!
//! A bounded soak of the real server: it starts the release `chat-server`
//! example on free loopback ports with a temporary data folder, then runs
//! steady chat traffic (every client sends a message every second or so in
//! one of a few rooms) with reconnect churn (each second a few clients drop
//! their connection and come back, resuming by `seq`). It samples the
//! server's resident memory and open file descriptors after warm-up and
//! again at the end, once the clients are gone, and says whether they
//! returned to their baseline. It checks every resumed client got exactly
//! the messages it missed, and exits non-zero on loss or a leak.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{ClientFrame, Codec, Cursor, Request, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ROOMS: usize = 5;
/// Memory may settle a little above the warm-up sample (allocator caches,
/// grown tables); more than this is a leak.
const RSS_TOLERANCE_KIB: u64 = 16 * 1024;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
    resume_errors: AtomicU64,
    /// Error frames received (refused sends and the like).
    errors: AtomicU64,
}

fn proc_status(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

async fn call(ws: &mut Ws, id: u64, frame: ClientFrame) -> Option<ServerFrame> {
    let text = String::from_utf8(
        Codec::encode_request(&Request {
            id: Some(id),
            frame,
        })
        .to_vec(),
    )
    .ok()?;
    ws.send(WsMessage::Text(text.into())).await.ok()?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .ok()??
            .ok()?;
        if let WsMessage::Text(t) = msg {
            let f = Codec::decode_server(t.as_bytes()).ok()?;
            let matches = match &f {
                ServerFrame::Authed { id: i, .. }
                | ServerFrame::Ok { id: i }
                | ServerFrame::Room { id: i, .. }
                | ServerFrame::Subscribed { id: i, .. }
                | ServerFrame::Error { id: i, .. } => *i == Some(id),
                _ => false,
            };
            if matches {
                return Some(f);
            }
        }
    }
}

/// One client's life: connect, log in, follow its room, chat; on churn,
/// drop the socket and resume from the last seq seen, checking the replay
/// has no gap and no duplicate.
async fn client(
    addr: String,
    token: String,
    room: String,
    until: Instant,
    churn_every: Duration,
    stats: Arc<Stats>,
) {
    let mut last_seq: Option<u64> = None;
    let mut n = 0u64;
    while Instant::now() < until {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !matches!(
            call(
                &mut ws,
                1,
                ClientFrame::Auth {
                    token: token.clone()
                }
            )
            .await,
            Some(ServerFrame::Authed { .. })
        ) {
            stats.resume_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Joining is idempotent: members may post.
        if !matches!(
            call(&mut ws, 3, ClientFrame::Join { room: room.clone() }).await,
            Some(ServerFrame::Room { .. })
        ) {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let cursor = Cursor {
            room: room.clone(),
            last_seq: Some(last_seq.unwrap_or(0)),
        };
        let sub = Request {
            id: Some(2),
            frame: ClientFrame::Subscribe {
                rooms: vec![cursor],
            },
        };
        let text = String::from_utf8(Codec::encode_request(&sub).to_vec()).unwrap_or_default();
        if ws.send(WsMessage::Text(text.into())).await.is_err() {
            continue;
        }
        let session_end = (Instant::now() + churn_every).min(until);
        let mut tick = tokio::time::interval(Duration::from_millis(900 + (n % 200)));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() >= session_end { break; }
                    n += 1;
                    let frame = ClientFrame::Send { room: room.clone(), body: format!("soak {n}"), client_id: None };
                    let text = String::from_utf8(Codec::encode_request(&Request { id: None, frame }).to_vec()).unwrap_or_default();
                    if ws.send(WsMessage::Text(text.into())).await.is_err() { break; }
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                msg = ws.next() => {
                    let Some(Ok(WsMessage::Text(t))) = msg else {
                        if msg.is_none() || matches!(msg, Some(Err(_))) { break; }
                        continue;
                    };
                    let frame = Codec::decode_server(t.as_bytes());
                    if let Ok(ServerFrame::Error { .. }) = frame {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(ServerFrame::Message { message }) = frame {
                        if let Some(prev) = last_seq {
                            if message.seq != prev + 1 {
                                stats.resume_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        last_seq = Some(message.seq);
                        stats.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let _ = ws.close(None).await;
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|d| d.join("chat-server"))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let minutes: f64 = args.next().map_or(Ok(10.0), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let data = std::env::temp_dir().join(format!("chat-soak-{}", std::process::id()));
    let bin = server_binary();
    if !bin.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release --example chat-server`",
            bin.display()
        )
        .into());
    }
    let mut server = Command::new(&bin)
        .args([
            "--data",
            data.to_str().unwrap_or("data-soak"),
            "--http",
            "127.0.0.1:0",
            "--tcp",
            "off",
        ])
        .args([
            "--rate-burst",
            "1000",
            "--rate-per-second",
            "100",
            "--log",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = server.id();
    let stdout = server.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(30))?;
        if let Some(rest) = line.trim().strip_prefix("browser:") {
            break rest
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
        }
    };

    // Accounts and rooms, once.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    let mut tokens = Vec::new();
    for i in 0..clients {
        let r = call(
            &mut ws,
            10 + i as u64,
            ClientFrame::Signup {
                username: format!("soak{i}"),
                password: "soak-password".into(),
            },
        )
        .await;
        let Some(ServerFrame::Authed { token, .. }) = r else {
            return Err(format!("signup: {r:?}").into());
        };
        tokens.push(token);
    }
    for r in 0..ROOMS {
        call(
            &mut ws,
            100_000 + r as u64,
            ClientFrame::CreateRoom {
                room: format!("soak-{r}"),
                kind: "public".into(),
                topic: String::new(),
            },
        )
        .await;
    }
    drop(ws);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_pre, fds_pre) = proc_status(pid);
    let stats = Arc::new(Stats::default());
    let total = Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let until = started + total;
    // Each client reconnects every 20-40 s: with 200 clients, about 7 a second.
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (addr, stats) = (addr.clone(), stats.clone());
        let room = format!("soak-{}", i % ROOMS);
        let churn = Duration::from_secs(20 + (i as u64 % 20));
        tasks.push(tokio::spawn(client(addr, token, room, until, churn, stats)));
    }
    // Baseline after warm-up: every client connected and chatting.
    tokio::time::sleep(total.mul_f64(0.1).min(Duration::from_secs(30))).await;
    let (rss0, fds0) = proc_status(pid);
    let mut samples = BTreeMap::new();
    while Instant::now() < until {
        tokio::time::sleep(
            Duration::from_secs(10).min(until.saturating_duration_since(Instant::now())),
        )
        .await;
        samples.insert(started.elapsed().as_secs(), proc_status(pid));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Give the server a moment to notice the last closes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss1, fds1) = proc_status(pid);
    let peak = samples.values().map(|s| s.0).max().unwrap_or(rss0);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);

    let sent = stats.sent.load(Ordering::Relaxed);
    let received = stats.received.load(Ordering::Relaxed);
    let errors = stats.resume_errors.load(Ordering::Relaxed);
    let refused = stats.errors.load(Ordering::Relaxed);
    println!(
        "soak: {minutes} min, {clients} clients, {ROOMS} rooms: sent {sent}, delivered {received}, reconnects {}, resume errors {errors}, error frames {refused}",
        stats.reconnects.load(Ordering::Relaxed)
    );
    println!("soak: server RSS {rss0} KiB after warm-up (with {clients} clients), peak {peak} KiB, {rss1} KiB at the end (no clients)");
    println!("soak: server open fds {fds_pre} before the clients, {fds0} after warm-up, {fds1} at the end");
    println!("soak: server RSS {rss_pre} KiB before the clients");
    // Every client socket is closed again (a couple of late closes allowed).
    let fds_back = fds1 <= fds_pre + 2;
    let rss_back = rss1 <= rss0 + RSS_TOLERANCE_KIB;
    println!("soak: fds back to baseline: {fds_back}; memory within {RSS_TOLERANCE_KIB} KiB of baseline: {rss_back}");
    if errors > 0 || refused > 0 || !fds_back || !rss_back {
        return Err("soak failed".into());
    }
    Ok(())
}

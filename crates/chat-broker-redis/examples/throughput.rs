//! Run with:
//!   redis-server --port 6390 --save '' --appendonly no --daemonize yes
//!   cargo run --release -p chat-broker-redis --example throughput -- redis://127.0.0.1:6390/ 20000
//!
//! Measures publish → deliver between two nodes through Redis, twice:
//!
//! - `broker`: node A's `RedisBroker::publish` to node B's fan-out sink
//!   (the transport alone), 64 publishes in flight;
//! - `engine`: two engines sharing one in-memory store; 16 clients on node
//!   A send, one subscriber on node B receives (store append, ack, publish,
//!   Redis, fan-out, the subscriber's queue).
//!
//! Prints messages per second and latency percentiles. Bounded: each run
//! gives up after 120 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_broker_redis::{RedisBroker, RedisSettings};
use chat_core::{
    Broker, ClientFrame, Codec, Cursor, Engine, EventSink, Limits, MemoryStore, Message,
    MessageKind, Recv, Request, RoomEvent, ServerFrame, Store,
};
use futures_util::StreamExt;
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const LIMIT: Duration = Duration::from_secs(120);

/// Records when each event arrives, keyed by seq.
struct Recorder {
    arrived: Mutex<HashMap<u64, Instant>>,
    want: usize,
    done: Notify,
}

impl EventSink for Recorder {
    fn deliver(&self, event: RoomEvent) {
        let mut arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seq) = event.seq {
            arrived.insert(seq, Instant::now());
        }
        if arrived.len() == self.want {
            self.done.notify_one();
        }
    }
    fn resync(&self) {}
}

struct Quiet;
impl EventSink for Quiet {
    fn deliver(&self, _: RoomEvent) {}
    fn resync(&self) {}
}

fn report(what: &str, n: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    println!(
        "{what:<7} {n} messages in {:.2} s: {:.0} msg/s; latency ms p50 {:.2}  p99 {:.2}  max {:.2}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}

fn frame(seq: u64) -> Bytes {
    Codec::encode(&ServerFrame::Message {
        message: Message {
            room: "bench".into(),
            seq,
            sender: "alice".into(),
            body: "a chat message of a typical length, some forty to eighty bytes".into(),
            ts: 1_700_000_000_000,
            kind: MessageKind::User,
            client_id: None,
            file: None,
        },
    })
}

async fn broker_run(url: &str, n: usize) -> Result<(), BoxError> {
    let settings = RedisSettings::new(url).channel_prefix("bench-broker");
    let a = RedisBroker::connect(settings.clone()).await?;
    let b = RedisBroker::connect(settings).await?;
    a.attach(Arc::new(Quiet));
    let rec = Arc::new(Recorder {
        arrived: Mutex::new(HashMap::with_capacity(n)),
        want: n,
        done: Notify::new(),
    });
    b.attach(rec.clone());
    let frames: Vec<Bytes> = (1..=n as u64).map(frame).collect();
    let sent = Arc::new(Mutex::new(HashMap::with_capacity(n)));
    let started = Instant::now();
    let a = Arc::new(a);
    futures_util::stream::iter(frames.into_iter().enumerate())
        .map(|(i, frame)| {
            let (a, sent) = (a.clone(), sent.clone());
            async move {
                let seq = i as u64 + 1;
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(seq, Instant::now());
                let ev = RoomEvent {
                    room: Arc::from("bench"),
                    seq: Some(seq),
                    frame,
                    revoke: None,
                };
                a.publish(ev).await
            }
        })
        .buffer_unordered(64)
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("publish failed: {e}");
            }
        })
        .await;
    tokio::time::timeout(LIMIT, async {
        while rec.arrived.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
            rec.done.notified().await;
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
    let arrived = rec.arrived.lock().unwrap_or_else(|p| p.into_inner());
    let lat = arrived.iter().map(|(s, t)| *t - sent[s]).collect();
    report("broker", n, elapsed, lat);
    Ok(())
}

async fn call(
    conn: &mut chat_core::Connection,
    rx: &mut chat_core::OutboxReceiver,
    frame: ClientFrame,
) -> Result<ServerFrame, BoxError> {
    conn.handle(Request { id: Some(1), frame }).await;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match tokio::time::timeout(LIMIT, rx.recv_many(&mut buf, 1)).await? {
            Recv::Frames => {
                let f = Codec::decode_server(&buf[0])?;
                if matches!(f, ServerFrame::Hello { .. }) {
                    continue;
                }
                return Ok(f);
            }
            Recv::Closed(code) => return Err(format!("closed: {code}").into()),
        }
    }
}

async fn engine_run(url: &str, n: usize) -> Result<(), BoxError> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let limits = Limits::default()
        .fast_hashing_for_tests()
        .rate_burst(10_000_000)
        .rate_messages(10_000_000);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let broker =
            RedisBroker::connect(RedisSettings::new(url).channel_prefix("bench-engine")).await?;
        nodes.push(
            Engine::builder()
                .limits(limits.clone())
                .store_arc(store.clone())
                .broker(Arc::new(broker))
                .build()?,
        );
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let signup = |name: &str| ClientFrame::Signup {
        username: name.into(),
        password: "password123".into(),
    };
    let (mut w, mut wrx) = b.open(b.admit().await?);
    call(&mut w, &mut wrx, signup("watcher")).await?;
    let create = ClientFrame::CreateRoom {
        room: "bench".into(),
        kind: "public".into(),
        topic: String::new(),
    };
    call(&mut w, &mut wrx, create).await?;
    let sub = ClientFrame::Subscribe {
        rooms: vec![Cursor {
            room: "bench".into(),
            last_seq: None,
        }],
    };
    call(&mut w, &mut wrx, sub).await?;

    let senders = 16;
    let per = n / senders;
    let total = per * senders;
    // The watcher records when each body arrives.
    let watcher = tokio::spawn(async move {
        let mut arrived: HashMap<String, Instant> = HashMap::with_capacity(total);
        let mut buf = Vec::new();
        while arrived.len() < total {
            buf.clear();
            match wrx.recv_many(&mut buf, 256).await {
                Recv::Frames => {
                    let now = Instant::now();
                    for bytes in &buf {
                        if let Ok(ServerFrame::Message { message }) = Codec::decode_server(bytes) {
                            arrived.insert(message.body, now);
                        }
                    }
                }
                Recv::Closed(code) => return Err(format!("watcher closed: {code}")),
            }
        }
        drop(w);
        Ok(arrived)
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (mut conn, mut rx) = a.open(a.admit().await?);
        call(&mut conn, &mut rx, signup(&format!("s{s}"))).await?;
        call(
            &mut conn,
            &mut rx,
            ClientFrame::Join {
                room: "bench".into(),
            },
        )
        .await?;
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(per);
            for i in 0..per {
                let body = format!("s{s}-{i}");
                sent.push((body.clone(), Instant::now()));
                let frame = ClientFrame::Send {
                    room: "bench".into(),
                    body,
                    client_id: None,
                };
                match call(&mut conn, &mut rx, frame).await {
                    Ok(ServerFrame::Ack { .. }) => {}
                    other => return Err(format!("no ack: {other:?}")),
                }
            }
            Ok(sent)
        }));
    }
    let mut sent = HashMap::with_capacity(total);
    for t in tasks {
        sent.extend(t.await??);
    }
    let arrived = tokio::time::timeout(LIMIT, watcher).await???;
    let elapsed = started.elapsed();
    let lat = arrived.iter().map(|(body, t)| *t - sent[body]).collect();
    report("engine", total, elapsed, lat);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    broker_run(&url, n).await?;
    engine_run(&url, n).await?;
    Ok(())
}

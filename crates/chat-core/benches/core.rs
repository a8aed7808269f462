//! Hot-path micro-benchmarks: frame encode/decode and fan-out to N local
//! subscribers.
//!
//! Run with: `cargo bench -p chat-core --bench core`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use chat_core::{
    ClientFrame, Codec, Cursor, Engine, Limits, LocalBroker, Message, MessageKind, OutboxReceiver,
    Request, RoomEvent, ServerFrame,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn message(body_len: usize) -> ServerFrame {
    ServerFrame::Message {
        message: Message {
            room: "lobby".into(),
            seq: 123_456,
            sender: "alice".into(),
            body: "x".repeat(body_len),
            ts: 1_764_230_400_000,
            kind: MessageKind::User,
            client_id: Some("c-123".into()),
            file: None,
        },
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let frame = message(100);
    g.bench_function("encode_message_100B", |b| b.iter(|| Codec::encode(&frame)));
    let send = Codec::encode_request(&Request {
        id: Some(42),
        frame: ClientFrame::Send {
            room: "lobby".into(),
            body: "y".repeat(100),
            client_id: Some("c-123".into()),
        },
    });
    let codec = Codec::new(64 * 1024);
    g.bench_function("decode_send_100B", |b| {
        b.iter(|| codec.decode(&send).unwrap())
    });
    g.finish();
}

struct Room {
    broker: Arc<LocalBroker>,
    receivers: Vec<OutboxReceiver>,
    _conns: Vec<chat_core::Connection>,
    _rt: tokio::runtime::Runtime,
}

fn room_with(n: usize) -> Room {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let broker = Arc::new(LocalBroker::new());
    let engine = Engine::builder()
        .limits(
            Limits::default()
                .fast_hashing_for_tests()
                .max_sessions(n + 10)
                .max_queue_frames(4096)
                .rate_burst(1_000_000),
        )
        .broker(broker.clone())
        .build()
        .unwrap();
    let (conns, receivers) = rt.block_on(async {
        let mut conns = Vec::new();
        let mut rxs = Vec::new();
        for i in 0..n {
            let (mut conn, mut rx) = engine.open(engine.admit().await.unwrap());
            let frames = [
                ClientFrame::Signup {
                    username: format!("u{i}"),
                    password: "password123".into(),
                },
                ClientFrame::Join {
                    room: "lobby".into(),
                },
                ClientFrame::Subscribe {
                    rooms: vec![Cursor {
                        room: "lobby".into(),
                        last_seq: None,
                    }],
                },
            ];
            if i == 0 {
                conn.handle(Request {
                    id: None,
                    frame: frames[0].clone(),
                })
                .await;
                conn.handle(Request {
                    id: None,
                    frame: ClientFrame::CreateRoom {
                        room: "lobby".into(),
                        kind: "public".into(),
                        topic: String::new(),
                    },
                })
                .await;
                conn.handle(Request {
                    id: None,
                    frame: frames[2].clone(),
                })
                .await;
            } else {
                for f in frames {
                    conn.handle(Request { id: None, frame: f }).await;
                }
            }
            while rx.try_recv().is_some() {}
            conns.push(conn);
            rxs.push(rx);
        }
        (conns, rxs)
    });
    Room {
        broker,
        receivers,
        _conns: conns,
        _rt: rt,
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for n in [10usize, 100, 1000] {
        let mut room = room_with(n);
        let frame = Codec::encode(&message(100));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("publish_to_{n}_subscribers"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    let ev = RoomEvent::ephemeral("lobby", frame.clone());
                    futures_executor_block_on(chat_core::Broker::publish(&*room.broker, ev))
                        .unwrap();
                    // Drain so no queue fills; the cost of taking a frame
                    // out is part of a delivery.
                    for rx in &mut room.receivers {
                        while rx.try_recv().is_some() {}
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// LocalBroker::publish never awaits, so polling it once completes it.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("LocalBroker::publish pended"),
    }
}

criterion_group!(benches, codec, fanout);
criterion_main!(benches);

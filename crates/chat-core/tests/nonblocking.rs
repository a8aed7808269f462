//! Invariant 7: no blocking on the async runtime. On a single-threaded
//! runtime, a client's ping is answered promptly while expensive password
//! hashes run: they run on the engine's own hashing threads. Had a hash run
//! on the runtime's thread, the ping would wait for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use chat_core::{ClientFrame, Engine, Limits, Request, ServerFrame};
use support::Client;

#[tokio::test(flavor = "current_thread")]
async fn pings_are_answered_while_passwords_hash() {
    // A deliberately slow hash: 64 MiB, 4 passes.
    let limits = Limits::default()
        .argon2_memory_kib(64 * 1024)
        .argon2_iterations(4)
        .hash_concurrency(1);
    let e = Engine::builder().limits(limits).build().unwrap();

    // How long one hash takes here, measured through the engine.
    let mut probe = Client::connect(&e).await;
    let started = Instant::now();
    let r = probe
        .call(ClientFrame::Signup {
            username: "probe".into(),
            password: "password123".into(),
        })
        .await;
    assert!(matches!(r, ServerFrame::Authed { .. }), "{r:?}");
    let one_hash = started.elapsed();

    // Three more sign-ups queue on the hashing thread...
    let mut signups = Vec::new();
    for i in 0..3 {
        let (mut conn, _rx) = e.open(e.admit().await.unwrap());
        signups.push(tokio::spawn(async move {
            conn.handle(Request {
                id: Some(1),
                frame: ClientFrame::Signup {
                    username: format!("user{i}"),
                    password: "password123".into(),
                },
            })
            .await;
            conn
        }));
    }
    tokio::task::yield_now().await;
    // ...while pings on the same single runtime thread come straight back.
    let mut pinger = Client::connect(&e).await;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        assert!(matches!(
            pinger.call(ClientFrame::Ping).await,
            ServerFrame::Pong { .. }
        ));
        worst = worst.max(t.elapsed());
    }
    for s in signups {
        s.await.unwrap();
    }
    assert!(
        worst < one_hash / 2,
        "a ping took {worst:?} while hashing (one hash takes {one_hash:?})"
    );
}

//! Regression test: password hashing must not grow the process's memory
//! with every login. argon2id takes 19 MiB per hash by default; when each
//! hash allocated and freed its own buffer, the C allocator kept every freed
//! buffer resident, and a burst of sign-ups left hundreds of MiB behind.
//! (Its own test binary, so nothing else allocates meanwhile.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chat_core::{ClientFrame, Engine, Limits, ServerFrame};
use support::Client;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_memory_stays_bounded_by_the_hashing_threads() {
    // Production argon2 cost (19 MiB), two hashing threads.
    let limits = Limits::default().hash_concurrency(2).rate_burst(1_000);
    let e = Engine::builder().limits(limits).build().unwrap();
    let mut c = Client::connect(&e).await;
    let before = rss_kib();
    for i in 0..30 {
        let r = c
            .call(ClientFrame::Signup {
                username: format!("user{i}"),
                password: "password123".into(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Authed { .. }), "{r:?}");
    }
    let grown = rss_kib().saturating_sub(before);
    // Two threads' buffers (2 x 19 MiB) plus slack; thirty retained buffers
    // would be 570 MiB.
    assert!(grown < 80 * 1024, "hashing grew memory by {grown} KiB");
}

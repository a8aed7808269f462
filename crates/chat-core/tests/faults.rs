//! Fault injection: a store that fails (disk full, I/O error) turns into an
//! error for the sender and no ack: never a false ack, never a broadcast of
//! something that was not stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;

use chat_core::{ErrorCode, ServerFrame};
use support::error_code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_never_acks_and_never_broadcasts() {
    let (store, e, mut alice, mut bob) = support::flaky::room().await;

    alice.send("r", "stored").await;
    store.failing.store(true, Ordering::SeqCst);
    let r = alice.send("r", "lost to a full disk").await;
    assert_eq!(error_code(&r), Some(ErrorCode::StoreFailed), "{r:?}");
    // The error does not leak backend details to the client.
    let ServerFrame::Error { message, .. } = &r else {
        panic!()
    };
    assert!(!message.contains("No space"), "{message}");
    store.failing.store(false, Ordering::SeqCst);
    let ServerFrame::Ack { seq, .. } = alice.send("r", "after recovery").await else {
        panic!()
    };
    assert_eq!(seq, 2, "the failed message took no seq");

    // Bob saw exactly the stored messages, gap-free.
    let got: Vec<(u64, String)> = [bob.next_message().await, bob.next_message().await]
        .into_iter()
        .map(|m| (m.seq, m.body))
        .collect();
    assert_eq!(
        got,
        [(1, "stored".to_owned()), (2, "after recovery".to_owned())]
    );
    assert_eq!(e.metrics().store_errors.get(), 1);
}

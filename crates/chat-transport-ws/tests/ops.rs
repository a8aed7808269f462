//! `/health`, `/metrics`, the web client's files and connection limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::store::{
    Appended, HistoryQuery, NewMessage, RoomRecord, Store, TokenRecord, UserRecord,
};
use chat_core::{Engine, MemoryStore, Message, Role, ServerFrame, StoreError};
use serde_json::json;
use support::{http, ws_connect, TestServer};

/// A memory store whose ping can be made to fail.
struct FlakyStore {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Store for FlakyStore {
    async fn create_user(&self, u: UserRecord) -> Result<(), StoreError> {
        self.inner.create_user(u).await
    }
    async fn user(&self, n: &str) -> Result<Option<UserRecord>, StoreError> {
        self.inner.user(n).await
    }
    async fn put_token(&self, t: TokenRecord) -> Result<(), StoreError> {
        self.inner.put_token(t).await
    }
    async fn token(&self, h: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token(h).await
    }
    async fn delete_token(&self, h: &str) -> Result<(), StoreError> {
        self.inner.delete_token(h).await
    }
    async fn create_room(&self, r: RoomRecord, m: &[(String, Role)]) -> Result<(), StoreError> {
        self.inner.create_room(r, m).await
    }
    async fn room(&self, n: &str) -> Result<Option<RoomRecord>, StoreError> {
        self.inner.room(n).await
    }
    async fn rooms_of_kinds(&self, k: &[String], l: u32) -> Result<Vec<RoomRecord>, StoreError> {
        self.inner.rooms_of_kinds(k, l).await
    }
    async fn memberships(&self, u: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
        self.inner.memberships(u).await
    }
    async fn set_member(&self, r: &str, u: &str, role: Role) -> Result<(), StoreError> {
        self.inner.set_member(r, u, role).await
    }
    async fn remove_member(&self, r: &str, u: &str) -> Result<bool, StoreError> {
        self.inner.remove_member(r, u).await
    }
    async fn member_role(&self, r: &str, u: &str) -> Result<Option<Role>, StoreError> {
        self.inner.member_role(r, u).await
    }
    async fn members(&self, r: &str) -> Result<Vec<(String, Role)>, StoreError> {
        self.inner.members(r).await
    }
    async fn append(&self, m: NewMessage) -> Result<Appended, StoreError> {
        self.inner.append(m).await
    }
    async fn history(&self, r: &str, q: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.inner.history(r, q).await
    }
    async fn last_seq(&self, r: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(r).await
    }
    async fn seq_at(&self, r: &str, ts: u64) -> Result<u64, StoreError> {
        self.inner.seq_at(r, ts).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn health_reports_the_store() {
    let down = Arc::new(AtomicBool::new(false));
    let engine = Engine::builder()
        .limits(support::limits())
        .store(FlakyStore {
            inner: MemoryStore::new(),
            down: down.clone(),
        })
        .build()
        .unwrap();
    let server = TestServer::start_with(engine, support::settings()).await;
    let r = http(server.addr, "GET", "/health", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok", "store": "ok"}));
    down.store(true, Ordering::SeqCst);
    let r = http(server.addr, "GET", "/health", None, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "unavailable");
    assert!(r.json()["store"].as_str().unwrap().starts_with("error"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = TestServer::start(support::settings()).await;
    let mut alice = ws_connect(server.addr).await;
    alice.signup("alice").await;
    alice
        .call(json!({"type": "create_room", "room": "lobby"}))
        .await;
    alice
        .call(json!({"type": "subscribe", "rooms": [{"room": "lobby"}]}))
        .await;
    for i in 0..3 {
        let r = alice
            .call(json!({"type": "send", "room": "lobby", "body": format!("m{i}")}))
            .await;
        assert!(matches!(r, ServerFrame::Ack { .. }));
    }
    alice.send_text("nonsense").await;
    let r = http(server.addr, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text();
    for line in [
        "chat_ws_connections 1\n",
        "chat_sessions 1\n",
        "chat_authenticated_sessions 1\n",
        "chat_messages_in_total 3\n",
        "chat_fanout_deliveries_total 3\n",
        "chat_store_append_seconds_count 3\n",
        "chat_store_append_seconds_bucket{le=\"+Inf\"} 3\n",
        "# TYPE chat_bot_latency_seconds histogram\n",
        "# TYPE chat_lagged_total counter\n",
        "# TYPE chat_rate_limited_total counter\n",
        "# TYPE chat_admission_rejected_total counter\n",
        "# TYPE chat_store_errors_total counter\n",
        "# TYPE chat_bot_requests_total counter\n",
        "# TYPE chat_bot_failures_total counter\n",
        "# TYPE chat_frames_in_total counter\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // The room, plus whatever channels the engine subscribes a session to
    // on its own (its user's notifications).
    let subs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("chat_subscriptions "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(subs >= 1, "{text}");
    // The bad frame is counted once it has been handled.
    let f = alice
        .next_matching(|f| matches!(f, ServerFrame::Error { .. }))
        .await;
    assert!(matches!(f, ServerFrame::Error { .. }));
    let text = http(server.addr, "GET", "/metrics", None, None)
        .await
        .text();
    assert!(text.contains("chat_bad_frames_total 1\n"), "{text}");
    // The /metrics connection itself is open while counted.
    assert!(text.contains("chat_http_connections 2\n"), "{text}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_web_client_is_served() {
    let server = TestServer::start(support::settings()).await;
    let r = http(server.addr, "GET", "/", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert!(r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    // Shared images are shown through blob: URLs.
    assert!(r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("img-src 'self' data: blob:"));
    let html = r.text();
    assert!(
        html.contains("app.js") && html.contains("app.css"),
        "{html}"
    );
    for (path, ty) in [
        ("/app.js", "text/javascript"),
        ("/view.js", "text/javascript"),
        ("/state.js", "text/javascript"),
        ("/auth.js", "text/javascript"),
        ("/util.js", "text/javascript"),
        ("/bots.js", "text/javascript"),
        ("/files.js", "text/javascript"),
        ("/notify.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/icon.svg", "image/svg+xml"),
    ] {
        let r = http(server.addr, "GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.headers["content-type"].to_str().unwrap().starts_with(ty));
        assert!(!r.body.is_empty());
    }
    // Nothing on the page loads from another origin (the SVG namespace is
    // a name, not a fetch).
    let mut bodies = vec![html];
    for path in [
        "/app.js",
        "/view.js",
        "/state.js",
        "/auth.js",
        "/util.js",
        "/bots.js",
        "/files.js",
        "/notify.js",
        "/app.css",
    ] {
        bodies.push(http(server.addr, "GET", path, None, None).await.text());
    }
    for body in bodies {
        let body = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "external reference"
        );
    }
    let r = http(server.addr, "GET", "/nope", None, None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = http(server.addr, "POST", "/", None, None).await;
    assert_eq!(r.status, 405);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn admission_limit_refuses_websockets_with_503() {
    let engine = Engine::builder()
        .limits(
            support::limits()
                .max_sessions(1)
                .admission_queue(0)
                .admission_wait(std::time::Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    let server = TestServer::start_with(engine, support::settings()).await;
    let _first = ws_connect(server.addr).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let err = tokio_tungstenite::client_async(format!("ws://{}/ws", server.addr), tcp)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => {
            assert_eq!(res.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "server_busy");
        }
        e => panic!("{e}"),
    }
    let text = http(server.addr, "GET", "/metrics", None, None)
        .await
        .text();
    assert!(text.contains("chat_admission_rejected_total 1\n"), "{text}");
    server.stop().await.unwrap();
}

/// Reads from a raw connection until the server closes it; false when it
/// is still open after `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let settings = support::settings()
        .header_read_timeout(std::time::Duration::from_millis(300))
        .handshake_timeout(std::time::Duration::from_millis(300));
    let server = TestServer::start(settings.clone()).await;
    let wait = std::time::Duration::from_secs(3);
    // Headers that never finish.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, wait).await,
        "slow headers kept open"
    );
    // A keep-alive connection that goes quiet after one request.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut idle, wait).await,
        "idle keep-alive kept open"
    );
    server.stop().await.unwrap();

    // A TLS port where the client never starts the handshake.
    let (tls, _) = support::tls_pair();
    let server = TestServer::start(settings.tls(tls)).await;
    let mut mute = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut mute, wait).await,
        "TLS handshake never timed out"
    );
    server.stop().await.unwrap();
}

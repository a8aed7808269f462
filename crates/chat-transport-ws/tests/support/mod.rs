//! Test support: a server on 127.0.0.1:0 with a streaming test bot, a
//! WebSocket client, a tiny HTTP client and a self-signed TLS setup.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{Bot, BotRequest, BotStream, BotTask, Codec, Engine, Limits, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use chat_transport_ws::rustls;
use chat_transport_ws::{serve, Error, WsSettings};

/// How long any single expectation may wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A bot that streams its reply in several deltas.
pub struct StreamBot {
    pub delay: Duration,
}

impl Bot for StreamBot {
    fn name(&self) -> &str {
        "helper"
    }

    fn reply(&self, request: BotRequest) -> BotStream {
        let parts: Vec<String> = match &request.task {
            BotTask::SmartReplies => vec![
                "Sounds good!\n".into(),
                "On my way\n".into(),
                "Let me check.\n".into(),
            ],
            BotTask::Summarize { .. } => {
                vec![
                    "Summary: ".into(),
                    format!("{} messages", request.context.len()),
                ]
            }
            BotTask::Answer { prompt } => {
                let words = ["Streaming", " an", " answer", " to: "];
                let mut v: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
                v.push(prompt.clone());
                v
            }
        };
        let delay = self.delay;
        futures_util::stream::iter(parts)
            .then(move |p| async move {
                tokio::time::sleep(delay).await;
                Ok(p)
            })
            .boxed()
    }
}

/// Default settings with a short close timeout: tests often stop the
/// server while their clients are not reading.
pub fn settings() -> WsSettings {
    WsSettings::default().close_timeout(Duration::from_millis(500))
}

pub fn limits() -> Limits {
    Limits::default()
        .fast_hashing_for_tests()
        .rate_burst(10_000)
        .rate_messages(10_000)
}

pub fn engine() -> Engine {
    Engine::builder()
        .limits(limits())
        .bot(StreamBot {
            delay: Duration::from_millis(20),
        })
        .build()
        .unwrap()
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<Result<(), Error>>,
}

impl TestServer {
    pub async fn start(settings: WsSettings) -> TestServer {
        Self::start_with(engine(), settings).await
    }

    pub async fn start_with(engine: Engine, settings: WsSettings) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, engine.clone(), settings, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            engine,
            stop: Some(stop),
            handle,
        }
    }

    /// Triggers shutdown and returns the serve future's handle.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub async fn stop(mut self) -> Result<(), Error> {
        self.shutdown();
        tokio::time::timeout(Duration::from_secs(20), &mut self.handle)
            .await
            .expect("serve resolves in bounded time")
            .unwrap()
    }
}

/// A WebSocket chat client.
pub struct Client<S> {
    pub ws: WebSocketStream<S>,
    next_id: u64,
    pub backlog: std::collections::VecDeque<ServerFrame>,
}

pub async fn ws_connect(addr: SocketAddr) -> Client<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, res) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .unwrap();
    assert_eq!(res.status(), 101);
    Client::new(ws).await
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn new(ws: WebSocketStream<S>) -> Self {
        let mut c = Client {
            ws,
            next_id: 1,
            backlog: Default::default(),
        };
        assert!(matches!(c.next().await, ServerFrame::Hello { .. }));
        c
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .unwrap();
    }

    /// Sends a request (a JSON object without id) and returns the reply
    /// echoing its id; other frames stay in the backlog.
    pub async fn call(&mut self, mut request: Value) -> ServerFrame {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_text(request.to_string()).await;
        let mut skipped = Vec::new();
        let found = loop {
            let f = self.recv().await;
            if frame_id(&f) == Some(id) {
                break f;
            }
            skipped.push(f);
        };
        for f in skipped.into_iter().rev() {
            self.backlog.push_front(f);
        }
        found
    }

    /// The next frame, from the backlog first.
    pub async fn next(&mut self) -> ServerFrame {
        match self.backlog.pop_front() {
            Some(f) => f,
            None => self.recv().await,
        }
    }

    /// The next frame matching `pred`, skipping (and dropping) others.
    pub async fn next_matching(&mut self, pred: impl Fn(&ServerFrame) -> bool) -> ServerFrame {
        loop {
            let f = self.next().await;
            if pred(&f) {
                return f;
            }
        }
    }

    async fn recv(&mut self) -> ServerFrame {
        loop {
            match self.recv_raw().await {
                Message::Text(t) => return Codec::decode_server(t.as_bytes()).unwrap(),
                Message::Close(c) => panic!("unexpected close: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next WebSocket message of any kind, without decoding.
    pub async fn recv_raw(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("websocket error")
    }

    /// Reads until the server's Close; returns the frames seen before it
    /// and the close code.
    pub async fn until_close(&mut self) -> (Vec<ServerFrame>, Option<u16>) {
        let mut frames: Vec<ServerFrame> = self.backlog.drain(..).collect();
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(Message::Text(t))) => {
                    frames.push(Codec::decode_server(t.as_bytes()).unwrap())
                }
                Some(Ok(Message::Close(c))) => return (frames, c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("error before close: {e}"),
                None => return (frames, None),
            }
        }
    }

    pub async fn signup(&mut self, name: &str) -> String {
        match self
            .call(json!({"type": "signup", "username": name, "password": "password123"}))
            .await
        {
            ServerFrame::Authed { token, .. } => token,
            other => panic!("signup failed: {other:?}"),
        }
    }
}

/// Signs up `owner` and `member` as `owner_name` and `member_name`; the
/// owner creates the public room `room` and the member joins it.
pub async fn two_in_a_room<S: AsyncRead + AsyncWrite + Unpin>(
    owner: &mut Client<S>,
    owner_name: &str,
    member: &mut Client<S>,
    member_name: &str,
    room: &str,
) {
    owner.signup(owner_name).await;
    member.signup(member_name).await;
    let r = owner
        .call(json!({"type": "create_room", "room": room, "kind": "public"}))
        .await;
    assert!(matches!(r, ServerFrame::Room { .. }), "{r:?}");
    let r = member.call(json!({"type": "join", "room": room})).await;
    assert!(matches!(r, ServerFrame::Room { .. }), "{r:?}");
}

pub fn frame_id(f: &ServerFrame) -> Option<u64> {
    f.reply_id()
}

/// An HTTP response as the tests see it.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
    /// Asserts the JSON error shape and returns the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().unwrap().to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> HttpReply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http_raw(addr, method, path, token, Bytes::from(body)).await
}

pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> HttpReply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    http_on(tcp, addr, method, path, token, body).await
}

/// A request over HTTPS, trusting what `connector` trusts for `localhost`.
pub async fn https(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    method: &str,
    path: &str,
) -> HttpReply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    http_on(tls, addr, method, path, None, Bytes::new()).await
}

/// A WebSocket over TLS, trusting what `connector` trusts for `localhost`.
pub async fn wss_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (ws, res) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .unwrap();
    assert_eq!(res.status(), 101);
    Client::new(ws).await
}

async fn http_on<I>(
    io: I,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> HttpReply
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = tokio::time::timeout(
        WAIT,
        sender.send_request(req.body(Full::new(body)).unwrap()),
    )
    .await
    .expect("HTTP request timed out")
    .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    HttpReply {
        status,
        headers,
        body,
    }
}

/// A self-signed certificate for `localhost`: the server's config and a
/// client config that trusts it.
pub fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Signs up `name` over REST and returns the token.
pub async fn rest_signup(addr: SocketAddr, name: &str) -> String {
    let r = http(
        addr,
        "POST",
        "/api/signup",
        None,
        Some(json!({"username": name, "password": "password123"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

/// An engine with file sharing in `dir`, files of at most `max_file_bytes`.
pub fn files_engine(dir: &std::path::Path, max_file_bytes: u64) -> Engine {
    Engine::builder()
        .limits(limits())
        .files(chat_core::FileSettings::new(dir).max_file_bytes(max_file_bytes))
        .build()
        .unwrap()
}

/// Sends raw bytes on a fresh connection and reads one HTTP response:
/// status, lower-cased headers and body (by Content-Length).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_response(&mut tcp).await
}

/// Reads one HTTP/1.1 response from `tcp`.
pub async fn read_response(tcp: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        (status, headers, buf[head_end..head_end + len].to_vec())
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no HTTP response")
}

/// The files in the vault's temporary folder.
pub fn tmp_files(vault: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(vault.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Waits (bounded) until `cond` holds; for effects with no event to wait
/// on, such as a file being deleted.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `len` bytes that sniff as PNG: the signature, then pseudo-random bytes.
pub fn png_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x = seed | 1;
    while out.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

//! End-to-end test support: the real server as a child process, and clients
//! over WebSocket and TLS TCP speaking the real protocol.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_core::{ClientFrame, Codec, Cursor, Message, Request, ServerFrame};
use chat_transport_tcp::client::Trust;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `chat-server` example binary, (re)built once per test binary so a
/// run of a single test target never uses a stale server.
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_example("chat-server")).clone()
}

/// The `chat-bench` example binary (the load tool), built like
/// [`server_binary`]; `chat-server` sits next to it.
pub fn bench_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_example("chat-bench")).clone()
}

/// Builds example `name` into this test binary's target folder and
/// profile; returns its path.
fn build_example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building {name} failed");
    profile_dir.join("examples").join(name)
}

/// A chat server child process on free loopback ports.
pub struct Server {
    pub child: Child,
    pub http: String,
    pub tcp: String,
    pub fingerprint: String,
    pub data: PathBuf,
}

impl Server {
    /// Starts the server on `data` and waits until it listens.
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// Starts the server with extra flags (e.g. `--redis URL`).
    pub fn start_with(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(server_binary())
            .args(["--data", data.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
            .args(["--rate-burst", "100000", "--rate-per-second", "100000"])
            .args(["--shutdown-grace", "5", "--log", "warn"])
            // Last, so a test's own flags win.
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after start-up so the server never writes into
            // a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut http, mut tcp, mut fingerprint) = (None, None, None);
        while http.is_none() || tcp.is_none() {
            let line = rx.recv_timeout(WAIT).expect("server did not start");
            if let Some(rest) = line.trim().strip_prefix("browser:") {
                http = Some(
                    rest.trim()
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .trim_end_matches('/')
                        .to_owned(),
                );
            }
            if let Some(rest) = line.trim().strip_prefix("terminal:") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let at = |flag: &str| {
                    words
                        .iter()
                        .position(|w| *w == flag)
                        .map(|i| words[i + 1].to_owned())
                };
                tcp = at("--addr");
                fingerprint = at("--fingerprint");
            }
        }
        Server {
            child,
            http: http.unwrap(),
            tcp: tcp.unwrap(),
            fingerprint: fingerprint.unwrap(),
            data: data.to_owned(),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not stop in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A socket a WebSocket runs over: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type WsStream = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

enum Link {
    Ws(Box<WsStream>),
    Tcp(Box<chat_transport_tcp::client::Client>),
}

/// A client over either transport, with request/reply matching by id.
pub struct Client {
    link: Link,
    next_id: u64,
    pub backlog: VecDeque<ServerFrame>,
    pub name: String,
}

impl Client {
    pub async fn ws(server: &Server) -> Client {
        let tcp = tokio::net::TcpStream::connect(&server.http).await.unwrap();
        let io: Box<dyn Io> = Box::new(tcp);
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", server.http), io)
            .await
            .unwrap();
        Client::new(Link::Ws(Box::new(ws))).await
    }

    /// A WebSocket over TLS to a server started with `--https true`, its
    /// certificate pinned by fingerprint.
    pub async fn wss(server: &Server) -> Client {
        let fp = server.fingerprint.parse().unwrap();
        let config = chat_transport_tcp::client::client_config(&Trust::Fingerprint(fp)).unwrap();
        let tcp = tokio::net::TcpStream::connect(&server.http).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let io: Box<dyn Io> = Box::new(tls);
        let (ws, _) = tokio_tungstenite::client_async(format!("wss://{}/ws", server.http), io)
            .await
            .unwrap();
        Client::new(Link::Ws(Box::new(ws))).await
    }

    pub async fn tcp(server: &Server) -> Client {
        let fp = server.fingerprint.parse().unwrap();
        let c = chat_transport_tcp::client::connect(&server.tcp, &Trust::Fingerprint(fp))
            .await
            .unwrap();
        Client::new(Link::Tcp(Box::new(c))).await
    }

    async fn new(link: Link) -> Client {
        let mut c = Client {
            link,
            next_id: 1,
            backlog: VecDeque::new(),
            name: String::new(),
        };
        assert!(matches!(c.recv().await, Some(ServerFrame::Hello { .. })));
        c
    }

    pub async fn send(&mut self, req: &Request) {
        match &mut self.link {
            Link::Ws(ws) => {
                let text = String::from_utf8(Codec::encode_request(req).to_vec()).unwrap();
                ws.send(tungstenite::Message::Text(text.into()))
                    .await
                    .unwrap();
            }
            Link::Tcp(c) => c.send(req).await.unwrap(),
        }
    }

    /// Sends raw bytes as one WebSocket message: text when UTF-8, else
    /// binary (WebSocket clients only).
    pub async fn send_raw_ws(&mut self, bytes: Vec<u8>) {
        let Link::Ws(ws) = &mut self.link else {
            panic!("not a WebSocket client")
        };
        let msg = match String::from_utf8(bytes) {
            Ok(t) => tungstenite::Message::Text(t.into()),
            Err(e) => tungstenite::Message::Binary(e.into_bytes().into()),
        };
        let _ = ws.send(msg).await;
    }

    /// The WebSocket close code the server sent, reading until it closes.
    pub async fn close_code(&mut self) -> Option<u16> {
        let Link::Ws(ws) = &mut self.link else {
            panic!("not a WebSocket client")
        };
        let read = async {
            while let Some(m) = ws.next().await {
                match m {
                    Ok(tungstenite::Message::Close(Some(f))) => return Some(u16::from(f.code)),
                    Ok(tungstenite::Message::Close(None)) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            None
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("no close in time")
    }

    /// The next frame from the wire; `None` once the server closed.
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        let fut = async {
            match &mut self.link {
                Link::Ws(ws) => loop {
                    match ws.next().await {
                        Some(Ok(tungstenite::Message::Text(t))) => {
                            return Some(Codec::decode_server(t.as_bytes()).unwrap())
                        }
                        Some(Ok(tungstenite::Message::Close(_))) | None | Some(Err(_)) => {
                            return None
                        }
                        Some(Ok(_)) => continue,
                    }
                },
                Link::Tcp(c) => c.recv().await.ok().flatten(),
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("no frame in time")
    }

    pub async fn next(&mut self) -> Option<ServerFrame> {
        match self.backlog.pop_front() {
            Some(f) => Some(f),
            None => self.recv().await,
        }
    }

    pub async fn call(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Request {
            id: Some(id),
            frame,
        })
        .await;
        let mut skipped = Vec::new();
        let found = loop {
            let f = self.recv().await.expect("closed while waiting for a reply");
            if reply_id(&f) == Some(id) {
                break f;
            }
            skipped.push(f);
        };
        self.backlog.extend(skipped);
        found
    }

    pub async fn signup(&mut self, name: &str) -> String {
        self.name = name.to_owned();
        match self
            .call(ClientFrame::Signup {
                username: name.into(),
                password: "password123".into(),
            })
            .await
        {
            ServerFrame::Authed { token, .. } => token,
            other => panic!("signup {name}: {other:?}"),
        }
    }

    pub async fn auth(&mut self, token: &str) {
        let r = self
            .call(ClientFrame::Auth {
                token: token.into(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Authed { .. }), "{r:?}");
    }

    pub async fn ok(&mut self, frame: ClientFrame) -> ServerFrame {
        let r = self.call(frame).await;
        assert!(!matches!(r, ServerFrame::Error { .. }), "{r:?}");
        r
    }

    pub async fn subscribe(&mut self, room: &str, last_seq: Option<u64>) {
        let r = self
            .call(ClientFrame::Subscribe {
                rooms: vec![Cursor {
                    room: room.into(),
                    last_seq,
                }],
            })
            .await;
        assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    }

    /// The next `n` messages, skipping other events.
    pub async fn messages(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next().await {
                Some(ServerFrame::Message { message }) => out.push(message),
                Some(_) => {}
                None => panic!("closed after {} of {n} messages", out.len()),
            }
        }
        out
    }

    pub async fn history_all(&mut self, room: &str) -> Vec<Message> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .call(ClientFrame::History {
                    room: room.into(),
                    before: None,
                    after: Some(after),
                    limit: Some(200),
                })
                .await;
            let ServerFrame::History {
                messages, has_more, ..
            } = r
            else {
                panic!("{r:?}")
            };
            after = messages.last().map_or(after, |m| m.seq);
            all.extend(messages);
            if !has_more {
                return all;
            }
        }
    }
}

pub fn reply_id(f: &ServerFrame) -> Option<u64> {
    f.reply_id()
}

pub fn code(f: &ServerFrame) -> Option<chat_core::ErrorCode> {
    match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

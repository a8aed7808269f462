//! A TLS TCP server in the test process, and the `chat-cli` example binary
//! driven through pipes.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_core::{Engine, Limits};
use chat_transport_tcp::{serve, SelfSigned, TcpSettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Longest one expectation may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine with the in-memory store, cheap password hashing, the
/// built-in offline bot (`helper`) and file sharing in `files`.
pub fn engine(files: &Path) -> Engine {
    Engine::builder()
        .limits(Limits::default().fast_hashing_for_tests())
        .bot(chat_core::offline::OfflineBot::default())
        .files(chat_core::FileSettings::new(files))
        .build()
        .unwrap()
}

/// `serve` on 127.0.0.1 with a self-signed certificate; can be stopped and
/// started again on the same port with the same engine.
pub struct TcpServer {
    pub engine: Engine,
    pub cert: SelfSigned,
    pub port: u16,
    _dir: TempDir,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TcpServer {
    pub async fn start() -> TcpServer {
        let dir = TempDir::new("chat-tcp-test");
        let cert = chat_transport_tcp::self_signed(&dir.0, &[]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = TcpServer {
            engine: engine(&dir.0.join("files")),
            cert,
            port,
            _dir: dir,
            running: None,
        };
        server.run(listener);
        server
    }

    fn run(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = self.cert.server_config().unwrap();
        let task = tokio::spawn(serve(
            listener,
            self.engine.clone(),
            tls,
            TcpSettings::default(),
            stopped,
        ));
        self.running = Some((stop, task));
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops serving; returns once every connection has closed.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr()).await.unwrap();
        self.run(listener);
    }
}

/// The `chat-cli` example binary, built on first use next to this test's
/// binary (`target/<profile>/examples/chat-cli`).
pub fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--example",
        "chat-cli",
        "--manifest-path",
    ])
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "building the chat-cli example failed");
    profile_dir
        .join("examples")
        .join(format!("chat-cli{}", std::env::consts::EXE_SUFFIX))
}

/// A running `chat-cli` with piped standard input and output.
pub struct Cli {
    pub child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line printed so far, for failure messages and checks.
    pub seen: Vec<String>,
}

impl Cli {
    pub fn spawn(binary: &Path, args: &[&str], password: &str) -> Cli {
        Self::spawn_in(binary, args, password, &std::env::current_dir().unwrap())
    }

    /// Like [`Cli::spawn`], with `cwd` as the current directory.
    pub fn spawn_in(binary: &Path, args: &[&str], password: &str, cwd: &Path) -> Cli {
        let mut child = tokio::process::Command::new(binary)
            .args(args)
            .current_dir(cwd)
            .env("CHAT_PASSWORD", password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut rd = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = rd.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Cli {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Types a line.
    pub async fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for a printed line containing `needle`, and returns it.
    pub async fn expect(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "chat-cli ended before printing {needle:?}; output:\n{}",
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "chat-cli did not print {needle:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Types `/quit` and waits for a successful exit.
    pub async fn quit(mut self) {
        self.type_line("/quit").await;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            status.success(),
            "chat-cli exited with {status}; output:\n{}",
            self.seen.join("\n")
        );
    }
}

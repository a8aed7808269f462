//! A server on a loopback port and helpers to talk to it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::time::Duration;

use chat_core::{ClientFrame, Engine, Limits, Request, ServerFrame};
use chat_transport_tcp::client::{Client, Connector, Trust};
use chat_transport_tcp::{serve, Fingerprint, TcpSettings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn engine(limits: Limits) -> Engine {
    Engine::builder()
        .limits(limits.fast_hashing_for_tests())
        .build()
        .unwrap()
}

/// An engine with file sharing in `dir`, files of at most `max_file_bytes`.
pub fn engine_with_files(dir: &std::path::Path, max_file_bytes: u64) -> Engine {
    let files = chat_core::FileSettings::new(dir).max_file_bytes(max_file_bytes);
    Engine::builder()
        .limits(Limits::default().fast_hashing_for_tests())
        .files(files)
        .build()
        .unwrap()
}

pub struct TestServer {
    pub addr: String,
    pub port: u16,
    pub fingerprint: Fingerprint,
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(settings: TcpSettings) -> TestServer {
        Self::with_engine(engine(Limits::default()), settings).await
    }

    pub async fn with_engine(engine: Engine, settings: TcpSettings) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let cert = chat_transport_tcp::self_signed(dir.path(), &[]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(
            listener,
            engine.clone(),
            cert.server_config().unwrap(),
            settings,
            stopped,
        ));
        TestServer {
            addr: format!("127.0.0.1:{port}"),
            port,
            fingerprint: cert.fingerprint,
            engine,
            dir,
            stop: Some(stop),
            handle,
        }
    }

    pub fn trust(&self) -> Trust {
        Trust::Fingerprint(self.fingerprint)
    }

    pub async fn client(&self) -> Client {
        Connector::new(&self.trust())
            .unwrap()
            .connect(&self.addr, None)
            .await
            .unwrap()
    }

    /// Waits for `serve` to resolve by itself (its shutdown future stays
    /// pending meanwhile).
    pub async fn wait_without_stopping(mut self) {
        within(&mut self.handle).await.unwrap();
        drop(self.stop.take());
    }

    /// Stops the server and waits until every connection task has ended.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(&mut self.handle).await.unwrap();
    }
}

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

pub fn req(id: u64, frame: ClientFrame) -> Request {
    Request {
        id: Some(id),
        frame,
    }
}

/// Reads frames until one matches, failing on end of stream or timeout.
pub async fn expect(
    client: &mut Client,
    what: &str,
    pred: impl Fn(&ServerFrame) -> bool,
) -> ServerFrame {
    within(async {
        loop {
            match client.recv().await.unwrap() {
                Some(f) if pred(&f) => return f,
                Some(_) => continue,
                None => panic!("connection closed while waiting for {what}"),
            }
        }
    })
    .await
}

/// Signs up on a fresh connection and returns it.
pub async fn signed_up(server: &TestServer, user: &str) -> Client {
    let mut c = server.client().await;
    let signup = ClientFrame::Signup {
        username: user.into(),
        password: "correct horse".into(),
    };
    c.send(&req(1, signup)).await.unwrap();
    expect(&mut c, "authed", |f| {
        matches!(f, ServerFrame::Authed { .. })
    })
    .await;
    c
}

/// The id a reply echoes, if it is a reply.
pub fn reply_id(frame: &ServerFrame) -> Option<u64> {
    frame.reply_id()
}

/// Sends `frame` with request id `id` and returns its reply (or error),
/// skipping events that arrive meanwhile.
pub async fn call(client: &mut Client, id: u64, frame: ClientFrame) -> ServerFrame {
    client.send(&req(id, frame)).await.unwrap();
    expect(client, "a reply", |f| reply_id(f) == Some(id)).await
}

/// Frames until the end of the stream, with a timeout.
pub async fn rest(client: &mut Client) -> Vec<ServerFrame> {
    within(async {
        let mut out = Vec::new();
        while let Ok(Some(f)) = client.recv().await {
            out.push(f);
        }
        out
    })
    .await
}

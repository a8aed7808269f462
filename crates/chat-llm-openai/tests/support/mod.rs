//! A scripted OpenAI-compatible HTTP/1.1 server on 127.0.0.1:0, written on
//! a raw tokio `TcpListener`: each request gets the next scripted reply
//! (streamed in chosen pieces, delayed, held, cut off, or an error status),
//! and every request is recorded for assertions.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// One step of a streamed reply.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes (one HTTP chunk when chunked) and flush.
    Send(Vec<u8>),
    /// Wait this long.
    Sleep(Duration),
    /// Wait until the test notifies.
    Wait(Arc<Notify>),
}

/// A scripted reply.
#[derive(Clone)]
pub enum Reply {
    /// `200 text/event-stream`, written step by step. `complete: false`
    /// closes the connection without ending the body. `chunked: false`
    /// sends a close-delimited body.
    Stream {
        steps: Vec<Step>,
        complete: bool,
        chunked: bool,
    },
    /// Any status with extra headers and a body.
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// `200 application/json` with this body.
    Json(String),
    /// Wait this long before answering with the inner reply.
    Delayed(Duration, Box<Reply>),
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct MockServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The SSE bytes of a completion streamed as `deltas`, with a finish
/// reason and `[DONE]`.
pub fn sse_body(deltas: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&format!(
        "data: {}\n\n",
        serde_json::json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]})
    ));
    for d in deltas {
        out.push_str(&format!("data: {}\n\n", chunk(d)));
    }
    out.push_str(&format!(
        "data: {}\n\n",
        serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// One `chat.completion.chunk` carrying `text`.
pub fn chunk(text: &str) -> serde_json::Value {
    serde_json::json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

/// A complete streamed reply of `deltas`, one HTTP chunk per SSE event.
pub fn stream_reply(deltas: &[&str]) -> Reply {
    let body = sse_body(deltas);
    let text = String::from_utf8(body).unwrap();
    let steps = text
        .split_inclusive("\n\n")
        .map(|e| Step::Send(e.as_bytes().to_vec()))
        .collect();
    Reply::Stream {
        steps,
        complete: true,
        chunked: true,
    }
}

/// `bytes` split into pieces of `size` bytes, each sent on its own.
pub fn pieces(bytes: &[u8], size: usize) -> Vec<Step> {
    bytes.chunks(size).map(|c| Step::Send(c.to_vec())).collect()
}

/// An error status with a JSON error body.
pub fn error_reply(status: u16, message: &str) -> Reply {
    Reply::Status {
        status,
        headers: Vec::new(),
        body: serde_json::json!({"error": {"message": message, "type": "test_error"}}).to_string(),
    }
}

impl MockServer {
    /// Starts a server answering with `script` in order, then with a
    /// default reply ("default reply").
    pub async fn start(script: Vec<Reply>) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0);
        let count_tx = Arc::new(count_tx);
        let (s, r) = (script.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, r, c) = (s.clone(), r.clone(), count_tx.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, s, r, c).await;
                });
            }
        });
        MockServer {
            addr,
            script,
            requests,
            count,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().push_back(reply);
    }

    /// Waits until the server has received `n` requests.
    pub async fn wait_requests(&self, n: usize) {
        let mut count = self.count.clone();
        count.wait_for(|c| *c >= n).await.unwrap();
    }
}

async fn serve(
    mut sock: TcpStream,
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<watch::Sender<usize>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut tmp = [0u8; 4096];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    requests.lock().unwrap().push(Recorded {
        method,
        path,
        headers,
        body,
    });
    count.send_modify(|c| *c += 1);
    let reply = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| stream_reply(&["default", " reply"]));
    respond(&mut sock, reply).await
}

async fn respond(sock: &mut TcpStream, mut reply: Reply) -> std::io::Result<()> {
    while let Reply::Delayed(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    match reply {
        Reply::Status {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(body.as_bytes()).await?;
        }
        Reply::Json(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(body.as_bytes()).await?;
        }
        Reply::Stream {
            steps,
            complete,
            chunked,
        } => {
            let framing = if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n{framing}Connection: close\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await?;
            sock.flush().await?;
            for step in steps {
                match step {
                    Step::Send(bytes) if chunked => {
                        sock.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                            .await?;
                        sock.write_all(&bytes).await?;
                        sock.write_all(b"\r\n").await?;
                        sock.flush().await?;
                    }
                    Step::Send(bytes) => {
                        sock.write_all(&bytes).await?;
                        sock.flush().await?;
                    }
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                    Step::Wait(n) => n.notified().await,
                }
            }
            if complete && chunked {
                sock.write_all(b"0\r\n\r\n").await?;
            }
        }
        Reply::Delayed(..) => unreachable!(),
    }
    sock.flush().await?;
    sock.shutdown().await
}

pub mod chat;

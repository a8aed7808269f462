//! `bots`: a stand-in OpenAI-compatible endpoint on 127.0.0.1:0 that streams
//! every chat completion slowly (`tokens` pieces, one every `interval`), as a
//! real model does, so a thousand replies can be in flight at once without a
//! GPU. Raw HTTP/1.1 on a tokio listener: one request per connection, a
//! close-delimited `text/event-stream` body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request accepted (headers and body).
const MAX_REQUEST: usize = 1 << 20;

/// Counts of what the endpoint served.
#[derive(Default)]
pub struct LlmStats {
    /// Completions started.
    pub started: AtomicU64,
    /// Completions streamed to the end.
    pub finished: AtomicU64,
    /// Streams open now.
    pub open: AtomicU64,
    /// Most streams open at once.
    pub most_open: AtomicU64,
    /// Requests that were not a completion or could not be read.
    pub bad: AtomicU64,
}

/// A running endpoint; stops when dropped.
pub struct FakeLlm {
    pub addr: SocketAddr,
    pub stats: Arc<LlmStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLlm {
    /// Starts serving: each completion streams `tokens` pieces `interval`
    /// apart.
    pub async fn start(tokens: usize, interval: Duration) -> Result<FakeLlm, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("fake LLM bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("fake LLM address: {e}"))?;
        let stats = Arc::new(LlmStats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    if serve(tcp, tokens, interval, &st).await.is_err() {
                        st.bad.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Ok(FakeLlm { addr, stats, task })
    }

    /// The base URL to give the server (`--openai-base-url`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request (headers, then `Content-Length` bytes of body).
async fn read_request(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf);
            }
        }
        if buf.len() > MAX_REQUEST {
            return Err(std::io::Error::other("request too large"));
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed mid-request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn event(json: &serde_json::Value) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

async fn serve(
    mut tcp: TcpStream,
    tokens: usize,
    interval: Duration,
    st: &LlmStats,
) -> std::io::Result<()> {
    let req = read_request(&mut tcp).await?;
    if !req.starts_with(b"POST ") || find(&req, b"/chat/completions").is_none() {
        tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Err(std::io::Error::other("not a completion"));
    }
    st.started.fetch_add(1, Ordering::Relaxed);
    let open = st.open.fetch_add(1, Ordering::Relaxed) + 1;
    st.most_open.fetch_max(open, Ordering::Relaxed);
    let result = async {
        tcp.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        )
        .await?;
        tcp.write_all(&event(&serde_json::json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]})))
            .await?;
        for i in 0..tokens {
            tokio::time::sleep(interval).await;
            let piece = if i == 0 { "tok".to_owned() } else { format!(" tok{i}") };
            tcp.write_all(&event(&serde_json::json!({"object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})))
                .await?;
        }
        tcp.write_all(&event(&serde_json::json!({
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})))
            .await?;
        tcp.write_all(b"data: [DONE]\n\n").await?;
        tcp.shutdown().await
    }
    .await;
    st.open.fetch_sub(1, Ordering::Relaxed);
    if result.is_ok() {
        st.finished.fetch_add(1, Ordering::Relaxed);
    }
    result
}

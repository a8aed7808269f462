//! One client connection over either transport, speaking the real
//! protocol: connect (and read `hello`), send requests, receive frames.
//!
//! Receiving parses the two hot frames (`message` and `ack`) with a small
//! scanner instead of serde, so that the load tool spends its CPU on
//! sockets rather than JSON; every other frame is decoded by chat-core's
//! [`Codec`]. A malformed hot frame falls back to the full decoder.

use std::sync::OnceLock;
use std::time::Instant;

use chat_core::{ClientFrame, Codec, Cursor, Request, ServerFrame};
use chat_transport_tcp::client::{Connector, FrameReader, FrameWriter};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::ws::{Event, WsConn};

/// Microseconds since this process started (the clock of the embedded
/// send timestamps: publishers and subscribers share the process).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Wall-clock microseconds since the Unix epoch: the clock of the send
/// timestamps when publishers and subscribers are separate processes
/// (`cluster`). Sixteen decimal digits until the year 2286.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where and how to connect.
#[derive(Clone)]
pub enum Target {
    /// `ws://ADDR/ws`, or `wss://` with a TLS connector.
    Ws {
        addr: String,
        tls: Option<tokio_rustls::TlsConnector>,
    },
    /// TLS TCP.
    Tcp { addr: String, connector: Connector },
}

impl Target {
    /// A WebSocket target (`ws://ADDR/ws`).
    pub fn ws(addr: &str) -> Target {
        Target::Ws {
            addr: addr.to_owned(),
            tls: None,
        }
    }

    /// A WebSocket target over TLS (`wss://`), trusting what `config`
    /// trusts.
    pub fn wss(addr: &str, config: Arc<rustls::ClientConfig>) -> Target {
        Target::Ws {
            addr: addr.to_owned(),
            tls: Some(tokio_rustls::TlsConnector::from(config)),
        }
    }

    /// A socket to the HTTP port, over TLS for `wss`.
    async fn http_stream(&self) -> Result<Io, String> {
        let Target::Ws { addr, tls, .. } = self else {
            return Err("not an HTTP target".into());
        };
        let tcp = TcpStream::connect(addr.as_str())
            .await
            .map_err(|e| format!("connect: {}", io_reason(e)))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Io::Plain(tcp)),
            Some(tls) => {
                // The server's certificate is pinned (or not checked): the
                // name is not what is verified.
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| e.to_string())?;
                let tls = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {}", io_reason(e)))?;
                Ok(Io::Tls(Box::new(tls)))
            }
        }
    }

    /// `GET path` on the HTTP port (HTTPS for `wss`): the whole response,
    /// or `None` for a TCP target or on any failure.
    pub async fn http_get(&self, path: &str) -> Option<String> {
        let go = async {
            let mut s = self.http_stream().await.ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            // A TLS server may end without close_notify: what came counts.
            let _ = s.read_to_end(&mut buf).await;
            Some(String::from_utf8_lossy(&buf).into_owned())
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), go)
            .await
            .ok()
            .flatten()
    }
}

/// A client socket: plain TCP, or TLS over it.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connected client.
pub enum Conn {
    Ws(Box<WsConn<Io>>),
    Tcp(FrameReader, FrameWriter),
}

/// One thing received.
#[derive(Debug)]
pub enum Incoming {
    /// A `message` event: its `seq` and the send timestamp its body
    /// carries (when the body starts with one).
    Message { seq: u64, sent_us: Option<u64> },
    /// An `ack`: request id and the stored `seq`.
    Ack { id: u64, seq: u64 },
    /// Any other frame, with the request id it answers.
    Other { id: Option<u64>, frame: ServerFrame },
    /// The connection ended; why (`closing:lagged`, `ws-close:1000`, `eof`,
    /// `io: ...`).
    Closed(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(hay, key)? + key.len();
    let digits = hay[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&hay[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// The timestamp a bench body starts with: 16 decimal digits.
pub fn body_timestamp(body: &[u8]) -> Option<u64> {
    let digits = body.get(..16)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A message body of `len` bytes starting with the send time `us` (from
/// [`now_us`], or [`wall_us`] across processes).
pub fn make_body_at(len: usize, tag: &str, us: u64) -> String {
    let mut s = format!("{us:016}|{tag}|");
    while s.len() < len {
        s.push('.');
    }
    s.truncate(len);
    s
}

/// Parses one frame as the server sent it.
pub fn parse(raw: &[u8]) -> Incoming {
    if raw.starts_with(br#"{"type":"message","#) {
        if let Some(seq) = number_after(raw, br#""seq":"#) {
            let sent_us = find(raw, br#""body":""#).and_then(|i| body_timestamp(&raw[i + 8..]));
            return Incoming::Message { seq, sent_us };
        }
    } else if raw.starts_with(br#"{"type":"ack","#) {
        if let (Some(id), Some(seq)) = (
            number_after(raw, br#""id":"#),
            number_after(raw, br#""seq":"#),
        ) {
            return Incoming::Ack { id, seq };
        }
    }
    match Codec::decode_server(raw) {
        Ok(ServerFrame::Closing { reason, .. }) => Incoming::Closed(format!(
            "closing:{}",
            serde_json::to_string(&reason)
                .unwrap_or_default()
                .trim_matches('"')
        )),
        Ok(ServerFrame::Message { message }) => Incoming::Message {
            seq: message.seq,
            sent_us: body_timestamp(message.body.as_bytes()),
        },
        Ok(ServerFrame::Ack {
            id: Some(id), seq, ..
        }) => Incoming::Ack { id, seq },
        Ok(frame) => {
            let id = serde_json::from_slice::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
            Incoming::Other { id, frame }
        }
        Err(e) => Incoming::Closed(format!("undecodable frame: {e}")),
    }
}

/// A short reason for an I/O-level failure.
fn io_reason(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    format!("io: {}", s.chars().take(80).collect::<String>())
}

impl Conn {
    /// Connects and reads the server's `hello`.
    pub async fn connect(target: &Target) -> Result<Conn, String> {
        let mut conn = match target {
            Target::Ws { addr, .. } => {
                let io = target.http_stream().await?;
                let ws = WsConn::handshake(io, addr, "/ws")
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                Conn::Ws(Box::new(ws))
            }
            Target::Tcp { addr, connector } => {
                let c = connector
                    .connect(addr, None)
                    .await
                    .map_err(|e| format!("connect: {}", io_reason(e)))?;
                let (r, w) = c.split();
                Conn::Tcp(r, w)
            }
        };
        match conn.recv().await {
            Incoming::Other {
                frame: ServerFrame::Hello { .. },
                ..
            } => Ok(conn),
            Incoming::Closed(why) => Err(why),
            other => Err(format!("expected hello, got {other:?}")),
        }
    }

    /// Sends one request.
    pub async fn send(&mut self, req: &Request) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => {
                let text = serde_json::to_vec(req).map_err(|e| e.to_string())?;
                ws.send_texts([text.as_slice()]).await.map_err(io_reason)
            }
            Conn::Tcp(_, w) => w.send(req).await.map_err(io_reason),
        }
    }

    /// Sends several requests with one flush.
    pub async fn send_many(&mut self, reqs: &[Request]) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => {
                let texts = reqs
                    .iter()
                    .map(serde_json::to_vec)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                ws.send_texts(texts.iter().map(Vec::as_slice))
                    .await
                    .map_err(io_reason)
            }
            Conn::Tcp(_, w) => {
                let mut buf = Vec::with_capacity(reqs.len() * 200);
                for req in reqs {
                    serde_json::to_writer(&mut buf, req).map_err(|e| e.to_string())?;
                    buf.push(b'\n');
                }
                w.send_raw(&buf).await.map_err(io_reason)
            }
        }
    }

    /// The next frame, or why the connection ended. Cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        match self {
            Conn::Ws(ws) => match ws.next_message().await {
                Ok(Event::Message(raw)) => parse(raw),
                Ok(Event::Close(Some(code), reason)) => {
                    Incoming::Closed(format!("ws-close:{code} {reason}"))
                }
                Ok(Event::Close(None, _)) => Incoming::Closed("ws-close".to_owned()),
                Ok(Event::Eof) => Incoming::Closed("eof".to_owned()),
                Err(e) => Incoming::Closed(io_reason(e)),
            },
            Conn::Tcp(r, _) => match r.recv_line().await {
                Ok(Some(line)) => parse(&line),
                Ok(None) => Incoming::Closed("eof".to_owned()),
                Err(e) => Incoming::Closed(io_reason(e)),
            },
        }
    }

    /// Sends `frame` with `id` and waits for the reply carrying that id;
    /// events in between are skipped (and returned to no one).
    pub async fn request(&mut self, id: u64, frame: ClientFrame) -> Result<ServerFrame, String> {
        self.send(&Request {
            id: Some(id),
            frame,
        })
        .await?;
        loop {
            match self.recv().await {
                Incoming::Other {
                    id: Some(got),
                    frame,
                } if got == id => {
                    if let ServerFrame::Error { code, message, .. } = &frame {
                        let code = serde_json::to_string(code).unwrap_or_default();
                        return Err(format!("error {}: {message}", code.trim_matches('"')));
                    }
                    return Ok(frame);
                }
                Incoming::Ack { id: got, seq } if got == id => {
                    return Ok(ServerFrame::Ack {
                        id: Some(id),
                        room: String::new(),
                        seq,
                        client_id: None,
                        duplicate: false,
                    })
                }
                Incoming::Closed(why) => return Err(why),
                _ => {}
            }
        }
    }

    /// Logs in with a token.
    pub async fn auth(&mut self, token: &str) -> Result<(), String> {
        match self
            .request(
                1,
                ClientFrame::Auth {
                    token: token.to_owned(),
                },
            )
            .await?
        {
            ServerFrame::Authed { .. } => Ok(()),
            other => Err(format!("auth: unexpected {other:?}")),
        }
    }

    /// Subscribes to one room from `last_seq` (None: live only). Returns
    /// the seqs replayed before `subscribed` and the `last_seq` it names.
    pub async fn subscribe(
        &mut self,
        room: &str,
        last_seq: Option<u64>,
    ) -> Result<(Vec<u64>, u64), String> {
        let id = 2;
        self.send(&Request {
            id: Some(id),
            frame: ClientFrame::Subscribe {
                rooms: vec![Cursor {
                    room: room.to_owned(),
                    last_seq,
                }],
            },
        })
        .await?;
        let mut replayed = Vec::new();
        loop {
            match self.recv().await {
                Incoming::Message { seq, .. } => replayed.push(seq),
                Incoming::Other {
                    frame: ServerFrame::Subscribed { last_seq, .. },
                    ..
                } => return Ok((replayed, last_seq)),
                Incoming::Other {
                    frame: ServerFrame::Error { code, message, .. },
                    id: Some(got),
                } if got == id => {
                    let code = serde_json::to_string(&code).unwrap_or_default();
                    return Err(format!(
                        "subscribe: error {}: {message}",
                        code.trim_matches('"')
                    ));
                }
                Incoming::Closed(why) => return Err(why),
                _ => {}
            }
        }
    }

    /// Closes politely (WebSocket close frame / TLS close_notify).
    pub async fn close(self) {
        match self {
            Conn::Ws(mut ws) => {
                let _ = ws.close().await;
            }
            Conn::Tcp(_, mut w) => {
                let _ = w.close().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_frames_parse_like_the_codec() {
        let body = make_body_at(100, "p1", now_us());
        let raw = format!(
            r#"{{"type":"message","message":{{"room":"r","seq":42,"sender":"u","body":"{body}","ts":1,"kind":"user"}}}}"#
        );
        // The codec reads the same frame the same way.
        match Codec::decode_server(raw.as_bytes()) {
            Ok(ServerFrame::Message { message }) => {
                assert_eq!((message.seq, message.body.as_str()), (42, body.as_str()))
            }
            other => panic!("{other:?}"),
        }
        match parse(raw.as_bytes()) {
            Incoming::Message { seq, sent_us } => {
                assert_eq!(seq, 42);
                assert_eq!(sent_us, body_timestamp(body.as_bytes()));
                assert!(sent_us.is_some());
            }
            other => panic!("{other:?}"),
        }
        let raw = br#"{"type":"ack","id":7,"room":"r","seq":9,"duplicate":false}"#;
        assert!(matches!(parse(raw), Incoming::Ack { id: 7, seq: 9 }));
        let raw = br#"{"type":"closing","reason":"lagged","message":"x"}"#;
        assert!(matches!(parse(raw), Incoming::Closed(ref r) if r == "closing:lagged"));
    }
}

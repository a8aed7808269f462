//! The load tool's own WebSocket client (RFC 6455, client side): the
//! opening handshake, masked frames out, unmasked frames in, pings
//! answered, close frames reported.
//!
//! The tool holds thousands of connections beside the server on the same
//! two cores, so its receive path is what it spends the most on: a
//! general-purpose client (tokio-tungstenite) allocated, re-checked UTF-8
//! and re-registered wakers for every message, a fifth of the tool's CPU in
//! the half-rate fan-out run. Here a message is a slice of one reusable
//! read buffer, handed to the frame scanner as it is.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Read buffer of a connection (grown for a larger message, never shrunk).
const READ_BUFFER: usize = 4096;
/// Largest message accepted (the server's default limit is far smaller).
pub const MAX_MESSAGE: usize = 16 << 20;
/// Largest opening-handshake response read.
const MAX_RESPONSE: usize = 16 << 10;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What [`WsConn::next_message`] hands over.
pub enum Event<'a> {
    /// A whole text or binary message.
    Message(&'a [u8]),
    /// The server's close frame: its code (if any) and reason.
    Close(Option<u16>, String),
    /// The stream ended without one.
    Eof,
}

/// One client WebSocket over `Io`.
pub struct WsConn<Io> {
    io: Io,
    /// Bytes read: `buf[start..end]` not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A message arriving in pieces (continuation frames), rarely used.
    pieces: Vec<u8>,
    /// `pieces` was handed over: cleared before parsing on.
    pieces_done: bool,
    /// Control frames to send (pongs), written before anything else; its
    /// storage is reused as the buffer of the next send.
    control: Vec<u8>,
    /// State of the mask generator (xorshift: the masks only have to vary,
    /// the server does not judge them).
    mask: u32,
}

/// The `Sec-WebSocket-Accept` value expected for `key` (RFC 6455, 4.2.2).
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A seed that differs between connections and runs.
fn seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(super::conn::now_us());
    (h.finish() as u32) | 1
}

impl<Io: AsyncRead + AsyncWrite + Unpin> WsConn<Io> {
    /// Runs the opening handshake for `path` on `host` over `io`.
    pub async fn handshake(mut io: Io, host: &str, path: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let mut mask = seed();
        let mut nonce = [0u8; 16];
        for chunk in nonce.chunks_mut(4) {
            mask = xorshift(mask);
            chunk.copy_from_slice(&mask.to_le_bytes());
        }
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        io.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut buf = vec![0u8; READ_BUFFER];
        let mut end = 0;
        let head = loop {
            if let Some(i) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if end == buf.len() {
                if buf.len() >= MAX_RESPONSE {
                    return Err("handshake: response too long".into());
                }
                buf.resize(buf.len() * 2, 0);
            }
            match io.read(&mut buf[end..]).await {
                Ok(0) => return Err("handshake: connection closed".into()),
                Ok(n) => end += n,
                Err(e) => return Err(format!("handshake: {e}")),
            }
        };
        let response = String::from_utf8_lossy(&buf[..head]);
        let status = response.lines().next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(format!("handshake: {status}"));
        }
        let accept = response.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim().to_owned())
        });
        if accept.as_deref() != Some(accept_key(&key).as_str()) {
            return Err("handshake: wrong Sec-WebSocket-Accept".into());
        }
        // Frames the server sent right after its response stay in `buf`.
        Ok(WsConn {
            io,
            buf,
            start: head,
            end,
            pieces: Vec::new(),
            pieces_done: false,
            control: Vec::new(),
            mask,
        })
    }

    /// Appends one masked frame with `payload` to `out`.
    fn encode(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.mask = xorshift(self.mask);
        let key = self.mask.to_le_bytes();
        out.extend_from_slice(&key);
        out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    }

    /// Sends text messages in one write (after any pending control frame).
    pub async fn send_texts<'a>(
        &mut self,
        texts: impl IntoIterator<Item = &'a [u8]>,
    ) -> std::io::Result<()> {
        let mut out = std::mem::take(&mut self.control);
        for text in texts {
            self.encode(&mut out, OP_TEXT, text);
        }
        let res = self.io.write_all(&out).await;
        out.clear();
        self.control = out;
        res
    }

    /// Sends a close frame (code 1000) and flushes it; the server answers
    /// and hangs up.
    pub async fn close(&mut self) -> std::io::Result<()> {
        let mut out = std::mem::take(&mut self.control);
        self.encode(&mut out, OP_CLOSE, &1000u16.to_be_bytes());
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// The next message, close or end of stream. Cancel-safe: everything
    /// read is kept in `self` between polls.
    pub async fn next_message(&mut self) -> std::io::Result<Event<'_>> {
        // Two steps so that the borrow of the buffer is taken only once a
        // message is whole.
        let at = poll_fn(|cx| self.poll_frame(cx)).await?;
        Ok(match at {
            Frame::Message(a, b) => Event::Message(&self.buf[a..b]),
            Frame::Pieces => Event::Message(&self.pieces),
            Frame::Close(code, reason) => Event::Close(code, reason),
            Frame::Eof => Event::Eof,
        })
    }

    /// Parses frames already read (answering pings) until a message is
    /// whole, reading more when needed.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Frame>> {
        loop {
            // Pongs go out when they can; receiving never waits for them.
            while !self.control.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.control) {
                    Poll::Ready(Ok(n)) => {
                        self.control.drain(..n);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if let Some(frame) = self.parse()? {
                return Poll::Ready(Ok(frame));
            }
            // Make room: move what is left to the front, or grow for a
            // frame larger than the buffer.
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                if self.end == self.buf.len() {
                    let grown = (self.buf.len() * 2).min(MAX_MESSAGE + 14);
                    self.buf.resize(grown, 0);
                }
            }
            let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(Frame::Eof));
                    }
                    self.end += n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One step of parsing what was read: a whole message, or `None` when
    /// more bytes are needed. Control frames are dealt with on the way.
    fn parse(&mut self) -> std::io::Result<Option<Frame>> {
        if std::mem::take(&mut self.pieces_done) {
            self.pieces.clear();
        }
        loop {
            let data = &self.buf[self.start..self.end];
            if data.len() < 2 {
                return Ok(None);
            }
            let (fin, opcode) = (data[0] & 0x80 != 0, data[0] & 0x0F);
            let masked = data[1] & 0x80 != 0;
            let (len, mut at) = match data[1] & 0x7F {
                126 if data.len() >= 4 => (usize::from(u16::from_be_bytes([data[2], data[3]])), 4),
                127 if data.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&data[2..10]);
                    (
                        usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                        10,
                    )
                }
                126 | 127 => return Ok(None),
                n => (usize::from(n), 2),
            };
            if len > MAX_MESSAGE || self.pieces.len() + len > MAX_MESSAGE {
                return Err(invalid("message over the size limit"));
            }
            let key = if masked {
                let Some(k) = data.get(at..at + 4) else {
                    return Ok(None);
                };
                at += 4;
                Some([k[0], k[1], k[2], k[3]])
            } else {
                None
            };
            if data.len() < at + len {
                return Ok(None);
            }
            let (a, b) = (self.start + at, self.start + at + len);
            self.start = b;
            if let Some(key) = key {
                // Servers do not mask; tolerated all the same.
                for (i, byte) in self.buf[a..b].iter_mut().enumerate() {
                    *byte ^= key[i % 4];
                }
            }
            match opcode {
                OP_TEXT | OP_BINARY if fin => return Ok(Some(Frame::Message(a, b))),
                OP_TEXT | OP_BINARY | OP_CONT => {
                    if opcode != OP_CONT {
                        self.pieces.clear();
                    }
                    self.pieces.extend_from_slice(&self.buf[a..b]);
                    if fin {
                        self.pieces_done = true;
                        return Ok(Some(Frame::Pieces));
                    }
                }
                OP_PING => {
                    let mut control = std::mem::take(&mut self.control);
                    let payload = self.buf[a..b].to_vec();
                    self.encode(&mut control, OP_PONG, &payload);
                    self.control = control;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let payload = &self.buf[a..b];
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    return Ok(Some(Frame::Close(code, reason.into_owned())));
                }
                other => return Err(invalid(&format!("opcode {other}"))),
            }
        }
    }
}

/// Where a parsed message is.
enum Frame {
    /// `buf[a..b]`.
    Message(usize, usize),
    /// In `pieces`.
    Pieces,
    Close(Option<u16>, String),
    Eof,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("WebSocket: {what}"),
    )
}

fn xorshift(mut x: u32) -> u32 {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// An unmasked server frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Reads the client's request head and answers with `accept` (the
    /// right key when `None`), followed by `after`.
    async fn serve_handshake(
        server: &mut tokio::io::DuplexStream,
        accept: Option<&str>,
        after: &[u8],
    ) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = accept.map_or_else(|| accept_key(key), str::to_owned);
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(after);
        server.write_all(&out).await.unwrap();
    }

    /// Reads one masked client frame: (opcode, unmasked payload); fails
    /// rather than waits when none comes.
    async fn read_client_frame(server: &mut tokio::io::DuplexStream) -> (u8, Vec<u8>) {
        let read = read_client_frame_now(server);
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("a frame from the client")
    }

    async fn read_client_frame_now(server: &mut tokio::io::DuplexStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        server.read_exact(&mut h).await.unwrap();
        assert_ne!(h[1] & 0x80, 0, "client frames are masked");
        let len = match h[1] & 0x7F {
            126 => usize::from(server.read_u16().await.unwrap()),
            127 => server.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut key = [0u8; 4];
        server.read_exact(&mut key).await.unwrap();
        let mut payload = vec![0u8; len];
        server.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        (h[0] & 0x0F, payload)
    }

    async fn text(ws: &mut WsConn<tokio::io::DuplexStream>) -> Vec<u8> {
        match ws.next_message().await.unwrap() {
            Event::Message(m) => m.to_vec(),
            Event::Close(code, reason) => panic!("close {code:?} {reason}"),
            Event::Eof => panic!("eof"),
        }
    }

    #[tokio::test]
    async fn frames_in_any_pieces_pings_and_close() {
        let (client, mut server) = duplex(64 << 10);
        // A message sent right behind the handshake response.
        let first = frame(true, OP_TEXT, b"hello");
        let serve = async {
            serve_handshake(&mut server, None, &first).await;
            server
        };
        let (ws, mut server) = tokio::join!(WsConn::handshake(client, "h", "/ws"), serve);
        let mut ws = ws.unwrap();
        assert_eq!(text(&mut ws).await, b"hello");

        // A ping between the pieces of a fragmented message; a 16-bit and
        // a 64-bit length; everything written a few bytes at a time, so
        // that headers and payloads straddle reads.
        let big = vec![b'x'; 70_000];
        let mid = vec![b'y'; 300];
        let mut wire = frame(false, OP_TEXT, b"one ");
        wire.extend(frame(true, OP_PING, b"p1"));
        wire.extend(frame(false, OP_CONT, b"two "));
        wire.extend(frame(true, OP_CONT, b"three"));
        wire.extend(frame(true, OP_TEXT, &mid));
        wire.extend(frame(true, OP_BINARY, &big));
        wire.extend(frame(true, OP_TEXT, b"after"));
        let mut close = 4000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        wire.extend(frame(true, OP_CLOSE, &close));
        let feed = async move {
            for chunk in wire.chunks(7) {
                server.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            server
        };
        let read = async {
            let got = vec![
                text(&mut ws).await,
                text(&mut ws).await,
                text(&mut ws).await,
                text(&mut ws).await,
            ];
            let close = match ws.next_message().await.unwrap() {
                Event::Close(code, reason) => (code, reason),
                _ => panic!("expected close"),
            };
            (got, close)
        };
        let (mut server, (got, close)) = tokio::join!(feed, read);
        assert_eq!(got[0], b"one two three");
        assert_eq!(got[1], mid);
        assert_eq!(got[2], big);
        assert_eq!(got[3], b"after");
        assert_eq!(close, (Some(4000), "bye".to_owned()));
        // The ping was answered with a masked pong carrying its payload.
        assert_eq!(
            read_client_frame(&mut server).await,
            (OP_PONG, b"p1".to_vec())
        );

        // Sends are masked text frames, several in one write; close is 1000.
        ws.send_texts([&b"a"[..], &[b'b'; 200][..]]).await.unwrap();
        assert_eq!(
            read_client_frame(&mut server).await,
            (OP_TEXT, b"a".to_vec())
        );
        assert_eq!(
            read_client_frame(&mut server).await,
            (OP_TEXT, vec![b'b'; 200])
        );
        ws.close().await.unwrap();
        assert_eq!(
            read_client_frame(&mut server).await,
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        drop(server);
        assert!(matches!(ws.next_message().await.unwrap(), Event::Eof));
    }

    #[tokio::test]
    async fn a_wrong_accept_key_or_status_is_refused() {
        let (client, mut server) = duplex(4096);
        let serve = serve_handshake(&mut server, Some("d3Jvbmc="), b"");
        let (ws, ()) = tokio::join!(WsConn::handshake(client, "h", "/ws"), serve);
        assert!(ws.err().unwrap().contains("Sec-WebSocket-Accept"));

        let (client, mut server) = duplex(4096);
        let serve = async {
            let mut b = [0u8; 16];
            let _ = server.read(&mut b).await;
            server
                .write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                .await
                .unwrap();
        };
        let (ws, ()) = tokio::join!(WsConn::handshake(client, "h", "/ws"), serve);
        assert!(ws.err().unwrap().contains("403"));
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_an_error_not_an_allocation() {
        let (client, mut server) = duplex(4096);
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(MAX_MESSAGE as u64 + 1).to_be_bytes());
        let serve = serve_handshake(&mut server, None, &huge);
        let (ws, ()) = tokio::join!(WsConn::handshake(client, "h", "/ws"), serve);
        let mut ws = ws.unwrap();
        let err = ws.next_message().await.err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}

//! WebSocket framing (RFC 6455, section 5), server side, owned by this
//! crate so that an idle connection holds no buffer at all.
//!
//! A general WebSocket library keeps a read buffer (and a write buffer)
//! per connection for its whole life. Here the bytes a client sends are
//! read into a buffer shared by the worker thread's sessions and parsed at
//! once; a connection keeps bytes of its own only while a frame or a
//! fragmented message is incomplete ([`Decoder`]), and outgoing frames are
//! encoded into a buffer that lives only until it is written
//! ([`encode_text`], [`encode_control`]).

use std::fmt;

/// Opcodes (RFC 6455, 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Largest payload of a control frame (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A text message, valid UTF-8.
    Text(Vec<u8>),
    /// A binary message of this many bytes (refused by the session).
    Binary(usize),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong (proof of life).
    Pong,
    /// The client's Close: its status code, if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read as WebSocket frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A message of `size` bytes, over the `max` allowed (close 1009).
    TooLarge { size: u64, max: usize },
    /// A text message (or a close reason) that is not UTF-8 (close 1007).
    BadUtf8,
    /// Anything else the protocol forbids (close 1002).
    Protocol(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => {
                write!(f, "message of {size} bytes exceeds the limit of {max}")
            }
            FrameError::BadUtf8 => f.write_str("text is not valid UTF-8"),
            FrameError::Protocol(why) => f.write_str(why),
        }
    }
}

/// A message being reassembled from fragments.
#[derive(Debug)]
struct Fragments {
    text: bool,
    data: Vec<u8>,
}

/// Parses the client's frames out of the bytes it sends.
///
/// Holds no memory between frames: `pending` keeps only the bytes of an
/// incomplete frame and is released once they are parsed.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Bytes received, not yet parsed, from `start` on.
    pending: Vec<u8>,
    start: usize,
    /// A fragmented message in progress (boxed: rare, and an idle
    /// session should not carry its room).
    fragments: Option<Box<Fragments>>,
    max_message: usize,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Decoder {
            pending: Vec::new(),
            start: 0,
            fragments: None,
            max_message,
        }
    }

    /// Adds bytes read from the socket.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Whether nothing is waiting to be parsed (no frame or fragmented
    /// message is incomplete).
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.pending.len() && self.fragments.is_none()
    }

    /// Whether the next frame, whole or not, is a ping or a pong: a
    /// keep-alive, which a sleeping session answers without waking.
    pub(crate) fn keepalive_next(&self) -> bool {
        self.pending
            .get(self.start)
            .is_some_and(|b0| matches!(b0 & 0x0F, PING | PONG))
    }

    /// The next complete message or control frame, or `None` until more
    /// bytes arrive. After an error the decoder must not be used again.
    pub(crate) fn next(&mut self) -> Result<Option<Inbound>, FrameError> {
        loop {
            let Some((fin, opcode, payload)) = self.frame()? else {
                self.compact();
                return Ok(None);
            };
            if let Some(done) = self.assemble(fin, opcode, payload)? {
                return Ok(Some(done));
            }
        }
    }

    /// Takes one whole frame off `pending`: its FIN bit, opcode and
    /// unmasked payload.
    fn frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>, FrameError> {
        let buf = &self.pending[self.start..];
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(FrameError::Protocol("client frame not masked"));
        }
        let (len_bytes, len7) = match b1 & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let header = 2 + len_bytes + 4;
        if buf.len() < 2 + len_bytes {
            return Ok(None);
        }
        let len = match len7 {
            Some(n) => n,
            None => {
                let mut be = [0u8; 8];
                be[8 - len_bytes..].copy_from_slice(&buf[2..2 + len_bytes]);
                let n = u64::from_be_bytes(be);
                if n >> 63 != 0 {
                    return Err(FrameError::Protocol("frame length has its top bit set"));
                }
                n
            }
        };
        self.check(fin, opcode, len)?;
        // `check` bounded `len` by `max_message`, so it fits in usize.
        let len = usize::try_from(len).map_err(|_| FrameError::Protocol("frame too long"))?;
        let total = header + len;
        if buf.len() < total {
            // Room for the whole frame now, not by doubling on each read.
            self.pending.reserve(total - buf.len());
            return Ok(None);
        }
        let mask = [
            buf[header - 4],
            buf[header - 3],
            buf[header - 2],
            buf[header - 1],
        ];
        let mut payload = buf[header..total].to_vec();
        unmask(&mut payload, mask);
        self.start += total;
        Ok(Some((fin, opcode, payload)))
    }

    /// Checks a frame's header against the protocol and the size limit,
    /// before its payload is waited for.
    fn check(&self, fin: bool, opcode: u8, len: u64) -> Result<(), FrameError> {
        match opcode {
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(FrameError::Protocol("control frame over 125 bytes"));
                }
                Ok(())
            }
            TEXT | BINARY | CONTINUATION => {
                let so_far = match (&self.fragments, opcode) {
                    (None, CONTINUATION) => {
                        return Err(FrameError::Protocol("continuation frame without a message"))
                    }
                    (Some(_), TEXT | BINARY) => {
                        return Err(FrameError::Protocol(
                            "new message before the fragmented one ended",
                        ))
                    }
                    (Some(f), _) => f.data.len() as u64,
                    (None, _) => 0,
                };
                let size = so_far.saturating_add(len);
                if size > self.max_message as u64 {
                    return Err(FrameError::TooLarge {
                        size,
                        max: self.max_message,
                    });
                }
                Ok(())
            }
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }

    /// Turns a checked frame into a message, or keeps it as a fragment.
    fn assemble(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<Inbound>, FrameError> {
        let (text, data) = match opcode {
            PING => return Ok(Some(Inbound::Ping(payload))),
            PONG => return Ok(Some(Inbound::Pong)),
            CLOSE => return close(&payload).map(Some),
            CONTINUATION => {
                // `check` refused a continuation with no message before it.
                let Some(mut f) = self.fragments.take() else {
                    return Err(FrameError::Protocol("continuation frame without a message"));
                };
                f.data.extend_from_slice(&payload);
                if !fin {
                    self.fragments = Some(f);
                    return Ok(None);
                }
                (f.text, f.data)
            }
            _ if !fin => {
                self.fragments = Some(Box::new(Fragments {
                    text: opcode == TEXT,
                    data: payload,
                }));
                return Ok(None);
            }
            _ => (opcode == TEXT, payload),
        };
        if !text {
            return Ok(Some(Inbound::Binary(data.len())));
        }
        if std::str::from_utf8(&data).is_err() {
            return Err(FrameError::BadUtf8);
        }
        Ok(Some(Inbound::Text(data)))
    }

    /// Drops parsed bytes; frees the buffer once nothing is pending, so an
    /// idle connection holds none.
    fn compact(&mut self) {
        if self.start == self.pending.len() {
            self.pending = Vec::new();
        } else if self.start > 0 {
            self.pending.drain(..self.start);
        }
        self.start = 0;
    }
}

/// Reads a Close frame's payload (RFC 6455, 5.5.1 and 7.4).
fn close(payload: &[u8]) -> Result<Inbound, FrameError> {
    match payload {
        [] => Ok(Inbound::Close(None)),
        [_] => Err(FrameError::Protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(FrameError::Protocol("close code not allowed"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::BadUtf8);
            }
            Ok(Inbound::Close(Some(code)))
        }
    }
}

/// XORs `data` with the client's masking key.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let mut w = [0u8; 4];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Appends a server frame header (final, unmasked) for `len` payload bytes.
fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a text frame carrying `json` (already UTF-8: the engine's
/// encoding) to `out`.
pub(crate) fn encode_text(out: &mut Vec<u8>, json: &[u8]) {
    out.reserve(MAX_HEADER + json.len());
    header(out, TEXT, json.len());
    out.extend_from_slice(json);
}

/// A control frame the server sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control<'a> {
    /// A ping with no payload.
    Ping,
    /// The answer to a client's ping.
    Pong(&'a [u8]),
    /// A Close with a status code and reason (`None`: no status).
    Close(Option<(u16, &'a str)>),
}

/// Appends a control frame to `out`; payloads are cut to 125 bytes.
pub(crate) fn encode_control(out: &mut Vec<u8>, frame: Control<'_>) {
    match frame {
        Control::Ping => header(out, PING, 0),
        Control::Pong(data) => {
            let data = &data[..data.len().min(MAX_CONTROL_PAYLOAD)];
            header(out, PONG, data.len());
            out.extend_from_slice(data);
        }
        Control::Close(None) => header(out, CLOSE, 0),
        Control::Close(Some((code, reason))) => {
            let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            header(out, CLOSE, 2 + end);
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&reason.as_bytes()[..end]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: masked with `mask`.
    fn client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(if fin { 0x80 } else { 0 } | opcode);
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
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    fn text(payload: &str) -> Vec<u8> {
        client(true, TEXT, payload.as_bytes(), [1, 2, 3, 4])
    }

    fn all(d: &mut Decoder) -> Result<Vec<Inbound>, FrameError> {
        let mut got = Vec::new();
        while let Some(m) = d.next()? {
            got.push(m);
        }
        Ok(got)
    }

    #[test]
    fn whole_frames_in_one_read() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = text("hello");
        bytes.extend(client(true, PING, b"p", [9, 9, 9, 9]));
        bytes.extend(client(true, PONG, b"", [0, 0, 0, 0]));
        bytes.extend(text(&"x".repeat(300)));
        bytes.extend(text(&"y".repeat(70_000)));
        d.push(&bytes);
        assert_eq!(
            all(&mut d).unwrap(),
            vec![
                Inbound::Text(b"hello".to_vec()),
                Inbound::Ping(b"p".to_vec()),
                Inbound::Pong,
                Inbound::Text("x".repeat(300).into_bytes()),
                Inbound::Text("y".repeat(70_000).into_bytes()),
            ]
        );
        assert!(d.is_empty());
        assert_eq!(d.pending.capacity(), 0, "nothing kept once parsed");
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let bytes = text(&"z".repeat(200));
        for cut in 0..bytes.len() {
            let mut d = Decoder::new(1 << 20);
            d.push(&bytes[..cut]);
            assert_eq!(d.next(), Ok(None), "cut at {cut}");
            d.push(&bytes[cut..]);
            assert_eq!(
                d.next(),
                Ok(Some(Inbound::Text("z".repeat(200).into_bytes())))
            );
            assert!(d.is_empty());
        }
    }

    #[test]
    fn fragments_join_around_control_frames() {
        let mut d = Decoder::new(1 << 20);
        d.push(&client(false, TEXT, b"he", [5, 6, 7, 8]));
        d.push(&client(true, PING, b"", [1, 1, 1, 1]));
        d.push(&client(false, CONTINUATION, b"ll", [0, 1, 0, 1]));
        d.push(&client(true, CONTINUATION, b"o", [4, 3, 2, 1]));
        assert_eq!(
            all(&mut d).unwrap(),
            vec![Inbound::Ping(Vec::new()), Inbound::Text(b"hello".to_vec())]
        );
        assert!(d.is_empty());
        d.push(&client(false, BINARY, &[0, 1], [0; 4]));
        d.push(&client(true, CONTINUATION, &[2], [0; 4]));
        assert_eq!(all(&mut d).unwrap(), vec![Inbound::Binary(3)]);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header() {
        let mut d = Decoder::new(100);
        // Only the header has arrived: no need to wait for the payload.
        d.push(&text(&"a".repeat(101))[..4]);
        assert_eq!(
            d.next(),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
        // Fragments count together.
        let mut d = Decoder::new(100);
        d.push(&client(false, TEXT, &[b'a'; 60], [0; 4]));
        d.push(&client(true, CONTINUATION, &[b'a'; 41], [0; 4]));
        assert_eq!(
            all(&mut d),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
        let mut d = Decoder::new(100);
        d.push(&text(&"a".repeat(100)));
        assert_eq!(all(&mut d).unwrap().len(), 1);
        // A 64-bit length near the top is refused, not allocated.
        let mut d = Decoder::new(100);
        d.push(&[0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(d.next(), Err(FrameError::TooLarge { .. })));
        let mut d = Decoder::new(100);
        d.push(&[0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(d.next(), Err(FrameError::Protocol(_))));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x81, 0x00], "unmasked"),
            (client(true, 0x40 | TEXT, b"a", [0; 4]), "rsv"),
            (client(true, 0x3, b"", [0; 4]), "opcode 3"),
            (client(true, 0xB, b"", [0; 4]), "opcode 11"),
            (client(false, PING, b"", [0; 4]), "fragmented ping"),
            (client(true, PING, &[0; 126], [0; 4]), "long ping"),
            (
                client(true, CONTINUATION, b"a", [0; 4]),
                "stray continuation",
            ),
            (client(true, CLOSE, &[3], [0; 4]), "1-byte close"),
            (client(true, CLOSE, &1005u16.to_be_bytes(), [0; 4]), "1005"),
            (client(true, CLOSE, &999u16.to_be_bytes(), [0; 4]), "999"),
            (client(true, CLOSE, &5000u16.to_be_bytes(), [0; 4]), "5000"),
        ];
        for (bytes, what) in cases {
            let mut d = Decoder::new(1 << 20);
            d.push(&bytes);
            assert!(
                matches!(d.next(), Err(FrameError::Protocol(_))),
                "{what} accepted"
            );
        }
        let mut d = Decoder::new(1 << 20);
        d.push(&client(false, TEXT, b"a", [0; 4]));
        d.push(&client(true, TEXT, b"b", [0; 4]));
        assert!(matches!(all(&mut d), Err(FrameError::Protocol(_))));
    }

    #[test]
    fn text_must_be_utf8_and_close_is_read() {
        let mut d = Decoder::new(1 << 20);
        d.push(&client(true, TEXT, &[0xC3, 0x28], [7; 4]));
        assert_eq!(d.next(), Err(FrameError::BadUtf8));
        // A character split across fragments is fine once joined.
        let mut d = Decoder::new(1 << 20);
        d.push(&client(false, TEXT, &[0xC3], [7; 4]));
        d.push(&client(true, CONTINUATION, &[0xA9], [7; 4]));
        assert_eq!(d.next(), Ok(Some(Inbound::Text("é".as_bytes().to_vec()))));
        let mut d = Decoder::new(1 << 20);
        d.push(&client(true, CLOSE, b"", [0; 4]));
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        d.push(&client(true, CLOSE, &payload, [3; 4]));
        assert_eq!(
            all(&mut d).unwrap(),
            vec![Inbound::Close(None), Inbound::Close(Some(4000))]
        );
        let mut d = Decoder::new(1 << 20);
        d.push(&client(true, CLOSE, &[0x03, 0xE8, 0xFF], [0; 4]));
        assert_eq!(d.next(), Err(FrameError::BadUtf8));
    }

    #[test]
    fn server_frames_have_the_right_headers() {
        let mut out = Vec::new();
        encode_text(&mut out, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        for (len, head) in [(125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode_text(&mut out, &vec![b'a'; len]);
            assert_eq!(out.len(), head + len, "{len}");
        }
        let mut out = Vec::new();
        encode_control(&mut out, Control::Ping);
        encode_control(&mut out, Control::Pong(b"x"));
        encode_control(&mut out, Control::Close(Some((1001, "shutting_down"))));
        encode_control(&mut out, Control::Close(None));
        let mut want = vec![0x89, 0, 0x8A, 1, b'x', 0x88, 15, 0x03, 0xE9];
        want.extend_from_slice(b"shutting_down");
        want.extend_from_slice(&[0x88, 0]);
        assert_eq!(out, want);
        // A long reason is cut on a character boundary.
        let mut out = Vec::new();
        encode_control(&mut out, Control::Close(Some((1000, &"é".repeat(100)))));
        assert!(out.len() <= 2 + 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    proptest! {
        /// Any text messages, masked with any key and delivered in any
        /// chunking, come out whole and in order.
        #[test]
        fn any_chunking_gives_back_the_messages(
            msgs in proptest::collection::vec(".{0,300}", 1..8),
            mask in any::<[u8; 4]>(),
            cuts in proptest::collection::vec(1usize..97, 1..40),
        ) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend(client(true, TEXT, m.as_bytes(), mask));
            }
            let mut d = Decoder::new(1 << 20);
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                got.extend(all(&mut d).unwrap());
            }
            let want: Vec<_> = msgs.iter().map(|m| Inbound::Text(m.as_bytes().to_vec())).collect();
            prop_assert_eq!(got, want);
            prop_assert!(d.is_empty());
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new(256);
            d.push(&bytes);
            let _ = all(&mut d);
        }
    }
}

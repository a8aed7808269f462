//! Bounded line reading: one JSON frame per `\n`-terminated line.
//!
//! # Why not a `BufReader`?
//!
//! A `BufReader` keeps its 8 KiB buffer for the life of the connection, and
//! `read_until` grows its output without a bound. [`LineReader`] instead
//! reads each chunk into a buffer on the stack of the `poll` call (it is
//! never part of the connection's future), and keeps on the heap only the
//! bytes of a line that is still incomplete. An idle connection whose last
//! line ended at the end of a read holds no line buffer at all; a line
//! being received holds at most `max + CHUNK` bytes, and a line over `max`
//! is reported as [`Line::TooLong`] before another byte is read.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the socket per `poll_read`, into a stack buffer (the
/// client's reader; the server reads through its thread's buffer).
pub(crate) const CHUNK: usize = 2048;

/// What [`LineReader::next_line`] yields.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line, without its `\n` (nor a `\r` before it).
    Frame(Vec<u8>),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
    /// The peer closed its side. An incomplete last line is dropped.
    Eof,
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug)]
pub(crate) struct LineReader {
    /// Received bytes not yet returned: an incomplete line, possibly
    /// preceded by complete ones.
    buf: Vec<u8>,
    /// Prefix of `buf` known to hold no `\n`.
    scanned: usize,
    max: usize,
}

impl LineReader {
    /// A reader for lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// The line length limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Bytes held for incomplete lines (capacity, not length).
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends bytes read from the stream (the server's session reads
    /// them itself, through its worker thread's buffer).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether part of a line is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete line (blank lines skipped), or [`Line::TooLong`]
    /// once what is held passes the limit without a newline; `None` until
    /// more bytes are pushed.
    pub(crate) fn next(&mut self) -> Option<Line> {
        if let Some(line) = self.take_line() {
            return Some(line);
        }
        // No newline in what is buffered: the next search starts after it,
        // which keeps scanning linear in the line length.
        self.scanned = self.buf.len();
        if self.buf.len() > self.max {
            self.buf = Vec::new();
            self.scanned = 0;
            return Some(Line::TooLong);
        }
        None
    }

    /// Reads until a complete line, a line over the limit, or the end of
    /// the stream. Blank lines are skipped. Cancel-safe: bytes already read
    /// stay buffered for the next call.
    pub(crate) async fn next_line<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut R,
    ) -> std::io::Result<Line> {
        loop {
            if let Some(line) = self.next() {
                return Ok(line);
            }
            let buf = &mut self.buf;
            let n = poll_fn(|cx| {
                let mut chunk = [0u8; CHUNK];
                let mut rb = ReadBuf::new(&mut chunk);
                match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(rb.filled());
                        Poll::Ready(Ok(rb.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await?;
            if n == 0 {
                self.buf = Vec::new();
                self.scanned = 0;
                return Ok(Line::Eof);
            }
        }
    }

    /// Splits the first complete line off the buffer, if there is one.
    fn take_line(&mut self) -> Option<Line> {
        loop {
            let pos = self.scanned + self.buf[self.scanned..].iter().position(|&b| b == b'\n')?;
            // The rest is allocated at its exact size, and not at all when
            // the line ended the buffer: an idle connection keeps nothing.
            let rest = self.buf.split_off(pos + 1);
            let mut line = std::mem::replace(&mut self.buf, rest);
            self.scanned = 0;
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > self.max {
                return Some(Line::TooLong);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Line::Frame(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(max);
        let mut io = Cursor::new(input.to_vec());
        let mut out = Vec::new();
        loop {
            let l = r.next_line(&mut io).await.unwrap();
            let end = l == Line::Eof;
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_and_strips_crlf_and_blank_lines() {
        let got = lines(b"{\"a\":1}\n\r\n  \n{\"b\":2}\r\n{\"c\"", 64).await;
        assert_eq!(
            got,
            vec![
                Line::Frame(b"{\"a\":1}".to_vec()),
                Line::Frame(b"{\"b\":2}".to_vec()),
                Line::Eof
            ]
        );
    }

    #[tokio::test]
    async fn line_at_the_limit_passes_one_over_does_not() {
        let mut input = vec![b'x'; 100];
        input.push(b'\n');
        input.extend(vec![b'y'; 101]);
        input.push(b'\n');
        let got = lines(&input, 100).await;
        assert_eq!(
            got,
            vec![Line::Frame(vec![b'x'; 100]), Line::TooLong, Line::Eof]
        );
    }

    /// An endless stream without a newline.
    struct Endless {
        served: usize,
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining();
            buf.put_slice(&vec![b'a'; n]);
            self.served += n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn endless_line_is_cut_at_the_limit_with_bounded_memory() {
        let max = 64 * 1024;
        let mut r = LineReader::new(max);
        let mut io = Endless { served: 0 };
        let line = r.next_line(&mut io).await.unwrap();
        assert_eq!(line, Line::TooLong);
        // The buffer never holds more than what was read, and reading stops
        // one chunk past the limit.
        assert!(
            io.served <= max + CHUNK,
            "read {} bytes for a {max} limit",
            io.served
        );
        assert_eq!(r.buffered_capacity(), 0, "the buffer is released");
    }

    #[tokio::test]
    async fn idle_reader_holds_no_buffer() {
        let mut r = LineReader::new(1024);
        let mut io = Cursor::new(b"{\"type\":\"ping\"}\n".to_vec());
        assert!(matches!(
            r.next_line(&mut io).await.unwrap(),
            Line::Frame(_)
        ));
        assert_eq!(r.buffered_capacity(), 0);
    }
}

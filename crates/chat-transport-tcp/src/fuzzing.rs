//! Drives the line reader over in-memory input, for fuzz targets and
//! property tests. Compiled only with the `fuzzing` feature (and in this
//! crate's own tests); not part of the stable API.
//!
//! The input arrives as the given chunks, each served by as many reads as
//! the reader's buffer needs, and every read is preceded by one that is not
//! ready yet. At every such pending read the line future is dropped and a
//! new one started, as `tokio::select!` does to a reader that loses a race
//! (the terminal client reads the server this way): the reader must lose no
//! byte when cancelled there.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

use crate::line::{Line, LineReader};

/// Why [`read_lines`] stopped before the end of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineError {
    /// A line longer than the limit (the server closes the connection).
    TooLong,
    /// The reader kept returning pending without making progress (a bug:
    /// the in-memory input is always ready on the next poll).
    Stalled,
    /// A read failed (a bug: the in-memory input never fails).
    Io(std::io::ErrorKind),
}

/// Reads `chunks` (concatenated, in order) as one stream split into lines
/// of at most `max_line` bytes, and returns the lines in order. It stops at
/// the end of the input or at the first error, which is the last item.
/// An incomplete last line is dropped, as on a real connection.
pub fn read_lines(chunks: &[&[u8]], max_line: usize) -> Vec<Result<Vec<u8>, LineError>> {
    let mut io = Chunks {
        chunks,
        at: 0,
        pos: 0,
        ready: false,
    };
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    // Each byte is read at most once, each read is preceded by one pending
    // poll, and each line ends one future: this many polls always suffice.
    let mut budget = 4 * (total + chunks.len()) + 16;
    let mut reader = LineReader::new(max_line);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        if budget == 0 {
            out.push(Err(LineError::Stalled));
            return out;
        }
        budget -= 1;
        let mut next = std::pin::pin!(reader.next_line(&mut io));
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(Line::Frame(line))) => out.push(Ok(line)),
            Poll::Ready(Ok(Line::Eof)) => return out,
            Poll::Ready(Ok(Line::TooLong)) => {
                out.push(Err(LineError::TooLong));
                return out;
            }
            Poll::Ready(Err(e)) => {
                out.push(Err(LineError::Io(e.kind())));
                return out;
            }
            // Cancelled: the future is dropped here and a new one started.
            Poll::Pending => {}
        }
    }
}

/// An in-memory stream that is not ready before each read.
struct Chunks<'a> {
    chunks: &'a [&'a [u8]],
    /// The chunk being served.
    at: usize,
    /// Bytes of it already served.
    pos: usize,
    /// Whether the next poll serves bytes (else it is pending).
    ready: bool,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        // Empty chunks would read as the end of the stream: skip them.
        while self.at < self.chunks.len() && self.pos >= self.chunks[self.at].len() {
            self.at += 1;
            self.pos = 0;
        }
        if let Some(chunk) = self.chunks.get(self.at) {
            let rest = &chunk[self.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.pos += n;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the reader must return, computed the simple way: split at every
    /// `\n`, drop one `\r` before it, skip blank lines; stop at a line over
    /// the limit, or at an incomplete last line over it. `None` marks a line
    /// whose outcome depends on where the input was split: exactly the
    /// limit once its `\r` is dropped (with the `\r` it may be seen over the
    /// limit before its `\n` arrives).
    fn model(input: &[u8], max: usize) -> Vec<Option<Result<Vec<u8>, LineError>>> {
        let mut out = Vec::new();
        let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let last = segments.pop().unwrap_or_default();
        for raw in segments {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.len() > max {
                out.push(Some(Err(LineError::TooLong)));
                return out;
            }
            if raw.len() > max {
                out.push(None);
                return out;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(Some(Ok(line.to_vec())));
            }
        }
        if last.len() > max {
            out.push(Some(Err(LineError::TooLong)));
        }
        out
    }

    fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for c in cuts {
            out.push(&input[from..c]);
            from = c;
        }
        out.push(&input[from..]);
        out
    }

    /// Checks the reader's output against the model; an ambiguous line may
    /// come out whole or as `TooLong`, and ends the comparison either way.
    fn check(got: &[Result<Vec<u8>, LineError>], want: &[Option<Result<Vec<u8>, LineError>>]) {
        for (i, w) in want.iter().enumerate() {
            match w {
                Some(w) => assert_eq!(got.get(i), Some(w), "item {i}: got {got:?}"),
                None => {
                    assert!(
                        matches!(got.get(i), Some(Err(LineError::TooLong)) | Some(Ok(_))),
                        "item {i}: got {got:?}"
                    );
                    return;
                }
            }
        }
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    }

    fn input() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'\n'),
                Just(b'\r'),
                Just(b' '),
                Just(b'x'),
                any::<u8>()
            ],
            0..3000,
        )
    }

    proptest! {
        #[test]
        fn any_split_gives_the_model_lines(
            input in input(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max in prop_oneof![0usize..8, 8usize..64, 2000usize..2100],
        ) {
            let chunks = split(&input, &cuts);
            let got = read_lines(&chunks, max);
            for line in got.iter().flatten() {
                prop_assert!(line.len() <= max && !line.contains(&b'\n'));
            }
            check(&got, &model(&input, max));
        }
    }

    #[test]
    fn crlf_line_at_the_limit_may_go_either_way() {
        let input = b"abcd\r\nef\n";
        // Whole: the `\r` is dropped with the `\n`.
        assert_eq!(
            read_lines(&[input], 4),
            vec![Ok(b"abcd".to_vec()), Ok(b"ef".to_vec())]
        );
        // Split before the `\n`: five bytes are buffered, over the limit.
        assert_eq!(
            read_lines(&[&input[..5], &input[5..]], 4),
            vec![Err(LineError::TooLong)]
        );
    }

    #[test]
    fn cancelled_reads_lose_no_byte() {
        let chunks: Vec<&[u8]> = vec![b"{\"a\"", b":1}\n{", b"", b"\"b\":2}\n", b"\n"];
        assert_eq!(
            read_lines(&chunks, 64),
            vec![Ok(b"{\"a\":1}".to_vec()), Ok(b"{\"b\":2}".to_vec())]
        );
    }
}

//! An incremental parser for server-sent events (`text/event-stream`), as
//! specified by the WHATWG HTML standard, section "Server-sent events".
//!
//! Bytes are fed as they arrive from the network, in pieces of any size: a
//! line, a `\r\n` pair or a multi-byte UTF-8 character may be split across
//! two reads, and the events that come out are the same as if the whole
//! stream had been fed at once. Every line and every event is bounded by
//! [`SseParser::new`]'s `max_event_bytes`; past it the parser returns
//! [`SseError::TooLarge`] instead of buffering without end.
//!
//! ```
//! use chat_llm_openai::sse::SseParser;
//!
//! let mut parser = SseParser::new(1024);
//! let mut events = Vec::new();
//! parser.push(b"data: hel", &mut events).unwrap();
//! parser.push(b"lo\r", &mut events).unwrap();
//! parser.push(b"\n\r\ndata: [DONE]\n\n", &mut events).unwrap();
//! let data: Vec<_> = events.iter().map(|e| e.data.as_str()).collect();
//! assert_eq!(data, ["hello", "[DONE]"]);
//! ```

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the event had one.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Why the stream cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line or an event is larger than the parser's bound.
    #[error("server-sent event larger than {limit} bytes")]
    TooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
}

/// An incremental server-sent events parser. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SseParser {
    max_event_bytes: usize,
    /// The current, unterminated line.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it ends nothing.
    after_cr: bool,
    /// No line has been completed yet (a leading BOM is dropped).
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

impl SseParser {
    /// A parser whose lines and events are at most `max_event_bytes` long.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: None,
        }
    }

    /// Feeds the next bytes of the stream; complete events are appended to
    /// `out`. After an error the parser starts over with empty buffers.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while !bytes.is_empty() {
            let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.line.extend_from_slice(bytes);
                return self.check_size();
            };
            self.line.extend_from_slice(&bytes[..end]);
            self.check_size()?;
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
            let skip = if bytes[end] == b'\r' {
                match bytes.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => {
                        self.after_cr = true;
                        1
                    }
                }
            } else {
                1
            };
            bytes = &bytes[end + skip..];
            self.check_size()?;
        }
        Ok(())
    }

    /// Ends the stream. Returns whether an unfinished event (or line) was
    /// pending: the standard discards it, and a caller may treat it as a
    /// truncated stream.
    pub fn finish(&mut self) -> bool {
        let pending = self.has_data || !self.line.is_empty();
        *self = SseParser::new(self.max_event_bytes);
        pending
    }

    fn check_size(&mut self) -> Result<(), SseError> {
        if self.line.len() > self.max_event_bytes || self.data.len() > self.max_event_bytes {
            *self = SseParser::new(self.max_event_bytes);
            return Err(SseError::TooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let mut line = String::from_utf8_lossy(line);
        if std::mem::take(&mut self.at_start) {
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned().into();
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return; // a comment
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` matter for reconnecting EventSource clients;
            // a completion stream is never resumed.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the last `\n`
        out.push(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let events = parse_all(&[
            b": keep-alive\n\nevent: delta\ndata: a\ndata:b\nid: 7\nretry: 10\n\ndata\n\n",
        ]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("delta".into()),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: String::new()
                },
            ]
        );
    }

    #[test]
    fn all_line_endings_work() {
        let events = parse_all(&[b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n"]);
        assert_eq!(data(&events), ["1", "2", "3"]);
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_ending() {
        let events = parse_all(&[b"data: 1\r", b"\n", b"data: 2\r", b"\n\r", b"\n"]);
        assert_eq!(data(&events), ["1\n2"]);
    }

    #[test]
    fn utf8_split_across_reads_is_kept() {
        let text = "data: héllo ✓\n\n".as_bytes();
        let events = parse_all(&[&text[..8], &text[8..16], &text[16..]]);
        assert_eq!(data(&events), ["héllo ✓"]);
    }

    #[test]
    fn leading_bom_is_dropped_and_events_without_data_are_not_dispatched() {
        let events = parse_all(&["\u{feff}data: x\n\nevent: empty\n\n".as_bytes()]);
        assert_eq!(data(&events), ["x"]);
    }

    #[test]
    fn unfinished_event_is_reported_at_the_end() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.push(b"data: complete\n\ndata: half", &mut out).unwrap();
        assert_eq!(data(&out), ["complete"]);
        assert!(p.finish());
        p.push(b"data: x\n\n", &mut out).unwrap();
        assert!(!p.finish());
    }

    #[test]
    fn oversized_lines_and_events_are_errors() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(
            p.push(&[b'a'; 17], &mut out),
            Err(SseError::TooLarge { limit: 16 })
        );
        let mut p = SseParser::new(16);
        for _ in 0..3 {
            let r = p.push(b"data: 123456\n", &mut out);
            if r.is_err() {
                assert!(out.is_empty());
                return;
            }
        }
        panic!("an event of 3 x 6 data bytes passed a 16-byte bound");
    }

    fn split_at_points(bytes: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
        points.iter_mut().for_each(|p| *p %= bytes.len() + 1);
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&bytes[start..p]);
            start = p;
        }
        chunks.push(&bytes[start..]);
        chunks
    }

    fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "[a-zé✓ {}\":,]{0,12}".prop_map(|s| format!("data: {s}")),
            "[a-z]{0,6}".prop_map(|s| format!("event: {s}")),
            "[a-z ]{0,6}".prop_map(|s| format!(": {s}")),
            Just(String::new()),
            Just("data: [DONE]".to_owned()),
        ];
        let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        proptest::collection::vec((line, ending), 0..24).prop_map(|lines| {
            lines
                .into_iter()
                .flat_map(|(l, e)| format!("{l}{e}").into_bytes())
                .collect()
        })
    }

    proptest! {
        #[test]
        fn arbitrary_splits_yield_the_same_events(
            stream in sse_stream(),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = parse_all(&[&stream]);
            let split = parse_all(&split_at_points(&stream, points));
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            limit in 0usize..64,
        ) {
            let mut p = SseParser::new(limit);
            let mut out = Vec::new();
            for c in &chunks {
                let _ = p.push(c, &mut out);
            }
            for e in &out {
                prop_assert!(e.data.len() <= limit);
            }
            p.finish();
        }
    }
}

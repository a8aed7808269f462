//! One streamed completion: the response body's server-sent events turned
//! into text deltas, under the first-token and whole-reply deadlines.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::error::{api_error_message, clip, Error};
use crate::sse::{SseEvent, SseParser};

/// A `chat.completion.chunk` (only the parts the bot reads).
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Content>,
    #[serde(default)]
    message: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    content: Option<String>,
}

/// What one event's data says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Text to append (possibly empty), and whether the choice finished.
    Delta { text: String, finished: bool },
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Reads one event's data. `secret` is scrubbed from error text.
pub(crate) fn parse_event(ev: &SseEvent, secret: Option<&str>) -> Result<Event, Error> {
    let data = ev.data.trim();
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let value: serde_json::Value = serde_json::from_str(data).map_err(|e| {
        Error::Protocol(Error::scrub(
            &format!("bad event ({e}): {}", clip(data)),
            secret,
        ))
    })?;
    if let Some(message) = api_error_message(&value) {
        return Err(Error::Api(Error::scrub(&clip(&message), secret)));
    }
    if ev.event.as_deref() == Some("error") {
        return Err(Error::Api(Error::scrub(&clip(data), secret)));
    }
    let chunk: Chunk = serde_json::from_value(value)
        .map_err(|e| Error::Protocol(format!("not a completion chunk: {e}")))?;
    let Some(choice) = chunk.choices.into_iter().next() else {
        // Usage-only and keep-alive chunks carry no choice.
        return Ok(Event::Delta {
            text: String::new(),
            finished: false,
        });
    };
    let text = choice
        .delta
        .or(choice.message)
        .and_then(|c| c.content)
        .unwrap_or_default();
    Ok(Event::Delta {
        text,
        finished: choice.finish_reason.is_some(),
    })
}

/// The text of a non-streamed completion (a server that ignores
/// `"stream": true`).
pub(crate) fn parse_completion(body: &[u8], secret: Option<&str>) -> Result<String, Error> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Protocol(format!("response is not JSON: {e}")))?;
    if let Some(message) = api_error_message(&value) {
        return Err(Error::Api(Error::scrub(&clip(&message), secret)));
    }
    let chunk: Chunk = serde_json::from_value(value)
        .map_err(|e| Error::Protocol(format!("not a completion: {e}")))?;
    chunk
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message.or(c.delta))
        .and_then(|c| c.content)
        .ok_or_else(|| Error::Protocol("completion without a message".to_owned()))
}

/// A completion being streamed.
pub(crate) struct Live {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    events: Vec<SseEvent>,
    pending: VecDeque<String>,
    first_deadline: Instant,
    deadline: Instant,
    started: bool,
    finished: bool,
    done: bool,
    /// An error met after some deltas of the same read: reported after them.
    failed: Option<Error>,
    secret: Option<String>,
    /// The request slot, held until the stream ends or is dropped.
    _permit: OwnedSemaphorePermit,
}

impl Live {
    pub(crate) fn new(
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        max_event_bytes: usize,
        first_deadline: Instant,
        deadline: Instant,
        secret: Option<String>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Live {
            body,
            parser: SseParser::new(max_event_bytes),
            events: Vec::new(),
            pending: VecDeque::new(),
            first_deadline,
            deadline,
            started: false,
            finished: false,
            done: false,
            failed: None,
            secret,
            _permit: permit,
        }
    }

    /// The next delta; `None` once the reply is complete. After an error the
    /// caller stops polling.
    pub(crate) async fn next(&mut self) -> Option<Result<String, Error>> {
        loop {
            if let Some(delta) = self.pending.pop_front() {
                return Some(Ok(delta));
            }
            if let Some(e) = self.failed.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            let (deadline, on_timeout) = if self.started {
                (self.deadline, Error::ReplyTimeout)
            } else if self.first_deadline < self.deadline {
                (self.first_deadline, Error::FirstTokenTimeout)
            } else {
                (self.deadline, Error::ReplyTimeout)
            };
            let read = match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(read) => read,
                Err(_) => return Some(Err(on_timeout)),
            };
            match read {
                Some(Ok(bytes)) => {
                    if let Err(e) = self.feed(&bytes) {
                        self.failed = Some(e);
                    }
                }
                Some(Err(e)) => return Some(Err(Error::Request(e.without_url()))),
                None => {
                    let truncated = self.parser.finish();
                    if self.finished && !truncated {
                        // A finish_reason without `[DONE]`: complete enough.
                        self.done = true;
                    } else {
                        return Some(Err(Error::EndedEarly));
                    }
                }
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.events.clear();
        self.parser
            .push(bytes, &mut self.events)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        for ev in self.events.drain(..) {
            if self.done {
                break; // nothing after `[DONE]` counts
            }
            match parse_event(&ev, self.secret.as_deref())? {
                Event::Done => self.done = true,
                Event::Delta { text, finished } => {
                    self.finished |= finished;
                    if !text.is_empty() {
                        self.started = true;
                        self.pending.push_back(text);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_are_read() {
        let d = r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(
            parse_event(&ev(d), None).unwrap(),
            Event::Delta {
                text: "Hi".into(),
                finished: false
            }
        );
        let d = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_event(&ev(d), None).unwrap(),
            Event::Delta {
                text: String::new(),
                finished: true
            }
        );
        assert_eq!(parse_event(&ev("[DONE]"), None).unwrap(), Event::Done);
        let d = r#"{"choices":[],"usage":{"total_tokens":3}}"#;
        assert!(matches!(
            parse_event(&ev(d), None).unwrap(),
            Event::Delta { .. }
        ));
    }

    #[test]
    fn error_events_and_garbage_are_errors_without_the_secret() {
        let d = r#"{"error":{"message":"key sk-123 is overloaded"}}"#;
        let e = parse_event(&ev(d), Some("sk-123")).unwrap_err();
        assert!(matches!(&e, Error::Api(m) if m.contains("overloaded") && !m.contains("sk-123")));
        let e = parse_event(&ev("not json sk-123"), Some("sk-123")).unwrap_err();
        assert!(matches!(&e, Error::Protocol(m) if !m.contains("sk-123")));
    }

    #[test]
    fn non_streamed_completions_are_read() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"Hello"}}]}"#;
        assert_eq!(parse_completion(body, None).unwrap(), "Hello");
        assert!(parse_completion(b"{}", None).is_err());
    }
}

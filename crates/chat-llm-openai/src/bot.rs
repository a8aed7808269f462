//! [`OpenAiBot`]: the [`Bot`] implementation: limits, cache, retries, and
//! the streamed request.

use std::sync::Arc;

use bytes::Bytes;
use chat_core::{Bot, BotError, BotRequest, BotStream, BotTask};
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cache::{self, ReplyCache};
use crate::error::{api_error_message, clip, Error};
use crate::prompt::{build_messages, clean_suggestions, local_answer, ChatMessage};
use crate::ratelimit::UserRateLimiter;
use crate::retry::{backoff, retry_after};
use crate::settings::OpenAiSettings;
use crate::stream::{parse_completion, Live};

/// A reply stream with this crate's typed errors.
pub type ReplyStream = BoxStream<'static, Result<String, Error>>;

/// A [`Bot`] backed by an OpenAI-compatible Chat Completions endpoint.
///
/// Cheap to clone: clones share the HTTP connection pool, the limits and
/// the cache.
#[derive(Clone)]
pub struct OpenAiBot {
    shared: Arc<Shared>,
}

struct Shared {
    settings: OpenAiSettings,
    url: String,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    rate: UserRateLimiter,
    cache: ReplyCache,
}

impl std::fmt::Debug for OpenAiBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBot")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

impl OpenAiBot {
    /// A bot with these settings; fails on an invalid setting.
    pub fn new(settings: OpenAiSettings) -> Result<Self, Error> {
        settings.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .user_agent(concat!("chat-llm-openai/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        let url = format!(
            "{}/chat/completions",
            settings.base_url.trim_end_matches('/')
        );
        Ok(OpenAiBot {
            shared: Arc::new(Shared {
                url,
                client,
                slots: Arc::new(Semaphore::new(settings.max_concurrency)),
                rate: UserRateLimiter::new(
                    settings.user_burst,
                    settings.user_rate,
                    settings.user_rate_interval,
                    settings.rate_tracked_users,
                ),
                cache: ReplyCache::new(settings.cache_capacity, settings.cache_ttl),
                settings,
            }),
        })
    }

    /// The settings the bot runs with.
    pub fn settings(&self) -> &OpenAiSettings {
        &self.shared.settings
    }

    /// Starts a reply, with this crate's typed errors ([`Bot::reply`] maps
    /// them to [`BotError`]).
    pub fn complete(&self, request: BotRequest) -> ReplyStream {
        let shared = self.shared.clone();
        if !shared.rate.check(&request.asker) {
            tracing::debug!(bot = %shared.settings.name, user = %request.asker, "rate limited");
            return error_stream(Error::RateLimited {
                user: request.asker,
            });
        }
        if let Some(text) = local_answer(&request) {
            return words_stream(text);
        }
        let smart = matches!(request.task, BotTask::SmartReplies);
        let messages = build_messages(&shared.settings, &request);
        let s = &shared.settings;
        let body = ChatRequest {
            model: &s.model,
            messages: &messages,
            stream: true,
            max_tokens: s.max_tokens,
            temperature: s.temperature,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => return error_stream(Error::Protocol(format!("cannot encode request: {e}"))),
        };
        let key = cache::key(&body);
        if let Some(text) = shared.cache.get(&key) {
            tracing::debug!(bot = %s.name, "reply from cache");
            return words_stream(&text);
        }
        stream::once(async move { shared.start(body, key, smart).await })
            .flatten()
            .boxed()
    }
}

impl Bot for OpenAiBot {
    fn name(&self) -> &str {
        &self.shared.settings.name
    }

    fn reply(&self, request: BotRequest) -> BotStream {
        self.complete(request)
            .map(|r| r.map_err(BotError::from))
            .boxed()
    }

    fn fallback(&self, error: &BotError) -> String {
        match error {
            BotError::Busy => {
                "I'm answering a lot of questions right now. Please ask me again in a minute."
            }
            BotError::Timeout => "Sorry, that took me too long. Please try asking again.",
            _ => "Sorry, I can't reach my language model right now. Please try again later.",
        }
        .to_owned()
    }
}

impl Shared {
    fn secret(&self) -> Option<&str> {
        self.settings.api_key.as_ref().map(|k| k.expose())
    }

    /// Takes a request slot, sends with retries, and streams the reply.
    async fn start(self: Arc<Self>, body: Bytes, key: cache::Key, smart: bool) -> ReplyStream {
        let s = &self.settings;
        let deadline = Instant::now() + s.reply_timeout;
        let slot_wait = (Instant::now() + s.queue_timeout).min(deadline);
        let permit =
            match tokio::time::timeout_at(slot_wait, self.slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => return error_stream(Error::Busy),
            };
        let (live, first_deadline) = match self.send_with_retries(&body, deadline).await {
            Ok(r) => r,
            Err(e) => return error_stream(e),
        };
        let live = match live {
            Response::Whole(text) => {
                drop(permit);
                let text = if smart {
                    clean_suggestions(&text)
                } else {
                    text
                };
                self.cache.put(key, text.clone());
                return words_stream(&text);
            }
            Response::Stream(resp) => Live::new(
                resp.bytes_stream().boxed(),
                s.max_event_bytes,
                first_deadline,
                deadline,
                self.secret().map(str::to_owned),
                permit,
            ),
        };
        if smart {
            // Smart replies are cleaned up first, then sent at once.
            return stream::once(async move {
                let mut live = live;
                let mut text = String::new();
                let mut complete = true;
                while let Some(delta) = live.next().await {
                    text.push_str(&delta?);
                    if text.len() >= self.settings.max_reply_bytes {
                        complete = false;
                        break;
                    }
                }
                let text = clean_suggestions(&text);
                if complete {
                    self.cache.put(key, text.clone());
                }
                Ok(text)
            })
            .boxed();
        }
        let state = (live, String::new(), Some(self));
        stream::unfold(state, move |(mut live, mut text, shared)| async move {
            let shared = shared?;
            match live.next().await {
                Some(Ok(delta)) => {
                    text.push_str(&delta);
                    if text.len() >= shared.settings.max_reply_bytes {
                        tracing::debug!(bot = %shared.settings.name, "reply cut at max_reply_bytes");
                        return Some((Ok(delta), (live, text, None)));
                    }
                    Some((Ok(delta), (live, text, Some(shared))))
                }
                Some(Err(e)) => {
                    tracing::warn!(bot = %shared.settings.name, error = %e, "reply stream failed");
                    Some((Err(e), (live, text, None)))
                }
                None => {
                    shared.cache.put(key, text);
                    None
                }
            }
        })
        .boxed()
    }

    async fn send_once(&self, body: &Bytes) -> reqwest::Result<reqwest::Response> {
        let mut rb = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .body(body.clone());
        if let Some(key) = &self.settings.api_key {
            rb = rb.bearer_auth(key.expose());
        }
        rb.send().await
    }

    /// Sends the request, retrying 429, 5xx and connection failures with
    /// backoff (or `Retry-After`) while time is left. Nothing has been
    /// streamed yet, so a retry is invisible to the room.
    async fn send_with_retries(
        &self,
        body: &Bytes,
        deadline: Instant,
    ) -> Result<(Response, Instant), Error> {
        let s = &self.settings;
        let mut attempt = 0;
        loop {
            let first_deadline = (Instant::now() + s.first_token_timeout).min(deadline);
            let timeout_error = if first_deadline < deadline {
                Error::FirstTokenTimeout
            } else {
                Error::ReplyTimeout
            };
            let sent = tokio::time::timeout_at(first_deadline, self.send_once(body)).await;
            let (err, wait) = match sent {
                Err(_) => return Err(timeout_error),
                Ok(Ok(resp)) if resp.status().is_success() => {
                    return self
                        .success(resp, first_deadline)
                        .await
                        .map(|r| (r, first_deadline));
                }
                Ok(Ok(resp)) => self.status_error(resp, deadline).await,
                Ok(Err(e)) if e.is_connect() => (Error::Connect(e.without_url()), None),
                Ok(Err(e)) => return Err(Error::Request(e.without_url())),
            };
            if !err.is_retryable() || attempt >= s.max_retries {
                return Err(err);
            }
            let delay = match wait {
                Some(d) if d > s.retry_after_max => return Err(err),
                Some(d) => d,
                None => backoff(attempt, s.backoff_base, s.backoff_max),
            };
            if Instant::now() + delay >= deadline {
                return Err(err);
            }
            tracing::warn!(bot = %s.name, attempt, ?delay, error = %err, "retrying the endpoint");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn success(&self, resp: reqwest::Response, until: Instant) -> Result<Response, Error> {
        let json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
        if !json {
            return Ok(Response::Stream(resp));
        }
        let body = read_bounded(resp, self.settings.max_event_bytes, until).await?;
        parse_completion(&body, self.secret()).map(Response::Whole)
    }

    /// The error for a non-success status, and its `Retry-After`.
    async fn status_error(
        &self,
        resp: reqwest::Response,
        until: Instant,
    ) -> (Error, Option<std::time::Duration>) {
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers().get(RETRY_AFTER));
        let body = read_bounded(resp, self.settings.max_event_bytes, until)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| api_error_message(&v))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        let message = Error::scrub(&clip(&message), self.secret());
        (Error::Status { status, message }, wait)
    }
}

/// A successful response: streamed, or whole (the server ignored
/// `"stream": true`).
enum Response {
    Stream(reqwest::Response),
    Whole(String),
}

/// At most `max` bytes of a response body, read before `until`.
async fn read_bounded(
    mut resp: reqwest::Response,
    max: usize,
    until: Instant,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(until, resp.chunk())
            .await
            .map_err(|_| Error::ReplyTimeout)?
            .map_err(|e| Error::Request(e.without_url()))?;
        let Some(chunk) = chunk else { return Ok(body) };
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            return Ok(body);
        }
    }
}

fn error_stream(e: Error) -> ReplyStream {
    stream::once(async move { Err(e) }).boxed()
}

/// A finished text as word-sized deltas (each word with the whitespace
/// before it), so cached and whole replies stream like live ones.
fn words_stream(text: &str) -> ReplyStream {
    stream::iter(split_words(text).into_iter().map(Ok)).boxed()
}

/// Splits `text` into pieces that concatenate back to it, each starting
/// with the whitespace before a word.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && !prev_space && i > start {
            out.push(text[start..i].to_owned());
            start = i;
        }
        prev_space = space;
    }
    if start < text.len() {
        out.push(text[start..].to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_concatenate_back() {
        for text in ["Hello world", "  lead\n\nand  trail  ", "", "one", "é ✓ x"] {
            let parts = split_words(text);
            assert_eq!(parts.concat(), text);
            assert!(parts.iter().all(|p| !p.is_empty()));
        }
        assert_eq!(split_words("a b\nc"), ["a", " b", "\nc"]);
    }
}

//! [`OpenAiSettings`]: every knob and bound of the bot, with defaults, and
//! the [`ApiKey`] that never shows in `Debug` output.

use std::time::Duration;

/// An API key. Its `Debug` output is redacted and it has no `Display`, so a
/// key cannot end up in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant in a group chat. \
Messages from people are written as \"name: text\". Answer briefly and plainly, \
in the language of the question.";

/// Settings of an [`OpenAiBot`](crate::OpenAiBot): the endpoint, the prompt,
/// and every bound. Build with [`OpenAiSettings::default`] or
/// [`OpenAiSettings::from_env`] and the chained setters.
///
/// `Debug` output shows everything but the API key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenAiSettings {
    /// The bot's user name in the chat. Default `assistant`.
    pub name: String,
    /// The API base URL, up to and including `/v1`; the bot posts to
    /// `{base_url}/chat/completions`. Default `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model name sent with each request. Default `gpt-4o-mini`.
    pub model: String,
    /// The bearer token, when the endpoint needs one. Default none.
    pub api_key: Option<ApiKey>,
    /// The system message sent first. Default [`DEFAULT_SYSTEM_PROMPT`].
    pub system_prompt: String,
    /// Most characters of room messages sent as context; the newest are
    /// kept. Default 8,000.
    pub context_chars: usize,
    /// Longest wait for a TCP (and TLS) connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest wait from sending a request to the first text delta.
    /// Default 30 s.
    pub first_token_timeout: Duration,
    /// Longest a whole reply may take, retries included. Default 60 s.
    pub reply_timeout: Duration,
    /// Retries after a 429, a 5xx or a connection failure, made only before
    /// any text was streamed. Default 2.
    pub max_retries: u32,
    /// First retry delay; it doubles at each retry, with jitter. Default
    /// 500 ms.
    pub backoff_base: Duration,
    /// Longest delay between retries. Default 8 s.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; a server asking for a longer wait
    /// gets no retry. Default 30 s.
    pub retry_after_max: Duration,
    /// Requests to the endpoint at once. Default 8.
    pub max_concurrency: usize,
    /// How long a reply waits for a free request slot before
    /// [`BotError::Busy`](chat_core::BotError::Busy). Default 5 s.
    pub queue_timeout: Duration,
    /// Token bucket per asking user: requests in a burst (every reply
    /// counts, cached ones too). Default 5.
    pub user_burst: u32,
    /// Token bucket per asking user: requests regained per
    /// [`user_rate_interval`](Self::user_rate_interval). Default 10.
    pub user_rate: u32,
    /// Token bucket refill interval. Default 60 s.
    pub user_rate_interval: Duration,
    /// Users whose buckets are tracked before idle ones are dropped.
    /// Default 10,000.
    pub rate_tracked_users: usize,
    /// Replies kept in the response cache; 0 turns the cache off.
    /// Default 256.
    pub cache_capacity: usize,
    /// How long a cached reply stays valid. Default 10 min.
    pub cache_ttl: Duration,
    /// `max_tokens` sent with each request. Default 512.
    pub max_tokens: Option<u32>,
    /// `temperature` sent with each request (server default when none).
    /// Default 0.7.
    pub temperature: Option<f32>,
    /// Largest server-sent event, error body or non-streamed response, in
    /// bytes. Default 256 KiB.
    pub max_event_bytes: usize,
    /// Longest reply kept, in bytes: past it the stream ends there (and the
    /// cut reply is not cached). Default 64 KiB.
    pub max_reply_bytes: usize,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            name: "assistant".to_owned(),
            base_url: "https://api.openai.com/v1".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            api_key: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            context_chars: 8_000,
            connect_timeout: Duration::from_secs(10),
            first_token_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(60),
            max_retries: 2,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            retry_after_max: Duration::from_secs(30),
            max_concurrency: 8,
            queue_timeout: Duration::from_secs(5),
            user_burst: 5,
            user_rate: 10,
            user_rate_interval: Duration::from_secs(60),
            rate_tracked_users: 10_000,
            cache_capacity: 256,
            cache_ttl: Duration::from_secs(600),
            max_tokens: Some(512),
            temperature: Some(0.7),
            max_event_bytes: 256 * 1024,
            max_reply_bytes: 64 * 1024,
        }
    }
}

impl OpenAiSettings {
    /// Defaults, with the API key from `OPENAI_API_KEY`, the base URL from
    /// `OPENAI_BASE_URL` and the model from `OPENAI_MODEL` when those are
    /// set and not empty.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        let mut s = OpenAiSettings::default();
        if let Some(key) = var("OPENAI_API_KEY") {
            s.api_key = Some(ApiKey::new(key.trim()));
        }
        if let Some(url) = var("OPENAI_BASE_URL") {
            s.base_url = url.trim().to_owned();
        }
        if let Some(model) = var("OPENAI_MODEL") {
            s.model = model.trim().to_owned();
        }
        s
    }

    /// Sets [`OpenAiSettings::api_key`].
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey::new(key));
        self
    }

    /// Sets [`OpenAiSettings::max_tokens`].
    #[must_use]
    pub fn max_tokens(mut self, v: Option<u32>) -> Self {
        self.max_tokens = v;
        self
    }

    /// Sets [`OpenAiSettings::temperature`].
    #[must_use]
    pub fn temperature(mut self, v: Option<f32>) -> Self {
        self.temperature = v;
        self
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl OpenAiSettings {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, v: $ty) -> Self {
                    self.$name = v.into();
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`OpenAiSettings::name`].
    name: impl Into<String>,
    /// Sets [`OpenAiSettings::base_url`].
    base_url: impl Into<String>,
    /// Sets [`OpenAiSettings::model`].
    model: impl Into<String>,
    /// Sets [`OpenAiSettings::system_prompt`].
    system_prompt: impl Into<String>,
    /// Sets [`OpenAiSettings::context_chars`].
    context_chars: usize,
    /// Sets [`OpenAiSettings::connect_timeout`].
    connect_timeout: Duration,
    /// Sets [`OpenAiSettings::first_token_timeout`].
    first_token_timeout: Duration,
    /// Sets [`OpenAiSettings::reply_timeout`].
    reply_timeout: Duration,
    /// Sets [`OpenAiSettings::max_retries`].
    max_retries: u32,
    /// Sets [`OpenAiSettings::backoff_base`].
    backoff_base: Duration,
    /// Sets [`OpenAiSettings::backoff_max`].
    backoff_max: Duration,
    /// Sets [`OpenAiSettings::retry_after_max`].
    retry_after_max: Duration,
    /// Sets [`OpenAiSettings::max_concurrency`].
    max_concurrency: usize,
    /// Sets [`OpenAiSettings::queue_timeout`].
    queue_timeout: Duration,
    /// Sets [`OpenAiSettings::user_burst`].
    user_burst: u32,
    /// Sets [`OpenAiSettings::user_rate`].
    user_rate: u32,
    /// Sets [`OpenAiSettings::user_rate_interval`].
    user_rate_interval: Duration,
    /// Sets [`OpenAiSettings::rate_tracked_users`].
    rate_tracked_users: usize,
    /// Sets [`OpenAiSettings::cache_capacity`].
    cache_capacity: usize,
    /// Sets [`OpenAiSettings::cache_ttl`].
    cache_ttl: Duration,
    /// Sets [`OpenAiSettings::max_event_bytes`].
    max_event_bytes: usize,
    /// Sets [`OpenAiSettings::max_reply_bytes`].
    max_reply_bytes: usize,
}

impl OpenAiSettings {
    /// Checks every setting; the bot is built only from valid settings.
    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let invalid = |name, reason| Err(crate::Error::InvalidSetting { name, reason });
        let name_ok = (1..=32).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !name_ok {
            return invalid("name", "1-32 of a-z 0-9 _ . -");
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return invalid("base_url", "must start with http:// or https://");
        }
        if self.model.trim().is_empty() {
            return invalid("model", "must not be empty");
        }
        if let Some(key) = &self.api_key {
            if key.expose().is_empty() || key.expose().chars().any(char::is_control) {
                return invalid("api_key", "must be non-empty printable text");
            }
        }
        let checks = [
            ("context_chars", self.context_chars >= 1),
            ("first_token_timeout", !self.first_token_timeout.is_zero()),
            ("reply_timeout", !self.reply_timeout.is_zero()),
            ("connect_timeout", !self.connect_timeout.is_zero()),
            ("backoff_max", self.backoff_max >= self.backoff_base),
            ("max_concurrency", self.max_concurrency >= 1),
            ("user_burst", self.user_burst >= 1),
            ("user_rate", self.user_rate >= 1),
            ("user_rate_interval", !self.user_rate_interval.is_zero()),
            ("rate_tracked_users", self.rate_tracked_users >= 1),
            ("max_event_bytes", self.max_event_bytes >= 1024),
            ("max_reply_bytes", self.max_reply_bytes >= 1),
            (
                "temperature",
                self.temperature.is_none_or(|t| (0.0..=2.0).contains(&t)),
            ),
        ];
        for (name, ok) in checks {
            if !ok {
                return invalid(name, "out of range");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_key() {
        let s = OpenAiSettings::default().api_key("sk-very-secret-123");
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("sk-very-secret-123"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        OpenAiSettings::default().validate().unwrap();
        let bad = OpenAiSettings::default().name("Not A Name");
        assert!(bad.validate().unwrap_err().to_string().contains("name"));
        let bad = OpenAiSettings::default().max_concurrency(0);
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_concurrency"));
        let bad = OpenAiSettings::default().base_url("ftp://x");
        assert!(bad.validate().is_err());
    }
}

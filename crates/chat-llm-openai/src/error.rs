//! [`Error`]: what can go wrong between the bot and the endpoint, and how it
//! maps to the core's [`BotError`].
//!
//! No variant ever carries the API key: server-provided text is scrubbed of
//! it before it is stored (see [`Error::scrub`]), and the key travels only in
//! a request header, never in a URL.

use chat_core::BotError;

/// Errors of the OpenAI-compatible bot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of its range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// Setting name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The endpoint could not be reached (connection refused, DNS, TLS).
    #[error("cannot reach the endpoint: {0}")]
    Connect(#[source] reqwest::Error),
    /// The request or the response body failed on the wire.
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    /// The endpoint answered with an error status.
    #[error("endpoint answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The error body's message (or the start of the body).
        message: String,
    },
    /// The endpoint reported an error inside the event stream.
    #[error("endpoint reported an error: {0}")]
    Api(String),
    /// The endpoint sent something that is not a chat completion.
    #[error("malformed response: {0}")]
    Protocol(String),
    /// The stream ended before the reply was complete.
    #[error("the reply stream ended before it was complete")]
    EndedEarly,
    /// No text arrived within the first-token timeout.
    #[error("no reply started within the first-token timeout")]
    FirstTokenTimeout,
    /// The whole reply took longer than the reply timeout.
    #[error("the reply took longer than the reply timeout")]
    ReplyTimeout,
    /// Over the concurrency limit (no request slot within the queue
    /// timeout).
    #[error("too many replies in progress")]
    Busy,
    /// The asking user is over their rate limit.
    #[error("{user} is over the bot's rate limit")]
    RateLimited {
        /// The asking user.
        user: String,
    },
}

impl Error {
    /// Whether a retry may help (429, 5xx, connection failures).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect(_) => true,
            Error::Status { status, .. } => *status == 429 || (500..=599).contains(status),
            _ => false,
        }
    }

    /// Removes every occurrence of `secret` from `text` (server error
    /// messages sometimes echo what they were sent).
    pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
        match secret {
            Some(s) if !s.is_empty() => text.replace(s, "[redacted]"),
            _ => text.to_owned(),
        }
    }
}

impl From<Error> for BotError {
    fn from(e: Error) -> Self {
        match e {
            Error::FirstTokenTimeout | Error::ReplyTimeout => BotError::Timeout,
            Error::Busy | Error::RateLimited { .. } => BotError::Busy,
            Error::Protocol(m) => BotError::Protocol(m),
            Error::EndedEarly => BotError::Protocol(e.to_string()),
            other => BotError::Backend(Box::new(other)),
        }
    }
}

/// The message of an OpenAI-style error body `{"error": {"message": ...}}`
/// (or `{"error": "..."}`), if `body` is one.
pub(crate) fn api_error_message(body: &serde_json::Value) -> Option<String> {
    let err = body.get("error")?;
    if let Some(s) = err.as_str() {
        return Some(s.to_owned());
    }
    let message = err.get("message").and_then(|m| m.as_str());
    let kind = err.get("type").and_then(|m| m.as_str());
    match (message, kind) {
        (Some(m), Some(k)) => Some(format!("{m} ({k})")),
        (Some(m), None) => Some(m.to_owned()),
        (None, Some(k)) => Some(k.to_owned()),
        (None, None) => Some(err.to_string()),
    }
}

/// Longest server-provided text kept in an error, in characters.
pub(crate) const MAX_ERROR_TEXT: usize = 500;

/// The first [`MAX_ERROR_TEXT`] characters of `s`.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_error::<Error>();
    }

    #[test]
    fn api_error_bodies_are_understood() {
        let body = serde_json::json!({"error": {"message": "no such model", "type": "invalid_request_error"}});
        assert_eq!(
            api_error_message(&body).as_deref(),
            Some("no such model (invalid_request_error)")
        );
        let body = serde_json::json!({"error": "overloaded"});
        assert_eq!(api_error_message(&body).as_deref(), Some("overloaded"));
        assert_eq!(api_error_message(&serde_json::json!({"choices": []})), None);
    }

    #[test]
    fn retryable_statuses() {
        let status = |status| Error::Status {
            status,
            message: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!Error::EndedEarly.is_retryable());
    }

    #[test]
    fn scrub_and_clip() {
        assert_eq!(
            Error::scrub("bad key sk-1 here", Some("sk-1")),
            "bad key [redacted] here"
        );
        assert_eq!(clip(&"é".repeat(600)).chars().count(), MAX_ERROR_TEXT + 1);
    }

    #[test]
    fn maps_to_bot_errors() {
        assert!(matches!(
            BotError::from(Error::FirstTokenTimeout),
            BotError::Timeout
        ));
        assert!(matches!(BotError::from(Error::Busy), BotError::Busy));
        assert!(matches!(
            BotError::from(Error::EndedEarly),
            BotError::Protocol(_)
        ));
        assert!(matches!(
            BotError::from(Error::Status {
                status: 500,
                message: String::new()
            }),
            BotError::Backend(_)
        ));
    }
}

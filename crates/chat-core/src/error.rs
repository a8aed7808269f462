//! Error types of the core, and the stable error codes of the protocol.

use serde::{Deserialize, Serialize};

/// A boxed error from an adapter (store, bot, broker). The core wraps adapter
/// failures in this instead of naming their types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Stable, machine-readable error codes carried by `error` and `closing`
/// frames and by REST error bodies. Clients match on these, never on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame could not be decoded.
    BadFrame,
    /// The frame exceeds the size limit.
    FrameTooLarge,
    /// A field's value is not acceptable (bad name, empty body, ...).
    Invalid,
    /// The message body exceeds the size limit.
    MessageTooLarge,
    /// The request needs a logged-in session.
    Unauthenticated,
    /// Wrong user name or password.
    BadCredentials,
    /// The token is unknown or revoked.
    InvalidToken,
    /// The token has expired.
    TokenExpired,
    /// The caller may not do this.
    Forbidden,
    /// No such room or user (or the caller may not know it exists).
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// Too many requests; slow down.
    RateLimited,
    /// The server is at its connection limit.
    ServerBusy,
    /// The client did not read fast enough and was disconnected.
    Lagged,
    /// The connection was idle too long.
    Idle,
    /// The server is shutting down.
    ShuttingDown,
    /// The bot failed; a fallback reply was sent.
    BotFailed,
    /// The store failed; nothing was stored.
    StoreFailed,
    /// An unexpected server error.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Invalid => "invalid",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::Lagged => "lagged",
            ErrorCode::Idle => "idle",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::BotFailed => "bot_failed",
            ErrorCode::StoreFailed => "store_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status a REST endpoint answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadFrame | ErrorCode::Invalid => 400,
            ErrorCode::FrameTooLarge | ErrorCode::MessageTooLarge => 413,
            ErrorCode::Unauthenticated
            | ErrorCode::BadCredentials
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::ServerBusy | ErrorCode::ShuttingDown => 503,
            ErrorCode::Lagged | ErrorCode::Idle => 408,
            ErrorCode::BotFailed => 502,
            ErrorCode::StoreFailed | ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from a [`Store`](crate::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique name (user, room) is taken.
    #[error("already exists")]
    AlreadyExists,
    /// The referenced record does not exist.
    #[error("not found")]
    NotFound,
    /// The store's data was written by a newer version of the code.
    #[error("store schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// Version found in the store.
        found: u32,
        /// Newest version this code understands.
        supported: u32,
    },
    /// The store is closed or shutting down.
    #[error("store is closed")]
    Closed,
    /// The store does not support this kind of record.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
    /// The backend failed (I/O error, disk full, connection lost, ...).
    #[error("store backend failed: {0}")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        StoreError::Backend(e.into())
    }
}

/// Errors from a [`Bot`](crate::Bot).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// The bot did not answer in time.
    #[error("bot timed out")]
    Timeout,
    /// The bot is over its rate or concurrency limit.
    #[error("bot is busy")]
    Busy,
    /// The bot's backend answered with an error.
    #[error("bot backend failed: {0}")]
    Backend(#[source] BoxError),
    /// The bot's backend sent something it could not understand.
    #[error("bot protocol error: {0}")]
    Protocol(String),
}

/// Errors from a [`Broker`](crate::Broker).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is not connected to its backend.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

/// Errors from building an [`Engine`](crate::Engine).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two bots or two room kinds share one name.
    #[error("duplicate {what} named {name:?}")]
    Duplicate {
        /// `bot` or `room kind`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A thread of the engine's own could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The file vault folder cannot be used.
    #[error("file vault: {0}")]
    Files(#[source] std::io::Error),
    /// A setting is out of its range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// Setting name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a request to the engine failed: a protocol [`ErrorCode`] plus a
/// human-readable message and, for store failures, the source.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EngineError {
    code: ErrorCode,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl EngineError {
    /// A new error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EngineError {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "not allowed")
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists => {
                EngineError::new(ErrorCode::AlreadyExists, "already exists")
            }
            StoreError::NotFound => EngineError::new(ErrorCode::NotFound, "not found"),
            StoreError::Unsupported(what) => EngineError::new(
                ErrorCode::Invalid,
                format!("this server's store does not support {what}"),
            ),
            other => {
                tracing::error!(error = %other, "store failed");
                EngineError {
                    code: ErrorCode::StoreFailed,
                    message: "the store failed; nothing was stored".to_owned(),
                    source: Some(Box::new(other)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_error::<StoreError>();
        assert_error::<BotError>();
        assert_error::<BrokerError>();
        assert_error::<BuildError>();
        assert_error::<EngineError>();
        assert_error::<crate::protocol::DecodeError>();
    }

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::BadFrame,
            ErrorCode::ServerBusy,
            ErrorCode::TokenExpired,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

//! The crate's error type.

use std::path::PathBuf;

/// Everything that can fail in this crate: loading or generating TLS
/// material, connecting, and reading or writing frames as a client.
///
/// The server side ([`serve`](crate::serve)) never returns these for a
/// single client's misbehaviour: that client gets an `error` or `closing`
/// frame and is dropped, and the event is logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused a configuration or a handshake.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A PEM file could not be parsed, or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Generating a self-signed certificate failed.
    #[error("certificate generation failed: {0}")]
    CertGen(#[source] rcgen::Error),
    /// A certificate fingerprint is not 32 bytes of hex.
    #[error("invalid SHA-256 fingerprint {0:?}: expected 64 hex digits, colons allowed")]
    InvalidFingerprint(String),
    /// The name to check the server certificate against is not a DNS name or
    /// an IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
    /// An operation did not finish within its timeout.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// A line from the server is longer than the client's limit.
    #[error("server sent a line longer than {limit} bytes")]
    LineTooLong {
        /// The client's limit.
        limit: usize,
    },
    /// The `data` of a file chunk is not base64 (standard alphabet,
    /// padded).
    #[error("file chunk is not valid base64")]
    BadChunk,
    /// A line from the server is not a valid server frame.
    #[error("bad frame from server: {0}")]
    Decode(#[from] chat_core::DecodeError),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_error::<Error>();
    }
}

//! The transport's error type.

/// Why [`serve`](crate::serve) failed.
///
/// Failures of single connections (bad requests, TLS handshakes, dropped
/// sockets) are logged and never end the server; only these do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// Setting name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The listener failed in a way that does not pass (not a per-connection
    /// error such as a reset or running out of descriptors for a moment).
    #[error("listener failed: {0}")]
    Listener(#[source] std::io::Error),
    /// The engine failed to shut down cleanly (the store did not flush).
    #[error("engine shutdown failed: {0}")]
    Shutdown(#[source] chat_core::EngineError),
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

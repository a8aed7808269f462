//! [`WsSettings`]: every bound and timeout of the transport, with defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// Settings of [`serve`](crate::serve). Every bound has a sane default;
/// change them with the chained setters:
///
/// ```
/// use std::time::Duration;
/// use chat_transport_ws::WsSettings;
///
/// let settings = WsSettings::default()
///     .ping_interval(Duration::from_secs(20))
///     .max_message_bytes(32 * 1024);
/// assert_eq!(settings.max_message_bytes, 32 * 1024);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct WsSettings {
    /// Largest WebSocket message (and frame) a client may send, in bytes.
    /// A larger one closes the connection with 1009. Default 64 KiB.
    /// Messages under this bound but over the engine's
    /// [`max_frame_bytes`](chat_core::Limits::max_frame_bytes) get a
    /// `frame_too_large` error frame and the connection stays usable.
    pub max_message_bytes: usize,
    /// Most bytes taken from a socket in one read. They are read into a
    /// buffer shared by the sessions of one worker thread and parsed at
    /// once: a connection keeps bytes of its own only while a frame is
    /// incomplete, so idle connections hold no read buffer. Default 16 KiB.
    pub read_buffer_bytes: usize,
    /// Most bytes of frames gathered into one write; a batch over it is
    /// written in several. The buffer lives only until it is written.
    /// Default 128 KiB.
    pub write_buffer_bytes: usize,
    /// Most queued frames written in one batch (one flush). Default 64.
    pub write_batch_frames: usize,
    /// Most of a client's text messages, already read, handled together
    /// (see [`Connection::handle_frames`](chat_core::Connection::handle_frames)):
    /// consecutive sends among them are stored in one store request and
    /// acked together. 1 handles each message on its own. Default 32.
    pub read_batch_frames: usize,
    /// How long a session's writer waits, once a frame is queued, for more
    /// frames to write with it. Under fan-out each write then carries
    /// several messages in one system call (the cost of a delivery is
    /// mostly that call), at the price of up to this much added latency.
    /// Frames that arrive meanwhile wait in the session's bounded queue
    /// (`Limits::max_queue_frames`, default 1,024): keep the window well
    /// under the time a busy room takes to fill it.
    /// Zero writes at once. Default 0.
    pub write_coalesce: Duration,
    /// Longest time to write one batch to a client; a client that does not
    /// read for this long is dropped. Default 30 s.
    pub write_timeout: Duration,
    /// A client that has sent nothing for this long is pinged. Sessions
    /// are checked by one clock the server shares, every half interval, so
    /// the ping goes out between 1 and 1.5 intervals after the client's
    /// last frame. Default 30 s.
    pub ping_interval: Duration,
    /// A client that sends nothing (pongs included) for this long is
    /// closed with `idle` (close code 4001), at the next check of the
    /// shared clock (within half a `ping_interval`). Default 75 s.
    pub idle_timeout: Duration,
    /// Longest time to receive a request's headers (also the TLS
    /// handshake budget's HTTP part). Default 10 s.
    pub header_read_timeout: Duration,
    /// Longest TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long to wait for the client's close reply after the server sent
    /// its Close, and for connections to finish at shutdown. Default 5 s.
    pub close_timeout: Duration,
    /// Grace given to the engine at shutdown for in-flight sends and bot
    /// replies (see [`Engine::shutdown`](chat_core::Engine::shutdown)).
    /// Default 5 s.
    pub shutdown_grace: Duration,
    /// Serve HTTPS/WSS with this rustls configuration; plain HTTP when
    /// `None` (the default).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest REST request body, in bytes. Default 64 KiB.
    pub rest_body_limit: usize,
    /// Most HTTP connections (WebSocket ones included) open at once; past
    /// it the server stops accepting until one closes. Default 20,000.
    pub max_connections: usize,
    /// Longest a health check waits for the store's ping. Default 2 s.
    pub health_timeout: Duration,
    /// Serve the web client at `/`. Default true.
    pub web_client: bool,
    /// Most HTTP file uploads in progress at once, server-wide; past it an
    /// upload is refused with 503 `server_busy`. Default 64.
    pub max_http_uploads: usize,
    /// Longest wait for the next piece of an HTTP upload's body; a client
    /// that stalls longer gets 408 and its partial file is deleted.
    /// Default 30 s.
    pub upload_read_timeout: Duration,
    /// After refusing an upload whose body is still arriving, at most this
    /// many of its bytes are read (in the background, after the answer) and
    /// discarded, so that the client sees the answer rather than a reset;
    /// with more left, the connection is closed. Default 256 KiB.
    pub upload_drain_bytes: u64,
    /// Size of the pieces a download is read from disk and sent in.
    /// Default 64 KiB.
    pub download_chunk_bytes: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 16 * 1024,
            write_buffer_bytes: 128 * 1024,
            write_batch_frames: 64,
            read_batch_frames: 32,
            write_coalesce: Duration::ZERO,
            write_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            rest_body_limit: 64 * 1024,
            max_connections: 20_000,
            health_timeout: Duration::from_secs(2),
            web_client: true,
            max_http_uploads: 64,
            upload_read_timeout: Duration::from_secs(30),
            upload_drain_bytes: 256 * 1024,
            download_chunk_bytes: 64 * 1024,
        }
    }
}

impl std::fmt::Debug for WsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSettings")
            .field("max_message_bytes", &self.max_message_bytes)
            .field("read_buffer_bytes", &self.read_buffer_bytes)
            .field("write_buffer_bytes", &self.write_buffer_bytes)
            .field("write_batch_frames", &self.write_batch_frames)
            .field("read_batch_frames", &self.read_batch_frames)
            .field("write_coalesce", &self.write_coalesce)
            .field("write_timeout", &self.write_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("tls", &self.tls.is_some())
            .field("rest_body_limit", &self.rest_body_limit)
            .field("max_connections", &self.max_connections)
            .field("health_timeout", &self.health_timeout)
            .field("web_client", &self.web_client)
            .field("max_http_uploads", &self.max_http_uploads)
            .field("upload_read_timeout", &self.upload_read_timeout)
            .field("upload_drain_bytes", &self.upload_drain_bytes)
            .field("download_chunk_bytes", &self.download_chunk_bytes)
            .finish()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl WsSettings {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, v: $ty) -> Self {
                    self.$name = v;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`WsSettings::max_message_bytes`].
    max_message_bytes: usize,
    /// Sets [`WsSettings::read_buffer_bytes`].
    read_buffer_bytes: usize,
    /// Sets [`WsSettings::write_buffer_bytes`].
    write_buffer_bytes: usize,
    /// Sets [`WsSettings::write_batch_frames`].
    write_batch_frames: usize,
    /// Sets [`WsSettings::read_batch_frames`].
    read_batch_frames: usize,
    /// Sets [`WsSettings::write_coalesce`].
    write_coalesce: Duration,
    /// Sets [`WsSettings::write_timeout`].
    write_timeout: Duration,
    /// Sets [`WsSettings::ping_interval`].
    ping_interval: Duration,
    /// Sets [`WsSettings::idle_timeout`].
    idle_timeout: Duration,
    /// Sets [`WsSettings::header_read_timeout`].
    header_read_timeout: Duration,
    /// Sets [`WsSettings::handshake_timeout`].
    handshake_timeout: Duration,
    /// Sets [`WsSettings::close_timeout`].
    close_timeout: Duration,
    /// Sets [`WsSettings::shutdown_grace`].
    shutdown_grace: Duration,
    /// Sets [`WsSettings::rest_body_limit`].
    rest_body_limit: usize,
    /// Sets [`WsSettings::max_connections`].
    max_connections: usize,
    /// Sets [`WsSettings::health_timeout`].
    health_timeout: Duration,
    /// Sets [`WsSettings::web_client`].
    web_client: bool,
    /// Sets [`WsSettings::max_http_uploads`].
    max_http_uploads: usize,
    /// Sets [`WsSettings::upload_read_timeout`].
    upload_read_timeout: Duration,
    /// Sets [`WsSettings::upload_drain_bytes`].
    upload_drain_bytes: u64,
    /// Sets [`WsSettings::download_chunk_bytes`].
    download_chunk_bytes: usize,
}

impl WsSettings {
    /// Serves HTTPS and WSS with this rustls configuration. Offer
    /// `http/1.1` in its ALPN protocols (or none). Leave 0-RTT off (its
    /// `max_early_data_size` at 0, the default): a client's early data,
    /// which a replay could repeat, ends its connection.
    #[must_use]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid =
            |name: &'static str, reason: &'static str| Err(Error::InvalidSetting { name, reason });
        if self.max_message_bytes < 256 {
            return invalid("max_message_bytes", "must be at least 256");
        }
        if self.read_buffer_bytes == 0 {
            return invalid("read_buffer_bytes", "must be at least 1");
        }
        if self.write_buffer_bytes == 0 {
            return invalid("write_buffer_bytes", "must be at least 1");
        }
        if self.write_batch_frames == 0 {
            return invalid("write_batch_frames", "must be at least 1");
        }
        if self.read_batch_frames == 0 {
            return invalid("read_batch_frames", "must be at least 1");
        }
        if self.write_coalesce >= self.write_timeout {
            return invalid("write_coalesce", "must be shorter than write_timeout");
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return invalid("idle_timeout", "must exceed a non-zero ping_interval");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_http_uploads == 0 {
            return invalid("max_http_uploads", "must be at least 1");
        }
        if self.download_chunk_bytes == 0 {
            return invalid("download_chunk_bytes", "must be at least 1");
        }
        if self.header_read_timeout.is_zero()
            || self.handshake_timeout.is_zero()
            || self.write_timeout.is_zero()
            || self.upload_read_timeout.is_zero()
        {
            return invalid("header_read_timeout", "timeouts must be non-zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        WsSettings::default().validate().unwrap();
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = WsSettings::default()
            .ping_interval(Duration::from_secs(10))
            .idle_timeout(Duration::from_secs(5));
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidSetting {
                name: "idle_timeout",
                ..
            })
        ));
        let bad = WsSettings::default().write_buffer_bytes(0);
        assert!(bad.validate().is_err());
        let bad = WsSettings::default().read_buffer_bytes(0);
        assert!(bad.validate().is_err());
    }
}

//! [`TcpSettings`]: every bound and timeout of the server side.

use std::time::Duration;

/// Timeouts and bounds of [`serve`](crate::serve), with defaults fit for a
/// public server. Build with [`TcpSettings::default`] and the chained
/// setters:
///
/// ```
/// use std::time::Duration;
/// use chat_transport_tcp::TcpSettings;
///
/// let settings = TcpSettings::default()
///     .handshake_timeout(Duration::from_secs(5))
///     .idle_timeout(Duration::from_secs(120))
///     .max_line_bytes(16 * 1024);
/// assert_eq!(settings.heartbeat_interval, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpSettings {
    /// Longest a client may take to complete the TLS handshake, counted from
    /// the TCP accept; past it the socket is dropped without a word.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest the server waits for the next complete line from a client;
    /// past it the client gets a `closing` frame with reason `idle` and is
    /// dropped. Clients that only listen send `ping` to stay connected.
    /// Checked by the server's one clock, which ticks every half of the
    /// shorter of this and [`heartbeat_interval`](Self::heartbeat_interval):
    /// a quiet client is closed between one and one and a half timeouts.
    /// Default 5 min.
    pub idle_timeout: Duration,
    /// When the server has written nothing to a client for this long it
    /// writes a heartbeat: a `pong` frame without an `id`
    /// (`{"type":"pong"}`), so dead peers and idle NAT mappings are found:
    /// between one and one and a half intervals after its last write (see
    /// [`idle_timeout`](Self::idle_timeout) for the clock).
    /// [`Duration::ZERO`] turns heartbeats off. Default 30 s.
    pub heartbeat_interval: Duration,
    /// Longest one socket write (a batch of frames, the final `closing`
    /// frame, the TLS close) may take; a client that does not read is
    /// dropped after it. Default 10 s.
    pub write_timeout: Duration,
    /// After the server has closed its side of a connection it keeps reading
    /// (and discarding) what the client still sends for at most this long,
    /// so the kernel does not answer with a reset that would destroy the
    /// last frames before the client reads them. Default 2 s.
    pub close_linger: Duration,
    /// Most bytes discarded during [`close_linger`](Self::close_linger).
    /// Default 256 KiB.
    pub close_linger_bytes: usize,
    /// Longest line (one JSON frame, without the newline) accepted from a
    /// client. `None` means the engine's frame limit
    /// (`engine.codec().max_frame_bytes()`). A longer line gets an `error`
    /// frame with code `frame_too_large` and the connection is closed.
    /// Default `None`.
    pub max_line_bytes: Option<usize>,
    /// Most TLS handshakes in progress at once; past it the server stops
    /// accepting (the kernel's listen backlog holds new connections) until
    /// one finishes or times out. Default 1024.
    pub max_handshakes: usize,
    /// Most of a client's lines, already read, handled together (see
    /// [`Connection::handle_frames`](chat_core::Connection::handle_frames)):
    /// consecutive sends among them are stored in one store request and
    /// acked together. 1 handles each line on its own. Default 32.
    pub read_batch_lines: usize,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            close_linger_bytes: 256 * 1024,
            max_line_bytes: None,
            max_handshakes: 1024,
            read_batch_lines: 32,
        }
    }
}

impl TcpSettings {
    /// Sets [`TcpSettings::handshake_timeout`].
    #[must_use]
    pub fn handshake_timeout(mut self, v: Duration) -> Self {
        self.handshake_timeout = v;
        self
    }

    /// Sets [`TcpSettings::idle_timeout`].
    #[must_use]
    pub fn idle_timeout(mut self, v: Duration) -> Self {
        self.idle_timeout = v;
        self
    }

    /// Sets [`TcpSettings::heartbeat_interval`] ([`Duration::ZERO`]: off).
    #[must_use]
    pub fn heartbeat_interval(mut self, v: Duration) -> Self {
        self.heartbeat_interval = v;
        self
    }

    /// Sets [`TcpSettings::write_timeout`].
    #[must_use]
    pub fn write_timeout(mut self, v: Duration) -> Self {
        self.write_timeout = v;
        self
    }

    /// Sets [`TcpSettings::close_linger`].
    #[must_use]
    pub fn close_linger(mut self, v: Duration) -> Self {
        self.close_linger = v;
        self
    }

    /// Sets [`TcpSettings::close_linger_bytes`].
    #[must_use]
    pub fn close_linger_bytes(mut self, v: usize) -> Self {
        self.close_linger_bytes = v;
        self
    }

    /// Sets [`TcpSettings::max_line_bytes`].
    #[must_use]
    pub fn max_line_bytes(mut self, v: usize) -> Self {
        self.max_line_bytes = Some(v);
        self
    }

    /// Sets [`TcpSettings::max_handshakes`] (at least 1).
    #[must_use]
    pub fn max_handshakes(mut self, v: usize) -> Self {
        self.max_handshakes = v.max(1);
        self
    }

    /// Sets [`TcpSettings::read_batch_lines`] (at least 1).
    #[must_use]
    pub fn read_batch_lines(mut self, v: usize) -> Self {
        self.read_batch_lines = v.max(1);
        self
    }

    /// The heartbeat interval, or `None` when heartbeats are off.
    pub(crate) fn heartbeat(&self) -> Option<Duration> {
        (!self.heartbeat_interval.is_zero()).then_some(self.heartbeat_interval)
    }
}

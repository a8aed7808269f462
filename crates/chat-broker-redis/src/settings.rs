//! [`RedisSettings`]: every bound and tunable of the broker, named, with a
//! default.

use std::time::Duration;

use crate::Error;

/// Default Redis URL.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";
/// Default prefix of the broker's channel name.
pub const DEFAULT_CHANNEL_PREFIX: &str = "chat";
/// Default first wait before reconnecting after a failure.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Default longest wait between two reconnect attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Default time allowed to open a connection (TCP, `HELLO`/`AUTH`, `SELECT`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default longest wait for one `PUBLISH` to be answered.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default longest wait for `SUBSCRIBE` and health-check `PING`s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default interval between health checks of an idle connection.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Default largest encoded event, header included.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// How to connect and run a [`RedisBroker`](crate::RedisBroker).
///
/// Start from [`RedisSettings::new`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use chat_broker_redis::RedisSettings;
///
/// let settings = RedisSettings::new("redis://10.0.0.5:6379/0")
///     .channel_prefix("chat-prod")
///     .publish_timeout(Duration::from_millis(250));
/// assert_eq!(settings.channel(), "chat-prod:events");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` or
    /// `redis+unix:///path/to/socket` (default [`DEFAULT_URL`]). TLS
    /// (`rediss://`) is not compiled in.
    pub url: String,
    /// Prefix of the one channel every node publishes to and subscribes to,
    /// `<prefix>:events` (default [`DEFAULT_CHANNEL_PREFIX`]). Nodes of one
    /// chat service share it; two services sharing a Redis use two prefixes.
    pub channel_prefix: String,
    /// First wait before reconnecting after the connection failed (default
    /// [`DEFAULT_RECONNECT_MIN`]); it doubles per failed attempt.
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts (default
    /// [`DEFAULT_RECONNECT_MAX`]).
    pub reconnect_max: Duration,
    /// Time allowed to open one connection (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Longest wait for one `PUBLISH` (default [`DEFAULT_PUBLISH_TIMEOUT`]).
    /// Past it the publish fails with `Unavailable` and the connection is
    /// re-established. While the broker is disconnected, publishing fails at
    /// once without waiting for this.
    pub publish_timeout: Duration,
    /// Longest wait for `SUBSCRIBE` and for health-check `PING`s (default
    /// [`DEFAULT_RESPONSE_TIMEOUT`]).
    pub response_timeout: Duration,
    /// How often both connections are checked with a `PING` (default
    /// [`DEFAULT_PING_INTERVAL`]), so a silently dead connection (a network
    /// partition without a reset) is noticed and replaced.
    pub ping_interval: Duration,
    /// Largest encoded event, header included (default
    /// [`DEFAULT_MAX_EVENT_BYTES`]). A larger event is not published (other
    /// nodes recover stored messages from the store); a larger event
    /// received is dropped and counted.
    pub max_event_bytes: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl RedisSettings {
    /// Settings for the Redis at `url`, every other value at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            channel_prefix: DEFAULT_CHANNEL_PREFIX.to_owned(),
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// The channel the broker uses: `<channel_prefix>:events`.
    pub fn channel(&self) -> String {
        format!("{}:events", self.channel_prefix)
    }

    /// Sets [`url`](Self::url).
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets [`channel_prefix`](Self::channel_prefix).
    #[must_use]
    pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = prefix.into();
        self
    }

    /// Sets [`reconnect_min`](Self::reconnect_min) and
    /// [`reconnect_max`](Self::reconnect_max).
    #[must_use]
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`publish_timeout`](Self::publish_timeout).
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets [`ping_interval`](Self::ping_interval).
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`max_event_bytes`](Self::max_event_bytes).
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Checks every value is in range.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |name, reason| Err(Error::InvalidSetting { name, reason });
        if self.channel_prefix.is_empty() {
            return invalid("channel_prefix", "must not be empty");
        }
        let positive = [
            ("reconnect_min", self.reconnect_min),
            ("connect_timeout", self.connect_timeout),
            ("publish_timeout", self.publish_timeout),
            ("response_timeout", self.response_timeout),
            ("ping_interval", self.ping_interval),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return invalid(name, "must be positive");
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return invalid("reconnect_max", "must be at least reconnect_min");
        }
        if self.max_event_bytes < crate::codec::MIN_MESSAGE_BYTES {
            return invalid("max_event_bytes", "must be at least 12 (an empty event)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        RedisSettings::default().validate().unwrap();
        let bad = [
            RedisSettings::default().channel_prefix(""),
            RedisSettings::default().publish_timeout(Duration::ZERO),
            RedisSettings::default()
                .reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            RedisSettings::default().max_event_bytes(3),
        ];
        for s in bad {
            assert!(
                matches!(s.validate(), Err(Error::InvalidSetting { .. })),
                "{s:?}"
            );
        }
    }
}

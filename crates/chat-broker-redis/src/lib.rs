//! A [`chat_core::Broker`] over Redis pub/sub: carries room events between
//! the nodes of one chat service, so a client on node A sees what a client
//! on node B sends.
//!
//! # Example
//!
//! Give each node's engine a broker on the same Redis (and the same shared
//! store, e.g. PostgreSQL):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use chat_broker_redis::{RedisBroker, RedisSettings};
//! use chat_core::Engine;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Nothing listens on port 1: the broker stays disconnected here.
//! # let url = "redis://127.0.0.1:1/";
//! let settings = RedisSettings::new(url)
//!     .channel_prefix("chat")
//!     .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(5));
//! // `start` connects in the background (`connect` waits for it).
//! let broker = Arc::new(RedisBroker::start(settings)?);
//! let engine = Engine::builder().broker(broker.clone()).build()?;
//! # drop(engine);
//! // Until Redis answers, this node's own subscribers are still served and
//! // publishing to the other nodes fails fast; they catch up from the store
//! // once the broker is connected.
//! assert!(!broker.is_connected());
//! assert_eq!(broker.channel(), "chat:events");
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `settings`: [`RedisSettings`], every bound with its default.
//! - `codec`: the compact wire form of an event (binary header + the
//!   frame's bytes untouched).
//! - `broker`: [`RedisBroker`], the [`Broker`](chat_core::Broker)
//!   implementation, and its [`BrokerMetrics`].
//! - `link`: the background task holding the connections: subscription,
//!   health checks, reconnect with backoff, resync.
//!
//! # Why one channel for every room?
//!
//! Every node publishes to and subscribes to `<prefix>:events`. Per-room
//! channels would let a node receive only the rooms it has subscribers
//! for, but that needs the engine to tell the broker when local interest in
//! a room starts and ends, a hook the core does not have. With one channel
//! each node receives every room's events and its fan-out drops those of
//! rooms without local subscribers (one hash look-up each), so the cost is
//! bandwidth: `nodes × events`. That is the right trade for a handful of
//! nodes; past that, shard by room (several channels) or add the interest
//! hook. One channel also keeps the events of one publisher in publish
//! order on every node.
//!
//! # What is delivered, and what can be lost
//!
//! Redis pub/sub delivers at most once: a node that is disconnected misses
//! what is published meanwhile. Stored messages (events with a `seq`) are
//! not lost: the engine stores them before publishing, so
//! - after this node re-subscribes it asks its fan-out to
//!   [`resync`](chat_core::EventSink::resync) every room with local
//!   subscribers from the store;
//! - when a publish of this node failed (Redis down, timeout), it sends a
//!   *resync notice* once connected again, and every other node catches up
//!   from the store too;
//! - any other gap (a later `seq` arriving first) is filled from the store
//!   by the fan-out after its gap timeout.
//!
//! Ephemeral events (typing, presence, bot deltas) published while a node
//! was cut off from Redis are lost for the other nodes; this node's own
//! subscribers always get them, since a node delivers its own events
//! locally without the round trip through Redis.
//!
//! Publishing never waits for a reconnect: while the broker is
//! disconnected, [`publish`](chat_core::Broker::publish) fails at once with
//! `BrokerError::Unavailable`, and a connected publish waits at most
//! [`RedisSettings::publish_timeout`].
//!
//! # Bounds
//!
//! Events over [`RedisSettings::max_event_bytes`] are neither published
//! nor delivered. The `redis` crate queues incoming messages of a
//! subscription in an unbounded channel; the task drains it without
//! awaiting anything else (delivery into the fan-out never blocks), and
//! Redis itself disconnects a subscriber that falls too far behind
//! (`client-output-buffer-limit pubsub`), which this broker treats like any
//! other disconnect: reconnect, then resync.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod broker;
mod codec;
mod link;
mod settings;

pub use broker::{BrokerMetrics, RedisBroker};
pub use codec::DecodeError;
pub use settings::{
    RedisSettings, DEFAULT_CHANNEL_PREFIX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_PING_INTERVAL, DEFAULT_PUBLISH_TIMEOUT, DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_URL,
};

/// Failures of the Redis broker. `publish` returns them inside
/// `BrokerError::Unavailable` (downcast to inspect them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis (or the connection to it) reported an error, or the URL does
    /// not parse.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The broker is not connected to Redis right now (it reconnects in the
    /// background).
    #[error("not connected to redis")]
    NotConnected,
    /// A `PUBLISH` was not answered within `publish_timeout`.
    #[error("publish timed out")]
    PublishTimeout,
    /// Connecting, `SUBSCRIBE` or a health check did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The connection was closed.
    #[error("connection closed")]
    Closed,
    /// The encoded event is larger than `max_event_bytes`.
    #[error("event of {size} bytes is over the limit of {max}")]
    EventTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A room or user name is longer than the header allows (65535 bytes).
    #[error("{what} name of {len} bytes is too long")]
    NameTooLong {
        /// `room` or `user`.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A setting is out of range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// Setting name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The broker was started outside a Tokio runtime.
    #[error("a Tokio runtime is required to start the broker")]
    NoRuntime,
}

#[cfg(test)]
mod tests {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_error::<super::Error>();
        assert_error::<super::DecodeError>();
    }
}

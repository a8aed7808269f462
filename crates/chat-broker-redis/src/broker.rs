//! [`RedisBroker`]: the [`Broker`] implementation, and the state it shares
//! with its background connection task.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::{Broker, BrokerError, EventSink, RoomEvent};
use redis::aio::MultiplexedConnection;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::{codec, link, Error, RedisSettings};

/// A [`Broker`] over Redis pub/sub, for several nodes of one chat service.
///
/// Every node publishes each room event to one shared channel and
/// subscribes to it; a background task holds the subscription, delivers
/// what other nodes publish into this node's fan-out, and reconnects with
/// backoff when Redis goes away (then the node catches up from the store).
/// Events this node publishes reach its own subscribers directly, without
/// the round trip through Redis.
///
/// The task stops when the broker is dropped.
pub struct RedisBroker {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("channel", &self.shared.channel)
            .field("node_id", &self.shared.node_id)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// State shared by the broker and its connection task.
pub(crate) struct Shared {
    pub(crate) settings: RedisSettings,
    pub(crate) channel: String,
    pub(crate) node_id: u64,
    pub(crate) sink: OnceLock<Arc<dyn EventSink>>,
    /// The publishing connection with its generation, `None` while down.
    publisher: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    /// Wakes the task when the publishing connection failed.
    pub(crate) broken: Notify,
    pub(crate) connected: watch::Sender<bool>,
    /// A publish failed since the last connection: other nodes may have
    /// missed stored messages, so a resync notice is due.
    pub(crate) missed: AtomicBool,
    pub(crate) stats: Stats,
}

impl Shared {
    fn publisher(&self) -> Option<(u64, MultiplexedConnection)> {
        self.publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs a new publishing connection and marks the broker connected.
    pub(crate) fn set_connected(&self, conn: MultiplexedConnection) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn));
        self.connected.send_replace(true);
    }

    /// Drops the publishing connection: publishing fails fast from now on.
    pub(crate) fn set_disconnected(&self) {
        *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.connected.send_replace(false);
    }

    /// Whether the publishing connection is still installed.
    pub(crate) fn has_publisher(&self) -> bool {
        self.publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The publishing connection, if installed.
    pub(crate) fn publisher_conn(&self) -> Option<MultiplexedConnection> {
        self.publisher().map(|(_, conn)| conn)
    }

    /// Reports that the publishing connection of `generation` failed; a
    /// failure of an already replaced connection is ignored.
    fn mark_broken(&self, generation: u64) {
        let mut slot = self.publisher.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(&*slot, Some((g, _)) if *g == generation) {
            *slot = None;
            drop(slot);
            self.connected.send_replace(false);
            self.broken.notify_one();
        }
    }

    /// Publishes one encoded message on the channel, at most
    /// `publish_timeout`; a failure drops the connection for the task to
    /// replace.
    pub(crate) async fn send(&self, payload: Vec<u8>) -> Result<(), Error> {
        let Some((generation, mut conn)) = self.publisher() else {
            return Err(Error::NotConnected);
        };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(payload);
        let publish = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(self.settings.publish_timeout, publish).await {
            Ok(Ok(_receivers)) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                self.mark_broken(generation);
                Err(Error::Redis(e))
            }
            Err(_) => {
                self.mark_broken(generation);
                Err(Error::PublishTimeout)
            }
        }
    }

    /// Counts a failed publish and remembers to send a resync notice.
    fn failed(&self, err: Error) -> BrokerError {
        self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
        self.missed.store(true, Ordering::Relaxed);
        BrokerError::Unavailable(Box::new(err))
    }
}

/// Counters of one broker; see [`BrokerMetrics`].
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) resync_notices: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

/// A snapshot of a broker's counters, from [`RedisBroker::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BrokerMetrics {
    /// Events published to Redis.
    pub published: u64,
    /// Publishes that failed (disconnected, timed out, refused as too
    /// large); each returned `BrokerError::Unavailable`.
    pub publish_failures: u64,
    /// Messages received on the channel, this node's own included.
    pub received: u64,
    /// Events from other nodes delivered into this node's fan-out.
    pub delivered: u64,
    /// Received messages that could not be decoded (or were over
    /// `max_event_bytes`) and were dropped.
    pub decode_errors: u64,
    /// Resync notices received from other nodes (each made this node catch
    /// up from the store).
    pub resync_notices: u64,
    /// Successful connections (subscribed and ready), the first included.
    pub connects: u64,
    /// Connections lost or given up.
    pub disconnects: u64,
    /// Whether the broker is connected now.
    pub connected: bool,
}

/// A random node id: distinct per broker, so a node recognises its own
/// events on the channel.
fn random_node_id() -> u64 {
    // RandomState is seeded from the OS once per thread and advanced per
    // instance; the time and pid tell processes apart even so.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

impl RedisBroker {
    /// Starts a broker: checks the settings and spawns the task that
    /// connects (and keeps reconnecting) in the background. Publishing fails
    /// with `Unavailable` until it is connected; see
    /// [`wait_connected`](Self::wait_connected).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`], [`Error::Redis`] for a URL that does not
    /// parse, [`Error::NoRuntime`] outside a Tokio runtime.
    pub fn start(settings: RedisSettings) -> Result<RedisBroker, Error> {
        settings.validate()?;
        let client = redis::Client::open(settings.url.as_str())?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let shared = Arc::new(Shared {
            channel: settings.channel(),
            settings,
            node_id: random_node_id(),
            sink: OnceLock::new(),
            publisher: Mutex::new(None),
            generation: AtomicU64::new(0),
            broken: Notify::new(),
            connected: watch::channel(false).0,
            missed: AtomicBool::new(false),
            stats: Stats::default(),
        });
        let task = runtime.spawn(link::run(Arc::clone(&shared), client));
        tracing::debug!(channel = %shared.channel, node_id = shared.node_id, "redis broker started");
        Ok(RedisBroker { shared, task })
    }

    /// [`start`](Self::start), then waits until the broker is connected,
    /// at most `settings.connect_timeout` (plus the `SUBSCRIBE` round trip).
    ///
    /// # Errors
    ///
    /// Those of [`start`](Self::start), and [`Error::NotConnected`] when the
    /// first connection did not succeed in time (the broker is dropped).
    pub async fn connect(settings: RedisSettings) -> Result<RedisBroker, Error> {
        let wait = settings.connect_timeout + settings.response_timeout;
        let broker = Self::start(settings)?;
        if broker.wait_connected(wait).await {
            Ok(broker)
        } else {
            Err(Error::NotConnected)
        }
    }

    /// Waits until the broker is connected, at most `timeout`; returns
    /// whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether both connections are up and subscribed now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// This broker's random node id, carried in every event it publishes.
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    /// The channel the broker publishes to and subscribes to.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// The settings the broker was started with.
    pub fn settings(&self) -> &RedisSettings {
        &self.shared.settings
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> BrokerMetrics {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerMetrics {
            published: get(&s.published),
            publish_failures: get(&s.publish_failures),
            received: get(&s.received),
            delivered: get(&s.delivered),
            decode_errors: get(&s.decode_errors),
            resync_notices: get(&s.resync_notices),
            connects: get(&s.connects),
            disconnects: get(&s.disconnects),
            connected: self.is_connected(),
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn attach(&self, sink: Arc<dyn EventSink>) {
        if self.shared.sink.set(sink).is_err() {
            tracing::warn!("RedisBroker attached twice; keeping the first sink");
        }
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let stored = event.seq.is_some();
        let encoded = codec::encode(shared.node_id, &event, shared.settings.max_event_bytes);
        // This node's subscribers get the event straight away, whatever
        // happens to Redis; the copy coming back from Redis is skipped.
        if let Some(sink) = shared.sink.get() {
            sink.deliver(event);
        }
        let result = match encoded {
            Ok(payload) => shared.send(payload).await,
            Err(e) => {
                if stored {
                    // Too large for the channel: tell the other nodes to
                    // fetch it from the store instead.
                    let _ = shared.send(codec::encode_resync(shared.node_id)).await;
                }
                Err(e)
            }
        };
        result.map_err(|e| shared.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_differ() {
        let ids: std::collections::HashSet<u64> = (0..100).map(|_| random_node_id()).collect();
        assert_eq!(ids.len(), 100);
    }

    #[tokio::test]
    async fn publishing_while_disconnected_fails_at_once() {
        // Port 1 refuses connections: the broker never connects.
        let settings = RedisSettings::new("redis://127.0.0.1:1/")
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20));
        let broker = RedisBroker::start(settings).unwrap();
        let started = tokio::time::Instant::now();
        let err = broker
            .publish(RoomEvent::ephemeral("r", bytes::Bytes::from_static(b"{}")))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(err, BrokerError::Unavailable(_)));
        assert!(!broker.wait_connected(Duration::from_millis(50)).await);
        let m = broker.metrics();
        assert_eq!(
            (m.publish_failures, m.published, m.connected),
            (1, 0, false)
        );
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error() {
        assert!(matches!(
            RedisBroker::start(RedisSettings::default()),
            Err(Error::NoRuntime)
        ));
    }
}

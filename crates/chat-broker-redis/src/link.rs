//! The background task: connects the publishing connection and the
//! subscription, delivers what arrives, checks both with `PING`s, and on any
//! failure drops both and reconnects with backoff.
//!
//! After each successful (re)subscription it asks the fan-out to
//! [`resync`](chat_core::EventSink::resync), since events published while
//! this node was not subscribed are gone from the channel; and if a publish
//! of this node failed meanwhile, it sends a resync notice so the *other*
//! nodes fetch what they missed from the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Msg};

use crate::broker::Shared;
use crate::codec::{self, Packet};
use crate::Error;

/// Runs until the broker is dropped (the task is aborted).
pub(crate) async fn run(shared: Arc<Shared>, client: Client) {
    let settings = &shared.settings;
    let mut delay = settings.reconnect_min;
    let mut jitter = Jitter(shared.node_id | 1);
    loop {
        match open(&shared, &client).await {
            Ok((sub_sink, stream)) => {
                delay = settings.reconnect_min;
                let why = serve(&shared, sub_sink, stream).await;
                tracing::warn!(channel = %shared.channel, reason = %why, "redis broker disconnected; reconnecting");
            }
            Err(e) => {
                tracing::warn!(channel = %shared.channel, error = %e, retry_in = ?delay, "redis broker could not connect");
            }
        }
        shared.set_disconnected();
        shared.stats.disconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(jitter.spread(delay)).await;
        delay = (delay * 2).min(settings.reconnect_max);
    }
}

/// Spreads reconnect waits over [d/2, d], so nodes that lost Redis at the
/// same moment do not all come back at the same one.
struct Jitter(u64);

impl Jitter {
    fn spread(&mut self, d: Duration) -> Duration {
        // xorshift64: plenty for spreading waits.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let frac = (self.0 % 1024) as u32;
        d / 2 + (d / 2) * frac / 1024
    }
}

async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Error::Redis),
        Err(_) => Err(Error::Timeout(what)),
    }
}

/// Opens both connections, subscribes, installs the publisher, resyncs.
async fn open(shared: &Shared, client: &Client) -> Result<(PubSubSink, PubSubStream), Error> {
    let s = &shared.settings;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(s.connect_timeout))
        .set_response_timeout(Some(s.response_timeout));
    let limit = s.connect_timeout + s.response_timeout;
    let publisher = bounded(
        limit,
        "connect",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let pubsub = bounded(limit, "connect", client.get_async_pubsub()).await?;
    let (mut sub_sink, stream) = pubsub.split();
    bounded(
        s.response_timeout,
        "SUBSCRIBE",
        sub_sink.subscribe(&shared.channel),
    )
    .await?;

    shared.set_connected(publisher);
    shared.stats.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(channel = %shared.channel, node_id = shared.node_id, "redis broker connected");
    // Subscribed: from here on nothing is missed; catch up on the rest.
    if let Some(sink) = shared.sink.get() {
        sink.resync();
    }
    if shared.missed.swap(false, Ordering::Relaxed) {
        if let Err(e) = shared.send(codec::encode_resync(shared.node_id)).await {
            shared.missed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        tracing::info!(channel = %shared.channel, "told the other nodes to resync");
    }
    Ok((sub_sink, stream))
}

/// Delivers messages until a connection fails; returns why.
async fn serve(shared: &Shared, mut sub_sink: PubSubSink, mut stream: PubSubStream) -> Error {
    let s = &shared.settings;
    let mut ping = tokio::time::interval(s.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => handle(shared, &msg),
                None => return Error::Closed,
            },
            _ = ping.tick() => {
                if let Err(e) = ping_both(shared, &mut sub_sink).await {
                    return e;
                }
            }
            () = shared.broken.notified() => {
                // A stale wake-up (for a replaced connection) is ignored.
                if !shared.has_publisher() {
                    return Error::Closed;
                }
            }
        }
    }
}

async fn ping_both(shared: &Shared, sub_sink: &mut PubSubSink) -> Result<(), Error> {
    let limit = shared.settings.response_timeout;
    bounded(limit, "PING", sub_sink.ping::<redis::Value>()).await?;
    if let Some(mut conn) = shared.publisher_conn() {
        bounded(limit, "PING", ping(&mut conn)).await?;
    }
    Ok(())
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    redis::cmd("PING").query_async::<()>(conn).await
}

/// Decodes one message and delivers it; never panics on what arrives.
fn handle(shared: &Shared, msg: &Msg) {
    let stats = &shared.stats;
    stats.received.fetch_add(1, Ordering::Relaxed);
    match codec::decode(msg.get_payload_bytes(), shared.settings.max_event_bytes) {
        // Already delivered locally when it was published.
        Ok(Packet::Event { origin, .. } | Packet::Resync { origin })
            if origin == shared.node_id => {}
        Ok(Packet::Event { event, .. }) => {
            if let Some(sink) = shared.sink.get() {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                sink.deliver(event);
            }
        }
        Ok(Packet::Resync { origin }) => {
            stats.resync_notices.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                from = origin,
                "a node missed publishes; resyncing from the store"
            );
            if let Some(sink) = shared.sink.get() {
                sink.resync();
            }
        }
        Err(e) => {
            let n = stats.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ... so garbage on the channel cannot
            // flood the log.
            if n.is_power_of_two() {
                tracing::warn!(channel = %shared.channel, error = %e, count = n, "dropped an undecodable event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full() {
        let mut j = Jitter(12345);
        let d = Duration::from_millis(1000);
        for _ in 0..1000 {
            let x = j.spread(d);
            assert!(x >= d / 2 && x <= d, "{x:?}");
        }
    }
}

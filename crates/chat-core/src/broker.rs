//! The [`Broker`] extension point: carries room events between the nodes
//! that have subscribers, and [`LocalBroker`], the single-node default.
//!
//! The broker only moves events; ordering, de-duplication and delivery to
//! each subscriber's bounded queue happen in the engine's fan-out, which is
//! the [`EventSink`] every broker delivers into.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BrokerError;

/// One event of one room, already encoded as a server frame so every
/// recipient on every node shares the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEvent {
    /// Room name.
    pub room: Arc<str>,
    /// The message's `seq` for stored messages (ordered, de-duplicated, gaps
    /// filled from the store); `None` for ephemeral events (typing,
    /// presence, bot deltas, membership changes).
    pub seq: Option<u64>,
    /// The encoded [`ServerFrame`](crate::ServerFrame).
    pub frame: Bytes,
    /// After delivering this event, end this user's subscriptions to the
    /// room on every node (they were removed from it).
    pub revoke: Option<Arc<str>>,
}

impl RoomEvent {
    /// An ephemeral event (no `seq`).
    pub fn ephemeral(room: &str, frame: Bytes) -> Self {
        RoomEvent {
            room: Arc::from(room),
            seq: None,
            frame,
            revoke: None,
        }
    }
}

/// Receives the events a broker carries (implemented by the engine's
/// fan-out).
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event to this node's subscribers. Must not block.
    fn deliver(&self, event: RoomEvent);
    /// Catches every room with local subscribers up from the store: a broker
    /// calls this after it may have missed events (e.g. after reconnecting
    /// to its backend), since a lost *last* event leaves no later `seq` to
    /// reveal the gap. Must not block; the work runs in the background.
    fn resync(&self);
}

/// Carries room events to every node with subscribers.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Connects the broker to this node's fan-out. Called once, by
    /// [`EngineBuilder::build`](crate::EngineBuilder::build).
    fn attach(&self, sink: Arc<dyn EventSink>);
    /// Publishes an event to every node, this one included.
    async fn publish(&self, event: RoomEvent) -> Result<(), BrokerError>;
}

/// The single-node broker: publishing delivers straight into this node's
/// fan-out.
#[derive(Default)]
pub struct LocalBroker {
    sink: OnceLock<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker")
            .field("attached", &self.sink.get().is_some())
            .finish()
    }
}

impl LocalBroker {
    /// A broker not yet attached.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Broker for LocalBroker {
    fn attach(&self, sink: Arc<dyn EventSink>) {
        if self.sink.set(sink).is_err() {
            tracing::warn!("LocalBroker attached twice; keeping the first sink");
        }
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BrokerError> {
        if let Some(sink) = self.sink.get() {
            sink.deliver(event);
        }
        Ok(())
    }
}

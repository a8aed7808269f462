//! Fan-out: this node's room subscribers, fed by the [`Broker`](crate::Broker).
//!
//! Per room it keeps the next expected `seq`, so stored messages reach every
//! subscriber in order, once, with no gap (invariant 2): an early event
//! waits in a small reorder buffer, a late duplicate is dropped, and a gap
//! that does not close by itself within [`FanoutSettings::gap_timeout`] is
//! filled from the store. Each delivery is a non-blocking push of shared
//! bytes into a bounded queue; a subscriber whose queue is full is closed
//! with `lagged` and nobody else waits (invariant 4).
//!
//! A subscriber starts in *catch-up*: live events are buffered while the
//! engine replays history from the store, then [`Fanout::activate`] flushes
//! the buffer past what the replay delivered (invariant 3). The buffer is
//! bounded; when live events overflow it, it is dropped and the replay goes
//! on from the store, so a slow but live reader is paced, never lagged out.
//!
//! Channels of ephemeral events only (a user's own channel, for mentions)
//! have no `seq`, no catch-up and no reorder buffer: they are kept apart as
//! plain lists of sessions, since every logged-in user has one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::broker::{EventSink, RoomEvent};
use crate::error::{ErrorCode, StoreError};
use crate::metrics::Metrics;
use crate::protocol::{Codec, ServerFrame};
use crate::session::{Session, SessionId};
use crate::store::{HistoryQuery, Store};

/// Bounds of the fan-out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutSettings {
    /// Most events buffered for one subscriber during catch-up.
    pub(crate) catch_up_buffer: usize,
    /// Most out-of-order events held per room before a gap fill is forced.
    pub(crate) reorder_buffer: usize,
    /// How long a gap may stay open before it is filled from the store.
    pub(crate) gap_timeout: Duration,
}

struct Sub {
    session: Arc<dyn Session>,
    user: Option<Arc<str>>,
    /// Newest `seq` delivered to this subscriber.
    last_seq: u64,
    /// `Some` while the subscriber is catching up. Boxed: every subscriber
    /// of every room has an entry, and few of them are catching up.
    catch_up: Option<Box<CatchUp>>,
}

/// A subscriber's state while it catches up.
#[derive(Default)]
struct CatchUp {
    /// Live events held until the replay is done.
    buffer: Vec<RoomEvent>,
    /// The buffer overflowed and was dropped; the subscriber replays on
    /// from the store instead.
    overflowed: bool,
}

struct RoomSubs {
    /// The `seq` the room's next stored message will carry.
    next_seq: u64,
    pending: BTreeMap<u64, RoomEvent>,
    gap_fill_scheduled: bool,
    subs: HashMap<SessionId, Sub>,
}

/// The outcome of [`Fanout::activate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Live, the reply queued.
    Live,
    /// The queue is full: wait until the session is writable, then again.
    Pending,
    /// Live events overflowed the catch-up buffer (they were dropped):
    /// replay on from the store, then call again.
    Replay,
    /// The subscriber is gone (closed, lagged or unsubscribed).
    Gone,
}

/// A channel's sessions, by id.
type Channel = Vec<(SessionId, Arc<dyn Session>)>;

pub(crate) struct Fanout {
    rooms: RwLock<HashMap<Arc<str>, Arc<Mutex<RoomSubs>>>>,
    /// Ephemeral-only channels.
    channels: RwLock<HashMap<Box<str>, Channel>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    settings: FanoutSettings,
    me: Weak<Fanout>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fanout {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        settings: FanoutSettings,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Fanout {
            rooms: RwLock::new(HashMap::new()),
            channels: RwLock::new(HashMap::new()),
            store,
            metrics,
            settings,
            me: me.clone(),
        })
    }

    fn entry(&self, room: &str) -> Option<Arc<Mutex<RoomSubs>>> {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .cloned()
    }

    /// Registers `session` in catch-up mode. Live events of the room are
    /// buffered for it until [`activate`](Self::activate).
    pub(crate) async fn subscribe(
        &self,
        room: &str,
        session: Arc<dyn Session>,
        user: Option<Arc<str>>,
    ) -> Result<(), StoreError> {
        let entry = match self.entry(room) {
            Some(e) => e,
            None => {
                // Read before inserting: anything stored meanwhile is either
                // replayed from history or arrives as a live event; a seq
                // published in between is filled from the store.
                let last = self.store.last_seq(room).await?;
                let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
                rooms
                    .entry(Arc::from(room))
                    .or_insert_with(|| {
                        Arc::new(Mutex::new(RoomSubs {
                            next_seq: last + 1,
                            pending: BTreeMap::new(),
                            gap_fill_scheduled: false,
                            subs: HashMap::new(),
                        }))
                    })
                    .clone()
            }
        };
        let mut subs = lock(&entry);
        let id = session.id();
        if subs
            .subs
            .insert(
                id,
                Sub {
                    session,
                    user,
                    last_seq: 0,
                    catch_up: Some(Box::default()),
                },
            )
            .is_none()
        {
            self.metrics.subscriptions.inc();
        }
        Ok(())
    }

    /// Registers `session` on a channel that carries only ephemeral events
    /// (a user's own channel for mentions): no store, no catch-up.
    pub(crate) fn subscribe_live(&self, channel: &str, session: Arc<dyn Session>) {
        let id = session.id();
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        let subs = channels.entry(channel.into()).or_default();
        if subs.iter().all(|(s, _)| *s != id) {
            subs.push((id, session));
            self.metrics.subscriptions.inc();
        }
    }

    /// Removes a session from an ephemeral channel.
    pub(crate) fn unsubscribe_live(&self, channel: &str, id: SessionId) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = channels.get_mut(channel) else {
            return;
        };
        if let Some(at) = subs.iter().position(|(s, _)| *s == id) {
            subs.swap_remove(at);
            self.metrics.subscriptions.dec();
        }
        if subs.is_empty() {
            channels.remove(channel);
        }
    }

    /// Delivers an ephemeral event to a channel's sessions; `false` when
    /// there is no such channel here. A session whose queue is full is
    /// closed with `lagged`, as in a room.
    fn deliver_live(&self, ev: &RoomEvent) -> bool {
        let lagged: Vec<SessionId> = {
            let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
            let Some(subs) = channels.get(&*ev.room) else {
                return false;
            };
            let mut lagged = Vec::new();
            for (id, session) in subs {
                if session.deliver(ev.frame.clone()).is_err() {
                    lagged.push(*id);
                }
            }
            self.metrics
                .deliveries
                .add((subs.len() - lagged.len()) as u64);
            lagged
        };
        for id in lagged {
            let session = {
                let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
                let Some(subs) = channels.get_mut(&*ev.room) else {
                    break;
                };
                let Some(at) = subs.iter().position(|(s, _)| *s == id) else {
                    continue;
                };
                let (_, session) = subs.swap_remove(at);
                if subs.is_empty() {
                    channels.remove(&*ev.room);
                }
                session
            };
            self.metrics.subscriptions.dec();
            self.metrics.lagged.inc();
            tracing::info!(session = id, "subscriber lagged; disconnecting it");
            session.close(ErrorCode::Lagged);
        }
        true
    }

    /// Ends catch-up: delivers the buffered events newer than `replayed`
    /// (the newest `seq` the replay sent), then the request's reply, made
    /// by `reply` from the newest `seq` delivered, and goes live. The
    /// reply is queued under the room's lock, so no live event comes
    /// before it: the client sees it where the replay ends. The session's
    /// queue may be too full for the whole buffer or the reply: then what
    /// fits is delivered, the rest stays buffered, and
    /// [`Activation::Pending`] asks the caller to wait for room and call
    /// again.
    pub(crate) fn activate(
        &self,
        room: &str,
        id: SessionId,
        replayed: u64,
        reply: impl FnOnce(u64) -> Bytes,
    ) -> Activation {
        let Some(entry) = self.entry(room) else {
            return Activation::Gone;
        };
        let mut guard = lock(&entry);
        let subs = &mut *guard;
        let Some(sub) = subs.subs.get_mut(&id) else {
            return Activation::Gone;
        };
        sub.last_seq = sub.last_seq.max(replayed);
        let mut catch_up = sub.catch_up.take().unwrap_or_default();
        if catch_up.overflowed {
            sub.catch_up = Some(Box::default());
            return Activation::Replay;
        }
        let buf = &mut catch_up.buffer;
        let mut done = 0;
        while done < buf.len() {
            let ev = &buf[done];
            if ev.seq.is_some_and(|s| s <= sub.last_seq) {
                done += 1;
                continue;
            }
            match sub.session.deliver(ev.frame.clone()) {
                Ok(()) => {
                    if let Some(s) = ev.seq {
                        sub.last_seq = s;
                    }
                    done += 1;
                }
                Err(_) if sub.session.is_closed() => {
                    self.drop_lagged(subs, &[id]);
                    return Activation::Gone;
                }
                Err(_) => {
                    buf.drain(..done);
                    sub.catch_up = Some(catch_up);
                    return Activation::Pending;
                }
            }
        }
        if let Err(_full) = sub.session.deliver_reply(reply(sub.last_seq)) {
            if sub.session.is_closed() {
                self.drop_lagged(subs, &[id]);
                return Activation::Gone;
            }
            // Still catching up: what comes meanwhile is buffered.
            buf.clear();
            sub.catch_up = Some(catch_up);
            return Activation::Pending;
        }
        // The room's next seq is left alone: the replay may have read
        // messages whose events are still on their way, and the subscribers
        // already live need those events. This subscriber's own `last_seq`
        // drops them for it; a seq published before the room's entry existed
        // is filled from the store like any other gap.
        Activation::Live
    }

    /// Removes a subscriber.
    pub(crate) fn unsubscribe(&self, room: &str, id: SessionId) {
        let Some(entry) = self.entry(room) else {
            return;
        };
        let empty = {
            let mut subs = lock(&entry);
            if subs.subs.remove(&id).is_some() {
                self.metrics.subscriptions.dec();
            }
            subs.subs.is_empty()
        };
        if empty {
            let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
            // Re-check under the map lock: someone may have subscribed since.
            if let Some(e) = rooms.get(room) {
                if lock(e).subs.is_empty() {
                    rooms.remove(room);
                }
            }
        }
    }

    fn drop_lagged(&self, subs: &mut RoomSubs, ids: &[SessionId]) {
        for id in ids {
            if let Some(sub) = subs.subs.remove(id) {
                self.metrics.subscriptions.dec();
                self.metrics.lagged.inc();
                tracing::info!(session = id, "subscriber lagged; disconnecting it");
                sub.session.close(ErrorCode::Lagged);
            }
        }
    }

    /// Delivers one event to every subscriber, without ordering checks.
    fn emit(&self, subs: &mut RoomSubs, ev: &RoomEvent) {
        let mut lagged = Vec::new();
        let mut delivered = 0u64;
        for (id, sub) in subs.subs.iter_mut() {
            if let Some(c) = sub.catch_up.as_mut() {
                if c.overflowed {
                    continue;
                }
                if c.buffer.len() < self.settings.catch_up_buffer {
                    c.buffer.push(ev.clone());
                } else {
                    // Bounded: drop the buffer; the stored messages in it
                    // are read again from the store before going live.
                    c.buffer = Vec::new();
                    c.overflowed = true;
                }
                continue;
            }
            if let Some(s) = ev.seq {
                if s <= sub.last_seq {
                    continue;
                }
                sub.last_seq = s;
            }
            if sub.session.deliver(ev.frame.clone()).is_ok() {
                delivered += 1;
            } else {
                lagged.push(*id);
            }
        }
        self.metrics.deliveries.add(delivered);
        if !lagged.is_empty() {
            self.drop_lagged(subs, &lagged);
        }
        if let Some(user) = &ev.revoke {
            let before = subs.subs.len();
            subs.subs.retain(|_, s| s.user.as_ref() != Some(user));
            for _ in subs.subs.len()..before {
                self.metrics.subscriptions.dec();
            }
        }
    }

    fn schedule_gap_fill(&self, room: Arc<str>, subs: &mut RoomSubs, delay: Duration) {
        if subs.gap_fill_scheduled {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(%room, "no runtime to fill a fan-out gap from");
            return;
        };
        subs.gap_fill_scheduled = true;
        let me = self.me.clone();
        handle.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(me) = me.upgrade() {
                me.fill_gap(room).await;
            }
        });
    }

    /// Fetches the missing messages of an open gap from the store.
    async fn fill_gap(&self, room: Arc<str>) {
        let Some(entry) = self.entry(&room) else {
            return;
        };
        let (from, to) = {
            let mut subs = lock(&entry);
            subs.gap_fill_scheduled = false;
            match subs.pending.keys().next() {
                Some(&first) if first > subs.next_seq => (subs.next_seq, first),
                _ => return,
            }
        };
        let limit = u32::try_from(to - from).unwrap_or(u32::MAX).min(1000);
        let found = match self
            .store
            .history(&room, HistoryQuery::after(from - 1, limit))
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%room, error = %e, "gap fill failed; retrying");
                Vec::new()
            }
        };
        let mut subs = lock(&entry);
        let got_any = !found.is_empty();
        for message in found {
            let seq = message.seq;
            if seq >= subs.next_seq && seq < to {
                self.metrics.gap_filled.inc();
                let frame = Codec::encode(&ServerFrame::Message { message });
                subs.pending.entry(seq).or_insert(RoomEvent {
                    room: room.clone(),
                    seq: Some(seq),
                    frame,
                    revoke: None,
                });
            }
        }
        if !got_any && subs.pending.keys().next() == Some(&to) {
            // The store has nothing in the gap: those seqs were never
            // committed. Skip them loudly rather than stall the room.
            tracing::error!(%room, from, to, "seq gap not in the store; skipping it");
            subs.next_seq = to;
        }
        self.drain_pending(&room, &mut subs);
    }

    fn drain_pending(&self, room: &Arc<str>, subs: &mut RoomSubs) {
        loop {
            let next = subs.next_seq;
            let Some(ev) = subs.pending.remove(&next) else {
                break;
            };
            subs.next_seq += 1;
            self.emit(subs, &ev);
        }
        // Anything older than next is a duplicate.
        let next = subs.next_seq;
        subs.pending.retain(|&s, _| s >= next);
        if !subs.pending.is_empty() {
            let delay = if subs.pending.len() >= self.settings.reorder_buffer {
                Duration::ZERO
            } else {
                self.settings.gap_timeout
            };
            self.schedule_gap_fill(room.clone(), subs, delay);
        }
    }
}

impl Fanout {
    /// Fetches whatever the store has past each room's next expected seq.
    async fn resync_rooms(&self) {
        let rooms: Vec<(Arc<str>, Arc<Mutex<RoomSubs>>)> = self
            .rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (room, entry) in rooms {
            let mut from = lock(&entry).next_seq;
            loop {
                let page = match self
                    .store
                    .history(&room, HistoryQuery::after(from - 1, 500))
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "resync failed");
                        break;
                    }
                };
                let n = page.len();
                for message in page {
                    from = message.seq + 1;
                    let frame = Codec::encode(&ServerFrame::Message { message });
                    self.deliver(RoomEvent {
                        room: room.clone(),
                        seq: Some(from - 1),
                        frame,
                        revoke: None,
                    });
                }
                if n < 500 {
                    break;
                }
            }
        }
    }
}

impl EventSink for Fanout {
    fn resync(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no runtime to resync fan-out from");
            return;
        };
        let me = self.me.clone();
        handle.spawn(async move {
            if let Some(me) = me.upgrade() {
                me.resync_rooms().await;
            }
        });
    }

    fn deliver(&self, ev: RoomEvent) {
        let Some(entry) = self.entry(&ev.room) else {
            if ev.seq.is_none() {
                self.deliver_live(&ev);
            }
            return;
        };
        let mut subs = lock(&entry);
        match ev.seq {
            None => self.emit(&mut subs, &ev),
            Some(s) if s < subs.next_seq => {}
            Some(s) if s == subs.next_seq => {
                subs.next_seq += 1;
                self.emit(&mut subs, &ev);
                let room = ev.room.clone();
                if !subs.pending.is_empty() {
                    self.drain_pending(&room, &mut subs);
                }
            }
            Some(s) => {
                let room = ev.room.clone();
                subs.pending.insert(s, ev);
                self.drain_pending(&room, &mut subs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::session::{Outbox, OutboxLimits, OutboxReceiver};

    fn fanout() -> (Arc<Fanout>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let settings = FanoutSettings {
            catch_up_buffer: 16,
            reorder_buffer: 16,
            gap_timeout: Duration::from_secs(1),
        };
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        (Fanout::new(store, metrics.clone(), settings), metrics)
    }

    fn session(max_frames: usize) -> (Outbox, OutboxReceiver) {
        Outbox::new(OutboxLimits {
            max_frames,
            max_bytes: 1 << 20,
        })
    }

    fn mention(n: u8) -> RoomEvent {
        RoomEvent {
            room: Arc::from("~ann"),
            seq: None,
            frame: bytes::Bytes::from(vec![b'm', n]),
            revoke: None,
        }
    }

    #[test]
    fn a_users_channel_reaches_each_of_its_sessions_and_lags_out_a_full_one() {
        let (fanout, metrics) = fanout();
        let (a, mut a_rx) = session(8);
        let (b, mut b_rx) = session(1);
        fanout.subscribe_live("~ann", a.session());
        fanout.subscribe_live("~ann", a.session()); // once only
        fanout.subscribe_live("~ann", b.session());
        assert_eq!(metrics.subscriptions.get(), 2);

        fanout.deliver(mention(1));
        assert_eq!(a_rx.try_recv().as_deref(), Some(&b"m\x01"[..]));
        assert_eq!(b_rx.try_recv().as_deref(), Some(&b"m\x01"[..]));

        // B's queue holds one frame: the third mention finds it full.
        fanout.deliver(mention(2));
        fanout.deliver(mention(3));
        assert!(b.session().is_closed());
        assert_eq!(metrics.subscriptions.get(), 1);
        assert_eq!(metrics.lagged.get(), 1);
        assert_eq!(a_rx.try_recv().as_deref(), Some(&b"m\x02"[..]));
        assert_eq!(a_rx.try_recv().as_deref(), Some(&b"m\x03"[..]));

        // The last session out takes the channel with it.
        fanout.unsubscribe_live("~ann", a.session().id());
        assert_eq!(metrics.subscriptions.get(), 0);
        assert!(fanout
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty());
        fanout.deliver(mention(4));
        assert_eq!(a_rx.try_recv(), None);
    }
}

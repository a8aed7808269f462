//! Room roles kept in memory: every send and history read asks for the
//! sender's role, and a read from the pool costs a hand-off to a blocking
//! thread and back, several times the rest of the check.
//!
//! The writer thread makes every membership change, so it can keep the cache
//! exact: after a batch that touched memberships commits (or rolls back), it
//! drops those entries and moves the generation on. A read fills the cache
//! only if no change ended while it was reading (same generation), so a value
//! read before a commit can never be stored after that commit's
//! invalidation.

use std::collections::HashMap;
use std::sync::Mutex;

use chat_core::Role;

/// `room -> user -> role` (`None`: not a member), bounded.
#[derive(Debug)]
pub(crate) struct MemberCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<Box<str>, HashMap<Box<str>, Option<Role>>>,
    entries: usize,
    generation: u64,
}

/// A membership change the writer made, to invalidate after its batch.
#[derive(Debug)]
pub(crate) enum Touched {
    /// One user's role in a room.
    Member(String, String),
    /// Every entry of a room (created with its members).
    Room(String),
}

impl MemberCache {
    /// A cache of at most `capacity` entries; 0 caches nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        MemberCache {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached role (`Some(None)`: known not to be a member), or the
    /// generation to pass to [`fill`](Self::fill) after reading the store.
    pub(crate) fn get(&self, room: &str, user: &str) -> Result<Option<Role>, u64> {
        let inner = self.lock();
        match inner.rooms.get(room).and_then(|users| users.get(user)) {
            Some(role) => Ok(*role),
            None => Err(inner.generation),
        }
    }

    /// Stores what a read found, unless a change ended since `generation`.
    pub(crate) fn fill(&self, generation: u64, room: &str, user: &str, role: Option<Role>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries >= self.capacity {
            // A bound, not an eviction policy: refilling is one read each.
            inner.rooms.clear();
            inner.entries = 0;
        }
        let users = inner.rooms.entry(room.into()).or_default();
        if users.insert(user.into(), role).is_none() {
            inner.entries += 1;
        }
    }

    /// Drops what `touched` changed; called by the writer once the batch
    /// that made the changes is over, before its callers are answered.
    pub(crate) fn invalidate(&self, touched: &mut Vec<Touched>) {
        if touched.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        for t in touched.drain(..) {
            let removed = match t {
                Touched::Member(room, user) => inner
                    .rooms
                    .get_mut(room.as_str())
                    .and_then(|users| users.remove(user.as_str()))
                    .map_or(0, |_| 1),
                Touched::Room(room) => inner.rooms.remove(room.as_str()).map_or(0, |u| u.len()),
            };
            inner.entries -= removed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_overlaps_a_change_is_not_kept() {
        let cache = MemberCache::new(10);
        let Err(generation) = cache.get("r", "ann") else {
            panic!("empty cache hit")
        };
        // The writer commits a change while the read is under way.
        cache.invalidate(&mut vec![Touched::Member("r".into(), "ann".into())]);
        cache.fill(generation, "r", "ann", None);
        assert!(cache.get("r", "ann").is_err(), "a stale read was cached");
        // A read after the change is kept.
        let Err(generation) = cache.get("r", "ann") else {
            unreachable!()
        };
        cache.fill(generation, "r", "ann", Some(Role::Member));
        assert_eq!(cache.get("r", "ann"), Ok(Some(Role::Member)));
    }

    #[test]
    fn changes_drop_entries_and_the_bound_holds() {
        let cache = MemberCache::new(3);
        for user in ["a", "b", "c"] {
            let g = cache.get("r", user).unwrap_err();
            cache.fill(g, "r", user, Some(Role::Member));
        }
        cache.invalidate(&mut vec![Touched::Room("r".into())]);
        assert!(cache.get("r", "a").is_err());
        for user in ["a", "b", "c", "d"] {
            let g = cache.get("s", user).unwrap_err();
            cache.fill(g, "s", user, None);
        }
        let inner = cache.lock();
        assert!(inner.entries <= 3, "{} entries", inner.entries);
        let counted: usize = inner.rooms.values().map(HashMap::len).sum();
        assert_eq!(counted, inner.entries);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = MemberCache::new(0);
        let g = cache.get("r", "a").unwrap_err();
        cache.fill(g, "r", "a", Some(Role::Admin));
        assert!(cache.get("r", "a").is_err());
    }
}

//! The response cache: finished replies keyed by a SHA-256 of the whole
//! request (model, sampling settings, system prompt, context and task),
//! bounded in entries and in age.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// A cache key: SHA-256 of the serialized request body.
pub(crate) type Key = [u8; 32];

/// The key of a request body.
pub(crate) fn key(body: &[u8]) -> Key {
    Sha256::digest(body).into()
}

/// A bounded, time-limited map from request to reply. Eviction is
/// oldest-inserted first; entries older than the TTL are never returned.
#[derive(Debug)]
pub(crate) struct ReplyCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, (Instant, String)>,
    order: VecDeque<(Instant, Key)>,
}

impl ReplyCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        ReplyCache {
            capacity,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached reply, if fresh.
    pub(crate) fn get(&self, key: &Key) -> Option<String> {
        if self.capacity == 0 {
            return None;
        }
        let now = Instant::now();
        let inner = self.lock();
        let (at, text) = inner.map.get(key)?;
        (now.duration_since(*at) < self.ttl).then(|| text.clone())
    }

    /// Stores a reply, evicting expired entries and then the oldest ones.
    pub(crate) fn put(&self, key: Key, text: String) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let Inner { map, order } = &mut *inner;
        while let Some((at, k)) = order.front().copied() {
            let expired = now.duration_since(at) >= self.ttl;
            let full = map.len() >= self.capacity && !map.contains_key(&key);
            if !(expired || full) {
                break;
            }
            order.pop_front();
            // Only remove the map entry this queue slot put there (a key
            // stored again later has a newer slot).
            if map.get(&k).is_some_and(|(t, _)| *t == at) {
                map.remove(&k);
            }
        }
        map.insert(key, (now, text));
        order.push_back((now, key));
        // Re-stored keys leave stale slots behind; keep the queue bounded.
        if order.len() > 2 * self.capacity {
            order.retain(|(t, k)| map.get(k).is_some_and(|(at, _)| at == t));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = ReplyCache::new(10, Duration::from_secs(60));
        cache.put(key(b"a"), "reply".into());
        assert_eq!(cache.get(&key(b"a")).as_deref(), Some("reply"));
        assert_eq!(cache.get(&key(b"b")), None);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.get(&key(b"a")), None);
        cache.put(key(b"c"), "x".into());
        assert_eq!(cache.len(), 1, "the expired entry is evicted on insert");
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_evicts_the_oldest() {
        let cache = ReplyCache::new(2, Duration::from_secs(60));
        for k in [b"1", b"2", b"3"] {
            cache.put(key(k), String::from_utf8_lossy(k).into_owned());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(b"1")), None);
        assert_eq!(cache.get(&key(b"3")).as_deref(), Some("3"));
    }

    #[tokio::test(start_paused = true)]
    async fn re_stored_keys_stay_bounded() {
        let cache = ReplyCache::new(3, Duration::from_secs(60));
        for i in 0..100u32 {
            cache.put(key(&[(i % 5) as u8]), i.to_string());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(cache.len() <= 3);
        assert!(cache.lock().order.len() <= 6);
        assert_eq!(cache.get(&key(&[4])).as_deref(), Some("99"));
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let cache = ReplyCache::new(0, Duration::from_secs(60));
            cache.put(key(b"a"), "x".into());
            assert_eq!(cache.get(&key(b"a")), None);
        });
    }
}

//! The store's cache of consistency boundaries that commands decided on
//! (`write_to_boundary`): for each state type, tenant and tag query, the state folded
//! from the matching events and the version of every queried tag, as the last committed
//! command on the boundary left them. The next command on the same boundary decides on
//! that state without reading, and its save asserts the cached versions like any
//! boundary's: tag versions only grow (every tagged append, archive and delete of a
//! stream with tagged events bumps them), so a boundary another writer moved fails the
//! assertion and the command decides again on a fresh read. Pure memory: no I/O.
//!
//! The cache is bounded by the store's aggregate cache capacity: when it is full,
//! publishing a new key first empties it. A capacity of 0 turns it off.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use marten_core::{EventTag, TenantId};

/// Identifies a boundary: the state type, the tenant of its tag versions (conjoined
/// events: the session's; `None` for single-tenant events, whose tags every session
/// shares), the queried tags in order and the event types the query is limited to (in
/// order; `None`: all).
pub(crate) type BoundaryKey = (
    TypeId,
    Option<TenantId>,
    Vec<EventTag>,
    Option<Vec<&'static str>>,
);

/// A boundary's state and tag versions after a committed command.
pub(crate) struct CachedBoundary<S> {
    /// The state folded from the matching events (`None`: nothing created it).
    pub(crate) state: Option<S>,
    /// The version of each queried tag, in the key's order.
    pub(crate) versions: Vec<(EventTag, i64)>,
}

/// A bounded map from [`BoundaryKey`] to a [`CachedBoundary`] of the key's state type.
/// Shared by every session of a store: all methods take `&self` and lock an inner mutex.
pub(crate) struct BoundaryCache {
    capacity: usize,
    entries: Mutex<HashMap<BoundaryKey, Arc<dyn Any + Send + Sync>>>,
}

impl BoundaryCache {
    /// A cache of at most `capacity` boundaries; 0 turns it off.
    pub(crate) fn new(capacity: usize) -> Self {
        BoundaryCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the cache keeps anything.
    pub(crate) fn is_on(&self) -> bool {
        self.capacity > 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<BoundaryKey, Arc<dyn Any + Send + Sync>>> {
        // Every operation on the map is a single insert, remove or clear: a panic while
        // holding the lock leaves it consistent, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The boundary cached for `key`, if there is one of state type `S`.
    pub(crate) fn get<S: Send + Sync + 'static>(
        &self,
        key: &BoundaryKey,
    ) -> Option<Arc<CachedBoundary<S>>> {
        if !self.is_on() {
            return None;
        }
        let entry = self.lock().get(key).cloned()?;
        entry.downcast::<CachedBoundary<S>>().ok()
    }

    /// Keeps `boundary` for `key`, replacing what was there.
    pub(crate) fn publish<S: Send + Sync + 'static>(
        &self,
        key: BoundaryKey,
        boundary: CachedBoundary<S>,
    ) {
        if !self.is_on() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, Arc::new(boundary));
    }

    /// Drops the boundary cached for `key`, if any.
    pub(crate) fn forget(&self, key: &BoundaryKey) {
        if self.is_on() {
            self.lock().remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> BoundaryKey {
        let tag = EventTag::named("course", n);
        (TypeId::of::<u32>(), None, vec![tag], None)
    }

    fn boundary(state: u32, version: i64) -> CachedBoundary<u32> {
        CachedBoundary {
            state: Some(state),
            versions: vec![(EventTag::named("course", state), version)],
        }
    }

    #[test]
    fn keeps_what_was_published_for_its_key_and_type_only() {
        let cache = BoundaryCache::new(4);
        cache.publish(key(1), boundary(1, 3));
        let got = cache.get::<u32>(&key(1)).expect("cached");
        assert_eq!((got.state, got.versions[0].1), (Some(1), 3));
        assert!(cache.get::<u64>(&key(1)).is_none(), "another state type");
        assert!(cache.get::<u32>(&key(2)).is_none());
        cache.publish(key(1), boundary(1, 5));
        assert_eq!(cache.get::<u32>(&key(1)).expect("cached").versions[0].1, 5);
        cache.forget(&key(1));
        assert!(cache.get::<u32>(&key(1)).is_none());
    }

    #[test]
    fn stays_within_its_capacity_and_zero_keeps_nothing() {
        let cache = BoundaryCache::new(3);
        for n in 0..10 {
            cache.publish(key(n), boundary(n, 1));
            assert!(cache.lock().len() <= 3);
            assert!(cache.get::<u32>(&key(n)).is_some(), "the newest is kept");
        }
        let off = BoundaryCache::new(0);
        off.publish(key(1), boundary(1, 1));
        assert!(off.get::<u32>(&key(1)).is_none());
    }
}

//! The store's cache of aggregates: inline aggregate documents, so that a plain append to
//! a stream whose aggregate is projected inline can be planned without reading the
//! document; and the states of live aggregates that commands wrote (`write_to_aggregate`),
//! so that the next command on the stream can decide without reading it. A decision made
//! on a live entry asserts the entry's version and the id of the stream's event at that
//! version ([`Cached::tip`]), and is made again on a fresh read if the save is rejected.
//!
//! An entry is the aggregate document as a committed save wrote it (or its absence, after
//! a deletion) and the stream version it belongs to; after a committed save that appended
//! to the stream only events the aggregate does not handle, the same document with the
//! version moved on by those events (for a plain append, a guess: the stream may have
//! moved by more). A backend that plans an append from
//! an entry must make the append assert that version and assert that the stored document
//! is still the cached one, in the same flight as the projected write: if anything moved
//! the stream or touched the document since, the save is rejected, nothing is written,
//! and it plans again from a locked read. A stale entry therefore costs a retry, never a
//! lost or wrong update.
//!
//! Entries are published after a commit, and when a read of the aggregate found the stored
//! document to be the whole stream folded; they are dropped when a save that touched the
//! stream fails in any way (its outcome may be unknown) or deletes or archives the stream.
//!
//! The cache is bounded: when it is full, publishing a new key first drops the least
//! recently used quarter of the entries (at least one), reads and writes both counting as
//! a use. A capacity of 0 turns it off.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{StreamId, TenantId};

/// Entries kept by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Identifies an entry: the aggregate type, the tenant of its documents (a conjoined
/// aggregate's: the tenant of the session that saved or read it; `None` for a single
/// aggregate, whose rows every session shares) and the stream. A tenant's entry is only
/// ever planned from by that tenant's sessions, whose streams (conjoined events) and
/// documents are its own.
pub type CacheKey = (TypeId, Option<TenantId>, StreamId);

/// A committed aggregate document at a stream version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The stream version the document belongs to: the version it was written at, or
    /// later when only events the aggregate does not handle came after it.
    pub version: i64,
    /// The document's JSON, `None` when the aggregate was deleted (or never created).
    pub json: Option<Arc<[u8]>>,
    /// The id of the stream's event at `version`, for an entry of a live aggregate that
    /// a command wrote ([`write_to_aggregate`]): a decision made on the entry asserts it
    /// with the stream's version, so that a stream deleted and started again up to the
    /// same version is not taken for the cached one. `None` for inline documents (whose
    /// saves assert the stored document instead).
    ///
    /// [`write_to_aggregate`]: https://docs.rs/marten-pg/latest/marten_pg/struct.Events.html#method.write_to_aggregate
    pub tip: Option<uuid::Uuid>,
}

/// What a planned save will make true if it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheUpdate {
    /// The aggregate type and stream the save writes.
    pub key: CacheKey,
    /// The document and version the save writes.
    pub entry: Cached,
}

struct Slot {
    entry: Cached,
    /// When the entry was last written or read, for eviction.
    touched: u64,
}

struct Entries {
    slots: HashMap<CacheKey, Slot>,
    clock: u64,
}

/// A bounded map from (aggregate type, stream) to the last committed aggregate document.
/// Shared by every session of a store: all methods take `&self` and lock an inner mutex.
pub struct AggregateCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl AggregateCache {
    /// A cache of at most `capacity` entries; 0 turns it off.
    pub fn new(capacity: usize) -> Self {
        AggregateCache {
            capacity,
            entries: Mutex::new(Entries {
                slots: HashMap::new(),
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves the map consistent (every operation on it
        // is a single insert, remove or retain), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `key`, if there is one; marks it used.
    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        entries.slots.get_mut(key).map(|slot| {
            slot.touched = now;
            slot.entry.clone()
        })
    }

    /// Publishes what a committed save wrote. Each update replaces the entry for its key,
    /// whatever that entry's version; later updates in `updates` win over earlier ones.
    pub fn publish(&self, updates: Vec<CacheUpdate>) {
        if self.capacity == 0 || updates.is_empty() {
            return;
        }
        let mut entries = self.lock();
        for update in updates {
            entries.clock += 1;
            let touched = entries.clock;
            if entries.slots.len() >= self.capacity && !entries.slots.contains_key(&update.key) {
                Self::evict_oldest(&mut entries, self.capacity);
            }
            entries.slots.insert(
                update.key,
                Slot {
                    entry: update.entry,
                    touched,
                },
            );
        }
    }

    /// Drops the oldest quarter of the entries (at least one): amortised O(1) per insert.
    fn evict_oldest(entries: &mut Entries, capacity: usize) {
        let mut stamps: Vec<u64> = entries.slots.values().map(|s| s.touched).collect();
        let cut = (capacity / 4).min(stamps.len().saturating_sub(1));
        let (_, threshold, _) = stamps.select_nth_unstable(cut);
        let threshold = *threshold;
        entries.slots.retain(|_, s| s.touched > threshold);
    }

    /// Drops the entries for `keys`; keys without an entry are ignored.
    pub fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a CacheKey>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        for key in keys {
            entries.slots.remove(key);
        }
    }

    /// Drops every aggregate type's entry for `stream`, whatever its tenant.
    pub fn forget_stream(&self, stream: &StreamId) {
        if self.capacity == 0 {
            return;
        }
        self.lock().slots.retain(|(_, _, s), _| s != stream);
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: u128) -> StreamId {
        StreamId::Uuid(uuid::Uuid::from_u128(n))
    }

    fn key(n: u128) -> CacheKey {
        (TypeId::of::<u8>(), None, stream(n))
    }

    fn entry(version: i64) -> Cached {
        Cached {
            version,
            json: None,
            tip: None,
        }
    }

    fn update(n: u128, version: i64) -> CacheUpdate {
        CacheUpdate {
            key: key(n),
            entry: entry(version),
        }
    }

    /// Whether `key` has an entry, without marking it used.
    fn holds(cache: &AggregateCache, key: &CacheKey) -> bool {
        cache.lock().slots.contains_key(key)
    }

    #[test]
    fn keeps_at_most_capacity_and_evicts_the_least_recently_used() {
        let cache = AggregateCache::new(8);
        cache.publish((0..8).map(|n| update(n, 1)).collect());
        // Touch 0 and 1, so they survive the next eviction.
        assert!(cache.get(&key(0)).is_some());
        assert!(cache.get(&key(1)).is_some());
        cache.publish(vec![update(100, 1)]);
        assert!(cache.len() <= 8);
        assert!(cache.get(&key(0)).is_some());
        assert!(cache.get(&key(1)).is_some());
        assert!(cache.get(&key(100)).is_some());
        assert!(cache.get(&key(2)).is_none(), "the oldest entry is gone");
        for n in 200..300 {
            cache.publish(vec![update(n, 1)]);
            assert!(cache.len() <= 8);
        }
    }

    #[test]
    fn forgets_keys_and_streams_and_a_zero_capacity_keeps_nothing() {
        let cache = AggregateCache::new(4);
        cache.publish(vec![update(1, 3), update(2, 5)]);
        assert_eq!(cache.get(&key(2)).map(|c| c.version), Some(5));
        cache.forget([&key(2)]);
        assert!(cache.get(&key(2)).is_none());
        cache.forget_stream(&key(1).2);
        assert!(cache.get(&key(1)).is_none());
        let off = AggregateCache::new(0);
        off.publish(vec![update(1, 1)]);
        assert!(off.get(&key(1)).is_none());
    }

    #[test]
    fn a_batch_larger_than_the_capacity_keeps_the_bound_and_the_newest() {
        let cache = AggregateCache::new(4);
        cache.publish((0..10).map(|n| update(n, 1)).collect());
        assert!(cache.len() <= 4);
        assert!(holds(&cache, &key(9)), "the last published entry stays");
        assert!(!holds(&cache, &key(0)), "the first published entry is gone");
    }

    #[test]
    fn eviction_drops_exactly_the_least_recently_used_quarter() {
        // Capacity 4: a quarter is one entry, and the cut keeps entries used strictly
        // after the second oldest, so two entries go.
        let cache = AggregateCache::new(4);
        cache.publish((0..4).map(|n| update(n, 1)).collect());
        // Use order, oldest first: 1, 2, 3, 0.
        assert!(cache.get(&key(0)).is_some());
        cache.publish(vec![update(4, 1)]);
        assert_eq!(cache.len(), 3);
        assert!(!holds(&cache, &key(1)));
        assert!(!holds(&cache, &key(2)));
        for n in [0, 3, 4] {
            assert!(holds(&cache, &key(n)), "entry {n} stays");
        }
    }

    #[test]
    fn a_read_counts_as_a_use_and_a_miss_touches_nothing() {
        let cache = AggregateCache::new(2);
        cache.publish(vec![update(1, 1), update(2, 1)]);
        assert!(cache.get(&key(1)).is_some());
        assert!(cache.get(&key(99)).is_none());
        cache.publish(vec![update(3, 1)]);
        assert!(holds(&cache, &key(1)), "read after 2, so 2 is the oldest");
        assert!(!holds(&cache, &key(2)));
        assert!(holds(&cache, &key(3)));
    }

    #[test]
    fn a_capacity_of_one_keeps_the_latest_entry() {
        let cache = AggregateCache::new(1);
        for n in 0..5 {
            cache.publish(vec![update(n, 1)]);
            assert_eq!(cache.len(), 1);
            assert!(holds(&cache, &key(n)));
        }
    }

    #[test]
    fn republishing_a_held_key_in_a_full_cache_evicts_nothing() {
        let cache = AggregateCache::new(4);
        cache.publish((0..4).map(|n| update(n, 1)).collect());
        cache.publish(vec![update(0, 2)]);
        assert_eq!(cache.len(), 4);
        for n in 0..4 {
            assert!(holds(&cache, &key(n)), "entry {n} stays");
        }
        assert_eq!(cache.get(&key(0)).map(|c| c.version), Some(2));
    }

    #[test]
    fn publish_replaces_the_entry_whatever_its_version() {
        // The cache takes what the last committed save says, and does not compare
        // versions: a stale entry is caught by the save planned from it, never trusted.
        let cache = AggregateCache::new(4);
        let json: Arc<[u8]> = Arc::from(&b"{\"n\":5}"[..]);
        cache.publish(vec![CacheUpdate {
            key: key(1),
            entry: Cached {
                version: 5,
                json: Some(json.clone()),
                tip: None,
            },
        }]);
        assert_eq!(
            cache.get(&key(1)),
            Some(Cached {
                version: 5,
                json: Some(json),
                tip: None,
            })
        );
        cache.publish(vec![update(1, 7)]);
        assert_eq!(
            cache.get(&key(1)),
            Some(entry(7)),
            "a newer version replaces"
        );
        cache.publish(vec![update(1, 3)]);
        assert_eq!(
            cache.get(&key(1)),
            Some(entry(3)),
            "an older version replaces"
        );
        cache.publish(vec![update(1, 9), update(1, 4)]);
        assert_eq!(
            cache.get(&key(1)),
            Some(entry(4)),
            "the last update of a batch wins"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn forget_drops_only_the_given_keys() {
        let cache = AggregateCache::new(8);
        cache.publish((1..=4).map(|n| update(n, n as i64)).collect());
        cache.forget([&key(1), &key(3), &key(99)]);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(3)).is_none());
        assert_eq!(cache.get(&key(2)), Some(entry(2)));
        assert_eq!(cache.get(&key(4)), Some(entry(4)));
        cache.forget(std::iter::empty());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn forget_stream_drops_the_stream_for_every_aggregate_type_and_tenant() {
        let cache = AggregateCache::new(16);
        let named = StreamId::from("order-1");
        let other = StreamId::from("order-2");
        let types = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<String>(),
        ];
        let tenants = [None, TenantId::new("acme").ok()];
        let keys = |stream: &StreamId| {
            let mut keys = Vec::new();
            for t in types {
                for tenant in &tenants {
                    keys.push((t, tenant.clone(), stream.clone()));
                }
            }
            keys
        };
        let updates = [keys(&named), keys(&other)]
            .concat()
            .into_iter()
            .map(|key| CacheUpdate {
                key,
                entry: entry(1),
            })
            .collect();
        cache.publish(updates);
        assert_eq!(cache.len(), 12);
        cache.forget_stream(&named);
        assert_eq!(cache.len(), 6);
        assert!(keys(&named).iter().all(|k| cache.get(k).is_none()));
        assert!(keys(&other).iter().all(|k| cache.get(k).is_some()));
        // A stream without entries drops nothing.
        cache.forget_stream(&StreamId::from("order-3"));
        assert_eq!(cache.len(), 6);
    }

    #[test]
    fn a_tenants_entry_is_not_another_tenants_or_the_untenanted_one() {
        let cache = AggregateCache::new(8);
        let stream = StreamId::from("shared-id");
        let acme = TenantId::new("acme").ok();
        let key_of = |tenant: Option<TenantId>| (TypeId::of::<u8>(), tenant, stream.clone());
        cache.publish(vec![CacheUpdate {
            key: key_of(acme.clone()),
            entry: entry(4),
        }]);
        assert_eq!(cache.get(&key_of(acme)).map(|c| c.version), Some(4));
        assert!(cache.get(&key_of(TenantId::new("globex").ok())).is_none());
        assert!(cache.get(&key_of(None)).is_none());
    }

    #[test]
    fn a_zero_capacity_turns_the_cache_off() {
        let off = AggregateCache::new(0);
        off.publish((0..3).map(|n| update(n, 1)).collect());
        assert!(off.is_empty());
        assert!(off.get(&key(0)).is_none());
        off.forget([&key(0)]);
        off.forget_stream(&stream(0));
        assert!(off.is_empty());
    }

    #[test]
    fn is_shared_between_threads_within_its_bound() {
        fn shared<T: Send + Sync>() {}
        shared::<AggregateCache>();
        let cache = AggregateCache::new(16);
        std::thread::scope(|scope| {
            for t in 0..4u128 {
                let cache = &cache;
                scope.spawn(move || {
                    for n in 0..100 {
                        cache.publish(vec![update(t * 1000 + n, 1)]);
                        let _ = cache.get(&key(t * 1000 + n / 2));
                        assert!(cache.len() <= 16);
                    }
                });
            }
        });
        assert!(cache.len() <= 16);
    }
}

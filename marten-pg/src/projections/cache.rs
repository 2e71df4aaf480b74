//! The store's cache of inline aggregate documents, so that a plain append to a stream
//! whose aggregate is projected inline is one round trip.
//!
//! An entry is the aggregate document as a committed save wrote it (or its absence, after
//! a deletion) and the stream version it belongs to. Planning an append from an entry
//! makes the append assert that version and a [`CachedDocCheck`] assert that the stored
//! document is still the cached one, in the same statement flight as the projected
//! write: if anything moved the stream or touched the document since, the save is
//! rejected, nothing is written, and it plans again from a locked read. A stale entry
//! therefore costs a retry, never a lost or wrong update.
//!
//! Entries are published after a commit, and when a read of the aggregate found the stored
//! document to be the whole stream folded; they are dropped when a save that touched the
//! stream fails in any way (its outcome may be unknown) or deletes or archives the stream.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use marten_core::{Rejection, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::ProjectionCatalog;
use crate::documents::{DocumentStorage, PgDocument};
use crate::error_map::{map_db_error, Failed};
use crate::events::stream_id::StreamKey;
use crate::json::RawJson;
use crate::unit_of_work::Operation;
use crate::unit_of_work::UnitOfWork;

/// Entries kept by default (see `DocumentStoreBuilder::aggregate_cache`).
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// Identifies an entry: the aggregate type and its stream.
pub(crate) type CacheKey = (TypeId, StreamKey);

/// A committed aggregate document at a stream version.
#[derive(Clone)]
pub(crate) struct Cached {
    /// The stream version the document was written at.
    pub(crate) version: i64,
    /// The document's JSON, `None` when the aggregate was deleted (or never created).
    pub(crate) json: Option<Arc<[u8]>>,
}

/// What a planned save will make true if it commits.
pub(crate) struct CacheUpdate {
    pub(crate) key: CacheKey,
    pub(crate) entry: Cached,
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
pub(crate) struct AggregateCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl AggregateCache {
    /// A cache of at most `capacity` entries; 0 turns it off.
    pub(crate) fn new(capacity: usize) -> Self {
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

    /// The entry for `key`, if there is one.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Cached> {
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

    /// Publishes what a committed save wrote.
    pub(crate) fn publish(&self, updates: Vec<CacheUpdate>) {
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

    /// Drops the entries for `keys`.
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a CacheKey>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        for key in keys {
            entries.slots.remove(key);
        }
    }

    /// Drops every aggregate type's entry for `stream`.
    pub(crate) fn forget_stream(&self, stream: &StreamKey) {
        if self.capacity == 0 {
            return;
        }
        self.lock().slots.retain(|(_, s), _| s != stream);
    }

    /// How many entries the cache holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// The guard of a save planned from cache entries of aggregate `D`: sent after the
/// appends (which hold the streams' row locks, as every projected write of those documents
/// does) and before the projected writes, it rejects the save, retryably, unless every
/// stored document is exactly the cached one (or absent where the entry says none). A
/// save planned from the cache is then exactly the save a locked read would have planned,
/// whatever happened to the stream meanwhile (deleted and restarted by another process,
/// the document edited by hand).
pub(crate) struct CachedDocCheck<D: PgDocument> {
    ids: Vec<D::Id>,
    docs: Vec<Option<RawJson>>,
    rejected: bool,
}

impl<D: PgDocument> CachedDocCheck<D> {
    pub(crate) fn new() -> Self {
        CachedDocCheck {
            ids: Vec::new(),
            docs: Vec::new(),
            rejected: false,
        }
    }

    /// Expects document `id` to be stored as `json` (`None`: not stored).
    pub(crate) fn push(&mut self, id: D::Id, json: Option<&[u8]>) {
        self.ids.push(id);
        self.docs.push(json.map(|j| RawJson(j.to_vec())));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl<D: PgDocument> Operation for CachedDocCheck<D> {
    fn sql(&self) -> &'static str {
        let reads = D::storage().reads();
        if self.ids.len() == 1 {
            &reads.unchanged_one
        } else {
            &reads.unchanged
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        if self.ids.len() == 1 {
            vec![&self.ids[0], &self.docs[0]]
        } else {
            vec![&self.ids, &self.docs]
        }
    }

    fn target(&self) -> crate::unit_of_work::Target {
        crate::documents::document_target::<D>()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn checked(&self) -> bool {
        true
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        let differing: i64 = match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))?,
            None => 0,
        };
        self.rejected = differing > 0;
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn retryable(&self) -> bool {
        true
    }

    fn reset(&mut self) {
        self.rejected = false;
    }

    fn explain<'a>(&'a self, _client: &'a Client) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        // Retryable: a save it rejects is planned again, never reported.
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Tells the store's cache how a save ended: a commit publishes what its inline
/// aggregates wrote and drops the streams it deleted or archived; a failure drops what
/// the save would have written, since it may have committed before the error.
pub(crate) fn settle(
    store: &ProjectionCatalog,
    uow: &UnitOfWork,
    updates: &mut Vec<CacheUpdate>,
    committed: bool,
) {
    let cache = store.aggregate_cache();
    let updates = std::mem::take(updates);
    if !committed {
        cache.forget(updates.iter().map(|u| &u.key));
        return;
    }
    cache.publish(updates);
    for command in uow.user.commands() {
        cache.forget_stream(command.stream());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marten_core::StreamId;

    fn key(n: u128) -> CacheKey {
        (
            TypeId::of::<u8>(),
            StreamKey(StreamId::Uuid(uuid::Uuid::from_u128(n))),
        )
    }

    fn update(n: u128, version: i64) -> CacheUpdate {
        CacheUpdate {
            key: key(n),
            entry: Cached {
                version,
                json: None,
            },
        }
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
        cache.forget_stream(&key(1).1);
        assert!(cache.get(&key(1)).is_none());
        let off = AggregateCache::new(0);
        off.publish(vec![update(1, 1)]);
        assert!(off.get(&key(1)).is_none());
    }
}

//! Commands on an aggregate: [`Events::write_to_aggregate`] reads aggregate `A` (or takes
//! the state the store's aggregate cache kept of it), lets a decision function choose the
//! events, appends them expecting the version decided on and saves the session;
//! [`Events::write_exclusively_to_aggregate`] does the same under the stream's lock.
//! Uses the fold of `read_api`, `encode` / `append_api` to queue the append (asserting,
//! for a cached state, the stream's last event: `StreamAppend::tip`), `lock`, and the
//! store's aggregate cache.

use std::any::TypeId;
use std::borrow::Cow;
use std::sync::Arc;

use marten_core::projection::cache::{CacheKey, CacheUpdate, Cached};
use marten_core::projection::inline::fold_events;
use marten_core::{
    Aggregate, AnyEvent, Error, EventEnvelope, Rejection, RejectionKind, Result, StreamId, Tenancy,
    TenantId,
};
use uuid::Uuid;

use super::api::Events;
use super::append_api::expecting;
use crate::documents::{serialize, PgDocument};
use crate::events::pending::PendingEvent;
use crate::events::range::StreamRange;
use crate::projections::Lifecycle;
use crate::session::Tracking;
use crate::stream_key::StreamKey;
use crate::unit_of_work::append::StreamAppend;

/// How one decision of a command ended (here and in `boundary_command`).
pub(super) enum Attempted<T, E> {
    /// Saved: what the command returns (the stream's version after the save; the stream
    /// a boundary's events went to).
    Saved(T),
    /// The decision's own error.
    Refused(E),
    /// A failure that deciding again would not mend, or whose outcome is unknown (a save
    /// cut off may have committed): never decided again.
    Failed(E),
    /// The save was rejected (by the stream's version or last event, or by a moved
    /// boundary): nothing was written.
    Rejected(Error),
}

/// Whether a rejection names an archived stream.
fn archived(rejections: &[Rejection]) -> bool {
    rejections
        .iter()
        .any(|r| r.kind == RejectionKind::StreamArchived)
}

/// A state of `A` to decide on: the stream's version and, for a state the cache kept,
/// the id of the stream's event at that version.
struct Decidable<A> {
    state: Option<A>,
    version: i64,
    tip: Option<Uuid>,
}

impl<'s, K: Tracking> Events<'s, K> {
    /// Runs a command on aggregate `A` of `stream`, as Marten's `WriteToAggregate`: reads
    /// `A`, calls `decide` with its state (`None`: the stream does not exist or nothing
    /// created `A`), appends the events `decide` returns expecting the version it decided
    /// on (a stream at version 0 is started), and saves the session, with whatever else
    /// is queued in it, in one transaction. Returns the stream's version after the save
    /// (the version decided on, when `decide` returned no events). An error of `decide`
    /// is returned as it is, and nothing is saved (what the session had queued stays
    /// queued).
    ///
    /// After each such save commits, the store's aggregate cache
    /// ([`aggregate_cache`](crate::DocumentStoreBuilder::aggregate_cache)) keeps `A`'s
    /// state with the new events applied, and the next command on the stream decides on
    /// that state without reading the stream: one round trip instead of two. Its save
    /// asserts the stream's version and the id of the stream's last event, so that a
    /// stream another writer moved, archived, or deleted and started again, is never
    /// taken for the cached one: such a save is rejected, writes nothing, and `decide`
    /// is called again with a fresh read; so is a `decide` that returned its error on
    /// the cached state. `decide` must therefore only decide (it may run twice); a
    /// decision made on a fresh read that is rejected is the error ([`Error::Rejected`]),
    /// and so is an archived stream. A decision to append nothing to an existing stream
    /// is saved as an assertion of the version it was made on. The cache is used when
    /// `A` is a live aggregate (not an inline projection) whose apply methods take no
    /// metadata, and the session has nothing else to save, holds no exclusive lock and
    /// does not track changes; otherwise every command reads.
    pub async fn write_to_aggregate<A, I, E>(
        mut self,
        stream: impl Into<StreamId>,
        mut decide: impl FnMut(Option<&A>) -> std::result::Result<I, E>,
    ) -> std::result::Result<i64, E>
    where
        A: Aggregate + PgDocument,
        I: IntoIterator<Item: Into<PendingEvent>>,
        E: From<Error>,
    {
        let key = self.key(stream.into())?;
        let cache_key = self.cache_key::<A>(&key);
        let mut cached = cache_key.as_ref().and_then(|k| self.cached::<A>(k));
        loop {
            let on_cache = cached.is_some();
            let decidable = match cached.take() {
                Some(c) => c,
                None => {
                    let (state, version) = self.fold::<A>(&key, &StreamRange::all()).await?;
                    Decidable {
                        state,
                        version,
                        tip: None,
                    }
                }
            };
            match self
                .attempt(&key, cache_key.as_ref(), decidable, &mut decide)
                .await
            {
                Attempted::Saved(version) => return Ok(version),
                // What a cached state decided (to refuse, or to write what the stream
                // refused) is decided again on the stream as it is.
                Attempted::Refused(_) | Attempted::Rejected(_) if on_cache => continue,
                Attempted::Refused(e) | Attempted::Failed(e) => return Err(e),
                Attempted::Rejected(e) => return Err(e.into()),
            }
        }
    }

    /// Runs a command on aggregate `A` of `stream` under the stream's exclusive lock, as
    /// Marten's `WriteExclusivelyToAggregate`: locks the stream's row and reads `A` under
    /// it ([`fetch_for_exclusive_writing`](Events::fetch_for_exclusive_writing)), calls
    /// `decide` once with its state, appends what it returns and saves the session. No
    /// other writer can move the stream between the read and the save, so the decision is
    /// never rejected for a concurrent append (a new stream, which has no row to lock, may
    /// still be started by another writer first: `StreamExists`). Returns the stream's
    /// version after the save. An error of `decide` is returned as it is, nothing is
    /// saved, and the lock is released unless the session held other streams' locks
    /// before (they are then held until it saves or is dropped). The cache is not used.
    pub async fn write_exclusively_to_aggregate<A, I, E>(
        self,
        stream: impl Into<StreamId>,
        decide: impl FnOnce(Option<&A>) -> std::result::Result<I, E>,
    ) -> std::result::Result<i64, E>
    where
        A: Aggregate + PgDocument,
        I: IntoIterator<Item: Into<PendingEvent>>,
        E: From<Error>,
    {
        let mark = self.transaction_mark();
        let mut writing = self.fetch_for_exclusive_writing::<A>(stream).await?;
        let decided = decide(writing.state()).map(|events| writing.append(events));
        let version = writing.version();
        let mut events = writing.into_events();
        let began = events.began_since(&mark);
        match decided {
            Ok(Ok(())) => {
                events.session.save_changes().await?;
                Ok(version)
            }
            // The append refused the events (nothing of it was queued): the transaction
            // this command began, and its lock, end with it.
            Ok(Err(e)) => {
                events.end_transaction_begun(mark, began).await;
                Err(e.into())
            }
            Err(e) => {
                events.end_transaction_begun(mark, began).await;
                Err(e)
            }
        }
    }

    /// One decision on `decidable` and its save.
    async fn attempt<A, I, E>(
        &mut self,
        key: &StreamKey,
        cache_key: Option<&CacheKey>,
        decidable: Decidable<A>,
        decide: &mut impl FnMut(Option<&A>) -> std::result::Result<I, E>,
    ) -> Attempted<i64, E>
    where
        A: Aggregate + PgDocument,
        I: IntoIterator<Item: Into<PendingEvent>>,
        E: From<Error>,
    {
        let events = match decide(decidable.state.as_ref()) {
            Ok(events) => events,
            Err(e) => return Attempted::Refused(e),
        };
        let queued = self.queue_decision(key, cache_key, decidable, events);
        let (version, learned) = match queued {
            Ok(queued) => queued,
            Err(e) => return Attempted::Failed(e.into()),
        };
        let saved = self.session.save_changes().await;
        let cache = self.session.parts().store.aggregate_cache();
        match saved {
            Ok(()) => {
                match learned {
                    Some(update) => cache.publish(vec![update]),
                    // The entry, if any, describes the stream before this save.
                    None => cache.forget(cache_key),
                }
                Attempted::Saved(version)
            }
            Err(e) => {
                cache.forget(cache_key);
                match e {
                    // An archived stream refuses every decision: nothing to decide again.
                    Error::Rejected(r) if !archived(&r) => Attempted::Rejected(Error::Rejected(r)),
                    e => Attempted::Failed(e.into()),
                }
            }
        }
    }

    /// Queues the decided `events` expecting the version decided on (and, when the state
    /// came from the cache, the id of the stream's event at that version); returns the
    /// stream's version after them and what the cache learns if they commit.
    fn queue_decision<A, I>(
        &mut self,
        key: &StreamKey,
        cache_key: Option<&CacheKey>,
        decidable: Decidable<A>,
        events: I,
    ) -> Result<(i64, Option<CacheUpdate>)>
    where
        A: Aggregate + PgDocument,
        I: IntoIterator<Item: Into<PendingEvent>>,
    {
        let Some(mut append) = self.build(expecting(decidable.version), key.clone(), events)?
        else {
            // Nothing decided for a stream that does not exist: nothing to save for it.
            return Ok((decidable.version, None));
        };
        let version = crate::projections::advance(&key.0, decidable.version, append.ids.len())?;
        // The event at the new version: the last appended, or the tip decided on.
        let tip = append.ids.last().copied().or(decidable.tip);
        let learned = match (cache_key, tip) {
            // An apply that fails on the new events fails no command: the cache just
            // does not learn (the next command reads, and meets the failure there); nor
            // does an event whose upcaster fails on it.
            (Some(k), Some(tip)) => read_back(&self.session.parts().store, &append)
                .and_then(|events| learned::<A>(k, decidable.state, version, tip, &append, &events))
                .ok(),
            _ => None,
        };
        append.tip = decidable.tip;
        self.queue(Some(append));
        Ok((version, learned))
    }

    /// The cache entry a command on `A` may decide on and publish to: `None` when the
    /// command must read (see [`Events::write_to_aggregate`]).
    fn cache_key<A: Aggregate + PgDocument>(&self, stream: &StreamKey) -> Option<CacheKey> {
        let parts = self.session.parts();
        let store = &parts.store;
        let inline = store.projections().lifecycle(TypeId::of::<A>()) == Some(Lifecycle::Inline);
        if inline || A::USES_METADATA || !self.may_keep() {
            return None;
        }
        Some((TypeId::of::<A>(), self.kept_tenant(), stream.0.clone()))
    }

    /// Whether a command may decide on what the store kept and keep what it saves (both
    /// commands): the session tracks no changes and has nothing queued, no boundary
    /// captured and no transaction of its own, so the command's save is its alone.
    pub(super) fn may_keep(&self) -> bool {
        let parts = self.session.parts();
        !K::DIRTY
            && parts.queue.is_empty()
            && parts.boundaries.is_empty()
            && !parts.conn.in_transaction()
    }

    /// The tenant of what commands keep: the session's with conjoined events (whose
    /// streams and tags are the tenant's own), none with single-tenant events.
    pub(super) fn kept_tenant(&self) -> Option<TenantId> {
        let store = &self.session.parts().store;
        match store.events_tenancy() {
            Tenancy::Conjoined => store.tenant().cloned(),
            Tenancy::Single => None,
        }
    }

    /// The state the cache kept for `key`, if it has one a command wrote and it reads as
    /// `A` (an entry that does not is dropped).
    fn cached<A: Aggregate + PgDocument>(&self, key: &CacheKey) -> Option<Decidable<A>> {
        let cache = self.session.parts().store.aggregate_cache();
        let entry = cache.get(key)?;
        let tip = entry.tip?;
        let state = match entry.json.as_deref().map(serde_json::from_slice::<A>) {
            None => None,
            Some(Ok(state)) => Some(state),
            Some(Err(_)) => {
                cache.forget([key]);
                return None;
            }
        };
        Some(Decidable {
            state,
            version: entry.version,
            tip: Some(tip),
        })
    }
}

/// The events of `append` as a read of them gives them back: an event appended under an
/// upcaster's old name upcast from its encoded JSON (see
/// [`EventRegistry::read_back`](crate::events::registry::EventRegistry::read_back)), the
/// others as they are.
pub(super) fn read_back(
    store: &crate::DocumentStore,
    append: &StreamAppend,
) -> Result<Vec<Arc<dyn AnyEvent>>> {
    let read_back = store.events().with_registry(|r| {
        r.read_back(
            &append.stream.0,
            &append.types,
            &append.events,
            &append.data,
        )
    })?;
    Ok(read_back.unwrap_or_else(|| append.events.to_vec()))
}

/// What the cache learns if the save of `append` commits: `state` with the append's
/// `events` (as [`read_back`] gives them) applied, at `version`, whose event is `tip`.
/// The events are applied as a live fold of a type whose methods take no metadata reads
/// them: data, type (the stored name, when it differs, as `stored_type`), version.
fn learned<A: Aggregate + PgDocument>(
    key: &CacheKey,
    state: Option<A>,
    version: i64,
    tip: Uuid,
    append: &StreamAppend,
    events: &[Arc<dyn AnyEvent>],
) -> Result<CacheUpdate> {
    let stream: &StreamId = &key.2;
    let first = version - append.ids.len() as i64;
    let described = append.ids.iter().zip(append.types.iter());
    let envelopes: Vec<EventEnvelope> = events
        .iter()
        .zip(described)
        .enumerate()
        .map(|(i, (data, (id, stored)))| {
            let mut e = EventEnvelope::new(0, *id, stream.clone(), Arc::clone(data));
            e.version = first + i as i64 + 1;
            if e.stored_type != *stored {
                e.stored_type = Cow::Borrowed(stored);
            }
            e
        })
        .collect();
    let state = fold_events(state, stream, &envelopes)?;
    let json = match &state {
        Some(a) => Some(Arc::from(serialize(a)?)),
        None => None,
    };
    Ok(CacheUpdate {
        key: key.clone(),
        entry: Cached {
            version,
            json,
            tip: Some(tip),
        },
    })
}

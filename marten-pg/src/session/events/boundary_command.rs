//! Commands on a consistency boundary: [`Events::write_to_boundary`] reads the boundary of
//! a tag query (or takes the state and tag versions the store's boundary cache kept of
//! it), lets a decision function choose the events, appends them to a new stream of
//! their own asserting the boundary, and saves the session. Uses `boundary` (the read),
//! `encode` / `append_api` to queue the append, and the store's boundary cache
//! (`crate::events::tags::cache`).

use std::any::TypeId;
use std::borrow::Cow;
use std::sync::Arc;

use marten_core::aggregate::fold;
use marten_core::{AnyEvent, Apply, Error, EventEnvelope, EventTag, Result, StreamId};

use super::api::Events;
use super::boundary::{checked_tags, new_stream, read_boundary};
use super::command::Attempted;
use crate::events::pending::PendingEvent;
use crate::events::tags::cache::{BoundaryKey, CachedBoundary};
use crate::events::tags::TagQuery;
use crate::session::Tracking;
use crate::stream_key::StreamKey;
use crate::unit_of_work::append::{AppendKind, StreamAppend};

impl<'s, K: Tracking> Events<'s, K> {
    /// Runs a command on the consistency boundary of `query`: reads the boundary (the
    /// version of each queried tag, then the matching events folded into `S`), calls
    /// `decide` with the state (`None`: no matching event created it), appends the events
    /// `decide` returns to a new stream of their own, asserting the boundary as
    /// [`fetch_for_writing_by_tags`](Events::fetch_for_writing_by_tags) does, and saves
    /// the session, with whatever else is queued in it, in one transaction. Returns the
    /// new stream (`None` when `decide` returned no events: nothing is asserted then). An
    /// error of `decide` is returned as it is, and nothing is saved (what the session had
    /// queued stays queued).
    ///
    /// After each such save commits, the store keeps `S` with the new events that match
    /// the query applied, and the tags' versions the save left, so the next command on
    /// the same query, state type and tenant decides without reading: one round trip
    /// instead of two. Its save asserts the kept versions; every tagged append, and every
    /// archive or delete of a stream with tagged events, moves them, so a boundary that
    /// another writer (in this process or another) changed is never taken for the kept
    /// one: such a save is rejected, writes nothing, and `decide` is called again with a
    /// fresh read; so is a `decide` that returned its error, or no events, on the kept
    /// state (nothing was saved to assert it). `decide` must therefore only decide (it
    /// may run twice); the kept state folds the new events as they were appended (the
    /// values in memory, not their JSON read back). A decision made on a fresh read
    /// that is rejected is the error ([`Error::Rejected`] with a
    /// [`DcbConcurrency`](marten_core::RejectionKind::DcbConcurrency) rejection). The
    /// kept state is used when `S`'s apply methods take no metadata, the session has
    /// nothing else to save, holds no exclusive lock and does not track changes, and the
    /// store's [`aggregate_cache`](crate::DocumentStoreBuilder::aggregate_cache) is not
    /// 0 (its capacity bounds these boundaries too); otherwise every command reads.
    pub async fn write_to_boundary<S, I, E>(
        mut self,
        query: TagQuery,
        mut decide: impl FnMut(Option<&S>) -> std::result::Result<I, E>,
    ) -> std::result::Result<Option<StreamId>, E>
    where
        S: Apply + Clone,
        I: IntoIterator<Item: Into<PendingEvent>>,
        E: From<Error>,
    {
        let key = self.boundary_key::<S>(&query)?;
        let store = self.session.parts().store.clone();
        let cache = store.boundary_cache();
        let mut cached = key.as_ref().and_then(|k| cache.get::<S>(k));
        loop {
            let on_cache = cached.is_some();
            let decidable = match cached.take() {
                Some(kept) => CachedBoundary {
                    state: kept.state.clone(),
                    versions: kept.versions.clone(),
                },
                None => {
                    let read = read_boundary::<K, S>(&mut self, &query, async {}).await?;
                    CachedBoundary {
                        state: read.state,
                        versions: read.versions,
                    }
                }
            };
            match self
                .attempt_boundary(key.as_ref(), decidable, &mut decide)
                .await
            {
                // What a kept state decided (to refuse, to write nothing, or to write
                // what the boundary refused) is decided again on the boundary as it is:
                // only a save asserts the kept versions.
                Attempted::Saved(None) | Attempted::Refused(_) | Attempted::Rejected(_)
                    if on_cache =>
                {
                    continue
                }
                Attempted::Saved(stream) => return Ok(stream),
                Attempted::Refused(e) | Attempted::Failed(e) => return Err(e),
                Attempted::Rejected(e) => return Err(e.into()),
            }
        }
    }

    /// One decision on `decidable` and its save.
    async fn attempt_boundary<S, I, E>(
        &mut self,
        key: Option<&BoundaryKey>,
        decidable: CachedBoundary<S>,
        decide: &mut impl FnMut(Option<&S>) -> std::result::Result<I, E>,
    ) -> Attempted<Option<StreamId>, E>
    where
        S: Apply + Clone,
        I: IntoIterator<Item: Into<PendingEvent>>,
        E: From<Error>,
    {
        let events = match decide(decidable.state.as_ref()) {
            Ok(events) => events,
            Err(e) => return Attempted::Refused(e),
        };
        let identity = self.session.parts().store.stream_identity();
        let stream = new_stream(identity);
        let append = match self.build(AppendKind::Append, StreamKey(stream.clone()), events) {
            Ok(append) => append,
            Err(e) => return Attempted::Failed(e.into()),
        };
        // The save asserts the versions decided on (nothing when nothing was decided).
        let captured = decidable.versions.clone();
        let learned = match (&append, key) {
            // An apply that fails on the new events fails no command: the cache just
            // does not learn (the next command reads, and meets the failure there).
            (Some(append), Some(k)) => {
                let store = &self.session.parts().store;
                super::command::read_back(store, append)
                    .and_then(|events| learned(k, decidable, append, &events))
                    .ok()
            }
            _ => None,
        };
        let decided = append.is_some();
        if decided {
            self.session.parts_mut().boundaries.extend(captured);
            self.queue(append);
        }
        let saved = self.session.save_changes().await;
        let store = self.session.parts().store.clone();
        let cache = store.boundary_cache();
        match saved {
            Ok(()) => {
                match (key, learned) {
                    (Some(k), Some(l)) => cache.publish(k.clone(), l),
                    // The kept boundary, if any, is the boundary before this save.
                    (Some(k), None) if decided => cache.forget(k),
                    _ => {}
                }
                Attempted::Saved(decided.then_some(stream))
            }
            Err(e) => {
                if let Some(k) = key {
                    cache.forget(k);
                }
                match e {
                    Error::Rejected(r) => Attempted::Rejected(Error::Rejected(r)),
                    e => Attempted::Failed(e.into()),
                }
            }
        }
    }

    /// The key the boundary of `query` is kept under for `S`, or `None` when the command
    /// must read (see [`Events::write_to_boundary`]). Checks the query's tags.
    fn boundary_key<S: Apply>(&self, query: &TagQuery) -> Result<Option<BoundaryKey>> {
        let tags = checked_tags(query)?;
        let on = self.session.parts().store.boundary_cache().is_on();
        if S::USES_METADATA || !on || !self.may_keep() {
            return Ok(None);
        }
        let tenant = self.kept_tenant();
        let types = query.event_type_names().map(|names| {
            let mut names = names.to_vec();
            names.sort_unstable();
            names.dedup();
            names
        });
        Ok(Some((TypeId::of::<S>(), tenant, tags, types)))
    }
}

/// What the cache learns if the save of `append` (the command's one append, to a new
/// stream) commits: the state with the appended events that match the query of `key`
/// applied (as a fold of a type whose methods take no metadata reads them: data, type,
/// version), and each queried tag's version as the save leaves it: one more for being
/// asserted, and one more if an appended event carries it (what the tag lock's statement
/// adds, see `crate::tables::events`).
fn learned<S: Apply>(
    key: &BoundaryKey,
    decided_on: CachedBoundary<S>,
    append: &StreamAppend,
    events: &[Arc<dyn AnyEvent>],
) -> Result<CachedBoundary<S>> {
    let (_, _, tags, types) = key;
    let stream: &StreamId = &append.stream.0;
    let carries = |ord: i64, tag: &EventTag| {
        (append
            .tag_ords
            .iter()
            .zip(&append.tag_types)
            .zip(&append.tag_values))
        .any(|((o, t), v)| *o == ord && *t == tag.tag_type && *v == tag.value)
    };
    let mut envelopes = Vec::new();
    let described = append.ids.iter().zip(append.types.iter());
    for (i, (data, (id, stored))) in events.iter().zip(described).enumerate() {
        let ord = i as i64 + 1;
        // Read back as (an upcaster's old name: upcast to) the type it names.
        let read_as = data.event_type();
        let typed = (types.as_ref()).is_none_or(|t| t.contains(stored) || t.contains(&read_as));
        if typed && tags.iter().any(|tag| carries(ord, tag)) {
            let mut e = EventEnvelope::new(0, *id, stream.clone(), Arc::clone(data));
            e.version = ord;
            if e.stored_type != *stored {
                e.stored_type = Cow::Borrowed(stored);
            }
            envelopes.push(e);
        }
    }
    let state = fold(decided_on.state, &envelopes, |_: &mut S, _| {}).map_err(|(err, i)| {
        crate::projections::apply_error(std::any::type_name::<S>(), &envelopes[i], err.message)
    })?;
    let appended = |tag: &EventTag| {
        (append.tag_types.iter().zip(&append.tag_values))
            .any(|(t, v)| *t == tag.tag_type && *v == tag.value)
    };
    // A version the save could not raise (the database refuses it past `i64::MAX` too)
    // is nothing to keep.
    let versions = decided_on
        .versions
        .into_iter()
        .map(|(tag, v)| {
            let moved = 1 + i64::from(appended(&tag));
            v.checked_add(moved).map(|v| (tag, v)).ok_or_else(|| {
                Error::InvalidQuery(format!("tag version {v} cannot be raised past i64::MAX"))
            })
        })
        .collect::<Result<_>>()?;
    Ok(CachedBoundary { state, versions })
}

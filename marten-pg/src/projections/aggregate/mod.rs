//! Single-stream aggregates: live folds (from the inline document or the live snapshot
//! when there is one) and
//! the inline projection that keeps the aggregate document in step with its stream
//! (marten-core plans it; [`inline`] registers it and reads under lock what it needs).
//! Uses the events (reads, stream keys), documents (loads by id), and the projection
//! catalog's cache and registry.

mod inline;
mod locked;
mod start;

use std::any::TypeId;
use std::sync::Arc;

use crate::connection::Db;
use marten_core::tenant::require_tenant;
use marten_core::{Aggregate, AggregateId, Result, Tenancy, TenantId};
use tracing::debug;

pub(crate) use marten_core::projection::inline::Fetched;
use marten_core::projection::inline::{cache_tenant, cache_update, fold_events};

use super::Lifecycle;
use crate::documents::{serialize, PgDocument};
use crate::events::read;
use crate::events::stream_id::StreamKey;
use crate::events::{EventTenant, StreamRange};
use crate::json::RawJson;
use crate::projections::snapshot::{PendingSnapshot, SnapshotPolicy, Tip};
use crate::projections::ProjectionCatalog;
use crate::tenant_key::TenantKey;

pub(crate) use inline::InlineAggregate;

/// A fold: the state, the version of the last event read (the stored document's when
/// no event follows it; 0 for no stream), and the snapshot to write, if one is due.
pub(crate) struct Folded<A> {
    pub(crate) state: Option<A>,
    pub(crate) version: i64,
    pub(crate) snapshot: Option<PendingSnapshot>,
}

/// Folds a stream of `tenant` (within `range`) into `A` for a session of `session_tenant`
/// (the documents' tenant with a conjoined `A`; its cache entries' by `cache_tenant`),
/// starting from its stored document when `A` is an inline projection or a live aggregate
/// with a snapshot policy, and the document is not past the range (and reads as `A`).
/// A live aggregate's snapshot is asked for only by a fold of the whole stream (no
/// version or time bound) that skipped no event: a snapshot at version `v` is the fold
/// of events `1..=v`, and a later fold builds on it as such.
pub(crate) async fn aggregate_stream<A: Aggregate + PgDocument>(
    store: &ProjectionCatalog,
    client: Db<'_>,
    session_tenant: Option<&TenantId>,
    tenant: &EventTenant,
    stream: &StreamKey,
    range: &StreamRange,
) -> Result<Folded<A>> {
    let doc_tenant = require_tenant(A::TENANCY, session_tenant, A::DOCUMENT_TYPE)?;
    store.learn_events(A::event_types())?;
    let projections = store.projections();
    let inline = projections.lifecycle(TypeId::of::<A>()) == Some(Lifecycle::Inline);
    let policy = projections.snapshot(TypeId::of::<A>()).cloned();
    // From the first event: a stored document (the fold of events `1..=v`) can stand in
    // for the range's first events.
    let plain = range.from_version <= 1 && range.to_time.is_none() && range.from_time.is_none();
    let id = <A::Id as AggregateId>::from_stream_id(&stream.0);
    let reads = Reads {
        store,
        client,
        tenant,
        stream,
        range,
        lean: !A::USES_METADATA,
    };
    if !inline {
        return live::<A>(&reads, policy, id, doc_tenant, plain).await;
    }
    let stored = match &id {
        Some(id) if plain => {
            start::stored::<A>(store, client, doc_tenant, id, range.to_version, false).await?
        }
        _ => None,
    };
    let snapshot_version = stored.as_ref().map_or(0, |s| s.version);
    let read = reads.from(snapshot_version + 1).await?;
    let whole = range.to_version == i64::MAX && read.through.is_none();
    if let (Some(s), true) = (&stored, whole) {
        // The stored document is the whole stream folded: a plain append can plan from it.
        store.aggregate_cache().publish(vec![cache_update::<A>(
            cache_tenant::<A>(&session_tenant.cloned()),
            stream.0.clone(),
            s.version,
            Some(Arc::from(s.json.as_slice())),
        )]);
    }
    // The last event read, applied or skipped (an unknown type): the stream's version.
    let version = read.through.unwrap_or(snapshot_version);
    let state = fold_events(stored.map(|s| s.doc), &stream.0, &read.events)?;
    Ok(Folded {
        state,
        version,
        snapshot: None,
    })
}

/// The live fold of [`aggregate_stream`]: from `A`'s snapshot under `policy` (of the
/// documents' tenant `doc_tenant`) when the range is `plain`, asking for a new snapshot
/// when the fold is of the whole stream, every event applied, and due.
async fn live<A: Aggregate + PgDocument>(
    reads: &Reads<'_, '_>,
    policy: Option<Arc<SnapshotPolicy>>,
    id: Option<A::Id>,
    doc_tenant: Option<&TenantId>,
    plain: bool,
) -> Result<Folded<A>> {
    let (store, range) = (reads.store, reads.range);
    let conjoined = store.events().events_tenancy() == Tenancy::Conjoined;
    let start = match (&policy, &id) {
        (Some(policy), Some(id)) if plain => {
            let (client, to) = (reads.client, range.to_version);
            start::snapshot::<A>(store, client, policy, conjoined, doc_tenant, id, to).await?
        }
        _ => start::Start::default(),
    };
    let tip = start.tip;
    let folded = fold_live::<A>(reads, start).await?;
    // The whole stream, every event applied: the aggregate at `folded.version`.
    let whole = plain && range.to_version == i64::MAX && folded.complete();
    let snapshot = match (policy, id, &folded.state, tip) {
        (Some(policy), Some(id), Some(a), Some(tip))
            if whole && policy.due(folded.from, folded.version) =>
        {
            let at = (folded.version, tip);
            Some(pending::<A>(policy, conjoined, id, a, at, doc_tenant)?)
        }
        _ => None,
    };
    Ok(Folded {
        state: folded.state,
        version: folded.version,
        snapshot,
    })
}

/// What a fold reads its events with.
struct Reads<'a, 'c> {
    store: &'a ProjectionCatalog,
    client: Db<'c>,
    tenant: &'a EventTenant,
    stream: &'a StreamKey,
    range: &'a StreamRange,
    /// Whether the fold's methods take no metadata: read only what a fold needs.
    lean: bool,
}

impl Reads<'_, '_> {
    /// The range's events from version `from` on.
    async fn from(&self, from: i64) -> Result<read::StreamEvents> {
        let mut range = self.range.clone();
        range.from_version = from.max(range.from_version);
        let (store, client) = (self.store.as_ref(), self.client);
        if self.lean {
            read::fetch_stream_lean(store, client, self.tenant, self.stream, &range).await
        } else {
            read::fetch_stream(store, client, self.tenant, self.stream, &range).await
        }
    }
}

/// A live fold: its state, the version it started from (the snapshot's, 0 without one),
/// the version of the last event read and how many events after `from` it applied.
struct LiveFold<A> {
    state: Option<A>,
    from: i64,
    version: i64,
    applied: i64,
}

impl<A> LiveFold<A> {
    /// Whether every version after `from` up to `version` was applied: none was skipped
    /// (an event of an unknown type) or missing.
    fn complete(&self) -> bool {
        self.version - self.from == self.applied
    }
}

/// What a fold from a snapshot must find among the events it reads: the snapshot's own
/// event, by the sequence its write recorded, and the stream's last event read with the
/// snapshot (its tip), by its version and sequence.
#[derive(Clone, Copy, Debug)]
struct Base {
    /// The sequence of the snapshot's own event, at the snapshot's version.
    own: i64,
    /// The stream's last event when the snapshot was read.
    tip: Tip,
}

impl Reads<'_, '_> {
    /// Folds the range's events from version `from` on into `state`, a chunk at a time
    /// (see [`read::fold_stream`]). `base`: `state` is a snapshot at version `from`,
    /// folded from the incarnation of the stream whose event at `from` has the sequence
    /// `base.own` and whose last event was `base.tip` when the snapshot was read; the
    /// first event read must be the snapshot's own (at `from`, with that sequence) and is
    /// not applied, and the events are read with their sequences (not lean) to find it
    /// and the tip among them: the events read are then those of the snapshot's
    /// incarnation (a stream deleted and started again since has other sequences, at
    /// whatever versions). The `bool` says whether both held (always `true` without a
    /// base).
    async fn fold<A: Aggregate>(
        &self,
        from: i64,
        state: Option<A>,
        base: Option<Base>,
    ) -> Result<(LiveFold<A>, bool)> {
        let mut range = self.range.clone();
        range.from_version = from.max(range.from_version);
        let (store, client) = (self.store.as_ref(), self.client);
        let stream = &self.stream.0;
        let start = if base.is_some() { from } else { 0 };
        let mut fold = LiveFold {
            state,
            from: start,
            version: start,
            applied: 0,
        };
        // The snapshot's event (version, sequence), still to be found first; `found` once
        // it was. The tip, still to be found among the events; `None` once it was,
        // `verified` if it was the same event.
        let mut expect = base.map(|b| (from, b.own));
        let mut found = base.is_none();
        let mut tip = base.map(|b| b.tip);
        let mut verified = base.is_none();
        let lean = self.lean && base.is_none();
        read::fold_stream(
            store,
            client,
            self.tenant,
            self.stream,
            &range,
            lean,
            |chunk, through| {
                if let Some(t) = tip {
                    if let Some(e) = chunk.iter().find(|e| e.version == t.version) {
                        verified = e.sequence == t.sequence;
                        tip = None;
                    }
                }
                let mut events = chunk;
                if let (Some((version, sequence)), Some((first, rest))) =
                    (expect, events.split_first())
                {
                    expect = None;
                    found = first.version == version && first.sequence == sequence;
                    events = rest;
                }
                if !found {
                    return Ok(());
                }
                // The chunk's last row, applied or skipped (an unknown type).
                fold.version = through;
                if !events.is_empty() {
                    fold.applied += events.len() as i64;
                    fold.state = fold_events(fold.state.take(), stream, events)?;
                }
                Ok(())
            },
        )
        .await?;
        Ok((fold, found && verified))
    }
}

/// Folds a live aggregate from its snapshot, if `start` has one its write recorded the
/// event of: the snapshot's own event (by the sequence recorded with it) and the
/// stream's tip read with it must be among the events read (a deleted stream's snapshot
/// is not built on, nor one of a stream deleted and started again, before the snapshot
/// was read or since); only the events after it are applied.
async fn fold_live<A: Aggregate + PgDocument>(
    reads: &Reads<'_, '_>,
    start: start::Start<A>,
) -> Result<LiveFold<A>> {
    let stream = &reads.stream.0;
    if let Some(s) = start.stored.filter(|s| s.version > 0) {
        // Without a tip at or past it, the snapshot is of no stream there is; without the
        // sequence of its event, of no incarnation it can be told to be of.
        let tip = start.tip.filter(|t| t.version >= s.version);
        if let Some(base) = tip.zip(start.sequence).map(|(tip, own)| Base { own, tip }) {
            let (fold, found) = reads.fold(s.version, Some(s.doc), Some(base)).await?;
            if found {
                debug!(document_type = A::DOCUMENT_TYPE, %stream, from = fold.from, version = fold.version, "live fold");
                return Ok(fold);
            }
        }
        debug!(document_type = A::DOCUMENT_TYPE, %stream, "snapshot not of the stream read: folding from the start");
    }
    let (fold, _) = reads.fold(1, None, None).await?;
    debug!(document_type = A::DOCUMENT_TYPE, %stream, from = 0, version = fold.version, "live fold");
    Ok(fold)
}

/// The snapshot of `state`, folded up to the stream version `at.0` of the incarnation of
/// the stream whose last event was `at.1` when the fold started.
fn pending<A: Aggregate + PgDocument>(
    policy: Arc<SnapshotPolicy>,
    conjoined_events: bool,
    id: A::Id,
    state: &A,
    at: (i64, Tip),
    tenant: Option<&TenantId>,
) -> Result<PendingSnapshot> {
    let tenant = (A::TENANCY == Tenancy::Conjoined)
        .then(|| TenantKey::of(tenant))
        .flatten();
    let (version, tip) = at;
    Ok(PendingSnapshot {
        policy,
        conjoined_events,
        stream: id.to_string(),
        id: Box::new(id),
        json: RawJson(serialize(state)?),
        version,
        tip,
        tenant,
        document_type: A::DOCUMENT_TYPE,
    })
}

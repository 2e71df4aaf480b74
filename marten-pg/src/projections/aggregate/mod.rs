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
use crate::projections::snapshot::{PendingSnapshot, SnapshotPolicy};
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
    let plain = range.from_version <= 1 && range.to_time.is_none() && range.from_time.is_none();
    let id = <A::Id as AggregateId>::from_stream_id(&stream.0);
    let stored = match &id {
        Some(id) if plain && (inline || policy.is_some()) => {
            start::stored::<A>(store, client, doc_tenant, id, range.to_version, !inline).await?
        }
        _ => None,
    };
    let reads = Reads {
        store,
        client,
        tenant,
        stream,
        range,
        lean: !A::USES_METADATA,
    };
    if !inline {
        let folded = fold_live::<A>(&reads, stored).await?;
        let snapshot = match (policy, id, &folded.state) {
            (Some(policy), Some(id), Some(a))
                if range.to_version == i64::MAX && policy.due(folded.from, folded.version) =>
            {
                let conjoined = store.events().events_tenancy() == Tenancy::Conjoined;
                Some(pending::<A>(
                    policy,
                    conjoined,
                    id,
                    a,
                    folded.version,
                    doc_tenant,
                )?)
            }
            _ => None,
        };
        return Ok(Folded {
            state: folded.state,
            version: folded.version,
            snapshot,
        });
    }
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

/// A live fold: its state, the version it started from (the snapshot's, 0 without one)
/// and the version of the last event read.
struct LiveFold<A> {
    state: Option<A>,
    from: i64,
    version: i64,
}

impl Reads<'_, '_> {
    /// Folds the range's events from version `from` on into `state`, a chunk at a time
    /// (see [`read::fold_stream`]). `snapshot`: the first event read must be the
    /// snapshot's own, at version `from`, and is not applied; the `bool` says whether it
    /// was there (always `true` without a snapshot).
    async fn fold<A: Aggregate>(
        &self,
        from: i64,
        state: Option<A>,
        snapshot: bool,
    ) -> Result<(LiveFold<A>, bool)> {
        let mut range = self.range.clone();
        range.from_version = from.max(range.from_version);
        let (store, client) = (self.store.as_ref(), self.client);
        let stream = &self.stream.0;
        let start = if snapshot { from } else { 0 };
        let mut fold = LiveFold {
            state,
            from: start,
            version: start,
        };
        // The snapshot's event, still to be found first; `found` once it was.
        let mut expect = snapshot.then_some(from);
        let mut found = !snapshot;
        read::fold_stream(
            store,
            client,
            self.tenant,
            self.stream,
            &range,
            self.lean,
            |chunk, through| {
                let mut events = chunk;
                if let (Some(version), Some((first, rest))) = (expect, events.split_first()) {
                    expect = None;
                    found = first.version == version;
                    events = rest;
                }
                if !found {
                    return Ok(());
                }
                // The chunk's last row, applied or skipped (an unknown type).
                fold.version = through;
                if !events.is_empty() {
                    fold.state = fold_events(fold.state.take(), stream, events)?;
                }
                Ok(())
            },
        )
        .await?;
        Ok((fold, found))
    }
}

/// Folds a live aggregate from its snapshot `stored`, if any. The snapshot's own event is
/// read with the later ones and must still be there (a deleted stream's snapshot is not
/// built on); only the events after it are applied.
async fn fold_live<A: Aggregate + PgDocument>(
    reads: &Reads<'_, '_>,
    stored: Option<start::Stored<A>>,
) -> Result<LiveFold<A>> {
    let stream = &reads.stream.0;
    if let Some(s) = stored.filter(|s| s.version > 0) {
        let (fold, found) = reads.fold(s.version, Some(s.doc), true).await?;
        if found {
            debug!(document_type = A::DOCUMENT_TYPE, %stream, from = fold.from, version = fold.version, "live fold");
            return Ok(fold);
        }
        debug!(document_type = A::DOCUMENT_TYPE, %stream, "snapshot without its event: folding from the start");
    }
    let (fold, _) = reads.fold(1, None, false).await?;
    debug!(document_type = A::DOCUMENT_TYPE, %stream, from = 0, version = fold.version, "live fold");
    Ok(fold)
}

/// The snapshot of `state`, folded up to the stream version `version`.
fn pending<A: Aggregate + PgDocument>(
    policy: Arc<SnapshotPolicy>,
    conjoined_events: bool,
    id: A::Id,
    state: &A,
    version: i64,
    tenant: Option<&TenantId>,
) -> Result<PendingSnapshot> {
    let tenant = (A::TENANCY == Tenancy::Conjoined)
        .then(|| TenantKey::of(tenant))
        .flatten();
    Ok(PendingSnapshot {
        policy,
        conjoined_events,
        stream: id.to_string(),
        id: Box::new(id),
        json: RawJson(serialize(state)?),
        version,
        tenant,
        document_type: A::DOCUMENT_TYPE,
    })
}

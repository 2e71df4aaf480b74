//! Single-stream aggregates: live folds (from the inline snapshot when there is one) and
//! the inline projection that keeps the aggregate document in step with its stream
//! (marten-core plans it; [`inline`] registers it and reads under lock what it needs).
//! Uses the events (reads, stream keys), documents (loads by id), and the projection
//! catalog's cache and registry.

mod inline;
mod locked;

use std::any::TypeId;
use std::sync::Arc;

use crate::connection::Db;
use marten_core::tenant::require_tenant;
use marten_core::{Aggregate, AggregateId, Error, Result, TenantId};

pub(crate) use marten_core::projection::inline::Fetched;
use marten_core::projection::inline::{cache_update, fold_events};

use super::Lifecycle;
use crate::documents::load;
use crate::documents::PgDocument;
use crate::events::read;
use crate::events::stream_id::StreamKey;
use crate::events::{EventTenant, StreamRange};
use crate::projections::ProjectionCatalog;

pub(crate) use inline::InlineAggregate;

/// Folds a stream of `tenant` (within `range`) into `A`, starting from its inline snapshot when `A`
/// is an inline projection and the snapshot is not past the range. Returns the state and
/// the version of the last event read (the snapshot's when no event follows it; 0 for no
/// stream).
pub(crate) async fn aggregate_stream<A: Aggregate + PgDocument>(
    store: &ProjectionCatalog,
    client: Db<'_>,
    doc_tenant: Option<&TenantId>,
    tenant: &EventTenant,
    stream: &StreamKey,
    range: &StreamRange,
) -> Result<(Option<A>, i64)> {
    let doc_tenant = require_tenant(A::TENANCY, doc_tenant, A::DOCUMENT_TYPE)?;
    store.learn_events(A::event_types());
    let mut start: Option<A> = None;
    let mut snapshot_json = None;
    let mut from_version = range.from_version;
    let inline = store.projections().lifecycle(TypeId::of::<A>()) == Some(Lifecycle::Inline);
    if inline && range.from_version <= 1 && range.to_time.is_none() && range.from_time.is_none() {
        if let Some(id) = <A::Id as AggregateId>::from_stream_id(&stream.0) {
            store.ensure::<A>().await?;
            if let Some(snapshot) = load::load_one::<A>(client, doc_tenant, &id).await? {
                let stored = snapshot.doc.version();
                let next = stored.checked_add(1).filter(|_| stored >= 0);
                let Some(next) = next else {
                    return Err(Error::CorruptData {
                        owner: A::DOCUMENT_TYPE.to_owned(),
                        id: Some(id.to_string()),
                        detail: format!(
                            "its stored version {stored} is not a stream version events can follow"
                        ),
                    });
                };
                if stored <= range.to_version {
                    from_version = next;
                    start = Some(snapshot.doc);
                    snapshot_json = Some(snapshot.json);
                }
            }
        }
    }
    let snapshot_version = start.as_ref().map_or(0, Aggregate::version);
    let whole = range.to_version == i64::MAX;
    let mut range = range.clone();
    range.from_version = from_version;
    let events = read::fetch_stream(store.as_ref(), client, tenant, stream, &range).await?;
    if let (Some(json), true, true) = (snapshot_json, whole, events.is_empty()) {
        // The stored document is the whole stream folded: a plain append can plan from it.
        store.aggregate_cache().publish(vec![cache_update::<A>(
            stream.0.clone(),
            snapshot_version,
            Some(Arc::from(json)),
        )]);
    }
    let version = events.last().map_or(snapshot_version, |e| e.version);
    let state = fold_events(start, &stream.0, &events)?;
    Ok((state, version))
}

//! Projections: aggregates folded live, and inline projections (single-stream aggregates,
//! multi-stream documents, event projections) whose writes join the save that appends
//! the events.
//!
//! Planning is separate from writing. A projection gets the session's pending appends as
//! owned views and the rows it needs, folds owned state, and returns operations in an
//! owned list; the unit of work, the one writer, sends them with everything else. A
//! projection never sees the session, its identity map or its connection mutably: the
//! planner holds them, and only it.
//!
//! What a projection reads to build on (the current aggregate document and stream
//! version, the current multi-stream documents) is read with `FOR UPDATE` inside the
//! save's transaction, in id order, so concurrent saves on the same stream or document
//! queue up instead of overwriting each other's projected state. An aggregate the store
//! has cached (see `cache`) is not read: the append asserts the cached version instead,
//! and a failed assertion plans the save again from a locked read.
//!
//! May use: documents, events, the unit of work, schema, connection, error map, tables;
//! planning reaches the database through `ProjectionCatalog`, never the store, and
//! never sessions or the daemon.

mod aggregate;
pub(crate) mod asynchronous;
pub(crate) mod cache;
mod catalog;
pub(crate) mod event_projection;
mod multi_stream;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use crate::connection::Request;
use futures_util::future::BoxFuture;
use marten_core::projection::requirements::{self, Assertion, Merge};
use marten_core::{AnyEvent, Error, EventEnvelope, Result};
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) use aggregate::{aggregate_stream, Fetched, InlineAggregate};
pub(crate) use event_projection::InlineEventProjection;
pub use event_projection::{EventProjection, ProjectedOps};
pub(crate) use multi_stream::InlineMultiStream;

use crate::events::append::AppendKind;
use crate::events::stream_id::StreamKey;
use crate::unit_of_work::SessionState;
use crate::unit_of_work::{OpList, UnitOfWork};
use cache::{CacheKey, CacheUpdate};
pub(crate) use catalog::ProjectionCatalog;

/// When a projection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// Folded on read only (`aggregate_stream`, `fetch_latest`, `fetch_for_writing`).
    Live,
    /// Written in the same transaction as the append that feeds it. For an aggregate this
    /// is also its snapshot: live aggregation starts from the stored document.
    Inline,
    /// Run by the async daemon.
    Async,
}

/// A pending append as a projection sees it: owned, read-only.
#[derive(Clone)]
pub(crate) struct AppendView {
    /// Where the append sits in the session's operations.
    pub(crate) index: usize,
    pub(crate) stream: StreamKey,
    pub(crate) kind: AppendKind,
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<&'static str>,
    pub(crate) events: Vec<Arc<dyn AnyEvent>>,
}

impl AppendView {
    /// Envelopes for the events, numbered from the stream version the append asserts
    /// (none for a plain append, whose version is not known before it is written).
    pub(crate) fn asserted_envelopes(&self) -> Result<Vec<EventEnvelope>> {
        let base = match self.kind {
            AppendKind::Start => Some(0),
            AppendKind::Expected(v) => Some(v),
            AppendKind::Append => None,
        };
        self.envelopes(base)
    }

    /// Envelopes for the events, numbered from `base` (the stream version before them);
    /// the global sequence is not known before the insert and is 0. A `base` so high the
    /// versions overflow is an error naming the stream.
    pub(crate) fn envelopes(&self, base: Option<i64>) -> Result<Vec<EventEnvelope>> {
        let now = OffsetDateTime::now_utc();
        let mut out = Vec::with_capacity(self.events.len());
        for (i, (data, (id, event_type))) in self
            .events
            .iter()
            .zip(self.ids.iter().zip(&self.types))
            .enumerate()
        {
            let mut e = EventEnvelope::new(0, *id, self.stream.0.clone(), data.clone());
            e.version = match base {
                Some(b) => advance(&self.stream.0, b, i + 1)?,
                None => 0,
            };
            e.event_type = (*event_type).to_owned();
            e.timestamp = now;
            out.push(e);
        }
        Ok(out)
    }
}

/// The stream version after `count` events appended at version `base`. A version that
/// would overflow (a stream row or an expected version of `i64::MAX`) is
/// [`Error::CorruptData`] naming the stream, never a panic.
pub(crate) fn advance(stream: &marten_core::StreamId, base: i64, count: usize) -> Result<i64> {
    i64::try_from(count)
        .ok()
        .and_then(|n| base.checked_add(n))
        .ok_or_else(|| Error::CorruptData {
            owner: "stream".to_owned(),
            id: Some(stream.to_string()),
            detail: format!("version {base} cannot advance by {count} events"),
        })
}

/// What a projection plans with.
pub(crate) struct PlanContext<'a, 'r> {
    pub(crate) store: &'a ProjectionCatalog,
    /// The save's request on the session's connection.
    pub(crate) req: &'a mut Request<'r>,
    pub(crate) appends: &'a [AppendView],
    /// States `fetch_for_writing` loaded, by aggregate type and stream.
    pub(crate) state: &'a mut SessionState,
    /// Plain appends that must assert a version for this attempt: (index, version).
    pub(crate) requirements: Vec<(usize, i64)>,
    /// The writes planned.
    pub(crate) out: OpList,
    /// Whether projections may plan from the store's aggregate cache (the first attempt
    /// of a save only: a retry reads under lock).
    pub(crate) use_cache: bool,
    /// The cache entries this attempt planned from.
    pub(crate) cache_hits: Vec<CacheKey>,
    /// What the cache learns if the save commits.
    pub(crate) cache_updates: Vec<CacheUpdate>,
}

impl PlanContext<'_, '_> {
    /// Opens the save's transaction now, so that what the projection reads can be locked
    /// until the save commits (the unit of work then sends no `BEGIN` of its own).
    pub(crate) async fn begin(&mut self) -> Result<()> {
        if !self.req.in_transaction() {
            self.req.set_in_transaction(true);
            self.req
                .client()
                .batch_execute("BEGIN")
                .await
                .map_err(|e| {
                    crate::error_map::map_db_error(e, crate::error_map::Failed::Transaction)
                })?;
        }
        Ok(())
    }
}

/// A projection run inside `save_changes`. Type-erased so a store can hold many.
pub(crate) trait InlineProjection: Send + Sync {
    fn plan<'a>(&'a self, ctx: &'a mut PlanContext<'_, '_>) -> BoxFuture<'a, Result<()>>;
}

/// The projections a store knows.
#[derive(Default, Clone)]
pub(crate) struct ProjectionRegistry {
    pub(crate) lifecycles: HashMap<TypeId, Lifecycle>,
    pub(crate) inline: Vec<Arc<dyn InlineProjection>>,
    pub(crate) asynchronous: Vec<Arc<dyn asynchronous::AsyncProjection>>,
}

impl ProjectionRegistry {
    pub(crate) fn lifecycle(&self, type_id: TypeId) -> Option<Lifecycle> {
        self.lifecycles.get(&type_id).copied()
    }
}

/// How planning ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Planned {
    /// The derived writes are queued.
    Ready,
    /// Projections planned from cache entries that disagree with what others read under
    /// lock: the entries are dropped; roll back and plan again without the cache.
    Again,
}

/// Plans every inline projection of the store for the session's pending appends and
/// queues their writes as the unit of work's derived operations. `use_cache`: whether
/// the store's aggregate cache may stand in for locked reads (see [`cache`]).
pub(crate) async fn plan_inline(
    store: &ProjectionCatalog,
    req: &mut Request<'_>,
    uow: &mut UnitOfWork,
    state: &mut SessionState,
    use_cache: bool,
    cache_updates: &mut Vec<CacheUpdate>,
) -> Result<Planned> {
    let projections = store.projections();
    if projections.inline.is_empty() {
        return Ok(Planned::Ready);
    }
    let appends: Vec<AppendView> = uow
        .user
        .appends()
        .map(|(index, a)| AppendView {
            index,
            stream: a.stream.clone(),
            kind: a.requested,
            ids: a.ids.clone(),
            types: a.types.clone(),
            events: a.events.clone(),
        })
        .collect();
    if appends.is_empty() {
        return Ok(Planned::Ready);
    }
    // Projections read the event tables before the appends create them.
    crate::events::read::ensure(store.as_ref()).await?;
    let mut ctx = PlanContext {
        store,
        req,
        appends: &appends,
        state,
        requirements: Vec::new(),
        out: OpList::default(),
        use_cache,
        cache_hits: Vec::new(),
        cache_updates: Vec::new(),
    };
    for projection in &projections.inline {
        projection.plan(&mut ctx).await?;
    }
    // Two projections that read a stream at different versions met a stale cache
    // entry, or a racing append between two locked reads.
    let required =
        match requirements::merge(ctx.requirements.drain(..), !ctx.cache_hits.is_empty())? {
            Merge::Required(required) => required,
            Merge::PlanAgain => {
                store.aggregate_cache().forget(&ctx.cache_hits);
                return Ok(Planned::Again);
            }
        };
    for (index, version) in required {
        if let Some(a) = uow.user.append_at_mut(index) {
            if a.requested == AppendKind::Append {
                a.kind = match requirements::assertion(version) {
                    Assertion::Start => AppendKind::Start,
                    Assertion::Expected(v) => AppendKind::Expected(v),
                };
            }
        }
    }
    uow.derived.append(&mut ctx.out);
    *cache_updates = ctx.cache_updates;
    Ok(Planned::Ready)
}

/// The error of a failed apply, naming the projection, the event and its stream.
pub(crate) fn apply_error(
    projection: &'static str,
    event: &EventEnvelope,
    message: String,
) -> Error {
    Error::Apply {
        projection,
        event_type: event.event_type.clone(),
        stream: event.stream_id.clone(),
        version: event.version,
        message,
    }
}

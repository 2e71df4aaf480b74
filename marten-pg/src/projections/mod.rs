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
//! queue up instead of overwriting each other's projected state. The first such read
//! locks the save's tags in its flight, before any row (see `TagsStatement`): every
//! save takes its tags before its rows, or two saves could each hold what the other
//! waits for. An aggregate the store
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
mod reserve;
pub(crate) mod snapshot;
mod stream_order;
pub(crate) mod versioned;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use crate::connection::{Answers, Db, Handle, Pipeline, Request, Rows, Stmt};
use crate::error_map::{map_db_error, Failed};
use futures_util::future::BoxFuture;
use marten_core::concurrency::{VersionOf, WriteOf};
use marten_core::projection::inline::{AppendMetadata, AppendView, Plan, PlanOutput};
use marten_core::projection::requirements::{self, Assertion, Merge};
use marten_core::{Error, Result, Tenancy};
use tokio_postgres::types::ToSql;

pub(crate) use aggregate::{aggregate_stream, Fetched, InlineAggregate};
pub(crate) use event_projection::InlineEventProjection;
pub use event_projection::{EventProjection, OwnedDocuments, ProjectedOps};
pub(crate) use multi_stream::InlineMultiStream;

pub(crate) use marten_core::projection::inline::{advance, apply_error};

use crate::documents::{serialize, PgDocument};
use crate::events::append::AppendKind;
use crate::unit_of_work::SessionState;
use crate::unit_of_work::{OpList, Operation, TagsFirst, UnitOfWork};
use cache::CacheUpdate;
pub(crate) use catalog::ProjectionCatalog;

/// The characters an async projection's or a subscription's name may not hold: the
/// daemon's slot names put them between the name and a shard (`#2/3`) or a tenant
/// (`@acme`), so a name holding one could name another's slot (the builder refuses it).
pub(crate) const SLOT_SEPARATORS: [char; 2] = ['@', '#'];

/// When a projection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// Folded on read only (`aggregate_stream`, `fetch_latest`, `fetch_for_writing`);
    /// with a snapshot policy (the store builder's `snapshot`) the fold starts from the
    /// last snapshot.
    Live,
    /// Written in the same transaction as the append that feeds it. For an aggregate this
    /// is also its snapshot: live aggregation starts from the stored document.
    Inline,
    /// Run by the async daemon.
    Async,
}

/// What the projections of one save plan through on PostgreSQL: the catalog, the save's
/// request on the session's connection, and the list the derived writes are queued on.
/// The planners themselves are marten-core's ([`marten_core::projection::inline`]).
pub(crate) struct Planner<'a, 'r> {
    pub(crate) store: &'a ProjectionCatalog,
    /// The save's request on the session's connection.
    pub(crate) req: &'a mut Request<'r>,
    /// The writes planned.
    pub(crate) out: OpList,
    /// The save's tags, until the first locked read of planning locks them (see
    /// [`TagsFirst`]).
    pub(crate) tags: Option<TagsFirst>,
}

impl Planner<'_, '_> {
    /// Opens the save's transaction now, so that what the projection reads can be locked
    /// until the save commits (the unit of work then sends no `BEGIN` of its own), and
    /// locks the save's tags if no read of planning has yet, in the same flight.
    pub(crate) async fn begin(&mut self) -> Result<()> {
        let begin = !self.req.in_transaction();
        let tags = self.tags.take();
        if !begin && tags.is_none() {
            return Ok(());
        }
        let client = self.req.client();
        let lock = TagsStatement::prepare(client, tags.as_ref()).await?;
        if begin {
            // BEGIN is about to be written.
            self.req.set_in_transaction(true);
        }
        let mut pipe = Pipeline::new(self.req.client(), 2);
        let begun = begin.then(|| pipe.command("BEGIN"));
        let locked = lock.as_ref().map(|l| l.push(&mut pipe));
        let mut answers = pipe.send().await;
        if let Some(Err(e)) = begun.map(|h| answers.take(h)) {
            return Err(map_db_error(e, Failed::Transaction));
        }
        TagsStatement::answer(&mut answers, locked)
    }

    /// The stored version of `stream` for the save's tenant (`None`: no such stream),
    /// read without a lock: only to name the version of an event that failed to apply
    /// when nothing reserved its version (see
    /// [`version_in_save`](marten_core::projection::inline::version_in_save)).
    pub(crate) async fn stream_version(
        &mut self,
        stream: &marten_core::StreamId,
    ) -> Result<Option<i64>> {
        let events: &crate::events::EventCatalog = self.store.as_ref();
        let tenant = crate::event_tenant::EventTenant::of_session(
            events.events_tenancy(),
            self.out.tenant.as_ref(),
        )?;
        let key = crate::stream_key::StreamKey(stream.clone());
        let state =
            crate::events::read::stream_state(events, self.req.client(), &tenant, &key).await?;
        Ok(state.map(|s| s.version))
    }
}

/// The statement of the save's tags that planning locks before its first locked read
/// ([`TagsFirst`]), ready to push on that read's flight, after its `BEGIN`: a save's
/// locks are then taken as every save takes them, its tags before any row (the tag lock
/// that follows, asserting and bumping them, finds them held).
pub(crate) struct TagsStatement<'l> {
    statement: Stmt,
    params: Vec<&'l (dyn ToSql + Sync)>,
}

impl<'l> TagsStatement<'l> {
    /// The statement of `tags`, prepared on `client` (`None` without tags).
    pub(crate) async fn prepare(
        client: Db<'_>,
        tags: Option<&'l TagsFirst>,
    ) -> Result<Option<TagsStatement<'l>>> {
        let Some(tags) = tags else {
            return Ok(None);
        };
        let statement = client
            .statement(tags.sql())
            .await
            .map_err(|e| map_db_error(e, Failed::Reading("tag")))?;
        Ok(Some(TagsStatement {
            statement,
            params: tags.params(),
        }))
    }

    /// Pushes the statement on `pipe`.
    pub(crate) fn push<'p>(&'p self, pipe: &mut Pipeline<'p>) -> Handle<Rows> {
        pipe.query(&self.statement, &self.params)
    }

    /// The answer of the statement pushed (`locked`), a failure as a read of the tags
    /// (a deadlock lost: [`Error::Conflict`], and the save is planned again).
    pub(crate) fn answer(answers: &mut Answers, locked: Option<Handle<Rows>>) -> Result<()> {
        match locked.map(|h| answers.take(h)) {
            Some(Err(e)) => Err(map_db_error(e, Failed::Reading("tag"))),
            _ => Ok(()),
        }
    }
}

impl<D: PgDocument> PlanOutput<D> for Planner<'_, '_> {
    fn serialize(doc: &D) -> Result<Vec<u8>> {
        serialize(doc)
    }

    fn write(
        &mut self,
        kind: WriteOf<D>,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        self.out.push_derived_write::<D>(kind, id, json, expected);
    }

    fn delete(&mut self, id: D::Id) {
        self.out.push_delete::<D>(id);
    }
}

/// The plan of one save attempt, with the session's state.
pub(crate) type SavePlan<'a> = Plan<'a, UnitOfWork>;

/// A projection run inside `save_changes`. Type-erased so a store can hold many.
pub(crate) trait InlineProjection: Send + Sync {
    /// Whether the projection reads the metadata of an event among `appends` (its
    /// envelope): the save then reserves the sequences and versions the envelopes carry
    /// (see [`reserve`]).
    fn uses_metadata(&self, appends: &[AppendView]) -> bool;

    /// The document type the projection writes, when it is known before planning (an
    /// aggregate's, a multi-stream projection's): a session over a caller's pool makes
    /// sure of its table before it takes its connection for the save, so planning never
    /// waits for a second connection of that pool. `None`: an event projection, whose
    /// documents are known once planned (but for those it owns, see
    /// [`owned_documents`](Self::owned_documents)).
    fn document(&self) -> Option<(std::any::TypeId, crate::schema::MigrateFn)> {
        None
    }

    /// The document types an event projection owns
    /// ([`EventProjection::owned_documents`]), with their tables' migrations: known
    /// before planning, as [`document`](Self::document) is, and made sure of the same way
    /// by a session over a caller's pool. The other types an event projection writes are
    /// known once planned. None by default.
    fn owned_documents(&self) -> &[(std::any::TypeId, crate::schema::MigrateFn)] {
        &[]
    }

    /// The documents the projection keeps per stream, keyed by the stream's id (a
    /// single-stream aggregate's): a delete of a stream deletes its document with it (see
    /// [`snapshot::queue_deletes`]). `None` by default: a multi-stream or event
    /// projection's documents are no one stream's.
    fn stream_documents(&self) -> Option<&Arc<snapshot::StreamDocuments>> {
        None
    }

    fn plan<'a>(
        &'a self,
        plan: &'a mut SavePlan<'_>,
        pg: &'a mut Planner<'_, '_>,
    ) -> BoxFuture<'a, Result<()>>;
}

/// The projections a store knows.
#[derive(Default, Clone)]
pub(crate) struct ProjectionRegistry {
    pub(crate) lifecycles: HashMap<TypeId, Lifecycle>,
    pub(crate) inline: Vec<Arc<dyn InlineProjection>>,
    pub(crate) asynchronous: Vec<Arc<dyn asynchronous::AsyncProjection>>,
    /// The snapshot policies of live aggregates, by aggregate type.
    pub(crate) snapshots: HashMap<TypeId, Arc<snapshot::SnapshotPolicy>>,
}

impl ProjectionRegistry {
    pub(crate) fn lifecycle(&self, type_id: TypeId) -> Option<Lifecycle> {
        self.lifecycles.get(&type_id).copied()
    }

    /// The async projections the daemon cannot run over events of `tenancy` (an event
    /// projection owning a type every tenant shares, with conjoined events), each with
    /// the [`Error::Configuration`] that names it and says why. The daemon refuses them
    /// when it starts.
    pub(crate) fn refused_with(&self, tenancy: Tenancy) -> Vec<(&'static str, Error)> {
        self.asynchronous
            .iter()
            .filter_map(|p| Some((p.name(), Error::Configuration(p.refused_with(tenancy)?))))
            .collect()
    }

    /// The snapshot policy of a live aggregate type (none for an inline or async one,
    /// whose document the projection writes).
    pub(crate) fn snapshot(&self, type_id: TypeId) -> Option<&Arc<snapshot::SnapshotPolicy>> {
        match self.lifecycle(type_id) {
            Some(Lifecycle::Inline | Lifecycle::Async) => None,
            _ => self.snapshots.get(&type_id),
        }
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

/// Whether a save to `store` has inline projections to plan: without any, a save skips
/// the planning step (and its bounded wait) altogether.
pub(crate) fn has_inline(store: &ProjectionCatalog) -> bool {
    !store.projections().inline.is_empty()
}

/// Plans every inline projection of the store for the session's pending appends and
/// queues their writes as the unit of work's derived operations. `use_cache`: whether
/// the store's aggregate cache may stand in for locked reads (see [`cache`]). `tags`:
/// the save's tags, locked by the first read of planning that locks rows, in its flight
/// (see [`TagsStatement`]).
pub(crate) async fn plan_inline(
    store: &ProjectionCatalog,
    req: &mut Request<'_>,
    uow: &mut UnitOfWork,
    state: &mut SessionState,
    use_cache: bool,
    cache_updates: &mut Vec<CacheUpdate>,
    tags: Option<TagsFirst>,
) -> Result<Planned> {
    let projections = store.projections();
    if projections.inline.is_empty() {
        return Ok(Planned::Ready);
    }
    let mut appends = append_views(store, uow)?;
    if appends.is_empty() {
        return Ok(Planned::Ready);
    }
    // Projections read the event tables before the appends create them.
    crate::events::read::ensure(store.as_ref()).await?;
    // Taken by the first read of planning that locks rows (none may).
    let mut tags = tags;
    let reserved = if projections.inline.iter().any(|p| p.uses_metadata(&appends)) {
        Some(reserve::reserve(store, req, uow, &mut appends, &mut tags).await?)
    } else {
        None
    };
    let unlocked = reserved.as_ref().is_some_and(|r| r.unlocked);
    let mut plan = Plan {
        appends: &appends,
        state,
        requirements: reserved.map(|r| r.requirements).unwrap_or_default(),
        use_cache,
        tenant: uow.user.tenant.clone(),
        cache: store.aggregate_cache(),
        cache_hits: Vec::new(),
        cache_updates: Vec::new(),
    };
    let mut pg = Planner {
        store,
        req,
        out: OpList::for_tenant(uow.user.tenant.clone()),
        tags,
    };
    for projection in &projections.inline {
        projection.plan(&mut plan, &mut pg).await?;
    }
    // Two projections that read a stream at different versions met a stale cache
    // entry, a stream created after the reservation found it missing, or a racing
    // append between two locked reads.
    let stale = !plan.cache_hits.is_empty() || unlocked;
    let required = match requirements::merge(plan.requirements.drain(..), stale)? {
        Merge::Required(required) => required,
        Merge::PlanAgain => {
            store.aggregate_cache().forget(&plan.cache_hits);
            return Ok(Planned::Again);
        }
    };
    assert_versions(uow, required);
    uow.derived.append(&mut pg.out);
    *cache_updates = plan.cache_updates;
    Ok(Planned::Ready)
}

/// Makes each plain append with a required version assert it.
fn assert_versions(uow: &mut UnitOfWork, required: requirements::Required) {
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
}

/// Whether `T` handles an event among `appends`.
fn handles_any<T: marten_core::Apply>(appends: &[AppendView]) -> bool {
    appends
        .iter()
        .any(|a| a.events.iter().any(|e| T::handles(e.as_ref())))
}

/// The session's pending appends as the projections see them: owned views with the
/// events' metadata, each event as a read of it gives it back (an event appended under
/// an upcaster's old name upcast from its encoded JSON, see
/// [`EventRegistry::read_back`](crate::events::registry::EventRegistry::read_back)).
///
/// An append to a stream that a later command of the same save deletes is left out: its
/// events are gone when the save commits (as a daemon would never see them), and a
/// document projected from them would outlive the stream the delete took its documents
/// from.
fn append_views(store: &ProjectionCatalog, uow: &UnitOfWork) -> Result<Vec<AppendView>> {
    let events: &crate::events::EventCatalog = store.as_ref();
    uow.user
        .appends()
        .filter(|(index, a)| !uow.user.deleted_after(*index, &a.stream))
        .map(|(index, a)| {
            let read_back =
                events.with_registry(|r| r.read_back(&a.stream.0, &a.types, &a.events, &a.data))?;
            let mut view = view(
                index,
                a,
                uow,
                read_back.unwrap_or_else(|| a.events.to_vec()),
            );
            // The first plain append after a delete of its stream in the same save starts
            // the stream anew: its aggregate is folded from nothing, at no version read
            // before the delete.
            if view.kind == AppendKind::Append && uow.user.first_after_delete(index, &a.stream) {
                view.kind = AppendKind::Start;
            }
            Ok(view)
        })
        .collect()
}

/// The view of append `a` at `index` of `uow`, with `events` as the projections see them.
fn view(
    index: usize,
    a: &crate::unit_of_work::append::StreamAppend,
    uow: &UnitOfWork,
    events: Vec<Arc<dyn marten_core::AnyEvent>>,
) -> AppendView {
    AppendView {
        index,
        stream: a.stream.0.clone(),
        kind: a.requested,
        ids: a.ids.to_vec(),
        types: a.types.to_vec(),
        events,
        metadata: AppendMetadata {
            tenant: uow.user.tenant.clone(),
            correlation_ids: a.correlation_ids.to_vec(),
            causation_ids: a.causation_ids.to_vec(),
            headers: a
                .headers
                .iter()
                .map(|h| h.as_ref().and_then(|h| serde_json::from_slice(&h.0).ok()))
                .collect(),
        },
        reserved: None,
    }
}

//! Event projections: arbitrary document operations per event, and their two runners:
//! inline ([`InlineEventProjection`], in a save) and async ([`AsyncEventProjection`], in
//! the daemon).
//!
//! With conjoined events the daemon runs an async event projection per tenant, each
//! tenant's runner committing on its own. A document type every tenant shares (not
//! conjoined) written by two tenants' runners would end as whichever commits last, not as
//! the events' order says; so a projection writes such a type only if it says that no
//! document of it comes from two tenants' events
//! ([`EventProjection::shared_documents_per_tenant`]): the daemon refuses one that owns
//! such a type when it starts, and a write of one from a tenant's runner otherwise
//! ([`ProjectedOps`] remembers the refusal, the event's failure).

use std::any::TypeId;

use futures_util::future::BoxFuture;
use marten_core::projection::inline::{name_version, AppendView};
use marten_core::session::check_id;
use marten_core::tenant::require_tenant;
use marten_core::{
    ApplyError, DocumentId, Error, EventEnvelope, Result, Tenancy, TenantId, WithSources,
};

use super::asynchronous::{AsyncProjection, Batch};
use super::{apply_error, InlineProjection, Planner, SavePlan};

// For the daemon's runner, which plans every batch within it (`stream_order`, where it
// lives, is private to the projections layer).
pub(crate) use super::stream_order::planning;
use crate::connection::Db;
use crate::documents::serialize;
use crate::documents::{conjoined, BasicWrite, PgDocument};
use crate::unit_of_work::OpList;

/// A projection that turns each event into document operations of its choosing.
///
/// `apply` gets the event and an owned [`ProjectedOps`] buffer; it cannot reach the
/// session. Register it with `DocumentStoreBuilder::event_projection`.
pub trait EventProjection: Send + Sync + 'static {
    /// A name for errors and logs.
    fn name(&self) -> &'static str;
    /// Queues the document operations for one event.
    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError>;

    /// Whether `apply` reads the envelope's global sequence, transaction id or, for a
    /// plain append, stream version: run inline, the save then reserves them before it
    /// plans, so the envelopes carry the values stored (one more round trip). `true`
    /// unless overridden; return `false` when `apply` reads only the event and the
    /// metadata appended with it.
    fn uses_metadata(&self) -> bool {
        true
    }

    /// Declares the document types the projection owns: a rebuild of the projection (run
    /// async) deletes their documents before it replays (a conjoined type's of the
    /// rebuilt tenant only, with `rebuild_tenant`), as it deletes an aggregate's. None by
    /// default: the documents of a projection that declares none survive a rebuild and
    /// the replay runs over them (right for documents the projection only adds to, or
    /// shares with other writers).
    ///
    /// Their tables are made sure of before the projection's writes are planned (by the
    /// daemon's runner, or by a save that appends, run inline) rather than once planned.
    /// Over a caller's pool this matters inline: a save makes the tables of the types an
    /// inline event projection writes but neither owns nor the builder registers on a
    /// second connection of that pool while it holds one (see the README's connection
    /// pools).
    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        let _ = owned;
    }

    /// Whether each document the projection writes of a type every tenant shares (not
    /// conjoined) is written from the events of one tenant only: its id names the event
    /// (`event.id`) or the tenant, never something two tenants' events both name. `false`
    /// unless overridden.
    ///
    /// It matters only with conjoined events, where the daemon runs an async event
    /// projection per tenant (each tenant's runner reads, applies and commits on its own,
    /// in its own order): a shared document written from two tenants' events would end as
    /// the runner that commits last wrote it, not as the later event says. So, unless this
    /// returns `true`, the daemon refuses the projection when it starts if it owns such a
    /// type (see [`owned_documents`](Self::owned_documents)), and otherwise refuses each
    /// write of one from a tenant's runner, as the failure of the event that wrote it
    /// (the poison policy meets it; nothing of that event is written). To keep one
    /// document shared by every tenant in event order, make its type conjoined (a document
    /// per tenant) or register the projection inline (written in each append's
    /// transaction). Inline, and with single-tenant events, this changes nothing.
    fn shared_documents_per_tenant(&self) -> bool {
        false
    }
}

/// Deletes a projection's documents of one type for a rebuild: every one, or `tenant`'s
/// of a conjoined type.
pub(crate) type ClearFn =
    for<'a> fn(crate::connection::Db<'a>, Option<&'a TenantId>) -> BoxFuture<'a, Result<()>>;

/// The document types an [`EventProjection`] owns (see
/// [`EventProjection::owned_documents`]).
#[derive(Default)]
pub struct OwnedDocuments {
    pub(crate) clears: Vec<(&'static str, ClearFn)>,
    /// The owned types every tenant shares (not conjoined), by document type name.
    pub(crate) shared: Vec<&'static str>,
    /// The owned types' tables, made sure of before the projection's writes are planned
    /// (see [`AsyncProjection::documents`](super::asynchronous::AsyncProjection::documents)
    /// and [`InlineProjection::documents`]).
    pub(crate) schemas: Vec<(std::any::TypeId, crate::schema::MigrateFn)>,
}

impl OwnedDocuments {
    /// Marks `D`'s documents as the projection's: a rebuild deletes them.
    pub fn document<D: PgDocument>(&mut self) -> &mut Self {
        if !self.clears.iter().any(|(t, _)| *t == D::TABLE_NAME) {
            self.clears
                .push((D::TABLE_NAME, super::asynchronous::clear_if_made::<D>));
            self.schemas.push((
                std::any::TypeId::of::<D>(),
                crate::documents::migrate_fn::<D>(),
            ));
            if !conjoined::<D>() {
                self.shared.push(D::DOCUMENT_TYPE);
            }
        }
        self
    }
}

/// Why event projection `projection` may not write documents of `document_type`, a type
/// every tenant shares, from a tenant's runner (see
/// [`EventProjection::shared_documents_per_tenant`]): a write from `tenant`'s runner, or
/// (`None`) the refusal of a projection that owns the type.
pub(crate) fn shared_type_refused(
    projection: &str,
    document_type: &str,
    tenant: Option<&TenantId>,
) -> String {
    let what = match tenant {
        Some(t) => format!(
            "event projection {projection} wrote {document_type} from tenant {t}'s runner, \
             but {document_type} is a document type every tenant shares (not conjoined)"
        ),
        None => format!(
            "async event projection {projection} owns {document_type}, a document type \
             every tenant shares (not conjoined), and does not say that each is one \
             tenant's"
        ),
    };
    format!(
        "{what}; with conjoined events the daemon runs the projection per tenant, each \
         tenant's runner committing on its own, so a {document_type} written from two \
         tenants' events would end as whichever runner commits last, not as the events' \
         order says. Make {document_type} conjoined (#[document(tenancy = \"conjoined\")], \
         a document per tenant), register the projection inline, or, if no \
         {document_type} is written from two tenants' events (its id names the event or \
         the tenant), say so with EventProjection::shared_documents_per_tenant"
    )
}

/// Document operations an [`EventProjection`] queues; written in the same transaction as
/// the events.
#[derive(Default)]
pub struct ProjectedOps {
    pub(crate) list: OpList,
    error: Option<Error>,
    /// A tenant's runner of this event projection (conjoined events), which may not write
    /// documents every tenant shares (see [`EventProjection::shared_documents_per_tenant`]).
    refuses_shared: Option<&'static str>,
}

impl ProjectedOps {
    /// An empty buffer whose conjoined documents belong to `tenant` (the tenant of the
    /// events projected).
    pub(crate) fn for_tenant(tenant: Option<&TenantId>) -> Self {
        ProjectedOps {
            list: OpList::for_tenant(tenant.cloned()),
            error: None,
            refuses_shared: None,
        }
    }

    /// The buffer of the daemon's runner of event projection `projection` over the events
    /// of `tenant` (every tenant's, for `None`): with a tenant, and unless `shared` (the
    /// projection's [`EventProjection::shared_documents_per_tenant`]), a write of a type
    /// every tenant shares is refused ([`Error::Configuration`], the event's failure).
    pub(crate) fn for_runner(
        projection: &'static str,
        tenant: Option<&TenantId>,
        shared: bool,
    ) -> Self {
        ProjectedOps {
            refuses_shared: (tenant.is_some() && !shared).then_some(projection),
            ..ProjectedOps::for_tenant(tenant)
        }
    }

    /// Stores (upserts) a document. A conjoined document type needs the events' tenant:
    /// without one (single-tenant events) the batch fails with
    /// [`Error::TenantRequired`] naming the type, before anything is sent. A type every
    /// tenant shares, written by the daemon's runner of one tenant's events, is refused
    /// unless the projection says its documents of it are each one tenant's (see
    /// [`EventProjection::shared_documents_per_tenant`]).
    pub fn store<D: PgDocument>(&mut self, mut doc: D) {
        if !self.has_tenant_for::<D>() {
            return;
        }
        if let Err(reason) = doc.id_mut().assign_if_empty() {
            self.error.get_or_insert(Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            });
            return;
        }
        match serialize(&doc) {
            Ok(json) => self
                .list
                .push_write::<D>(BasicWrite::Upsert, doc.id().clone(), json, None),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Deletes a document by id (a conjoined type needs a tenant, and a shared type is
    /// refused from a tenant's runner, as for [`store`](Self::store)). An id that cannot name a document (an empty `String`, one
    /// holding a NUL character) fails the batch with [`Error::InvalidId`], as a session's
    /// delete does.
    pub fn delete<D: PgDocument>(&mut self, id: D::Id) {
        if !self.has_tenant_for::<D>() {
            return;
        }
        match check_id::<D>(&id) {
            Ok(()) => self.list.push_delete::<D>(id),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Whether documents of `D` can be written here: a conjoined type needs the events'
    /// tenant, and a tenant's runner that refuses shared types writes no other kind.
    /// Remembers [`Error::TenantRequired`] or [`Error::Configuration`] otherwise.
    fn has_tenant_for<D: PgDocument>(&mut self) -> bool {
        let tenant = self.list.tenant.as_ref();
        let checked = match (self.refuses_shared, conjoined::<D>()) {
            (Some(projection), false) => Err(Error::Configuration(shared_type_refused(
                projection,
                D::DOCUMENT_TYPE,
                tenant,
            ))),
            _ => require_tenant(D::TENANCY, tenant, D::DOCUMENT_TYPE).map(|_| ()),
        };
        match checked {
            Ok(()) => true,
            Err(e) => {
                self.error.get_or_insert(e);
                false
            }
        }
    }

    /// The queued operations, or the first error a `store` met.
    pub(crate) fn into_list(self) -> Result<OpList> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.list),
        }
    }
}

/// Applies one event as the daemon does (an async projection): an error or a panic of
/// the projection, and any error the event's operations met (a conjoined document
/// without the events' tenant, an invalid document id taken from the event, a document
/// that does not serialize or holds text PostgreSQL cannot store), is this event's
/// failure, [`Error::Apply`] naming it, so the daemon's poison policy meets it (planning
/// the batch again would fail the same way).
pub(crate) fn apply_one<P: EventProjection>(
    projection: &P,
    event: &EventEnvelope,
    ops: &mut ProjectedOps,
) -> Result<()> {
    apply_with(projection, event, ops, |_| true)
}

/// Applies one event of a save (an inline projection): an error or a panic of the
/// projection names the event, and so does a conjoined document without the events'
/// tenant; any other error of the operations is the save's, reported as it is once
/// every event was applied.
fn apply_inline<P: EventProjection>(
    projection: &P,
    event: &EventEnvelope,
    ops: &mut ProjectedOps,
) -> Result<()> {
    apply_with(projection, event, ops, |e| {
        matches!(e, Error::TenantRequired { .. })
    })
}

/// Applies one event; an error or a panic of the projection names the event, and so
/// does an error of the event's operations that `of_the_event` says is the event's.
fn apply_with<P: EventProjection>(
    projection: &P,
    event: &EventEnvelope,
    ops: &mut ProjectedOps,
    of_the_event: impl Fn(&Error) -> bool,
) -> Result<()> {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        projection.apply(event, ops)
    }));
    match applied {
        Ok(Ok(())) if ops.error.as_ref().is_some_and(&of_the_event) => {
            let message = ops
                .error
                .take()
                .map(|e| WithSources(&e).to_string())
                .unwrap_or_default();
            Err(apply_error(projection.name(), event, message))
        }
        Ok(result) => result.map_err(|e| apply_error(projection.name(), event, e.message)),
        Err(panic) => Err(apply_error(
            projection.name(),
            event,
            marten_core::aggregate::panic_message(&*panic),
        )),
    }
}

/// The inline runner of an [`EventProjection`], with the tables of the types it owns.
pub(crate) struct InlineEventProjection<P> {
    projection: P,
    /// The tables of the types the projection owns ([`EventProjection::owned_documents`]).
    owned: Vec<(std::any::TypeId, crate::schema::MigrateFn)>,
}

impl<P: EventProjection> InlineEventProjection<P> {
    /// The inline runner of `projection`.
    pub(crate) fn new(projection: P) -> Self {
        let mut owned = OwnedDocuments::default();
        projection.owned_documents(&mut owned);
        InlineEventProjection {
            projection,
            owned: owned.schemas,
        }
    }
}

impl<P: EventProjection> InlineProjection for InlineEventProjection<P> {
    fn uses_metadata(&self, appends: &[AppendView]) -> bool {
        self.projection.uses_metadata() && appends.iter().any(|a| !a.events.is_empty())
    }

    fn owned_documents(&self) -> &[(std::any::TypeId, crate::schema::MigrateFn)] {
        &self.owned
    }

    fn plan<'a>(
        &'a self,
        plan: &'a mut SavePlan<'_>,
        pg: &'a mut Planner<'_, '_>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut ops = ProjectedOps::for_tenant(pg.out.tenant.as_ref());
            for append in plan.appends {
                for event in append.asserted_envelopes()? {
                    if let Err(e) = apply_inline(&self.projection, &event, &mut ops) {
                        let stored = pg.stream_version(&event.stream_id);
                        return Err(name_version(e, plan.appends, &event, stored).await);
                    }
                }
            }
            if let Some(e) = ops.error {
                return Err(e);
            }
            for op in ops.list.operations() {
                let (type_id, migrate) = op.target().schema;
                pg.store.ensure_erased(type_id, migrate).await?;
            }
            pg.out.append(&mut ops.list);
            Ok(())
        })
    }
}

/// The async runner of an event projection: its document operations per event, in event
/// order (event projections are not split into slices or shards: their operations may
/// depend on order across streams, and any stream's events may write any document), and
/// the document types it owns (cleared by a rebuild).
pub(crate) struct AsyncEventProjection<P> {
    projection: P,
    owned: Vec<(&'static str, ClearFn)>,
    /// The owned types' tables (see [`AsyncProjection::documents`]).
    schemas: Vec<(TypeId, crate::schema::MigrateFn)>,
    /// The owned types every tenant shares (not conjoined).
    shared: Vec<&'static str>,
    /// The projection's `shared_documents_per_tenant`.
    shared_per_tenant: bool,
}

impl<P: crate::projections::EventProjection> AsyncEventProjection<P> {
    pub(crate) fn new(projection: P) -> Self {
        let mut owned = OwnedDocuments::default();
        projection.owned_documents(&mut owned);
        let shared_per_tenant = projection.shared_documents_per_tenant();
        AsyncEventProjection {
            projection,
            owned: owned.clears,
            shared: owned.shared,
            schemas: owned.schemas,
            shared_per_tenant,
        }
    }
}

impl<P: crate::projections::EventProjection> AsyncProjection for AsyncEventProjection<P> {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn plan<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<OpList>> {
        let Batch {
            events,
            hooks,
            tenant,
            ..
        } = batch;
        let name = self.projection.name();
        Box::pin(async move {
            let mut ops =
                crate::projections::ProjectedOps::for_runner(name, tenant, self.shared_per_tenant);
            for e in events {
                hooks.before_event(self.projection.name(), e);
                apply_one(&self.projection, e, &mut ops)?;
                hooks.after_event(self.projection.name(), e);
            }
            // The tables of its writes are made sure of by the daemon, once the runner's
            // connection is set aside: over a caller's pool their connection comes out of
            // the pool the runner holds one of.
            ops.into_list()
        })
    }

    /// The types it owns; the others it writes are known once a batch is planned.
    fn documents(&self) -> Vec<(TypeId, crate::schema::MigrateFn)> {
        self.schemas.clone()
    }

    /// Deletes the documents of the types it owns; the others survive and the replay
    /// runs over them.
    fn clear<'a>(
        &'a self,
        client: Db<'a>,
        tenant: Option<&'a TenantId>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for (_, clear) in &self.owned {
                clear(client, tenant).await?;
            }
            Ok(())
        })
    }

    /// Never: any stream's events may write any document, and two shards writing one
    /// document would leave it as the one that commits last wrote it.
    fn shardable(&self) -> bool {
        false
    }

    fn unshardable_because(&self) -> &'static str {
        "it is an event projection, whose events of any stream may write any document: two \
         shards, each committing on its own, could write one document, which would end as \
         the shard that commits last wrote it, not as the events' order says. Run it whole \
         (without a shard count), or split the work of documents kept per id into a \
         multi-stream projection (sharded by document id) or an aggregate (by stream)"
    }

    /// With conjoined events, an owned type every tenant shares, unless the projection
    /// says each such document is one tenant's.
    fn refused_with(&self, tenancy: Tenancy) -> Option<String> {
        let shared = self.shared.first()?;
        (tenancy == Tenancy::Conjoined && !self.shared_per_tenant)
            .then(|| shared_type_refused(self.projection.name(), shared, None))
    }
}

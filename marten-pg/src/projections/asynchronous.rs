//! Async projections, the kinds the daemon runs: an async projection plans the writes of
//! a batch of events. An aggregate projection splits the batch into slices by stream (each
//! in its stream's version order, see `stream_order`), a multi-stream projection by
//! document (each stream's events within a slice in version order), folds the slices in
//! parallel on tasks that own their state and events, and returns the writes; an event
//! projection applies its events in the global order (its runner is with the event
//! projections, `event_projection.rs`). The daemon's runner, the one
//! writer, commits the writes with its progress update.
//!
//! Sharded (the daemon runs one shard of a projection per runner): an aggregate gets only
//! the events of its shard's streams; a multi-stream projection's events are those that
//! slice to a document of its shard, and its slicing keeps only those documents' slices
//! ([`Batch::shard`]). Each document is then written by one shard, in the order of its
//! events. An event projection is not sharded ([`AsyncProjection::shardable`]): it may
//! write any document from any stream's events, so two shards could write one document,
//! each committing on its own, and the document would end as the one that commits last
//! wrote it rather than as the events' order says.
//!
//! Per tenant (conjoined events, one runner per tenant): an event projection may write a
//! type every tenant shares only if it says each such document is one tenant's (see
//! [`EventProjection::shared_documents_per_tenant`](super::EventProjection::shared_documents_per_tenant));
//! the daemon refuses it when it starts if it owns one ([`AsyncProjection::refused_with`]),
//! and a tenant's runner refuses each write of one otherwise. Aggregates and multi-stream
//! projections of a shared type are refused when the store is built.
//!
//! May use: the documents and events layers, the unit of work's operation list, the
//! session's loaders and the store (to make sure tables exist). It does not know the
//! daemon: the daemon's hooks reach it as [`EventHooks`].

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;

use crate::connection::Db;
use futures_util::future::BoxFuture;
use marten_core::aggregate::{fold, identities_of};
use marten_core::projection::shard::Shard;
use marten_core::projection::slice::{self, SliceWrite};
use marten_core::projection::stream_order::each_stream_in_order;
use marten_core::{
    Aggregate, AggregateId, Document, DocumentId, Error, EventEnvelope, Result, StreamId, Tenancy,
    TenantId,
};

use super::stream_order::in_stream_order;
use super::ProjectionCatalog;
use crate::documents::load;
use crate::documents::serialize;
use crate::documents::{conjoined, BasicWrite, DocumentStorage, PgDocument};
use crate::error_map::{map_db_error, Failed};
use crate::projections::apply_error;
use crate::unit_of_work::OpList;

/// Called around every event a projection applies (the daemon forwards these to its
/// hooks).
pub(crate) trait EventHooks: Send + Sync {
    /// `event` is about to be applied by `projection`.
    fn before_event(&self, projection: &str, event: &EventEnvelope);
    /// `projection` applied `event` (its writes are not committed yet).
    fn after_event(&self, projection: &str, event: &EventEnvelope);
}

/// A batch of events the daemon asks a projection to plan, with what planning uses.
#[derive(Clone, Copy)]
pub(crate) struct Batch<'a> {
    /// The projection catalog (to make sure tables exist, to read and to decode).
    pub(crate) store: &'a ProjectionCatalog,
    /// The runner's connection.
    pub(crate) client: Db<'a>,
    /// The events, in global order.
    pub(crate) events: &'a [EventEnvelope],
    /// How many slices are folded at once.
    pub(crate) workers: usize,
    /// Told before and after each event is applied.
    pub(crate) hooks: &'a dyn EventHooks,
    /// The tenant whose events these are, when the daemon runs the projection per tenant
    /// (conjoined events): conjoined documents are read and written under it.
    pub(crate) tenant: Option<&'a TenantId>,
    /// The shard the daemon runs, for a sharded projection: a multi-stream projection
    /// folds only the documents of this shard.
    pub(crate) shard: Option<Shard>,
    /// Events of the batch left out of `events` while planning it (dead-lettered): an
    /// aggregate counts their versions as seen and never folds them.
    pub(crate) left_out: &'a [(StreamId, i64)],
    /// Events left out that the batch did not see (when the daemon plans a run of a
    /// page's first events, those of the page that may come after the run): an aggregate
    /// never folds them when a read of a hole meets them, but does not count their
    /// versions as seen (its document is not taken past them on their account).
    pub(crate) passed_over: &'a [(StreamId, i64)],
}

/// A projection the daemon runs. Type-erased so a store can hold many.
pub(crate) trait AsyncProjection: Send + Sync {
    /// The projection's name (its document type, or the event projection's name): the
    /// key of its progression row and of its advisory lock.
    fn name(&self) -> &'static str;
    /// The writes of a batch (the events are in global order). Planning makes sure of no
    /// table the writes need but those of [`documents`](Self::documents), which it may
    /// read: the daemon makes sure of the writes' tables once the batch is planned, with
    /// the runner's connection set aside over a caller's pool.
    fn plan<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<OpList>>;
    /// The document types the projection is known to write before any batch is planned
    /// (an aggregate's or multi-stream projection's document, the types an event
    /// projection owns), each with its table's migration: the daemon makes sure of their
    /// tables before it takes the runner's connection to plan, so that over a caller's
    /// pool the schema work, whose connection comes out of the same pool, never waits
    /// for the runner's. None by default.
    fn documents(&self) -> Vec<(TypeId, crate::schema::MigrateFn)> {
        Vec::new()
    }
    /// Deletes the projection's documents (for a rebuild): every one, or those of
    /// `tenant` when its documents are conjoined and the rebuild is of one tenant.
    fn clear<'a>(
        &'a self,
        client: Db<'a>,
        tenant: Option<&'a TenantId>,
    ) -> BoxFuture<'a, Result<()>>;
    /// The document table the projection writes alone (aggregate and multi-stream
    /// projections), which a blue/green build can project into a table of its own.
    fn document_table(&self) -> Option<DocumentTable> {
        None
    }
    /// The projection's version (see [`super::versioned`]); 1 unless registered with
    /// another.
    fn version(&self) -> u32 {
        crate::tables::versions::FIRST_VERSION
    }
    /// Whether the daemon may split the projection into shards: an aggregate (by stream)
    /// or a multi-stream projection (by document), each of whose documents one shard
    /// writes; not an event projection or a subscription (see
    /// [`unshardable_because`](Self::unshardable_because)).
    fn shardable(&self) -> bool {
        false
    }
    /// Why the daemon does not split the projection into shards (asked when it is not
    /// [`shardable`](Self::shardable)): for the error that refuses a shard count.
    fn unshardable_because(&self) -> &'static str {
        "a subscription's handler is given its events in order, by one runner"
    }
    /// Why the daemon cannot run the projection over events of `tenancy` (`None`: it
    /// can), asked when the daemon starts; the projection is then not run.
    fn refused_with(&self, tenancy: Tenancy) -> Option<String> {
        let _ = tenancy;
        None
    }
    /// Whether planning reads more of an event than its sequence, stream, version, type,
    /// data and transaction id (its id, timestamp, correlation or causation id, headers,
    /// tenant): `true` but for an aggregate whose apply methods take no metadata. The
    /// daemon reads pages lean for a projection that does not.
    fn reads_metadata(&self) -> bool {
        true
    }
    /// Whether `event` is one of `shard`'s: by default (an aggregate), whether its stream
    /// is.
    fn in_shard(&self, event: &EventEnvelope, shard: Shard) -> bool {
        shard.owns(&event.stream_id.key())
    }
    /// Whether the projection handles events of the Rust type `type_id` (current name
    /// `name`): asked of events that cannot be decoded, which the poison policy meets
    /// only for a projection that would have used them. `true` unless the projection
    /// knows its types.
    fn handles_type(&self, _type_id: TypeId, _name: &'static str) -> bool {
        true
    }
}

/// Whether `D`'s apply methods take events of type `type_id`; `true` when it lists no
/// types (an apply implemented by hand that does not say).
fn applies_type<D: marten_core::Apply>(type_id: TypeId) -> bool {
    let types = D::event_types();
    types.is_empty() || types.iter().any(|d| d.type_id == type_id)
}

/// The document table of a projection: its name and its definition.
#[derive(Clone, Copy)]
pub(crate) struct DocumentTable {
    /// The table's name (unqualified): the one its readers use.
    pub(crate) name: &'static str,
    /// Its definition (columns, indexes), for the table a new version is built into.
    pub(crate) def: fn() -> crate::tables::def::TableDef,
}

impl DocumentTable {
    /// `D`'s table.
    fn of<D: PgDocument>() -> Option<Self> {
        Some(DocumentTable {
            name: D::TABLE_NAME,
            def: <D::Storage as DocumentStorage<D>>::table_def,
        })
    }
}

/// The async runner of aggregate `A`.
pub(crate) struct AsyncAggregate<A>(PhantomData<fn() -> A>);

impl<A> AsyncAggregate<A> {
    pub(crate) fn new() -> Self {
        AsyncAggregate(PhantomData)
    }
}

/// One slice, owned by the worker: the document's id, its current state, the new events
/// to fold, and (an aggregate's) the stream version the document records after the fold
/// (0: the last folded event's).
pub(super) type Slice<A> = (<A as Document>::Id, Option<A>, Vec<EventEnvelope>, i64);

/// What a worker returns per slice: the id, whether a document existed, the new state.
type Folded<A> = (<A as Document>::Id, bool, Option<A>);

/// Folds one slice's events into its state; `stamp` runs after each event (an aggregate
/// records the event's version). The folded state keeps the slice's id.
fn fold_with<D: marten_core::Apply + PgDocument>(
    slice: Slice<D>,
    stamp: impl Fn(&mut D, &EventEnvelope),
) -> Result<Folded<D>> {
    let (id, start, events, _) = slice;
    let existed = start.is_some();
    let mut state = fold(start, &events, stamp)
        .map_err(|(err, i)| apply_error(D::DOCUMENT_TYPE, &events[i], err.message))?;
    if let Some(s) = state.as_mut() {
        *s.id_mut() = id.clone();
    }
    Ok((id, existed, state))
}

/// Folds an aggregate's slice (its events in version order, see `stream_order`) and
/// records the highest version the batch saw of its stream.
fn fold_slice<A: Aggregate + PgDocument>(slice: Slice<A>) -> Result<Folded<A>> {
    let through = slice.3;
    let (id, existed, mut state) = fold_with(slice, |s: &mut A, e| s.set_version(e.version))?;
    if let Some(s) = state.as_mut().filter(|s| s.version() < through) {
        s.set_version(through);
    }
    Ok((id, existed, state))
}

/// The first half of planning a batch in slices: the events `D` handles grouped to
/// document ids by `key`, with the current documents loaded; `before_event` told of
/// every event. Empty when no event feeds a document. The first event `key` fails for
/// (a multi-stream projection's identity method that panicked) fails the batch with its
/// error.
pub(super) async fn loaded_slices<D: marten_core::Apply + PgDocument>(
    batch: Batch<'_>,
    key: impl Fn(&EventEnvelope) -> Result<Vec<D::Id>>,
) -> Result<Vec<Slice<D>>> {
    let Batch {
        store,
        client,
        events,
        hooks,
        tenant,
        ..
    } = batch;
    let slices = slice::try_group(events, |e| D::handles(e.data.as_ref()), key)?;
    if slices.is_empty() {
        return Ok(Vec::new());
    }
    store.ensure::<D>().await?;
    let ids: Vec<D::Id> = slices.iter().map(|s| s.id.clone()).collect();
    let mut current: HashMap<D::Id, D> = load::load_many::<D>(client, tenant, &ids)
        .await?
        .into_iter()
        .map(|l| (l.id, l.doc))
        .collect();
    for e in events {
        hooks.before_event(D::DOCUMENT_TYPE, e);
    }
    Ok(slices
        .into_iter()
        .map(|s| {
            let start = current.remove(&s.id);
            (s.id, start, s.events, 0)
        })
        .collect())
}

/// The second half: the slices dealt to `workers` tasks that own their state and events,
/// folded by `fold_one`, and the folded states turned into writes; `after_event` told
/// of every event. The grouping, the dealing and the write each folded state needs are
/// [`marten_core::projection::slice`](mod@marten_core::projection::slice)'s; this runs
/// the loads, the tasks and the writes.
pub(super) async fn folded_slices<D: marten_core::Apply + PgDocument>(
    batch: Batch<'_>,
    slices: Vec<Slice<D>>,
    fold_one: fn(Slice<D>) -> Result<Folded<D>>,
) -> Result<OpList> {
    let mut out = OpList::for_tenant(batch.tenant.cloned());
    if slices.is_empty() {
        return Ok(out);
    }
    let tasks: Vec<tokio::task::JoinHandle<Result<Vec<Folded<D>>>>> =
        slice::deal(slices, batch.workers)
            .into_iter()
            .map(|hand| tokio::spawn(async move { hand.into_iter().map(fold_one).collect() }))
            .collect();
    for task in tasks {
        let folded = task
            .await
            .map_err(|e| Error::Configuration(format!("a projection worker failed: {e}")))??;
        for (id, existed, state) in folded {
            match slice::decide(existed, state) {
                SliceWrite::Upsert(doc) => {
                    out.push_write::<D>(BasicWrite::Upsert, id, serialize(&doc)?, None)
                }
                SliceWrite::Delete => out.push_delete::<D>(id),
                SliceWrite::Nothing => {}
            }
        }
    }
    for e in batch.events {
        batch.hooks.after_event(D::DOCUMENT_TYPE, e);
    }
    Ok(out)
}

impl<A: Aggregate + PgDocument> AsyncProjection for AsyncAggregate<A> {
    fn name(&self) -> &'static str {
        A::DOCUMENT_TYPE
    }

    fn documents(&self) -> Vec<(TypeId, crate::schema::MigrateFn)> {
        vec![(TypeId::of::<A>(), crate::documents::migrate_fn::<A>())]
    }

    fn plan<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<OpList>> {
        // Slices by stream, each in its stream's version order.
        let key = |e: &EventEnvelope| {
            Ok(<A::Id as AggregateId>::from_stream_id(&e.stream_id)
                .into_iter()
                .collect())
        };
        Box::pin(async move {
            let mut slices = loaded_slices::<A>(batch, key).await?;
            in_stream_order(batch, &mut slices).await?;
            folded_slices(batch, slices, fold_slice::<A>).await
        })
    }

    fn clear<'a>(
        &'a self,
        client: Db<'a>,
        tenant: Option<&'a TenantId>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(clear_documents::<A>(client, tenant))
    }

    fn document_table(&self) -> Option<DocumentTable> {
        DocumentTable::of::<A>()
    }

    fn shardable(&self) -> bool {
        true
    }

    /// An aggregate's slices are keyed by stream and folded by its apply methods: it
    /// reads metadata only if they take it.
    fn reads_metadata(&self) -> bool {
        A::USES_METADATA
    }

    fn handles_type(&self, type_id: TypeId, _name: &'static str) -> bool {
        applies_type::<A>(type_id)
    }
}

/// [`clear_documents`] of `D`, if its table was made (an event projection's documents
/// may never have been written).
pub(crate) fn clear_if_made<'a, D: PgDocument>(
    client: Db<'a>,
    tenant: Option<&'a TenantId>,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        // Refused whether or not the table was made: a type shared by every tenant.
        one_tenants_alone::<D>(tenant)?;
        let made: bool = client
            .query_one(TABLE_MADE, &[&D::TABLE_NAME])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| map_db_error(e, Failed::Other("clearing a projection")))?;
        if made {
            clear_documents::<D>(client, tenant).await?;
        }
        Ok(())
    })
}

/// Whether the table `$1` is on the connection's search path.
const TABLE_MADE: &str = "SELECT to_regclass($1::text) IS NOT NULL";

/// Deletes a projection's documents: every one (no `tenant`: a rebuild of every tenant),
/// or `tenant`'s of a conjoined type. One tenant's documents of a type that is not
/// conjoined are shared by every tenant and cannot be told apart: refused with
/// [`Error::Configuration`] before anything is deleted (deleting them all would lose
/// every other tenant's, which only a rebuild of every tenant replays).
async fn clear_documents<D: PgDocument>(client: Db<'_>, tenant: Option<&TenantId>) -> Result<()> {
    one_tenants_alone::<D>(tenant)?;
    let reads = D::storage().reads();
    let clearing = |e| map_db_error(e, Failed::Other("clearing a projection"));
    match tenant {
        Some(t) => client
            .execute(reads.delete_tenant.as_str(), &[&t.as_str()])
            .await
            .map(|_| ())
            .map_err(clearing),
        None => client
            .batch_execute(&reads.delete_all)
            .await
            .map_err(clearing),
    }
}

/// Whether `tenant`'s documents of `D` can be deleted alone (no tenant: every document
/// is): only if `D` is conjoined.
fn one_tenants_alone<D: PgDocument>(tenant: Option<&TenantId>) -> Result<()> {
    match tenant {
        Some(t) if !conjoined::<D>() => Err(Error::Configuration(format!(
            "the documents of {} are shared by every tenant (the type is not conjoined), \
             so tenant {t}'s cannot be deleted alone",
            D::DOCUMENT_TYPE
        ))),
        _ => Ok(()),
    }
}

/// The async runner of multi-stream projection `P`: events grouped to documents by the
/// ids its `identity*` methods return, slices (one per document) folded in parallel.
pub(crate) struct AsyncMultiStream<P>(PhantomData<fn() -> P>);

impl<P> AsyncMultiStream<P> {
    pub(crate) fn new() -> Self {
        AsyncMultiStream(PhantomData)
    }
}

fn fold_document<P: marten_core::Identities + PgDocument>(slice: Slice<P>) -> Result<Folded<P>> {
    fold_with(slice, |_: &mut P, _| {})
}

impl<P: marten_core::Identities + PgDocument> AsyncProjection for AsyncMultiStream<P> {
    fn name(&self) -> &'static str {
        P::DOCUMENT_TYPE
    }

    fn documents(&self) -> Vec<(TypeId, crate::schema::MigrateFn)> {
        vec![(TypeId::of::<P>(), crate::documents::migrate_fn::<P>())]
    }

    fn plan<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<OpList>> {
        // Slices by document, as the projection's identity methods say; a shard keeps
        // its own documents' slices. An identity method that panics is the event's
        // failure, as an apply method's is: the poison policy meets it.
        let shard = batch.shard;
        let key = move |e: &EventEnvelope| {
            let mut ids = identities_of::<P>(e)
                .map_err(|err| apply_error(P::DOCUMENT_TYPE, e, err.message))?;
            if let Some(s) = shard {
                ids.retain(|id| s.owns(&id.key()));
            }
            Ok(ids)
        };
        Box::pin(async move {
            let mut slices = loaded_slices::<P>(batch, key).await?;
            for (_, _, events, _) in &mut slices {
                each_stream_in_order(events, |e| e.stream_id.clone(), |e| e.version);
            }
            folded_slices(batch, slices, fold_document::<P>).await
        })
    }

    fn clear<'a>(
        &'a self,
        client: Db<'a>,
        tenant: Option<&'a TenantId>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(clear_documents::<P>(client, tenant))
    }

    fn document_table(&self) -> Option<DocumentTable> {
        DocumentTable::of::<P>()
    }

    fn shardable(&self) -> bool {
        true
    }

    /// The events that slice to a document of `shard`. An event an identity method
    /// panics on is the shard's of its stream (one shard, as an aggregate's event is):
    /// its planning meets the panic again, and the poison policy meets the event once.
    fn in_shard(&self, event: &EventEnvelope, shard: Shard) -> bool {
        if !P::handles(event.data.as_ref()) {
            return false;
        }
        match identities_of::<P>(event) {
            Ok(ids) => ids.iter().any(|id| shard.owns(&id.key())),
            Err(_) => shard.owns(&event.stream_id.key()),
        }
    }

    fn handles_type(&self, type_id: TypeId, _name: &'static str) -> bool {
        applies_type::<P>(type_id)
    }
}

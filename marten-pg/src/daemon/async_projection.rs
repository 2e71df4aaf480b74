//! What the daemon runs: an async projection plans the writes of a batch of events. An
//! aggregate projection splits the batch into slices by stream, folds the slices in
//! parallel on tasks that own their state and events, and returns the writes; the
//! runner, the one writer, commits them with the progress update.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use deadpool_postgres::Object;
use futures_util::future::BoxFuture;
use marten_core::aggregate::fold;
use marten_core::{Aggregate, AggregateId, Document, Error, EventEnvelope, Result};

use crate::documents::serialize;
use crate::documents::{PgDocument, WriteKind};
use crate::projections::apply_error;
use crate::session::load;
use crate::store::DocumentStore;
use crate::unit_of_work::OpList;

use super::hooks::DaemonHooks;

/// A projection the daemon runs. Type-erased so a store can hold many.
pub(crate) trait AsyncProjection: Send + Sync {
    fn name(&self) -> &'static str;
    /// The writes of a batch (the events are in global order).
    fn plan<'a>(
        &'a self,
        store: &'a DocumentStore,
        client: &'a Object,
        events: &'a [EventEnvelope],
        workers: usize,
        hooks: &'a Arc<dyn DaemonHooks>,
    ) -> BoxFuture<'a, Result<OpList>>;
    /// Deletes every document of the projection (for a rebuild).
    fn clear<'a>(&'a self, client: &'a Object) -> BoxFuture<'a, Result<()>>;
}

/// The async runner of aggregate `A`.
pub(crate) struct AsyncAggregate<A>(PhantomData<fn() -> A>);

impl<A> AsyncAggregate<A> {
    pub(crate) fn new() -> Self {
        AsyncAggregate(PhantomData)
    }
}

/// One slice: a stream's current state and its new events, owned by the worker.
type Slice<A> = (<A as Document>::Id, Option<A>, Vec<EventEnvelope>);

/// What a worker returns per slice: the id, whether a document existed, the new state.
type Folded<A> = (<A as Document>::Id, bool, Option<A>);

fn fold_slice<A: Aggregate>(slice: Slice<A>) -> Result<Folded<A>> {
    let (id, start, events) = slice;
    let existed = start.is_some();
    let mut state = fold(start, &events, |s: &mut A, e| s.set_version(e.version))
        .map_err(|(err, i)| apply_error(A::DOCUMENT_TYPE, &events[i], err.message))?;
    if let Some(s) = state.as_mut() {
        *s.id_mut() = id.clone();
    }
    Ok((id, existed, state))
}

/// Plans a batch in slices: the events `D` handles are grouped to document ids by `key`,
/// the current documents loaded, the slices dealt to `workers` tasks that own their state
/// and events, and the folded states turned into writes.
async fn plan_slices<D: marten_core::Apply + PgDocument>(
    store: &DocumentStore,
    client: &Object,
    events: &[EventEnvelope],
    workers: usize,
    hooks: &Arc<dyn DaemonHooks>,
    key: impl Fn(&EventEnvelope) -> Vec<D::Id>,
    fold_one: fn(Slice<D>) -> Result<Folded<D>>,
) -> Result<OpList> {
    let mut order: Vec<D::Id> = Vec::new();
    let mut slices: HashMap<D::Id, Vec<EventEnvelope>> = HashMap::new();
    for e in events {
        if !D::handles(e.data.as_ref()) {
            continue;
        }
        for id in key(e) {
            slices
                .entry(id.clone())
                .or_insert_with(|| {
                    order.push(id.clone());
                    Vec::new()
                })
                .push(e.clone());
        }
    }
    let mut out = OpList::default();
    if order.is_empty() {
        return Ok(out);
    }
    store.ensure::<D>().await?;
    let mut current: HashMap<D::Id, D> = load::load_many::<D>(client, &order)
        .await?
        .into_iter()
        .map(|l| (l.id, l.doc))
        .collect();
    for e in events {
        hooks.before_event(D::DOCUMENT_TYPE, e);
    }
    let workers = workers.max(1);
    let mut hands: Vec<Vec<Slice<D>>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, id) in order.iter().enumerate() {
        let evs = slices.remove(id).unwrap_or_default();
        hands[i % workers].push((id.clone(), current.remove(id), evs));
    }
    let tasks: Vec<tokio::task::JoinHandle<Result<Vec<Folded<D>>>>> = hands
        .into_iter()
        .filter(|h| !h.is_empty())
        .map(|hand| tokio::spawn(async move { hand.into_iter().map(fold_one).collect() }))
        .collect();
    for task in tasks {
        let folded = task
            .await
            .map_err(|e| Error::Configuration(format!("a projection worker failed: {e}")))??;
        for (id, existed, state) in folded {
            match state {
                Some(doc) => out.push_write::<D>(WriteKind::Upsert, id, serialize(&doc)?, None),
                None if existed => out.push_delete::<D>(id),
                None => {}
            }
        }
    }
    for e in events {
        hooks.after_event(D::DOCUMENT_TYPE, e);
    }
    Ok(out)
}

impl<A: Aggregate + PgDocument> AsyncProjection for AsyncAggregate<A> {
    fn name(&self) -> &'static str {
        A::DOCUMENT_TYPE
    }

    fn plan<'a>(
        &'a self,
        store: &'a DocumentStore,
        client: &'a Object,
        events: &'a [EventEnvelope],
        workers: usize,
        hooks: &'a Arc<dyn DaemonHooks>,
    ) -> BoxFuture<'a, Result<OpList>> {
        // Slices by stream.
        let key = |e: &EventEnvelope| {
            <A::Id as AggregateId>::from_stream_id(&e.stream_id)
                .into_iter()
                .collect()
        };
        Box::pin(plan_slices::<A>(
            store,
            client,
            events,
            workers,
            hooks,
            key,
            fold_slice::<A>,
        ))
    }

    fn clear<'a>(&'a self, client: &'a Object) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            client
                .batch_execute(&format!("DELETE FROM {}", A::TABLE_NAME))
                .await
                .map_err(|e| {
                    crate::error_map::map_db_error(
                        e,
                        crate::error_map::Failed::Other("clearing a projection"),
                    )
                })
        })
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
    let (id, start, events) = slice;
    let existed = start.is_some();
    let mut state = fold(start, &events, |_: &mut P, _| {})
        .map_err(|(err, i)| apply_error(P::DOCUMENT_TYPE, &events[i], err.message))?;
    if let Some(s) = state.as_mut() {
        *s.id_mut() = id.clone();
    }
    Ok((id, existed, state))
}

impl<P: marten_core::Identities + PgDocument> AsyncProjection for AsyncMultiStream<P> {
    fn name(&self) -> &'static str {
        P::DOCUMENT_TYPE
    }

    fn plan<'a>(
        &'a self,
        store: &'a DocumentStore,
        client: &'a Object,
        events: &'a [EventEnvelope],
        workers: usize,
        hooks: &'a Arc<dyn DaemonHooks>,
    ) -> BoxFuture<'a, Result<OpList>> {
        // Slices by document, as the projection's identity methods say.
        Box::pin(plan_slices::<P>(
            store,
            client,
            events,
            workers,
            hooks,
            P::identities,
            fold_document::<P>,
        ))
    }

    fn clear<'a>(&'a self, client: &'a Object) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            client
                .batch_execute(&format!("DELETE FROM {}", P::TABLE_NAME))
                .await
                .map_err(|e| {
                    crate::error_map::map_db_error(
                        e,
                        crate::error_map::Failed::Other("clearing a projection"),
                    )
                })
        })
    }
}

/// The async runner of an event projection: its document operations per event, in event
/// order (event projections are not split into slices: their operations may depend on
/// order across streams).
pub(crate) struct AsyncEventProjection<P>(pub(crate) P);

impl<P: crate::projections::EventProjection> AsyncProjection for AsyncEventProjection<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn plan<'a>(
        &'a self,
        store: &'a DocumentStore,
        _client: &'a Object,
        events: &'a [EventEnvelope],
        _workers: usize,
        hooks: &'a Arc<dyn DaemonHooks>,
    ) -> BoxFuture<'a, Result<OpList>> {
        Box::pin(async move {
            let mut ops = crate::projections::ProjectedOps::default();
            for e in events {
                hooks.before_event(self.0.name(), e);
                crate::projections::event_projection::apply_one(&self.0, e, &mut ops)?;
                hooks.after_event(self.0.name(), e);
            }
            let list = ops.into_list()?;
            for op in list.operations() {
                let (type_id, migrate) = op.schema();
                store.ensure_erased(type_id, migrate).await?;
            }
            Ok(list)
        })
    }

    fn clear<'a>(&'a self, _client: &'a Object) -> BoxFuture<'a, Result<()>> {
        // An event projection's documents are its own business: a rebuild replays it over
        // them.
        Box::pin(async { Ok(()) })
    }
}

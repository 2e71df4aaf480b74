//! Registering projections on the [`DocumentStoreBuilder`]: single-stream aggregates,
//! multi-stream and event projections, each inline, live or run by the async daemon.

use std::any::TypeId;
use std::sync::Arc;

use marten_core::concurrency::VersionedMode;
use marten_core::{Aggregate, Error, Identities, Tenancy};

use super::DocumentStoreBuilder;
use crate::documents::PgDocument;
use crate::projections::{
    EventProjection, InlineAggregate, InlineEventProjection, InlineMultiStream, InlineProjection,
    Lifecycle,
};

impl DocumentStoreBuilder {
    /// Registers a single-stream aggregate projection. `Inline` keeps the aggregate
    /// document in step with its stream in the same transaction as every append (and live
    /// aggregation then starts from it, as a snapshot); `Live` stores nothing.
    pub fn projection<A: Aggregate + PgDocument>(mut self, lifecycle: Lifecycle) -> Self {
        if let Err(e) = self.registry.register_decoders(A::event_types()) {
            self.registry_error.get_or_insert(e);
        }
        if lifecycle != Lifecycle::Live && A::TENANCY == Tenancy::Single {
            self.stream_keyed.push(std::any::type_name::<A>());
        }
        if lifecycle == Lifecycle::Async && A::TENANCY == Tenancy::Conjoined {
            self.async_conjoined.push(std::any::type_name::<A>());
        }
        if lifecycle == Lifecycle::Async {
            let name = A::DOCUMENT_TYPE.to_owned();
            self.register_async::<A>(
                &name,
                Arc::new(crate::projections::asynchronous::AsyncAggregate::<A>::new()),
            );
            return self.document::<A>();
        }
        self.lifecycle_of::<A>(lifecycle, || Arc::new(InlineAggregate::<A>::new()));
        self.document::<A>()
    }

    /// Registers a multi-stream projection: documents of type `P` fed by events of many
    /// streams, grouped by the ids its `identity*` methods return. Its document type must
    /// have optimistic or numeric concurrency: inline, its writes assert the version read.
    /// `Lifecycle::Async` runs it in the daemon, slices (one per document) folded in
    /// parallel.
    pub fn multi_stream_projection<P>(mut self, lifecycle: Lifecycle) -> Self
    where
        P: Identities + PgDocument,
        P::Mode: VersionedMode,
    {
        if let Err(e) = self.registry.register_decoders(P::event_types()) {
            self.registry_error.get_or_insert(e);
        }
        if lifecycle != Lifecycle::Live && P::TENANCY == Tenancy::Single {
            self.stream_keyed.push(std::any::type_name::<P>());
        }
        if lifecycle == Lifecycle::Async && P::TENANCY == Tenancy::Conjoined {
            self.async_conjoined.push(std::any::type_name::<P>());
        }
        if lifecycle == Lifecycle::Async {
            let name = P::DOCUMENT_TYPE.to_owned();
            self.register_async::<P>(
                &name,
                Arc::new(crate::projections::asynchronous::AsyncMultiStream::<P>::new()),
            );
            return self.document::<P>();
        }
        self.lifecycle_of::<P>(lifecycle, || Arc::new(InlineMultiStream::<P>::new()));
        self.document::<P>()
    }

    /// Registers an event projection: arbitrary document operations per event.
    pub fn event_projection<P: EventProjection>(
        mut self,
        projection: P,
        lifecycle: Lifecycle,
    ) -> Self {
        if lifecycle == Lifecycle::Async {
            let name = projection.name().to_owned();
            self.register_async::<P>(
                &name,
                Arc::new(
                    crate::projections::event_projection::AsyncEventProjection::new(projection),
                ),
            );
            return self;
        }
        self.lifecycle_of::<P>(lifecycle, || {
            Arc::new(InlineEventProjection::new(projection))
        });
        self
    }

    /// Registers an async projection of type `T`: a type or name twice is an error of
    /// `build`.
    fn register_async<T: 'static>(
        &mut self,
        name: &str,
        projection: Arc<dyn crate::projections::asynchronous::AsyncProjection>,
    ) {
        let again = self
            .projections
            .lifecycles
            .insert(TypeId::of::<T>(), Lifecycle::Async);
        if again.is_some() {
            self.registry_error
                .get_or_insert(Error::Configuration(format!(
                    "projection {} registered twice",
                    std::any::type_name::<T>()
                )));
        }
        self.register_named(name, projection);
    }

    /// Registers what the daemon runs under `name` (a subscription: several of one type
    /// may run under their own names): a name twice is an error of `build`.
    pub(in crate::store) fn register_named(
        &mut self,
        name: &str,
        projection: Arc<dyn crate::projections::asynchronous::AsyncProjection>,
    ) {
        if name.is_empty() || name.contains(crate::projections::SLOT_SEPARATORS) {
            // Its progression rows would be taken for another's: `Mail@eu` over tenant
            // `shop` and `Mail` over tenant `eu@shop` would both be `Mail@eu@shop`.
            self.registry_error
                .get_or_insert(Error::Configuration(format!(
                    "projection or subscription name {name:?} is empty or holds '@' or '#', \
                     which separate tenants and shards in the daemon's progression rows"
                )));
        }
        let registry = &mut self.projections;
        if registry.asynchronous.iter().any(|p| p.name() == name) {
            self.registry_error
                .get_or_insert(Error::Configuration(format!(
                    "projection or subscription name {name:?} registered twice"
                )));
        }
        self.projections.asynchronous.push(projection);
    }

    fn lifecycle_of<T: 'static>(
        &mut self,
        lifecycle: Lifecycle,
        inline: impl FnOnce() -> Arc<dyn InlineProjection>,
    ) {
        let type_id = TypeId::of::<T>();
        if self
            .projections
            .lifecycles
            .insert(type_id, lifecycle)
            .is_some()
        {
            self.registry_error
                .get_or_insert(Error::Configuration(format!(
                    "projection {} registered twice",
                    std::any::type_name::<T>()
                )));
            return;
        }
        match lifecycle {
            Lifecycle::Inline => self.projections.inline.push(inline()),
            Lifecycle::Live => {}
            Lifecycle::Async => {
                self.registry_error
                    .get_or_insert(Error::Configuration(format!(
                        "projection {}: this kind of projection does not run in the async daemon",
                        std::any::type_name::<T>()
                    )));
            }
        }
    }
}

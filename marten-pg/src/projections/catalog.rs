//! What a store knows of its projections: the [`EventCatalog`] below it, the projections
//! it runs and the aggregate cache. Projection planning reaches the database through it.

use std::any::TypeId;

use marten_core::{Result, StreamIdentity};

use super::cache::AggregateCache;
use super::ProjectionRegistry;
use crate::connection::Connector;
use crate::documents::PgDocument;
use crate::events::EventCatalog;
use crate::schema::{Catalog, MigrateFn};

/// A store's event catalog, projections and aggregate cache.
pub(crate) struct ProjectionCatalog {
    events: EventCatalog,
    projections: ProjectionRegistry,
    aggregate_cache: AggregateCache,
    /// Whether the store is one of a `TenantedStore`'s tenant databases (see
    /// [`ProjectionCatalog::is_tenant_database`]).
    tenant_database: bool,
}

impl ProjectionCatalog {
    /// The projections `projections` over `events`, with a cache of `cache_capacity`.
    pub(crate) fn new(
        events: EventCatalog,
        projections: ProjectionRegistry,
        cache_capacity: usize,
    ) -> Self {
        Self {
            events,
            projections,
            aggregate_cache: AggregateCache::new(cache_capacity),
            tenant_database: false,
        }
    }

    /// Marks (or not) the store as one of a `TenantedStore`'s tenant databases.
    pub(crate) fn with_tenant_database(mut self, tenant_database: bool) -> Self {
        self.tenant_database = tenant_database;
        self
    }

    /// Whether the store is one of a `TenantedStore`'s tenant databases, each numbering
    /// its events from 1: the delivery ids of its subscriptions name the event's tenant
    /// to keep the databases' deliveries apart.
    pub(crate) fn is_tenant_database(&self) -> bool {
        self.tenant_database
    }

    /// The event catalog below.
    pub(crate) fn events(&self) -> &EventCatalog {
        &self.events
    }

    /// The catalog at the bottom.
    pub(crate) fn catalog(&self) -> &Catalog {
        self.events.catalog()
    }

    /// See [`Catalog::ensure_erased`].
    pub(crate) async fn ensure_erased(&self, type_id: TypeId, migrate: MigrateFn) -> Result<()> {
        self.events.ensure_erased(type_id, migrate).await
    }

    /// Makes sure the table of `D` exists before first use (see [`Catalog::ensure_erased`]).
    pub(crate) async fn ensure<D: PgDocument>(&self) -> Result<()> {
        self.ensure_erased(TypeId::of::<D>(), crate::documents::migrate_fn::<D>())
            .await
    }

    /// See [`EventCatalog::learn_events`].
    pub(crate) fn learn_events(&self, decoders: Vec<marten_core::EventDecoder>) -> Result<()> {
        self.events.learn_events(decoders)
    }

    /// The kind of stream ids this store uses.
    pub(crate) fn stream_identity(&self) -> StreamIdentity {
        self.events.stream_identity()
    }

    /// The projections this store runs.
    pub(crate) fn projections(&self) -> &ProjectionRegistry {
        &self.projections
    }

    /// The last committed documents of inline aggregates, by stream.
    pub(crate) fn aggregate_cache(&self) -> &AggregateCache {
        &self.aggregate_cache
    }
}

impl AsRef<EventCatalog> for ProjectionCatalog {
    fn as_ref(&self) -> &EventCatalog {
        &self.events
    }
}

impl AsRef<Catalog> for ProjectionCatalog {
    fn as_ref(&self) -> &Catalog {
        self.events.catalog()
    }
}

impl AsRef<Connector> for ProjectionCatalog {
    fn as_ref(&self) -> &Connector {
        self.events.catalog().connector()
    }
}

//! The document store: the handle every session, projection and daemon runner shares -
//! where connections come from, the schema and what has been created in it, the event
//! types, the projections and the aggregate cache. Cheap to clone. Configured and built
//! in `builder.rs`; sessions are opened from it in [`crate::session`]. Bulk inserts
//! (binary `COPY`, outside sessions) are its methods in `bulk.rs`.
//!
//! May use: connection, schema, documents, events, projections. Sessions and the daemon
//! sit above it.

mod builder;
mod bulk;
mod compiled;
mod connect;
mod events;
mod hilo;
mod raw_sql;
mod review;
mod settings;
mod subscription;
mod versioned;

use std::any::TypeId;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use marten_core::{Error, Result, StreamIdentity, Tenancy, TenantId};

pub use self::builder::DocumentStoreBuilder;
pub use self::compiled::CompiledQueryStats;
pub(crate) use self::compiled::CompiledSql;
use crate::connection::{Conn, Connector, Dedicated};
use crate::documents::PgDocument;
use crate::events::registry::EventRegistry;
use crate::events::tags::cache::BoundaryCache;
use crate::events::{EventCatalog, EventConfig};
use crate::projections::{ProjectionCatalog, ProjectionRegistry};
use crate::schema::{AutoCreate, Catalog, MigrateFn};

/// The default of [`DocumentStoreBuilder::request_timeout`].
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The identity the next store built in this process gets (see [`DocumentStore::id`]).
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh store identity, for a store being built (see [`DocumentStore::id`]).
fn next_store_id() -> u64 {
    NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A document store on one PostgreSQL schema. Clone it freely: clones share the pool.
///
/// A store handle may be scoped to a tenant ([`DocumentStore::for_tenant`]): sessions
/// opened from it work for that tenant only.
#[derive(Clone)]
pub struct DocumentStore {
    inner: Arc<ProjectionCatalog>,
    tenant: Option<TenantId>,
    /// The HiLo allocator, shared by clones (and tenant handles).
    hilo: Arc<hilo::HiLo>,
    /// The SQL of compiled queries, shared by clones (and tenant handles).
    compiled: Arc<CompiledSql>,
    /// The boundaries commands decided on, shared by clones (and tenant handles).
    boundaries: Arc<BoundaryCache>,
    /// This store's identity in the process, shared by clones (and tenant handles).
    id: u64,
}

impl fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentStore")
            .field("schema", &self.schema())
            .field("auto_create", &self.auto_create())
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl DocumentStore {
    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        self.catalog().schema()
    }

    /// This store's identity in the process: each build makes a new one, which its clones
    /// and tenant handles share. Two stores on one schema name (of two databases, or two
    /// builds on one database) have different ones: what the daemon keeps per store (the
    /// last acquire failure of each slot) is kept by it, not by the schema's name.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The tenant this handle is scoped to (`None`: the untenanted store).
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// This store scoped to `tenant`: the same pool and schema, and every session opened
    /// from the returned handle reads and writes the rows of conjoined document types
    /// (and conjoined events) of that tenant only. Refuses an invalid tenant id with
    /// [`Error::InvalidTenant`](marten_core::Error::InvalidTenant).
    pub fn for_tenant(&self, tenant: impl TryInto<TenantId, Error = Error>) -> Result<Self> {
        Ok(DocumentStore {
            inner: self.inner.clone(),
            tenant: Some(tenant.try_into()?),
            hilo: self.hilo.clone(),
            compiled: self.compiled.clone(),
            boundaries: self.boundaries.clone(),
            id: self.id,
        })
    }

    /// The schema mode this store was built with.
    pub fn auto_create(&self) -> AutoCreate {
        self.catalog().auto_create()
    }

    /// The kind of stream ids this store uses.
    pub fn stream_identity(&self) -> StreamIdentity {
        self.inner.stream_identity()
    }

    /// How the event store's streams are shared between tenants (see
    /// [`DocumentStoreBuilder::events_tenancy`]).
    pub fn events_tenancy(&self) -> Tenancy {
        self.events().events_tenancy()
    }

    /// Closes the pool; sessions still open keep their connection until dropped.
    pub fn close(&self) {
        self.catalog().connector().close();
    }

    /// How many handles share this store: this one, its clones (scoped to a tenant or
    /// not) and the sessions and daemons opened from them.
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The HiLo allocator.
    fn hilo(&self) -> &hilo::HiLo {
        &self.hilo
    }

    /// The catalog: connections, schema, objects made sure of.
    pub(crate) fn catalog(&self) -> &Catalog {
        self.inner.catalog()
    }

    /// The event catalog: the catalog, the event store's settings and event types.
    pub(crate) fn events(&self) -> &EventCatalog {
        self.inner.events()
    }

    /// Opens a connection outside the pool, with the pool's settings (schema work, the
    /// daemon's projection locks). It closes when the client is dropped.
    pub(crate) async fn dedicated_connection(&self) -> Result<Dedicated> {
        self.catalog().dedicated_connection().await
    }

    /// Makes sure the table of `D` exists (per the schema mode) before first use. Types
    /// registered on the builder were handled by `build`; others on first use, on a
    /// connection of their own (never inside a caller's transaction).
    pub(crate) async fn ensure<D: PgDocument>(&self) -> Result<()> {
        self.ensure_erased(TypeId::of::<D>(), crate::documents::migrate_fn::<D>())
            .await
    }

    /// [`ensure`](Self::ensure) for a type known by its `TypeId` and migration.
    pub(crate) async fn ensure_erased(&self, type_id: TypeId, migrate: MigrateFn) -> Result<()> {
        self.catalog().ensure_erased(type_id, migrate).await
    }

    /// [`ensure`](Self::ensure) before a request of a session whose connection is `conn`:
    /// over a caller's pool the session's connection is set aside first, so the schema
    /// work never waits for it (see [`Catalog::ensure_for`]).
    pub(crate) async fn ensure_in<D: PgDocument>(&self, conn: &mut Conn) -> Result<()> {
        let migrate = crate::documents::migrate_fn::<D>();
        self.ensure_erased_in(conn, TypeId::of::<D>(), migrate)
            .await
    }

    /// [`ensure_in`](Self::ensure_in) for a type known by its `TypeId` and migration.
    pub(crate) async fn ensure_erased_in(
        &self,
        conn: &mut Conn,
        type_id: TypeId,
        migrate: MigrateFn,
    ) -> Result<()> {
        self.catalog().ensure_for(conn, type_id, migrate).await
    }

    /// The boundaries `write_to_boundary` decided on (see
    /// [`crate::events::tags::cache`]).
    pub(crate) fn boundary_cache(&self) -> &BoundaryCache {
        &self.boundaries
    }

    /// The store's cache of aggregates (inline documents, live states commands wrote).
    pub(crate) fn aggregate_cache(&self) -> &crate::projections::cache::AggregateCache {
        self.inner.aggregate_cache()
    }

    /// The projections this store runs.
    pub(crate) fn projections(&self) -> &ProjectionRegistry {
        self.inner.projections()
    }

    /// The event store's settings.
    pub(crate) fn event_config(&self) -> &EventConfig {
        self.events().event_config()
    }

    /// Registers an event type (`type_id`, stored as `name`) after build (appending does
    /// this on its own; see [`EventCatalog::register_event`](crate::events::EventCatalog)).
    pub(crate) fn register_event(
        &self,
        register: fn(&mut EventRegistry) -> Result<()>,
        name: &str,
        type_id: std::any::TypeId,
    ) -> Result<()> {
        self.events().register_event(register, name, type_id)
    }

    /// Registers the event types an apply-dispatch type handles, if not known yet.
    pub(crate) fn learn_events(&self, decoders: Vec<marten_core::EventDecoder>) -> Result<()> {
        self.events().learn_events(decoders)
    }
}

impl AsRef<Catalog> for DocumentStore {
    fn as_ref(&self) -> &Catalog {
        self.catalog()
    }
}

impl AsRef<EventCatalog> for DocumentStore {
    fn as_ref(&self) -> &EventCatalog {
        self.events()
    }
}

impl AsRef<ProjectionCatalog> for DocumentStore {
    fn as_ref(&self) -> &ProjectionCatalog {
        &self.inner
    }
}

/// Where the store's connections come from (their `search_path` is the store's schema),
/// with the store's time limits.
impl AsRef<Connector> for DocumentStore {
    fn as_ref(&self) -> &Connector {
        self.catalog().connector()
    }
}

//! The document store: the handle every session, projection and daemon runner shares -
//! where connections come from, the schema and what has been created in it, the event
//! types, the projections and the aggregate cache. Cheap to clone. Configured and built
//! in `builder.rs`; sessions are opened from it in [`crate::session`].
//!
//! May use: connection, schema, documents, events, projections. Sessions and the daemon
//! sit above it.

mod builder;

use std::any::TypeId;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use marten_core::{Result, StreamIdentity};

pub use self::builder::DocumentStoreBuilder;
use crate::connection::Connector;
use crate::documents::PgDocument;
use crate::events::registry::EventRegistry;
use crate::projections::cache::AggregateCache;
use crate::projections::ProjectionRegistry;
use crate::schema::{self, AutoCreate, MigrateFn};

/// The default of [`DocumentStoreBuilder::request_timeout`].
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A document store on one PostgreSQL schema. Clone it freely: clones share the pool.
#[derive(Clone)]
pub struct DocumentStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    connector: Connector,
    schema: String,
    auto_create: AutoCreate,
    ensured: RwLock<HashSet<TypeId>>,
    names: schema::names::Claims,
    events: EventConfig,
    registry: RwLock<EventRegistry>,
    projections: ProjectionRegistry,
    aggregate_cache: AggregateCache,
}

/// The event store's settings.
#[derive(Debug, Clone)]
pub(crate) struct EventConfig {
    pub(crate) identity: StreamIdentity,
    pub(crate) exclusive_lock_timeout: Duration,
}

impl fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentStore")
            .field("schema", &self.inner.schema)
            .field("auto_create", &self.inner.auto_create)
            .finish_non_exhaustive()
    }
}

impl DocumentStore {
    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The schema mode this store was built with.
    pub fn auto_create(&self) -> AutoCreate {
        self.inner.auto_create
    }

    /// How long a save waits for its answers (see
    /// [`DocumentStoreBuilder::request_timeout`]).
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        self.inner.connector.request_timeout()
    }

    /// Opens a connection outside the pool, with the pool's settings (schema work, the
    /// daemon's projection locks). It closes when the client is dropped.
    pub(crate) async fn dedicated_connection(&self) -> Result<tokio_postgres::Client> {
        self.inner.connector.dedicated().await
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
        if self.is_ensured(type_id) {
            return Ok(());
        }
        self.inner.names.claim(type_id)?;
        let client = self.dedicated_connection().await?;
        let schema = self.inner.schema.as_str();
        let mode = self.inner.auto_create;
        schema::with_migration_lock(&client, schema, |c| async move {
            schema::migrate_schema(c, schema, mode).await?;
            migrate(c, schema, mode).await
        })
        .await?;
        if let Ok(mut set) = self.inner.ensured.write() {
            set.insert(type_id);
        }
        Ok(())
    }

    fn is_ensured(&self, type_id: TypeId) -> bool {
        self.inner
            .ensured
            .read()
            .map(|set| set.contains(&type_id))
            .unwrap_or(false)
    }

    /// The projections this store runs.
    pub(crate) fn projections(&self) -> &ProjectionRegistry {
        &self.inner.projections
    }

    /// The last committed documents of inline aggregates, by stream.
    pub(crate) fn aggregate_cache(&self) -> &AggregateCache {
        &self.inner.aggregate_cache
    }

    /// The event store's settings.
    pub(crate) fn event_config(&self) -> &EventConfig {
        &self.inner.events
    }

    /// The kind of stream ids this store uses.
    pub fn stream_identity(&self) -> StreamIdentity {
        self.inner.events.identity
    }

    /// Registers an event type after build (appending does this on its own).
    pub(crate) fn register_event(
        &self,
        register: fn(&mut EventRegistry) -> Result<()>,
        name: &str,
    ) -> Result<()> {
        if let Ok(r) = self.inner.registry.read() {
            if r.knows(name) {
                return Ok(());
            }
        }
        match self.inner.registry.write() {
            Ok(mut r) => register(&mut r),
            Err(_) => Ok(()),
        }
    }

    /// Registers the event types an apply-dispatch type handles, if not known yet (so a
    /// store that never appended them can read them).
    pub(crate) fn learn_events(&self, decoders: Vec<marten_core::EventDecoder>) {
        let known = self
            .inner
            .registry
            .read()
            .map(|r| decoders.iter().all(|d| r.knows(d.name)))
            .unwrap_or(true);
        if !known {
            if let Ok(mut r) = self.inner.registry.write() {
                r.register_decoders(decoders);
            }
        }
    }

    /// Runs `f` with the event registry.
    pub(crate) fn with_registry<T>(&self, f: impl FnOnce(&EventRegistry) -> T) -> T {
        match self.inner.registry.read() {
            Ok(r) => f(&r),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Closes the pool; sessions still open keep their connection until dropped.
    pub fn close(&self) {
        self.inner.connector.close();
    }
}

/// Where the store's connections come from (their `search_path` is the store's schema),
/// with the store's time limits.
impl AsRef<Connector> for DocumentStore {
    fn as_ref(&self) -> &Connector {
        &self.inner.connector
    }
}

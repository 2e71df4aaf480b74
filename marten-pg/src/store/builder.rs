//! Configuring and building a [`DocumentStore`]: the connection, the schema and its
//! mode, the registered documents, events and projections; `build` makes the pool and
//! the schema objects.

use std::any::TypeId;
use std::sync::Arc;
use std::time::Duration;

use marten_core::{Error, Result, StreamIdentity, Tenancy};
use tracing::info;

use super::connect::{check_schema_name, ConnectionSettings};
use super::{DocumentStore, DEFAULT_REQUEST_TIMEOUT};
use crate::documents::PgDocument;
use crate::events::registry::EventRegistry;
use crate::events::tags::cache::BoundaryCache;
use crate::events::UnknownEvents;
use crate::events::{EventCatalog, EventConfig};
use crate::projections::ProjectionCatalog;
use crate::projections::ProjectionRegistry;
use crate::schema::Catalog;
use crate::schema::{self, AutoCreate, MigrateFn};

mod projections;
mod snapshot;

struct Registration {
    type_id: TypeId,
    define: schema::DefineFn,
    migrate: MigrateFn,
}

/// Configures and builds a [`DocumentStore`].
#[must_use]
pub struct DocumentStoreBuilder {
    /// Where connections come from (set in `settings.rs`).
    pub(super) connection: ConnectionSettings,
    schema: String,
    auto_create: AutoCreate,
    request_timeout: Option<Duration>,
    documents: Vec<Registration>,
    events: EventConfig,
    registry: EventRegistry,
    registry_error: Option<Error>,
    pub(super) projections: ProjectionRegistry,
    /// The aggregate and multi-stream projections that store single-tenant documents
    /// (inline or async): refused with conjoined events, whose tenants share stream ids.
    stream_keyed: Vec<&'static str>,
    /// The async projections that store conjoined documents: their daemon runs per
    /// tenant, which needs conjoined events.
    async_conjoined: Vec<&'static str>,
    aggregate_cache: usize,
    apply_schema: bool,
    hilo_block_size: u32,
    /// Whether the store is one of a [`TenantedStore`](crate::TenantedStore)'s tenant
    /// databases (see [`DocumentStoreBuilder::tenant_database`]).
    tenant_database: bool,
}

impl DocumentStore {
    /// Starts configuring a store.
    pub fn builder() -> DocumentStoreBuilder {
        DocumentStoreBuilder {
            connection: ConnectionSettings::default(),
            schema: "public".to_owned(),
            auto_create: AutoCreate::default(),
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            documents: Vec::new(),
            events: EventConfig {
                identity: StreamIdentity::Uuid,
                tenancy: Tenancy::Single,
                exclusive_lock_timeout: Duration::from_secs(5),
            },
            registry: EventRegistry::default(),
            registry_error: None,
            projections: ProjectionRegistry::default(),
            stream_keyed: Vec::new(),
            async_conjoined: Vec::new(),
            aggregate_cache: crate::projections::cache::DEFAULT_CAPACITY,
            apply_schema: true,
            hilo_block_size: super::hilo::DEFAULT_BLOCK_SIZE,
            tenant_database: false,
        }
    }
}

impl DocumentStoreBuilder {
    /// The schema for the store's tables (default `public`): lower-case letters, digits
    /// and underscores.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// What the store may do to the schema (default [`AutoCreate::CreateOrUpdate`]).
    pub fn auto_create(mut self, mode: AutoCreate) -> Self {
        self.auto_create = mode;
        self
    }

    /// Whether `build` applies the schema mode (default true): creates or checks the
    /// schema, the registered document tables and (unless the mode is `None`) the event
    /// and daemon tables. Turned off, `build` only connects and checks the server's
    /// version, and each table is made sure of on first use: a store to review the
    /// schema with ([`DocumentStore::schema_sql`], [`DocumentStore::schema_patch`],
    /// [`DocumentStore::assert_schema`]) before anything exists.
    pub fn apply_schema_at_build(mut self, apply: bool) -> Self {
        self.apply_schema = apply;
        self
    }

    /// Marks the store as one of a [`TenantedStore`](crate::TenantedStore)'s tenant
    /// databases (set by the tenanted store on the builders it makes): each such database
    /// numbers its events from 1, so the delivery ids of its subscriptions name the
    /// event's tenant (`mailer@acme:1`) where those of a store of one database keep
    /// `mailer:1` (see [`SubscriptionBatch::delivery_id`](crate::subscriptions::SubscriptionBatch::delivery_id)).
    pub(crate) fn tenant_database(mut self) -> Self {
        self.tenant_database = true;
        self
    }

    /// How long `save_changes` waits for the answers of its statements (default 60 s;
    /// `None`: for ever). A network that stops delivering without closing the connection
    /// (a partition, a stalled server) is noticed by nothing else: keepalives and
    /// `statement_timeout` cannot see it. When it expires the connection is closed and
    /// the save fails with [`Error::Timeout`] if nothing was written, or
    /// [`Error::OutcomeUnknown`] if its `COMMIT` had been sent and the server could not be
    /// asked what became of it.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a pooled connection may sit idle before it must answer a round trip to
    /// be handed out again (default 30 s; `None`: never checked).
    ///
    /// A connection whose server or network went away without closing it (a failover, a
    /// partition, a flow a NAT or firewall dropped) still looks open; a request written
    /// to it waits out the whole [`request_timeout`](Self::request_timeout), and a save
    /// ends as [`Error::OutcomeUnknown`] though the server never saw it. A connection
    /// idle longer than `after` is sent a `Sync` message first: one that fails is closed,
    /// one that does not answer within the
    /// [`pool_recycle_timeout`](Self::pool_recycle_timeout) (default 5 s, or the
    /// request timeout if shorter) is cancelled and closed together with the connections
    /// idle longer than it, and the next idle one, or a new one, is tried; the checks and
    /// making a new connection share the create timeout.
    ///
    /// Cost: one round trip for a checkout that finds its connection idle past `after`,
    /// none for one used again sooner (a pool in steady use never pays it); every
    /// checkout reads the clock when the connection is handed out and when it is given
    /// back. Lower it to find a failover sooner after quieter spells, at one round trip
    /// per checkout after that much idleness (HikariCP checks past 500 ms;
    /// `Some(Duration::ZERO)` checks every reuse, as sqlx does by default). Not with a
    /// caller's [`pool`](Self::pool), whose recycling method decides.
    pub fn pool_idle_check_after(mut self, after: Option<Duration>) -> Self {
        self.connection.pool.idle_check = after;
        self.connection.pool_set = true;
        self
    }

    /// Registers a document type: its table is created or checked by `build`.
    pub fn document<D: PgDocument>(mut self) -> Self {
        let type_id = TypeId::of::<D>();
        if !self.documents.iter().any(|r| r.type_id == type_id) {
            self.documents.push(Registration {
                type_id,
                define: crate::documents::define_fn::<D>(),
                migrate: crate::documents::migrate_fn::<D>(),
            });
        }
        self
    }

    /// Registers an event type, so reads can deserialize it (appending registers the
    /// types it appends, too), under its name and its aliases
    /// (`#[event(aliases = [..])]`). Two types with the same event type name, or an alias
    /// that is another type's name or alias, are a configuration error at `build`.
    pub fn event<E: marten_core::Event>(mut self) -> Self {
        if let Err(e) = self.registry.register::<E>() {
            self.registry_error.get_or_insert(e);
        }
        self
    }

    /// Registers an upcaster: events stored under the old type name `from` (an older
    /// shape) read as `New`. The stored JSON is passed to `upcast`, and what it returns is
    /// deserialized as `New`; an `Err` (or a result that does not deserialize) fails the
    /// read with [`Error::Upcast`] naming the old name and the event's sequence. Stored
    /// rows keep their old name (see [`marten_core::EventEnvelope::stored_type`]); `New`
    /// is registered too. An old name that a type or alias already reads, or that has an
    /// upcaster, is a configuration error at `build`.
    pub fn upcast<New, F>(mut self, from: &str, upcast: F) -> Self
    where
        New: marten_core::Event,
        F: Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>
            + Send
            + Sync
            + 'static,
    {
        if let Err(e) = self.registry.upcast_json::<New, F>(from, upcast) {
            self.registry_error.get_or_insert(e);
        }
        self
    }

    /// Registers a typed upcaster: events stored under the old type name `from`
    /// deserialize as `Old` (any serde type, e.g. the former struct) and read as
    /// `upcast(old)`. Stored data that does not deserialize as `Old` fails the read with
    /// [`Error::Upcast`]. Otherwise as [`DocumentStoreBuilder::upcast`].
    pub fn upcast_from<Old, New, F>(mut self, from: &str, upcast: F) -> Self
    where
        Old: serde::de::DeserializeOwned + 'static,
        New: marten_core::Event,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        if let Err(e) = self.registry.upcast_typed::<Old, New, F>(from, upcast) {
            self.registry_error.get_or_insert(e);
        }
        self
    }

    /// The kind of stream ids (default `Uuid`).
    pub fn stream_identity(mut self, identity: StreamIdentity) -> Self {
        self.events.identity = identity;
        self
    }

    /// How the event store's streams and events are shared between tenants (default
    /// [`Tenancy::Single`]).
    ///
    /// - `Single`: one set of streams for everyone; a session's tenant (if it has one) is
    ///   only recorded on the events it appends (`tenant_id`, `'*DEFAULT*'` without one).
    /// - `Conjoined`: one set of tables, `tenant_id` leading their keys: every tenant has
    ///   streams of its own (two tenants may use the same stream id), and every append,
    ///   stream read, archive, delete and tag boundary of a session is scoped to the
    ///   session's tenant. An event operation of a session without a tenant fails with
    ///   [`Error::TenantRequired`] before anything is sent. Store-wide readers (the async
    ///   daemon) read the events of every tenant.
    ///
    /// Existing event tables are not converted from one mode to the other. With
    /// conjoined events, aggregate and multi-stream projections that store documents
    /// (inline or async) need a conjoined document type
    /// (`#[document(tenancy = "conjoined")]`), so each tenant's streams project into its
    /// own documents: `build` refuses a single-tenant one with [`Error::Configuration`].
    pub fn events_tenancy(mut self, tenancy: Tenancy) -> Self {
        self.events.tenancy = tenancy;
        self
    }

    /// How long `append_exclusive` waits for a stream's lock before failing with
    /// [`Error::StreamLocked`] (default 5 s). PostgreSQL waits at most `i32::MAX`
    /// milliseconds (about 24.8 days): a longer timeout, up to `Duration::MAX`, waits that
    /// long.
    pub fn exclusive_lock_timeout(mut self, timeout: Duration) -> Self {
        self.events.exclusive_lock_timeout = timeout;
        self
    }

    /// How many inline aggregate documents the store keeps in memory (default 10,000; 0
    /// turns the cache off). With a document cached, a plain `append` to its stream plans
    /// the projected write from it and asserts the stream version it belongs to, in one
    /// round trip; without one, the save first locks the stream and reads the document
    /// (two round trips). A stale entry (another process appended, or the stored document
    /// changed) fails the save's version and document checks, and the save quietly plans
    /// again from a locked read, so the cache never loses or misplans an update. Entries are the documents this store's saves
    /// committed or its reads of whole aggregates found; stores in other processes keep
    /// their own.
    pub fn aggregate_cache(mut self, capacity: usize) -> Self {
        self.aggregate_cache = capacity;
        self
    }

    /// How many ids the HiLo allocator ([`DocumentStore::next_id`]) reserves at a time
    /// (default 1000, Marten's "max lo"; at least 1). Larger blocks mean fewer round
    /// trips and larger gaps when a process stops with ids of its block unused. Stores
    /// with different block sizes can share a schema: blocks never overlap.
    pub fn hilo_block_size(mut self, size: u32) -> Self {
        self.hilo_block_size = size;
        self
    }

    /// What reads do with events of unregistered types (default: fail).
    pub fn unknown_events(mut self, policy: UnknownEvents) -> Self {
        self.registry.unknown = policy;
        self
    }

    /// Connects, applies the schema mode to every registered type, and returns the store.
    pub async fn build(self) -> Result<DocumentStore> {
        if let Some(e) = self.registry_error {
            return Err(e);
        }
        self.check_snapshots()?;
        check_event_tenancy(
            self.events.tenancy,
            &self.stream_keyed,
            &self.async_conjoined,
            &self.projections,
        )?;
        let names = schema::names::Claims::new(self.documents.iter().map(|r| r.type_id))?;
        // The snapshot tables are the registered tables of their aggregate types: made
        // sure of at build with them (see `snapshot`).
        let snapshot_tables: Vec<TypeId> = (self.projections.snapshots.values())
            .map(|p| p.table.0)
            .collect();
        check_schema_name(&self.schema)?;
        let connector = self
            .connection
            .connector(&self.schema, self.request_timeout)
            .await?;
        let store = DocumentStore {
            inner: Arc::new(
                ProjectionCatalog::new(
                    EventCatalog::new(
                        Catalog::new(
                            connector,
                            self.schema,
                            self.auto_create,
                            names,
                            self.documents.iter().map(|r| r.define).collect(),
                        ),
                        self.events,
                        self.registry,
                    ),
                    self.projections,
                    self.aggregate_cache,
                )
                .with_tenant_database(self.tenant_database),
            ),
            tenant: None,
            hilo: Arc::new(super::hilo::HiLo::new(self.hilo_block_size)),
            compiled: Arc::default(),
            boundaries: Arc::new(BoundaryCache::new(self.aggregate_cache)),
            id: super::next_store_id(),
        };
        let documents: Vec<(TypeId, MigrateFn)> = self
            .documents
            .iter()
            .map(|r| (r.type_id, r.migrate))
            .collect();
        let store_tables = [
            store.events().tables(),
            schema::daemon_schema(),
            schema::hilo_schema(),
        ];
        store
            .catalog()
            .ensure_at_build(self.apply_schema, &documents, &store_tables)
            .await?;
        if self.apply_schema {
            store.catalog().mark_ensured(snapshot_tables);
        }
        let schema = store.schema();
        info!(
            schema,
            documents = self.documents.len(),
            "document store ready"
        );
        Ok(store)
    }
}

/// Refuses projections that cannot keep tenants apart: with conjoined events, an
/// aggregate or multi-stream projection that stores single-tenant documents would write
/// two tenants' streams of one id into one document; with single-tenant events, the
/// daemon has no tenant to write an async projection's conjoined documents under, and an
/// inline single-stream aggregate of a conjoined document type would keep one document
/// per tenant of a stream every tenant shares, each folded only from the events its own
/// tenant's sessions appended (the `projections` registered inline).
fn check_event_tenancy(
    tenancy: Tenancy,
    stream_keyed: &[&'static str],
    async_conjoined: &[&'static str],
    projections: &ProjectionRegistry,
) -> Result<()> {
    let inline_conjoined = || {
        let mut names = projections
            .inline
            .iter()
            .filter_map(|p| p.stream_documents())
            .filter(|d| d.conjoined)
            .map(|d| d.aggregate);
        names.next()
    };
    match (tenancy, stream_keyed.first(), async_conjoined.first()) {
        (Tenancy::Conjoined, Some(name), _) => Err(Error::Configuration(format!(
            "projection {name}: with conjoined events, an inline, async or snapshotted \
             aggregate or multi-stream projection needs a conjoined document type \
             (#[document(tenancy = \"conjoined\")]), or use Lifecycle::Live"
        ))),
        (Tenancy::Single, _, Some(name)) => Err(Error::Configuration(format!(
            "projection {name}: an async projection of a conjoined document type needs \
             conjoined events (.events_tenancy(Tenancy::Conjoined)), so the daemon runs it per \
             tenant; or, a multi-stream projection, make it inline"
        ))),
        (Tenancy::Single, _, None) => match inline_conjoined() {
            Some(name) => Err(Error::Configuration(format!(
                "projection {name}: an inline single-stream aggregate of a conjoined \
                 document type needs conjoined events (.events_tenancy(Tenancy::Conjoined)): \
                 with single-tenant events every tenant shares the stream, and each tenant's \
                 document would be folded only from its own appends; or make the aggregate \
                 a single-tenant document type, or use Lifecycle::Live"
            ))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

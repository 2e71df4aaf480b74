//! What a store knows of its event store: the [`Catalog`] below it, the event store's
//! settings (stream identity, event tenancy, exclusive lock timeout) and the registry of
//! event types.

use std::any::TypeId;
use std::sync::RwLock;
use std::time::Duration;

use marten_core::{EventDecoder, Result, StreamIdentity, Tenancy};

use super::registry::EventRegistry;
use crate::connection::Connector;
use crate::schema::{Catalog, MigrateFn};
use crate::tables::events::EventSql;

/// The event store's settings.
#[derive(Debug, Clone)]
pub(crate) struct EventConfig {
    pub(crate) identity: StreamIdentity,
    /// Whether streams and events are shared by all tenants or kept per tenant.
    pub(crate) tenancy: Tenancy,
    pub(crate) exclusive_lock_timeout: Duration,
}

/// A store's catalog, event settings and event types.
pub(crate) struct EventCatalog {
    catalog: Catalog,
    config: EventConfig,
    registry: RwLock<EventRegistry>,
}

impl EventCatalog {
    /// The event store of `catalog` with `config`, knowing the types of `registry`.
    pub(crate) fn new(catalog: Catalog, config: EventConfig, registry: EventRegistry) -> Self {
        Self {
            catalog,
            config,
            registry: RwLock::new(registry),
        }
    }

    /// The catalog below.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// See [`Catalog::ensure_erased`].
    pub(crate) async fn ensure_erased(&self, type_id: TypeId, migrate: MigrateFn) -> Result<()> {
        self.catalog.ensure_erased(type_id, migrate).await
    }

    /// The event store's settings.
    pub(crate) fn event_config(&self) -> &EventConfig {
        &self.config
    }

    /// The kind of stream ids this store uses.
    pub(crate) fn stream_identity(&self) -> StreamIdentity {
        self.config.identity
    }

    /// How the event store's streams are shared between tenants.
    pub(crate) fn events_tenancy(&self) -> Tenancy {
        self.config.tenancy
    }

    /// The statements of this store's event tables.
    pub(crate) fn sql(&self) -> &'static EventSql {
        EventSql::of(self.config.identity, self.config.tenancy)
    }

    /// The `TypeId` and migration of this store's event tables.
    pub(crate) fn tables(&self) -> (TypeId, MigrateFn) {
        crate::schema::events_schema(self.config.identity, self.config.tenancy)
    }

    /// Registers an event type after build (appending does this on its own): the type
    /// `type_id`, stored as `name`. A name another type is registered under (or aliased
    /// to) is the registry's configuration error naming both, not an event that would
    /// read back as the other type.
    pub(crate) fn register_event(
        &self,
        register: fn(&mut EventRegistry) -> Result<()>,
        name: &str,
        type_id: TypeId,
    ) -> Result<()> {
        if let Ok(r) = self.registry.read() {
            if r.appends_as(name, type_id) {
                return Ok(());
            }
        }
        match self.registry.write() {
            Ok(mut r) => register(&mut r),
            Err(_) => Ok(()),
        }
    }

    /// Registers the event types an apply-dispatch type handles, if not known yet (so a
    /// store that never appended them can read them). A type whose name (or alias) is
    /// another type's is the registry's configuration error naming both, not events that
    /// would read as the other type.
    pub(crate) fn learn_events(&self, decoders: Vec<EventDecoder>) -> Result<()> {
        let known = self
            .registry
            .read()
            .map(|r| decoders.iter().all(|d| r.has_decoder(d)))
            .unwrap_or(true);
        if known {
            return Ok(());
        }
        match self.registry.write() {
            Ok(mut r) => r.register_decoders(decoders),
            Err(_) => Ok(()),
        }
    }

    /// Runs `f` with the event registry.
    pub(crate) fn with_registry<T>(&self, f: impl FnOnce(&EventRegistry) -> T) -> T {
        match self.registry.read() {
            Ok(r) => f(&r),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
}

impl AsRef<Catalog> for EventCatalog {
    fn as_ref(&self) -> &Catalog {
        &self.catalog
    }
}

impl AsRef<Connector> for EventCatalog {
    fn as_ref(&self) -> &Connector {
        self.catalog.connector()
    }
}

//! What a store knows of its database below the event store: where connections come from,
//! its schema and mode, and which objects it has made sure of. The unit of work and
//! everything above reach the database through it.

use std::any::TypeId;
use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use marten_core::Result;

use super::{migrate_schema, names, with_migration_lock, AutoCreate, MigrateFn};
use crate::connection::{Connector, Dedicated};

/// A store's connections, schema and the objects it has created or checked.
pub(crate) struct Catalog {
    connector: Connector,
    schema: String,
    auto_create: AutoCreate,
    ensured: RwLock<HashSet<TypeId>>,
    names: names::Claims,
}

impl Catalog {
    /// A catalog of `schema` (mode `auto_create`) whose document names are `names`.
    pub(crate) fn new(
        connector: Connector,
        schema: String,
        auto_create: AutoCreate,
        names: names::Claims,
    ) -> Self {
        Self {
            connector,
            schema,
            auto_create,
            ensured: RwLock::new(HashSet::new()),
            names,
        }
    }

    /// The schema holding the store's tables.
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// The schema mode.
    pub(crate) fn auto_create(&self) -> AutoCreate {
        self.auto_create
    }

    /// Where connections come from.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// How long a request waits for its answers.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        self.connector.request_timeout()
    }

    /// Opens a connection outside the pool, with the pool's settings (schema work, the
    /// daemon's projection locks). It closes when the client is dropped.
    pub(crate) async fn dedicated_connection(&self) -> Result<Dedicated> {
        self.connector.dedicated().await
    }

    /// Makes sure the objects of a type known by its `TypeId` exist (per the schema
    /// mode) before first use, running its migration on a connection of its own (never
    /// inside a caller's transaction) under the schema's migration lock.
    pub(crate) async fn ensure_erased(&self, type_id: TypeId, migrate: MigrateFn) -> Result<()> {
        if self.is_ensured(type_id) {
            return Ok(());
        }
        self.names.claim(type_id)?;
        let client = self.dedicated_connection().await?;
        let schema = self.schema.as_str();
        let mode = self.auto_create;
        with_migration_lock(&client, schema, |c| async move {
            migrate_schema(c, schema, mode).await?;
            migrate(c, schema, mode).await
        })
        .await?;
        self.mark_ensured([type_id]);
        Ok(())
    }

    /// Records types whose objects were made sure of.
    pub(crate) fn mark_ensured(&self, types: impl IntoIterator<Item = TypeId>) {
        if let Ok(mut set) = self.ensured.write() {
            set.extend(types);
        }
    }

    fn is_ensured(&self, type_id: TypeId) -> bool {
        self.ensured
            .read()
            .map(|set| set.contains(&type_id))
            .unwrap_or(false)
    }
}

impl AsRef<Connector> for Catalog {
    fn as_ref(&self) -> &Connector {
        &self.connector
    }
}

//! What a store knows of its database below the event store: where connections come from,
//! its schema and mode, and which objects it has made sure of. The unit of work and
//! everything above reach the database through it.
//!
//! A type's first use makes sure of its objects on a connection outside the pool. Over a
//! caller's pool that connection is taken out of the pool, where the session asking may
//! hold the last one (a pool of one would wait for itself): a session's first use
//! ([`Catalog::ensure_for`]) sets its own connection aside first, unless a transaction is
//! open on it; then the wait for another one is bounded and ends in
//! [`Error::PoolExhausted`](marten_core::Error).

use std::any::TypeId;
use std::sync::RwLock;
use std::time::Duration;

use marten_core::Result;
use rustc_hash::FxHashSet;

use super::{
    check_server_version, migrate_schema, migrating, names, with_migration_lock, AutoCreate,
    MigrateFn, SchemaConn,
};
use crate::connection::{Conn, Connector, Dedicated};
use crate::tables::def::TableDef;

/// The table a registered document type needs, as data (for the schema script and
/// patch).
pub(crate) type DefineFn = fn() -> TableDef;

/// A store's connections, schema and the objects it has created or checked.
pub(crate) struct Catalog {
    connector: Connector,
    schema: String,
    auto_create: AutoCreate,
    /// Fx: a `TypeId` is already a hash, and the check runs on every save.
    ensured: RwLock<FxHashSet<TypeId>>,
    names: names::Claims,
    documents: Vec<DefineFn>,
    /// Held while a type's objects are made sure of on first use: sessions of the store
    /// that first use a type at the same moment wait for one migration, not one each.
    ensuring: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// A catalog of `schema` (mode `auto_create`) whose document names are `names` and
    /// whose registered document tables are `documents`.
    pub(crate) fn new(
        connector: Connector,
        schema: String,
        auto_create: AutoCreate,
        names: names::Claims,
        documents: Vec<DefineFn>,
    ) -> Self {
        for define in &documents {
            connector.statements().add_table(&define().name);
        }
        Self {
            connector,
            schema,
            auto_create,
            ensured: RwLock::new(FxHashSet::default()),
            names,
            documents,
            ensuring: tokio::sync::Mutex::new(()),
        }
    }

    /// The tables of the registered document types.
    pub(crate) fn document_tables(&self) -> Vec<TableDef> {
        self.documents.iter().map(|define| define()).collect()
    }

    /// What `build` does to the database: checks the server's version, then (when
    /// `apply` is set) applies the schema mode to the schema, the registered `documents`
    /// and, unless the mode is `None`, to `store_tables` (the event, daemon and HiLo tables),
    /// all under the schema's migration lock, on a connection of its own. Each step (the
    /// version check, the schema's objects, each type's tables) waits at most the request
    /// timeout: past it, the build fails with [`Error::Timeout`](marten_core::Error) and
    /// the connection is cancelled and closed.
    pub(crate) async fn ensure_at_build(
        &self,
        apply: bool,
        documents: &[(TypeId, MigrateFn)],
        store_tables: &[(TypeId, MigrateFn)],
    ) -> Result<()> {
        let conn = SchemaConn::new(self.dedicated_connection().await?, &self.connector);
        check_server_version(&conn).await?;
        if !apply {
            return Ok(());
        }
        let (schema, mode) = (self.schema.as_str(), self.auto_create);
        // In mode None the event and daemon tables are checked on first use: a store
        // that never appends needs none of them.
        let store_tables = if mode == AutoCreate::None {
            &[][..]
        } else {
            store_tables
        };
        let doing = migrating(schema);
        let doing = doing.as_str();
        with_migration_lock(&conn, schema, |c| async move {
            c.step(doing, migrate_schema(c.client(), schema, mode))
                .await?;
            for (_, migrate) in documents.iter().chain(store_tables) {
                c.step(doing, migrate(c.client(), schema, mode)).await?;
            }
            Ok(())
        })
        .await?;
        self.mark_ensured(documents.iter().chain(store_tables).map(|(t, _)| *t));
        Ok(())
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
    /// inside a caller's transaction) under the schema's migration lock. Each step waits
    /// at most the request timeout: past it, the first use fails with
    /// [`Error::Timeout`](marten_core::Error), the connection is cancelled and closed,
    /// the type is not recorded as made sure of (its next use tries again) and the
    /// sessions waiting to make sure of other types go on.
    pub(crate) async fn ensure_erased(&self, type_id: TypeId, migrate: MigrateFn) -> Result<()> {
        if self.is_ensured(type_id) {
            return Ok(());
        }
        let _one = self.ensuring.lock().await;
        if self.is_ensured(type_id) {
            return Ok(());
        }
        self.names.claim(type_id)?;
        if let Some(table) = names::table_of(type_id) {
            self.connector.statements().add_table(table);
        }
        let conn = SchemaConn::new(self.dedicated_connection().await?, &self.connector);
        let (schema, mode) = (self.schema.as_str(), self.auto_create);
        let doing = migrating(schema);
        let doing = doing.as_str();
        with_migration_lock(&conn, schema, |c| async move {
            c.step(doing, migrate_schema(c.client(), schema, mode))
                .await?;
            c.step(doing, migrate(c.client(), schema, mode)).await
        })
        .await?;
        self.mark_ensured([type_id]);
        Ok(())
    }

    /// [`ensure_erased`](Self::ensure_erased) for a session whose connection is `conn`,
    /// before the session's request: with a caller's pool, whose connection for the schema
    /// work comes out of the same pool, the session's connection is set aside first
    /// ([`Conn::set_aside`]: given back unless a transaction is open on it) so that the
    /// schema work never waits for the connection the session itself holds. With the
    /// store's own pool the session keeps its connection.
    pub(crate) async fn ensure_for(
        &self,
        conn: &mut Conn,
        type_id: TypeId,
        migrate: MigrateFn,
    ) -> Result<()> {
        if self.is_ensured(type_id) {
            return Ok(());
        }
        if !self.connector.makes_connections() {
            conn.set_aside();
        }
        self.ensure_erased(type_id, migrate).await
    }

    /// Whether schema work takes its connection out of the caller's pool a session may
    /// hold one of (see [`ensure_for`](Self::ensure_for)); with the store's own pool it
    /// does not, and a session need not make sure of anything before its request.
    pub(crate) fn shares_callers_pool(&self) -> bool {
        !self.connector.makes_connections()
    }

    /// Records types whose objects were made sure of.
    pub(crate) fn mark_ensured(&self, types: impl IntoIterator<Item = TypeId>) {
        if let Ok(mut set) = self.ensured.write() {
            set.extend(types);
        }
    }

    /// Whether the objects of the type known by `type_id` were made sure of.
    pub(crate) fn is_ensured(&self, type_id: TypeId) -> bool {
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

//! The schema as a DBA reviews it: the whole script of the store's objects, the patch
//! that brings a database to it, and the assertion that it matches. The work is the
//! schema layer's; this file gathers the store's tables (the registered documents, the
//! event store for its stream identity, the daemon's tables).

use marten_core::Result;

use super::DocumentStore;
use crate::schema::{self, PatchOptions, SchemaPatch};
use crate::tables::def::TableDef;

impl DocumentStore {
    /// The complete DDL of the store's schema as one script a DBA can review and run:
    /// the schema, its functions, the event store's tables (`mt_streams`, `mt_events`
    /// with its sequence and indexes, the tag tables), the daemon's tables (progression,
    /// dead letters) and the table of every document type registered on the builder,
    /// with its indexed columns and indexes. Idempotent: every statement is
    /// `IF NOT EXISTS` or `OR REPLACE`. Document types first used without being
    /// registered are not in it.
    pub fn schema_sql(&self) -> String {
        schema::script(self.schema(), &self.expected_tables())
    }

    /// Compares the database with [`schema_sql`](Self::schema_sql) and returns what
    /// differs, each difference with the statements that fix it: missing schema,
    /// functions, sequences, tables and columns, missing indexes and indexes whose kind
    /// changed (a field made unique, a GIN index added to the type). Reads the catalogs
    /// only; changes nothing. Waits for the database's answers at most the store's request
    /// timeout ([`Error::Timeout`](marten_core::Error::Timeout) past it).
    pub async fn schema_patch(&self, options: PatchOptions) -> Result<SchemaPatch> {
        let conn = self.schema_connection().await?;
        schema::patch(&conn, self.schema(), &self.expected_tables(), options).await
    }

    /// Runs a patch from [`schema_patch`](Self::schema_patch) on a connection of its own
    /// under the schema's migration lock: in one transaction, or (a concurrent patch)
    /// each statement on its own, the lock held for the connection's session and
    /// released after (a patch given up or cancelled closes its connection, which
    /// releases it). Differences only a person can fix (a column of another
    /// type) stay; [`assert_schema`](Self::assert_schema) still reports them. Each
    /// statement waits for its answer at most the store's request timeout
    /// ([`Error::Timeout`](marten_core::Error::Timeout) past it: the connection is
    /// cancelled and closed, which rolls back a patch in one transaction not yet
    /// committed), and for each lock (the migration lock included) a little less
    /// ([`Error::LockNotAvailable`](marten_core::Error::LockNotAvailable) naming the
    /// schema past it).
    pub async fn apply_schema_patch(&self, patch: &SchemaPatch) -> Result<()> {
        let conn = self.schema_connection().await?;
        schema::apply(&conn, patch).await
    }

    /// Fails with [`Error::SchemaMismatch`](marten_core::Error::SchemaMismatch), listing
    /// every difference, unless the database holds exactly what
    /// [`schema_sql`](Self::schema_sql) creates (extra objects are not differences).
    pub async fn assert_schema(&self) -> Result<()> {
        self.schema_patch(PatchOptions::new()).await?.into_result()
    }

    /// A connection of its own for schema work, its steps bounded by the request timeout.
    async fn schema_connection(&self) -> Result<schema::SchemaConn<'_>> {
        let client = self.dedicated_connection().await?;
        Ok(schema::SchemaConn::new(client, self.catalog().connector()))
    }

    /// Every table the store needs, in creation order.
    fn expected_tables(&self) -> Vec<TableDef> {
        let schema = self.schema();
        let mut tables = crate::tables::event_ddl::table_defs(
            schema,
            self.stream_identity(),
            self.events_tenancy(),
        );
        tables.extend(crate::tables::progression::table_defs());
        tables.push(crate::tables::hilo::table_def());
        tables.extend(self.catalog().document_tables());
        tables
    }
}

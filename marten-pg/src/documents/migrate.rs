//! Creating, updating or checking the table of one document type, per the schema mode,
//! with the DDL of its mode's storage; and the type-erased migration the store keeps.

use marten_core::{Error, Result};
use tokio_postgres::Client;
use tracing::debug;

use super::{DocumentStorage, PgDocument};
use crate::error_map::{map_db_error, Failed};
use crate::schema::{describe, names, udt_of, AutoCreate, MigrateFn};
use crate::PgId;

/// The migration of document type `D`, as a function pointer the store can keep.
/// Records `D`'s database names, so the store can refuse a type that shares them.
pub(crate) fn migrate_fn<D: PgDocument>() -> MigrateFn {
    names::register::<D>();
    |client, schema, mode| Box::pin(migrate_document::<D>(client, schema, mode))
}

/// Creates, updates or checks the table of document type `D`.
pub(crate) async fn migrate_document<D: PgDocument>(
    client: &Client,
    schema: &str,
    mode: AutoCreate,
) -> Result<()> {
    let table = D::TABLE_NAME;
    let what = Failed::Migrating(table);
    if mode == AutoCreate::All {
        client
            .batch_execute(&crate::tables::documents::drop_table(schema, table))
            .await
            .map_err(|e| map_db_error(e, what))?;
    }
    let columns = describe(client, schema, table).await?;
    let required = D::Storage::columns();
    if columns.is_empty() {
        if mode == AutoCreate::None {
            return Err(Error::SchemaObjectMissing {
                object: format!("{schema}.{table}"),
            });
        }
        debug!(
            schema,
            table,
            document_type = D::DOCUMENT_TYPE,
            "creating document table"
        );
        for sql in D::Storage::ddl(schema) {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| map_db_error(e, what))?;
        }
        return Ok(());
    }
    let id_type = <D::Id as PgId>::SQL_TYPE;
    if let Some((_, found)) = columns.iter().find(|(name, _)| name == "id") {
        if found != udt_of(id_type) {
            return Err(Error::Configuration(format!(
                "table {schema}.{table} has an id column of type {found}, but {} ids are {id_type}",
                D::DOCUMENT_TYPE
            )));
        }
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .chain(D::INDEXES.iter().map(|ix| ix.column))
        .filter(|c| !columns.iter().any(|(name, _)| name == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if matches!(mode, AutoCreate::None | AutoCreate::CreateOnly) {
        return Err(Error::SchemaObjectMissing {
            object: format!("{schema}.{table}.{}", missing.join(", ")),
        });
    }
    debug!(schema, table, ?missing, "adding missing document columns");
    for sql in D::Storage::ddl(schema) {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| map_db_error(e, what))?;
    }
    Ok(())
}

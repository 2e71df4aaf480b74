//! Creating, updating or checking the table of one document type, per the schema mode,
//! from the table its mode's storage defines; and the type-erased migration and
//! definition the store keeps.

use marten_core::Result;
use tokio_postgres::Client;

use super::{DocumentStorage, PgDocument};
use crate::schema::{ensure_tables, names, AutoCreate, DefineFn, MigrateFn};

/// The migration of document type `D`, as a function pointer the store can keep.
/// Records `D`'s database names, so the store can refuse a type that shares them.
pub(crate) fn migrate_fn<D: PgDocument>() -> MigrateFn {
    names::register::<D>();
    |client, schema, mode| Box::pin(migrate_document::<D>(client, schema, mode))
}

/// The table of document type `D`, as a function pointer the store can keep.
pub(crate) fn define_fn<D: PgDocument>() -> DefineFn {
    <D::Storage as DocumentStorage<D>>::table_def
}

/// Creates, updates or checks the table of document type `D`: its columns and its
/// indexes (an index added to the type later, or whose kind changed, is created).
pub(crate) async fn migrate_document<D: PgDocument>(
    client: &Client,
    schema: &str,
    mode: AutoCreate,
) -> Result<()> {
    let table = <D::Storage as DocumentStorage<D>>::table_def();
    tracing::debug!(
        schema,
        document_type = D::DOCUMENT_TYPE,
        "checking the document table"
    );
    ensure_tables(client, schema, mode, std::slice::from_ref(&table)).await
}

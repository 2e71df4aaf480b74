//! Creating, updating or checking the table of one document type, per the schema mode,
//! from the table its mode's storage defines; and the type-erased migration and
//! definition the store keeps. A live aggregate type with a snapshot policy has a table
//! of its own shape ([`snapshot_table`]: its document table with the column naming a
//! snapshot's event), made sure of under a type id of its own ([`SnapshotTable`]).

use marten_core::Result;
use std::any::TypeId;
use std::marker::PhantomData;

use tokio_postgres::Client;

use super::{DocumentStorage, PgDocument};
use crate::schema::{ensure_tables, names, AutoCreate, DefineFn, MigrateFn};
use crate::tables::snapshots::snapshot_table;

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

/// The key the store records the snapshot table of live aggregate `A` under once it made
/// sure of it: apart from `A`'s own key, which a use of `A` as a plain document (a load,
/// a store) may have recorded for its document table without the snapshot column.
pub(crate) struct SnapshotTable<A>(PhantomData<fn() -> A>);

/// The table of live aggregate `A` with a snapshot policy ([`snapshot_table`]), as a
/// function pointer the store can keep.
pub(crate) fn snapshot_define_fn<A: PgDocument>() -> DefineFn {
    || snapshot_table(<A::Storage as DocumentStorage<A>>::table_def())
}

/// The migration of the table of live aggregate `A` with a snapshot policy, and the key
/// it is recorded under ([`SnapshotTable`]). Records `A`'s database names, as
/// [`migrate_fn`] does.
pub(crate) fn snapshot_migrate_fn<A: PgDocument>() -> (TypeId, MigrateFn) {
    names::register::<A>();
    let migrate: MigrateFn =
        |client, schema, mode| Box::pin(migrate_snapshot_table::<A>(client, schema, mode));
    (TypeId::of::<SnapshotTable<A>>(), migrate)
}

/// Creates, updates or checks the table of live aggregate `A` with a snapshot policy:
/// [`migrate_document`]'s table with the snapshot column, which `CreateOrUpdate` adds to
/// an existing table and `None` reports missing.
async fn migrate_snapshot_table<A: PgDocument>(
    client: &Client,
    schema: &str,
    mode: AutoCreate,
) -> Result<()> {
    let table = snapshot_define_fn::<A>()();
    tracing::debug!(
        schema,
        document_type = A::DOCUMENT_TYPE,
        "checking the snapshot table"
    );
    ensure_tables(client, schema, mode, std::slice::from_ref(&table)).await
}

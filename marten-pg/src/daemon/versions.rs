//! What a caller asks of blue/green projection versions: which version of a document
//! type's table readers see, and the explicit drop of the versions it replaced.
//!
//! Owns: the two public calls. May use: the switch's tables (through `bluegreen`), the
//! connection layer, the store.

use marten_core::{Error, Result};

use super::bluegreen::active_version;
use crate::connection::Conn;
use crate::documents::PgDocument;
use crate::error_map::{map_db_error, Failed};
use crate::store::DocumentStore;
use crate::tables::versions as sql;

/// The version of the projection of document type `D` that readers see: 1 until a
/// versioned projection (see `DocumentStoreBuilder::projection_versioned`) has caught up
/// and switched.
pub async fn active_projection_version<D: PgDocument>(store: &DocumentStore) -> Result<u32> {
    let schema = store.schema().to_owned();
    Conn::new()
        .run(store, async |db| {
            active_version(db, &schema, D::TABLE_NAME).await
        })
        .await
}

/// Drops the tables of the versions of `D`'s projection that an active newer version
/// replaced (`mt_doc_tally_v1` once version 2 is active), and returns their names. A
/// version being built (newer than the active one) is left alone. Until this runs, the
/// old tables stay, so a deployment can go back to reading them.
pub async fn drop_old_projection_versions<D: PgDocument>(
    store: &DocumentStore,
) -> Result<Vec<String>> {
    drop_old(store, D::TABLE_NAME).await
}

/// [`drop_old_projection_versions`] for the async projection named `projection` (as the
/// daemon's status lists it: `Tally` or `Tally:v2`), for a command line.
pub async fn drop_old_projection_versions_named(
    store: &DocumentStore,
    projection: &str,
) -> Result<Vec<String>> {
    let found = store
        .projections()
        .asynchronous
        .iter()
        .find(|p| p.name() == projection);
    let Some(p) = found else {
        return Err(Error::Configuration(format!(
            "no async projection named {projection}"
        )));
    };
    let Some(table) = p.document_table() else {
        return Err(Error::Configuration(format!(
            "{projection} has no versioned document table (an event projection)"
        )));
    };
    drop_old(store, table.name).await
}

/// Drops the superseded version tables of document table `table`.
async fn drop_old(store: &DocumentStore, table: &str) -> Result<Vec<String>> {
    let schema = store.schema().to_owned();
    Conn::new()
        .run(store, async |db| {
            let what = |e| map_db_error(e, Failed::Other("dropping old projection versions"));
            let active = active_version(db, &schema, table).await?;
            let pattern = sql::old_versions_pattern(table);
            let rows = db
                .query(sql::TABLES_LIKE, &[&schema, &pattern])
                .await
                .map_err(what)?;
            let mut dropped = Vec::new();
            for row in rows {
                let name: String = row.try_get(0).map_err(what)?;
                if sql::version_of(table, &name).is_some_and(|v| v < active) {
                    db.batch_execute(&sql::drop_old(&schema, &name))
                        .await
                        .map_err(what)?;
                    dropped.push(name);
                }
            }
            Ok(dropped)
        })
        .await
}

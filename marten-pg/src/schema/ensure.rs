//! Applying a schema mode to some tables: drop them first ([`AutoCreate::All`]), then
//! compare them with the database and run the fixes the mode allows; what it does not
//! allow is an error naming the objects (or, for indexes, a warning).

use marten_core::{Error, Result, SchemaDifference};
use tokio_postgres::Client;
use tracing::{debug, warn};

use super::diff::{diff, Change, Expected, Fix};
use super::live::Live;
use super::names::truncated;
use super::types::Types;
use super::AutoCreate;
use crate::error_map::{map_db_error, Failed};
use crate::tables::def::TableDef;

/// Creates, updates or checks `tables` in `schema` per `mode`:
/// - `CreateOrUpdate` and `All` (after dropping them) create what is missing, add
///   missing columns and create missing indexes or replace changed ones;
/// - `CreateOnly` creates missing tables and indexes; a missing column is an error;
/// - `None` changes nothing; a missing table or column is an error.
///
/// An `id` column of another type is an error in every mode. Index differences a mode
/// may not fix, and other column types, are logged: `assert_schema` reports them.
pub(crate) async fn ensure_tables(
    client: &Client,
    schema: &str,
    mode: AutoCreate,
    tables: &[TableDef],
) -> Result<()> {
    let what = Failed::Migrating(schema);
    if mode == AutoCreate::All {
        for table in tables.iter().rev() {
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {schema}.{} CASCADE",
                    table.name
                ))
                .await
                .map_err(|e| map_db_error(e, what))?;
        }
    }
    let names: Vec<&str> = tables.iter().map(|t| truncated(&t.name)).collect();
    let live = Live::read(client, schema, &names).await?;
    let types = Types::read(client, tables, what).await?;
    let expected = Expected {
        schema,
        tables,
        with_functions: false,
        types: &types,
    };
    let changes = diff(&expected, &live, false);
    check(mode, &changes)?;
    for change in &changes {
        if !allowed(mode, change) {
            warn!(schema, difference = %change.difference, ?mode, "schema difference left as is");
            continue;
        }
        debug!(schema, difference = %change.difference, "fixing the schema");
        for statement in &change.statements {
            client
                .batch_execute(statement)
                .await
                .map_err(|e| map_db_error(e, what))?;
        }
    }
    Ok(())
}

/// Fails on an `id` column of another type, and on the missing tables and columns the
/// mode may not create.
fn check(mode: AutoCreate, changes: &[Change]) -> Result<()> {
    for change in changes {
        if let SchemaDifference::ColumnType {
            table,
            column,
            expected,
            found,
        } = &change.difference
        {
            if column == "id" {
                return Err(Error::Configuration(format!(
                    "table {table} has an id column of type {found}, but the store's type needs {expected}"
                )));
            }
        }
    }
    let missing: Vec<String> = changes
        .iter()
        .filter(|c| blocks(mode, c))
        .map(|c| match &c.difference {
            SchemaDifference::MissingSchema { schema } => format!("schema {schema}"),
            other => other.object(),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::SchemaObjectMissing {
        object: missing.join(", "),
    })
}

fn is_index(change: &Change) -> bool {
    matches!(
        change.difference,
        SchemaDifference::MissingIndex { .. } | SchemaDifference::IndexChanged { .. }
    )
}

/// Whether a difference stops the store under `mode`.
fn blocks(mode: AutoCreate, change: &Change) -> bool {
    match mode {
        AutoCreate::None => change.fix != Fix::Manual && !is_index(change),
        AutoCreate::CreateOnly => change.fix == Fix::Alter && !is_index(change),
        _ => false,
    }
}

/// Whether `mode` runs the fix of a difference.
fn allowed(mode: AutoCreate, change: &Change) -> bool {
    match (mode, change.fix) {
        (_, Fix::Manual) | (AutoCreate::None, _) => false,
        (AutoCreate::CreateOnly, fix) => fix == Fix::Create,
        _ => true,
    }
}

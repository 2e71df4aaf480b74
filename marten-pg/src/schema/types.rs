//! The canonical names of the column types marten expects, as PostgreSQL's `format_type`
//! prints them: the schema check compares them with the types the catalogs hold
//! ([`Live`](super::live::Live) reads `format_type(atttypid, atttypmod)`), so that any
//! spelling of a type in DDL (`int`, `numeric(12,2)`, `varchar(20)`,
//! `timestamp with time zone`) matches the column it created, its type modifier included.
//!
//! The common spellings are known without asking ([`known_type`]); the others are asked
//! of the server once per check, in two round trips whatever their number: a statement
//! `SELECT NULL::t1, NULL::t2, ..` is prepared (never run), whose description carries each
//! type's oid and modifier, which `format_type` then prints.

use std::collections::HashMap;

use marten_core::Result;
use tokio_postgres::Client;
use tracing::debug;

use crate::error_map::{map_db_error, Failed};
use crate::tables::def::{known_type, TableDef};

/// Each `(oid, modifier)` pair printed by `format_type`, in order.
const FORMAT_TYPES: &str = "SELECT format_type(t.oid, t.typmod) \
     FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS t(oid, typmod, n) ORDER BY t.n";

/// The canonical names of the declared types of some tables.
#[derive(Debug, Default)]
pub(crate) struct Types {
    /// Declared spelling -> canonical name, for the spellings [`known_type`] does not
    /// know.
    asked: HashMap<String, String>,
}

impl Types {
    /// The canonical name of the declared type `sql_type`: known, asked of the server,
    /// or (when the server could not name it: a type that does not exist) as declared.
    pub(crate) fn canonical<'a>(&'a self, sql_type: &'a str) -> &'a str {
        known_type(sql_type)
            .or_else(|| self.asked.get(sql_type).map(String::as_str))
            .unwrap_or(sql_type)
    }

    /// Asks the server for the canonical names of the column types of `tables` that
    /// [`known_type`] does not know (none: no round trip). Fails when the server cannot
    /// name one (a type that does not exist, a misspelled one): inside a migration's
    /// transaction, which the error aborts, creating the column would fail the same way.
    pub(crate) async fn read(
        client: &Client,
        tables: &[TableDef],
        what: Failed<'_>,
    ) -> Result<Types> {
        let mut types = Types::default();
        let unknown = unknown(tables);
        if !unknown.is_empty() {
            ask(client, &unknown, &mut types, what).await?;
        }
        Ok(types)
    }

    /// [`read`](Self::read) outside a transaction, for a check that reports differences
    /// rather than failing: a type the server cannot name (a type of the user's own not
    /// created yet) keeps its declared spelling.
    pub(crate) async fn read_lenient(client: &Client, tables: &[TableDef]) -> Result<Types> {
        let mut types = Types::default();
        let unknown = unknown(tables);
        let what = Failed::Other("reading the schema");
        if unknown.is_empty() || ask(client, &unknown, &mut types, what).await.is_ok() {
            return Ok(types);
        }
        // One type the server cannot name fails the whole statement: ask for each.
        for sql_type in unknown {
            if let Err(e) = ask(client, &[sql_type], &mut types, what).await {
                debug!(sql_type, error = %e, "the server cannot name a column type");
            }
        }
        Ok(types)
    }
}

/// The distinct declared column types of `tables` that [`known_type`] does not know.
fn unknown(tables: &[TableDef]) -> Vec<&str> {
    let mut unknown: Vec<&str> = tables
        .iter()
        .flat_map(|t| &t.columns)
        .map(|c| c.sql_type.as_str())
        .filter(|t| known_type(t).is_none())
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
}

/// Asks the server for the canonical names of `sql_types` (each a type name of a
/// column's DDL, never user input) and records them in `types`; an error is `what`'s.
async fn ask(
    client: &Client,
    sql_types: &[&str],
    types: &mut Types,
    what: Failed<'_>,
) -> Result<()> {
    let fail = |e| map_db_error(e, what);
    let probe = format!(
        "SELECT {}",
        sql_types
            .iter()
            .map(|t| format!("NULL::{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let described = client.prepare(&probe).await.map_err(fail)?;
    let (oids, modifiers): (Vec<u32>, Vec<i32>) = described
        .columns()
        .iter()
        .map(|c| (c.type_().oid(), c.type_modifier()))
        .unzip();
    let names: Vec<String> = client
        .query(FORMAT_TYPES, &[&oids, &modifiers])
        .await
        .map_err(fail)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(fail)?;
    types.asked.extend(
        sql_types
            .iter()
            .zip(names)
            .map(|(declared, canonical)| ((*declared).to_owned(), canonical)),
    );
    Ok(())
}

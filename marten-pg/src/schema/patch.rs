//! The schema a DBA reviews: the whole script of a store's objects ([`script`]) and the
//! patch that brings a database to it ([`SchemaPatch`], with its [`PatchOptions`]).

use std::fmt;

use marten_core::{Error, Result, SchemaDifference};
use tokio_postgres::Client;

use super::diff::{diff, Change, Expected, Fix};
use super::live::Live;
use super::types::Types;
use super::SchemaConn;
use crate::error_map::{map_db_error, Failed};
use crate::tables::def::TableDef;
use crate::tables::functions;

/// How [`DocumentStore::schema_patch`](crate::DocumentStore::schema_patch) writes its
/// statements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchOptions {
    concurrently: bool,
}

impl PatchOptions {
    /// The defaults: plain `CREATE INDEX`, the whole patch in one transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates and drops indexes with `CONCURRENTLY`, so writes to a live table go on
    /// while an index is built. Such statements cannot run inside a transaction: the
    /// patch's script then has no `BEGIN`/`COMMIT`, and each statement must run on its
    /// own (as `psql` runs a file, or [`SchemaPatch::statements`] one by one). A failed
    /// concurrent build leaves an invalid index, which the next patch replaces.
    pub fn concurrently(mut self, concurrently: bool) -> Self {
        self.concurrently = concurrently;
        self
    }

    /// Whether index statements use `CONCURRENTLY`.
    pub fn is_concurrent(&self) -> bool {
        self.concurrently
    }
}

/// The differences between a database and the schema a store's registered types need,
/// each with the statements that fix it. Render it with [`SchemaPatch::to_sql`] (or
/// `Display`) for review, or run it with
/// [`DocumentStore::apply_schema_patch`](crate::DocumentStore::apply_schema_patch).
#[derive(Debug, Clone)]
pub struct SchemaPatch {
    schema: String,
    concurrently: bool,
    changes: Vec<Change>,
}

impl SchemaPatch {
    /// Whether the database already matches: no differences.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Every difference, in the order of the store's schema script.
    pub fn differences(&self) -> impl Iterator<Item = &SchemaDifference> {
        self.changes.iter().map(|c| &c.difference)
    }

    /// The differences no statement can fix (a column of another type, whose data
    /// needs a migration only a person can write).
    pub fn manual(&self) -> impl Iterator<Item = &SchemaDifference> {
        self.changes
            .iter()
            .filter(|c| c.fix == Fix::Manual)
            .map(|c| &c.difference)
    }

    /// The statements of the patch, in order, each to be run on its own (without a
    /// trailing `;`).
    pub fn statements(&self) -> impl Iterator<Item = &str> {
        self.changes
            .iter()
            .flat_map(|c| c.statements.iter().map(String::as_str))
    }

    /// Whether index statements use `CONCURRENTLY` (and so run outside a transaction).
    pub fn is_concurrent(&self) -> bool {
        self.concurrently
    }

    /// The patch as a SQL script for review: a comment naming each difference, then
    /// the statements that fix it. In one transaction unless the patch is concurrent.
    pub fn to_sql(&self) -> String {
        let schema = &self.schema;
        if self.is_empty() {
            return format!("-- schema {schema} matches the registered types: nothing to do\n");
        }
        let mut out = format!(
            "-- marten schema patch for schema {schema}: {} difference(s)\n",
            self.changes.len()
        );
        if self.concurrently {
            out.push_str(
                "-- CONCURRENTLY cannot run in a transaction: run each statement on its own\n\n",
            );
        } else {
            out.push_str("\nBEGIN;\n\n");
        }
        for change in &self.changes {
            out.push_str(&format!("-- {}\n", change.difference));
            if change.fix == Fix::Manual {
                out.push_str("-- needs a manual migration: marten cannot convert the data\n");
            }
            for statement in &change.statements {
                out.push_str(statement);
                out.push_str(";\n");
            }
            out.push('\n');
        }
        if !self.concurrently {
            out.push_str("COMMIT;\n");
        }
        out
    }

    /// `Ok` when empty, else [`Error::SchemaMismatch`] listing every difference.
    pub fn into_result(self) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        Err(Error::SchemaMismatch {
            differences: self.changes.into_iter().map(|c| c.difference).collect(),
        })
    }
}

impl fmt::Display for SchemaPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sql())
    }
}

/// The patch of `schema` against the whole set of `tables` (the schema and its
/// functions included), read on `conn` in one step (at most the request timeout): the
/// catalogs, and the canonical names of the column types ([`Types`]).
pub(crate) async fn patch(
    conn: &SchemaConn<'_>,
    schema: &str,
    tables: &[TableDef],
    options: PatchOptions,
) -> Result<SchemaPatch> {
    let names: Vec<&str> = tables
        .iter()
        .map(|t| super::names::truncated(&t.name))
        .collect();
    let doing = format!("reading schema {schema}");
    let client = conn.client();
    let (live, types) = conn
        .step(&doing, async {
            let live = Live::read(client, schema, &names).await?;
            Ok((live, Types::read_lenient(client, tables).await?))
        })
        .await?;
    let expected = Expected {
        schema,
        tables,
        with_functions: true,
        types: &types,
    };
    Ok(SchemaPatch {
        schema: schema.to_owned(),
        concurrently: options.concurrently,
        changes: diff(&expected, &live, options.concurrently),
    })
}

/// Runs a patch's statements on `conn` under the schema's migration lock: in one
/// transaction holding it, or, when the patch is concurrent (its statements cannot run in
/// a transaction), one by one with the lock held for the session and released after
/// ([`with_session_migration_lock`](super::with_session_migration_lock); `conn` is a
/// connection of its own, closed when dropped, so a patch given up or cancelled never
/// leaves the lock held). Each lock is waited for at most
/// [`lock_wait`](super::lock_wait) of the request timeout (then
/// [`Error::LockNotAvailable`]); each statement waits for its answer at most the request
/// timeout ([`Error::Timeout`] past it: the connection is cancelled and closed, which
/// rolls back a patch in a transaction).
pub(crate) async fn apply(conn: &SchemaConn<'_>, patch: &SchemaPatch) -> Result<()> {
    let what = Failed::Migrating(&patch.schema);
    let doing = super::migrating(&patch.schema);
    let doing = doing.as_str();
    if patch.concurrently {
        return super::with_session_migration_lock(conn, &patch.schema, |c| async move {
            for statement in patch.statements() {
                c.step(doing, run(c.client(), statement, what)).await?;
            }
            Ok(())
        })
        .await;
    }
    super::with_migration_lock(conn, &patch.schema, |c| async move {
        for statement in patch.statements() {
            c.step(doing, run(c.client(), statement, what)).await?;
        }
        Ok(())
    })
    .await
}

/// Runs one statement of a patch.
async fn run(client: &Client, statement: &str, what: Failed<'_>) -> Result<()> {
    client
        .batch_execute(statement)
        .await
        .map_err(|e| map_db_error(e, what))
}

/// The whole DDL of a store's schema as one script: the schema, its functions, then
/// every table with its sequences, columns and indexes. Idempotent: every statement is
/// `IF NOT EXISTS` or `OR REPLACE`.
pub(crate) fn script(schema: &str, tables: &[TableDef]) -> String {
    let mut out = format!(
        "-- marten schema {schema}: every table, function and index of the store's registered types.\n\
         -- Idempotent: running it again changes nothing.\n\n\
         CREATE SCHEMA IF NOT EXISTS {schema};\n\n{};\n",
        functions::create_guard(schema)
    );
    for table in tables {
        out.push_str(&format!("\n-- table {schema}.{}\n", table.name));
        for statement in table.ddl(schema) {
            out.push_str(&statement);
            out.push_str(";\n");
        }
    }
    out
}

//! [`SchemaDifference`]: one way the database differs from the schema a store's
//! registered types need, as [`Error::SchemaMismatch`](super::Error::SchemaMismatch)
//! lists them. Uses nothing else.

use std::fmt;

/// One difference between the schema a store needs and the database: the object it
/// concerns (schema-qualified) and, where there is one, its expected and found shape.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaDifference {
    /// The schema itself does not exist.
    MissingSchema {
        /// The schema.
        schema: String,
    },
    /// A table does not exist.
    MissingTable {
        /// The table, schema-qualified.
        table: String,
    },
    /// A table lacks a column.
    MissingColumn {
        /// The table, schema-qualified.
        table: String,
        /// The column.
        column: String,
        /// The column's expected type, as PostgreSQL's `format_type` prints it (e.g.
        /// `bigint`, `numeric(12,2)`).
        expected: String,
    },
    /// A column has another type than the registered type needs.
    ColumnType {
        /// The table, schema-qualified.
        table: String,
        /// The column.
        column: String,
        /// The expected type, as PostgreSQL's `format_type` prints it (e.g. `uuid`,
        /// `timestamp with time zone`).
        expected: String,
        /// The type found, printed the same way.
        found: String,
    },
    /// An index does not exist.
    MissingIndex {
        /// The table, schema-qualified.
        table: String,
        /// The index, schema-qualified.
        index: String,
        /// Its expected shape, e.g. `UNIQUE btree (email)`.
        expected: String,
    },
    /// An index exists in another shape (its method, uniqueness or keys differ, or it
    /// is invalid after a failed concurrent build), or the index of the same field exists
    /// under the other kind's name (`_idx_` instead of `_uidx_`, or the reverse).
    IndexChanged {
        /// The table, schema-qualified.
        table: String,
        /// The expected index, schema-qualified.
        index: String,
        /// Its expected shape, e.g. `UNIQUE btree (email)`.
        expected: String,
        /// The index found, schema-qualified (the expected name, or the one it replaces).
        found_index: String,
        /// The shape found, e.g. `btree (email)`.
        found: String,
    },
    /// A function does not exist.
    MissingFunction {
        /// The function, schema-qualified, with `()`.
        function: String,
    },
    /// A sequence does not exist.
    MissingSequence {
        /// The sequence, schema-qualified.
        sequence: String,
    },
}

impl SchemaDifference {
    /// The object the difference concerns, schema-qualified: `schema`, `schema.table`,
    /// `schema.table.column`, `schema.index`, `schema.function()` or `schema.sequence`.
    pub fn object(&self) -> String {
        match self {
            SchemaDifference::MissingSchema { schema } => schema.clone(),
            SchemaDifference::MissingTable { table } => table.clone(),
            SchemaDifference::MissingColumn { table, column, .. }
            | SchemaDifference::ColumnType { table, column, .. } => format!("{table}.{column}"),
            SchemaDifference::MissingIndex { index, .. }
            | SchemaDifference::IndexChanged { index, .. } => index.clone(),
            SchemaDifference::MissingFunction { function } => function.clone(),
            SchemaDifference::MissingSequence { sequence } => sequence.clone(),
        }
    }
}

impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaDifference::MissingSchema { schema } => write!(f, "schema {schema} is missing"),
            SchemaDifference::MissingTable { table } => write!(f, "table {table} is missing"),
            SchemaDifference::MissingColumn {
                table,
                column,
                expected,
            } => write!(f, "column {table}.{column} ({expected}) is missing"),
            SchemaDifference::ColumnType {
                table,
                column,
                expected,
                found,
            } => write!(
                f,
                "column {table}.{column}: expected type {expected}, found {found}"
            ),
            SchemaDifference::MissingIndex {
                table,
                index,
                expected,
            } => write!(f, "index {index} on {table} ({expected}) is missing"),
            SchemaDifference::IndexChanged {
                table,
                index,
                expected,
                found_index,
                found,
            } => {
                write!(
                    f,
                    "index {index} on {table}: expected {expected}, found {found}"
                )?;
                if found_index != index {
                    write!(f, " as {found_index}")?;
                }
                Ok(())
            }
            SchemaDifference::MissingFunction { function } => {
                write!(f, "function {function} is missing")
            }
            SchemaDifference::MissingSequence { sequence } => {
                write!(f, "sequence {sequence} is missing")
            }
        }
    }
}

//! What a schema holds, read from PostgreSQL's catalogs in a few queries: whether it
//! exists, the columns and indexes of the tables asked about, its functions and
//! sequences. The schema check compares it with the tables marten expects.

use std::collections::{HashMap, HashSet};

use marten_core::Result;
use tokio_postgres::{Client, Row};

use crate::error_map::{map_db_error, Failed};
use crate::tables::def::shape;

/// An index as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveIndex {
    /// Whether it is unique.
    pub(crate) unique: bool,
    /// Its access method.
    pub(crate) method: String,
    /// Its keys, each with its operator class when that is not the default.
    pub(crate) keys: Vec<String>,
    /// False after a failed `CREATE INDEX CONCURRENTLY`: it exists but serves nothing.
    pub(crate) valid: bool,
    /// The predicate of a partial index, as `pg_get_expr(.., true)` prints it.
    pub(crate) predicate: Option<String>,
}

impl LiveIndex {
    /// Its shape, as schema differences show it.
    pub(crate) fn shape(&self) -> String {
        let shape = shape(
            self.unique,
            &self.method,
            &self.keys,
            self.predicate.as_deref(),
        );
        if self.valid {
            shape
        } else {
            format!("INVALID {shape}")
        }
    }
}

/// The state of one schema.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Whether the schema exists.
    pub(crate) schema_exists: bool,
    /// Table -> its columns as `(name, type)`, the type as `format_type` prints it.
    pub(crate) columns: HashMap<String, Vec<(String, String)>>,
    /// Table -> index name -> index.
    pub(crate) indexes: HashMap<String, HashMap<String, LiveIndex>>,
    /// Function names.
    pub(crate) functions: HashSet<String>,
    /// Sequence names.
    pub(crate) sequences: HashSet<String>,
}

/// Each column's type as `format_type` prints it, its modifier included
/// (`numeric(12,2)`), the canonical name [`Types`](super::types::Types) compares it with.
const COLUMNS: &str = "SELECT c.relname::text, a.attname::text, \
     format_type(a.atttypid, a.atttypmod) \
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p') \
     AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum";

/// Each key of an index as `pg_get_indexdef` writes it, with the operator class when it
/// is not the type's default (`data jsonb_path_ops`).
const INDEXES: &str = "SELECT c.relname::text, i.relname::text, x.indisunique, x.indisvalid, \
     am.amname::text, ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true) \
       || CASE WHEN o.opcdefault THEN '' ELSE ' ' || o.opcname::text END \
       FROM generate_series(1, x.indnkeyatts::int) AS k \
       JOIN pg_opclass o ON o.oid = x.indclass[k - 1] ORDER BY k), \
     pg_get_expr(x.indpred, x.indrelid, true) \
     FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
     JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_am am ON am.oid = i.relam \
     WHERE n.nspname = $1 AND c.relname = ANY($2::text[])";

const OBJECTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
     ARRAY(SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
       WHERE n.nspname = $1), \
     ARRAY(SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
       WHERE n.nspname = $1 AND c.relkind = 'S')";

impl Live {
    /// Reads `schema`: its functions and sequences, and the columns and indexes of
    /// `tables`.
    pub(crate) async fn read(client: &Client, schema: &str, tables: &[&str]) -> Result<Live> {
        let what = Failed::Other("reading the schema");
        let fail = |e| map_db_error(e, what);
        let objects = client.query_one(OBJECTS, &[&schema]).await.map_err(fail)?;
        let mut live = Live {
            schema_exists: objects.try_get(0).map_err(fail)?,
            functions: objects
                .try_get::<_, Vec<String>>(1)
                .map_err(fail)?
                .into_iter()
                .collect(),
            sequences: objects
                .try_get::<_, Vec<String>>(2)
                .map_err(fail)?
                .into_iter()
                .collect(),
            ..Live::default()
        };
        for row in client
            .query(COLUMNS, &[&schema, &tables])
            .await
            .map_err(fail)?
        {
            let (table, column, sql_type): (String, String, String) = (
                row.try_get(0).map_err(fail)?,
                row.try_get(1).map_err(fail)?,
                row.try_get(2).map_err(fail)?,
            );
            live.columns
                .entry(table)
                .or_default()
                .push((column, sql_type));
        }
        for row in client
            .query(INDEXES, &[&schema, &tables])
            .await
            .map_err(fail)?
        {
            let (table, name, index) = index_of(&row).map_err(fail)?;
            live.indexes.entry(table).or_default().insert(name, index);
        }
        Ok(live)
    }

    /// The columns of a table; `None` when it does not exist.
    pub(crate) fn table(&self, table: &str) -> Option<&[(String, String)]> {
        self.columns.get(table).map(Vec::as_slice)
    }

    /// An index of a table.
    pub(crate) fn index(&self, table: &str, index: &str) -> Option<&LiveIndex> {
        self.indexes.get(table).and_then(|ixs| ixs.get(index))
    }
}

fn index_of(row: &Row) -> Result<(String, String, LiveIndex), tokio_postgres::Error> {
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        LiveIndex {
            unique: row.try_get(2)?,
            valid: row.try_get(3)?,
            method: row.try_get(4)?,
            keys: row.try_get(5)?,
            predicate: row.try_get(6)?,
        },
    ))
}

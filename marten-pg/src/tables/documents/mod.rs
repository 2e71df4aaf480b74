//! All SQL text of a document table: its DDL, the reads every mode shares, and (in
//! `off.rs`, `optimistic.rs`, `numeric.rs`) the writes of each concurrency mode, their
//! bulk inserts among them (`bulk.rs`). Everything there is built once per document
//! type (the storages keep it in a static), never per operation. Patches and deletes by
//! filter (`patch.rs`) are built per statement: their text depends on the patch's
//! operations and the filter's shape (never on a value). The full-text index and the
//! searches it serves are in `full_text.rs`.
//!
//! How statements scope a table's rows (a conjoined type's tenant, a soft-deleted
//! type's live rows) is [`Scope`] (`scope.rs`).
//!
//! Statements name the table without a schema: each store qualifies a statement's text
//! once, on first use ([`crate::tables::qualify`]). DDL is schema-qualified.
//!
//! Write statements that can be rejected (a stale version, an existing id on insert, a
//! missing row on update) never raise: they return the ids (and new versions) they wrote,
//! and when fewer rows were written than asked they set the transaction-local flag
//! [`REJECTED_FLAG`]. The unit of work ends the batch with
//! [`ASSERT_NO_REJECTIONS`](crate::tables::functions::ASSERT_NO_REJECTIONS), which raises when the
//! flag is set, so every rejection of a batch is seen and the whole batch rolls back
//! within a single round trip.

mod bulk;
mod full_text;
mod numeric;
mod off;
mod optimistic;
mod patch;
mod scope;

pub use bulk::{BulkSql, BulkVersion, STAGING_TABLE};
pub use full_text::{
    full_text_index, full_text_index_name, rank_expression, search_condition, SearchKind,
};
pub use numeric::NumericSql;
pub use off::OffSql;
pub use optimistic::OptimisticSql;
pub use patch::{by_id, delete_where, mark_deleted_where, patched_data, update, VersionBump};
pub use scope::{Scope, DELETED_AT_COLUMN, DELETED_COLUMN};

use crate::tables::def::{ColumnDef, IndexDef, TableDef};
use crate::tables::functions::REJECTED_FLAG;

/// The column holding a conjoined row's tenant.
pub const TENANT_COLUMN: &str = "tenant_id";

/// The column holding an optimistic version.
pub const VERSION_COLUMN: &str = "mt_version";
/// The column holding a numeric revision.
pub const REVISION_COLUMN: &str = "mt_revision";

/// The optimistic version column (existing rows get a random version when it is added).
pub fn version_column() -> ColumnDef {
    ColumnDef::new(VERSION_COLUMN, "uuid", "NOT NULL DEFAULT gen_random_uuid()")
}

/// The numeric revision column (existing rows get revision 1 when it is added).
pub fn revision_column() -> ColumnDef {
    ColumnDef::new(REVISION_COLUMN, "bigint", "NOT NULL DEFAULT 1")
}

/// A document table: the base columns, the mode's `version` column, the duplicated,
/// indexed columns (`#[document(index)]`, `#[document(unique)]`) as generated columns
/// (kept in step with `data` by PostgreSQL on every write), their indexes, and the GIN
/// index over the whole document (`#[document(gin)]`).
///
/// A conjoined table has a `tenant_id` column leading its primary key and every btree
/// index, so a unique field is unique per tenant.
pub fn table_def(
    table: &str,
    id_type: &str,
    version: Option<ColumnDef>,
    indexes: &[marten_core::IndexSpec],
    gin: bool,
    scope: Scope,
) -> TableDef {
    let mut columns = if scope.conjoined() {
        vec![
            // Byte order, as the indexed text columns: the cheapest comparison for the
            // key every statement of the table matches first.
            ColumnDef::new(TENANT_COLUMN, "text", "COLLATE \"C\" NOT NULL"),
            ColumnDef::new("id", id_type, "NOT NULL"),
        ]
    } else {
        vec![ColumnDef::new("id", id_type, "PRIMARY KEY")]
    };
    columns.extend([
        ColumnDef::new("data", "jsonb", "NOT NULL"),
        ColumnDef::new("mt_last_modified", "timestamptz", "NOT NULL DEFAULT now()"),
    ]);
    columns.extend(version);
    let mut def = TableDef::new(table, columns);
    if scope.conjoined() {
        def.constraints
            .push(format!("PRIMARY KEY ({TENANT_COLUMN}, id)"));
    }
    if scope.soft_delete() {
        soft_delete_columns(&mut def, scope);
    }
    for ix in indexes {
        let key = ix.json_key.replace('\'', "''");
        let (col, ty) = (ix.column, ix.sql_type);
        // Text in byte order, as queries compare it (so the index serves them).
        let collate = if ty == "text" { "COLLATE \"C\" " } else { "" };
        def.columns.push(ColumnDef::new(
            col,
            ty,
            &format!("{collate}GENERATED ALWAYS AS ((data ->> '{key}')::{ty}) STORED"),
        ));
        let keys: &[&str] = if scope.conjoined() {
            &[TENANT_COLUMN, col]
        } else {
            &[col]
        };
        let mut index = IndexDef::btree(&index_name(table, ix), ix.unique, keys);
        let other_kind = marten_core::IndexSpec {
            unique: !ix.unique,
            ..*ix
        };
        index.replaces.push(index_name(table, &other_kind));
        def.indexes.push(index);
    }
    if gin {
        let mut index = IndexDef::btree(&gin_index_name(table), false, &["data jsonb_path_ops"]);
        index.method = "gin";
        def.indexes.push(index);
    }
    def
}

/// The columns of a soft-deleted table (`mt_deleted`, `mt_deleted_at`; existing rows are
/// live when they are added) and its two partial indexes: the live rows by id (`_live`,
/// which keeps reads of a table of mostly deleted rows fast) and the deleted rows by
/// when they were marked (`_deleted`, for `only_deleted`, undo and purges), both led by
/// the tenant of a conjoined table.
fn soft_delete_columns(def: &mut TableDef, scope: Scope) {
    def.columns.extend([
        ColumnDef::new(DELETED_COLUMN, "boolean", "NOT NULL DEFAULT false"),
        ColumnDef::new(DELETED_AT_COLUMN, "timestamptz", ""),
    ]);
    let tenant: &[&str] = if scope.conjoined() {
        &[TENANT_COLUMN]
    } else {
        &[]
    };
    let keys = |last: &'static str| [tenant, &[last]].concat();
    let table = def.name.clone();
    def.indexes.push(
        IndexDef::btree(&format!("{table}_live"), false, &keys("id"))
            .partial(&format!("NOT {DELETED_COLUMN}")),
    );
    def.indexes.push(
        IndexDef::btree(&format!("{table}_deleted"), false, &keys(DELETED_AT_COLUMN))
            .partial(DELETED_COLUMN),
    );
}

/// The name of a field's index: `{table}_idx_{field}` (`_uidx_` when unique).
pub fn index_name(table: &str, ix: &marten_core::IndexSpec) -> String {
    let kind = if ix.unique { "uidx" } else { "idx" };
    format!("{table}_{kind}_{}", ix.field.to_lowercase())
}

/// The name of the GIN index over a table's documents.
pub fn gin_index_name(table: &str) -> String {
    format!("{table}_gin")
}

/// The field a unique index guards, from the index's name (`{table}_uidx_{field}`).
pub fn unique_field<'a>(table: &str, constraint: &'a str) -> Option<&'a str> {
    constraint.strip_prefix(table)?.strip_prefix("_uidx_")
}

/// `DROP TABLE IF EXISTS`, for the drop-and-recreate schema mode.
pub fn drop_table(schema: &str, table: &str) -> String {
    format!("DROP TABLE IF EXISTS {schema}.{table} CASCADE")
}

/// Reads that every mode shares, given the mode's version column (or none).
pub struct ReadSql {
    /// `$1` = id -> `data[, version]`
    pub load: String,
    /// `$1` = ids -> `id, data[, version]`
    pub load_many: String,
    /// Like `load_many`, locking the rows in id order until the transaction ends.
    pub load_many_locked: String,
    /// `$1` = id -> `version, mt_last_modified, deleted, deleted_at` (a soft-deleted
    /// table's marked rows too; `false, NULL` for other tables).
    pub metadata: String,
    /// `$1` = ids -> `id, version`, to explain rejections after a rollback (of the live
    /// rows: a marked row is a missing document to an update).
    pub versions: String,
    /// `$1` = ids -> `id, version` of every row, marked deleted or not: the ids a
    /// primary key refuses.
    pub stored: String,
    /// `$1` = id: removes the row, or marks it deleted (a soft-deleted table).
    pub delete_one: String,
    /// `$1` = ids: removes the rows, or marks them deleted (a soft-deleted table).
    pub delete_many: String,
    /// `$1` = id: removes the row, marked deleted or not.
    pub hard_delete_one: String,
    /// `$1` = ids: removes the rows, marked deleted or not.
    pub hard_delete_many: String,
    /// Every row (a rebuild of every tenant).
    pub delete_all: String,
    /// `$1` = tenant: every row of one tenant (conjoined tables only).
    pub delete_tenant: String,
    /// `$1` = ids, `$2` = the documents expected to be stored (NULL = none) -> one row:
    /// how many differ, and the rejected flag set when any does.
    pub unchanged: String,
    /// [`ReadSql::unchanged`] for one document, with scalar parameters (a statement whose
    /// generic plan is as good as a custom one, so it is planned once per connection).
    pub unchanged_one: String,
}

impl ReadSql {
    /// Builds the reads for a table; `version` is the version column, if the mode has one.
    /// A conjoined table's reads take the tenant after their row parameters; a
    /// soft-deleted table's skip the rows marked deleted (except the locked read of the
    /// inline projections, which see every row they may write).
    pub fn new(table: &str, id_type: &str, version: Option<&str>, scope: Scope) -> Self {
        let v = version.map_or_else(String::new, |c| format!(", {c}"));
        let meta_v = version.unwrap_or("NULL::int");
        let t2 = scope.filter("", 2);
        let dt3 = scope.filter("d.", 3);
        let live = scope.live("");
        let (one, many) = ("id = $1", format!("id = ANY($1::{id_type}[])"));
        let remove = |rows: &str| format!("DELETE FROM {table} WHERE {rows}{t2}");
        let delete = |rows: &str| {
            if scope.soft_delete() {
                format!(
                    "UPDATE {table} SET {DELETED_COLUMN} = true, {DELETED_AT_COLUMN} = now() \
                     WHERE {rows}{t2}{live}"
                )
            } else {
                remove(rows)
            }
        };
        ReadSql {
            load: format!("SELECT data{v} FROM {table} WHERE {one}{t2}{live}"),
            load_many: format!("SELECT id, data{v} FROM {table} WHERE {many}{t2}{live}"),
            load_many_locked: format!(
                "SELECT id, data{v} FROM {table} WHERE {many}{t2} ORDER BY id FOR UPDATE"
            ),
            metadata: format!(
                "SELECT {meta_v}, mt_last_modified, {} FROM {table} WHERE {one}{t2}",
                if scope.soft_delete() {
                    format!("{DELETED_COLUMN}, {DELETED_AT_COLUMN}")
                } else {
                    "false, NULL::timestamptz".to_owned()
                }
            ),
            versions: format!("SELECT id, {meta_v} FROM {table} WHERE {many}{t2}{live}"),
            stored: format!("SELECT id, {meta_v} FROM {table} WHERE {many}{t2}"),
            delete_one: delete(one),
            delete_many: delete(&many),
            hard_delete_one: remove(one),
            hard_delete_many: remove(&many),
            delete_all: format!("DELETE FROM {table}"),
            delete_tenant: format!("DELETE FROM {table} WHERE {TENANT_COLUMN} = $1"),
            // A scalar subquery per id: an index lookup, never a hashed scan of the table.
            unchanged: format!(
                "SELECT c.n, CASE WHEN c.n > 0 THEN set_config('{REJECTED_FLAG}', 't', true) END \
                 FROM (SELECT count(*) AS n FROM unnest($1::{id_type}[], $2::jsonb[]) AS i(id, data) \
                 WHERE (SELECT d.data FROM {table} d WHERE d.id = i.id{dt3}) IS DISTINCT FROM i.data) c"
            ),
            unchanged_one: format!(
                "SELECT c.n, CASE WHEN c.n > 0 THEN set_config('{REJECTED_FLAG}', 't', true) END \
                 FROM (SELECT ((SELECT d.data FROM {table} d WHERE d.id = $1::{id_type}{dt3}) \
                 IS DISTINCT FROM $2::jsonb)::int::bigint AS n) c"
            ),
        }
    }
}

/// One write in its single-row and its array (`unnest`) form.
pub struct WriteSql {
    /// For one document: scalar parameters.
    pub one: String,
    /// For many documents: one array parameter per column, plus the row count last.
    pub many: String,
    /// For one document written as the whole save (no transaction, no guard): scalar
    /// parameters; sets no flag. A checked write returns `id, version` of the row it wrote
    /// and no row when it was rejected; in the optimistic mode, whose versions the client
    /// chooses, it returns nothing and its row count tells.
    pub one_alone: String,
    /// [`WriteSql::one`] guarded by the document it replaces: the cached document an
    /// inline aggregate was planned from is bound last (NULL = no document stored), and
    /// unless the stored one is still exactly that, the statement writes nothing. It reads
    /// back and flags like a checked write, so a write that wrote nothing (the guard
    /// failed, or the write itself was refused) is a rejection.
    pub one_guarded: String,
}

/// The shape of the `input` relation a write reads from: column names and SQL types,
/// in parameter order, and the table's scope (a conjoined input has a `tenant_id`
/// column, bound once after the row parameters).
pub(crate) struct Input<'a> {
    table: &'a str,
    columns: &'a [(&'a str, &'a str)],
    scope: Scope,
}

impl<'a> Input<'a> {
    /// The input of `table` with `scope`, its columns given in parameter order, the id
    /// first.
    pub(crate) fn new(table: &'a str, columns: &'a [(&'a str, &'a str)], scope: Scope) -> Self {
        Input {
            table,
            columns,
            scope,
        }
    }

    /// ` , $n::text AS tenant_id` for a conjoined input, the tenant following the rows.
    fn tenant(&self) -> String {
        if self.scope.conjoined() {
            format!(", ${}::text AS {TENANT_COLUMN}", self.columns.len() + 1)
        } else {
            String::new()
        }
    }

    /// The parameter of the row count: after the rows and the tenant.
    fn count_param(&self) -> usize {
        self.columns.len() + 1 + usize::from(self.scope.conjoined())
    }

    fn one(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| format!("${}::{ty} AS {name}", i + 1))
            .collect();
        format!("SELECT {}{}", cols.join(", "), self.tenant())
    }

    /// [`Input::one`], empty unless the stored document of the id (`$1`) is still the
    /// one bound after the row and the tenant (NULL: none stored). A scalar subquery: one
    /// primary-key lookup.
    fn one_guarded(&self) -> String {
        let (id_type, cached) = (self.columns[0].1, self.count_param());
        let tenant = self.scope.filter("s.", self.columns.len() + 1);
        format!(
            "{} WHERE (SELECT s.data FROM {} s WHERE s.id = $1::{id_type}{tenant}) \
             IS NOT DISTINCT FROM ${cached}::jsonb",
            self.one(),
            self.table
        )
    }

    /// The rows of a batch, in the order they are bound: by id (the batch puts them in
    /// that order before it is sent, `WriteBatch::order_rows`), so every batch of the
    /// table writes (and so locks) its rows in one order.
    fn many(&self) -> String {
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::{ty}[]", i + 1))
            .collect();
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        format!(
            "SELECT i.*{} FROM unnest({}) AS i({})",
            self.tenant(),
            arrays.join(", "),
            names.join(", ")
        )
    }

    /// A write that reports what it wrote and flags the transaction when it wrote fewer
    /// rows than its input has. `returning` is the version expression of the written row.
    pub(crate) fn flagged(&self, dml: &str, version: &str) -> WriteSql {
        let count_param = self.count_param();
        let wrap = |input: String, expected: String| {
            format!(
                "WITH input AS ({input}), written AS ({dml} RETURNING d.id, {version} AS v) \
                 SELECT array_agg(written.id), array_agg(written.v), \
                 CASE WHEN count(*) < {expected} THEN set_config('{REJECTED_FLAG}', 't', true) END FROM written"
            )
        };
        WriteSql {
            one: wrap(self.one(), "1".to_owned()),
            many: wrap(self.many(), format!("${count_param}::bigint")),
            one_alone: format!(
                "WITH input AS ({}) {dml} RETURNING d.id, {version}",
                self.one()
            ),
            one_guarded: wrap(self.one_guarded(), "1".to_owned()),
        }
    }

    /// [`Input::flagged`] of a write whose new version the client chose (the optimistic
    /// mode's fresh uuid): alone, it returns no row, and its row count (1 or 0) says
    /// whether it was written; the written version is the one the client sent.
    pub(crate) fn flagged_counted(&self, dml: &str, version: &str) -> WriteSql {
        WriteSql {
            one_alone: format!("WITH input AS ({}) {dml}", self.one()),
            ..self.flagged(dml, version)
        }
    }

    /// A write whose result is not inspected (it cannot be rejected); guarded, it reads
    /// back like [`Input::flagged`] with `version`, and writing nothing is a rejection.
    pub(crate) fn plain(&self, dml: &str, version: &str) -> WriteSql {
        let one = format!("WITH input AS ({}) {dml}", self.one());
        WriteSql {
            one_alone: one.clone(),
            one,
            many: format!("WITH input AS ({}) {dml}", self.many()),
            one_guarded: self.flagged(dml, version).one_guarded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marten_core::Tenancy;

    #[test]
    fn a_document_table_has_its_indexed_columns_and_the_other_kind_to_replace() {
        let email = marten_core::IndexSpec {
            field: "Email",
            json_key: "e'mail",
            column: "mt_f_email",
            sql_type: "text",
            unique: true,
        };
        let def = table_def(
            "mt_doc_u",
            "uuid",
            Some(revision_column()),
            &[email],
            true,
            Scope::of(Tenancy::Single),
        );
        let columns: Vec<String> = def.columns.iter().map(ColumnDef::definition).collect();
        assert_eq!(
            columns[3..],
            [
                "mt_revision bigint NOT NULL DEFAULT 1",
                "mt_f_email text COLLATE \"C\" GENERATED ALWAYS AS ((data ->> 'e''mail')::text) STORED",
            ]
        );
        assert_eq!(def.indexes[0].name, "mt_doc_u_uidx_email");
        assert_eq!(def.indexes[0].replaces, ["mt_doc_u_idx_email"]);
        assert_eq!(def.indexes[1].shape(), "gin (data jsonb_path_ops)");
    }

    #[test]
    fn a_soft_deleted_table_marks_skips_and_revives() {
        let scope = Scope::of(Tenancy::Conjoined).soft_deleted(true);
        let def = table_def("mt_doc_n", "bigint", None, &[], false, scope);
        let columns: Vec<String> = def.columns.iter().map(ColumnDef::definition).collect();
        assert!(columns.contains(&"mt_deleted boolean NOT NULL DEFAULT false".to_owned()));
        assert!(columns.contains(&"mt_deleted_at timestamptz".to_owned()));
        let shapes: Vec<String> = def.indexes.iter().map(IndexDef::shape).collect();
        assert_eq!(
            shapes,
            [
                "btree (tenant_id, id) WHERE NOT mt_deleted",
                "btree (tenant_id, mt_deleted_at) WHERE mt_deleted"
            ]
        );
        let reads = ReadSql::new("mt_doc_n", "bigint", None, scope);
        assert_eq!(
            reads.load,
            "SELECT data FROM mt_doc_n WHERE id = $1 AND tenant_id = $2 AND NOT mt_deleted"
        );
        assert_eq!(
            reads.delete_one,
            "UPDATE mt_doc_n SET mt_deleted = true, mt_deleted_at = now() \
             WHERE id = $1 AND tenant_id = $2 AND NOT mt_deleted"
        );
        assert_eq!(
            reads.hard_delete_one,
            "DELETE FROM mt_doc_n WHERE id = $1 AND tenant_id = $2"
        );
        assert!(!reads.load_many_locked.contains("mt_deleted"));
        assert!(!reads.stored.contains("mt_deleted"));
        let off = OffSql::new("mt_doc_n", "bigint", scope);
        assert!(off
            .upsert
            .one
            .ends_with("mt_deleted = false, mt_deleted_at = NULL"));
        assert!(off.update.one.contains("d.id = i.id AND NOT d.mt_deleted"));
        assert!(off.upsert.one_guarded.contains(
            "WHERE (SELECT s.data FROM mt_doc_n s WHERE s.id = $1::bigint AND s.tenant_id = $3) \
             IS NOT DISTINCT FROM $4::jsonb"
        ));
        let plain = ReadSql::new("mt_doc_n", "bigint", None, Scope::of(Tenancy::Single));
        assert!(!plain.load.contains("mt_deleted") && plain.delete_one.starts_with("DELETE"));
    }
}

//! Blue/green projection versions: the table naming the active version of each
//! versioned projection's document table (`mt_projection_versions`), the build table a
//! new version is projected into, and the statements of the switch (two renames in one
//! transaction) and of the explicit drop of superseded versions. Pure text.
//!
//! Names: the active version of document table `T` is always the table `T` itself, so
//! every reader and writer of the document type keeps its statements. Version `n` is
//! built into `T_vn` (its indexes suffixed `_vn`); the switch renames `T` to `T_va`
//! (`a` the version it held, its indexes suffixed likewise) and `T_vn` to `T` (its
//! indexes back to their own names). A superseded table `T_va` stays until
//! [`drop_old`] is run.

use crate::tables::def::TableDef;

/// The table naming the active version per versioned document table.
pub const VERSIONS_TABLE: &str = "mt_projection_versions";

/// The version a document table holds when no row names one.
pub const FIRST_VERSION: u32 = 1;

/// DDL of the versions table, idempotent.
pub fn ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{VERSIONS_TABLE} (\n  \
         doc_table text PRIMARY KEY,\n  active integer NOT NULL,\n  \
         switched_at timestamptz NOT NULL DEFAULT now()\n)"
    )
}

/// `$1` = document table -> the active version (no row: [`FIRST_VERSION`]).
pub fn active(schema: &str) -> String {
    format!("SELECT active FROM {schema}.{VERSIONS_TABLE} WHERE doc_table = $1")
}

/// `$1` = document table, `$2` = the version now active.
pub fn set_active(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.{VERSIONS_TABLE} (doc_table, active) VALUES ($1, $2) \
         ON CONFLICT (doc_table) DO UPDATE SET active = excluded.active, switched_at = now()"
    )
}

/// The name of version `version`'s table (or index) of `name`, while it is not active.
pub fn versioned(name: &str, version: u32) -> String {
    format!("{name}_v{version}")
}

/// The build table of `version` of document table `def`: the same columns and
/// constraints, its name and its indexes' names suffixed.
pub fn build_def(def: &TableDef, version: u32) -> TableDef {
    let mut build = def.clone();
    build.name = versioned(&def.name, version);
    for ix in &mut build.indexes {
        ix.name = versioned(&ix.name, version);
    }
    build.after.clear();
    build
}

/// The statements (after the lock of [`lock`]) that make version `to` (built in its
/// build table) the active table of `def` in place of version `from`.
pub fn switch(schema: &str, def: &TableDef, from: u32, to: u32) -> Vec<String> {
    let table = &def.name;
    let mut out = vec![format!(
        "ALTER TABLE {schema}.{table} RENAME TO {}",
        versioned(table, from)
    )];
    for ix in &def.indexes {
        out.push(format!(
            "ALTER INDEX IF EXISTS {schema}.{} RENAME TO {}",
            ix.name,
            versioned(&ix.name, from)
        ));
    }
    out.push(format!(
        "ALTER TABLE {schema}.{} RENAME TO {table}",
        versioned(table, to)
    ));
    for ix in &def.indexes {
        out.push(format!(
            "ALTER INDEX IF EXISTS {schema}.{} RENAME TO {}",
            versioned(&ix.name, to),
            ix.name
        ));
    }
    out
}

/// Locks document table `table` against readers and writers until the transaction ends
/// (the switch waits for queries in flight; queries that come later wait for it).
pub fn lock(schema: &str, table: &str) -> String {
    format!("LOCK TABLE {schema}.{table} IN ACCESS EXCLUSIVE MODE")
}

/// The lock a runner finding its target holds on the active table `table` while it reads
/// the active version and creates its build table: it and the switch's [`lock`] wait for
/// each other (and for nothing else: readers and writers go on).
pub fn share_lock(schema: &str, table: &str) -> String {
    format!("LOCK TABLE {schema}.{table} IN ACCESS SHARE MODE")
}

/// `$1` = schema, `$2` = a `LIKE` pattern over table names -> the tables of the schema
/// matching it (the superseded versions of a document table: see
/// [`old_versions_pattern`]).
pub const TABLES_LIKE: &str =
    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname::text LIKE $2 ORDER BY 1";

/// The `LIKE` pattern of the versioned tables of document table `table`.
pub fn old_versions_pattern(table: &str) -> String {
    format!("{}\\_v%", table.replace('_', "\\_"))
}

/// Whether `name` (a match of [`old_versions_pattern`]) is version table `table_v<n>`,
/// and which version.
pub fn version_of(table: &str, name: &str) -> Option<u32> {
    name.strip_prefix(table)?.strip_prefix("_v")?.parse().ok()
}

/// Drops superseded version table `name`.
pub fn drop_old(schema: &str, name: &str) -> String {
    format!("DROP TABLE IF EXISTS {schema}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::def::{ColumnDef, IndexDef};

    fn def() -> TableDef {
        let mut def = TableDef::new("mt_doc_tally", vec![ColumnDef::new("id", "uuid", "")]);
        def.indexes
            .push(IndexDef::btree("mt_doc_tally_idx_name", false, &["name"]));
        def
    }

    #[test]
    fn a_build_table_and_its_indexes_carry_the_version() {
        let b = build_def(&def(), 2);
        assert_eq!(b.name, "mt_doc_tally_v2");
        assert_eq!(b.indexes[0].name, "mt_doc_tally_idx_name_v2");
    }

    #[test]
    fn the_switch_renames_the_active_table_away_and_the_build_in() {
        let s = switch("s", &def(), 1, 2);
        assert_eq!(s[0], "ALTER TABLE s.mt_doc_tally RENAME TO mt_doc_tally_v1");
        assert_eq!(
            s[1],
            "ALTER INDEX IF EXISTS s.mt_doc_tally_idx_name RENAME TO mt_doc_tally_idx_name_v1"
        );
        assert_eq!(s[2], "ALTER TABLE s.mt_doc_tally_v2 RENAME TO mt_doc_tally");
        assert_eq!(
            s[3],
            "ALTER INDEX IF EXISTS s.mt_doc_tally_idx_name_v2 RENAME TO mt_doc_tally_idx_name"
        );
    }

    #[test]
    fn old_versions_are_recognised_by_name() {
        assert_eq!(old_versions_pattern("mt_doc_a"), "mt\\_doc\\_a\\_v%");
        assert_eq!(version_of("mt_doc_a", "mt_doc_a_v12"), Some(12));
        assert_eq!(version_of("mt_doc_a", "mt_doc_a_vx"), None);
        assert_eq!(version_of("mt_doc_a", "mt_doc_ab_v1"), None);
    }
}

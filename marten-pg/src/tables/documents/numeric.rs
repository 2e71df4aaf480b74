//! The writes of a document table in the numeric mode: an `bigint` revision bumped by
//! one per write, or written at a given revision.

use super::{BulkSql, BulkVersion, Input, Scope, WriteSql, REVISION_COLUMN};

/// The writes of a document type with numeric revisions.
pub struct NumericSql {
    /// Store: insert at revision 1 or bump by one; with an expected revision, only if it
    /// still matches.
    pub upsert: WriteSql,
    /// Insert at revision 1; an existing id is rejected.
    pub insert: WriteSql,
    /// Update, bumping by one; a missing row or a stale revision is rejected.
    pub update: WriteSql,
    /// Write at a given revision, rejected unless it is above the stored one.
    pub update_revision: WriteSql,
    /// Write at a given revision if it is above the stored one; otherwise nothing.
    pub try_update_revision: WriteSql,
    /// Bulk inserts: revision 1 on insert, one more on overwrite.
    pub bulk: BulkSql,
}

impl NumericSql {
    /// Input columns: id, data, revision (expected revision, or the revision to write),
    /// then the tenant of a conjoined table.
    pub fn new(table: &str, id_type: &str, scope: Scope) -> Self {
        let columns = [("id", id_type), ("data", "jsonb"), ("revision", "bigint")];
        let input = Input::new(table, &columns, scope);
        let (tc, key, join) = (scope.column(), scope.key(), scope.join());
        let insert_at = |rev: &str| {
            format!("INSERT INTO {table} AS d ({tc}id, data, {REVISION_COLUMN}, mt_last_modified) SELECT {tc}id, data, {rev}, now() FROM input")
        };
        let r = REVISION_COLUMN;
        let (revive, live) = (scope.revive(), scope.live("d."));
        let at_revision = format!(
            "{} ON CONFLICT {key} DO UPDATE SET data = excluded.data, {r} = excluded.{r}, \
             mt_last_modified = excluded.mt_last_modified{revive} WHERE d.{r} < excluded.{r}",
            insert_at("revision")
        );
        let on_overwrite = format!("d.{r} + 1");
        let bulk_version = BulkVersion {
            column: REVISION_COLUMN,
            sql_type: "bigint",
            on_overwrite: &on_overwrite,
        };
        NumericSql {
            bulk: BulkSql::new(table, id_type, Some(bulk_version), scope),
            upsert: input.flagged(
                &format!(
                    "{} ON CONFLICT {key} DO UPDATE SET data = excluded.data, {r} = d.{r} + 1, \
                     mt_last_modified = excluded.mt_last_modified{revive} \
                     WHERE d.{r} = coalesce((SELECT i.revision FROM input i WHERE i.id = excluded.id), d.{r})",
                    insert_at("1")
                ),
                &format!("d.{r}"),
            ),
            insert: input.flagged(
                &format!("{} ON CONFLICT {key} DO NOTHING", insert_at("1")),
                &format!("d.{r}"),
            ),
            update: input.flagged(
                &format!(
                    "UPDATE {table} AS d SET data = i.data, {r} = d.{r} + 1, mt_last_modified = now() \
                     FROM input i WHERE {join}d.id = i.id AND (i.revision IS NULL OR d.{r} = i.revision){live}"
                ),
                &format!("d.{r}"),
            ),
            update_revision: input.flagged(&at_revision, &format!("d.{r}")),
            try_update_revision: input.plain(&at_revision, &format!("d.{r}")),
        }
    }
}

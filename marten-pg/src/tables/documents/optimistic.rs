//! The writes of a document table in the optimistic mode: a `uuid` version per write,
//! asserted against an expected version when one is given.

use super::{BulkSql, BulkVersion, Input, Scope, WriteSql, VERSION_COLUMN};

/// The writes of a document type with optimistic (uuid) versions.
pub struct OptimisticSql {
    /// Store: insert or update; with an expected version, only if it still matches.
    pub upsert: WriteSql,
    /// Insert only; an existing id is rejected.
    pub insert: WriteSql,
    /// Update only; a missing row or a stale version is rejected.
    pub update: WriteSql,
    /// Bulk inserts: a fresh version per row, a new one on overwrite.
    pub bulk: BulkSql,
}

impl OptimisticSql {
    /// Input columns: id, data, new_version, expected (NULL = no check), then the
    /// tenant of a conjoined table.
    pub fn new(table: &str, id_type: &str, scope: Scope) -> Self {
        let columns = [
            ("id", id_type),
            ("data", "jsonb"),
            ("new_version", "uuid"),
            ("expected", "uuid"),
        ];
        let input = Input::new(table, &columns, scope);
        let (tc, key, join) = (scope.column(), scope.key(), scope.join());
        let (revive, live) = (scope.revive(), scope.live("d."));
        let insert_select = format!(
            "INSERT INTO {table} AS d ({tc}id, data, {VERSION_COLUMN}, mt_last_modified) \
             SELECT {tc}id, data, new_version, now() FROM input"
        );
        let mut upsert = input.flagged(
            &format!(
                "{insert_select} ON CONFLICT {key} DO UPDATE SET data = excluded.data, \
                 {VERSION_COLUMN} = excluded.{VERSION_COLUMN}, mt_last_modified = excluded.mt_last_modified{revive} \
                 WHERE d.{VERSION_COLUMN} = coalesce((SELECT i.expected FROM input i WHERE i.id = excluded.id), d.{VERSION_COLUMN})"
            ),
            &format!("d.{VERSION_COLUMN}"),
        );
        // The most common save, one document stored alone: the row and its check take the
        // parameters directly, without the `input` relation, and the row count tells
        // whether it was written (the version is the one bound as `$3`).
        let tenant = scope.value(5);
        upsert.one_alone = format!(
            "INSERT INTO {table} AS d ({tc}id, data, {VERSION_COLUMN}, mt_last_modified) \
             VALUES ({tenant}$1::{id_type}, $2::jsonb, $3::uuid, now()) \
             ON CONFLICT {key} DO UPDATE SET data = excluded.data, \
             {VERSION_COLUMN} = excluded.{VERSION_COLUMN}, mt_last_modified = excluded.mt_last_modified{revive} \
             WHERE d.{VERSION_COLUMN} = coalesce($4::uuid, d.{VERSION_COLUMN})"
        );
        let bulk_version = BulkVersion {
            column: VERSION_COLUMN,
            sql_type: "uuid",
            on_overwrite: "excluded.mt_version",
        };
        OptimisticSql {
            bulk: BulkSql::new(table, id_type, Some(bulk_version), scope),
            upsert,
            insert: input.flagged_counted(
                &format!("{insert_select} ON CONFLICT {key} DO NOTHING"),
                &format!("d.{VERSION_COLUMN}"),
            ),
            update: input.flagged_counted(
                &format!(
                    "UPDATE {table} AS d SET data = i.data, {VERSION_COLUMN} = i.new_version, mt_last_modified = now() \
                     FROM input i WHERE {join}d.id = i.id AND (i.expected IS NULL OR d.{VERSION_COLUMN} = i.expected){live}"
                ),
                &format!("d.{VERSION_COLUMN}"),
            ),
        }
    }
}

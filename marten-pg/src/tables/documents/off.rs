//! The writes of a document table without concurrency checks.

use super::{BulkSql, Input, Scope, WriteSql};

/// The writes of a document type without concurrency checks.
pub struct OffSql {
    /// Store: insert or overwrite.
    pub upsert: WriteSql,
    /// Insert only; an existing id is rejected.
    pub insert: WriteSql,
    /// Update only; a missing row is rejected.
    pub update: WriteSql,
    /// Bulk inserts (no version column).
    pub bulk: BulkSql,
}

impl OffSql {
    /// Input columns: id, data (then the tenant of a conjoined table).
    pub fn new(table: &str, id_type: &str, scope: Scope) -> Self {
        let columns = [("id", id_type), ("data", "jsonb")];
        let input = Input::new(table, &columns, scope);
        let (tc, key, join) = (scope.column(), scope.key(), scope.join());
        let insert_select = format!(
            "INSERT INTO {table} AS d ({tc}id, data, mt_last_modified) SELECT {tc}id, data, now() FROM input"
        );
        let (tenant, revive, live) = (scope.value(3), scope.revive(), scope.live("d."));
        let upsert_one = format!(
            "INSERT INTO {table} AS d ({tc}id, data, mt_last_modified) VALUES ({tenant}$1, $2, now()) \
             ON CONFLICT {key} DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified{revive}"
        );
        OffSql {
            bulk: BulkSql::new(table, id_type, None, scope),
            upsert: WriteSql {
                one_alone: upsert_one.clone(),
                one: upsert_one,
                one_guarded: input
                    .flagged(
                        &format!(
                            "{insert_select} ON CONFLICT {key} DO UPDATE SET data = excluded.data, \
                             mt_last_modified = excluded.mt_last_modified{revive}"
                        ),
                        "NULL::int",
                    )
                    .one_guarded,
                many: format!(
                    "INSERT INTO {table} AS d ({tc}id, data, mt_last_modified) \
                     SELECT {tenant}i.id, i.data, now() FROM unnest($1::{id_type}[], $2::jsonb[]) AS i(id, data) \
                     ON CONFLICT {key} DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified{revive}"
                ),
            },
            insert: input.flagged(&format!("{insert_select} ON CONFLICT {key} DO NOTHING"), "NULL::int"),
            update: input.flagged(
                &format!(
                    "UPDATE {table} AS d SET data = i.data, mt_last_modified = now() FROM input i WHERE {join}d.id = i.id{live}"
                ),
                "NULL::int",
            ),
        }
    }
}

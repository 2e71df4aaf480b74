//! The writes of a document table without concurrency checks.

use super::{Input, WriteSql};

/// The writes of a document type without concurrency checks.
pub struct OffSql {
    /// Store: insert or overwrite.
    pub upsert: WriteSql,
    /// Insert only; an existing id is rejected.
    pub insert: WriteSql,
    /// Update only; a missing row is rejected.
    pub update: WriteSql,
}

impl OffSql {
    /// Input columns: id, data.
    pub fn new(table: &str, id_type: &str) -> Self {
        let input = Input(&[("id", id_type), ("data", "jsonb")]);
        let insert_select =
            format!("INSERT INTO {table} AS d (id, data, mt_last_modified) SELECT id, data, now() FROM input");
        let upsert_one = format!(
            "INSERT INTO {table} AS d (id, data, mt_last_modified) VALUES ($1, $2, now()) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified"
        );
        OffSql {
            upsert: WriteSql {
                one_alone: upsert_one.clone(),
                one: upsert_one,
                many: format!(
                    "INSERT INTO {table} AS d (id, data, mt_last_modified) \
                     SELECT i.id, i.data, now() FROM unnest($1::{id_type}[], $2::jsonb[]) AS i(id, data) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified"
                ),
            },
            insert: input.flagged(&format!("{insert_select} ON CONFLICT (id) DO NOTHING"), "NULL::int"),
            update: input.flagged(
                &format!("UPDATE {table} AS d SET data = i.data, mt_last_modified = now() FROM input i WHERE d.id = i.id"),
                "NULL::int",
            ),
        }
    }
}

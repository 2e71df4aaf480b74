//! The SQL of a live aggregate's snapshot: the aggregate's own document row (its table is
//! the document table of the aggregate type), written only where the event it was folded
//! up to is committed.

use crate::tables::events::EVENTS_TABLE;

/// The snapshot write of an aggregate stored in `table` (ids of SQL type `id_type`):
/// `$1` id (the stream id), `$2` the document, `$3` the stream version it was folded up
/// to, `$4` the tenant (only when `docs_conjoined`). The row is inserted or overwritten
/// only if the stream has a committed, visible event at version `$3`, so a snapshot is
/// never ahead of the events; `events_conjoined` looks that event up among the tenant's
/// (`$4`) events. A statement of its own: it writes one row or none.
pub fn snapshot_upsert(
    table: &str,
    id_type: &str,
    docs_conjoined: bool,
    events_conjoined: bool,
) -> String {
    let (columns, tenant, key) = if docs_conjoined {
        ("tenant_id, ", "$4::text, ", "(tenant_id, id)")
    } else {
        ("", "", "(id)")
    };
    let scope = if events_conjoined && docs_conjoined {
        "e.tenant_id = $4::text AND "
    } else {
        ""
    };
    format!(
        "INSERT INTO {table} AS d ({columns}id, data, mt_last_modified) \
         SELECT {tenant}$1::{id_type}, $2::jsonb, now() \
         WHERE EXISTS (SELECT 1 FROM {EVENTS_TABLE} e WHERE {scope}e.stream_id = $1::{id_type} \
         AND e.version = $3::bigint) \
         ON CONFLICT {key} DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conjoined_snapshot_binds_its_tenant_for_the_row_and_the_events() {
        let sql = snapshot_upsert("mt_doc_a", "uuid", true, true);
        assert!(sql.contains("(tenant_id, id, data"), "{sql}");
        assert!(sql.contains("e.tenant_id = $4::text"), "{sql}");
        assert!(sql.contains("ON CONFLICT (tenant_id, id)"), "{sql}");
    }

    #[test]
    fn a_single_tenant_snapshot_names_no_tenant() {
        let sql = snapshot_upsert("mt_doc_a", "text", false, false);
        assert!(!sql.contains("tenant_id"), "{sql}");
        assert!(!sql.contains("$4"), "{sql}");
        // Global events, a tenant's documents: the event is found without a tenant.
        let sql = snapshot_upsert("mt_doc_a", "text", true, false);
        assert!(!sql.contains("e.tenant_id"), "{sql}");
        assert!(sql.contains("e.version = $3::bigint"), "{sql}");
    }
}

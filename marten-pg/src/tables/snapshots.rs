//! The SQL of a live aggregate's snapshot: the aggregate's own document row (its table is
//! the document table of the aggregate type), read with the stream's last event in one
//! statement, written only while that event is still there, and deleted with its stream.
//!
//! A snapshot row belongs to one incarnation of its stream: the stream as it is between
//! its start and its delete (a stream deleted and started again under the same id is
//! another incarnation, whose versions reuse the old one's). The statements keep two
//! facts true. A row is written only while the incarnation its fold read is still there:
//! the fold's first statement ([`snapshot_start`]) reads, in the same statement snapshot
//! as the row it builds on, the stream's last event (its *tip*: version and sequence,
//! unique across incarnations), and the write ([`snapshot_upsert`]) locks that event
//! (`FOR KEY SHARE`) and writes nothing if it is gone. And a stream's delete deletes its
//! snapshot rows in its own transaction, after the stream's row and events
//! ([`snapshot_delete`]): a write that locked the tip first commits before the delete
//! goes on, and the delete's later statement then removes what it wrote.

use crate::tables::events::EVENTS_TABLE;

/// The condition that finds a stream's events (as `e`) by the document tenant `$n`, when
/// both the events and the documents are conjoined; nothing otherwise (single-tenant
/// events are everyone's).
fn event_scope(docs_conjoined: bool, events_conjoined: bool, tenant_param: usize) -> String {
    if docs_conjoined && events_conjoined {
        format!("e.tenant_id = ${tenant_param}::text AND ")
    } else {
        String::new()
    }
}

/// The first read of a live fold of an aggregate whose by-id document read is `load`
/// (`$1` the id, with `docs_conjoined` `$2` the tenant) and whose ids are of SQL type
/// `id_type`: one row of the snapshot's `data` (NULL without one) and the version and
/// sequence of the stream's last event at or below version `$2` (`$3` with conjoined
/// documents; NULLs without one), read in the same statement snapshot. The tip is looked
/// up among the tenant's events with `events_conjoined`, and among archived events too.
pub fn snapshot_start(
    load: &str,
    id_type: &str,
    docs_conjoined: bool,
    events_conjoined: bool,
) -> String {
    let to = if docs_conjoined { 3 } else { 2 };
    let scope = event_scope(docs_conjoined, events_conjoined, 2);
    format!(
        "SELECT l.data, t.version, t.seq_id FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL ({load}) AS l ON true \
         LEFT JOIN LATERAL (SELECT e.version, e.seq_id FROM {EVENTS_TABLE} e \
         WHERE {scope}e.stream_id = $1::{id_type} AND e.version <= ${to}::bigint \
         ORDER BY e.version DESC LIMIT 1) AS t ON true"
    )
}

/// The snapshot write of an aggregate stored in `table` (ids of SQL type `id_type`):
/// `$1` id (the stream id), `$2` the document, `$3` the stream version it was folded up
/// to, `$4` and `$5` the version and sequence of the tip its fold's first statement read
/// ([`snapshot_start`]), `$6` the tenant (only when `docs_conjoined`). The row is
/// inserted or overwritten only if the stream has a committed, visible event at version
/// `$3`, so a snapshot is never ahead of the events, and only if the tip is still there,
/// locked until the write commits, so the row is never written for an incarnation of the
/// stream that is gone (see the module docs); `events_conjoined` looks the events up
/// among the tenant's (`$6`). A statement of its own: it writes one row or none.
pub fn snapshot_upsert(
    table: &str,
    id_type: &str,
    docs_conjoined: bool,
    events_conjoined: bool,
) -> String {
    let (columns, tenant, key) = if docs_conjoined {
        ("tenant_id, ", "$6::text, ", "(tenant_id, id)")
    } else {
        ("", "", "(id)")
    };
    let scope = event_scope(docs_conjoined, events_conjoined, 6);
    format!(
        "INSERT INTO {table} AS d ({columns}id, data, mt_last_modified) \
         SELECT {tenant}$1::{id_type}, $2::jsonb, now() \
         WHERE EXISTS (SELECT 1 FROM {EVENTS_TABLE} e WHERE {scope}e.stream_id = $1::{id_type} \
         AND e.version = $3::bigint) \
         AND EXISTS (SELECT 1 FROM {EVENTS_TABLE} e WHERE {scope}e.stream_id = $1::{id_type} \
         AND e.version = $4::bigint AND e.seq_id = $5::bigint FOR KEY SHARE) \
         ON CONFLICT {key} DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified"
    )
}

/// The delete of the snapshot rows of stream `$1` from `table` (ids of SQL type
/// `id_type`), sent in the stream delete's transaction after it: with conjoined events
/// (and so conjoined documents) the row of the stream's tenant `$2`; with single-tenant
/// events every tenant's row of a conjoined `table` (the stream is everyone's).
pub fn snapshot_delete(
    table: &str,
    id_type: &str,
    docs_conjoined: bool,
    events_conjoined: bool,
) -> String {
    let tenant = if docs_conjoined && events_conjoined {
        " AND tenant_id = $2::text"
    } else {
        ""
    };
    format!("DELETE FROM {table} WHERE id = $1::{id_type}{tenant}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conjoined_snapshot_binds_its_tenant_for_the_row_and_the_events() {
        let sql = snapshot_upsert("mt_doc_a", "uuid", true, true);
        assert!(sql.contains("(tenant_id, id, data"), "{sql}");
        assert_eq!(sql.matches("e.tenant_id = $6::text").count(), 2, "{sql}");
        assert!(sql.contains("ON CONFLICT (tenant_id, id)"), "{sql}");
        let start = snapshot_start(
            "SELECT data FROM mt_doc_a WHERE id = $1 AND tenant_id = $2",
            "uuid",
            true,
            true,
        );
        assert!(start.contains("e.tenant_id = $2::text"), "{start}");
        assert!(start.contains("e.version <= $3::bigint"), "{start}");
        let delete = snapshot_delete("mt_doc_a", "uuid", true, true);
        assert!(
            delete.ends_with("WHERE id = $1::uuid AND tenant_id = $2::text"),
            "{delete}"
        );
    }

    #[test]
    fn a_single_tenant_snapshot_names_no_tenant() {
        let sql = snapshot_upsert("mt_doc_a", "text", false, false);
        assert!(!sql.contains("tenant_id"), "{sql}");
        assert!(!sql.contains("$6"), "{sql}");
        let start = snapshot_start(
            "SELECT data FROM mt_doc_a WHERE id = $1",
            "text",
            false,
            false,
        );
        assert!(!start.contains("tenant_id"), "{start}");
        assert!(start.contains("e.version <= $2::bigint"), "{start}");
        // Global events, a tenant's documents: the events are found without a tenant,
        // and a delete of the stream deletes every tenant's snapshot of it.
        let sql = snapshot_upsert("mt_doc_a", "text", true, false);
        assert!(!sql.contains("e.tenant_id"), "{sql}");
        assert!(sql.contains("e.version = $3::bigint"), "{sql}");
        let start = snapshot_start(
            "SELECT data FROM mt_doc_a WHERE id = $1 AND tenant_id = $2",
            "text",
            true,
            false,
        );
        assert!(!start.contains("e.tenant_id"), "{start}");
        let delete = snapshot_delete("mt_doc_a", "text", true, false);
        assert!(!delete.contains("tenant_id"), "{delete}");
    }

    #[test]
    fn a_write_locks_the_tip_its_fold_read() {
        let sql = snapshot_upsert("mt_doc_a", "uuid", false, false);
        assert!(
            sql.contains("e.version = $4::bigint AND e.seq_id = $5::bigint FOR KEY SHARE"),
            "{sql}"
        );
        let start = snapshot_start(
            "SELECT data FROM mt_doc_a WHERE id = $1",
            "uuid",
            false,
            false,
        );
        assert!(start.contains("ORDER BY e.version DESC LIMIT 1"), "{start}");
        assert!(!start.contains("is_archived"), "{start}");
    }
}

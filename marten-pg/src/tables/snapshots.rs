//! The SQL of a live aggregate's snapshot: the aggregate's own document row (its table is
//! the document table of the aggregate type, with one more column,
//! [`SNAPSHOT_SEQ_COLUMN`]), read with the stream's last event in one statement, written
//! only while that event is still there, and deleted with its stream.
//!
//! A snapshot row belongs to one incarnation of its stream: the stream as it is between
//! its start and its delete (a stream deleted and started again under the same id is
//! another incarnation, whose versions reuse the old one's). The statements keep three
//! facts true. A row is written only while the incarnation its fold read is still there:
//! the fold's first statement ([`snapshot_start`]) reads, in the same statement snapshot
//! as the row it builds on, the stream's last event (its *tip*: version and sequence,
//! unique across incarnations), and the write ([`snapshot_upsert`]) locks that event
//! (`FOR KEY SHARE`) and writes nothing if it is gone. A row names its incarnation: the
//! write records the sequence (`seq_id`) of the snapshot's own event, the event at the
//! version it was folded up to, read in the write's statement, and a fold builds on the
//! row only if the first event it reads has that sequence (a row without one, written
//! before the column was added, is not built on; the next snapshot written records it).
//! So a row a delete left behind (a stream deleted by SQL of one's own, or by a store
//! that did not register the policy) is never built on by a later incarnation, whatever
//! its versions. And a stream's delete deletes its snapshot rows in its own transaction,
//! after the stream's row and events ([`snapshot_delete`]): a write that locked the tip
//! first commits before the delete goes on, and the delete's later statement then
//! removes what it wrote.

use crate::tables::def::{ColumnDef, TableDef};
use crate::tables::documents::{Scope, TENANT_COLUMN};
use crate::tables::events::EVENTS_TABLE;

/// The condition that finds a stream's events (as `{alias}`) by the document tenant
/// `$n`, when both the events and the documents are conjoined; nothing otherwise
/// (single-tenant events are everyone's).
fn event_scope(
    alias: &str,
    docs_conjoined: bool,
    events_conjoined: bool,
    tenant_param: usize,
) -> String {
    if docs_conjoined && events_conjoined {
        format!("{alias}.tenant_id = ${tenant_param}::text AND ")
    } else {
        String::new()
    }
}

/// The column of a snapshot row holding the sequence (`seq_id`) of the snapshot's own
/// event: the stream's event at the version the snapshot was folded up to. NULL in a row
/// no snapshot write wrote (a row written before the column was added, or by a plain
/// document write), which no fold builds on.
pub const SNAPSHOT_SEQ_COLUMN: &str = "mt_snapshot_seq";

/// The [`SNAPSHOT_SEQ_COLUMN`] column: nullable and without a default, so adding it to
/// an existing table rewrites nothing and leaves its rows untrusted.
pub fn snapshot_seq_column() -> ColumnDef {
    ColumnDef::new(SNAPSHOT_SEQ_COLUMN, "bigint", "")
}

/// The table of a live aggregate type with a snapshot policy: its document table `def`
/// and the [`SNAPSHOT_SEQ_COLUMN`] column.
pub fn snapshot_table(mut def: TableDef) -> TableDef {
    def.columns.push(snapshot_seq_column());
    def
}

/// The first read of a live fold of an aggregate stored in `table` (ids of SQL type
/// `id_type`, rows scoped by `scope`): `$1` the id, with a conjoined `scope` `$2` the
/// tenant. One row of the snapshot's `data` and its [`SNAPSHOT_SEQ_COLUMN`] (NULLs
/// without one) and the version and sequence of the stream's last event at or below
/// version `$2` (`$3` with conjoined documents; NULLs without one), read in the same
/// statement snapshot. The tip is looked up among the tenant's events with
/// `events_conjoined`, and among archived events too.
pub fn snapshot_start(table: &str, id_type: &str, scope: Scope, events_conjoined: bool) -> String {
    let docs_conjoined = scope.conjoined();
    let (to, tenant) = if docs_conjoined {
        (3, format!(" AND d.{TENANT_COLUMN} = $2::text"))
    } else {
        (2, String::new())
    };
    let live = scope.live("d.");
    let events = event_scope("e", docs_conjoined, events_conjoined, 2);
    format!(
        "SELECT l.data, l.{SNAPSHOT_SEQ_COLUMN}, t.version, t.seq_id FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT d.data, d.{SNAPSHOT_SEQ_COLUMN} FROM {table} d \
         WHERE d.id = $1::{id_type}{tenant}{live}) AS l ON true \
         LEFT JOIN LATERAL (SELECT e.version, e.seq_id FROM {EVENTS_TABLE} e \
         WHERE {events}e.stream_id = $1::{id_type} AND e.version <= ${to}::bigint \
         ORDER BY e.version DESC LIMIT 1) AS t ON true"
    )
}

/// The snapshot write of an aggregate stored in `table` (ids of SQL type `id_type`):
/// `$1` id (the stream id), `$2` the document, `$3` the stream version it was folded up
/// to, `$4` and `$5` the version and sequence of the tip its fold's first statement read
/// ([`snapshot_start`]), `$6` the tenant (only when `docs_conjoined`). The row is
/// inserted or overwritten only if the stream has a committed, visible event at version
/// `$3`, whose sequence it records ([`SNAPSHOT_SEQ_COLUMN`]), so a snapshot is never
/// ahead of the events and names its incarnation, and only if the tip is still there,
/// locked until the write commits, so the row is never written for an incarnation of the
/// stream that is gone (see the module docs; the event at `$3` is then the
/// incarnation's the fold read, as a delete of it must delete the tip too);
/// `events_conjoined` looks the events up among the tenant's (`$6`). A statement of its
/// own: it writes one row or none.
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
    let own = event_scope("s", docs_conjoined, events_conjoined, 6);
    let tip = event_scope("e", docs_conjoined, events_conjoined, 6);
    let seq = SNAPSHOT_SEQ_COLUMN;
    format!(
        "INSERT INTO {table} AS d ({columns}id, data, mt_last_modified, {seq}) \
         SELECT {tenant}$1::{id_type}, $2::jsonb, now(), s.seq_id FROM {EVENTS_TABLE} s \
         WHERE {own}s.stream_id = $1::{id_type} AND s.version = $3::bigint \
         AND EXISTS (SELECT 1 FROM {EVENTS_TABLE} e WHERE {tip}e.stream_id = $1::{id_type} \
         AND e.version = $4::bigint AND e.seq_id = $5::bigint FOR KEY SHARE) \
         ON CONFLICT {key} DO UPDATE SET data = excluded.data, \
         mt_last_modified = excluded.mt_last_modified, {seq} = excluded.{seq}"
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
    use marten_core::Tenancy;

    const CONJOINED: Scope = Scope::of(Tenancy::Conjoined);
    const SINGLE: Scope = Scope::of(Tenancy::Single);

    #[test]
    fn a_conjoined_snapshot_binds_its_tenant_for_the_row_and_the_events() {
        let sql = snapshot_upsert("mt_doc_a", "uuid", true, true);
        assert!(sql.contains("(tenant_id, id, data"), "{sql}");
        assert!(sql.contains("s.tenant_id = $6::text"), "{sql}");
        assert!(sql.contains("e.tenant_id = $6::text"), "{sql}");
        assert!(sql.contains("ON CONFLICT (tenant_id, id)"), "{sql}");
        let start = snapshot_start("mt_doc_a", "uuid", CONJOINED, true);
        assert!(start.contains("d.tenant_id = $2::text"), "{start}");
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
        let start = snapshot_start("mt_doc_a", "text", SINGLE, false);
        assert!(!start.contains("tenant_id"), "{start}");
        assert!(start.contains("e.version <= $2::bigint"), "{start}");
        // Global events, a tenant's documents: the events are found without a tenant,
        // and a delete of the stream deletes every tenant's snapshot of it.
        let sql = snapshot_upsert("mt_doc_a", "text", true, false);
        assert!(!sql.contains("e.tenant_id"), "{sql}");
        assert!(!sql.contains("s.tenant_id"), "{sql}");
        assert!(sql.contains("s.version = $3::bigint"), "{sql}");
        let start = snapshot_start("mt_doc_a", "text", CONJOINED, false);
        assert!(start.contains("d.tenant_id = $2::text"), "{start}");
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
        let start = snapshot_start("mt_doc_a", "uuid", SINGLE, false);
        assert!(start.contains("ORDER BY e.version DESC LIMIT 1"), "{start}");
        assert!(!start.contains("is_archived"), "{start}");
    }

    #[test]
    fn a_write_records_and_a_fold_reads_the_sequence_of_the_snapshots_own_event() {
        let sql = snapshot_upsert("mt_doc_a", "uuid", false, false);
        assert!(
            sql.contains("(id, data, mt_last_modified, mt_snapshot_seq) SELECT $1::uuid, $2::jsonb, now(), s.seq_id"),
            "{sql}"
        );
        assert!(
            sql.contains("s.stream_id = $1::uuid AND s.version = $3::bigint"),
            "{sql}"
        );
        assert!(
            sql.ends_with("mt_snapshot_seq = excluded.mt_snapshot_seq"),
            "{sql}"
        );
        let start = snapshot_start("mt_doc_a", "uuid", SINGLE, false);
        assert!(
            start.starts_with("SELECT l.data, l.mt_snapshot_seq, t.version, t.seq_id"),
            "{start}"
        );
        let soft = snapshot_start("mt_doc_a", "uuid", SINGLE.soft_deleted(true), false);
        assert!(soft.contains("AND NOT d.mt_deleted"), "{soft}");
        let def = snapshot_table(TableDef::new("mt_doc_a", Vec::new()));
        assert_eq!(
            def.columns.last().map(ColumnDef::definition).as_deref(),
            Some("mt_snapshot_seq bigint")
        );
    }
}

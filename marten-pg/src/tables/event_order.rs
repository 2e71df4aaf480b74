//! The statements of the gap-safe global order over `mt_events`: a page of it (of every
//! tenant, or merged from the tenants' pages with conjoined events), whether any event
//! lies after a position, the tenants that have streams, and the age of the oldest open
//! writing transaction, which holds gap-safe readers back.

use crate::tables::events::{EVENTS_TABLE, STREAMS_TABLE};

/// A page of the global order reading `columns` (they include `tx_id` and `seq_id`, its
/// order): of every tenant, merged from the tenants' pages with `conjoined` events. See
/// [`EventSql::read_all`](crate::tables::events::EventSql::read_all).
pub(super) fn global_page(columns: &str, conjoined: bool) -> String {
    if conjoined {
        merge_tenant_pages(columns)
    } else {
        select_global_page(columns, "")
    }
}

/// A page of the global order reading `columns`, of one tenant's events: `$5` the tenant.
pub(super) fn tenant_page(columns: &str) -> String {
    select_global_page(columns, "AND e.tenant_id = $5::text ")
}

/// The page's statement: `tenant` filters it (or is empty).
fn select_global_page(columns: &str, tenant: &str) -> String {
    format!(
        "SELECT {columns} FROM {EVENTS_TABLE} e \
         WHERE e.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         AND (e.tx_id, e.seq_id) > ($1::xid8, $2::bigint) \
         AND (NOT e.is_archived OR $4::boolean) {tenant}\
         ORDER BY e.tx_id, e.seq_id LIMIT $3::bigint"
    )
}

/// [`EventSql::read_all`](crate::tables::events::EventSql::read_all) of conjoined events, whose order index leads with the tenant
/// (`mt_events_tenant_tx_seq`): a merge of the tenants' pages. The tenants come from a
/// skip scan of the streams' key (as in [`STREAM_TENANTS`]); each gives at most `$3` of
/// its events by a range scan of its part of the index, and the first `$3` of those are
/// the page. The work is bounded by tenants times the page size, never by the store's
/// size. `columns` as [`select_global_page`]'s.
fn merge_tenant_pages(columns: &str) -> String {
    let page = select_global_page(columns, "AND e.tenant_id = t.tenant_id ");
    format!(
        "WITH RECURSIVE t AS (\
         (SELECT tenant_id FROM {STREAMS_TABLE} ORDER BY tenant_id LIMIT 1) \
         UNION ALL \
         SELECT (SELECT s.tenant_id FROM {STREAMS_TABLE} s WHERE s.tenant_id > t.tenant_id ORDER BY s.tenant_id LIMIT 1) \
         FROM t WHERE t.tenant_id IS NOT NULL) \
         SELECT p.* FROM t CROSS JOIN LATERAL ({page}) p \
         WHERE t.tenant_id IS NOT NULL ORDER BY p.tx_id, p.seq_id LIMIT $3::bigint"
    )
}

/// Whether any event the daemon projects lies after a position: `$1` transaction id
/// (`xid8`), `$2` sequence. Archived events are not projected (the daemon's reads skip
/// them), so they do not count. One range scan of the index `mt_events_tx_seq`.
pub const EVENTS_AFTER: &str = "SELECT EXISTS (SELECT 1 FROM mt_events e \
     WHERE (e.tx_id, e.seq_id) > ($1::xid8, $2::bigint) AND NOT e.is_archived)";

/// [`EVENTS_AFTER`] among the events of one tenant, `$3` (conjoined events): one range
/// scan of the index `mt_events_tenant_tx_seq`.
pub const EVENTS_AFTER_OF_TENANT: &str = "SELECT EXISTS (SELECT 1 FROM mt_events e \
     WHERE e.tenant_id = $3::text AND (e.tx_id, e.seq_id) > ($1::xid8, $2::bigint) AND NOT e.is_archived)";

/// The tenants that have streams (conjoined events), in order: a skip scan of the
/// streams' primary key `(tenant_id, id)`, one index probe per tenant however many
/// streams each has.
pub const STREAM_TENANTS: &str = "WITH RECURSIVE t AS (\
     (SELECT tenant_id FROM mt_streams ORDER BY tenant_id LIMIT 1) \
     UNION ALL \
     SELECT (SELECT s.tenant_id FROM mt_streams s WHERE s.tenant_id > t.tenant_id ORDER BY s.tenant_id LIMIT 1) \
     FROM t WHERE t.tenant_id IS NOT NULL) \
     SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL";

/// The transaction id of the newest event (by sequence), whether it is at or past the
/// next id the server will assign (`pg_snapshot_xmax`), and that id, as text. On a
/// healthy cluster every stored id is below it: one at or past it was written by another
/// cluster (a dump restored into a new one restarts the counter), and the gap-safe order
/// and the daemon's positions would skip the new cluster's events. One row of the
/// primary key's index.
pub const NEWEST_EVENT_XID: &str = "SELECT e.tx_id >= pg_snapshot_xmax(pg_current_snapshot()),      e.tx_id::text, pg_snapshot_xmax(pg_current_snapshot())::text      FROM mt_events e ORDER BY e.seq_id DESC LIMIT 1";

/// The age of the oldest transaction in the cluster that has written (has a transaction
/// id) and is still open: what holds gap-safe readers back. A prepared transaction
/// (`PREPARE TRANSACTION`, two-phase commit) holds them back too until it is committed or
/// rolled back, and belongs to no session: it is in `pg_prepared_xacts`, not in
/// `pg_stat_activity`.
pub const OLDEST_OPEN_TRANSACTION: &str = "SELECT extract(epoch FROM greatest(\
     (SELECT max(now() - xact_start) FROM pg_stat_activity \
      WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), \
     (SELECT max(now() - prepared) FROM pg_prepared_xacts)))::float8";

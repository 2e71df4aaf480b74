//! The SQL of reserved appends: what a save whose inline projections read the events'
//! metadata reserves before they plan (the stream versions of its plain appends, the
//! events' global sequences, its transaction id), and the event inserts that write the
//! reserved sequences as the events' `seq_id`.
//!
//! Why reserving sequences keeps the global order gap-safe: readers of the global order
//! (`read_all`, the daemon) order events by `(tx_id, seq_id)` and read only events whose
//! `tx_id` is below `pg_snapshot_xmin` of their snapshot, that is, of transactions that
//! have ended (a transaction that has not taken an id yet will take one at or above the
//! horizon). An event's `tx_id` is its transaction's id, or a later one its stream's
//! previous events recorded (see `tables::events::LAST_TX_BUMP`): never below its own,
//! so it becomes readable only once its transaction has ended and the horizon has passed
//! the id; the `seq_id` only orders events recorded at one id. So when a transaction draws its sequences
//! (before its insert here, by the column default otherwise) cannot let a reader pass
//! an event that is committed later: the sequences only need to be unique (`nextval`,
//! never rolled back) and ascending in insertion order within the transaction (they are
//! sorted, and given to the events in the order they are inserted).

use marten_core::StreamIdentity;

use crate::tables::event_ddl::EVENTS_SEQUENCE;
use crate::tables::event_tags::TagCtes;
use crate::tables::event_tip::tipped;
use crate::tables::events::{
    flagged, id_type, AppendStatements, StreamRows, EVENTS_TABLE, STREAMS_TABLE,
};

/// `$1` stream ids (distinct, any order) -> `ord` (1-based position in `$1`),
/// `version`, `is_archived`, `last_tx` of each existing stream, locking the rows in id order until
/// the save ends. `conjoined`: the streams of the tenant `$2`.
pub fn lock_streams(identity: StreamIdentity, conjoined: bool) -> String {
    let idt = id_type(identity);
    let tenant = if conjoined {
        "WHERE st.tenant_id = $2::text "
    } else {
        ""
    };
    format!(
        "SELECT u.ord, st.version, st.is_archived, st.last_tx FROM {STREAMS_TABLE} st \
         JOIN unnest($1::{idt}[]) WITH ORDINALITY AS u(id, ord) ON st.id = u.id \
         {tenant}ORDER BY st.id FOR UPDATE OF st"
    )
}

/// `$1` count -> the transaction's id (`xid8`, taking one now), its start time (the
/// events' `timestamp` default) and `$1` values drawn
/// from the events' sequence of `schema`, ascending. The sequence is named in a string
/// literal (`nextval` takes a `regclass`), which statement qualification leaves alone:
/// the schema is written here.
pub fn reserve_sequences(schema: &str) -> String {
    format!(
        "SELECT pg_current_xact_id(), now(), array(SELECT nextval('{schema}.{EVENTS_SEQUENCE}') \
         FROM generate_series(1, $1::int) ORDER BY 1)"
    )
}

/// Inserts the events of an append with array parameters and reserved sequences
/// (`$seq_param`), versions counted back from the stream row `s`, recording the tenant
/// `$tenant_param`.
pub fn insert_sequenced_events(idt: &str, tenant_param: usize, seq_param: usize) -> String {
    format!(
        "INSERT INTO {EVENTS_TABLE} (seq_id, id, stream_id, version, type, data, headers, correlation_id, causation_id, tenant_id, tx_id) \
         SELECT i.seq_id, i.id, $1::{idt}, s.version - $3::bigint + i.ord, i.type, i.data, i.headers, i.correlation_id, i.causation_id, \
         ${tenant_param}::text, s.last_tx \
         FROM s, unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::text[], $9::text[], ${seq_param}::bigint[]) \
         WITH ORDINALITY AS i(id, type, data, headers, correlation_id, causation_id, seq_id, ord) \
         ORDER BY i.ord"
    )
}

impl AppendStatements {
    /// The statements inserting reserved sequences, in a larger save: the sequences are
    /// the parameter after the tenant (`$tenant_param`), or after the expected version.
    pub(crate) fn sequenced(
        rows: &StreamRows,
        idt: &str,
        tenant_param: usize,
        tags: &TagCtes,
    ) -> Self {
        let events = |seq_param| insert_sequenced_events(idt, tenant_param, seq_param);
        let expected = |r: &str| flagged(r, &events(tenant_param + 2), tags);
        AppendStatements {
            start: flagged(&rows.start, &events(tenant_param + 1), tags),
            append: flagged(&rows.append, &events(tenant_param + 1), tags),
            expected: expected(&rows.expected),
            expected_tip: tipped(rows, expected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_named_with_its_schema_and_the_lock_is_in_id_order() {
        let sql = reserve_sequences("s1");
        assert!(sql.contains("nextval('s1.mt_events_sequence')"), "{sql}");
        let lock = lock_streams(StreamIdentity::String, true);
        assert!(
            lock.contains("$1::text[]") && lock.contains("$2::text"),
            "{lock}"
        );
        assert!(lock.ends_with("ORDER BY st.id FOR UPDATE OF st"), "{lock}");
        let insert = insert_sequenced_events("uuid", 10, 12);
        assert!(insert.contains("$12::bigint[]") && insert.contains("$10::text"));
    }
}

//! The progression slots as the console reads them: the projections page (a page of
//! them at a time, by name: [`read_slots_page`]) and the lag sampler (every one:
//! [`read_slots`]) share this read.
//!
//! One statement: every slot (the progression table, a few rows; its shard count rows
//! left out), and per slot its head and the timestamp of the first event it has not
//! processed, each in the order the daemon reads events, `(tx_id, seq_id)`, where a slot's
//! position `(last_tx, last_seq)` is a place (not in the order of sequences: an event
//! with a higher sequence can come first). The head is the last event of that order the
//! slot is to process: archived events left out, with conjoined events its tenant's (a
//! backward scan of the order index stopped at the first row); the first unprocessed
//! event is a range scan of it after the position: lag in seconds is how long that
//! event has waited.

use marten_pg::DocumentStore;

use crate::tables::Tables;

/// One progression slot.
#[derive(Debug, Clone)]
pub struct SlotRow {
    /// The slot (`name`, `name#2/3`, `name@tenant`).
    pub name: String,
    /// The global sequence it processed last (the last in the daemon's order, not
    /// necessarily the highest it processed).
    pub position: i64,
    /// The global sequence of the last event it is to process, the last in the daemon's
    /// order (archived events left out; with conjoined events, of its tenant's events):
    /// `position` once caught up, never before it.
    pub head: i64,
    /// The node that owns it.
    pub owner: Option<String>,
    /// Its tenant.
    pub tenant: String,
    /// How long the first unprocessed event has waited, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// The ordering transaction id of the event at `position` (0 before any): with
    /// `position`, where the slot stands in the daemon's order.
    pub position_transaction_id: u64,
    /// The ordering transaction id of the event at `head` (0 without any).
    pub head_transaction_id: u64,
}

impl SlotRow {
    /// Events behind the head: 0 exactly when the position is at or after the head in
    /// the daemon's order (caught up), otherwise the difference of their sequences, at
    /// least 1 (approximate: sequences have gaps, come in transaction order rather than
    /// their own, and a tenant's interleave with other tenants').
    pub fn lag_events(&self) -> i64 {
        let at = (self.position_transaction_id, self.position);
        if at >= (self.head_transaction_id, self.head) {
            0
        } else {
            (self.head - self.position).max(1)
        }
    }

    /// The projection the slot belongs to (the name before a shard or tenant suffix).
    pub fn projection(&self) -> &str {
        let end = self.name.find(['#', '@']).unwrap_or(self.name.len());
        &self.name[..end]
    }
}

/// The statement of every slot. With conjoined events each slot's events are its
/// tenant's (`mt_events_tenant_tx_seq`); otherwise every event (`mt_events_tx_seq`, one
/// head for every slot).
pub(crate) fn statement(t: &Tables) -> String {
    statement_where(t, "")
}

/// The statement of a page of slots: those named after `$1`, at most `$2`, by name.
pub(crate) fn page_statement(t: &Tables) -> String {
    statement_where(t, "AND p.name > $1 ")
}

/// The slots' statement with `filter` (`AND ...`, on `p`) added to its `WHERE`, and a
/// `LIMIT $2` when it has one.
fn statement_where(t: &Tables, filter: &str) -> String {
    let (tenant, head_join) = if t.conjoined {
        ("e.tenant_id = p.tenant_id AND ", "LEFT JOIN LATERAL")
    } else {
        ("", "LEFT JOIN")
    };
    format!(
        "SELECT p.name, p.last_seq, p.owner, p.tenant_id, coalesce(h.seq_id, 0), \
         coalesce(extract(epoch FROM (now() - n.timestamp))::float8, 0), \
         p.last_tx::text, coalesce(h.tx_id, '0')::text \
         FROM {progression} p \
         {head_join} (SELECT e.tx_id, e.seq_id FROM {events} e \
         WHERE {tenant}NOT e.is_archived ORDER BY e.tx_id DESC, e.seq_id DESC LIMIT 1) h ON true \
         LEFT JOIN LATERAL (SELECT e.timestamp FROM {events} e \
         WHERE {tenant}(e.tx_id, e.seq_id) > (p.last_tx, p.last_seq) AND NOT e.is_archived \
         ORDER BY e.tx_id, e.seq_id LIMIT 1) n ON true \
         WHERE p.name NOT LIKE '%#shards' {filter}ORDER BY p.name{limit}",
        progression = t.progression,
        events = t.events,
        limit = if filter.is_empty() { "" } else { " LIMIT $2" },
    )
}

/// Every slot of `store`.
pub async fn read_slots(
    store: &DocumentStore,
    tables: &Tables,
) -> Result<Vec<SlotRow>, marten_core::Error> {
    let rows = store.sql_query(&statement(tables), &[]).await?;
    slot_rows(&rows)
}

/// At most `limit` slots of `store` named after `after` (`""`: from the first), by name.
pub async fn read_slots_page(
    store: &DocumentStore,
    tables: &Tables,
    after: &str,
    limit: i64,
) -> Result<Vec<SlotRow>, marten_core::Error> {
    let rows = store
        .sql_query(&page_statement(tables), &[&after, &limit])
        .await?;
    slot_rows(&rows)
}

/// The slots of the statement's rows.
fn slot_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<SlotRow>, marten_core::Error> {
    let corrupt = |detail: String| marten_core::Error::CorruptData {
        owner: "mt_event_progression".to_owned(),
        id: None,
        detail,
    };
    let unusable = |e: tokio_postgres::Error| corrupt(e.to_string());
    let transaction_id = |r: &tokio_postgres::Row, i: usize| {
        let text: &str = r.try_get(i).map_err(unusable)?;
        text.parse::<u64>()
            .map_err(|e| corrupt(format!("transaction id {text:?}: {e}")))
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut row = SlotRow {
            name: r.try_get(0).map_err(unusable)?,
            position: r.try_get(1).map_err(unusable)?,
            owner: r.try_get(2).map_err(unusable)?,
            tenant: r.try_get(3).map_err(unusable)?,
            head: r.try_get(4).map_err(unusable)?,
            lag_seconds: r.try_get(5).map_err(unusable)?,
            position_transaction_id: transaction_id(r, 6)?,
            head_transaction_id: transaction_id(r, 7)?,
        };
        // A slot past its head processed events archived since: it stands at its head.
        if (row.position_transaction_id, row.position) > (row.head_transaction_id, row.head) {
            row.head = row.position;
            row.head_transaction_id = row.position_transaction_id;
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use marten::prelude::*;
    use marten_testing::TestSchema;
    use serde::{Deserialize, Serialize};

    use super::{read_slots, statement, SlotRow};
    use crate::tables::Tables;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "noted")]
    struct Noted {
        n: i64,
    }

    fn ok<T>(r: marten::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    async fn store(schema: &TestSchema, tenancy: marten::Tenancy) -> DocumentStore {
        let store = ok(DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .events_tenancy(tenancy)
            .event::<Noted>()
            .build()
            .await);
        // Makes the daemon's tables.
        ok(store.projection_status().await);
        store
    }

    /// Appends one event to a new stream of `tenant` (or of none), in a save of its own.
    async fn append(store: &DocumentStore, tenant: Option<&str>, n: i64) {
        let mut s = match tenant {
            Some(t) => ok(store.lightweight_session_for(t)),
            None => store.lightweight_session(),
        };
        ok(s.events().append(Uuid::now_v7(), [Noted { n }]));
        ok(s.save_changes().await);
    }

    /// The events (of `tenant`, or every one) as (transaction id, sequence), in the
    /// daemon's order.
    async fn order(raw: &tokio_postgres::Client, tenant: Option<&str>) -> Vec<(String, i64)> {
        raw.query(
            "SELECT tx_id::text, seq_id FROM mt_events \
             WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tx_id, seq_id",
            &[&tenant],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    /// Puts slot `name` of `tenant` at `at`.
    async fn slot(raw: &tokio_postgres::Client, name: &str, tenant: &str, at: &(String, i64)) {
        raw.execute(
            "INSERT INTO mt_event_progression (name, tenant_id, last_tx, last_seq) \
             VALUES ($1, $2, $3::text::xid8, $4)",
            &[&name, &tenant, &at.0, &at.1],
        )
        .await
        .expect("a slot");
    }

    fn find<'a>(rows: &'a [SlotRow], name: &str) -> &'a SlotRow {
        rows.iter().find(|r| r.name == name).expect(name)
    }

    /// A slot at the last event of the daemon's order is caught up, also when an event
    /// before it in that order has a higher sequence; a slot before it lags.
    #[tokio::test]
    async fn the_head_is_the_last_event_of_the_daemons_order() {
        let schema = TestSchema::new("console_slots_order");
        let store = store(&schema, marten::Tenancy::Single).await;
        append(&store, None, 1).await;
        append(&store, None, 2).await;
        let raw = schema.raw_client().await;
        // The first event moved after the second in the order, as when its writer took
        // its transaction id first and committed last.
        raw.batch_execute(
            "UPDATE mt_events SET tx_id = ((SELECT max(tx_id)::text::bigint FROM mt_events) + 1)::text::xid8 \
             WHERE seq_id = (SELECT min(seq_id) FROM mt_events)",
        )
        .await
        .expect("invert the order");
        let order = order(&raw, None).await;
        assert!(order[0].1 > order[1].1, "{order:?}");
        slot(&raw, "Caught", "*DEFAULT*", &order[1]).await;
        slot(&raw, "Behind", "*DEFAULT*", &order[0]).await;

        let rows = ok(read_slots(&store, &Tables::of(&store)).await);
        let caught = find(&rows, "Caught");
        assert_eq!(
            (
                caught.position,
                caught.head,
                caught.lag_events(),
                caught.lag_seconds
            ),
            (order[1].1, order[1].1, 0, 0.0),
            "{caught:?}"
        );
        let behind = find(&rows, "Behind");
        assert_eq!(
            (behind.head, behind.lag_events()),
            (order[1].1, 1),
            "{behind:?}"
        );
        assert!(behind.lag_seconds > 0.0, "{behind:?}");
    }

    /// With conjoined events a tenant's slot is measured against its tenant's events,
    /// read through the tenant's part of the order index.
    #[tokio::test]
    async fn with_conjoined_events_a_slot_has_its_tenants_head() {
        let schema = TestSchema::new("console_slots_tenants");
        let store = store(&schema, marten::Tenancy::Conjoined).await;
        append(&store, Some("red"), 1).await;
        append(&store, Some("red"), 2).await;
        append(&store, Some("blue"), 3).await;
        let raw = schema.raw_client().await;
        let red = order(&raw, Some("red")).await;
        let blue = order(&raw, Some("blue")).await;
        slot(&raw, "P@red", "red", &red[1]).await;
        slot(&raw, "P@blue", "blue", &(String::from("0"), 0)).await;

        let tables = Tables::of(&store);
        let rows = ok(read_slots(&store, &tables).await);
        let r = find(&rows, "P@red");
        assert_eq!(
            (r.position, r.head, r.lag_events(), r.lag_seconds),
            (red[1].1, red[1].1, 0, 0.0),
            "the store's last event is blue's: {r:?}"
        );
        let b = find(&rows, "P@blue");
        assert_eq!((b.head, b.lag_events()), (blue[0].1, blue[0].1), "{b:?}");

        // Red's last event archived: the slot processed it and stands at its head.
        raw.execute(
            "UPDATE mt_events SET is_archived = true WHERE seq_id = $1",
            &[&red[1].1],
        )
        .await
        .expect("archive");
        let rows = ok(read_slots(&store, &tables).await);
        let r = find(&rows, "P@red");
        assert_eq!((r.head, r.lag_events()), (r.position, 0), "{r:?}");

        raw.batch_execute("SET enable_seqscan = off")
            .await
            .expect("plan settings");
        let plan: Vec<String> = raw
            .query(&format!("EXPLAIN {}", statement(&tables)), &[])
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on mt_events") && plan.contains("mt_events_tenant_tx_seq"),
            "{plan}"
        );
    }
}

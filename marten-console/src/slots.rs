//! The progression slots as the console reads them: the projections page and the lag
//! sampler share this read.
//!
//! One statement: every slot (the progression table, a few rows; its shard count rows
//! left out), the head (`max(seq_id)`: the end of the events' primary key) and, per
//! slot, the timestamp of the first event it has not processed (a range scan of the
//! primary key after its position): lag in seconds is how long that event has waited.

use marten_pg::DocumentStore;

use crate::tables::Tables;

/// One progression slot.
#[derive(Debug, Clone)]
pub struct SlotRow {
    /// The slot (`name`, `name#2/3`, `name@tenant`).
    pub name: String,
    /// The global sequence it processed last.
    pub position: i64,
    /// The store's head.
    pub head: i64,
    /// The node that owns it.
    pub owner: Option<String>,
    /// Its tenant.
    pub tenant: String,
    /// How long the first unprocessed event has waited, in seconds (0 when caught up).
    pub lag_seconds: f64,
}

impl SlotRow {
    /// Events behind the head (approximate: sequences have gaps).
    pub fn lag_events(&self) -> i64 {
        (self.head - self.position).max(0)
    }

    /// The projection the slot belongs to (the name before a shard or tenant suffix).
    pub fn projection(&self) -> &str {
        let end = self.name.find(['#', '@']).unwrap_or(self.name.len());
        &self.name[..end]
    }
}

/// The statement of every slot.
pub(crate) fn statement(t: &Tables) -> String {
    format!(
        "SELECT p.name, p.last_seq, p.owner, p.tenant_id, h.head, \
         coalesce(extract(epoch FROM (now() - n.timestamp))::float8, 0) \
         FROM {progression} p \
         CROSS JOIN (SELECT coalesce(max(seq_id), 0) AS head FROM {events}) h \
         LEFT JOIN LATERAL (SELECT e.timestamp FROM {events} e WHERE e.seq_id > p.last_seq \
         ORDER BY e.seq_id LIMIT 1) n ON true \
         WHERE p.name NOT LIKE '%#shards' ORDER BY p.name",
        progression = t.progression,
        events = t.events
    )
}

/// Every slot of `store`.
pub async fn read_slots(
    store: &DocumentStore,
    tables: &Tables,
) -> Result<Vec<SlotRow>, marten_core::Error> {
    let rows = store.sql_query(&statement(tables), &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let unusable = |e: tokio_postgres::Error| marten_core::Error::CorruptData {
            owner: "mt_event_progression".to_owned(),
            id: None,
            detail: e.to_string(),
        };
        out.push(SlotRow {
            name: r.try_get(0).map_err(unusable)?,
            position: r.try_get(1).map_err(unusable)?,
            owner: r.try_get(2).map_err(unusable)?,
            tenant: r.try_get(3).map_err(unusable)?,
            head: r.try_get(4).map_err(unusable)?,
            lag_seconds: r.try_get(5).map_err(unusable)?,
        });
    }
    Ok(out)
}

//! How far the store's async projections are: [`DocumentStore::projection_status`] reads
//! each one's position and owner from `mt_event_progression` (a sharded projection's:
//! its least advanced shard's, and every shard's owner) and the store's head from
//! `mt_events`. May use the store's connection, schema and projection registry, the
//! daemon's tables, slots and recorded shard counts; writes nothing but the schema it
//! needs.

use marten_core::{Error, Result};

use crate::connection::Conn;
use crate::daemon::progression;
use crate::daemon::shard::recorded_count_on;
use crate::daemon::slot::Slot;

/// The least position of the slots named `$1` (none: NULL) and their owners, joined.
const SLOTS_PROGRESS: &str = "SELECT min(last_seq), string_agg(DISTINCT owner, ', ') \
     FROM mt_event_progression WHERE name = ANY($1)";
use crate::error_map::{map_db_error, Failed};
use crate::store::DocumentStore;

/// How far an async projection is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The global sequence of the last event it processed (sharded: the least of its
    /// shards').
    pub position: i64,
    /// The highest global sequence in the store.
    pub head: i64,
    /// The node that owns it, if any (sharded: the nodes owning its shards, joined by
    /// `, `).
    pub owner: Option<String>,
}

impl ProjectionStatus {
    /// Events not processed yet (approximate: sequences can have gaps).
    pub fn lag(&self) -> i64 {
        (self.head - self.position).max(0)
    }
}

impl DocumentStore {
    /// The status of every async projection and subscription of the store (every slot
    /// the daemon runs), in registration order: its position, the store's head and the
    /// node that owns it. Creates the event and
    /// progression tables first when the store may (see [`AutoCreate`](crate::AutoCreate)).
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>> {
        let (type_id, migrate) = progression::schema();
        self.ensure_erased(type_id, migrate).await?;
        crate::events::read::ensure(self.as_ref()).await?;
        let mut conn = Conn::new();
        conn.run(self, async |client| {
            let head_row = client
                .query_one("SELECT coalesce(max(seq_id), 0) FROM mt_events", &[])
                .await
                .map_err(|e| map_db_error(e, Failed::Other("reading the head")))?;
            let head: i64 = head_row.try_get(0).map_err(unusable("mt_events"))?;
            let mut out = Vec::new();
            for p in &self.projections().asynchronous {
                // A sharded projection stands where its last shard does.
                let count = recorded_count_on(client, p.name()).await?;
                let slots: Vec<String> = Slot::all(p.name(), None, count)
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect();
                let row = client
                    .query_one(SLOTS_PROGRESS, &[&slots])
                    .await
                    .map_err(|e| map_db_error(e, Failed::Other("reading progress")))?;
                let position: Option<i64> = row.try_get(0).map_err(unusable(p.name()))?;
                let owner = row.try_get(1).map_err(unusable(p.name()))?;
                let position = position.unwrap_or(0);
                out.push(ProjectionStatus {
                    name: p.name().to_owned(),
                    position,
                    head,
                    owner,
                });
            }
            Ok(out)
        })
        .await
    }
}

/// A stored value of the wrong type (a table changed by hand or by another program).
fn unusable(owner: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::CorruptData {
        owner: owner.to_owned(),
        id: None,
        detail: e.to_string(),
    }
}

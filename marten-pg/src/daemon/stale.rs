//! Whether the projections are caught up: [`wait_for_non_stale`] polls, within one
//! deadline, for an async projection with committed events after its position.
//!
//! A wait that times out names the stale slots, and for each that a runner of this
//! store (a daemon of this process on it, or on a clone) could not acquire, why (its
//! last acquire failure, see `acquiring`; another store on the same schema name, of
//! another database say, has failures of its own): a projection that never runs
//! because, say, its role may not update the progression table says so.
//!
//! Owns: the staleness check and the deadline arithmetic the daemon's handle shares.
//! May use: the connection layer, the events table's SQL, the daemon's tables, the store
//! (its registered async projections).

use std::time::{Duration, Instant};

use crate::connection::Db;
use marten_core::{Error, Result, Tenancy, TenantId};

use super::acquiring::acquire_failure;
use super::progression;
use super::shard::recorded_count_on;
use super::slot::Slot;
use super::tenants::tenants_on;
use crate::connection::Conn;
use crate::error_map::{map_db_error, Failed};
use crate::events::Position;
use crate::store::DocumentStore;
use crate::tables::event_order::{EVENTS_AFTER, EVENTS_AFTER_OF_TENANT};
use crate::xid8::Xid8;

/// How long a check waits before it polls again.
const POLL: Duration = Duration::from_millis(50);

/// The instant `timeout` from now; a timeout too large for the clock waits a century.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Waits until every async projection of `store` has processed every committed event.
pub async fn wait_for_non_stale(store: &DocumentStore, timeout: Duration) -> Result<()> {
    let deadline = deadline_after(timeout);
    progression::ensure_tables(store).await?;
    // What the last finished check found, to name when the next one does not finish.
    let mut last: Option<Vec<String>> = None;
    loop {
        // One pooled connection per check, given back before the poll's sleep: a waiter
        // must not hold a connection the daemon's runners (or the application) need.
        let mut conn = Conn::new();
        // A check that hangs (a lock, a lost server) counts against the same deadline.
        let check = conn.run(store, async |client| stale_projections(store, client).await);
        let Ok(stale) = tokio::time::timeout_at(deadline.into(), check).await else {
            let what = match last {
                Some(stale) => {
                    let why = why_not_acquired(store, &stale);
                    format!(
                        "projections {stale:?} to catch up (a later check had not finished){why}"
                    )
                }
                None => "the daemon's staleness check".to_owned(),
            };
            return Err(Error::Timeout { what });
        };
        drop(conn);
        let stale = stale?;
        if stale.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = why_not_acquired(store, &stale);
            return Err(Error::Timeout {
                what: format!("projections {stale:?} to catch up{why}"),
            });
        }
        last = Some(stale);
        tokio::time::sleep(POLL).await;
    }
}

/// For a timeout's message: why the `stale` slots that a runner could not acquire were
/// not (`"; Tally cannot be acquired: ..."`), empty when none failed.
fn why_not_acquired(store: &DocumentStore, stale: &[String]) -> String {
    stale
        .iter()
        .filter_map(|slot| {
            acquire_failure(store.id(), slot)
                .map(|why| format!("; {slot} cannot be acquired: {why}"))
        })
        .collect()
}

/// The slots of the async projections that have events left to process: one per
/// projection, or with conjoined events one per projection and tenant with streams;
/// one per shard of the count recorded for a sharded projection.
async fn stale_projections(store: &DocumentStore, client: Db<'_>) -> Result<Vec<String>> {
    let tenants: Vec<Option<TenantId>> = match store.events_tenancy() {
        Tenancy::Single => vec![None],
        Tenancy::Conjoined => tenants_on(client).await?.into_iter().map(Some).collect(),
    };
    let mut stale = Vec::new();
    for p in &store.projections().asynchronous {
        let count = recorded_count_on(client, p.name()).await?;
        for tenant in &tenants {
            for slot in Slot::all(p.name(), tenant.as_ref(), count) {
                if slot_behind(client, &slot).await? {
                    stale.push(slot.name().to_owned());
                }
            }
        }
    }
    Ok(stale)
}

/// Whether `slot` has committed events after its position (a slot without a position
/// yet has every event after it).
pub(super) async fn slot_behind(client: Db<'_>, slot: &Slot) -> Result<bool> {
    let checking = |e| map_db_error(e, Failed::Other("checking staleness"));
    let pos = position_of(client, slot.name()).await?;
    let (tx, seq) = (Xid8(pos.transaction_id), pos.sequence);
    let row = match &slot.tenant {
        None => client.query_one(EVENTS_AFTER, &[&tx, &seq]).await,
        Some(t) => {
            client
                .query_one(EVENTS_AFTER_OF_TENANT, &[&tx, &seq, &t.as_str()])
                .await
        }
    }
    .map_err(checking)?;
    row.try_get(0).map_err(checking)
}

/// The stored position of projection `name`; the start when it has none yet.
async fn position_of(client: Db<'_>, name: &str) -> Result<Position> {
    let row = client
        .query_opt(progression::POSITION, &[&name])
        .await
        .map_err(|e| map_db_error(e, Failed::Other("reading progress")))?;
    match row {
        Some(r) => progression::position(&r),
        None => Ok(Position::START),
    }
}

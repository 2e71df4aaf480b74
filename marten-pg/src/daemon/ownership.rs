//! Who runs a projection: a runner first takes a session-level advisory lock for the
//! projection on a connection of its own, then claims the projection by bumping its
//! owner epoch in `mt_event_progression`. The epoch is what makes a runner's commits
//! exactly-once: a runner paused past a takeover still holds an old epoch, and the
//! progress update of its next batch finds another one (see [`super::commit`]).
//!
//! Owns: the lock connection (outside the pool), the claimed position and epoch, the
//! checks that ownership still holds. May use: the daemon's tables, the store (its
//! dedicated connections and schema name).

use tracing::info;

use super::progression;
use super::slot::Slot;
use crate::connection::Dedicated;
use crate::error_map::{map_db_error, Failed};
use crate::events::Position;
use crate::store::DocumentStore;
use marten_core::Result;

/// What a runner holds while it runs a projection.
pub(super) struct Ownership {
    /// The connection holding the advisory lock; the lock goes with it.
    lock: Dedicated,
    /// Where the next batch starts (the position the last commit moved to).
    pub(super) position: Position,
    /// The owner epoch this runner claimed.
    pub(super) epoch: i64,
}

impl Ownership {
    /// Whether the lock's connection closed (the lock went with it).
    pub(super) fn lock_lost(&self) -> bool {
        self.lock.is_closed()
    }

    /// Whether the projection's epoch is still the one this runner claimed: a reset
    /// (rebuild) or a takeover moves it. A failed check counts as moved.
    pub(super) async fn still_held(&self, name: &str) -> bool {
        let epoch = match self.lock.query_opt(progression::EPOCH, &[&name]).await {
            Ok(row) => row.and_then(|r| r.try_get::<_, i64>(0).ok()),
            Err(_) => None,
        };
        if epoch == Some(self.epoch) {
            return true;
        }
        info!(
            projection = name,
            "projection was reset or taken over; stepping down"
        );
        false
    }
}

/// Tries to become the runner of `name`: the advisory lock, then the epoch. The lock is
/// taken on a connection outside the pool (a runner never holds a pooled connection
/// while it waits for another); a node that does not get the lock keeps that connection
/// in `standby` for its next try.
pub(super) async fn acquire(
    store: &DocumentStore,
    slot: &Slot,
    node: &str,
    standby: &mut Option<Dedicated>,
) -> Result<Option<Ownership>> {
    let name = slot.name();
    let lock = match standby.take() {
        Some(c) if !c.is_closed() => c,
        _ => store.dedicated_connection().await?,
    };
    let key = format!("marten:daemon:{}:{name}", store.schema());
    let locking = |e| map_db_error(e, Failed::Other("locking a projection"));
    let got: bool = lock
        .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(locking)?
        .try_get(0)
        .map_err(locking)?;
    if !got {
        *standby = Some(lock);
        return Ok(None);
    }
    let app = format!("marten-daemon-lock:{}:{node}", store.schema());
    let _ = lock
        .execute("SELECT set_config('application_name', $1, false)", &[&app])
        .await;
    claim(lock, slot, node).await.map(Some)
}

/// Bumps the projection's owner epoch (on the lock's connection) and reads the position
/// to start from.
async fn claim(lock: Dedicated, slot: &Slot, node: &str) -> Result<Ownership> {
    let claiming = |e| map_db_error(e, Failed::Other("claiming a projection"));
    let row = lock
        .query_one(
            progression::CLAIM,
            &[&slot.name(), &node, &slot.tenant_column()],
        )
        .await
        .map_err(claiming)?;
    Ok(Ownership {
        position: progression::position(&row)?,
        epoch: row.try_get(2).map_err(claiming)?,
        lock,
    })
}

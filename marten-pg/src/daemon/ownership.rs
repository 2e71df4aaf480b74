//! Who runs a projection: a runner first takes a session-level advisory lock for the
//! projection on a connection of its own, then claims the projection by bumping its
//! owner epoch in `mt_event_progression`. The epoch is what makes a runner's commits
//! exactly-once: a runner paused past a takeover still holds an old epoch, and the
//! progress update of its next batch finds another one (see [`super::commit`]).
//!
//! A shard's slot is claimed only while the projection's recorded shard count is the
//! slot's, and a whole projection's only while none other is recorded (see
//! [`super::shard`]); otherwise the claim says which count is recorded.
//!
//! Owns: the lock connection (outside the pool), the claimed position and epoch, the
//! checks that ownership still holds. May use: the daemon's tables, the store (its
//! dedicated connections and schema name).

use std::future::Future;

use tracing::info;

use super::progression;
use super::shard::{count_row, recorded_count};
use super::slot::Slot;
use crate::connection::{cancel_then_drop, timed_out, within, Dedicated};
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
    /// (rebuild) or a takeover moves it. A failed check counts as moved, and so does one
    /// without an answer within the request timeout (the runner then drops the lock's
    /// connection, and the lock with it).
    pub(super) async fn still_held(&self, store: &DocumentStore, name: &str) -> bool {
        let read = async {
            self.lock
                .query_opt(progression::EPOCH, &[&name])
                .await
                .map_err(|e| map_db_error(e, Failed::Other("reading a projection's epoch")))
        };
        let epoch = match on_lock(store, &self.lock, read).await {
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

/// What a runner that got its slot's lock came to.
pub(super) enum Claim {
    /// It owns the slot.
    Owned(Ownership),
    /// The projection's recorded shard count is `recorded`, not the slot's: the lock is
    /// kept for a claim once the count is settled.
    CountDiffers { lock: Dedicated, recorded: u32 },
}

/// Tries to become the runner of `name`: the advisory lock, then the epoch. The lock is
/// taken on a connection outside the pool (a runner never holds a pooled connection
/// while it waits for another); a node that does not get the lock keeps that connection
/// in `standby` for its next try. The lock's key is a 64-bit hash of the schema and slot
/// names: with 32 bits, two of many tenants' slots shared a lock now and then, and one of
/// them never ran.
pub(super) async fn acquire(
    store: &DocumentStore,
    slot: &Slot,
    node: &str,
    standby: &mut Option<Dedicated>,
) -> Result<Option<Claim>> {
    let name = slot.name();
    let lock = match standby.take() {
        Some(c) if !c.is_closed() => c,
        _ => store.dedicated_connection().await?,
    };
    let key = format!("marten:daemon:{}:{name}", store.schema());
    let locking = |e| map_db_error(e, Failed::Other("locking a projection"));
    let trying = async {
        lock.query_one(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
            &[&key],
        )
        .await
        .map_err(locking)?
        .try_get::<_, bool>(0)
        .map_err(locking)
    };
    // Without an answer the connection is dropped here, and a lock it may have got goes
    // with it.
    let got = on_lock(store, &lock, trying).await?;
    if !got {
        *standby = Some(lock);
        return Ok(None);
    }
    let app = format!("marten-daemon-lock:{}:{node}", store.schema());
    let naming = async {
        lock.execute("SELECT set_config('application_name', $1, false)", &[&app])
            .await
            .map_err(locking)
    };
    on_lock(store, &lock, naming).await?;
    claim(store, lock, slot, node).await.map(Some)
}

/// A statement on a lock's connection, awaited within the store's request timeout. Past
/// it a cancel request is sent for the statement and the caller gets `Error::Timeout`;
/// it drops the connection, and the session's advisory lock with it (the cancel ends a
/// statement the server is still waiting in, so the lock does not outlive the wait).
async fn on_lock<T>(
    store: &DocumentStore,
    lock: &Dedicated,
    answers: impl Future<Output = Result<T>>,
) -> Result<T> {
    match within(store, answers).await {
        Some(answered) => answered,
        None => {
            cancel_then_drop(lock.cancel_request(), ());
            Err(timed_out(store))
        }
    }
}

/// Bumps the slot's owner epoch (on the lock's connection, which holds the slot's lock)
/// and reads the position to start from, if the recorded shard count is the slot's.
///
/// A whole projection's claim is the one it always was, and the recorded count is read
/// after it: a count change that commits later moves the epoch just claimed. A shard's
/// claim checks the count in the same statement (see [`progression::SHARD_CLAIM`]).
///
/// A claim does not take the projection's rebuild lock, as a batch's commit does: it
/// writes no document, and a rebuild's reset locks the slot's row, so the claim lands
/// wholly before the reset (whose new epoch rejects the runner's next batch) or after it
/// (and starts from the reset position); see `super::rebuild`.
pub(super) async fn claim(
    store: &DocumentStore,
    lock: Dedicated,
    slot: &Slot,
    node: &str,
) -> Result<Claim> {
    let claiming = |e| map_db_error(e, Failed::Other("claiming a projection"));
    let (name, tenant) = (slot.name(), slot.tenant_column());
    let row = match slot.shard {
        None => {
            let claimed = async {
                lock.query_one(progression::CLAIM, &[&name, &node, &tenant])
                    .await
                    .map_err(claiming)
            };
            Some(on_lock(store, &lock, claimed).await?)
        }
        Some(shard) => {
            let (counted, count) = (count_row(slot.projection), i64::from(shard.count()));
            let claimed = async {
                lock.query_opt(
                    progression::SHARD_CLAIM,
                    &[&name, &node, &tenant, &counted, &count],
                )
                .await
                .map_err(claiming)
            };
            on_lock(store, &lock, claimed).await?
        }
    };
    let recorded = match (&row, slot.shard) {
        (Some(_), Some(_)) => slot.count(),
        _ => on_lock(store, &lock, recorded_count(&lock, slot.projection)).await?,
    };
    match row {
        Some(row) if recorded == slot.count() => Ok(Claim::Owned(Ownership {
            position: progression::position(&row)?,
            epoch: row.try_get(2).map_err(claiming)?,
            lock,
        })),
        _ => Ok(Claim::CountDiffers { lock, recorded }),
    }
}

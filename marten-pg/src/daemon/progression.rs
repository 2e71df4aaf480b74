//! The daemon's use of its tables (their SQL is in [`crate::tables::progression`]): making
//! sure they exist, reading a position from them, the compare-and-set that makes a
//! batch's progress update (and so its projected writes) commit only for the runner that
//! holds the position the batch started from, and the dead letters a batch records with
//! it (so a batch that does not commit records none, and the one that does, each once),
//! and the projection's rebuild lock a batch holds shared while it commits (so no
//! rebuild of the projection is in flight with it, see `super::rebuild`).
//!
//! A rebuild clears the dead letters of the slots it resets ([`clear_dead_letters`]).
//!
//! Owns: [`Advance`], [`DeadLetter`], [`BatchLock`] and the rebuild lock's key, the daemon
//! tables' migration. May use: the tables layer, the unit of work's operation trait, the
//! events layer (its tables), the store (to make sure the tables exist), the slot's
//! separators.

use std::any::TypeId;

use futures_util::future::BoxFuture;
use marten_core::{IdKey, Rejection, RejectionKind, Result, TenantId};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Db, SqlText};

use crate::error_map::{map_db_error, Failed};
use crate::events::Position;
use crate::schema::MigrateFn;
use crate::store::DocumentStore;
use crate::unit_of_work::{first_count, Operation, Target};
use crate::xid8::Xid8;

use crate::tables::progression::{
    ADVANCE, BATCH_LOCK, CLEAR_DEAD_LETTERS, CLEAR_TENANT_DEAD_LETTERS, DEAD_LETTER_TABLE,
};
pub use crate::tables::progression::{
    CLAIM, DEAD_LETTER, EPOCH, POSITION, PROGRESSION_TABLE, REBUILD_LOCK, RESET, SHARD_CLAIM,
};

/// The daemon tables' `TypeId` and migration (see [`crate::schema::daemon_schema`]).
pub(crate) fn schema() -> (TypeId, MigrateFn) {
    crate::schema::daemon_schema()
}

/// Makes sure the progression and event tables exist.
pub(crate) async fn ensure_tables(store: &DocumentStore) -> Result<()> {
    let (type_id, migrate) = schema();
    store.ensure_erased(type_id, migrate).await?;
    crate::events::read::ensure(store.as_ref()).await
}

/// The key of the rebuild lock of `projection` (a projection's name, every slot of it
/// alike) in `schema`, hashed to 64 bits by [`REBUILD_LOCK`] and [`BATCH_LOCK`]. Not the
/// key of a runner's session lock (`marten:daemon:...`): a rebuild must not wait for a
/// runner that holds its slot, only for a batch in flight.
pub(crate) fn rebuild_key(schema: &str, projection: &str) -> String {
    format!("marten:rebuild:{schema}:{projection}")
}

/// The projection a slot's progression row belongs to: the name up to its first slot
/// separator (`Tally#1/3@red`: `Tally`; the builder refuses a projection's name holding
/// one).
fn projection_of(slot: &str) -> &str {
    slot.find(crate::daemon::slot::SLOT_SEPARATORS)
        .map_or(slot, |at| &slot[..at])
}

/// The first statement of a batch's transaction: a shared hold of its projection's
/// rebuild lock, held until the batch commits or rolls back. A rebuild of the projection
/// (which holds it exclusively, see `super::rebuild`) and the batch are so never in
/// flight together. Sent in the batch's pipeline: no round trip of its own.
pub(crate) struct BatchLock {
    key: String,
}

impl BatchLock {
    /// The lock of the projection whose slot `advance` moves, in `schema`.
    pub(crate) fn of(schema: &str, advance: &Advance) -> Self {
        BatchLock {
            key: rebuild_key(schema, projection_of(&advance.name)),
        }
    }
}

impl Operation for BatchLock {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(BATCH_LOCK)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.key]
    }

    fn target(&self) -> Target {
        Target::new("projection", PROGRESSION_TABLE, schema())
    }
}

/// The progress update of one batch, sent with its writes.
pub(crate) struct Advance {
    name: String,
    to_tx: Xid8,
    to_seq: i64,
    from_tx: Xid8,
    from_seq: i64,
    epoch: i64,
    rejected: bool,
}

impl Advance {
    /// The update of projection `name` from `from` to `to`, for the runner that claimed
    /// `epoch`.
    pub(crate) fn new(name: &str, from: Position, to: Position, epoch: i64) -> Self {
        Advance {
            name: name.to_owned(),
            to_tx: Xid8(to.transaction_id),
            to_seq: to.sequence,
            from_tx: Xid8(from.transaction_id),
            from_seq: from.sequence,
            epoch,
            rejected: false,
        }
    }
}

impl Operation for Advance {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(ADVANCE)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.name,
            &self.to_tx,
            &self.to_seq,
            &self.from_tx,
            &self.from_seq,
            &self.epoch,
        ]
    }

    fn target(&self) -> Target {
        Target::new("projection", PROGRESSION_TABLE, schema())
    }

    fn checked(&self) -> bool {
        true
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        self.rejected = first_count(rows, Failed::Other("advancing a projection"))? == 0;
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn reset(&mut self) {
        self.rejected = false;
    }

    fn explain<'a>(&'a self, _client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            Ok(vec![Rejection::new(
                "projection",
                IdKey::String(self.name.clone()),
                RejectionKind::ProgressMoved,
            )])
        })
    }
}

/// An event left out of a projection, recorded in `mt_dead_letters` by the batch that
/// leaves it out (in its transaction, after its [`Advance`]).
pub(crate) struct DeadLetter {
    projection: &'static str,
    sequence: i64,
    event_type: String,
    stream: String,
    error: String,
    tenant: String,
    attempts: i32,
}

impl DeadLetter {
    /// The dead letter of event `sequence` of `stream` for `projection` (of the slot whose
    /// tenant column is `tenant`): its type (the current name of an event that was
    /// decoded, the stored one of an event that could not be), why it was left out, and
    /// how many times it failed.
    pub(crate) fn new(
        (projection, tenant): (&'static str, &str),
        sequence: i64,
        event_type: &str,
        stream: &marten_core::StreamId,
        (error, attempts): (String, u32),
    ) -> Self {
        tracing::warn!(projection, sequence, "dead-lettering a poison event");
        DeadLetter {
            projection,
            sequence,
            event_type: event_type.to_owned(),
            stream: stream.to_string(),
            error,
            tenant: tenant.to_owned(),
            attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        }
    }
}

impl Operation for DeadLetter {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(DEAD_LETTER)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.projection,
            &self.sequence,
            &self.event_type,
            &self.stream,
            &self.error,
            &self.tenant,
            &self.attempts,
        ]
    }

    fn target(&self) -> Target {
        Target::new("dead letter", DEAD_LETTER_TABLE, schema())
    }
}

/// Deletes the dead letters of `projection`: of every slot (each tenant's, each
/// shard's), or of `tenant`'s slots alone; how many. A rebuild's, in the transaction of
/// its reset, under its exclusive rebuild lock: every event is replayed, and those that
/// still fail are dead-lettered anew, so no dead letter of a run that no longer exists is
/// reported or leaves its event out of a read of a stream's earlier versions.
pub(crate) async fn clear_dead_letters(
    client: Db<'_>,
    projection: &str,
    tenant: Option<&TenantId>,
) -> Result<u64> {
    let what = |e| map_db_error(e, Failed::Other("clearing a projection's dead letters"));
    let cleared = match tenant {
        Some(t) => {
            client
                .execute(CLEAR_TENANT_DEAD_LETTERS, &[&projection, &t.as_str()])
                .await
        }
        None => client.execute(CLEAR_DEAD_LETTERS, &[&projection]).await,
    };
    let cleared = cleared.map_err(what)?;
    if cleared > 0 {
        tracing::info!(
            projection,
            tenant = tenant.map(TenantId::as_str),
            cleared,
            "a rebuild cleared the projection's dead letters"
        );
    }
    Ok(cleared)
}

/// The position in the first two columns (`last_tx`, `last_seq`) of a progression row.
pub(crate) fn position(row: &Row) -> Result<Position> {
    let reading = |e| map_db_error(e, Failed::Other("reading a projection's position"));
    let tx: Xid8 = row.try_get(0).map_err(reading)?;
    Ok(Position {
        transaction_id: tx.0,
        sequence: row.try_get(1).map_err(reading)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_of_a_projection_takes_its_one_rebuild_lock() {
        let at = Position {
            transaction_id: 1,
            sequence: 1,
        };
        for slot in ["Tally", "Tally@red", "Tally#1/3", "Tally#1/3@acme@corp"] {
            let lock = BatchLock::of("s1", &Advance::new(slot, at, at, 1));
            assert_eq!(lock.key, rebuild_key("s1", "Tally"), "{slot}");
        }
        assert_eq!(rebuild_key("s1", "Tally:v2"), "marten:rebuild:s1:Tally:v2");
    }
}

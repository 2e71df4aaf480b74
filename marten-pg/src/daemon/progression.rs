//! The progression table (`mt_event_progression`), the dead-letter table, and the
//! compare-and-set that makes a batch's progress update (and so its projected writes)
//! commit only for the runner that holds the position the batch started from.

use std::any::{Any, TypeId};

use futures_util::future::BoxFuture;
use marten_core::{IdKey, Rejection, RejectionKind, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::documents::batch::Operation;
use crate::error_map::{map_db_error, Failed};
use crate::events::Position;
use crate::schema::{AutoCreate, MigrateFn};
use crate::session::state::SessionState;
use crate::xid8::Xid8;

/// The progression table.
pub const PROGRESSION_TABLE: &str = "mt_event_progression";
/// The dead-letter table.
pub const DEAD_LETTER_TABLE: &str = "mt_dead_letters";

/// DDL of the daemon's tables, idempotent.
pub fn ddl(schema: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.{PROGRESSION_TABLE} (\n  name text PRIMARY KEY,\n  \
             last_tx xid8 NOT NULL DEFAULT '0',\n  last_seq bigint NOT NULL DEFAULT 0,\n  \
             owner_epoch bigint NOT NULL DEFAULT 0,\n  owner text,\n  last_updated timestamptz NOT NULL DEFAULT now()\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.{DEAD_LETTER_TABLE} (\n  id bigserial PRIMARY KEY,\n  \
             projection text NOT NULL,\n  seq_id bigint NOT NULL,\n  event_type text NOT NULL,\n  \
             stream_id text NOT NULL,\n  error text NOT NULL,\n  at timestamptz NOT NULL DEFAULT now()\n)"
        ),
    ]
}

/// Takes ownership of a projection: bumps its owner epoch (creating the row at position
/// zero if new). Returns the position and the new epoch.
pub const CLAIM: &str =
    "INSERT INTO mt_event_progression AS p (name, owner_epoch, owner) VALUES ($1, 1, $2) \
     ON CONFLICT (name) DO UPDATE SET owner_epoch = p.owner_epoch + 1, owner = excluded.owner \
     RETURNING p.last_tx, p.last_seq, p.owner_epoch";

/// The position of a projection.
pub const POSITION: &str = "SELECT last_tx, last_seq FROM mt_event_progression WHERE name = $1";

/// The owner epoch of a projection.
pub const EPOCH: &str = "SELECT owner_epoch FROM mt_event_progression WHERE name = $1";

/// Resets a projection to the start (for a rebuild), taking ownership from any runner.
pub const RESET: &str =
    "INSERT INTO mt_event_progression AS p (name) VALUES ($1) ON CONFLICT (name) DO UPDATE \
     SET last_tx = '0', last_seq = 0, owner_epoch = p.owner_epoch + 1, owner = NULL";

/// Records a poison event.
pub const DEAD_LETTER: &str =
    "INSERT INTO mt_dead_letters (projection, seq_id, event_type, stream_id, error) \
     VALUES ($1, $2, $3, $4, $5)";

/// The compare-and-set of a batch's progress: moves the position from `from` to `to` only
/// if it is still `from` and the epoch is still the runner's. Zero rows sets the
/// rejected flag, so the batch's writes roll back with it.
const ADVANCE: &str = "WITH u AS (UPDATE mt_event_progression SET last_tx = $2::xid8, last_seq = $3, \
     last_updated = now() WHERE name = $1 AND last_tx = $4::xid8 AND last_seq = $5 AND owner_epoch = $6 \
     RETURNING 1) SELECT count(*), CASE WHEN count(*) = 0 THEN set_config('marten.rejected', 't', true) END FROM u";

/// Marker for the daemon's tables in the store's set of created objects.
pub(crate) struct DaemonTables;

/// The daemon tables' `TypeId` and migration.
pub(crate) fn schema() -> (TypeId, MigrateFn) {
    (TypeId::of::<DaemonTables>(), |c, s, m: AutoCreate| {
        Box::pin(async move {
            if m == AutoCreate::None {
                return Ok(());
            }
            for sql in ddl(s) {
                c.batch_execute(&sql)
                    .await
                    .map_err(|e| map_db_error(e, Failed::Migrating(PROGRESSION_TABLE)))?;
            }
            Ok(())
        })
    })
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
    fn sql(&self) -> &'static str {
        ADVANCE
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

    fn len(&self) -> usize {
        0
    }

    fn checked(&self) -> bool {
        true
    }

    fn atomic(&self) -> bool {
        false
    }

    fn document_type(&self) -> &'static str {
        "projection"
    }

    fn table(&self) -> &'static str {
        PROGRESSION_TABLE
    }

    fn schema(&self) -> (TypeId, MigrateFn) {
        schema()
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        let n: i64 = match rows.first() {
            Some(r) => r
                .try_get(0)
                .map_err(|e| map_db_error(e, Failed::Other("advancing a projection")))?,
            None => 0,
        };
        self.rejected = n == 0;
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn reset(&mut self) {
        self.rejected = false;
    }

    fn explain<'a>(&'a self, _client: &'a Client) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            Ok(vec![Rejection::new(
                "projection",
                IdKey::String(self.name.clone()),
                RejectionKind::ProgressMoved,
            )])
        })
    }

    fn committed(&self, _state: &mut SessionState) {}

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
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

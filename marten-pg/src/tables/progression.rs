//! The daemon's tables: the progression table (`mt_event_progression`: position and
//! owner epoch per projection, tenant and shard) and the dead-letter table, with every
//! statement the daemon runs against them.
//!
//! A sharded projection has one more row, its count row (`Name#shards`), whose
//! `last_seq` holds the projection's shard count (no row: 1, unsharded). Keeping it in a
//! row of the existing table needs no new column, so stores whose schema mode may not
//! change tables need no migration.

use crate::tables::def::{ColumnDef, IndexDef, TableDef};

/// The progression table.
pub const PROGRESSION_TABLE: &str = "mt_event_progression";
/// The dead-letter table.
pub const DEAD_LETTER_TABLE: &str = "mt_dead_letters";

/// The daemon's tables as data.
pub fn table_defs() -> Vec<TableDef> {
    let progression = TableDef::new(
        PROGRESSION_TABLE,
        vec![
            ColumnDef::new("name", "text", "PRIMARY KEY"),
            ColumnDef::new("last_tx", "xid8", "NOT NULL DEFAULT '0'"),
            ColumnDef::new("last_seq", "bigint", "NOT NULL DEFAULT 0"),
            ColumnDef::new("owner_epoch", "bigint", "NOT NULL DEFAULT 0"),
            ColumnDef::new("owner", "text", ""),
            ColumnDef::new("last_updated", "timestamptz", "NOT NULL DEFAULT now()"),
            ColumnDef::new("tenant_id", "text", "NOT NULL DEFAULT '*DEFAULT*'"),
        ],
    );
    let mut dead_letters = TableDef::new(
        DEAD_LETTER_TABLE,
        vec![
            ColumnDef::new("id", "bigserial", "PRIMARY KEY"),
            ColumnDef::new("projection", "text", "NOT NULL"),
            ColumnDef::new("seq_id", "bigint", "NOT NULL"),
            ColumnDef::new("event_type", "text", "NOT NULL"),
            ColumnDef::new("stream_id", "text", "NOT NULL"),
            ColumnDef::new("error", "text", "NOT NULL"),
            ColumnDef::new("at", "timestamptz", "NOT NULL DEFAULT now()"),
            ColumnDef::new("tenant_id", "text", "NOT NULL DEFAULT '*DEFAULT*'"),
            // How many times the apply failed before the event was dead-lettered (the
            // first try and the retries); 0 on rows recorded before the column existed.
            ColumnDef::new("attempts", "integer", "NOT NULL DEFAULT 0"),
        ],
    );
    // The dead letters of a projection's slot in some streams: what a batch's read of a
    // stream's earlier versions leaves out (`projections::stream_order`), without a scan
    // of every dead letter.
    dead_letters.indexes.push(IndexDef::btree(
        "mt_dead_letters_slot_stream",
        false,
        &["projection", "tenant_id", "stream_id"],
    ));
    vec![progression, dead_letters]
}

/// DDL of the daemon's tables, idempotent.
pub fn ddl(schema: &str) -> Vec<String> {
    table_defs().iter().flat_map(|t| t.ddl(schema)).collect()
}

/// Takes ownership of a projection's slot (`$1`, its tenant `$3`): bumps its owner epoch
/// (creating the row at position zero if new). Returns the position and the new epoch.
pub const CLAIM: &str =
    "INSERT INTO mt_event_progression AS p (name, owner_epoch, owner, tenant_id) VALUES ($1, 1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET owner_epoch = p.owner_epoch + 1, owner = excluded.owner \
     RETURNING p.last_tx, p.last_seq, p.owner_epoch";

/// The position of a projection.
pub const POSITION: &str = "SELECT last_tx, last_seq FROM mt_event_progression WHERE name = $1";

/// The owner epoch of a projection.
pub const EPOCH: &str = "SELECT owner_epoch FROM mt_event_progression WHERE name = $1";

/// Resets a projection's slot (`$1`, its tenant `$2`) to the start (for a rebuild),
/// taking ownership from any runner.
pub const RESET: &str =
    "INSERT INTO mt_event_progression AS p (name, tenant_id) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE \
     SET last_tx = '0', last_seq = 0, owner_epoch = p.owner_epoch + 1, owner = NULL";

/// Records a poison event (`$1`: the projection, `$2`: its sequence, `$3`: its type,
/// `$4`: its stream, `$5`: the error, `$6`: the tenant of the event's slot, `$7`: how many
/// times its apply failed), unless the slot has recorded it already: an event a batch
/// dead-lettered when it read it to fill a hole in its stream is met again by the page
/// that reads it later, and is recorded once. (An event recorded at sequence 0, gone
/// before its sequence was read, is recorded each time: it cannot be told apart.)
pub const DEAD_LETTER: &str =
    "INSERT INTO mt_dead_letters (projection, seq_id, event_type, stream_id, error, tenant_id, attempts) \
     SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::integer \
     WHERE $2::bigint = 0 OR NOT EXISTS (SELECT 1 FROM mt_dead_letters d WHERE d.projection = $1::text \
     AND d.tenant_id = $6::text AND d.stream_id = $4::text AND d.seq_id = $2::bigint)";

/// Deletes every dead letter of projection `$1` (every slot, shard and tenant of it): a
/// whole rebuild's, in its transaction (the replay dead-letters anew what still fails).
pub const CLEAR_DEAD_LETTERS: &str = "DELETE FROM mt_dead_letters WHERE projection = $1";

/// Deletes the dead letters of projection `$1` recorded by the slots of tenant `$2` (each
/// shard's): one tenant's rebuild's, in its transaction.
pub const CLEAR_TENANT_DEAD_LETTERS: &str =
    "DELETE FROM mt_dead_letters WHERE projection = $1 AND tenant_id = $2";

/// The compare-and-set of a batch's progress: moves the position from `from` to `to` only
/// if it is still `from` and the epoch is still the runner's. Zero rows sets the
/// rejected flag, so the batch's writes roll back with it.
pub const ADVANCE: &str = "WITH u AS (UPDATE mt_event_progression SET last_tx = $2::xid8, last_seq = $3, \
     last_updated = now() WHERE name = $1 AND last_tx = $4::xid8 AND last_seq = $5 AND owner_epoch = $6 \
     RETURNING 1) SELECT count(*), CASE WHEN count(*) = 0 THEN set_config('marten.rejected', 't', true) END FROM u";

/// Takes a projection's rebuild lock (`$1`: its key, see
/// `crate::daemon::progression::rebuild_key`) for the rebuild's transaction, exclusively:
/// it waits for every batch commit of the projection in flight, and those that come later
/// wait for the rebuild (see [`BATCH_LOCK`]).
pub const REBUILD_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/// Takes a projection's rebuild lock (`$1`: its key) for a batch commit's transaction,
/// shared: the batches of every slot of the projection commit side by side, but none
/// while a rebuild of it holds the lock (see [`REBUILD_LOCK`]). Answers one row (its
/// column is `void`, never read).
pub const BATCH_LOCK: &str = "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))";

/// The suffix of a projection's count row name (`Name#shards`).
pub const COUNT_ROW_SUFFIX: &str = "#shards";

/// Takes ownership of shard slot `$1` (its tenant `$3`) as [`CLAIM`] does, but only while
/// the projection's count row `$4` records `$5` shards: the count row is locked `FOR
/// SHARE` first, so a count change (which locks it `FOR UPDATE`) either waits for the
/// claim and then moves the slot's epoch, or goes first and the claim finds no row.
/// No row back: the recorded count is another (or none).
pub const SHARD_CLAIM: &str =
    "WITH c AS (SELECT 1 FROM mt_event_progression WHERE name = $4 AND last_seq = $5 FOR SHARE) \
     INSERT INTO mt_event_progression AS p (name, owner_epoch, owner, tenant_id) SELECT $1, 1, $2, $3 FROM c \
     ON CONFLICT (name) DO UPDATE SET owner_epoch = p.owner_epoch + 1, owner = excluded.owner \
     RETURNING p.last_tx, p.last_seq, p.owner_epoch";

/// Locks count row `$1` (creating it with a count of 1: unsharded) and returns the
/// recorded count.
pub const COUNT_LOCK: &str =
    "INSERT INTO mt_event_progression AS p (name, last_seq) VALUES ($1, 1) \
     ON CONFLICT (name) DO UPDATE SET last_updated = now() RETURNING p.last_seq";

/// Locks count row `$1`, if there is one, and returns it (`last_seq`: the count): a
/// rebuild resets the slots of the count it read, and no count change comes between.
pub const COUNT_FOR_UPDATE: &str =
    "SELECT last_tx, last_seq FROM mt_event_progression WHERE name = $1 FOR UPDATE";

/// Records count `$2` in count row `$1` (locked by [`COUNT_LOCK`]).
pub const SET_COUNT: &str = "UPDATE mt_event_progression SET last_seq = $2 WHERE name = $1";

/// Takes slot `$1` (tenant `$2`) from any runner, creating it at the start if missing,
/// and returns its position: locks an old slot whose position a count change reads.
pub const SLOT_LOCK: &str =
    "INSERT INTO mt_event_progression AS p (name, tenant_id) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET owner_epoch = p.owner_epoch + 1, owner = NULL \
     RETURNING p.last_tx, p.last_seq";

/// Puts slot `$1` (tenant `$2`) at position (`$3`, `$4`), taking it from any runner: a
/// new shard's slot after a count change.
pub const SLOT_AT: &str =
    "INSERT INTO mt_event_progression AS p (name, tenant_id, last_tx, last_seq) VALUES ($1, $2, $3::xid8, $4) \
     ON CONFLICT (name) DO UPDATE SET last_tx = excluded.last_tx, last_seq = excluded.last_seq, \
     owner_epoch = p.owner_epoch + 1, owner = NULL";

/// Moves the owner epoch of every row of projection `$1` (whole, each tenant's, each
/// shard's, of any count), so no runner of it can commit again.
pub const FAMILY_BUMP: &str =
    "UPDATE mt_event_progression SET owner_epoch = owner_epoch + 1, owner = NULL \
     WHERE name = $1 OR left(name, length($1) + 1) IN ($1 || '@', $1 || '#')";

/// The tenants of the slot rows of projection `$1` (a count change also moves the slots
/// of tenants whose streams are gone).
pub const FAMILY_TENANTS: &str = "SELECT DISTINCT tenant_id FROM mt_event_progression \
     WHERE left(name, length($1) + 1) IN ($1 || '@', $1 || '#') ORDER BY tenant_id";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::functions::REJECTED_FLAG;

    #[test]
    fn the_advance_flags_the_transaction_when_it_moves_nothing() {
        assert!(ADVANCE.contains(&format!("set_config('{REJECTED_FLAG}', 't', true)")));
        assert!(ADVANCE.contains(
            "WHERE name = $1 AND last_tx = $4::xid8 AND last_seq = $5 AND owner_epoch = $6"
        ));
    }

    #[test]
    fn a_rebuild_and_a_batch_take_the_same_lock_in_conflicting_modes() {
        let key = "hashtextextended($1, 0)";
        assert_eq!(REBUILD_LOCK, format!("SELECT pg_advisory_xact_lock({key})"));
        assert_eq!(
            BATCH_LOCK,
            format!("SELECT pg_advisory_xact_lock_shared({key})")
        );
    }

    #[test]
    fn a_dead_letter_is_recorded_once_per_slot_and_cleared_per_projection_or_tenant() {
        let once = "NOT EXISTS (SELECT 1 FROM mt_dead_letters d WHERE d.projection = $1::text \
                    AND d.tenant_id = $6::text AND d.stream_id = $4::text AND d.seq_id = $2::bigint)";
        assert!(DEAD_LETTER.contains(once), "{DEAD_LETTER}");
        assert!(CLEAR_DEAD_LETTERS.ends_with("WHERE projection = $1"));
        assert!(CLEAR_TENANT_DEAD_LETTERS.ends_with("WHERE projection = $1 AND tenant_id = $2"));
    }

    #[test]
    fn the_ddl_is_schema_qualified_and_idempotent() {
        for sql in ddl("s1") {
            let table = sql.starts_with("CREATE TABLE IF NOT EXISTS s1.mt_");
            let index =
                sql.starts_with("CREATE INDEX IF NOT EXISTS ") && sql.contains(" ON s1.mt_");
            assert!(table || index, "{sql}");
        }
    }

    #[test]
    fn statements_name_the_tables() {
        for sql in [
            CLAIM,
            POSITION,
            EPOCH,
            RESET,
            SHARD_CLAIM,
            COUNT_LOCK,
            SET_COUNT,
        ] {
            assert!(sql.contains(PROGRESSION_TABLE), "{sql}");
        }
        for sql in [DEAD_LETTER, CLEAR_DEAD_LETTERS, CLEAR_TENANT_DEAD_LETTERS] {
            assert!(sql.contains(DEAD_LETTER_TABLE), "{sql}");
        }
        for sql in [SLOT_LOCK, SLOT_AT, FAMILY_BUMP, FAMILY_TENANTS] {
            assert!(sql.contains(PROGRESSION_TABLE), "{sql}");
        }
    }
}

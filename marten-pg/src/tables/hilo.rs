//! The HiLo table (`mt_hilo`: per entity, the highest id handed out in a block) and the
//! statements run against it. A store takes a block of ids with one statement that adds
//! the block size to the entity's row (creating it on first use) and returns the new
//! value: the block is the `block size` ids up to and including it. Blocks of different
//! sizes (stores configured differently on one schema) never overlap. The last ids below
//! `i64::MAX`, fewer than a block, are taken by a second statement that reads the value
//! it replaces ([`FINAL_BLOCK`]).

use crate::tables::def::{ColumnDef, TableDef};

/// The HiLo table.
pub const HILO_TABLE: &str = "mt_hilo";

/// The HiLo table as data.
pub fn table_def() -> TableDef {
    TableDef::new(
        HILO_TABLE,
        vec![
            ColumnDef::new("entity_name", "text", "PRIMARY KEY"),
            ColumnDef::new("hi_value", "bigint", "NOT NULL"),
        ],
    )
}

/// Reserves the next block of ids of an entity (`$1`: the entity name, `$2`: the block
/// size) and returns the last id of the block. Atomic: concurrent callers (any process)
/// get disjoint blocks. Run on its own, outside any caller's transaction, so a rolled
/// back save never gives its block back to be handed out twice.
pub const NEXT_BLOCK: &str = "INSERT INTO mt_hilo AS h (entity_name, hi_value) VALUES ($1, $2) \
     ON CONFLICT (entity_name) DO UPDATE SET hi_value = h.hi_value + excluded.hi_value \
     RETURNING h.hi_value";

/// Reserves the last ids of an entity, from the one after its `hi_value` up to `$2`
/// (`i64::MAX`), and returns the `hi_value` it found (`$1`: the entity name): run when
/// [`NEXT_BLOCK`] is refused because a whole block would pass `i64::MAX`, so that the
/// ids left are handed out as a short last block. When the returned value is `$2`
/// already, no id is left. The row is locked by the sub-select before it is read, so
/// concurrent callers (and blocks) never overlap: in `READ COMMITTED` a caller that
/// waited reads the value the other one committed.
pub const FINAL_BLOCK: &str = "UPDATE mt_hilo AS h SET hi_value = $2 \
     FROM (SELECT hi_value FROM mt_hilo WHERE entity_name = $1 FOR UPDATE) AS o \
     WHERE h.entity_name = $1 RETURNING o.hi_value";

/// Raises the floor of an entity's ids (`$1`: the entity name, `$2`: the floor): every id
/// reserved afterwards is above it. Never lowers it.
pub const RAISE_FLOOR: &str = "INSERT INTO mt_hilo AS h (entity_name, hi_value) VALUES ($1, $2) \
     ON CONFLICT (entity_name) DO UPDATE SET hi_value = greatest(h.hi_value, excluded.hi_value)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_is_schema_qualified_and_idempotent() {
        let ddl = table_def().ddl("s1").join(";\n");
        assert!(
            ddl.contains("CREATE TABLE IF NOT EXISTS s1.mt_hilo"),
            "{ddl}"
        );
        assert!(ddl.contains("entity_name text PRIMARY KEY"), "{ddl}");
        assert!(ddl.contains("hi_value bigint NOT NULL"), "{ddl}");
    }

    #[test]
    fn a_block_is_taken_in_one_statement_that_returns_its_end() {
        for sql in [NEXT_BLOCK, RAISE_FLOOR] {
            assert!(sql.starts_with("INSERT INTO mt_hilo"), "{sql}");
            assert!(sql.contains("ON CONFLICT (entity_name) DO UPDATE"), "{sql}");
        }
        assert!(NEXT_BLOCK.contains("hi_value = h.hi_value + excluded.hi_value"));
        assert!(NEXT_BLOCK.ends_with("RETURNING h.hi_value"));
        assert!(RAISE_FLOOR.contains("greatest(h.hi_value, excluded.hi_value)"));
    }

    #[test]
    fn the_last_block_locks_the_row_and_returns_the_value_it_found() {
        assert!(FINAL_BLOCK.starts_with("UPDATE mt_hilo AS h SET hi_value = $2"));
        assert!(FINAL_BLOCK.contains("WHERE entity_name = $1 FOR UPDATE) AS o"));
        assert!(FINAL_BLOCK.ends_with("RETURNING o.hi_value"));
    }
}

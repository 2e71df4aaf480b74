//! The store's HiLo allocator: integer ids for new documents, handed out from blocks the
//! store reserves in the `mt_hilo` table (one statement per block, see
//! [`crate::tables::hilo`]). A block is reserved on a pooled connection of its own,
//! never inside a caller's transaction, and shared by every session of the store (and
//! its clones); ids of a block the process never hands out are simply skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use marten_core::{Error, Result};
use tokio::sync::Mutex as AsyncMutex;

use super::DocumentStore;
use crate::connection::Conn;
use crate::error_map::{map_db_error, Failed};
use crate::id::HiLoId;
use crate::schema::hilo_schema;
use crate::tables::hilo::{FINAL_BLOCK, NEXT_BLOCK, RAISE_FLOOR};

/// The default number of ids a store reserves at a time (Marten's "max lo").
pub(crate) const DEFAULT_BLOCK_SIZE: u32 = 1000;

/// SQLSTATE `numeric_value_out_of_range`: a whole block would pass `i64::MAX` (the ids
/// left are then reserved as a short last block).
const OUT_OF_RANGE: &str = "22003";

/// The ids left in the current block of one entity: `next..=last` (empty when
/// `next > last`).
#[derive(Debug)]
struct Block {
    next: i64,
    last: i64,
}

impl Default for Block {
    /// An empty block.
    fn default() -> Self {
        Block { next: 1, last: 0 }
    }
}

/// Why an entity got no id: the statement failed, or its ids ran out at `i64::MAX`.
enum NoValue {
    Failed(Error),
    Exhausted,
}

impl From<Error> for NoValue {
    fn from(e: Error) -> Self {
        NoValue::Failed(e)
    }
}

/// The error of a document type whose HiLo ids are used up (every id up to `i64::MAX`
/// was handed out).
fn used_up(document_type: &'static str) -> Error {
    Error::InvalidId {
        document_type,
        id: format!("{} + 1", i64::MAX),
        reason: "the HiLo ids of this document type are used up (the next would pass i64::MAX)",
    }
}

/// The current blocks of a store, per entity (a document table).
#[derive(Debug)]
pub(crate) struct HiLo {
    block_size: i64,
    /// One lock per entity: the task that finds the block empty reserves the next one
    /// while the others wait for it (one round trip per block, no block wasted).
    blocks: Mutex<HashMap<&'static str, Arc<AsyncMutex<Block>>>>,
}

impl HiLo {
    /// An allocator reserving `block_size` ids at a time.
    pub(crate) fn new(block_size: u32) -> Self {
        Self {
            block_size: i64::from(block_size.max(1)),
            blocks: Mutex::new(HashMap::new()),
        }
    }

    fn block(&self, entity: &'static str) -> Arc<AsyncMutex<Block>> {
        self.blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(entity)
            .or_default()
            .clone()
    }
}

impl DocumentStore {
    /// A new id for a document of type `D` from the store's HiLo allocator: unique across
    /// every store (every process) on this schema, increasing within one store. Ids are
    /// reserved in blocks ([`DocumentStoreBuilder::hilo_block_size`], default 1000) in the
    /// `mt_hilo` table, one short statement per block on a pooled connection of its own
    /// (never in a session's transaction), so most calls do not touch the database.
    ///
    /// Fails with [`Error::InvalidId`] when the generated value does not fit the id type
    /// (an `i32` id past `i32::MAX`), and once every id up to `i64::MAX` was handed out
    /// (the last ones, fewer than a block, are handed out first as a short block).
    ///
    /// [`DocumentStoreBuilder::hilo_block_size`]: crate::DocumentStoreBuilder::hilo_block_size
    pub async fn next_id<D: crate::PgDocument>(&self) -> Result<D::Id>
    where
        D::Id: HiLoId,
    {
        self.next_id_on::<D>(&mut Conn::new()).await
    }

    /// [`next_id`](Self::next_id), reserving a block (when one is needed) on `conn`: a
    /// session's connection when no transaction is open on it (so a session does not
    /// need a second connection), else a slot of its own.
    pub(crate) async fn next_id_on<D: crate::PgDocument>(&self, conn: &mut Conn) -> Result<D::Id>
    where
        D::Id: HiLoId,
    {
        let entity = D::TABLE_NAME;
        let value = match self.next_value(entity, conn).await {
            Ok(value) => value,
            Err(NoValue::Failed(e)) => return Err(e),
            Err(NoValue::Exhausted) => return Err(used_up(D::DOCUMENT_TYPE)),
        };
        D::Id::from_generated(value).ok_or_else(|| Error::InvalidId {
            document_type: D::DOCUMENT_TYPE,
            id: value.to_string(),
            reason: "the generated id does not fit the id type",
        })
    }

    /// Raises the floor of the ids generated for `D`: every id the allocator reserves
    /// afterwards (in any store on this schema) is above `floor`. For documents imported
    /// with ids of their own. Never lowers it; drops this store's current block so that
    /// its next id is above the floor too (other stores finish their current block first).
    /// A negative floor is refused with [`Error::InvalidId`].
    pub async fn reset_hilo_floor<D: crate::PgDocument>(&self, floor: i64) -> Result<()>
    where
        D::Id: HiLoId,
    {
        if floor < 0 {
            return Err(Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: floor.to_string(),
                reason: "a HiLo floor cannot be negative",
            });
        }
        let entity = D::TABLE_NAME;
        let block = self.hilo().block(entity);
        let mut current = block.lock().await;
        // Dropped before the statement runs: a call that fails, or whose future is
        // dropped after the server raised the floor, must not leave ids below it to hand
        // out (the next id reserves a new block either way).
        *current = Block::default();
        self.hilo_statement(RAISE_FLOOR, entity, floor, &mut Conn::new())
            .await?;
        Ok(())
    }

    /// `n` new ids for the documents of `D` whose ids are zero (a bulk insert), in one
    /// go: the rest of the current block first, then one block of at least `n` ids (the
    /// store's block size, or more when more are asked for), so any `n` costs at most one
    /// round trip (two at the top of `i64`). Blocks are reserved on `conn` (not in a
    /// transaction). Fails with [`Error::InvalidId`] when the ids are used up; ids taken
    /// before that are skipped, never handed out again.
    pub(crate) async fn next_values_on<D: crate::PgDocument>(
        &self,
        n: usize,
        conn: &mut Conn,
    ) -> Result<Vec<i64>> {
        self.next_values(D::TABLE_NAME, n, conn)
            .await
            .map_err(|e| match e {
                NoValue::Failed(e) => e,
                NoValue::Exhausted => used_up(D::DOCUMENT_TYPE),
            })
    }

    /// The next value of `entity`'s current block, reserving a block when it is empty.
    async fn next_value(&self, entity: &'static str, conn: &mut Conn) -> Result<i64, NoValue> {
        let values = self.next_values(entity, 1, conn).await?;
        values.first().copied().ok_or(NoValue::Exhausted)
    }

    /// The next `n` values of `entity`, from its current block and, when that runs out,
    /// from a block of at least the ids still wanted. [`NoValue::Exhausted`] once no id
    /// is left below `i64::MAX`.
    async fn next_values(
        &self,
        entity: &'static str,
        n: usize,
        conn: &mut Conn,
    ) -> Result<Vec<i64>, NoValue> {
        let block = self.hilo().block(entity);
        let mut current = block.lock().await;
        let mut values = Vec::with_capacity(n);
        while values.len() < n {
            if current.next > current.last {
                let wanted = i64::try_from(n - values.len()).unwrap_or(i64::MAX);
                let size = wanted.max(self.hilo().block_size);
                *current = self.reserve(entity, size, conn).await?;
                tracing::debug!(
                    entity,
                    first = current.next,
                    last = current.last,
                    "reserved a block of HiLo ids"
                );
            }
            while values.len() < n && current.next <= current.last {
                values.push(current.next);
                match current.next.checked_add(1) {
                    Some(next) => current.next = next,
                    // The last id there is: the block is empty now.
                    None => *current = Block::default(),
                }
            }
        }
        Ok(values)
    }

    /// Reserves the next block of `entity`: `size` ids, or when a whole block would pass
    /// `i64::MAX` (the statement refuses it: `bigint` out of range) the ids left below
    /// it, a short last block ([`FINAL_BLOCK`]). [`NoValue::Exhausted`] when none is left.
    async fn reserve(
        &self,
        entity: &'static str,
        size: i64,
        conn: &mut Conn,
    ) -> Result<Block, NoValue> {
        match self.hilo_statement(NEXT_BLOCK, entity, size, conn).await {
            Ok(Some(last)) => {
                return Ok(Block {
                    next: last - size + 1,
                    last,
                })
            }
            // The statement always returns its row.
            Ok(None) => {
                return Err(NoValue::Failed(Error::Configuration(format!(
                    "reserving a block of HiLo ids for {entity} returned no row"
                ))))
            }
            Err(Error::Database(e)) if e.code.as_deref() == Some(OUT_OF_RANGE) => {}
            Err(e) => return Err(e.into()),
        }
        match self
            .hilo_statement(FINAL_BLOCK, entity, i64::MAX, conn)
            .await?
        {
            Some(before) if before < i64::MAX => {
                tracing::warn!(
                    entity,
                    left = i64::MAX - before,
                    "the last HiLo ids below i64::MAX are reserved"
                );
                Ok(Block {
                    next: before + 1,
                    last: i64::MAX,
                })
            }
            // At `i64::MAX` already (the row cannot be missing: the block before was
            // refused for passing it).
            _ => Err(NoValue::Exhausted),
        }
    }

    /// Runs a HiLo statement for `entity` with `value` on `conn` (after making sure of
    /// the table), returning the `hi_value` it reports (`None` when it returns no row).
    /// The statement commits on its own: `conn` must not be inside a transaction.
    async fn hilo_statement(
        &self,
        sql: &'static str,
        entity: &str,
        value: i64,
        conn: &mut Conn,
    ) -> Result<Option<i64>> {
        let (type_id, migrate) = hilo_schema();
        self.ensure_erased(type_id, migrate).await?;
        let what = Failed::Other("reserving a block of HiLo ids");
        if conn.in_transaction() {
            return Err(Error::Configuration(
                "a HiLo block cannot be reserved inside a transaction".to_owned(),
            ));
        }
        conn.run(self, async |db| {
            let rows = db
                .query(sql, &[&entity, &value])
                .await
                .map_err(|e| map_db_error(e, what))?;
            rows.first()
                .map(|row| row.try_get(0).map_err(|e| map_db_error(e, what)))
                .transpose()
        })
        .await
    }
}

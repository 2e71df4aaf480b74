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
use crate::tables::hilo::{NEXT_BLOCK, RAISE_FLOOR};

/// The default number of ids a store reserves at a time (Marten's "max lo").
pub(crate) const DEFAULT_BLOCK_SIZE: u32 = 1000;

/// SQLSTATE `numeric_value_out_of_range`: the block would pass `i64::MAX`.
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
    /// (an `i32` id past `i32::MAX`).
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
            Err(NoValue::Exhausted) => return Err(Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: format!("{} + 1", i64::MAX),
                reason:
                    "the HiLo ids of this document type are used up (the next would pass i64::MAX)",
            }),
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

    /// The next value of `entity`'s current block, reserving a block when it is empty.
    /// [`NoValue::Exhausted`] when the next block would pass `i64::MAX` (the statement
    /// refuses it: `bigint` out of range).
    async fn next_value(&self, entity: &'static str, conn: &mut Conn) -> Result<i64, NoValue> {
        let block = self.hilo().block(entity);
        let mut current = block.lock().await;
        if current.next > current.last {
            let size = self.hilo().block_size;
            let last = match self.hilo_statement(NEXT_BLOCK, entity, size, conn).await {
                Ok(last) => last,
                Err(Error::Database(e)) if e.code.as_deref() == Some(OUT_OF_RANGE) => {
                    return Err(NoValue::Exhausted)
                }
                Err(e) => return Err(e.into()),
            };
            *current = Block {
                next: last - size + 1,
                last,
            };
        }
        let value = current.next;
        match value.checked_add(1) {
            Some(next) => current.next = next,
            // The last id there is: the block is empty now.
            None => *current = Block::default(),
        }
        Ok(value)
    }

    /// Runs a HiLo statement for `entity` with `value` on `conn` (after making sure of
    /// the table), returning the `hi_value` it reports (0 when it returns none). The
    /// statement commits on its own: `conn` must not be inside a transaction.
    async fn hilo_statement(
        &self,
        sql: &'static str,
        entity: &str,
        value: i64,
        conn: &mut Conn,
    ) -> Result<i64> {
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
            match rows.first() {
                Some(row) => row.try_get(0).map_err(|e| map_db_error(e, what)),
                None => Ok(0),
            }
        })
        .await
    }
}

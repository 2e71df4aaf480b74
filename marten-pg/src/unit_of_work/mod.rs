//! The unit of work: operations queued by a session, sent by `save_changes` in one
//! transaction and one network round trip.
//!
//! `BEGIN`, every operation, the batch guard and `COMMIT` are written to the connection
//! together (tokio-postgres pipelines requests that are in flight at once) and their
//! results read back in order. Writes that can be rejected do not raise; they report
//! what they wrote and flag the transaction, and the guard then raises, so the `COMMIT`
//! that follows finds an aborted transaction and rolls it back. Every rejection of the
//! batch is therefore known after that one round trip; one more query per rejected
//! operation, after the rollback, reads the stored versions to explain them.
//!
//! `mod.rs` holds the queue; `writer.rs` sends it; `lost.rs` settles a save whose
//! answers were lost. May use: the connection layer, the schema layer, the error map.

mod lost;
mod writer;

use std::future::Future;
use std::pin::Pin;

use marten_core::concurrency::VersionOf;
use tokio_postgres::Row;

pub(crate) use crate::connection::join_in_order;
use crate::documents::batch::{DeleteBatch, Operation, WriteBatch};
use crate::documents::{PgDocument, WriteKind};
use crate::json::RawJson;
use crate::projections::cache::CacheUpdate;

/// What a session remembers (versions, identity map, dirty tracking), its dirty
/// documents flushed into a unit of work.
pub(crate) type SessionState = marten_core::session::SessionState<UnitOfWork>;

/// A list of operations in order, merging consecutive writes of one type and kind.
#[derive(Default)]
pub(crate) struct OpList {
    pub(crate) ops: Vec<Box<dyn Operation>>,
}

impl OpList {
    /// Queues a write, joining the previous operation when it is a batch of the same type
    /// and kind that does not yet touch this id.
    pub(crate) fn push_write<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        if let Some(last) = self.ops.last_mut() {
            if let Some(batch) = last.as_any_mut().downcast_mut::<WriteBatch<D>>() {
                if batch.accepts(kind, &id) {
                    batch.push(id, RawJson(json), expected);
                    return;
                }
            }
        }
        let mut batch = WriteBatch::<D>::new(kind);
        batch.push(id, RawJson(json), expected);
        self.ops.push(Box::new(batch));
    }

    /// Queues a write an inline projection derived, marked so that its rejection makes
    /// the save plan again and retry rather than fail.
    pub(crate) fn push_derived_write<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        self.push_write::<D>(kind, id, json, expected);
        if let Some(batch) = self
            .ops
            .last_mut()
            .and_then(|op| op.as_any_mut().downcast_mut::<WriteBatch<D>>())
        {
            batch.derived = true;
        }
    }

    /// Moves every operation of `other` to the end of this list.
    pub(crate) fn append(&mut self, other: &mut OpList) {
        self.ops.append(&mut other.ops);
    }

    /// Queues any operation as it is.
    pub(crate) fn push_op(&mut self, op: Box<dyn Operation>) {
        self.ops.push(op);
    }

    /// Queues a delete by id.
    pub(crate) fn push_delete<D: PgDocument>(&mut self, id: D::Id) {
        if let Some(last) = self.ops.last_mut() {
            if let Some(batch) = last.as_any_mut().downcast_mut::<DeleteBatch<D>>() {
                batch.push(id);
                return;
            }
        }
        let mut batch = DeleteBatch::<D>::new();
        batch.push(id);
        self.ops.push(Box::new(batch));
    }
}

/// Operations queued by a session (`user`), and the writes its inline projections derive
/// from them (`derived`, planned anew on every attempt of a save).
#[derive(Default)]
pub(crate) struct UnitOfWork {
    /// Sent first: the tag lock of consistency boundaries.
    pub(crate) prelude: OpList,
    pub(crate) user: OpList,
    pub(crate) derived: OpList,
    /// What the store's aggregate cache learns if this attempt commits.
    pub(crate) cache_updates: Vec<CacheUpdate>,
}

/// How a save ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything was written.
    Committed,
    /// Nothing was written, and every rejection came from a check marten added itself (an
    /// inline projection's): plan again and retry.
    Retry,
}

/// A statement's answer as a future (for pipelines not yet on [`crate::connection::Pipeline`]).
pub(crate) type StatementFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

impl UnitOfWork {
    pub(crate) fn is_empty(&self) -> bool {
        self.user.ops.is_empty() && self.derived.ops.is_empty()
    }

    /// The number of documents and events the queued operations touch.
    pub(crate) fn len(&self) -> usize {
        self.user.ops.iter().map(|o| o.len()).sum()
    }

    pub(crate) fn clear(&mut self) {
        self.prelude.ops.clear();
        self.user.ops.clear();
        self.derived.ops.clear();
        self.cache_updates.clear();
    }

    /// Queues a write (see [`OpList::push_write`]).
    pub(crate) fn push_write<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        self.user.push_write::<D>(kind, id, json, expected);
    }

    /// Queues any operation as it is.
    pub(crate) fn push_op(&mut self, op: Box<dyn Operation>) {
        self.user.push_op(op);
    }

    /// Queues a delete by id.
    pub(crate) fn push_delete<D: PgDocument>(&mut self, id: D::Id) {
        self.user.push_delete::<D>(id);
    }

    /// Forgets the derived writes and every operation's result, before planning again.
    pub(crate) fn reset_attempt(&mut self) {
        self.prelude.ops.clear();
        self.derived.ops.clear();
        self.cache_updates.clear();
        for op in &mut self.user.ops {
            op.reset();
        }
    }
}

//! Typed document writes and deletes queued on a unit of work: consecutive operations of
//! one document type (and write kind) join one batch, and dirty-tracked documents are
//! queued as upserts. Uses the unit of work's queue and the batch types; never
//! projections, session, store or daemon.

use marten_core::concurrency::VersionOf;
use marten_core::session::DirtyQueue;
use marten_core::Result;

use super::delete_batch::DeleteBatch;
use super::storage::{BasicWrite, PgDocument, WriteOf};
use super::write_batch::WriteBatch;
use crate::json::RawJson;
use crate::unit_of_work::{OpList, Queued, UnitOfWork};

/// Typed document writes: consecutive writes of one type and kind share one batch.
impl OpList {
    /// Queues a write, joining the previous operation when it is a batch of the same type
    /// and kind that does not yet touch this id.
    pub(crate) fn push_write<D: PgDocument>(
        &mut self,
        kind: impl Into<WriteOf<D>>,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        let kind = kind.into();
        if let Some(batch) = self.last_batch::<WriteBatch<D>>() {
            if batch.accepts(kind, &id) {
                batch.push(id, RawJson(json), expected);
                return;
            }
        }
        let mut batch = WriteBatch::<D>::new(kind, self.tenant.as_ref());
        batch.push(id, RawJson(json), expected);
        self.items.push(Queued::Documents(Box::new(batch)));
    }

    /// Queues a write an inline projection derived, marked so that its rejection makes
    /// the save plan again and retry rather than fail.
    pub(crate) fn push_derived_write<D: PgDocument>(
        &mut self,
        kind: impl Into<WriteOf<D>>,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        self.push_write::<D>(kind, id, json, expected);
        if let Some(batch) = self.last_batch::<WriteBatch<D>>() {
            batch.derived = true;
        }
    }

    /// Queues the write an inline aggregate derived from its cached document `replaces`
    /// (`None`: none stored), on its own, guarded: it writes nothing, and the save plans
    /// again, unless the stored document is still that one.
    pub(crate) fn push_guarded_write<D: PgDocument>(
        &mut self,
        kind: impl Into<WriteOf<D>>,
        id: D::Id,
        json: Vec<u8>,
        replaces: Option<&[u8]>,
    ) {
        let batch = WriteBatch::<D>::guarded(
            kind.into(),
            self.tenant.as_ref(),
            (id, RawJson(json)),
            replaces,
        );
        self.items.push(Queued::Documents(Box::new(batch)));
    }

    /// Queues a delete by id (a soft-deleted type's row is marked deleted).
    pub(crate) fn push_delete<D: PgDocument>(&mut self, id: D::Id) {
        self.push_delete_of::<D>(id, false);
    }

    /// Queues a delete by id that removes the row, marked deleted or not.
    pub(crate) fn push_hard_delete<D: PgDocument>(&mut self, id: D::Id) {
        self.push_delete_of::<D>(id, true);
    }

    fn push_delete_of<D: PgDocument>(&mut self, id: D::Id, hard: bool) {
        if let Some(batch) = self.last_batch::<DeleteBatch<D>>() {
            if batch.hard == hard {
                batch.push(id);
                return;
            }
        }
        let mut batch = DeleteBatch::<D>::new(self.tenant.as_ref(), hard);
        batch.push(id);
        self.items.push(Queued::Documents(Box::new(batch)));
    }

    /// The last entry, if it is a document batch of type `B`.
    fn last_batch<B: 'static>(&mut self) -> Option<&mut B> {
        match self.items.last_mut() {
            Some(Queued::Documents(batch)) => batch.as_any_mut().downcast_mut::<B>(),
            _ => None,
        }
    }
}

/// Changed dirty-tracked documents are queued as upserts.
impl<D: PgDocument> DirtyQueue<D> for UnitOfWork {
    fn queue_dirty(
        &mut self,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) -> Result<()> {
        super::check_document::<D>(&id, &json)?;
        self.user
            .push_write::<D>(BasicWrite::Upsert, id, json, expected);
        Ok(())
    }
}

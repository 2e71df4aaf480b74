//! Queuing writes on a session: store, insert, update, delete and the revision writes
//! of numeric documents, each checked, serialized and remembered before it is queued.

use std::sync::Arc;

use super::backend::DocumentBackend;
use super::kinds::Tracking;
use super::parts::Session;
use super::state::Tracked;
use crate::concurrency::{
    BasicWrite, NumericMode, NumericWrite, VersionOf, VersionedMode, WriteOf,
};
use crate::tenant::require_tenant;
use crate::{Document, DocumentId, Error, Result};

/// Fails with [`Error::InvalidId`] when `id` cannot name a document of type `D`.
pub fn check_id<D: Document>(id: &D::Id) -> Result<()> {
    id.validate().map_err(|reason| Error::InvalidId {
        document_type: D::DOCUMENT_TYPE,
        id: id.to_string(),
        reason,
    })
}

impl<B: super::Backend, K: Tracking> Session<B, K> {
    /// The version this session last saw for a document (by load, by
    /// `store_with_version` or by a save), if any.
    pub fn version_of<D: Document>(&mut self, id: &D::Id) -> Option<VersionOf<D>>
    where
        B: DocumentBackend<D>,
    {
        self.parts_mut()
            .state
            .doc_state::<D>()
            .versions
            .get(id)
            .copied()
    }

    /// Prepares a document for a write: assigns a new id to a nil `Uuid`, checks the id,
    /// serializes it, and keeps it in the identity map or the tracker.
    fn prepare<D: Document>(&mut self, mut doc: D) -> Result<(D::Id, Vec<u8>)>
    where
        B: DocumentBackend<D>,
    {
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
        let id = doc.id().clone();
        let json = B::serialize(&doc)?;
        if K::IDENTITY {
            let state = self.parts_mut().state.doc_state::<D>();
            state
                .identity
                .insert(id.clone(), Arc::from(json.as_slice()));
            if state.tracked.contains_key(&id) || K::DIRTY {
                let snapshot = json.clone();
                state.tracked.insert(id.clone(), Tracked { doc, snapshot });
            }
            // Held as written only once the save commits.
            state.write_pending(&id);
        }
        Ok((id, json))
    }

    /// Prepares `doc` and queues a write of `kind`; `expected`: the version to assert, or
    /// `None` for the one the session saw (when its checks are on).
    fn queue<D: Document>(
        &mut self,
        kind: WriteOf<D>,
        doc: D,
        expected: Option<Option<VersionOf<D>>>,
    ) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
    {
        require_tenant(D::TENANCY, B::tenant(self.store_ref()), D::DOCUMENT_TYPE)?;
        let (id, json) = self.prepare(doc)?;
        let parts = self.parts_mut();
        let checks = parts.options.concurrency_checks;
        let docs = parts.state.doc_state::<D>();
        let expected = match expected {
            Some(given) => given,
            None if checks => docs.expected_for(&id),
            None => None,
        };
        // Checked or not, the write moves the version: a later write or patch of `id` in
        // this save must not assert the version the session knew.
        docs.wrote(&id);
        B::queue_write(&mut parts.queue, kind, id.clone(), json, expected);
        Ok(id)
    }

    /// Queues an upsert. If the session knows the document's version (it loaded it, or
    /// stored it with a version, or saved it), the write succeeds only if that version is
    /// still the stored one - unless an operation queued earlier for the same save
    /// writes or patches the document by id: that one moves the version first in the save's transaction, so this write asserts nothing. A nil
    /// `Uuid` id is replaced by a new version-7 uuid; the id is returned.
    pub fn store<D: Document>(&mut self, doc: D) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
    {
        self.queue(BasicWrite::Upsert.into(), doc, None)
    }

    /// Queues an upsert that asserts `version` is the stored version (for a document
    /// this session did not load). Only for optimistic and numeric documents.
    pub fn store_with_version<D: Document>(
        &mut self,
        doc: D,
        version: VersionOf<D>,
    ) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
        D::Mode: VersionedMode,
    {
        let checked = self.parts().options.concurrency_checks.then_some(version);
        self.queue(BasicWrite::Upsert.into(), doc, Some(checked))
    }

    /// Queues an insert; `save_changes` rejects it if the id exists.
    pub fn insert<D: Document>(&mut self, doc: D) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
    {
        self.queue(BasicWrite::Insert.into(), doc, Some(None))
    }

    /// Queues an update; `save_changes` rejects it if the document does not exist (or, with
    /// a known version, if the version moved).
    pub fn update<D: Document>(&mut self, doc: D) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
    {
        self.queue(BasicWrite::Update.into(), doc, None)
    }

    /// Queues a delete by id. A soft-deleted type's document
    /// (`#[document(soft_delete)]`) is marked deleted, not removed: loads and queries
    /// skip it from then on.
    pub fn delete<D: Document>(&mut self, id: &D::Id) -> Result<()>
    where
        B: DocumentBackend<D>,
    {
        self.queue_delete::<D>(id, B::queue_delete)
    }

    /// Queues a delete by id that removes the document's row, also when the type is
    /// soft-deleted and the document marked deleted (for any other type it is
    /// [`delete`](Self::delete)).
    pub fn hard_delete<D: Document>(&mut self, id: &D::Id) -> Result<()>
    where
        B: DocumentBackend<D>,
    {
        self.queue_delete::<D>(id, B::queue_hard_delete)
    }

    /// Checks `id` and the tenant, forgets the session's copy and queues with `queue`.
    fn queue_delete<D: Document>(
        &mut self,
        id: &D::Id,
        queue: fn(&mut B::Queue, D::Id),
    ) -> Result<()>
    where
        B: DocumentBackend<D>,
    {
        check_id::<D>(id)?;
        require_tenant(D::TENANCY, B::tenant(self.store_ref()), D::DOCUMENT_TYPE)?;
        let parts = self.parts_mut();
        parts.state.doc_state::<D>().forget_now(id);
        queue(&mut parts.queue, id.clone());
        Ok(())
    }

    /// Numeric documents: writes the document at `revision`; `save_changes` rejects it if
    /// the stored revision is already `revision` or higher.
    pub fn update_revision<D: Document>(&mut self, doc: D, revision: i64) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
        D::Mode: NumericMode,
    {
        self.queue(NumericWrite::UpdateRevision, doc, Some(Some(revision)))
    }

    /// Numeric documents: like [`update_revision`](Self::update_revision), but a revision
    /// that is not newer is silently skipped. A session never holds a skipped document:
    /// unless the backend can tell the write was made (a save of this write alone), an
    /// identity or dirty-tracked session forgets its copy when the save commits, and its
    /// next load reads the stored document.
    pub fn try_update_revision<D: Document>(&mut self, doc: D, revision: i64) -> Result<D::Id>
    where
        B: DocumentBackend<D>,
        D::Mode: NumericMode,
    {
        self.queue(NumericWrite::TryUpdateRevision, doc, Some(Some(revision)))
    }
}

//! Queuing writes on a session: store, insert, update, delete and the revision writes
//! of numeric documents, each checked, serialized and remembered before it is queued.

use std::sync::Arc;

use marten_core::concurrency::{NumericMode, VersionOf, VersionedMode};
use marten_core::session::Tracked;
use marten_core::{DocumentId, Error, Result};

use super::kinds::is_dirty_tracking;
use super::{Session, Tracking};
use crate::documents::load::check_id;
use crate::documents::{serialize, BasicWrite, NumericWrite, PgDocument, WriteOf};

impl<K: Tracking> Session<K> {
    /// The version this session last saw for a document (by load, by
    /// `store_with_version` or by a save), if any.
    pub fn version_of<D: PgDocument>(&mut self, id: &D::Id) -> Option<VersionOf<D>> {
        self.state.doc_state::<D>().versions.get(id).copied()
    }

    fn expected<D: PgDocument>(&mut self, id: &D::Id) -> Option<VersionOf<D>> {
        if self.options.concurrency_checks {
            self.state.doc_state::<D>().versions.get(id).copied()
        } else {
            None
        }
    }

    /// Prepares a document for a write: assigns a new id to a nil `Uuid`, checks the id,
    /// serializes it, and keeps it in the identity map or the tracker.
    fn prepare<D: PgDocument>(&mut self, mut doc: D) -> Result<(D::Id, Vec<u8>)> {
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
        let id = doc.id().clone();
        let json = serialize(&doc)?;
        if K::IDENTITY {
            let state = self.state.doc_state::<D>();
            state
                .identity
                .insert(id.clone(), Arc::from(json.as_slice()));
            if state.tracked.contains_key(&id) || is_dirty_tracking::<K>() {
                state.tracked.insert(
                    id.clone(),
                    Tracked {
                        doc,
                        snapshot: json.clone(),
                    },
                );
            }
        }
        Ok((id, json))
    }

    fn queue<D: PgDocument>(
        &mut self,
        kind: WriteOf<D>,
        doc: D,
        expected: Option<Option<VersionOf<D>>>,
    ) -> Result<D::Id> {
        let (id, json) = self.prepare(doc)?;
        let expected = match expected {
            Some(given) => given,
            None => self.expected::<D>(&id),
        };
        self.uow
            .user
            .push_write::<D>(kind, id.clone(), json, expected);
        Ok(id)
    }

    /// Queues an upsert. If the session knows the document's version (it loaded it, or
    /// stored it with a version, or saved it), the write succeeds only if that version is
    /// still the stored one. A nil `Uuid` id is replaced by a new version-7 uuid; the id
    /// is returned.
    pub fn store<D: PgDocument>(&mut self, doc: D) -> Result<D::Id> {
        self.queue(BasicWrite::Upsert.into(), doc, None)
    }

    /// Queues an upsert that asserts `version` is the stored version (for a document
    /// this session did not load). Only for optimistic and numeric documents.
    pub fn store_with_version<D: PgDocument>(
        &mut self,
        doc: D,
        version: VersionOf<D>,
    ) -> Result<D::Id>
    where
        D::Mode: VersionedMode,
    {
        let checked = self.options.concurrency_checks.then_some(version);
        self.queue(BasicWrite::Upsert.into(), doc, Some(checked))
    }

    /// Queues an insert; `save_changes` rejects it if the id exists.
    pub fn insert<D: PgDocument>(&mut self, doc: D) -> Result<D::Id> {
        self.queue(BasicWrite::Insert.into(), doc, Some(None))
    }

    /// Queues an update; `save_changes` rejects it if the document does not exist (or, with
    /// a known version, if the version moved).
    pub fn update<D: PgDocument>(&mut self, doc: D) -> Result<D::Id> {
        self.queue(BasicWrite::Update.into(), doc, None)
    }

    /// Queues a delete by id.
    pub fn delete<D: PgDocument>(&mut self, id: &D::Id) -> Result<()> {
        check_id::<D>(id)?;
        let state = self.state.doc_state::<D>();
        state.identity.remove(id);
        state.tracked.remove(id);
        self.uow.user.push_delete::<D>(id.clone());
        Ok(())
    }

    /// Numeric documents: writes the document at `revision`; `save_changes` rejects it if
    /// the stored revision is already `revision` or higher.
    pub fn update_revision<D: PgDocument>(&mut self, doc: D, revision: i64) -> Result<D::Id>
    where
        D::Mode: NumericMode,
    {
        self.queue(NumericWrite::UpdateRevision, doc, Some(Some(revision)))
    }

    /// Numeric documents: like [`update_revision`](Self::update_revision), but a revision
    /// that is not newer is silently skipped.
    pub fn try_update_revision<D: PgDocument>(&mut self, doc: D, revision: i64) -> Result<D::Id>
    where
        D::Mode: NumericMode,
    {
        self.queue(NumericWrite::TryUpdateRevision, doc, Some(Some(revision)))
    }
}

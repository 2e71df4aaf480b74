//! What a session remembers per document type: versions seen, the identity map and the
//! dirty-tracked documents. Each type's state is its own typed map; sessions are mutated
//! only through `&mut self`, so no state is ever shared between tasks.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use marten_core::concurrency::VersionOf;
use marten_core::{Document, Error, Result};

use crate::documents::{PgDocument, WriteKind};
use crate::events::stream_id::StreamKey;
pub(crate) use crate::projections::Fetched;
use crate::unit_of_work::UnitOfWork;

/// A dirty-tracked document and the serialization it had when last loaded or saved.
pub(crate) struct Tracked<D> {
    pub(crate) doc: D,
    pub(crate) snapshot: Vec<u8>,
}

/// The session's state for documents of type `D`.
pub(crate) struct DocState<D: PgDocument> {
    /// The version last seen per id (by load, by `store_with_version` or by a save).
    pub(crate) versions: HashMap<D::Id, VersionOf<D>>,
    /// Identity map: the JSON of each loaded or stored document.
    pub(crate) identity: HashMap<D::Id, Arc<[u8]>>,
    /// Dirty tracking: documents owned by the session.
    pub(crate) tracked: HashMap<D::Id, Tracked<D>>,
    /// New snapshots to take when the save in flight commits.
    pending_snapshots: Vec<(D::Id, Vec<u8>)>,
}

impl<D: PgDocument> Default for DocState<D> {
    fn default() -> Self {
        Self {
            versions: HashMap::new(),
            identity: HashMap::new(),
            tracked: HashMap::new(),
            pending_snapshots: Vec::new(),
        }
    }
}

/// Type-erased access to a [`DocState`].
pub(crate) trait AnyDocState: Send + Sync {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Queues an upsert for every tracked document whose serialization changed.
    fn flush_dirty(&mut self, uow: &mut UnitOfWork, checks: bool) -> Result<()>;
    /// The save committed: the flushed serializations are the new snapshots.
    fn commit_snapshots(&mut self);
    /// The save failed: forget the flushed serializations.
    fn discard_snapshots(&mut self);
}

impl<D: PgDocument> AnyDocState for DocState<D> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn flush_dirty(&mut self, uow: &mut UnitOfWork, checks: bool) -> Result<()> {
        for (id, tracked) in &self.tracked {
            let json = serde_json::to_vec(&tracked.doc).map_err(|source| Error::Serialize {
                document_type: D::DOCUMENT_TYPE,
                id: id.to_string(),
                source,
            })?;
            if json != tracked.snapshot {
                check_document::<D>(id, &json)?;
                let expected = if checks {
                    self.versions.get(id).copied()
                } else {
                    None
                };
                uow.push_write::<D>(WriteKind::Upsert, id.clone(), json.clone(), expected);
                self.pending_snapshots.push((id.clone(), json));
            }
        }
        Ok(())
    }

    fn commit_snapshots(&mut self) {
        for (id, json) in self.pending_snapshots.drain(..) {
            if let Some(t) = self.tracked.get_mut(&id) {
                t.snapshot = json;
            }
        }
    }

    fn discard_snapshots(&mut self) {
        self.pending_snapshots.clear();
    }
}

/// All per-type states of a session.
#[derive(Default)]
pub(crate) struct SessionState {
    docs: HashMap<TypeId, Box<dyn AnyDocState>>,
    /// Aggregates `fetch_for_writing` loaded, by (aggregate type, stream).
    fetched: HashMap<(TypeId, StreamKey), Box<dyn Any + Send + Sync>>,
}

impl SessionState {
    /// Remembers what `fetch_for_writing` loaded, for the save's inline projection.
    pub(crate) fn put_fetched<A: Send + Sync + 'static>(
        &mut self,
        stream: StreamKey,
        fetched: Fetched<A>,
    ) {
        self.fetched
            .insert((TypeId::of::<A>(), stream), Box::new(fetched));
    }

    /// Takes what `fetch_for_writing` loaded for `key`, if it was of type `A`.
    pub(crate) fn take_fetched<A: Send + Sync + 'static>(
        &mut self,
        key: &(TypeId, StreamKey),
    ) -> Option<Fetched<A>> {
        let boxed = self.fetched.remove(key)?;
        boxed.downcast::<Fetched<A>>().ok().map(|b| *b)
    }

    /// The state of type `D`, created on first use.
    pub(crate) fn doc_state<D: PgDocument>(&mut self) -> &mut DocState<D> {
        let entry = self
            .docs
            .entry(TypeId::of::<D>())
            .or_insert_with(|| Box::new(DocState::<D>::default()));
        match entry.as_any_mut().downcast_mut::<DocState<D>>() {
            Some(state) => state,
            // The map is keyed by the TypeId of the state's own type parameter.
            None => unreachable!("session state keyed by the wrong type"),
        }
    }

    pub(crate) fn flush_dirty(&mut self, uow: &mut UnitOfWork, checks: bool) -> Result<()> {
        for state in self.docs.values_mut() {
            state.flush_dirty(uow, checks)?;
        }
        Ok(())
    }

    pub(crate) fn finish_save(&mut self, committed: bool) {
        for state in self.docs.values_mut() {
            if committed {
                state.commit_snapshots();
            } else {
                state.discard_snapshots();
            }
        }
    }
}

/// Serializes a document, naming it on failure. A document PostgreSQL cannot store (a
/// NUL character in a string or a map key) is [`Error::InvalidInput`].
pub(crate) fn serialize<D: Document>(doc: &D) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(doc).map_err(|source| Error::Serialize {
        document_type: D::DOCUMENT_TYPE,
        id: doc.id().to_string(),
        source,
    })?;
    check_document::<D>(doc.id(), &json)?;
    Ok(json)
}

/// Fails with [`Error::InvalidInput`] naming the type, id and field when a document's
/// JSON holds a NUL character.
fn check_document<D: Document>(id: &D::Id, json: &[u8]) -> Result<()> {
    crate::validate::check_json(json, || (D::DOCUMENT_TYPE.to_owned(), Some(id.to_string())))
}

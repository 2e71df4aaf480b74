//! What a session remembers per document type: versions seen, the identity map and the
//! dirty-tracked documents. Each type's state is its own typed map; a session is mutated
//! only through `&mut self`, so no state is ever shared between tasks.
//!
//! The state is generic over the queue `Q` a backend sends its writes through: flushing
//! the dirty-tracked documents queues an upsert per changed document with
//! [`DirtyQueue::queue_dirty`].

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tracing::warn;

use crate::concurrency::VersionOf;
use crate::{Document, Error, Result, StreamId};

/// A queue that accepts the upserts of changed dirty-tracked documents of type `D`.
pub trait DirtyQueue<D: Document> {
    /// Queues an upsert of `json` for `id`, asserting `expected` when given. May refuse a
    /// document the backend cannot store ([`Error::InvalidInput`]).
    fn queue_dirty(
        &mut self,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) -> Result<()>;
}

/// A dirty-tracked document and the serialization it had when last loaded or saved.
pub struct Tracked<D> {
    /// The document the session owns.
    pub doc: D,
    /// Its JSON when last loaded or saved.
    pub snapshot: Vec<u8>,
}

/// A map keyed by document id: hashed with foldhash (seeded per process), several times
/// faster than the standard SipHash on a 16-byte id, which a save with versions pays on
/// every write it records.
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set of document ids, hashed as [`IdMap`].
pub type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The session's state for documents of type `D`.
pub struct DocState<D: Document> {
    /// The version last seen per id (by load, by `store_with_version` or by a save).
    pub versions: IdMap<D::Id, VersionOf<D>>,
    /// Identity map: the JSON of each loaded or stored document.
    pub identity: IdMap<D::Id, Arc<[u8]>>,
    /// Dirty tracking: documents owned by the session.
    pub tracked: IdMap<D::Id, Tracked<D>>,
    /// Ids an operation queued for the pending save writes (a store, insert, update,
    /// revision write or patch by id, checked or not): a later write or patch of the same
    /// id in that save (one transaction, after it) asserts nothing, as the version the
    /// session knew has moved by then. Only the first write of an id in a save may
    /// assert its known version.
    pub asserted: IdSet<D::Id>,
    /// New snapshots to take when the save in flight commits.
    pending_snapshots: Vec<(D::Id, Vec<u8>)>,
    /// Ids whose document a write queued for the pending save put into the identity
    /// map or the tracker: if that save does not commit (rejected, failed, cancelled,
    /// discarded), the session forgets them, so that it never holds (or, dirty-tracked,
    /// takes for saved) a document that was not written.
    pending_writes: IdSet<D::Id>,
    /// Ids whose document the last operation of the pending save that touches them put
    /// into the identity map or the tracker (a store after a delete or a patch of the id
    /// in the same save): the commit-time cleanup of that earlier delete or patch keeps
    /// what the later write put there ([`DocState::forget_stale`]).
    held_written: IdSet<D::Id>,
}

impl<D: Document> Default for DocState<D> {
    fn default() -> Self {
        Self {
            versions: IdMap::default(),
            identity: IdMap::default(),
            tracked: IdMap::default(),
            asserted: IdSet::default(),
            pending_snapshots: Vec::new(),
            pending_writes: IdSet::default(),
            held_written: IdSet::default(),
        }
    }
}

impl<D: Document> DocState<D> {
    /// Queues an upsert for every tracked document whose serialization changed since it
    /// was loaded or saved; `checks`: assert the version last seen, unless an operation
    /// already queued for the save writes or patches it (as [`DocState::expected_for`]: a
    /// document stored explicitly and then changed in place is written twice in one
    /// transaction, and only the first write may assert the version the session knew).
    ///
    /// Changed means a different JSON value, not different bytes: a map (a `HashMap`
    /// built anew) may serialize the same content in another key order, which is no
    /// change. Only when the bytes differ is the JSON compared as values (and then that
    /// serialization becomes the snapshot, so the next flush compares bytes again).
    pub fn flush_dirty<Q: DirtyQueue<D>>(&mut self, queue: &mut Q, checks: bool) -> Result<()> {
        for (id, tracked) in &mut self.tracked {
            let json = serde_json::to_vec(&tracked.doc).map_err(|source| Error::Serialize {
                document_type: D::DOCUMENT_TYPE,
                id: id.to_string(),
                source,
            })?;
            if json != tracked.snapshot {
                if same_json(&json, &tracked.snapshot) {
                    tracked.snapshot = json;
                    continue;
                }
                let moved = self.asserted.contains(id);
                let expected = if checks && !moved {
                    self.versions.get(id).copied()
                } else {
                    None
                };
                if !moved {
                    self.asserted.insert(id.clone());
                }
                queue.queue_dirty(id.clone(), json.clone(), expected)?;
                self.pending_snapshots.push((id.clone(), json));
            }
        }
        Ok(())
    }

    /// The version to assert for a write or patch of `id` queued now, when the caller
    /// gave none and the session's checks are on: the known one, unless an operation
    /// already queued for the pending save writes `id`, which moves the version in the
    /// save's transaction before this one runs. Marks `id` written ([`DocState::wrote`]).
    ///
    /// A patch by filter marks nothing: which documents it moves is known only when it
    /// runs, and a later write of a document it did not match must still be checked (a
    /// write left unchecked after it would overwrite another session's change). A checked
    /// write of a document the filter did match is rejected; save it in a save of its
    /// own.
    pub fn expected_for(&mut self, id: &D::Id) -> Option<VersionOf<D>> {
        if self.moved(id) {
            return None;
        }
        let known = self.versions.get(id).copied();
        self.wrote(id);
        known
    }

    /// Whether an operation queued for the pending save moves the version of `id` (it
    /// writes or patches `id`): a write or patch queued now must not assert the version
    /// the session knew.
    pub fn moved(&self, id: &D::Id) -> bool {
        self.asserted.contains(id)
    }

    /// Records that an operation queued for the pending save writes `id` (moving its
    /// version): later writes and patches of `id` in that save assert no known version.
    /// Returns whether `id` was not recorded yet (see [`DocState::unwrote`]).
    pub fn wrote(&mut self, id: &D::Id) -> bool {
        if self.asserted.contains(id) {
            return false;
        }
        self.asserted.insert(id.clone())
    }

    /// Undoes [`DocState::wrote`] (that returned `true`) for an operation that could not
    /// be queued after all: a later write of `id` must then assert the known version.
    pub fn unwrote(&mut self, id: &D::Id) {
        self.asserted.remove(id);
    }

    /// An operation queued for the pending save changes or removes `id`'s stored
    /// document (a delete or a patch by id): the session forgets its copy now (identity
    /// map, tracker), and the operation's commit-time cleanup ([`DocState::forget_stale`])
    /// forgets a copy loaded in between, unless a later write of the save puts `id` back.
    pub fn forget_now(&mut self, id: &D::Id) {
        self.identity.remove(id);
        self.tracked.remove(id);
        self.held_written.remove(id);
    }

    /// As [`DocState::forget_now`] for every document of the type (a patch or delete by
    /// filter).
    pub fn forget_all_now(&mut self) {
        self.identity.clear();
        self.tracked.clear();
        self.held_written.clear();
    }

    /// The commit-time cleanup of a delete or patch of `id` (the save committed): forgets
    /// the session's copy (identity map, tracker), which is older than the stored row,
    /// unless a write queued later in the same save put it there (then it is the
    /// document that write stored).
    pub fn forget_stale(&mut self, id: &D::Id) {
        if self.held_written.contains(id) {
            return;
        }
        self.identity.remove(id);
        self.tracked.remove(id);
    }

    /// The save committed: the flushed serializations are the new snapshots.
    pub fn commit_snapshots(&mut self) {
        for (id, json) in self.pending_snapshots.drain(..) {
            if let Some(t) = self.tracked.get_mut(&id) {
                t.snapshot = json;
            }
        }
    }

    /// The save failed: forget the flushed serializations.
    pub fn discard_snapshots(&mut self) {
        self.pending_snapshots.clear();
    }

    /// The session's pending changes were discarded (after [`SessionState::finish_save`]
    /// as not committed): every tracked document goes back to its snapshot, the state it
    /// was loaded or last saved in, so a change made in place before the discard is
    /// undone and never written, later ones included. A snapshot that does not
    /// deserialize (a `Deserialize` that refuses what `Serialize` wrote) forgets the
    /// document instead (tracker and identity map; its next load reads the database).
    pub fn revert_tracked(&mut self) {
        let mut unreadable = Vec::new();
        for (id, tracked) in &mut self.tracked {
            match serde_json::from_slice(&tracked.snapshot) {
                Ok(doc) => tracked.doc = doc,
                Err(error) => {
                    warn!(
                        document_type = D::DOCUMENT_TYPE,
                        id = %id,
                        %error,
                        "discard_changes: a tracked document whose snapshot does not \
                         deserialize is forgotten"
                    );
                    unreadable.push(id.clone());
                }
            }
        }
        for id in unreadable {
            self.tracked.remove(&id);
            self.identity.remove(&id);
        }
    }

    /// Records that a write queued for the pending save put `id`'s document into the
    /// identity map or the tracker.
    pub fn write_pending(&mut self, id: &D::Id) {
        if !self.pending_writes.contains(id) {
            self.pending_writes.insert(id.clone());
        }
        if !self.held_written.contains(id) {
            self.held_written.insert(id.clone());
        }
    }

    /// The pending save ended: on commit its writes are what the session holds; otherwise
    /// the documents they put into the identity map or the tracker are forgotten (the
    /// next load reads the database).
    fn end_pending_writes(&mut self, committed: bool) {
        self.held_written.clear();
        if self.pending_writes.is_empty() {
            return;
        }
        if committed {
            self.pending_writes.clear();
            return;
        }
        for id in self.pending_writes.drain() {
            self.identity.remove(&id);
            self.tracked.remove(&id);
        }
    }
}

/// Whether two serializations of a document hold the same JSON value, keys in any order
/// (a JSON object's members have no order). Reordered members keep the length, so
/// serializations of different lengths (most real changes) are told apart without
/// parsing.
fn same_json(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Type-erased access to a [`DocState`], for a session that holds many types.
trait AnyDocState<Q>: Send + Sync {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn flush_dirty(&mut self, queue: &mut Q, checks: bool) -> Result<()>;
    fn finish_save(&mut self, committed: bool);
    fn revert_tracked(&mut self);
}

impl<D: Document, Q: DirtyQueue<D>> AnyDocState<Q> for DocState<D> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn flush_dirty(&mut self, queue: &mut Q, checks: bool) -> Result<()> {
        DocState::flush_dirty(self, queue, checks)
    }

    fn finish_save(&mut self, committed: bool) {
        self.asserted.clear();
        self.end_pending_writes(committed);
        if committed {
            self.commit_snapshots();
        } else {
            self.discard_snapshots();
        }
    }

    fn revert_tracked(&mut self) {
        DocState::revert_tracked(self);
    }
}

/// All per-type states of a session, whose writes go through a queue `Q`.
pub struct SessionState<Q> {
    /// Fx: a `TypeId` is already a hash, and the lookup runs on every write.
    docs: FxHashMap<TypeId, Box<dyn AnyDocState<Q>>>,
    /// Aggregates `fetch_for_writing` loaded, by (aggregate type, stream).
    fetched: HashMap<(TypeId, StreamId), Box<dyn Any + Send + Sync>>,
}

impl<Q> Default for SessionState<Q> {
    fn default() -> Self {
        Self {
            docs: FxHashMap::default(),
            fetched: HashMap::new(),
        }
    }
}

impl<Q: 'static> SessionState<Q> {
    /// Remembers what `fetch_for_writing` loaded (`F`, for aggregate type `A`), for the
    /// save's inline projection.
    pub fn put_fetched<A: 'static, F: Send + Sync + 'static>(&mut self, stream: StreamId, f: F) {
        self.fetched
            .insert((TypeId::of::<A>(), stream), Box::new(f));
    }

    /// Takes what `fetch_for_writing` loaded for aggregate type `A` on `stream`, if it was
    /// an `F`.
    pub fn take_fetched<A: 'static, F: 'static>(&mut self, stream: &StreamId) -> Option<F> {
        let boxed = self.fetched.remove(&(TypeId::of::<A>(), stream.clone()))?;
        boxed.downcast::<F>().ok().map(|b| *b)
    }

    /// The state of type `D`, created on first use.
    pub fn doc_state<D: Document>(&mut self) -> &mut DocState<D>
    where
        Q: DirtyQueue<D>,
    {
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

    /// Queues the upserts of every changed dirty-tracked document of every type.
    pub fn flush_dirty(&mut self, queue: &mut Q, checks: bool) -> Result<()> {
        for state in self.docs.values_mut() {
            state.flush_dirty(queue, checks)?;
        }
        Ok(())
    }

    /// A save ended: on commit the flushed serializations become the snapshots, otherwise
    /// they are forgotten.
    pub fn finish_save(&mut self, committed: bool) {
        for state in self.docs.values_mut() {
            state.finish_save(committed);
        }
        // What `fetch_for_writing` handed to this save: used by it or forgotten with it.
        self.fetched.clear();
    }

    /// The session's pending changes are discarded: the pending save ends as not
    /// committed ([`finish_save`](Self::finish_save)) and every dirty-tracked document
    /// goes back to the state it was loaded or last saved in
    /// ([`DocState::revert_tracked`]), so nothing changed before the discard is written.
    pub fn discard_changes(&mut self) {
        self.finish_save(false);
        for state in self.docs.values_mut() {
            state.revert_tracked();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::Numeric;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Doc {
        id: i64,
        name: String,
    }

    impl Document for Doc {
        type Id = i64;
        type Mode = Numeric;
        const DOCUMENT_TYPE: &'static str = "Doc";
        const TABLE_NAME: &'static str = "mt_doc_doc";
        fn id(&self) -> &i64 {
            &self.id
        }
        fn id_mut(&mut self) -> &mut i64 {
            &mut self.id
        }
    }

    /// A queue that records what it was given.
    #[derive(Default)]
    struct Recorder(Vec<(i64, String, Option<i64>)>);

    impl DirtyQueue<Doc> for Recorder {
        fn queue_dirty(&mut self, id: i64, json: Vec<u8>, expected: Option<i64>) -> Result<()> {
            self.0
                .push((id, String::from_utf8_lossy(&json).into_owned(), expected));
            Ok(())
        }
    }

    fn tracked(state: &mut SessionState<Recorder>, doc: Doc) {
        let snapshot = serde_json::to_vec(&doc).unwrap_or_default();
        let s = state.doc_state::<Doc>();
        s.versions.insert(doc.id, 3);
        s.tracked.insert(doc.id, Tracked { doc, snapshot });
    }

    #[test]
    fn only_changed_documents_are_queued_with_their_known_version() {
        let mut state = SessionState::<Recorder>::default();
        tracked(
            &mut state,
            Doc {
                id: 1,
                name: "a".into(),
            },
        );
        tracked(
            &mut state,
            Doc {
                id: 2,
                name: "b".into(),
            },
        );
        if let Some(t) = state.doc_state::<Doc>().tracked.get_mut(&2) {
            t.doc.name = "changed".into();
        }
        let mut queue = Recorder::default();
        state.flush_dirty(&mut queue, true).expect("flush");
        assert_eq!(queue.0.len(), 1);
        assert_eq!(queue.0[0].0, 2);
        assert!(queue.0[0].1.contains("changed"));
        assert_eq!(queue.0[0].2, Some(3));

        let mut unchecked = Recorder::default();
        state.flush_dirty(&mut unchecked, false).expect("flush");
        assert_eq!(unchecked.0[0].2, None);
    }

    #[test]
    fn a_document_an_explicit_write_of_the_save_asserts_is_flushed_unchecked() {
        let mut state = SessionState::<Recorder>::default();
        tracked(
            &mut state,
            Doc {
                id: 1,
                name: "a".into(),
            },
        );
        let docs = state.doc_state::<Doc>();
        // An explicit write of the save took the known version.
        assert_eq!(docs.expected_for(&1), Some(3));
        if let Some(t) = docs.tracked.get_mut(&1) {
            t.doc.name = "in place".into();
        }
        let mut queue = Recorder::default();
        state.flush_dirty(&mut queue, true).expect("flush");
        assert_eq!(queue.0.len(), 1);
        assert_eq!(queue.0[0].2, None, "the version moved with the first write");
        // The next save knows the version again.
        state.finish_save(false);
        let mut again = Recorder::default();
        state.flush_dirty(&mut again, true).expect("flush");
        assert_eq!(again.0[0].2, Some(3));
    }

    #[test]
    fn an_unchecked_write_of_the_save_leaves_later_writes_of_the_document_unchecked() {
        let mut state = SessionState::<Recorder>::default();
        tracked(
            &mut state,
            Doc {
                id: 1,
                name: "a".into(),
            },
        );
        let docs = state.doc_state::<Doc>();
        docs.versions.insert(2, 5);
        // An earlier write of id 1 that asserted nothing (its version was unknown then).
        assert!(docs.wrote(&1));
        assert!(!docs.wrote(&1), "recorded once");
        assert_eq!(docs.expected_for(&1), None, "moved by the earlier write");
        assert_eq!(docs.expected_for(&2), Some(5), "nothing earlier wrote id 2");
        assert_eq!(docs.expected_for(&2), None);
        if let Some(t) = docs.tracked.get_mut(&1) {
            t.doc.name = "in place".into();
        }
        let mut queue = Recorder::default();
        state.flush_dirty(&mut queue, true).expect("flush");
        assert_eq!(
            queue.0[0].2, None,
            "the dirty write follows the earlier one"
        );

        // The next save knows the versions again.
        state.finish_save(true);
        let docs = state.doc_state::<Doc>();
        assert!(!docs.moved(&1) && !docs.moved(&2));
        assert_eq!(docs.expected_for(&2), Some(5));
    }

    #[test]
    fn the_cleanup_of_a_delete_or_patch_keeps_what_a_later_write_of_the_save_put_back() {
        let mut state = SessionState::<Recorder>::default();
        for id in [1, 2, 3] {
            tracked(
                &mut state,
                Doc {
                    id,
                    name: "a".into(),
                },
            );
        }
        let docs = state.doc_state::<Doc>();
        // 1: deleted, then stored again; 2: stored, then deleted; 3: deleted, then
        // loaded again (the loaded copy is what the delete removes).
        docs.forget_now(&1);
        docs.write_pending(&1);
        docs.tracked.insert(
            1,
            Tracked {
                doc: Doc {
                    id: 1,
                    name: "stored".into(),
                },
                snapshot: Vec::new(),
            },
        );
        docs.write_pending(&2);
        docs.forget_now(&2);
        assert!(!docs.tracked.contains_key(&2));
        docs.forget_now(&3);
        docs.tracked.insert(
            3,
            Tracked {
                doc: Doc {
                    id: 3,
                    name: "loaded".into(),
                },
                snapshot: Vec::new(),
            },
        );
        for id in [1, 2, 3] {
            docs.forget_stale(&id);
        }
        assert_eq!(
            docs.tracked.get(&1).map(|t| t.doc.name.as_str()),
            Some("stored")
        );
        assert!(!docs.tracked.contains_key(&3));
        // A patch by filter after the store forgets it again.
        docs.forget_all_now();
        docs.tracked.insert(
            1,
            Tracked {
                doc: Doc {
                    id: 1,
                    name: "loaded".into(),
                },
                snapshot: Vec::new(),
            },
        );
        docs.forget_stale(&1);
        assert!(docs.tracked.is_empty());
        // The marks end with the save.
        docs.write_pending(&1);
        state.finish_save(true);
        let docs = state.doc_state::<Doc>();
        tracked_copy(docs, 1);
        docs.forget_stale(&1);
        assert!(docs.tracked.is_empty());
    }

    fn tracked_copy(docs: &mut DocState<Doc>, id: i64) {
        let doc = Doc {
            id,
            name: "copy".into(),
        };
        docs.tracked.insert(
            id,
            Tracked {
                doc,
                snapshot: Vec::new(),
            },
        );
    }

    #[test]
    fn a_committed_save_makes_the_flushed_json_the_snapshot_and_a_failed_one_does_not() {
        let mut state = SessionState::<Recorder>::default();
        tracked(
            &mut state,
            Doc {
                id: 1,
                name: "a".into(),
            },
        );
        if let Some(t) = state.doc_state::<Doc>().tracked.get_mut(&1) {
            t.doc.name = "b".into();
        }
        state
            .flush_dirty(&mut Recorder::default(), false)
            .expect("flush");
        state.finish_save(false);
        let mut again = Recorder::default();
        state.flush_dirty(&mut again, false).expect("flush");
        assert_eq!(again.0.len(), 1, "a failed save keeps the document dirty");
        state.finish_save(true);
        let mut after = Recorder::default();
        state.flush_dirty(&mut after, false).expect("flush");
        assert!(after.0.is_empty(), "a committed save leaves it clean");
    }

    #[test]
    fn the_same_members_in_another_order_are_no_change() {
        let mut state = SessionState::<Recorder>::default();
        let doc = Doc {
            id: 1,
            name: "a".into(),
        };
        let s = state.doc_state::<Doc>();
        // What a map built anew may give: the same members, another order.
        let reordered = br#"{"name":"a","id":1}"#.to_vec();
        assert_ne!(serde_json::to_vec(&doc).ok(), Some(reordered.clone()));
        s.tracked.insert(
            1,
            Tracked {
                doc,
                snapshot: reordered,
            },
        );
        let mut queue = Recorder::default();
        state.flush_dirty(&mut queue, true).expect("flush");
        assert!(queue.0.is_empty(), "no change, nothing queued");
        // The snapshot is now the document's own serialization; a real change is queued.
        if let Some(t) = state.doc_state::<Doc>().tracked.get_mut(&1) {
            assert_eq!(t.snapshot, br#"{"id":1,"name":"a"}"#);
            t.doc.name = "b".into();
        }
        state.flush_dirty(&mut queue, true).expect("flush");
        assert_eq!(queue.0.len(), 1);
        // Same length, another value: a change.
        assert!(!same_json(
            br#"{"id":1,"name":"a"}"#,
            br#"{"id":2,"name":"a"}"#
        ));
    }

    #[test]
    fn fetched_states_are_taken_once_and_only_as_their_type() {
        let mut state = SessionState::<Recorder>::default();
        let stream = StreamId::String("s".into());
        state.put_fetched::<Doc, (i64, &'static str)>(stream.clone(), (4, "x"));
        assert_eq!(state.take_fetched::<Doc, u8>(&stream), None);
        state.put_fetched::<Doc, (i64, &'static str)>(stream.clone(), (4, "x"));
        assert_eq!(
            state.take_fetched::<Doc, (i64, &'static str)>(&stream),
            Some((4, "x"))
        );
        assert_eq!(
            state.take_fetched::<Doc, (i64, &'static str)>(&stream),
            None
        );
    }

    #[test]
    fn fetched_states_end_with_the_save_they_were_handed_to() {
        for committed in [true, false] {
            let mut state = SessionState::<Recorder>::default();
            let stream = StreamId::String("s".into());
            state.put_fetched::<Doc, i64>(stream.clone(), 4);
            state.finish_save(committed);
            assert_eq!(state.take_fetched::<Doc, i64>(&stream), None);
        }
    }
}

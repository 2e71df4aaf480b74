//! Patching and deleting by filter on a session: `patch` (one document by id),
//! `patch_where` (every document a filter matches), both built with [`Patching`], and
//! `delete_where`. Each is checked (id, tenant, values) before anything is queued, and
//! drops the session's cached copies of what it changes so a later load reads the
//! database.

use serde::Serialize;

use super::backend::{DeleteKind, PatchBackend};
use super::kinds::Tracking;
use super::parts::Session;
use super::writes::check_id;
use crate::patch::{Incrementable, ListField, Patch, PatchOp, PatchTarget, Unsettable};
use crate::query::{Base, Field, Filter, HasFields};
use crate::tenant::require_tenant;
use crate::{Document, Error, Result, SoftDeleted};

/// The field paths of `D`, as a patch operation's field argument receives them.
type FieldsOf<D> = <D as HasFields>::Fields<D>;

/// A patch being built on a session: chain operations, then [`queue`](Self::queue) it.
/// Nothing is sent before `save_changes`; a builder dropped without `queue` queues
/// nothing.
#[must_use = "a patch is queued only by `.queue()`"]
pub struct Patching<'s, B: PatchBackend<D>, K: Tracking, D: Document + HasFields> {
    session: &'s mut Session<B, K>,
    target: PatchTarget<D>,
    ops: Vec<PatchOp>,
    /// The first value that could not be serialized, reported by `queue`.
    error: Option<Error>,
}

impl<B: super::Backend, K: Tracking> Session<B, K> {
    /// Starts a patch of the document `id` of type `D`, applied by the database without
    /// loading it: `session.patch::<Order>(&id).set(|f| f.status, "paid").queue()?`.
    ///
    /// The patch is one statement, sent by `save_changes` with the session's other
    /// operations in queue order. It moves the stored version and last-modified time;
    /// when the session knows the document's version (it loaded it) and its
    /// concurrency checks are on, the save is rejected if that version is no longer the
    /// stored one - unless an operation queued earlier for the same save writes or
    /// patches the document, as that one moves the version first in the save's
    /// transaction. Likewise a later write or patch of the
    /// same id in the same save asserts nothing. A patch of an id that does not exist
    /// changes nothing and is no error.
    /// The session forgets its cached copy of the document (identity map, dirty
    /// tracking), so a later load reads the patched document.
    pub fn patch<D: Document + HasFields>(&mut self, id: &D::Id) -> Patching<'_, B, K, D>
    where
        B: PatchBackend<D>,
    {
        Patching::new(self, PatchTarget::Id(id.clone()))
    }

    /// Starts a patch of every document of type `D` that `filter` matches (of the
    /// session's tenant, for a conjoined type), applied by the database in one
    /// statement. Each patched document's version and last-modified time move; no
    /// version is asserted. The patched ids are known only once it ran, so a write or
    /// patch of a `D` queued after it for the same save still asserts the version the
    /// session knew: a document the filter did not match stays protected from another
    /// session's change, and one it did match is rejected (its version moved in the
    /// save's own transaction: write it in a save of its own). The session forgets every
    /// cached copy of a `D` (identity map, dirty tracking: store a changed tracked
    /// document first to keep its changes).
    pub fn patch_where<D: Document + HasFields>(
        &mut self,
        filter: Filter<D>,
    ) -> Patching<'_, B, K, D>
    where
        B: PatchBackend<D>,
    {
        Patching::new(self, PatchTarget::Where(filter))
    }

    /// Queues one statement deleting every document of type `D` that `filter` matches
    /// (of the session's tenant, for a conjoined type); a soft-deleted type's documents
    /// are marked deleted. The session forgets every cached copy of a `D`, as
    /// [`patch_where`](Self::patch_where) does.
    pub fn delete_where<D: Document + HasFields>(&mut self, filter: Filter<D>) -> Result<()>
    where
        B: PatchBackend<D>,
    {
        self.queue_delete_where(filter, DeleteKind::Delete)
    }

    /// Like [`delete_where`](Self::delete_where), removing the rows `filter` matches,
    /// marked deleted or not (for a type that is not soft-deleted it is `delete_where`).
    pub fn hard_delete_where<D: Document + HasFields>(&mut self, filter: Filter<D>) -> Result<()>
    where
        B: PatchBackend<D>,
    {
        self.queue_delete_where(filter, DeleteKind::HardDelete)
    }

    /// Queues one statement marking live again every document of the soft-deleted type
    /// `D` that `filter` matches among those marked deleted (of the session's tenant,
    /// for a conjoined type). The session forgets every cached copy of a `D`.
    pub fn undo_delete_where<D: SoftDeleted + HasFields>(&mut self, filter: Filter<D>) -> Result<()>
    where
        B: PatchBackend<D>,
    {
        self.queue_delete_where(filter, DeleteKind::UndoDelete)
    }

    fn queue_delete_where<D: Document + HasFields>(
        &mut self,
        filter: Filter<D>,
        kind: DeleteKind,
    ) -> Result<()>
    where
        B: PatchBackend<D>,
    {
        require_tenant(D::TENANCY, B::tenant(self.store_ref()), D::DOCUMENT_TYPE)?;
        let parts = self.parts_mut();
        B::queue_delete_where(&mut parts.queue, filter, kind)?;
        forget_all::<B, D>(&mut parts.state);
        Ok(())
    }
}

/// Forgets every cached copy of a `D` (identity map and dirty tracking).
fn forget_all<B: PatchBackend<D>, D: Document>(state: &mut super::SessionState<B::Queue>) {
    state.doc_state::<D>().forget_all_now();
}

impl<'s, B: PatchBackend<D>, K: Tracking, D: Document + HasFields> Patching<'s, B, K, D> {
    fn new(session: &'s mut Session<B, K>, target: PatchTarget<D>) -> Self {
        Patching {
            session,
            target,
            ops: Vec::new(),
            error: None,
        }
    }

    /// The patched document's id, for errors (`(patch_where)` for a patch by filter).
    fn target_id(&self) -> String {
        match &self.target {
            PatchTarget::Id(id) => id.to_string(),
            PatchTarget::Where(_) => "(patch_where)".to_owned(),
        }
    }

    /// Serializes `value` as a stored document's JSON holds it (written as text and read
    /// back, as the query side does: `to_value` would widen an `f32` to its `f64`
    /// digits, `19.99` to `19.989999771118164`, which no query for `19.99` matches),
    /// keeping the first failure for `queue`.
    fn json<V: Serialize>(&mut self, value: &V) -> serde_json::Value {
        let written = serde_json::to_vec(value).and_then(|bytes| serde_json::from_slice(&bytes));
        match written {
            Ok(v) => v,
            Err(source) => {
                let id = self.target_id();
                self.error.get_or_insert(Error::Serialize {
                    document_type: D::DOCUMENT_TYPE,
                    id,
                    source,
                });
                serde_json::Value::Null
            }
        }
    }

    /// The path of `field`; the id's is refused (kept as the first failure for `queue`):
    /// a patch rewrites the JSON alone, so the row's id column would no longer be the
    /// document's.
    fn patched_path<T: 'static>(&mut self, field: Field<D, T>) -> crate::query::Path {
        let path = field.path().clone();
        if path.segments.len() == 1 && path.column.is_some_and(|(column, _)| column == "id") {
            let id = Some(self.target_id());
            self.error.get_or_insert(Error::InvalidInput {
                owner: D::DOCUMENT_TYPE.to_owned(),
                id,
                field: path.segments.join("."),
                reason: "is the document's id, which a patch cannot change",
            });
        }
        path
    }

    /// Sets a field (nested paths too) to `value`.
    pub fn set<T: Serialize + 'static>(
        mut self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
        value: impl Into<T>,
    ) -> Self {
        let path = self.patched_path(field(D::fields_at(Base::root())));
        let value = self.json(&value.into());
        self.ops.push(PatchOp::Set { path, value });
        self
    }

    /// Adds `by` to a number field (integers and floats only; the sum is computed
    /// exactly by the database, so a float field may differ from Rust's float sum in
    /// its last digit). A sum out of the field type's range fails the save, which writes
    /// nothing ([`Error::InvalidInput`] naming the field).
    pub fn increment<T: Incrementable>(
        mut self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
        by: T::By,
    ) -> Self {
        let path = self.patched_path(field(D::fields_at(Base::root())));
        let by = self.json(&by);
        self.ops.push(PatchOp::Increment {
            path,
            by,
            kind: T::KIND,
        });
        self
    }

    fn list_op<T: ListField + 'static>(
        mut self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
        item: T::Item,
        op: impl FnOnce(crate::query::Path, serde_json::Value) -> PatchOp,
    ) -> Self {
        let path = self.patched_path(field(D::fields_at(Base::root())));
        let value = self.json(&item);
        self.ops.push(op(path, value));
        self
    }

    /// Appends `item` to a `Vec` field.
    pub fn append<T: ListField + 'static>(
        self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
        item: impl Into<T::Item>,
    ) -> Self {
        self.list_op(field, item.into(), |path, value| PatchOp::Append {
            path,
            value,
            if_missing: false,
        })
    }

    /// Appends `item` to a `Vec` field unless an element equal to it (as JSON) is there.
    pub fn append_if_missing<T: ListField + 'static>(
        self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
        item: impl Into<T::Item>,
    ) -> Self {
        self.list_op(field, item.into(), |path, value| PatchOp::Append {
            path,
            value,
            if_missing: true,
        })
    }

    /// Removes every element of a `Vec` field equal to `item` (as JSON).
    pub fn remove<T: ListField + 'static>(
        self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
        item: impl Into<T::Item>,
    ) -> Self {
        self.list_op(field, item.into(), |path, value| PatchOp::Remove {
            path,
            value,
        })
    }

    /// Sets an `Option` field to `None` (JSON `null`).
    pub fn unset<T: Unsettable + 'static>(
        mut self,
        field: impl FnOnce(FieldsOf<D>) -> Field<D, T>,
    ) -> Self {
        let path = self.patched_path(field(D::fields_at(Base::root())));
        self.ops.push(PatchOp::Unset { path });
        self
    }

    /// Queues the patch (nothing, if it has no operation). Fails, queuing nothing, when a
    /// value could not be serialized or stored, the id is invalid, or `D` is conjoined and
    /// the session has no tenant ([`Error::TenantRequired`]).
    pub fn queue(self) -> Result<()> {
        let Patching {
            session,
            target,
            ops,
            error,
        } = self;
        if let Some(e) = error {
            return Err(e);
        }
        if let PatchTarget::Id(id) = &target {
            check_id::<D>(id)?;
        }
        require_tenant(D::TENANCY, B::tenant(session.store_ref()), D::DOCUMENT_TYPE)?;
        if ops.is_empty() {
            return Ok(());
        }
        let parts = session.parts_mut();
        let checks = parts.options.concurrency_checks;
        let docs = parts.state.doc_state::<D>();
        // The patch moves the version: a later write or patch of the id in this save must
        // not assert the version the session knew. `marked`: this patch is the first operation of the save that
        // writes `id`.
        let (expected, marked) = match &target {
            PatchTarget::Id(id) => {
                let first = !docs.asserted.contains(id);
                let expected = if checks { docs.expected_for(id) } else { None };
                docs.wrote(id);
                (expected, first)
            }
            PatchTarget::Where(_) => (None, false),
        };
        let forget = match &target {
            PatchTarget::Id(id) => Some(id.clone()),
            PatchTarget::Where(_) => None,
        };
        let patch = Patch {
            target,
            ops,
            expected,
        };
        if let Err(e) = B::queue_patch(&mut parts.queue, patch) {
            // Nothing was queued: unless an earlier operation of the save writes `id`,
            // the next write of it must assert the known version (it would otherwise be
            // sent unchecked).
            if let (true, Some(id)) = (marked, &forget) {
                parts.state.doc_state::<D>().unwrote(id);
            }
            return Err(e);
        }
        match forget {
            Some(id) => parts.state.doc_state::<D>().forget_now(&id),
            None => forget_all::<B, D>(&mut parts.state),
        }
        Ok(())
    }
}

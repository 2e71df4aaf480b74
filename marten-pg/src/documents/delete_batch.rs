//! Deletes of documents of one type by id, type-erased behind [`Operation`] so a unit of
//! work can hold operations of many document types. Uses the unit of work's operation
//! traits, the document storage's SQL and the schema's migration; never projections,
//! session, store or daemon.

use std::any::Any;

use tokio_postgres::types::ToSql;

use super::storage::{conjoined, DocumentStorage, PgDocument};
use super::typed_batch::{document_batch, document_target, forget_held};
use crate::connection::SqlText;
use crate::tenant_key::TenantKey;
use crate::unit_of_work::{DocumentBatch, Operation, SessionState, Target};

/// Deletes of documents of one type by id: removing their rows, or marking them deleted
/// (a soft-deleted type, unless the batch is `hard`).
pub(crate) struct DeleteBatch<D: PgDocument> {
    ids: Vec<D::Id>,
    /// Whether the rows are removed even when the type is soft-deleted.
    pub(crate) hard: bool,
    /// The tenant of a conjoined type's rows.
    tenant: Option<TenantKey>,
}

impl<D: PgDocument> DeleteBatch<D> {
    /// An empty batch (removing the rows when `hard`); the rows of a conjoined type
    /// belong to `tenant`.
    pub(crate) fn new(tenant: Option<&marten_core::TenantId>, hard: bool) -> Self {
        Self {
            ids: Vec::new(),
            hard,
            tenant: if conjoined::<D>() {
                TenantKey::of(tenant)
            } else {
                None
            },
        }
    }

    pub(crate) fn push(&mut self, id: D::Id) {
        self.ids.push(id);
    }
}

document_batch!(DeleteBatch);

impl<D: PgDocument> Operation for DeleteBatch<D> {
    fn sql(&self) -> SqlText<'_> {
        let reads = D::storage().reads();
        SqlText::Static(match (self.ids.len() == 1, self.hard) {
            (true, false) => &reads.delete_one,
            (false, false) => &reads.delete_many,
            (true, true) => &reads.hard_delete_one,
            (false, true) => &reads.hard_delete_many,
        })
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut out: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(2);
        if self.ids.len() == 1 {
            out.push(&self.ids[0]);
        } else {
            out.push(&self.ids);
        }
        if conjoined::<D>() {
            out.push(&self.tenant);
        }
        out
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn target(&self) -> Target {
        document_target::<D>()
    }

    fn committed(&self, state: &mut SessionState) {
        let docs = state.doc_state::<D>();
        for id in &self.ids {
            docs.versions.remove(id);
            // A copy the session loaded between queueing the delete and its save is of a
            // document that is gone: forgotten, so a dirty-tracked copy cannot write it
            // back. A copy a later write of the same save put there is the document it
            // stored, and stays.
            docs.forget_stale(id);
        }
    }

    fn forget_held(&self, state: &mut SessionState) {
        forget_held::<D>(&self.ids, state);
    }
}

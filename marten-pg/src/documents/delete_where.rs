//! [`DeleteWhere`]: one `DELETE` of every document of a type that a rendered filter
//! ([`Condition`]) matches, as a unit-of-work operation (for a soft-deleted type, one
//! `UPDATE` marking them deleted, or un-marking them for an undo); the session forgets
//! the ids' versions and cached copies when it commits. Uses the unit of work's
//! operation traits and the table SQL.

use marten_core::session::DeleteKind;
use marten_core::Result;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::condition::{Condition, Param};
use super::storage::PgDocument;
use super::typed_batch::document_target;
use crate::connection::SqlText;
use crate::error_map::reading_documents as reading;
use crate::tables::documents as sql;
use crate::unit_of_work::{Operation, SessionState, Target};

/// One `DELETE` (or marking `UPDATE`) of every document of type `D` a filter matches.
pub(crate) struct DeleteWhere<D: PgDocument> {
    sql: String,
    params: Vec<Param>,
    deleted: Vec<D::Id>,
}

impl<D: PgDocument> DeleteWhere<D> {
    /// The delete of `kind` of the rows `condition` matches (the condition chose the
    /// live or the marked rows of a soft-deleted type as `kind` needs).
    pub(crate) fn new(condition: Condition, kind: DeleteKind) -> Self {
        let (table, text) = (D::TABLE_NAME, &condition.text);
        let sql = match kind {
            DeleteKind::Delete if D::SOFT_DELETE => sql::mark_deleted_where(table, text, true),
            DeleteKind::UndoDelete if D::SOFT_DELETE => sql::mark_deleted_where(table, text, false),
            _ => sql::delete_where(table, text),
        };
        DeleteWhere {
            sql,
            params: condition.params,
            deleted: Vec::new(),
        }
    }
}

impl<D: PgDocument> Operation for DeleteWhere<D> {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Built(&self.sql)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    fn target(&self) -> Target {
        document_target::<D>()
    }

    /// One statement, however many documents it deletes (unknown until it runs).
    fn len(&self) -> usize {
        1
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        self.deleted = rows
            .iter()
            .map(|r| r.try_get(0).map_err(reading::<D>))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn reset(&mut self) {
        self.deleted.clear();
    }

    fn committed(&self, state: &mut SessionState) {
        let docs = state.doc_state::<D>();
        for id in &self.deleted {
            docs.versions.remove(id);
            // Unless a later write of the same save stored the document again.
            docs.forget_stale(id);
        }
    }
}

//! What the writer sends: one statement of a unit of work, with its parameters, and how
//! it takes its answer, reports rejections and explains them after a rollback.

use futures_util::future::BoxFuture;
use marten_core::{Rejection, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::SessionState;
use crate::schema::MigrateFn;

/// One statement of a unit of work.
pub(crate) trait Operation: Send + Sync {
    /// The statement text (built once per type).
    fn sql(&self) -> &'static str;
    /// The parameters, in statement order.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
    /// How many documents the statement writes.
    fn len(&self) -> usize;
    /// Whether the statement may reject rows (and set the rejected flag).
    fn checked(&self) -> bool;
    /// Whether a rejection leaves nothing of this statement written, so that, sent alone,
    /// it needs no transaction around it.
    fn atomic(&self) -> bool;
    /// Told, before [`Operation::sql`], that the statement is the whole save: it runs as
    /// its own transaction and no guard follows. An operation that has a cheaper statement
    /// for that case switches to it; `reset` switches back.
    fn alone(&mut self) {}
    /// Whether the statement, sent alone (see [`Operation::alone`]), has its affected-row
    /// count as its whole result: it is then sent without reading rows, and the count goes
    /// to [`Operation::accept_count`] instead of rows to [`Operation::accept`].
    fn counts_only(&self) -> bool {
        false
    }
    /// The affected-row count of a statement that [`Operation::counts_only`].
    fn accept_count(&mut self, _count: u64) -> Result<()> {
        Ok(())
    }
    /// The document type, for errors.
    fn document_type(&self) -> &'static str;
    /// The table, for errors.
    fn table(&self) -> &'static str;
    /// The document type's `TypeId` and migration, to create its table on first use.
    fn schema(&self) -> (std::any::TypeId, MigrateFn);
    /// Takes the statement's result rows.
    fn accept(&mut self, rows: &[Row]) -> Result<()>;
    /// Whether `accept` saw fewer rows written than asked.
    fn has_rejections(&self) -> bool;
    /// Whether a rejection of this operation comes from a check marten added itself (an
    /// inline projection's), so the save can be planned again and retried.
    fn retryable(&self) -> bool {
        false
    }
    /// Forgets the result of an attempt, before the save is retried.
    fn reset(&mut self) {}
    /// After a rollback: reads the stored versions of the rejected documents and says
    /// why each was rejected.
    fn explain<'a>(&'a self, client: &'a Client) -> BoxFuture<'a, Result<Vec<Rejection>>>;
    /// After a commit: records the written versions in the session.
    fn committed(&self, _state: &mut SessionState) {}
}

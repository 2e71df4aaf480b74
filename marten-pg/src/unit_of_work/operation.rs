//! What the writer sends: one statement of a unit of work, with its parameters, what it
//! writes, and how it takes its answer, reports rejections and explains them after a
//! rollback. Uses the schema's migrations (to name how a statement's table is created)
//! and the error map.

use std::any::TypeId;

use futures_util::future::BoxFuture;
use marten_core::{Rejection, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Db, SqlText};

use super::SessionState;
use crate::error_map::{map_db_error, Failed};
use crate::schema::MigrateFn;

/// What a statement writes: named in its errors, its table created on first use.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    /// What is written, for errors: a document type, `stream`, `tag`, `projection`.
    pub(crate) what: &'static str,
    /// The table written, for errors.
    pub(crate) table: &'static str,
    /// The `TypeId` and migration that make sure of the table before the save.
    pub(crate) schema: (TypeId, MigrateFn),
}

impl Target {
    /// `what`, written to `table`, which `schema` creates.
    pub(crate) fn new(
        what: &'static str,
        table: &'static str,
        schema: (TypeId, MigrateFn),
    ) -> Self {
        Target {
            what,
            table,
            schema,
        }
    }
}

/// One statement of a unit of work. Only the statement, its parameters and its target
/// are required: by default a statement writes no documents, cannot reject anything
/// (and so ignores its rows) and needs nothing after the save.
pub(crate) trait Operation: Send + Sync {
    /// The statement text: held for good ([`SqlText::Static`], found by its address: a
    /// constant, a text built once per type, a subscription's statement), or built per
    /// statement for a patch or a delete by filter ([`SqlText::Built`]).
    fn sql(&self) -> SqlText<'_>;
    /// The parameters, in statement order.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
    /// What the statement writes, for errors and for creating its table.
    fn target(&self) -> Target;
    /// How many documents the statement writes (for the log); none by default.
    fn len(&self) -> usize {
        0
    }
    /// Whether the statement may reject rows (and set the rejected flag); no by default.
    fn checked(&self) -> bool {
        false
    }
    /// Whether a rejection leaves nothing of this statement written, so that, sent alone,
    /// it needs no transaction around it. By default only a statement that cannot reject.
    fn atomic(&self) -> bool {
        !self.checked()
    }
    /// Puts the statement's rows in the order every session writes them (a document
    /// batch: by id), so that concurrent statements lock the rows they share in one order
    /// and wait for each other instead of deadlocking; called before every send. Nothing
    /// by default.
    fn order_rows(&mut self) {}
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
    /// Takes the statement's result rows (ignored by default).
    fn accept(&mut self, _rows: &[Row]) -> Result<()> {
        Ok(())
    }
    /// Whether the error the statement failed with is its way of rejecting (a statement
    /// that raises instead of reporting: it then counts as rejected, nothing of the
    /// statement was written); no by default.
    fn rejected_by(&mut self, _e: &tokio_postgres::Error) -> bool {
        false
    }
    /// Whether `accept` saw fewer rows written than asked (never, by default).
    fn has_rejections(&self) -> bool {
        false
    }
    /// Whether a rejection of this operation comes from a check marten added itself (an
    /// inline projection's), so the save can be planned again and retried.
    fn retryable(&self) -> bool {
        false
    }
    /// Forgets the result of an attempt, before the save is retried.
    fn reset(&mut self) {}
    /// After a rollback: reads the stored versions of the rejected documents and says
    /// why each was rejected (nothing, by default).
    fn explain<'a>(&'a self, _client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// After a commit: records the written versions in the session.
    fn committed(&self, _state: &mut SessionState) {}
    /// After a commit of a write an inline projection derived: the session forgets what
    /// it held of the documents written (its identity map's and dirty tracking's copies,
    /// older than what the projection wrote), so its next load reads them anew. Nothing
    /// by default.
    fn forget_held(&self, _state: &mut SessionState) {}
}

/// The number in the first column of a statement's first row (0 without rows): what a
/// check or a compare-and-set answers.
pub(crate) fn first_count(rows: &[Row], what: Failed<'_>) -> Result<i64> {
    match rows.first() {
        Some(row) => row.try_get(0).map_err(|e| map_db_error(e, what)),
        None => Ok(0),
    }
}

//! [`Postgres`] as a [`PatchBackend`]: a session's patches and deletes by filter (soft,
//! hard, undone) queued on its unit of work, each one statement (the filter rendered by
//! the query module, the tenant matched first, a soft-deleted type's rows chosen by the
//! kind of write).

use marten_core::patch::Patch;
use marten_core::query::{Filter, HasFields};
use marten_core::session::{DeleteKind, PatchBackend};
use marten_core::Result;

use super::backend::Postgres;
use crate::documents::delete_where::DeleteWhere;
use crate::documents::patch::PatchStatement;
use crate::documents::PgDocument;
use crate::query::condition::condition;
use crate::query::deleted::Deleted;
use crate::unit_of_work::UnitOfWork;

impl<D: PgDocument + HasFields> PatchBackend<D> for Postgres {
    fn queue_patch(queue: &mut UnitOfWork, patch: Patch<D>) -> Result<()> {
        let tenant = queue.user.tenant.clone();
        let statement = PatchStatement::new(patch, tenant.as_ref(), |f| {
            condition(f, tenant.as_ref(), Deleted::Exclude)
        })?;
        queue.push_op(Box::new(statement));
        Ok(())
    }

    fn queue_delete_where(
        queue: &mut UnitOfWork,
        filter: Filter<D>,
        kind: DeleteKind,
    ) -> Result<()> {
        let tenant = queue.user.tenant.clone();
        // A delete marks the live rows, an undo un-marks the marked ones, a hard delete
        // removes every row the filter matches.
        let rows = match kind {
            DeleteKind::Delete => Deleted::Exclude,
            DeleteKind::UndoDelete => Deleted::Only,
            _ => Deleted::Include,
        };
        let statement = DeleteWhere::<D>::new(condition(&filter, tenant.as_ref(), rows)?, kind);
        queue.push_op(Box::new(statement));
        Ok(())
    }
}

//! Explaining a refused bulk insert: which ids the primary key refused (looked up once
//! the transaction is over), and ending a request that failed.

use super::copy::{Failure, Plan};
use std::ops::Range;

use marten_core::{DocumentId, Error, Rejection, RejectionKind, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tracing::debug;

use crate::connection::{within, Conn, Connector, Request};
use crate::documents::storage::{conjoined, DocumentStorage, PgDocument};
use crate::error_map::reading_documents;
use crate::tables::documents::unique_field;

/// Whether `e` is a unique violation of `D`'s primary key (not of a unique field's
/// index), told by the constraint the server names.
pub(super) fn primary_key_refused<D: PgDocument>(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error()
            .and_then(|db| db.constraint())
            .is_some_and(|c| unique_field(D::TABLE_NAME, c).is_none())
}

/// Ends a failed bulk insert's transaction: `ROLLBACK` (bounded; past the limit the
/// connection is closed), or, when the connection cannot be trusted to answer in order,
/// closing it.
pub(super) async fn end_failed(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    failure: &Failure,
) {
    if failure.desynced || (req.in_transaction() && within(source, req.rollback()).await.is_none())
    {
        req.mark_lost();
    }
}

/// The error of an insert-only batch refused by the primary key, once its transaction
/// is over: [`Error::Rejected`] naming the ids of `batch` found stored (read on `conn`,
/// which takes a new connection if the last one was closed), or `error` when none is.
pub(super) async fn name_taken<D: PgDocument>(
    conn: &mut Conn,
    source: &impl AsRef<Connector>,
    plan: &Plan<'_, D>,
    batch: Range<usize>,
    error: Error,
) -> Error {
    let ids: Vec<&D::Id> = plan.rows.docs[batch].iter().map(D::id).collect();
    let found = conn
        .run(source, async |db| {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
            if conjoined::<D>() {
                params.push(&plan.tenant);
            }
            let rows = db
                .query(D::storage().reads().stored.as_str(), &params)
                .await
                .map_err(reading_documents::<D>)?;
            rows.iter()
                .map(|row| row.try_get::<_, D::Id>(0).map_err(reading_documents::<D>))
                .collect::<Result<Vec<_>>>()
        })
        .await;
    match found {
        Ok(found) if !found.is_empty() => Error::Rejected(
            found
                .into_iter()
                .map(|id| Rejection::new(D::DOCUMENT_TYPE, id.key(), RejectionKind::AlreadyExists))
                .collect(),
        ),
        // The row that refused the batch is gone again (its writer rolled back): the
        // database's own error stays.
        Ok(_) => error,
        Err(e) => {
            debug!(error = %e, "cannot name the ids a bulk insert found stored");
            error
        }
    }
}

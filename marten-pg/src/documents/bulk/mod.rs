//! Bulk inserts: many documents of one type written with binary `COPY`, in batches, all
//! in one transaction ([`BulkMode`], [`BulkOptions`]). Ids get a session's checks before
//! anything is sent (a nil `Uuid` id assigned, a zero integer id given one of the store's
//! HiLo allocator, an unusable id refused, ids given twice resolved per mode) and rows
//! are written in id order (as a session's batches are: no deadlock between two bulk
//! inserts of the same rows); documents are serialized and checked for what `jsonb` refuses as
//! they are copied. Insert-only batches are copied straight into the table; the other
//! modes copy each batch into a temporary staging table and move it with one
//! `INSERT ... SELECT ... ON CONFLICT`. Requests are pipelined (see `write`). The SQL
//! text is in [`crate::tables::documents`] (`BulkSql`).
//!
//! The operation owns its [`Request`]: dropped at any await before the `COMMIT` is
//! written, the request's guard closes the connection (the server rolls the transaction
//! back), so nothing of it is written and the pool never gets the connection back dirty;
//! dropped while waiting for the `COMMIT`'s answer, all of it or nothing is written.
//! Every wait is bounded by the store's request timeout ([`within`]).
//!
//! `options.rs` holds the settings, `rows.rs` the prepared documents, `copy.rs` the
//! batches and their `COPY`, `refusal.rs` what explains a refused insert.
//!
//! May use: connection, error map, tables, the storages and leaf helpers.

mod copy;
mod options;
mod refusal;
mod rows;

pub use options::{BulkMode, BulkOptions};
pub(crate) use rows::{prepare, BulkRows};

use copy::{write, Plan};
use refusal::{end_failed, name_taken};

use marten_core::{Error, Result, TenantId};
use tracing::debug;

use crate::connection::{unanswered, within, Conn, Connector, Request};
use crate::documents::storage::{conjoined, PgDocument};
use crate::error_map::{is_lost, lost_error, map_db_error, Failed};
use crate::tenant_key::TenantKey;

/// Writes `rows` of `D` (of `tenant`, for a conjoined type) in batches, in one
/// transaction on `conn`; returns how many rows were written (inserted, or inserted and
/// overwritten). The caller made sure of the table and, for a conjoined type, of the
/// tenant, and gave the zero integer ids generated ones ([`BulkRows::assign_ids`]).
pub(crate) async fn bulk_insert<D: PgDocument>(
    conn: &mut Conn,
    source: &impl AsRef<Connector>,
    schema: &str,
    tenant: Option<&TenantId>,
    rows: &BulkRows<D>,
    options: BulkOptions,
) -> Result<u64> {
    if !rows.ready() {
        return Err(Error::Configuration(format!(
            "a bulk insert of {} was started before its zero ids got generated ones",
            D::DOCUMENT_TYPE
        )));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let plan = Plan {
        rows,
        options,
        tenant: if conjoined::<D>() {
            TenantKey::of(tenant)
        } else {
            None
        },
        schema,
    };
    let mut req = conn.request(source).await?;
    // BEGIN is about to be written.
    req.set_in_transaction(true);
    let written = match write(&mut req, source, &plan).await {
        Ok(written) => written,
        Err(failure) => {
            end_failed(&mut req, source, &failure).await;
            req.settle_error(&failure.error);
            return Err(match failure.taken_ids_in {
                Some(batch) => name_taken(conn, source, &plan, batch, failure.error).await,
                None => failure.error,
            });
        }
    };
    commit(req, source, written).await
}

/// Commits the bulk insert's transaction (`written` rows) on `req`: a lost answer, or
/// none within the request timeout, is an unknown outcome.
async fn commit(mut req: Request<'_>, source: &impl AsRef<Connector>, written: u64) -> Result<u64> {
    let committed = within(source, req.client().batch_execute("COMMIT")).await;
    match committed {
        Some(Ok(())) => {
            req.set_in_transaction(false);
            req.finish();
            tracing::Span::current().record("marten.rows", written);
            debug!(rows = written, "bulk insert committed");
            Ok(written)
        }
        Some(Err(e)) if is_lost(&e) => {
            req.mark_lost();
            let error = Error::OutcomeUnknown(lost_error(e, "reading the answer to COMMIT"));
            req.finish_broken();
            Err(error)
        }
        Some(Err(e)) => {
            // The server answered: the transaction is over, rolled back.
            req.set_in_transaction(false);
            let error = map_db_error(e, Failed::Transaction);
            req.settle_error(&error);
            Err(error)
        }
        None => {
            req.mark_lost();
            req.finish_broken();
            Err(unanswered(source, "the answer to COMMIT"))
        }
    }
}

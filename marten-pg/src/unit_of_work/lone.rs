//! A save of one statement that writes all of itself or nothing (a lone store, a lone
//! append): sent alone, outside any transaction, by the shortest path a save has. It is
//! the common save, so its path runs as little distinct code as it can; its rare ends (a
//! rejection to explain, duplicate events to name, an answer lost) are out of line.

use marten_core::{Error, Result};
use tracing::debug;

use super::lost::{timed_out, FlightProbe};
use super::writer::{concluded, ensure_open, rejected, writing};
use super::{Operation, Outcome, Queued, SessionState, UnitOfWork};
use crate::connection::{within, Request};
use crate::error_map::{is_lost, lost_error, map_db_error};
use crate::schema::Catalog;

/// The answer of a lone statement: its rows, or (sent with `execute`,
/// [`Operation::counts_only`]) the number of rows it wrote.
enum Answer {
    Rows(Vec<tokio_postgres::Row>),
    Count(u64),
}

impl UnitOfWork {
    /// The save's one statement, when the save can be sent as that statement alone: it
    /// is the only one queued or derived, it writes all of itself or nothing
    /// ([`Operation::atomic`]), the session holds no transaction and reads no write
    /// position after a `COMMIT`.
    pub(super) fn lone(&mut self, req: &Request<'_>) -> Option<&mut dyn Operation> {
        let op = self.lone_entry(req)?.operation_mut();
        op.atomic().then_some(op)
    }

    /// The save's one entry, when it could go alone: nothing else is queued, derived or
    /// sent before it, the session holds no transaction and reads no write position
    /// after a `COMMIT`.
    pub(crate) fn lone_entry(&mut self, req: &Request<'_>) -> Option<&mut Queued> {
        if req.in_transaction() || req.records_write_position() {
            return None;
        }
        match self.user.items.as_mut_slice() {
            [single] if self.prelude.is_empty() && self.derived.is_empty() => Some(single),
            _ => None,
        }
    }
}

/// Sends `op`, the whole save ([`UnitOfWork::lone`]), within the store's request timeout
/// and concludes: committed, retry, or the error that explains what was rejected. On
/// [`Error::DuplicateEvent`] the caller names the duplicates.
pub(super) async fn send(
    req: &mut Request<'_>,
    op: &mut dyn Operation,
    store: &Catalog,
    state: &mut SessionState,
) -> Result<Outcome> {
    let probe = FlightProbe::default();
    let answered = {
        // Pinned in place: the flight is neither moved into the timeout nor allocated.
        let flight = std::pin::pin!(flight(req, &mut *op, store, &probe));
        within(store, flight).await
    };
    let Some(answer) = answered else {
        return Err(timed_out(req, &probe, store));
    };
    let accepted = match answer? {
        Ok(Answer::Count(n)) => op.accept_count(n),
        Ok(Answer::Rows(rows)) => op.accept(&rows),
        Err(e) if is_lost(&e) => return Err(lost(req, e)),
        Err(e) if op.rejected_by(&e) => Ok(()),
        Err(e) => Err(map_db_error(e, writing(&*op, store.schema()))),
    };
    let ops = std::slice::from_ref(&op);
    match concluded(ops, accepted.err(), state) {
        Some(concluded) => concluded,
        // Nothing was written; the reads that explain the rejection are bounded too.
        None => match within(store, rejected(req.client(), ops)).await {
            Some(explained) => explained,
            None => {
                req.mark_lost();
                Err(crate::connection::timed_out(store))
            }
        },
    }
}

/// Makes sure of the statement's table, prepares the statement and sends it. `Err`: the
/// save failed before it was sent; `Ok(Err(e))`: the server's (or the connection's)
/// answer was the error `e`.
async fn flight(
    req: &mut Request<'_>,
    op: &mut dyn Operation,
    store: &Catalog,
    probe: &FlightProbe,
) -> Result<Result<Answer, tokio_postgres::Error>> {
    let (type_id, migrate) = op.target().schema;
    store.ensure_erased(type_id, migrate).await?;
    op.alone();
    let statement = (req.client().statement(op.sql()).await)
        .map_err(|e| map_db_error(e, writing(&*op, store.schema())))?;
    debug!(
        operations = 1,
        documents = op.len(),
        single = true,
        "save_changes"
    );
    ensure_open(req)?;
    probe.mark_sent();
    let client = req.client();
    let params = op.params();
    // One statement, no transaction: awaited as it is, nothing to pipeline.
    Ok(if op.counts_only() {
        client.execute(&statement, &params).await.map(Answer::Count)
    } else {
        client.query(&statement, &params).await.map(Answer::Rows)
    })
}

/// The statement was sent and the connection was lost before its answer: its outcome is
/// unknown (it ran as its own transaction, whose id no one read).
#[cold]
fn lost(req: &mut Request<'_>, e: tokio_postgres::Error) -> Error {
    req.mark_lost();
    let context = "reading the answer to the save's statement";
    Error::OutcomeUnknown(lost_error(e, context))
}

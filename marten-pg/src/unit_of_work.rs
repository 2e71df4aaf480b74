//! The unit of work: operations queued by a session, sent by `save_changes` in one
//! transaction and one network round trip.
//!
//! `BEGIN`, every operation, the batch guard and `COMMIT` are written to the connection
//! together (tokio-postgres pipelines requests that are in flight at once) and their
//! results read back in order. Writes that can be rejected do not raise; they report
//! what they wrote and flag the transaction, and the guard then raises, so the `COMMIT`
//! that follows finds an aborted transaction and rolls it back. Every rejection of the
//! batch is therefore known after that one round trip; one more query per rejected
//! operation, after the rollback, reads the stored versions to explain them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use marten_core::concurrency::VersionOf;
use marten_core::{Error, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tracing::{debug, warn};

use crate::connection::Request;
use crate::documents::batch::{DeleteBatch, Operation, WriteBatch};
use crate::documents::{PgDocument, WriteKind};
use crate::error_map::{is_lost, lost_error, map_db_error, Failed};
use crate::json::RawJson;
use crate::projections::cache::CacheUpdate;
use crate::schema::functions::{ASSERT_NO_REJECTIONS, REJECTED_SQLSTATE};
use crate::session::state::SessionState;
use crate::store::DocumentStore;

/// A list of operations in order, merging consecutive writes of one type and kind.
#[derive(Default)]
pub(crate) struct OpList {
    pub(crate) ops: Vec<Box<dyn Operation>>,
}

impl OpList {
    /// Queues a write, joining the previous operation when it is a batch of the same type
    /// and kind that does not yet touch this id.
    pub(crate) fn push_write<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        if let Some(last) = self.ops.last_mut() {
            if let Some(batch) = last.as_any_mut().downcast_mut::<WriteBatch<D>>() {
                if batch.accepts(kind, &id) {
                    batch.push(id, RawJson(json), expected);
                    return;
                }
            }
        }
        let mut batch = WriteBatch::<D>::new(kind);
        batch.push(id, RawJson(json), expected);
        self.ops.push(Box::new(batch));
    }

    /// Queues a write an inline projection derived, marked so that its rejection makes
    /// the save plan again and retry rather than fail.
    pub(crate) fn push_derived_write<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        self.push_write::<D>(kind, id, json, expected);
        if let Some(batch) = self
            .ops
            .last_mut()
            .and_then(|op| op.as_any_mut().downcast_mut::<WriteBatch<D>>())
        {
            batch.derived = true;
        }
    }

    /// Moves every operation of `other` to the end of this list.
    pub(crate) fn append(&mut self, other: &mut OpList) {
        self.ops.append(&mut other.ops);
    }

    /// Queues any operation as it is.
    pub(crate) fn push_op(&mut self, op: Box<dyn Operation>) {
        self.ops.push(op);
    }

    /// Queues a delete by id.
    pub(crate) fn push_delete<D: PgDocument>(&mut self, id: D::Id) {
        if let Some(last) = self.ops.last_mut() {
            if let Some(batch) = last.as_any_mut().downcast_mut::<DeleteBatch<D>>() {
                batch.push(id);
                return;
            }
        }
        let mut batch = DeleteBatch::<D>::new();
        batch.push(id);
        self.ops.push(Box::new(batch));
    }
}

/// Operations queued by a session (`user`), and the writes its inline projections derive
/// from them (`derived`, planned anew on every attempt of a save).
#[derive(Default)]
pub(crate) struct UnitOfWork {
    /// Sent first: the tag lock of consistency boundaries.
    pub(crate) prelude: OpList,
    pub(crate) user: OpList,
    pub(crate) derived: OpList,
    /// What the store's aggregate cache learns if this attempt commits.
    pub(crate) cache_updates: Vec<CacheUpdate>,
}

/// How a save ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything was written.
    Committed,
    /// Nothing was written, and every rejection came from a check marten added itself (an
    /// inline projection's): plan again and retry.
    Retry,
}

pub(crate) type StatementFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

impl UnitOfWork {
    pub(crate) fn is_empty(&self) -> bool {
        self.user.ops.is_empty() && self.derived.ops.is_empty()
    }

    /// The number of documents and events the queued operations touch.
    pub(crate) fn len(&self) -> usize {
        self.user.ops.iter().map(|o| o.len()).sum()
    }

    pub(crate) fn clear(&mut self) {
        self.prelude.ops.clear();
        self.user.ops.clear();
        self.derived.ops.clear();
        self.cache_updates.clear();
    }

    /// Queues a write (see [`OpList::push_write`]).
    pub(crate) fn push_write<D: PgDocument>(
        &mut self,
        kind: WriteKind,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        self.user.push_write::<D>(kind, id, json, expected);
    }

    /// Queues any operation as it is.
    pub(crate) fn push_op(&mut self, op: Box<dyn Operation>) {
        self.user.push_op(op);
    }

    /// Queues a delete by id.
    pub(crate) fn push_delete<D: PgDocument>(&mut self, id: D::Id) {
        self.user.push_delete::<D>(id);
    }

    /// Forgets the derived writes and every operation's result, before planning again.
    pub(crate) fn reset_attempt(&mut self) {
        self.prelude.ops.clear();
        self.derived.ops.clear();
        self.cache_updates.clear();
        for op in &mut self.user.ops {
            op.reset();
        }
    }

    /// Sends every queued operation in one transaction and one round trip. On success the
    /// session state learns the new versions. The queue is left as it was; the caller
    /// clears it.
    pub(crate) async fn execute(
        &mut self,
        req: &mut Request<'_>,
        store: &DocumentStore,
        state: &mut SessionState,
    ) -> Result<Outcome> {
        let probe = FlightProbe::default();
        let mut deadline_passed = false;
        let result = match store.request_timeout() {
            None => self.run(req, store, state, &probe).await,
            Some(limit) => {
                match tokio::time::timeout(limit, self.run(req, store, state, &probe)).await {
                    Ok(result) => result,
                    Err(_) => {
                        // The statements may still run (or be stuck) on the server.
                        warn!(timeout_ms = limit.as_millis(), "save_changes timed out");
                        req.mark_lost();
                        deadline_passed = true;
                        Err(timed_out(&probe, limit))
                    }
                }
            }
        };
        let result = match result {
            Err(Error::OutcomeUnknown(source)) => {
                Err(resolve(store, &probe, source, deadline_passed).await)
            }
            other => other,
        };
        if result.is_err() {
            // If the flight never reached COMMIT, end the open transaction here.
            req.rollback().await;
        }
        result
    }

    async fn run(
        &mut self,
        req: &mut Request<'_>,
        store: &DocumentStore,
        state: &mut SessionState,
        probe: &FlightProbe,
    ) -> Result<Outcome> {
        let in_transaction = req.in_transaction();
        let schema = store.schema();
        let mut ops: Vec<&mut Box<dyn Operation>> = self
            .prelude
            .ops
            .iter_mut()
            .chain(self.user.ops.iter_mut())
            .chain(self.derived.ops.iter_mut())
            .collect();
        for op in ops.iter() {
            let (type_id, migrate) = op.schema();
            store.ensure_erased(type_id, migrate).await?;
        }
        let client = req.client();
        // One statement that either writes everything or nothing needs no transaction.
        let single = !in_transaction && ops.len() == 1 && ops[0].atomic();
        if single {
            ops[0].alone();
        }
        let mut statements = Vec::with_capacity(ops.len());
        for op in ops.iter() {
            let stmt = client
                .prepare_cached(op.sql())
                .await
                .map_err(|e| map_db_error(e, writing(op.as_ref(), schema)))?;
            statements.push(stmt);
        }
        let begin = !single && !in_transaction;
        // The transaction's id and backend, read first (a prepared statement, like the
        // others): if the connection is lost before COMMIT is answered, another
        // connection can ask the server what became of the transaction.
        let ident_stmt = if single {
            None
        } else {
            Some(
                client
                    .prepare_cached(TRANSACTION_IDENT)
                    .await
                    .map_err(|e| map_db_error(e, Failed::Transaction))?,
            )
        };
        let guard = if !single && ops.iter().any(|o| o.checked()) {
            Some(
                client
                    .prepare_cached(ASSERT_NO_REJECTIONS)
                    .await
                    .map_err(|e| map_db_error(e, Failed::Guard { schema }))?,
            )
        } else {
            None
        };
        debug!(
            operations = ops.len(),
            documents = ops.iter().map(|o| o.len()).sum::<usize>(),
            single,
            "save_changes"
        );

        if begin {
            // BEGIN is about to be written.
            req.set_in_transaction(true);
        }
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = ops.iter().map(|o| o.params()).collect();
        let c: &tokio_postgres::Client = req.client();
        if c.is_closed() {
            // Lost before anything of the save was written.
            req.mark_lost();
            return Err(Error::Connection(marten_core::DatabaseError {
                code: None,
                context: "sending the save".to_owned(),
                source: "the connection was closed before the save was sent".into(),
            }));
        }
        // From here on the COMMIT (or the lone statement) may reach the server.
        probe.sent.store(true, Ordering::SeqCst);
        // The row count of a lone statement sent with `execute` (`Operation::counts_only`).
        let mut lone_count = 0;
        let mut results = if single {
            // One statement, no transaction: awaited as it is, nothing to join.
            let (stmt, p) = (&statements[0], params[0].as_slice());
            let result = if ops[0].counts_only() {
                c.execute(stmt, p).await.map(|n| {
                    lone_count = n;
                    Vec::new()
                })
            } else {
                c.query(stmt, p).await
            };
            vec![result]
        } else {
            let mut flight: Vec<StatementFuture<'_>> = Vec::with_capacity(ops.len() + 3);
            if begin {
                flight.push(Box::pin(async move {
                    c.batch_execute("BEGIN").await.map(|()| Vec::new())
                }));
            }
            if let Some(stmt) = &ident_stmt {
                let ident = &probe.ident;
                flight.push(Box::pin(async move {
                    let rows = c.query(stmt, &[]).await?;
                    if let Some(row) = rows.first() {
                        let xid = row.try_get::<_, crate::xid8::Xid8>(0);
                        if let (Ok(xid), Ok(pid)) = (xid, row.try_get::<_, i32>(1)) {
                            let _ = ident.set((xid.0.to_string(), pid));
                        }
                    }
                    Ok(Vec::new())
                }));
            }
            for (stmt, p) in statements.iter().zip(&params) {
                flight.push(Box::pin(c.query(stmt, p.as_slice())));
            }
            if let Some(g) = &guard {
                flight.push(Box::pin(c.query(g, &[])));
            }
            flight.push(Box::pin(async move {
                c.batch_execute("COMMIT").await.map(|()| Vec::new())
            }));
            join_in_order(flight).await
        };
        drop(params);
        // Every answer of the flight was read: COMMIT (or the failed lone statement) ended
        // any transaction.
        req.set_in_transaction(false);
        if let Some(e) = commit_lost(&mut results) {
            // The connection was lost after COMMIT (or the lone statement) was sent and
            // no earlier answer says the transaction failed: the outcome is unknown.
            req.mark_lost();
            let context = if single {
                "reading the answer to the save's statement"
            } else {
                "reading the answer to COMMIT"
            };
            let source = lost_error(e, context);
            return Err(Error::OutcomeUnknown(source));
        }
        let mut results = results.into_iter();
        let c: &tokio_postgres::Client = req.client();

        let mut failure: Option<Error> = None;
        // BEGIN (when this save opened the transaction) and the transaction's ident.
        let leading = usize::from(begin) + usize::from(ident_stmt.is_some());
        for _ in 0..leading {
            if let Some(Err(e)) = results.next() {
                note(&mut failure, e, Failed::Transaction);
            }
        }
        for op in ops.iter_mut() {
            match results.next() {
                Some(Ok(rows)) => {
                    let accepted = if single && op.counts_only() {
                        op.accept_count(lone_count)
                    } else {
                        op.accept(&rows)
                    };
                    if let Err(e) = accepted {
                        failure.get_or_insert(e);
                    }
                }
                Some(Err(e)) => note(&mut failure, e, writing(op.as_ref(), schema)),
                None => {}
            }
        }
        if guard.is_some() {
            if let Some(Err(e)) = results.next() {
                let rejected = e.code().is_some_and(|c| c.code() == REJECTED_SQLSTATE);
                if !rejected {
                    note(&mut failure, e, Failed::Guard { schema });
                }
            }
        }
        if !single {
            if let Some(Err(e)) = results.next() {
                note(&mut failure, e, Failed::Transaction);
            }
        }
        if let Some(e) = failure {
            if let Error::DuplicateEvent { .. } = e {
                return Err(name_duplicates(c, &ops).await);
            }
            return Err(e);
        }
        if ops.iter().any(|o| o.has_rejections()) {
            if ops
                .iter()
                .filter(|o| o.has_rejections())
                .all(|o| o.retryable())
            {
                return Ok(Outcome::Retry);
            }
            let mut rejections = Vec::new();
            for op in ops.iter().filter(|o| o.has_rejections()) {
                rejections.extend(op.explain(c).await?);
            }
            return Err(Error::Rejected(rejections));
        }
        for op in ops.iter() {
            op.committed(state);
        }
        Ok(Outcome::Committed)
    }
}

/// What a save's flight left behind for a caller that lost its answers: whether any of it
/// was handed to the connection, and the id and backend of its transaction once read.
#[derive(Default)]
struct FlightProbe {
    sent: AtomicBool,
    ident: OnceLock<(String, i32)>,
}

/// How long asking the server what became of a transaction may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The error that ends a lost flight: the last answer (COMMIT's, or the lone
/// statement's) was lost with the connection, and no earlier answer was an error of the
/// server (which would have doomed the transaction).
fn commit_lost(
    results: &mut Vec<Result<Vec<Row>, tokio_postgres::Error>>,
) -> Option<tokio_postgres::Error> {
    let (last, earlier) = results.split_last()?;
    let doomed = earlier
        .iter()
        .any(|r| matches!(r, Err(e) if e.code().is_some()));
    if doomed || !matches!(last, Err(e) if is_lost(e)) {
        return None;
    }
    results.pop().and_then(Result::err)
}

/// The error of a save whose answers did not arrive within `limit`.
fn timed_out(probe: &FlightProbe, limit: Duration) -> Error {
    let what = format!(
        "the answers of save_changes (request timeout of {} ms)",
        limit.as_millis()
    );
    if probe.sent.load(Ordering::SeqCst) {
        Error::OutcomeUnknown(marten_core::DatabaseError {
            code: None,
            context: "waiting for the answers of the save".to_owned(),
            source: format!("no answer within {} ms", limit.as_millis()).into(),
        })
    } else {
        Error::Timeout { what }
    }
}

/// Asks the server, on a connection of its own, what became of a transaction whose
/// COMMIT answer was lost. An aborted transaction wrote nothing: the failure is a plain
/// [`Error::Connection`] (or [`Error::Timeout`] when the request timed out). Otherwise
/// (committed, or nothing could be learned) the outcome stays unknown to the caller.
async fn resolve(
    store: &DocumentStore,
    probe: &FlightProbe,
    source: marten_core::DatabaseError,
    timed_out: bool,
) -> Error {
    let Some((xid, pid)) = probe.ident.get() else {
        return Error::OutcomeUnknown(source);
    };
    let limit = store
        .request_timeout()
        .map_or(RESOLVE_TIMEOUT, |t| t.min(RESOLVE_TIMEOUT));
    match tokio::time::timeout(limit, transaction_status(store, xid, *pid)).await {
        Ok(Some(false)) => {
            debug!(
                xid,
                "the lost save's transaction was rolled back: nothing was written"
            );
            if timed_out {
                Error::Timeout {
                    what: "the answers of save_changes (request timeout); nothing was written"
                        .to_owned(),
                }
            } else {
                Error::Connection(source)
            }
        }
        Ok(Some(true)) => {
            warn!(
                xid,
                "the lost save's transaction committed; its answers were lost"
            );
            Error::OutcomeUnknown(source)
        }
        Ok(None) | Err(_) => {
            warn!(
                xid,
                "could not learn what became of the lost save's transaction"
            );
            Error::OutcomeUnknown(source)
        }
    }
}

/// `Some(true)`: committed, `Some(false)`: rolled back, `None`: unknown. A transaction
/// still in progress belongs to a backend that has not noticed its client is gone; it
/// is terminated (only if it still runs that transaction), which settles it.
async fn transaction_status(store: &DocumentStore, xid: &str, pid: i32) -> Option<bool> {
    let client = store.dedicated_connection().await.ok()?;
    loop {
        let row = client
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
            .await
            .ok()?;
        let status: Option<String> = row.try_get(0).ok()?;
        match status.as_deref() {
            Some("committed") => return Some(true),
            Some("aborted") => return Some(false),
            Some("in progress") => {
                let ended = client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE pid = $1 AND backend_xid = $2::text::xid8::xid",
                        &[&pid, &xid],
                    )
                    .await;
                if let Err(e) = ended {
                    debug!(error = %e, "cannot end the lost save's backend");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return None,
        }
    }
}

/// The duplicate-event error of a save, naming which of its events' ids were stored
/// before (read after the save's transaction ended).
async fn name_duplicates(
    client: &tokio_postgres::Client,
    ops: &[&mut Box<dyn Operation>],
) -> Error {
    let ids: Vec<uuid::Uuid> = ops
        .iter()
        .filter_map(|op| {
            op.as_any()
                .downcast_ref::<crate::events::append::StreamAppend>()
        })
        .flat_map(|a| a.ids.iter().copied())
        .collect();
    let found = client
        .query(crate::events::table::EXISTING_EVENT_IDS, &[&ids])
        .await
        .map_err(|e| map_db_error(e, Failed::Reading("event")))
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    r.try_get::<_, uuid::Uuid>(0)
                        .map_err(|e| map_db_error(e, Failed::Reading("event")))
                })
                .collect::<Result<Vec<_>>>()
        });
    match found {
        Ok(ids) => Error::DuplicateEvent { ids },
        Err(e) => e,
    }
}

/// The id and backend of the save's transaction (assigning the id now: the save writes).
const TRANSACTION_IDENT: &str = "SELECT pg_current_xact_id(), pg_backend_pid()";

/// Keeps the first real failure of a batch; later statements of an aborted transaction
/// only report that it is aborted.
fn note(failure: &mut Option<Error>, e: tokio_postgres::Error, what: Failed<'_>) {
    let aborted = e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION);
    if failure.is_none() && !aborted {
        *failure = Some(map_db_error(e, what));
    }
}

fn writing<'a>(op: &dyn Operation, schema: &'a str) -> Failed<'a> {
    Failed::Writing {
        document_type: op.document_type(),
        schema,
        table: op.table(),
    }
}

/// Polls every future in order until all are done. Unlike a general join, the first
/// poll of each future happens in list order, which is the order tokio-postgres writes
/// their requests to the connection.
pub(crate) async fn join_in_order<T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>,
) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

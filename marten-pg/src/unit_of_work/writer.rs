//! The writer of a unit of work: a save that is one statement goes alone
//! ([`super::lone`]); any other makes sure its tables exist, prepares its statements,
//! sends them in one transaction as one pipeline, reads every answer by its handle and
//! concludes: committed, retry, or the error that explains what was rejected.

use crate::connection::{Db, SqlText, Stmt, WriteToken, WRITE_POSITION};
use marten_core::{Error, Result};
use postgres_types::PgLsn;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tracing::debug;

use super::append::StreamAppend;
use super::lost::{
    commit_lost, resolve, timed_out, FlightProbe, BEGIN_AND_IDENT, TRANSACTION_IDENT,
};
use super::Operation;
use super::{Outcome, Queued, SessionState, UnitOfWork};
use crate::connection::{within, Answers, Done, Handle, Pipeline, Request, Rows};
use crate::error_map::{map_db_error, Failed};
use crate::schema::Catalog;
use crate::tables::functions::{ASSERT_NO_REJECTIONS, REJECTED_SQLSTATE};

type Ops<'u> = Vec<&'u mut dyn Operation>;

/// The statements of a transactional save, prepared on its connection.
struct Prepared {
    ops: Vec<Stmt>,
    /// The ident on its own, inside a transaction already open (else it goes with BEGIN).
    ident: Option<Stmt>,
    guard: Option<Stmt>,
    /// The log position query read after `COMMIT` (when the session records it).
    position: Option<Stmt>,
}

/// The handles of a transactional save's pipeline.
struct Flight {
    /// `BEGIN` and the transaction's ident, or the ident alone.
    ident: Handle<Rows>,
    ops: Vec<Handle<Rows>>,
    guard: Option<Handle<Rows>>,
    commit: Handle<Done>,
    position: Option<Handle<Rows>>,
}

impl UnitOfWork {
    /// Sends every queued operation in one transaction and one round trip. On success the
    /// session state learns the new versions. The queue is left as it was; the caller
    /// clears it.
    pub(crate) async fn execute(
        &mut self,
        req: &mut Request<'_>,
        store: &Catalog,
        state: &mut SessionState,
    ) -> Result<Outcome> {
        let all = (self.prelude.items.iter_mut())
            .chain(self.user.items.iter_mut())
            .chain(self.derived.items.iter_mut());
        for q in all {
            q.operation_mut().order_rows();
        }
        if let Some(op) = self.lone(req) {
            // One statement that writes everything or nothing needs no transaction.
            return match super::lone::send(req, op, store, state).await {
                Err(Error::DuplicateEvent { .. }) => {
                    // The read that names the duplicates is bounded too; without an
                    // answer the duplicates go unnamed.
                    match within(store, self.name_duplicates(req.client())).await {
                        Some(named) => Err(named),
                        None => {
                            req.mark_lost();
                            Err(Error::DuplicateEvent { ids: Vec::new() })
                        }
                    }
                }
                other => other,
            };
        }
        let probe = FlightProbe::default();
        let mut deadline_passed = false;
        // Pinned in place: the (large) run is built where it runs, neither moved into
        // the timeout nor allocated per save. `None`: the deadline passed first.
        let ran = {
            let run = std::pin::pin!(self.run(req, store, state, &probe));
            within(store, run).await
        };
        let result = match ran {
            Some(result) => result,
            None => {
                deadline_passed = true;
                Err(timed_out(req, &probe, store))
            }
        };
        let result = match result {
            Err(Error::OutcomeUnknown(source)) => {
                Err(resolve(store, &probe, source, deadline_passed).await)
            }
            other => other,
        };
        match &result {
            // What the session held of the documents its projections wrote is older.
            Ok(Outcome::Committed) => {
                for q in &self.derived.items {
                    q.operation().forget_held(state);
                }
            }
            Ok(Outcome::Retry) => {}
            // If the flight never reached COMMIT, end the open transaction here.
            Err(_) => req.rollback_within(store).await,
        }
        result
    }

    async fn run(
        &mut self,
        req: &mut Request<'_>,
        store: &Catalog,
        state: &mut SessionState,
        probe: &FlightProbe,
    ) -> Result<Outcome> {
        let mut ops: Ops<'_> = self
            .prelude
            .items
            .iter_mut()
            .chain(self.user.items.iter_mut())
            .chain(self.derived.items.iter_mut())
            .map(Queued::operation_mut)
            .collect();
        for op in ops.iter() {
            let (type_id, migrate) = op.target().schema;
            store.ensure_erased(type_id, migrate).await?;
        }
        let failure = send_transaction(req, &mut ops, store.schema(), probe).await?;
        let concluded = match concluded(&ops, failure, state) {
            Some(concluded) => concluded,
            None => rejected(req.client(), &ops).await,
        };
        drop(ops);
        match concluded {
            Err(Error::DuplicateEvent { .. }) => Err(self.name_duplicates(req.client()).await),
            other => other,
        }
    }

    /// The duplicate-event error of a save, naming which of its events' ids were stored
    /// before (read after the save's transaction ended). Every append of a unit of work
    /// records the session's tenant, so the first append's lookup serves them all.
    async fn name_duplicates(&self, client: Db<'_>) -> Error {
        let appends = (self.user.appends())
            .chain(self.derived.appends())
            .map(|(_, a)| a);
        let Some((sql, tenant)) = appends.clone().next().map(StreamAppend::existing_ids) else {
            return Error::DuplicateEvent { ids: Vec::new() };
        };
        debug_assert!(appends.clone().all(|a| a.existing_ids().1 == tenant));
        let ids: Vec<uuid::Uuid> = appends.flat_map(|a| a.ids.iter().copied()).collect();
        let found = client
            .query(sql, &tenant.scoped(vec![&ids]))
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
}

/// Sends `BEGIN` (unless a transaction is open), the transaction's ident, every
/// operation, the guard and `COMMIT` as one pipeline, and reads every answer.
async fn send_transaction(
    req: &mut Request<'_>,
    ops: &mut Ops<'_>,
    schema: &str,
    probe: &FlightProbe,
) -> Result<Option<Error>> {
    let records = req.records_write_position();
    let begin = !req.in_transaction();
    let prepared = prepare(req.client(), ops, schema, records, begin).await?;
    debug!(
        operations = ops.len(),
        documents = ops.iter().map(|o| o.len()).sum::<usize>(),
        single = false,
        "save_changes"
    );
    if begin {
        // BEGIN is about to be written.
        req.set_in_transaction(true);
    }
    ensure_open(req)?;
    // From here on the COMMIT may reach the server.
    probe.mark_sent();
    if records {
        // Until its answer is read, the position of what may commit is unknown.
        req.record_write_position(None);
    }
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = ops.iter().map(|o| o.params()).collect();
    let c = req.client();
    let mut pipe = Pipeline::new(c, ops.len() + 4);
    let mut flight = Flight {
        // The transaction's id and backend, read first: if the connection is lost before
        // COMMIT is answered, another connection can ask what became of it. With BEGIN,
        // one simple query (one request and one answer for both).
        ident: pipe.push(async {
            match &prepared.ident {
                Some(ident) => probe.record(&c.query(ident, &[]).await?),
                None => probe.record_text(&c.raw().simple_query(BEGIN_AND_IDENT).await?),
            }
            Ok(Vec::new())
        }),
        ops: (prepared.ops.iter().zip(&params))
            .map(|(statement, p)| pipe.query(statement, p))
            .collect(),
        guard: prepared.guard.as_ref().map(|g| pipe.query(g, &[])),
        commit: pipe.command("COMMIT"),
        // Read after COMMIT, in the same flight: at or past the commit record.
        position: prepared.position.as_ref().map(|p| pipe.query(p, &[])),
    };
    let mut answers = pipe.send_until_unwritable().await;
    drop(params);
    if !answers.complete() {
        // A statement could not be written (its parameters did not encode, or the
        // connection closed): COMMIT never was. What was written is rolled back.
        let failure = unwritten(&mut answers, &flight, ops, schema);
        req.rollback().await;
        return Ok(Some(failure));
    }
    // Every answer was read: COMMIT ended the transaction, or it never began.
    req.set_in_transaction(false);
    if let Some(handle) = flight.position.take() {
        req.record_write_position(write_position(answers.take(handle)));
    }
    let context = "reading the answer to COMMIT";
    if let Some(source) = commit_lost(&mut answers, &flight.commit, context) {
        // Lost after COMMIT was sent and no earlier answer says the transaction failed.
        req.mark_lost();
        return Err(Error::OutcomeUnknown(source));
    }
    Ok(read_flight(&mut answers, flight, ops, schema))
}

/// Prepares (from the connection's cache) every statement of a transactional save.
/// `begin`: the ident goes with BEGIN (see [`BEGIN_AND_IDENT`]), not prepared.
async fn prepare(
    client: Db<'_>,
    ops: &Ops<'_>,
    schema: &str,
    position: bool,
    begin: bool,
) -> Result<Prepared> {
    let mut statements = Vec::with_capacity(ops.len());
    for op in ops.iter() {
        let statement = client
            .statement(op.sql())
            .await
            .map_err(|e| map_db_error(e, writing(&**op, schema)))?;
        statements.push(statement);
    }
    let ident = match begin {
        true => None,
        false => Some(
            client
                .statement(SqlText::Static(TRANSACTION_IDENT))
                .await
                .map_err(|e| map_db_error(e, Failed::Transaction))?,
        ),
    };
    let guard = if ops.iter().any(|o| o.checked()) {
        let guard = client
            .statement(ASSERT_NO_REJECTIONS)
            .await
            .map_err(|e| map_db_error(e, Failed::Guard { schema }))?;
        Some(guard)
    } else {
        None
    };
    let position = match position {
        true => Some(
            client
                .statement(SqlText::Static(WRITE_POSITION))
                .await
                .map_err(|e| map_db_error(e, Failed::Transaction))?,
        ),
        false => None,
    };
    Ok(Prepared {
        ops: statements,
        ident,
        guard,
        position,
    })
}

/// The log position a save's position query answered, if it did.
fn write_position(
    answer: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
) -> Option<WriteToken> {
    let row = answer.ok()?.into_iter().next()?;
    let lsn: Option<PgLsn> = row.try_get(0).ok()?;
    lsn.map(|l| WriteToken::from_lsn(u64::from(l)))
}

/// Fails when the connection closed before anything of the save was written.
pub(super) fn ensure_open(req: &mut Request<'_>) -> Result<()> {
    if !req.client().is_closed() {
        return Ok(());
    }
    req.mark_lost();
    Err(Error::Connection(marten_core::DatabaseError {
        code: None,
        context: "sending the save".to_owned(),
        source: "the connection was closed before the save was sent".into(),
    }))
}

/// Reads every answer of a transactional flight: each operation accepts its rows, and
/// the first real failure is kept.
fn read_flight(
    answers: &mut Answers,
    flight: Flight,
    ops: &mut Ops<'_>,
    schema: &str,
) -> Option<Error> {
    let mut failure = None;
    if let Err(e) = answers.take(flight.ident) {
        if is_aborted(&e) {
            // The session's open transaction (an exclusive lock's) was aborted by a
            // statement that failed before this save: every statement of the flight was
            // refused and its COMMIT only ended the aborted transaction.
            failure = Some(map_db_error(e, Failed::Other(ABORTED_BEFORE)));
        } else {
            note(&mut failure, e, Failed::Transaction);
        }
    }
    for (op, handle) in ops.iter_mut().zip(flight.ops) {
        match answers.take(handle) {
            Ok(rows) => {
                if let Err(e) = op.accept(&rows) {
                    failure.get_or_insert(e);
                }
            }
            Err(e) => note(&mut failure, e, writing(&**op, schema)),
        }
    }
    if let Some(Err(e)) = flight.guard.map(|h| answers.take(h)) {
        // The guard raising on purpose: the rejections are in the operations' rows.
        let rejected = e.code().is_some_and(|c| c.code() == REJECTED_SQLSTATE);
        if !rejected {
            note(&mut failure, e, Failed::Guard { schema });
        }
    }
    if let Err(e) = answers.take(flight.commit) {
        note(&mut failure, e, Failed::Transaction);
    }
    failure
}

/// Why a flight was not written whole: the first statement that could not be written,
/// named by the operation it belongs to.
fn unwritten(answers: &mut Answers, flight: &Flight, ops: &Ops<'_>, schema: &str) -> Error {
    let failed_op = (ops.iter().zip(&flight.ops))
        .find(|(_, handle)| matches!(answers.peek(*handle), Some(Err(_))))
        .map(|(op, _)| writing(&**op, schema));
    match answers.take_first_error() {
        Some(e) => map_db_error(e, failed_op.unwrap_or(Failed::Transaction)),
        // `complete` is false only after a statement failed before it was written.
        None => Error::Connection(marten_core::DatabaseError {
            code: None,
            context: "sending the save".to_owned(),
            source: "a statement of the save could not be written".into(),
        }),
    }
}

/// What came of a save whose answers were all read, unless it was rejected (`None`:
/// [`rejected`] says what then): its failure, or committed (the session state learns
/// what each operation wrote).
pub(super) fn concluded(
    ops: &[&mut dyn Operation],
    failure: Option<Error>,
    state: &mut SessionState,
) -> Option<Result<Outcome>> {
    if let Some(e) = failure {
        return Some(Err(e));
    }
    if ops.iter().any(|o| o.has_rejections()) {
        return None;
    }
    for op in ops.iter() {
        op.committed(state);
    }
    Some(Ok(Outcome::Committed))
}

/// What came of a save that was rejected: retried when every rejection came from a check
/// marten added itself, else the error that explains each rejection. An append refused by
/// its stream whose event ids are already stored explains itself as
/// [`Error::DuplicateEvent`] instead (a save sent again after [`Error::OutcomeUnknown`]:
/// see `StreamAppend::explain`), which the caller then names for the whole save.
pub(super) async fn rejected(client: Db<'_>, ops: &[&mut dyn Operation]) -> Result<Outcome> {
    let rejected: Vec<&&mut dyn Operation> = ops.iter().filter(|o| o.has_rejections()).collect();
    if rejected.iter().all(|o| o.retryable()) {
        return Ok(Outcome::Retry);
    }
    let mut rejections = Vec::new();
    for op in rejected {
        rejections.extend(op.explain(client).await?);
    }
    Err(Error::Rejected(rejections))
}

/// Keeps the first real failure of a batch; later statements of an aborted transaction
/// only report that it is aborted.
pub(super) fn note(failure: &mut Option<Error>, e: tokio_postgres::Error, what: Failed<'_>) {
    if failure.is_none() && !is_aborted(&e) {
        *failure = Some(map_db_error(e, what));
    }
}

/// What a save reports when the session's transaction was aborted before it.
const ABORTED_BEFORE: &str = "saving in the session's transaction, which a statement that \
     failed earlier had aborted (its exclusive locks ended with it): nothing of the save \
     was written";

/// Whether the server refused a statement because its transaction was already aborted.
fn is_aborted(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
}

/// What a failed statement of `op` was writing, for its error.
pub(super) fn writing<'a>(op: &dyn Operation, schema: &'a str) -> Failed<'a> {
    let target = op.target();
    Failed::Writing {
        document_type: target.what,
        schema,
        table: target.table,
    }
}

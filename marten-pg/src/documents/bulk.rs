//! Bulk inserts: many documents of one type written with binary `COPY`, in batches, all
//! in one transaction ([`BulkMode`], [`BulkOptions`]). Ids get a session's checks before
//! anything is sent (a nil `Uuid` id assigned, an unusable id refused, ids given twice
//! resolved per mode); documents are serialized and checked for what `jsonb` refuses as
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
//! May use: connection, error map, tables, the storages and leaf helpers.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::join;

use marten_core::concurrency::VersionOf;
use marten_core::{DocumentId, Error, Rejection, RejectionKind, Result, TenantId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::CopyInSink;
use tracing::debug;

use super::storage::{conjoined, DocumentStorage, PgDocument, PgVersion};
use crate::connection::{timed_out, within, Conn, Connector, Db, Request};
use crate::error_map::{is_lost, lost_error, map_db_error, reading_documents, Failed};
use crate::json::RawJson;
use crate::tables::documents::unique_field;
use crate::tenant_key::TenantKey;
use crate::PgId;

/// How a bulk insert treats documents whose id is already stored (Marten's
/// `BulkInsertMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BulkMode {
    /// New documents only (Marten's `InsertsOnly`), copied straight into the table: the
    /// fastest mode. An id already stored, or given twice, fails the whole bulk insert
    /// with [`Error::Rejected`] ([`RejectionKind::AlreadyExists`] for each such id) and
    /// nothing of it is written.
    #[default]
    InsertOnly,
    /// Documents whose id is stored are skipped (Marten's `IgnoreDuplicates`);
    /// of an id given twice the first document is written.
    IgnoreDuplicates,
    /// Documents whose id is stored overwrite it (Marten's `OverwriteExisting`), without
    /// a concurrency check: an optimistic document gets a new version, a numeric one its
    /// revision plus one. Of an id given twice the last document is written.
    Overwrite,
}

impl BulkMode {
    /// The mode's name, for logs and spans.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BulkMode::InsertOnly => "insert_only",
            BulkMode::IgnoreDuplicates => "ignore_duplicates",
            BulkMode::Overwrite => "overwrite",
        }
    }
}

/// The options of a bulk insert: its [`BulkMode`] and how many documents each `COPY`
/// carries.
///
/// ```
/// use marten_pg::{BulkMode, BulkOptions};
///
/// let options = BulkOptions::new(BulkMode::Overwrite).batch_size(5_000);
/// assert_eq!(options.batch_size, 5_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkOptions {
    /// What happens to documents whose id is already stored.
    pub mode: BulkMode,
    /// Documents per batch (one `COPY`, and for the modes other than insert-only one
    /// `INSERT ... SELECT`), at least 1. All batches share one transaction.
    pub batch_size: usize,
}

impl BulkOptions {
    /// The default batch size. Marten's is 1,000; here rows are streamed into each
    /// `COPY` as they are serialized, so a batch costs neither client nor server memory,
    /// only a round trip and a statement's start and end (at 1,000 the bulk insert of
    /// 10,000 documents ran at about 0.8 of one raw `COPY` on a busy machine, at 10,000
    /// at 1.0). A smaller batch bounds the staging table of the modes that use one.
    pub const DEFAULT_BATCH_SIZE: usize = 10_000;

    /// `mode` with the default batch size.
    pub fn new(mode: BulkMode) -> Self {
        BulkOptions {
            mode,
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }

    /// Sets the number of documents per batch (at least 1: a bulk insert with 0 fails
    /// with [`Error::Configuration`] before anything is sent).
    pub fn batch_size(mut self, documents: usize) -> Self {
        self.batch_size = documents;
        self
    }
}

impl Default for BulkOptions {
    /// Insert-only, [`BulkOptions::DEFAULT_BATCH_SIZE`] documents per batch.
    fn default() -> Self {
        Self::new(BulkMode::InsertOnly)
    }
}

/// The documents of a bulk insert, their ids assigned and checked and ids given twice
/// resolved; they are serialized as they are copied.
pub(crate) struct BulkRows<D: PgDocument> {
    docs: Vec<D>,
}

impl<D: PgDocument> BulkRows<D> {
    /// How many rows there are.
    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

/// Prepares `docs` for a bulk insert with the checks a session's `store` makes of ids
/// (a nil `Uuid` id gets a new version-7 uuid, an unusable id is refused) and resolves
/// ids given twice as the mode says. The documents are serialized (and checked) as they
/// are copied, so that the server works on the rows sent while the next ones are
/// serialized.
pub(crate) fn prepare<D: PgDocument>(
    docs: impl IntoIterator<Item = D>,
    options: BulkOptions,
) -> Result<BulkRows<D>> {
    if options.batch_size == 0 {
        return Err(Error::Configuration(
            "the batch size of a bulk insert must be at least 1".to_owned(),
        ));
    }
    let mut docs: Vec<D> = docs.into_iter().collect();
    for doc in &mut docs {
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
    }
    Ok(BulkRows {
        docs: deduplicate::<D>(docs, options.mode)?,
    })
}

/// Ids given more than once: refused (insert-only), the first kept (ignoring
/// duplicates) or the last kept (overwriting). One statement may not touch a row twice.
fn deduplicate<D: PgDocument>(docs: Vec<D>, mode: BulkMode) -> Result<Vec<D>> {
    match mode {
        BulkMode::InsertOnly => {
            let mut seen = HashSet::with_capacity(docs.len());
            let twice: Vec<Rejection> = docs
                .iter()
                .map(D::id)
                .filter(|id| !seen.insert(*id))
                .map(|id| Rejection::new(D::DOCUMENT_TYPE, id.key(), RejectionKind::AlreadyExists))
                .collect();
            if twice.is_empty() {
                Ok(docs)
            } else {
                Err(Error::Rejected(twice))
            }
        }
        BulkMode::IgnoreDuplicates => {
            let mut seen = HashSet::with_capacity(docs.len());
            Ok(docs
                .into_iter()
                .filter(|doc| seen.insert(doc.id().clone()))
                .collect())
        }
        BulkMode::Overwrite => {
            let last: HashMap<&D::Id, usize> =
                docs.iter().enumerate().map(|(i, d)| (d.id(), i)).collect();
            if last.len() == docs.len() {
                return Ok(docs);
            }
            let keep: Vec<bool> = (0..docs.len())
                .map(|i| last.get(docs[i].id()) == Some(&i))
                .collect();
            Ok(docs
                .into_iter()
                .zip(keep)
                .filter_map(|(doc, keep)| keep.then_some(doc))
                .collect())
        }
    }
}

/// What the batches of a bulk insert need to know.
struct Plan<'a, D: PgDocument> {
    rows: &'a BulkRows<D>,
    options: BulkOptions,
    /// The tenant of a conjoined type's rows.
    tenant: Option<TenantKey>,
    schema: &'a str,
}

impl<D: PgDocument> Plan<'_, D> {
    fn batches(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let (n, size) = (self.rows.len(), self.options.batch_size);
        (0..n.div_ceil(size)).map(move |b| b * size..((b + 1) * size).min(n))
    }

    fn writing(&self) -> Failed<'_> {
        Failed::Writing {
            document_type: D::DOCUMENT_TYPE,
            schema: self.schema,
            table: D::TABLE_NAME,
        }
    }

    /// The column types of a copied row: `[tenant,] id, data[, version]`.
    fn types(&self, with_tenant: bool) -> Vec<Type> {
        let mut types = Vec::with_capacity(4);
        if with_tenant {
            types.push(Type::TEXT);
        }
        types.extend([<D::Id as PgId>::PG_TYPE, Type::JSONB]);
        types.extend(<VersionOf<D> as PgVersion>::COLUMN_TYPE);
        types
    }

    /// Writes the rows of `batch` into `writer`, serializing each document into one
    /// reused buffer as it goes. A document that cannot be stored ends the batch (the
    /// writer, dropped, aborts the copy).
    async fn write_rows(
        &self,
        writer: &mut Writer,
        batch: Range<usize>,
        with_tenant: bool,
    ) -> std::result::Result<(), BatchError> {
        let mut json = RawJson(Vec::with_capacity(256));
        for doc in &self.rows.docs[batch] {
            json.0.clear();
            super::serialize_into(doc, &mut json.0).map_err(BatchError::Input)?;
            let version = <VersionOf<D> as PgVersion>::initial();
            let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4);
            if with_tenant {
                values.push(&self.tenant);
            }
            values.extend([doc.id() as &(dyn ToSql + Sync), &json]);
            values.extend(version.as_ref().and_then(PgVersion::param));
            writer.as_mut().write(&values).await?;
        }
        Ok(())
    }
}

/// A binary `COPY` in progress.
type Writer = Pin<Box<BinaryCopyInWriter>>;

/// What the answers to a batch's end brought: the rows it wrote and the copy of the
/// next batch, if one follows.
struct BatchEnd {
    written: u64,
    next: Option<Writer>,
}

/// Why a batch failed: the database refused it, or a document could not be serialized
/// or stored.
enum BatchError {
    Db(tokio_postgres::Error),
    Input(Error),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        BatchError::Db(e)
    }
}

/// A failure of the writing phase: the error, and for an insert-only batch refused by
/// the primary key, the batch (its ids are looked up once the transaction is over).
///
/// `desynced`: a `COPY` was refused when it started (pipelined behind a statement that
/// failed): tokio-postgres then ends it with a second `Sync`, whose extra answer would
/// be read by the connection's next request, so the connection is closed (the server
/// rolls the transaction back) instead of reused.
struct Failure {
    error: Error,
    taken_ids_in: Option<Range<usize>>,
    desynced: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            taken_ids_in: None,
            desynced: false,
        }
    }
}

/// Awaits `f` on the request's connection within the store's request timeout; past it
/// the request is given up (its connection cancelled and closed) and the caller gets
/// [`Error::Timeout`]: nothing was committed.
async fn bounded<T>(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    f: impl AsyncFnOnce(Db<'_>) -> Result<T>,
) -> Result<T> {
    let answer = within(source, f(req.client())).await;
    match answer {
        Some(result) => result,
        None => {
            req.mark_lost();
            Err(timed_out(source))
        }
    }
}

/// Writes `rows` of `D` (of `tenant`, for a conjoined type) in batches, in one
/// transaction on `conn`; returns how many rows were written (inserted, or inserted and
/// overwritten). The caller made sure of the table and, for a conjoined type, of the
/// tenant.
pub(crate) async fn bulk_insert<D: PgDocument>(
    conn: &mut Conn,
    source: &impl AsRef<Connector>,
    schema: &str,
    tenant: Option<&TenantId>,
    rows: &BulkRows<D>,
    options: BulkOptions,
) -> Result<u64> {
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
    let span = tracing::Span::current();
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
    let committed = within(source, req.client().batch_execute("COMMIT")).await;
    match committed {
        Some(Ok(())) => {
            req.set_in_transaction(false);
            req.finish();
            span.record("marten.rows", written);
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
            let waited = source.as_ref().request_timeout().unwrap_or_default();
            Err(Error::OutcomeUnknown(marten_core::DatabaseError {
                code: None,
                context: "waiting for the answer to COMMIT".to_owned(),
                source: format!("no answer within {} ms", waited.as_millis()).into(),
            }))
        }
    }
}

/// `BEGIN` (with the staging table when the mode needs it) and every batch; the
/// transaction is left open for `COMMIT`.
///
/// Requests are pipelined: `BEGIN` goes with the first batch's `COPY`, and the end of
/// each batch (its `COPY` finished, its rows moved from the staging table, the staging
/// table emptied) with the next batch's `COPY`, so a batch costs one round trip besides
/// its rows. The connection runs requests in the order they are written, and every
/// statement of a batch's end is ready before the first of them is written.
async fn write<D: PgDocument>(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    plan: &Plan<'_, D>,
) -> std::result::Result<u64, Failure> {
    let sql = D::storage().bulk_sql();
    let staged = plan.options.mode != BulkMode::InsertOnly;
    let (copy_sql, with_tenant) = if staged {
        (sql.copy_into_staging.as_str(), false)
    } else {
        (sql.copy_into_table.as_str(), conjoined::<D>())
    };
    let move_sql = match plan.options.mode {
        BulkMode::InsertOnly => None,
        BulkMode::IgnoreDuplicates => Some(sql.insert_ignoring.as_str()),
        BulkMode::Overwrite => Some(sql.insert_overwriting.as_str()),
    };
    let begin = if staged {
        format!("BEGIN; {}", sql.create_staging)
    } else {
        "BEGIN".to_owned()
    };
    let types = plan.types(with_tenant);
    let (mut writer, moving) = bounded(req, source, async |db| {
        let moving = async {
            match move_sql {
                Some(text) => db.statement(text).await.map(Some),
                None => Ok(None),
            }
        };
        let (began, moving, sink) = join!(db.batch_execute(&begin), moving, db.copy_in(copy_sql));
        let failed = |e| map_db_error(e, plan.writing());
        let desynced = sink.is_err();
        let started = began
            .and(moving)
            .and_then(|moving| Ok((moving, sink?)))
            .map_err(|e| Failure {
                error: failed(e),
                taken_ids_in: None,
                desynced,
            });
        Ok(started.map(|(moving, sink)| (Box::pin(BinaryCopyInWriter::new(sink, &types)), moving)))
    })
    .await??;
    let tenant: Vec<&(dyn ToSql + Sync)> = if conjoined::<D>() {
        vec![&plan.tenant]
    } else {
        Vec::new()
    };
    let batches: Vec<Range<usize>> = plan.batches().collect();
    let count = batches.len();
    let mut written = 0;
    for (b, batch) in batches.into_iter().enumerate() {
        let last = b + 1 == count;
        let end = bounded(req, source, async |db| {
            if let Err(e) = plan
                .write_rows(&mut writer, batch.clone(), with_tenant)
                .await
            {
                return Ok(Err((e, false)));
            }
            let moved = async {
                match &moving {
                    Some(statement) => Some(db.execute(statement, &tenant).await),
                    None => None,
                }
            };
            let cleared = async {
                match staged && !last {
                    true => Some(db.batch_execute(&sql.clear_staging).await),
                    false => None,
                }
            };
            let next = async {
                match last {
                    true => None,
                    false => Some(db.copy_in(copy_sql).await),
                }
            };
            let (copied, moved, cleared, next) =
                join!(writer.as_mut().finish(), moved, cleared, next);
            Ok(batch_end(copied, moved, cleared, next, &types))
        })
        .await?;
        match end {
            Ok(end) => {
                written += end.written;
                if let Some(next) = end.next {
                    writer = next;
                }
            }
            Err((BatchError::Input(error), _)) => return Err(error.into()),
            Err((BatchError::Db(e), desynced)) => {
                let taken =
                    plan.options.mode == BulkMode::InsertOnly && primary_key_refused::<D>(&e);
                return Err(Failure {
                    error: map_db_error(e, plan.writing()),
                    taken_ids_in: taken.then_some(batch),
                    desynced,
                });
            }
        }
        debug!(
            batch = b,
            of = count,
            rows = written,
            "bulk insert batch written"
        );
    }
    Ok(written)
}

/// The answers to a batch's end, the first failure first: the copy finished (its row
/// count), the rows moved from the staging table (their count, when the mode stages),
/// the staging table emptied, the next copy started.
/// A refused `COPY` start leaves the connection out of step (see [`Failure`]): the
/// error comes with `true` then.
fn batch_end(
    copied: std::result::Result<u64, tokio_postgres::Error>,
    moved: Option<std::result::Result<u64, tokio_postgres::Error>>,
    cleared: Option<std::result::Result<(), tokio_postgres::Error>>,
    next: Option<std::result::Result<CopyInSink<Bytes>, tokio_postgres::Error>>,
    types: &[Type],
) -> std::result::Result<BatchEnd, (BatchError, bool)> {
    let desynced = matches!(next, Some(Err(_)));
    ends(copied, moved, cleared, next, types).map_err(|e| (e, desynced))
}

/// [`batch_end`] without the connection's state.
fn ends(
    copied: std::result::Result<u64, tokio_postgres::Error>,
    moved: Option<std::result::Result<u64, tokio_postgres::Error>>,
    cleared: Option<std::result::Result<(), tokio_postgres::Error>>,
    next: Option<std::result::Result<CopyInSink<Bytes>, tokio_postgres::Error>>,
    types: &[Type],
) -> std::result::Result<BatchEnd, BatchError> {
    let copied = copied?;
    let written = moved.transpose()?.unwrap_or(copied);
    cleared.transpose()?;
    let next = next
        .transpose()?
        .map(|sink| Box::pin(BinaryCopyInWriter::new(sink, types)));
    Ok(BatchEnd { written, next })
}

/// Whether `e` is a unique violation of `D`'s primary key (not of a unique field's
/// index), told by the constraint the server names.
fn primary_key_refused<D: PgDocument>(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error()
            .and_then(|db| db.constraint())
            .is_some_and(|c| unique_field(D::TABLE_NAME, c).is_none())
}

/// Ends a failed bulk insert's transaction: `ROLLBACK` (bounded; past the limit the
/// connection is closed), or, when the connection cannot be trusted to answer in order,
/// closing it.
async fn end_failed(req: &mut Request<'_>, source: &impl AsRef<Connector>, failure: &Failure) {
    if failure.desynced || (req.in_transaction() && within(source, req.rollback()).await.is_none())
    {
        req.mark_lost();
    }
}

/// The error of an insert-only batch refused by the primary key, once its transaction
/// is over: [`Error::Rejected`] naming the ids of `batch` found stored (read on `conn`,
/// which takes a new connection if the last one was closed), or `error` when none is.
async fn name_taken<D: PgDocument>(
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
                .query(D::storage().reads().versions.as_str(), &params)
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

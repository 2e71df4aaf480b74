//! Bulk inserts: many documents of one type written with binary `COPY`, in batches, all
//! in one transaction ([`BulkMode`], [`BulkOptions`]). The documents are prepared like
//! a session's writes (a nil `Uuid` id assigned, the id checked, serialized and checked
//! for what `jsonb` refuses) before anything is sent; insert-only batches are copied
//! straight into the table, the other modes copy each batch into a temporary staging
//! table and move it with one `INSERT ... SELECT ... ON CONFLICT`. The SQL text is in
//! [`crate::tables::documents`] (`BulkSql`).
//!
//! The operation owns its [`Request`]: dropped at any await, the request's guard closes
//! the connection (the server rolls the transaction back), so nothing of it is written
//! and the pool never gets the connection back dirty. Every wait is bounded by the
//! store's request timeout ([`within`]).
//!
//! May use: connection, error map, tables, the storages and leaf helpers.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use marten_core::concurrency::VersionOf;
use marten_core::{DocumentId, Error, Rejection, RejectionKind, Result, TenantId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
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
    /// Documents whose id is stored are skipped (Marten's `IgnoreDuplicatedDocuments`);
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
/// use marten::{BulkMode, BulkOptions};
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
    /// The default batch size (Marten's too).
    pub const DEFAULT_BATCH_SIZE: usize = 1000;

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

/// The rows of a bulk insert, prepared before anything is sent: ids, documents and the
/// version each new row gets (none for a mode without versions).
pub(crate) struct BulkRows<D: PgDocument> {
    ids: Vec<D::Id>,
    docs: Vec<RawJson>,
    versions: Vec<VersionOf<D>>,
}

impl<D: PgDocument> BulkRows<D> {
    /// How many rows there are.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Prepares `docs` for a bulk insert in `mode`: a nil `Uuid` id gets a new version-7
/// uuid, ids are checked, documents serialized and checked (the errors a session's
/// `store` gives), and ids given twice are resolved as the mode says.
pub(crate) fn prepare<D: PgDocument>(
    docs: impl IntoIterator<Item = D>,
    options: BulkOptions,
) -> Result<BulkRows<D>> {
    if options.batch_size == 0 {
        return Err(Error::Configuration(
            "the batch size of a bulk insert must be at least 1".to_owned(),
        ));
    }
    let docs = docs.into_iter();
    let mut rows: Vec<(D::Id, RawJson)> = Vec::with_capacity(docs.size_hint().0);
    for mut doc in docs {
        doc.id_mut()
            .assign_if_empty()
            .map_err(|reason| Error::InvalidId {
                document_type: D::DOCUMENT_TYPE,
                id: doc.id().to_string(),
                reason,
            })?;
        let json = super::serialize(&doc)?;
        rows.push((doc.id().clone(), RawJson(json)));
    }
    let rows = deduplicate::<D>(rows, options.mode)?;
    let mut out = BulkRows {
        ids: Vec::with_capacity(rows.len()),
        docs: Vec::with_capacity(rows.len()),
        versions: Vec::new(),
    };
    for (id, json) in rows {
        out.ids.push(id);
        out.docs.push(json);
        if let Some(v) = <VersionOf<D> as PgVersion>::initial() {
            out.versions.push(v);
        }
    }
    Ok(out)
}

/// Ids given more than once: refused (insert-only), the first kept (ignoring
/// duplicates) or the last kept (overwriting). One statement may not touch a row twice.
fn deduplicate<D: PgDocument>(
    rows: Vec<(D::Id, RawJson)>,
    mode: BulkMode,
) -> Result<Vec<(D::Id, RawJson)>> {
    match mode {
        BulkMode::InsertOnly => {
            let mut seen = HashSet::with_capacity(rows.len());
            let mut twice = Vec::new();
            for (id, _) in &rows {
                if !seen.insert(id) {
                    twice.push(Rejection::new(
                        D::DOCUMENT_TYPE,
                        id.key(),
                        RejectionKind::AlreadyExists,
                    ));
                }
            }
            if twice.is_empty() {
                Ok(rows)
            } else {
                Err(Error::Rejected(twice))
            }
        }
        BulkMode::IgnoreDuplicates => {
            let mut seen = HashSet::with_capacity(rows.len());
            let mut kept = Vec::with_capacity(rows.len());
            for (id, json) in rows {
                if !seen.contains(&id) {
                    seen.insert(id.clone());
                    kept.push((id, json));
                }
            }
            Ok(kept)
        }
        BulkMode::Overwrite => {
            let last: HashMap<D::Id, usize> = rows
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (id.clone(), i))
                .collect();
            if last.len() == rows.len() {
                return Ok(rows);
            }
            Ok(rows
                .into_iter()
                .enumerate()
                .filter(|(i, (id, _))| last.get(id) == Some(i))
                .map(|(_, row)| row)
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

    /// Copies the rows of `batch` with `sql` (into the table, with the tenant of a
    /// conjoined type, or into the staging table, without); returns how many were copied.
    async fn copy(
        &self,
        db: Db<'_>,
        sql: &str,
        batch: Range<usize>,
        with_tenant: bool,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let sink = db.copy_in(sql).await?;
        let writer = BinaryCopyInWriter::new(sink, &self.types(with_tenant));
        let mut writer = std::pin::pin!(writer);
        let rows = self.rows;
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4);
        for i in batch {
            values.clear();
            if with_tenant {
                values.push(&self.tenant);
            }
            values.push(&rows.ids[i]);
            values.push(&rows.docs[i]);
            if let Some(v) = rows.versions.get(i).and_then(PgVersion::param) {
                values.push(v);
            }
            writer.as_mut().write(&values).await?;
        }
        writer.finish().await
    }

    /// Writes one batch; returns how many rows it wrote.
    async fn batch(
        &self,
        db: Db<'_>,
        batch: Range<usize>,
        last: bool,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let sql = D::storage().bulk_sql();
        let move_staged = match self.options.mode {
            BulkMode::InsertOnly => {
                return self
                    .copy(db, &sql.copy_into_table, batch, conjoined::<D>())
                    .await;
            }
            BulkMode::IgnoreDuplicates => &sql.insert_ignoring,
            BulkMode::Overwrite => &sql.insert_overwriting,
        };
        self.copy(db, &sql.copy_into_staging, batch, false).await?;
        let params: Vec<&(dyn ToSql + Sync)> = if conjoined::<D>() {
            vec![&self.tenant]
        } else {
            Vec::new()
        };
        let written = db.execute(move_staged.as_str(), &params).await?;
        if !last {
            db.batch_execute(&sql.clear_staging).await?;
        }
        Ok(written)
    }
}

/// A failure of the writing phase: the error, and for an insert-only batch refused by
/// the primary key, the batch (its ids are looked up once the transaction is over).
struct Failure {
    error: Error,
    taken_ids_in: Option<Range<usize>>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            taken_ids_in: None,
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
            let error = fail(&mut req, source, &plan, failure).await;
            req.settle_error(&error);
            return Err(error);
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
async fn write<D: PgDocument>(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    plan: &Plan<'_, D>,
) -> std::result::Result<u64, Failure> {
    let sql = D::storage().bulk_sql();
    let begin = match plan.options.mode {
        BulkMode::InsertOnly => "BEGIN".to_owned(),
        BulkMode::IgnoreDuplicates | BulkMode::Overwrite => {
            format!("BEGIN; {}", sql.create_staging)
        }
    };
    bounded(req, source, async |db| {
        db.batch_execute(&begin)
            .await
            .map_err(|e| map_db_error(e, plan.writing()))
    })
    .await?;
    let batches: Vec<Range<usize>> = plan.batches().collect();
    let count = batches.len();
    let mut written = 0;
    for (b, batch) in batches.into_iter().enumerate() {
        let answer = bounded(req, source, async |db| {
            Ok(plan.batch(db, batch.clone(), b + 1 == count).await)
        })
        .await?;
        match answer {
            Ok(n) => written += n,
            Err(e) => {
                let taken =
                    plan.options.mode == BulkMode::InsertOnly && primary_key_refused::<D>(&e);
                return Err(Failure {
                    error: map_db_error(e, plan.writing()),
                    taken_ids_in: taken.then_some(batch),
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

/// Whether `e` is a unique violation of `D`'s primary key (not of a unique field's
/// index), told by the constraint the server names.
fn primary_key_refused<D: PgDocument>(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error()
            .and_then(|db| db.constraint())
            .is_some_and(|c| unique_field(D::TABLE_NAME, c).is_none())
}

/// Ends a failed bulk insert's transaction (bounded; past the limit the connection is
/// closed) and returns its error: for an insert-only batch refused by the primary key,
/// [`Error::Rejected`] naming the ids found stored.
async fn fail<D: PgDocument>(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    plan: &Plan<'_, D>,
    failure: Failure,
) -> Error {
    if req.in_transaction() && within(source, req.rollback()).await.is_none() {
        req.mark_lost();
    }
    let Some(batch) = failure.taken_ids_in else {
        return failure.error;
    };
    if req.in_transaction() || req.client().is_closed() {
        return failure.error;
    }
    let ids = &plan.rows.ids[batch];
    let found = bounded(req, source, async |db| {
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
        Ok(_) => failure.error,
        Err(e) => {
            debug!(error = %e, "cannot name the ids a bulk insert found stored");
            failure.error
        }
    }
}

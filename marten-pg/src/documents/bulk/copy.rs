//! Writing a bulk insert: each batch's plan (copy straight into the table, or into a
//! staging table then `INSERT ... ON CONFLICT`), the pipelined `COPY` of its rows, and
//! what a failing batch leaves to explain.

use super::options::{BulkMode, BulkOptions};
use super::refusal::primary_key_refused;
use super::rows::BulkRows;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::join;

use marten_core::concurrency::VersionOf;
use marten_core::{Error, Result};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::CopyInSink;
use tracing::debug;

use crate::connection::{timed_out, within, Connector, Db, Request, Stmt};
use crate::documents::storage::{conjoined, DocumentStorage, PgDocument, PgVersion};
use crate::error_map::{map_db_error, Failed};
use crate::json::RawJson;
use crate::tenant_key::TenantKey;
use crate::PgId;

/// What the batches of a bulk insert need to know.
pub(super) struct Plan<'a, D: PgDocument> {
    pub(super) rows: &'a BulkRows<D>,
    pub(super) options: BulkOptions,
    /// The tenant of a conjoined type's rows.
    pub(super) tenant: Option<TenantKey>,
    pub(super) schema: &'a str,
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
            crate::documents::serialize_into(doc, &mut json.0).map_err(BatchError::Input)?;
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
pub(super) type Writer = Pin<Box<BinaryCopyInWriter>>;

/// What the answers to a batch's end brought: the rows it wrote and the copy of the
/// next batch, if one follows.
pub(super) struct BatchEnd {
    pub(super) written: u64,
    pub(super) next: Option<Writer>,
}

/// Why a batch failed: the database refused it, or a document could not be serialized
/// or stored.
pub(super) enum BatchError {
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
pub(super) struct Failure {
    pub(super) error: Error,
    pub(super) taken_ids_in: Option<Range<usize>>,
    pub(super) desynced: bool,
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
pub(super) async fn bounded<T>(
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

/// The statements of a bulk insert's mode: where rows are copied, whether they carry
/// the tenant, how they move from the staging table, and how the transaction begins.
struct Statements<'a> {
    staged: bool,
    copy: &'a str,
    with_tenant: bool,
    moving: Option<&'a str>,
    clear: &'a str,
    begin: String,
}

impl<'a> Statements<'a> {
    fn of<D: PgDocument>(mode: BulkMode) -> Statements<'static> {
        let sql = D::storage().bulk_sql();
        let staged = mode != BulkMode::InsertOnly;
        Statements {
            staged,
            copy: if staged {
                &sql.copy_into_staging
            } else {
                &sql.copy_into_table
            },
            with_tenant: !staged && conjoined::<D>(),
            moving: match mode {
                BulkMode::InsertOnly => None,
                BulkMode::IgnoreDuplicates => Some(&sql.insert_ignoring),
                BulkMode::Overwrite => Some(&sql.insert_overwriting),
            },
            clear: &sql.clear_staging,
            begin: if staged {
                format!("BEGIN; {}", sql.create_staging)
            } else {
                "BEGIN".to_owned()
            },
        }
    }
}

/// A started bulk insert: the first batch's `COPY` and the prepared move statement.
type Started = (Pin<Box<BinaryCopyInWriter>>, Option<Stmt>);

/// `BEGIN` (with the staging table when the mode needs it) and every batch; the
/// transaction is left open for `COMMIT`.
///
/// Requests are pipelined: `BEGIN` goes with the first batch's `COPY`, and the end of
/// each batch (its `COPY` finished, its rows moved from the staging table, the staging
/// table emptied) with the next batch's `COPY`, so a batch costs one round trip besides
/// its rows. The connection runs requests in the order they are written, and every
/// statement of a batch's end is ready before the first of them is written.
pub(super) async fn write<D: PgDocument>(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    plan: &Plan<'_, D>,
) -> std::result::Result<u64, Failure> {
    let st = Statements::of::<D>(plan.options.mode);
    let types = plan.types(st.with_tenant);
    let (mut writer, moving) = start(req, source, plan, &st, &types).await?;
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
                .write_rows(&mut writer, batch.clone(), st.with_tenant)
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
                match st.staged && !last {
                    true => Some(db.batch_execute(st.clear).await),
                    false => None,
                }
            };
            let next = async {
                match last {
                    true => None,
                    false => Some(db.copy_in(st.copy).await),
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
            Err((error, desynced)) => return Err(batch_failure(plan, error, desynced, batch)),
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

/// Begins the transaction (creating the staging table when the mode needs one), prepares
/// the move statement and starts the first `COPY`, in one round trip.
async fn start<D: PgDocument>(
    req: &mut Request<'_>,
    source: &impl AsRef<Connector>,
    plan: &Plan<'_, D>,
    st: &Statements<'_>,
    types: &[Type],
) -> std::result::Result<Started, Failure> {
    bounded(req, source, async |db| {
        let moving = async {
            match st.moving {
                Some(text) => db.statement(text).await.map(Some),
                None => Ok(None),
            }
        };
        let (began, moving, sink) = join!(db.batch_execute(&st.begin), moving, db.copy_in(st.copy));
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
        Ok(started.map(|(moving, sink)| (Box::pin(BinaryCopyInWriter::new(sink, types)), moving)))
    })
    .await?
}

/// The failure of `batch`: bad input as it is, a database error mapped, naming the
/// batch when an insert-only copy hit an id that is taken.
fn batch_failure<D: PgDocument>(
    plan: &Plan<'_, D>,
    error: BatchError,
    desynced: bool,
    batch: Range<usize>,
) -> Failure {
    match error {
        BatchError::Input(error) => error.into(),
        BatchError::Db(e) => {
            let taken = plan.options.mode == BulkMode::InsertOnly && primary_key_refused::<D>(&e);
            Failure {
                error: map_db_error(e, plan.writing()),
                taken_ids_in: taken.then_some(batch),
                desynced,
            }
        }
    }
}

/// The answers to a batch's end, the first failure first: the copy finished (its row
/// count), the rows moved from the staging table (their count, when the mode stages),
/// the staging table emptied, the next copy started.
/// A refused `COPY` start leaves the connection out of step (see [`Failure`]): the
/// error comes with `true` then.
pub(super) fn batch_end(
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
pub(super) fn ends(
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

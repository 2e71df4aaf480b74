//! [`QueryBatch`]: several typed queries prepared and sent in one flight on the session's
//! connection, then read back through [`BatchItem`] slots of [`BatchResults`]. Uses
//! `spec`, `statement`, `rows`, the crate's `schema` (to create each document table
//! first) and the pipelined statements of `unit_of_work`.

use marten_core::query::{Aggregation, Base, HasFields};
use std::sync::atomic::{AtomicU64, Ordering};

use marten_core::{Error, Result};
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::render::aggregate_expr;
use super::render::Sql;
use super::rows::{decode_aggregate, decode_count, decode_list};
use super::spec::QuerySpec;
use super::QuerySource;
use crate::connection::{Db, Pipeline};
use crate::documents::PgDocument;
use crate::error_map::{map_db_error, Failed};

/// Several queries sent in one round trip: add them, `execute`, then take each result.
pub struct QueryBatch<'s, S: QuerySource> {
    session: &'s mut S,
    /// This batch's number: its slots and results carry it (see [`BatchResults::get`]).
    id: u64,
    statements: Vec<Batched>,
    /// The first query that could not be added (a conjoined type without a tenant):
    /// `execute` fails with it before anything is sent.
    refused: Option<marten_core::Error>,
}

/// The number of the next batch made in this process.
static NEXT_BATCH: AtomicU64 = AtomicU64::new(0);

/// A batched statement: its text and parameters, the document type it reads and how to
/// create that type's table.
struct Batched {
    sql: Sql,
    type_id: std::any::TypeId,
    migrate: crate::schema::MigrateFn,
    document_type: &'static str,
}

/// A result slot of a [`QueryBatch`].
#[must_use]
pub struct BatchItem<T> {
    batch: u64,
    index: usize,
    decode: fn(&[tokio_postgres::Row]) -> Result<T>,
}

/// The rows of an executed [`QueryBatch`].
pub struct BatchResults {
    batch: u64,
    rows: Vec<Vec<tokio_postgres::Row>>,
}

impl BatchResults {
    /// The result of one query of the batch. A slot of another batch (whose position
    /// here would hold another query's rows) is [`Error::InvalidQuery`].
    pub fn get<T>(&self, item: BatchItem<T>) -> Result<T> {
        let rows = (item.batch == self.batch)
            .then(|| self.rows.get(item.index))
            .flatten()
            .ok_or_else(|| {
                Error::InvalidQuery(
                    "a result slot of another batch: take each BatchItem from the results of \
                     the batch that returned it"
                        .to_owned(),
                )
            })?;
        (item.decode)(rows)
    }
}

impl<'s, S: QuerySource> QueryBatch<'s, S> {
    pub(crate) fn new(session: &'s mut S) -> Self {
        QueryBatch {
            session,
            id: NEXT_BATCH.fetch_add(1, Ordering::Relaxed),
            statements: Vec::new(),
            refused: None,
        }
    }

    /// Scopes `spec` to the session's tenant, remembering the first refusal.
    fn scoped<D: PgDocument + HasFields>(&mut self, spec: &mut QuerySpec<D>) {
        let (store, _) = self.session.source();
        if let Err(e) = spec.scope_to(store) {
            self.refused.get_or_insert(e);
        }
    }

    /// Adds a query returning its matches.
    pub fn list<D: PgDocument + HasFields>(&mut self, mut spec: QuerySpec<D>) -> BatchItem<Vec<D>> {
        self.scoped(&mut spec);
        self.push::<D, _>(spec.select(true), decode_list::<D>)
    }

    /// Adds a query returning the number of matches.
    pub fn count<D: PgDocument + HasFields>(&mut self, mut spec: QuerySpec<D>) -> BatchItem<i64> {
        self.scoped(&mut spec);
        self.push::<D, _>(spec.count_sql(), decode_count::<D>)
    }

    /// Adds an aggregate of the query's matches (`|f| f.total.sum()`, see
    /// [`Query::aggregate`](super::Query::aggregate)).
    pub fn aggregate<D: PgDocument + HasFields, Out: serde::de::DeserializeOwned>(
        &mut self,
        mut spec: QuerySpec<D>,
        f: impl FnOnce(D::Fields<D>) -> Aggregation<D, Out>,
    ) -> BatchItem<Out> {
        self.scoped(&mut spec);
        let agg = f(D::fields_at(Base::root()));
        let expr = aggregate_expr(agg.op, &agg.path, agg.kind);
        self.push::<D, _>(spec.aggregate_sql(&expr), decode_aggregate::<D, Out>)
    }

    /// Adds a statement on documents of type `D`; its slot decodes the rows with `decode`.
    fn push<D: PgDocument, T>(
        &mut self,
        sql: Sql,
        decode: fn(&[tokio_postgres::Row]) -> Result<T>,
    ) -> BatchItem<T> {
        self.statements.push(Batched {
            sql,
            type_id: std::any::TypeId::of::<D>(),
            migrate: crate::documents::migrate_fn::<D>(),
            document_type: D::DOCUMENT_TYPE,
        });
        BatchItem {
            batch: self.id,
            index: self.statements.len() - 1,
            decode,
        }
    }

    /// Sends every query in one flight and reads the results back.
    pub async fn execute(self) -> Result<BatchResults> {
        if let Some(e) = self.refused {
            return Err(e);
        }
        for b in &self.statements {
            b.sql.check()?;
        }
        let (store, conn) = self.session.source();
        let span = crate::trace::query(store.schema(), "(batch)");
        span.record("marten.statements", self.statements.len());
        crate::trace::fingerprint(&span, self.statements.iter().map(|b| b.sql.text.as_str()));
        let statements = &self.statements;
        let rows = async {
            for b in statements {
                store.ensure_erased_in(conn, b.type_id, b.migrate).await?;
            }
            conn.read(store, async |client| run_batch(client, statements).await)
                .await
        }
        .instrument(span)
        .await?;
        Ok(BatchResults {
            batch: self.id,
            rows,
        })
    }
}

/// Prepares and sends a batch's statements in one flight; every result in order. An
/// error names the document type of the query that failed.
async fn run_batch(
    client: Db<'_>,
    statements: &[Batched],
) -> Result<Vec<Vec<tokio_postgres::Row>>> {
    let mut prepared = Vec::with_capacity(statements.len());
    for b in statements {
        prepared.push(
            client
                .statement(&b.sql.text)
                .await
                .map_err(|e| map_db_error(e, Failed::Reading(b.document_type)))?,
        );
    }
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = statements.iter().map(|b| b.sql.refs()).collect();
    let mut pipe = Pipeline::new(client, prepared.len());
    let handles: Vec<_> = (prepared.iter().zip(&params))
        .map(|(statement, p)| pipe.query(statement, p))
        .collect();
    let mut answers = pipe.send().await;
    let mut rows = Vec::with_capacity(handles.len());
    for (handle, b) in handles.into_iter().zip(statements) {
        let answer = answers.take(handle);
        rows.push(answer.map_err(|e| map_db_error(e, Failed::Reading(b.document_type)))?);
    }
    Ok(rows)
}

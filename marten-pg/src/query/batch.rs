//! [`QueryBatch`]: several typed queries prepared and sent in one flight on the session's
//! connection, then read back through [`BatchItem`] slots of [`BatchResults`]. Uses
//! `spec`, `statement`, `rows`, the crate's `schema` (to create each document table
//! first) and the pipelined statements of `unit_of_work`.

use marten_core::query::{Aggregation, Base, HasFields};
use marten_core::Result;
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
    statements: Vec<(Sql, MigrateDoc)>,
    /// The first query that could not be added (a conjoined type without a tenant):
    /// `execute` fails with it before anything is sent.
    refused: Option<marten_core::Error>,
}

/// The document type a batched statement reads, and how to create its table.
type MigrateDoc = (std::any::TypeId, crate::schema::MigrateFn);

/// A result slot of a [`QueryBatch`].
#[must_use]
pub struct BatchItem<T> {
    index: usize,
    decode: fn(&[tokio_postgres::Row]) -> Result<T>,
}

/// The rows of an executed [`QueryBatch`].
pub struct BatchResults {
    rows: Vec<Vec<tokio_postgres::Row>>,
}

impl BatchResults {
    /// The result of one query of the batch.
    pub fn get<T>(&self, item: BatchItem<T>) -> Result<T> {
        (item.decode)(self.rows.get(item.index).map_or(&[], Vec::as_slice))
    }
}

impl<'s, S: QuerySource> QueryBatch<'s, S> {
    pub(crate) fn new(session: &'s mut S) -> Self {
        QueryBatch {
            session,
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
        let doc = (
            std::any::TypeId::of::<D>(),
            crate::documents::migrate_fn::<D>(),
        );
        self.statements.push((sql, doc));
        BatchItem {
            index: self.statements.len() - 1,
            decode,
        }
    }

    /// Sends every query in one flight and reads the results back.
    pub async fn execute(self) -> Result<BatchResults> {
        if let Some(e) = self.refused {
            return Err(e);
        }
        for (sql, _) in &self.statements {
            sql.check()?;
        }
        let (store, conn) = self.session.source();
        let span = crate::trace::query(store.schema(), "(batch)");
        span.record("marten.statements", self.statements.len());
        crate::trace::fingerprint(&span, self.statements.iter().map(|(s, _)| s.text.as_str()));
        let statements = &self.statements;
        let rows = async {
            for (_, (type_id, migrate)) in statements {
                store.ensure_erased_in(conn, *type_id, *migrate).await?;
            }
            conn.read(store, async |client| run_batch(client, statements).await)
                .await
        }
        .instrument(span)
        .await?;
        Ok(BatchResults { rows })
    }
}

/// Prepares and sends a batch's statements in one flight; every result in order.
async fn run_batch(
    client: Db<'_>,
    statements: &[(Sql, MigrateDoc)],
) -> Result<Vec<Vec<tokio_postgres::Row>>> {
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, _) in statements {
        prepared.push(
            client
                .statement(&sql.text)
                .await
                .map_err(|e| map_db_error(e, Failed::Other("preparing a batched query")))?,
        );
    }
    let params: Vec<Vec<&(dyn ToSql + Sync)>> =
        statements.iter().map(|(sql, _)| sql.refs()).collect();
    let mut pipe = Pipeline::new(client, prepared.len());
    let handles: Vec<_> = (prepared.iter().zip(&params))
        .map(|(statement, p)| pipe.query(statement, p))
        .collect();
    let mut answers = pipe.send().await;
    let mut rows = Vec::with_capacity(handles.len());
    for handle in handles {
        let answer = answers.take(handle);
        rows.push(answer.map_err(|e| map_db_error(e, Failed::Other("running a batched query")))?);
    }
    Ok(rows)
}

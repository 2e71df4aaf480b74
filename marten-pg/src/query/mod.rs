//! Typed document queries: `session.query::<T>()`.

mod render;

use std::marker::PhantomData;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use marten_core::query::{Filter, HasFields, Order, RawParam};
use marten_core::{Error, Result};

use crate::documents::PgDocument;
use crate::error_map::{map_db_error, Failed};
use crate::json::JsonRef;
use crate::session::QuerySource;
pub(crate) use render::Sql;

/// A page of results with the total count of matches.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Page<D> {
    /// The documents of this page.
    pub items: Vec<D>,
    /// How many documents match in all.
    pub total: i64,
}

/// The definition of a query on documents of type `D`, without a session: filters,
/// order, skip and take. [`Query`] runs one on a session; [`QueryBatch`] runs several in
/// one round trip.
#[must_use]
pub struct QuerySpec<D> {
    filters: Vec<Filter<D>>,
    orders: Vec<Order<D>>,
    skip: Option<usize>,
    take: Option<usize>,
    /// Each row also carries the total number of matches, and a page past the last
    /// match is one row with a NULL document (see [`Query::to_page`]).
    with_total: bool,
}

impl<D> Default for QuerySpec<D> {
    fn default() -> Self {
        QuerySpec {
            filters: Vec::new(),
            orders: Vec::new(),
            skip: None,
            take: None,
            with_total: false,
        }
    }
}

/// A skip or take as the `bigint` PostgreSQL takes; beyond `i64::MAX` it means the same.
fn row_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<D: PgDocument + HasFields> QuerySpec<D> {
    /// An empty query (every document).
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps documents matching the filter built from `D`'s field paths. Several calls
    /// combine with AND.
    pub fn filter(mut self, f: impl FnOnce(D::Fields<D>) -> Filter<D>) -> Self {
        self.filters
            .push(f(D::fields_at(marten_core::query::Base::root())));
        self
    }

    /// Keeps documents matching a filter built beforehand.
    pub fn where_filter(mut self, filter: Filter<D>) -> Self {
        self.filters.push(filter);
        self
    }

    /// A raw SQL condition, parameterized with `$1..` (numbered within the fragment; cast
    /// each to its type, e.g. `$1::bigint`, matching the [`RawParam`] given). The document
    /// is `d.data` (`jsonb`), its id `d.id`.
    pub fn where_sql(mut self, sql: impl Into<String>, params: Vec<RawParam>) -> Self {
        self.filters.push(Filter::raw(sql, params));
        self
    }

    /// Sorts by a field (`|f| f.name.asc()`); several calls sort by each in turn. Ties are
    /// broken by id.
    pub fn order_by(mut self, f: impl FnOnce(D::Fields<D>) -> Order<D>) -> Self {
        self.orders
            .push(f(D::fields_at(marten_core::query::Base::root())));
        self
    }

    /// Skips the first `n` matches.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = Some(n);
        self
    }

    /// Returns at most `n` matches.
    pub fn take(mut self, n: usize) -> Self {
        self.take = Some(n);
        self
    }

    fn where_clause(&self, sql: &mut Sql) -> String {
        let parts: Vec<String> = self
            .filters
            .iter()
            .map(|f| render::render(f.node(), "d.data", true, sql, 0))
            .collect();
        if parts.is_empty() {
            "TRUE".to_owned()
        } else {
            parts.join(" AND ")
        }
    }

    /// The query's SQL: rows of `data, id` (or `data, total, id` with the total); a query
    /// with an invalid raw fragment carries why (see [`Sql::check`]).
    fn select(&self, paged: bool) -> Sql {
        let mut sql = Sql::default();
        let wh = self.where_clause(&mut sql);
        // (expression, direction) of each sort key, the id breaking ties.
        let mut keys: Vec<(String, &str)> = self
            .orders
            .iter()
            .map(|o| {
                let e = render::typed_expr("d.data", true, &o.path, o.kind);
                let dir = if o.descending {
                    "DESC NULLS LAST"
                } else {
                    "ASC NULLS FIRST"
                };
                (e, dir)
            })
            .collect();
        keys.push(("d.id".to_owned(), "ASC"));
        let mut limits = String::new();
        if paged {
            if let Some(n) = self.take {
                let p = sql.param(Box::new(row_count(n)));
                limits.push_str(&format!(" LIMIT {p}"));
            }
            if let Some(n) = self.skip {
                let p = sql.param(Box::new(row_count(n)));
                limits.push_str(&format!(" OFFSET {p}"));
            }
        }
        let table = D::TABLE_NAME;
        sql.text = if self.with_total {
            // The count and the page in one statement that always returns a row, so a
            // page past the last match still reports the total. The page's sort keys are
            // selected (k0, k1, ..) to order the joined rows the same way.
            let inner: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, (e, _))| format!("{e} AS k{i}"))
                .collect();
            let outer: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, (_, dir))| format!("p.k{i} {dir}"))
                .collect();
            let inner_order: Vec<String> = (0..keys.len())
                .map(|i| format!("k{i} {}", keys[i].1))
                .collect();
            format!(
                "SELECT p.data, c.total, p.id FROM (SELECT count(*) AS total FROM {table} d WHERE {wh}) c \
                 LEFT JOIN LATERAL (SELECT d.data AS data, d.id AS id, {} FROM {table} d WHERE {wh} ORDER BY {}{limits}) p ON true \
                 ORDER BY {}",
                inner.join(", "),
                inner_order.join(", "),
                outer.join(", ")
            )
        } else {
            let order: Vec<String> = keys.iter().map(|(e, dir)| format!("{e} {dir}")).collect();
            format!(
                "SELECT d.data, d.id FROM {table} d WHERE {wh} ORDER BY {}{limits}",
                order.join(", ")
            )
        };
        sql
    }

    fn count_sql(&self) -> Sql {
        let mut sql = Sql::default();
        let wh = self.where_clause(&mut sql);
        sql.text = format!("SELECT count(*) FROM {} d WHERE {wh}", D::TABLE_NAME);
        sql
    }

    /// The SQL this query runs (for `EXPLAIN` and logs). A query whose raw fragment is
    /// invalid fails when run, with [`Error::InvalidQuery`].
    pub fn to_sql(&self) -> String {
        self.select(true).text
    }
}

/// A query on documents of type `D`, built with typed filters and run on a session.
#[must_use]
pub struct Query<'s, S: QuerySource, D> {
    session: &'s mut S,
    spec: QuerySpec<D>,
    _d: PhantomData<fn() -> D>,
}

fn reading<D: PgDocument>(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE))
}

/// Decodes the document of a result row whose id is in column `id_column`; a document
/// that does not deserialize is [`Error::Deserialize`] naming its id.
fn decode_at<D: PgDocument>(row: &tokio_postgres::Row, id_column: usize) -> Result<D> {
    let json: JsonRef<'_> = row.try_get(0).map_err(reading::<D>)?;
    serde_json::from_slice(json.0).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: match row.try_get::<_, D::Id>(id_column) {
            Ok(id) => id.to_string(),
            Err(_) => "(unknown id)".to_owned(),
        },
        source,
    })
}

/// Decodes a row of a query without the total (`data, id`).
fn decode<D: PgDocument>(row: &tokio_postgres::Row) -> Result<D> {
    decode_at::<D>(row, 1)
}

impl<'s, S: QuerySource, D: PgDocument + HasFields> Query<'s, S, D> {
    pub(crate) fn new(session: &'s mut S) -> Self {
        Query {
            session,
            spec: QuerySpec::default(),
            _d: PhantomData,
        }
    }

    /// See [`QuerySpec::filter`].
    pub fn filter(mut self, f: impl FnOnce(D::Fields<D>) -> Filter<D>) -> Self {
        self.spec = self.spec.filter(f);
        self
    }

    /// See [`QuerySpec::where_filter`].
    pub fn where_filter(mut self, filter: Filter<D>) -> Self {
        self.spec = self.spec.where_filter(filter);
        self
    }

    /// See [`QuerySpec::where_sql`].
    pub fn where_sql(mut self, sql: impl Into<String>, params: Vec<RawParam>) -> Self {
        self.spec = self.spec.where_sql(sql, params);
        self
    }

    /// See [`QuerySpec::order_by`].
    pub fn order_by(mut self, f: impl FnOnce(D::Fields<D>) -> Order<D>) -> Self {
        self.spec = self.spec.order_by(f);
        self
    }

    /// Skips the first `n` matches.
    pub fn skip(mut self, n: usize) -> Self {
        self.spec.skip = Some(n);
        self
    }

    /// Returns at most `n` matches.
    pub fn take(mut self, n: usize) -> Self {
        self.spec.take = Some(n);
        self
    }

    /// The SQL this query runs (for `EXPLAIN` and logs).
    pub fn to_sql(&self) -> String {
        self.spec.to_sql()
    }

    async fn rows(self) -> Result<Vec<tokio_postgres::Row>> {
        let sql = self.spec.select(true).checked()?;
        self.fetch(sql).await
    }

    /// Runs `sql` on the session's connection and returns its rows.
    async fn fetch(self, sql: render::Sql) -> Result<Vec<tokio_postgres::Row>> {
        let (store, conn) = self.session.source();
        store.ensure::<D>().await?;
        conn.run(store, async |client| {
            let stmt = client
                .prepare_cached(&sql.text)
                .await
                .map_err(reading::<D>)?;
            let refs = sql.refs();
            client.query(&stmt, &refs).await.map_err(reading::<D>)
        })
        .await
    }

    /// All matches.
    pub async fn to_list(self) -> Result<Vec<D>> {
        let rows = self.rows().await?;
        rows.iter().map(decode::<D>).collect()
    }

    /// The first match, if any.
    pub async fn first(mut self) -> Result<Option<D>> {
        self.spec.take = Some(1);
        Ok(self.to_list().await?.into_iter().next())
    }

    /// The only match: `Ok(None)` for none, [`Error::NotSingle`] for more than one.
    pub async fn single(mut self) -> Result<Option<D>> {
        self.spec.take = Some(2);
        let mut found = self.to_list().await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Error::NotSingle {
                document_type: D::DOCUMENT_TYPE,
            }),
        }
    }

    /// How many documents match.
    pub async fn count(self) -> Result<i64> {
        let sql = self.spec.count_sql().checked()?;
        let rows = self.fetch(sql).await?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(reading::<D>),
            None => Err(Error::CorruptData {
                owner: D::DOCUMENT_TYPE.to_owned(),
                id: None,
                detail: "a count returned no row".to_owned(),
            }),
        }
    }

    /// Whether any document matches.
    pub async fn exists(self) -> Result<bool> {
        Ok(self.first().await?.is_some())
    }

    /// One page of matches (`page` from 0) and the total number of matches, in one query.
    /// A page past the last match is empty and still has the total; a page so far that
    /// `page * page_size` overflows is past the last match.
    pub async fn to_page(mut self, page: usize, page_size: usize) -> Result<Page<D>> {
        self.spec.skip = Some(page.saturating_mul(page_size));
        self.spec.take = Some(page_size);
        self.spec.with_total = true;
        let rows = self.rows().await?;
        let total = match rows.first() {
            Some(r) => r.try_get(1).map_err(reading::<D>)?,
            None => 0,
        };
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of an empty page has no document.
            let data: Option<JsonRef<'_>> = row.try_get(0).map_err(reading::<D>)?;
            if data.is_some() {
                items.push(decode_at::<D>(row, 2)?);
            }
        }
        Ok(Page { items, total })
    }

    /// Streams the matches, decoding each row as it arrives instead of collecting them.
    pub async fn stream(self) -> Result<BoxStream<'s, Result<D>>> {
        let sql = self.spec.select(true).checked()?;
        let session = self.session;
        let (store, conn) = session.source();
        store.ensure::<D>().await?;
        let req = conn.request(store).await?;
        let starting = async {
            let stmt = req
                .client()
                .prepare_cached(&sql.text)
                .await
                .map_err(reading::<D>)?;
            req.client()
                .query_raw(&stmt, sql.refs())
                .await
                .map_err(reading::<D>)
        };
        let Some(started) = crate::connection::within(store, starting).await else {
            drop(req);
            return Err(crate::connection::timed_out(store));
        };
        let rows = match started {
            Ok(rows) => rows,
            Err(e) => {
                req.settle_error(&e);
                return Err(e);
            }
        };
        // The request lasts as long as the stream: read to its end, it is finished; dropped
        // early, the connection is closed (and what still runs on it cancelled).
        let stream =
            futures_util::stream::unfold(Some((req, Box::pin(rows))), |state| async move {
                let (req, mut rows) = state?;
                match rows.next().await {
                    Some(Ok(row)) => Some((decode::<D>(&row), Some((req, rows)))),
                    Some(Err(e)) => {
                        let e = reading::<D>(e);
                        req.settle_error(&e);
                        Some((Err(e), None))
                    }
                    None => {
                        req.finish();
                        None
                    }
                }
            });
        Ok(stream.boxed())
    }
}

/// Several queries sent in one round trip: add them, `execute`, then take each result.
pub struct QueryBatch<'s, S: QuerySource> {
    session: &'s mut S,
    statements: Vec<(Sql, MigrateDoc)>,
}

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

fn decode_list<D: PgDocument>(rows: &[tokio_postgres::Row]) -> Result<Vec<D>> {
    rows.iter().map(decode::<D>).collect()
}

fn decode_count<D: PgDocument>(rows: &[tokio_postgres::Row]) -> Result<i64> {
    match rows.first() {
        Some(r) => r.try_get(0).map_err(reading::<D>),
        None => Ok(0),
    }
}

impl<'s, S: QuerySource> QueryBatch<'s, S> {
    pub(crate) fn new(session: &'s mut S) -> Self {
        QueryBatch {
            session,
            statements: Vec::new(),
        }
    }

    /// Adds a query returning its matches.
    pub fn list<D: PgDocument + HasFields>(&mut self, spec: QuerySpec<D>) -> BatchItem<Vec<D>> {
        self.statements.push((
            spec.select(true),
            (
                std::any::TypeId::of::<D>(),
                crate::schema::migrate_fn::<D>(),
            ),
        ));
        BatchItem {
            index: self.statements.len() - 1,
            decode: decode_list::<D>,
        }
    }

    /// Adds a query returning the number of matches.
    pub fn count<D: PgDocument + HasFields>(&mut self, spec: QuerySpec<D>) -> BatchItem<i64> {
        self.statements.push((
            spec.count_sql(),
            (
                std::any::TypeId::of::<D>(),
                crate::schema::migrate_fn::<D>(),
            ),
        ));
        BatchItem {
            index: self.statements.len() - 1,
            decode: decode_count::<D>,
        }
    }

    /// Sends every query in one flight and reads the results back.
    pub async fn execute(self) -> Result<BatchResults> {
        for (sql, _) in &self.statements {
            sql.check()?;
        }
        let (store, conn) = self.session.source();
        for (_, (type_id, migrate)) in &self.statements {
            store.ensure_erased(*type_id, *migrate).await?;
        }
        let statements = &self.statements;
        let rows = conn
            .run(store, async |client| run_batch(client, statements).await)
            .await?;
        Ok(BatchResults { rows })
    }
}

/// Prepares and sends a batch's statements in one flight; every result in order.
async fn run_batch(
    client: &deadpool_postgres::Object,
    statements: &[(Sql, MigrateDoc)],
) -> Result<Vec<Vec<tokio_postgres::Row>>> {
    {
        let mut prepared = Vec::with_capacity(statements.len());
        for (sql, _) in statements {
            prepared.push(
                client
                    .prepare_cached(&sql.text)
                    .await
                    .map_err(|e| map_db_error(e, Failed::Other("preparing a batched query")))?,
            );
        }
        let params: Vec<Vec<&(dyn tokio_postgres::types::ToSql + Sync)>> =
            statements.iter().map(|(sql, _)| sql.refs()).collect();
        let c: &tokio_postgres::Client = client;
        let flight: Vec<crate::unit_of_work::StatementFuture<'_>> = prepared
            .iter()
            .zip(&params)
            .map(|(stmt, p)| {
                Box::pin(c.query(stmt, p.as_slice())) as crate::unit_of_work::StatementFuture<'_>
            })
            .collect();
        let mut rows = Vec::with_capacity(flight.len());
        for result in crate::unit_of_work::join_in_order(flight).await {
            rows.push(
                result.map_err(|e| map_db_error(e, Failed::Other("running a batched query")))?,
            );
        }
        Ok(rows)
    }
}

//! [`Query`]: a [`QuerySpec`] run on a session — its builder methods, and `to_list`,
//! `first`, `single`, `count`, `exists`, `to_page` (with [`Page`]), `stream` (rows
//! decoded as they arrive, the connection's request held as long as the stream lives),
//! and the aggregates of the matches (`aggregate`, `sum`, `avg`, `min`, `max`,
//! `count_distinct`) and selections of fields (`select`, `select_into`, run by
//! [`Selected`]); in this module so that compiler messages name them `Query::sum`.
//! Uses `spec`, `statement`, `rows`, `render`, the session's [`QuerySource`] and the
//! crate's `connection` timeouts.

use std::marker::PhantomData;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use marten_core::query::{
    Aggregation, Base, Comparable, Field, Filter, FullTextSearch, HasFields, NumericField, Order,
    Orderable, Selection,
};
use marten_core::{Error, Result, SoftDeleted};
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::include::Including;
use super::params::SqlParams;
use super::render::Sql;
use super::render::{aggregate_expr, shape_expr, shared_key, Shape};
use super::rows::{decode, decode_aggregate, decode_at, reading};
use super::select::Selected;
use super::spec::QuerySpec;
use super::QuerySource;
use crate::connection::Conn;
use crate::documents::PgDocument;
use crate::json::JsonRef;
use crate::store::DocumentStore;

/// A page of results with the total count of matches.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Page<D> {
    /// The documents of this page.
    pub items: Vec<D>,
    /// How many documents match in all.
    pub total: i64,
}

/// A query on documents of type `D`, built with typed filters and run on a session.
#[must_use]
pub struct Query<'s, S: QuerySource, D> {
    pub(super) session: &'s mut S,
    pub(super) spec: QuerySpec<D>,
    _d: PhantomData<fn() -> D>,
}

impl<'s, S: QuerySource, D: PgDocument + HasFields> Query<'s, S, D> {
    pub(crate) fn new(session: &'s mut S) -> Self {
        Query {
            session,
            spec: QuerySpec {
                gin: D::GIN_INDEX,
                ..QuerySpec::default()
            },
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
    pub fn where_sql(mut self, sql: impl Into<String>, params: impl SqlParams) -> Self {
        self.spec = self.spec.where_sql(sql, params);
        self
    }

    /// See [`QuerySpec::search`]: every word of `text`, stemmed (`#[document(full_text)]`).
    pub fn search(mut self, text: impl Into<String>) -> Self
    where
        D: FullTextSearch,
    {
        self.spec = self.spec.search(text);
        self
    }

    /// See [`QuerySpec::phrase_search`]: the words of `text` next to each other, in order.
    pub fn phrase_search(mut self, text: impl Into<String>) -> Self
    where
        D: FullTextSearch,
    {
        self.spec = self.spec.phrase_search(text);
        self
    }

    /// See [`QuerySpec::web_search`]: `text` in search-engine syntax (`"a phrase" -word`).
    pub fn web_search(mut self, text: impl Into<String>) -> Self
    where
        D: FullTextSearch,
    {
        self.spec = self.spec.web_search(text);
        self
    }

    /// See [`QuerySpec::order_by_rank`]: the most relevant matches of the searches first.
    pub fn order_by_rank(mut self) -> Self
    where
        D: FullTextSearch,
    {
        self.spec = self.spec.order_by_rank();
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

    /// See [`QuerySpec::include_deleted`].
    pub fn include_deleted(mut self) -> Self
    where
        D: SoftDeleted,
    {
        self.spec = self.spec.include_deleted();
        self
    }

    /// See [`QuerySpec::only_deleted`].
    pub fn only_deleted(mut self) -> Self
    where
        D: SoftDeleted,
    {
        self.spec = self.spec.only_deleted();
        self
    }

    /// The SQL this query runs (for `EXPLAIN` and logs).
    pub fn to_sql(&self) -> String {
        self.spec.to_sql()
    }

    /// Scopes the query to the session's tenant (see [`QuerySpec::scope_to`]).
    pub(super) fn scoped(&mut self) -> Result<()> {
        let (store, _) = self.session.source();
        self.spec.scope_to(store)
    }

    pub(super) async fn rows(mut self) -> Result<Vec<tokio_postgres::Row>> {
        self.scoped()?;
        let sql = self.spec.select(true).checked()?;
        self.fetch(sql).await
    }

    /// Runs `sql` on the session's connection and returns its rows.
    async fn fetch(self, sql: Sql) -> Result<Vec<tokio_postgres::Row>> {
        let (store, conn) = self.session.source();
        fetch::<D>(store, conn, &sql.text, &sql.refs()).await
    }

    /// All matches.
    pub async fn to_list(self) -> Result<Vec<D>> {
        let rows = self.rows().await?;
        rows.iter().map(decode::<D>).collect()
    }

    /// The first match, if any.
    pub async fn first(mut self) -> Result<Option<D>> {
        self.spec.at_most(1);
        Ok(self.to_list().await?.into_iter().next())
    }

    /// The only match: `Ok(None)` for none, [`Error::NotSingle`] for more than one.
    pub async fn single(mut self) -> Result<Option<D>> {
        self.spec.at_most(2);
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
    pub async fn count(mut self) -> Result<i64> {
        self.scoped()?;
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

    /// Whether any document matches: one row is read, not decoded (a match that no
    /// longer deserializes still exists).
    pub async fn exists(mut self) -> Result<bool> {
        self.spec.at_most(1);
        Ok(!self.rows().await?.is_empty())
    }

    /// One page of matches (`page` from 0) and the total number of matches, in one query.
    /// A page past the last match is empty and still has the total; a page so far that
    /// `page * page_size` overflows is past the last match.
    pub async fn to_page(mut self, page: usize, page_size: usize) -> Result<Page<D>> {
        self.spec.skip = Some(page.saturating_mul(page_size));
        self.spec.take = Some(page_size);
        self.spec.with_total = true;
        let rows = self.rows().await?;
        decode_page(&rows)
    }

    /// Streams the matches, decoding each row as it arrives instead of collecting them.
    pub async fn stream(mut self) -> Result<BoxStream<'s, Result<D>>> {
        self.scoped()?;
        let sql = self.spec.select(true).checked()?;
        let session = self.session;
        let (store, conn) = session.source();
        let span = crate::trace::query(store.schema(), D::DOCUMENT_TYPE);
        crate::trace::fingerprint(&span, [sql.text.as_str()]);
        let opening = async {
            store.ensure_in::<D>(conn).await?;
            let req = conn.read_request(store).await?;
            let starting = async {
                let stmt = req
                    .client()
                    .statement(&sql.text)
                    .await
                    .map_err(reading::<D>)?;
                req.client()
                    .query_raw(&stmt, &sql.refs())
                    .await
                    .map_err(reading::<D>)
            };
            let Some(started) = crate::connection::within(store, starting).await else {
                drop(req);
                return Err(crate::connection::timed_out(store));
            };
            match started {
                Ok(rows) => Ok((req, rows)),
                Err(e) => {
                    req.settle_error(&e);
                    Err(e)
                }
            }
        };
        let (req, rows) = opening.instrument(span).await?;
        // The request lasts as long as the stream: read to its end, it is finished; dropped
        // early, the connection is closed (and what still runs on it cancelled). Each row
        // is waited for at most the request timeout (the time the caller spends between
        // rows does not count); a row that does not come ends the stream with
        // `Error::Timeout`, and the connection is closed.
        let state = Some((store, req, Box::pin(rows)));
        let stream = futures_util::stream::unfold(state, |state| async move {
            let (store, mut req, mut rows) = state?;
            let Some(next) = crate::connection::within(store, rows.next()).await else {
                req.mark_lost();
                drop(req);
                return Some((Err(crate::connection::timed_out(store)), None));
            };
            match next {
                Some(Ok(row)) => Some((decode::<D>(&row), Some((store, req, rows)))),
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

    // ---- aggregates of the matches (one statement, one row) ----

    /// Computes an aggregate of the matches (`|f| f.total.sum()`); skip, take and order
    /// do not apply. `None` (for `sum`, `avg`, `min`, `max`) when no match has a value.
    pub async fn aggregate<Out: DeserializeOwned>(
        mut self,
        f: impl FnOnce(D::Fields<D>) -> Aggregation<D, Out>,
    ) -> Result<Out> {
        let agg = f(D::fields_at(Base::root()));
        self.scoped()?;
        let expr = aggregate_expr(agg.op, &agg.path, agg.kind);
        let sql = self.spec.aggregate_sql(&expr).checked()?;
        let rows = self.fetch(sql).await?;
        decode_aggregate::<D, Out>(&rows)
    }

    /// The sum of a numeric field over the matches (`None` when none has a value).
    pub async fn sum<T: NumericField>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Field<D, T>,
    ) -> Result<Option<T::Sum>> {
        self.aggregate(|fields| f(fields).sum()).await
    }

    /// The mean of a numeric field over the matches (`None` when none has a value).
    pub async fn avg<T: NumericField>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Field<D, T>,
    ) -> Result<Option<f64>> {
        self.aggregate(|fields| f(fields).avg()).await
    }

    /// The least value of a field over the matches (`None` without any).
    pub async fn min<T: Orderable + DeserializeOwned + Clone>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Field<D, T>,
    ) -> Result<Option<T>> {
        self.aggregate(|fields| f(fields).min()).await
    }

    /// The greatest value of a field over the matches (`None` without any).
    pub async fn max<T: Orderable + DeserializeOwned + Clone>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Field<D, T>,
    ) -> Result<Option<T>> {
        self.aggregate(|fields| f(fields).max()).await
    }

    /// How many distinct values a field has over the matches (`None` of an `Option`
    /// field is no value).
    pub async fn count_distinct<T: Comparable>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Field<D, T>,
    ) -> Result<i64> {
        self.aggregate(|fields| f(fields).count_distinct()).await
    }

    // ---- documents the matches refer to (see `include`) ----

    /// Also loads the documents of type `I` whose ids the matches hold in a field
    /// (`|f| f.customer_id`, a field of `I`'s id type), in the same statement:
    /// [`to_list`](Including::to_list) returns the matches and the included documents by
    /// id.
    pub fn include<I: PgDocument>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Field<D, I::Id>,
    ) -> Including<'s, S, D, I> {
        let path = f(D::fields_at(Base::root())).path().clone();
        Including::new(self, path)
    }

    // ---- selections of fields (see `select`) ----

    /// Returns the chosen fields of each match instead of the document: one field
    /// (`|f| f.name`, read as its type) or a tuple of up to eight (`|f| (f.name,
    /// f.total)`, read as a tuple).
    pub fn select<Sel: Selection<D>>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Sel,
    ) -> Selected<'s, S, D, Sel::Output> {
        let sel = f(D::fields_at(Base::root()));
        let shape = if Sel::SINGLE {
            Shape::Single
        } else {
            Shape::Array
        };
        self.shaped(shape_expr(&sel.paths(), shape))
    }

    /// Returns each match as an `Out` deserialized from an object of the chosen fields
    /// (`|f| (f.name, f.total)`), keyed by each field's JSON key: name `Out`'s fields
    /// like them (or rename them with serde). Two fields with the same key (`billing.city`
    /// and `shipping.city`) make the query fail when run, with
    /// [`Error::InvalidQuery`](marten_core::Error::InvalidQuery) naming them.
    pub fn select_into<Out: DeserializeOwned, Sel: Selection<D>>(
        mut self,
        f: impl FnOnce(D::Fields<D>) -> Sel,
    ) -> Selected<'s, S, D, Out> {
        let sel = f(D::fields_at(Base::root()));
        let paths = sel.paths();
        if let Some(reason) = shared_key(D::DOCUMENT_TYPE, &paths) {
            self.spec.invalid.get_or_insert(reason);
        }
        self.shaped(shape_expr(&paths, Shape::Object))
    }

    fn shaped<Out>(mut self, expr: String) -> Selected<'s, S, D, Out> {
        self.spec.shape = Some(expr);
        Selected::new(self)
    }
}

/// Runs `text` with `params` on `conn` as a query of `D` (a prepared statement, cached per
/// connection) and returns its rows.
pub(super) async fn fetch<D: PgDocument>(
    store: &DocumentStore,
    conn: &mut Conn,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>> {
    let span = crate::trace::query(store.schema(), D::DOCUMENT_TYPE);
    crate::trace::fingerprint(&span, [text]);
    async {
        store.ensure_in::<D>(conn).await?;
        conn.read(store, async |client| {
            let stmt = client.statement(text).await.map_err(reading::<D>)?;
            client.query(&stmt, params).await.map_err(reading::<D>)
        })
        .await
    }
    .instrument(span)
    .await
}

/// A page from the rows of the total form: the total (0 without a row) and the documents
/// (the one row of a page past the last match has none).
pub(super) fn decode_page<D: PgDocument>(rows: &[tokio_postgres::Row]) -> Result<Page<D>> {
    let total = match rows.first() {
        Some(r) => r.try_get(1).map_err(reading::<D>)?,
        None => 0,
    };
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let data: Option<JsonRef<'_>> = row.try_get(0).map_err(reading::<D>)?;
        if data.is_some() {
            items.push(decode_at::<D>(row, 2)?);
        }
    }
    Ok(Page { items, total })
}

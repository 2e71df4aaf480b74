//! Compiled queries: [`CompiledQuery`], a user type whose fields are a query's
//! parameters, what it returns ([`Returns`]: [`ToList`], [`First`], [`Single`],
//! [`Count`], [`Exists`], [`ToPage`]), and how one runs. The statement is rendered the first time a
//! query type runs in a given shape and cached in the store, keyed by the type and the
//! shape's key; later runs only collect the parameter values (the `collect` pass) and
//! send the cached text, a prepared statement on each connection. A shape the values
//! change (an optional filter added or not, a paging set or not, `None` compared with an
//! indexed field) has a key of its own, so it never reuses another shape's text.
//! Uses `spec`, `collect`, `run`, `rows` and the store's compiled-query cache.

use std::any::TypeId;

use marten_core::query::HasFields;
use marten_core::{Error, Result};
use tokio_postgres::Row;

use super::collect::Statement;
use super::render::Sql;
use super::rows::{decode, reading};
use super::run::{decode_page, fetch, Page};
use super::spec::QuerySpec;
use super::QuerySource;
use crate::documents::PgDocument;
use crate::store::DocumentStore;

/// A query type whose fields are the query's parameters, like Marten's
/// `ICompiledQuery`: [`build`](Self::build) writes the query with the typed DSL from
/// `&self`, and `session.query_compiled(&value)` runs it. Its SQL is rendered the first
/// time the type runs (per shape: a filter added only for some values makes a second
/// shape) and reused afterwards with the new values bound.
///
/// `build` must depend on `self` only: the same values must build the same query.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a compiled query",
    label = "not a compiled query",
    note = "implement `marten::CompiledQuery` for it: its `Document` type, what it `Returns` (`marten::compiled::ToList`, ..) and how it `build`s its query from its fields"
)]
pub trait CompiledQuery: Send + Sync + 'static {
    /// The document type queried.
    type Document: PgDocument + HasFields;
    /// What a run returns: [`ToList`], [`First`], [`Single`], [`Count`], [`Exists`] or
    /// [`ToPage`].
    type Returns: Returns<Self::Document>;
    /// The query of these values: filters, sorts, skip and take on `query`.
    fn build(&self, query: QuerySpec<Self::Document>) -> QuerySpec<Self::Document>;
}

mod sealed {
    pub trait Sealed {}
}

/// What a compiled query returns (sealed): [`ToList`], [`First`], [`Single`], [`Count`],
/// [`Exists`] or [`ToPage`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not what a compiled query of `{D}` can return",
    label = "not a return kind of compiled queries",
    note = "use one of `marten::compiled::{{ToList, First, Single, Count, Exists, ToPage}}` (the documents, the first or the only one, their count, whether any matches, a page and the total)"
)]
pub trait Returns<D>: sealed::Sealed + Send + Sync + 'static {
    /// The result of a run.
    type Output: Send;
    /// Sets what the kind needs on the spec (take one or two); `true`: it counts.
    #[doc(hidden)]
    fn prepare(spec: &mut QuerySpec<D>) -> bool;
    /// The result from the statement's rows.
    #[doc(hidden)]
    fn decode(rows: &[Row]) -> Result<Self::Output>;
}

/// Returns every match, as [`Query::to_list`](super::Query::to_list).
#[derive(Debug, Clone, Copy)]
pub struct ToList;
/// Returns the first match, if any, as [`Query::first`](super::Query::first).
#[derive(Debug, Clone, Copy)]
pub struct First;
/// Returns the only match, if any, as [`Query::single`](super::Query::single)
/// ([`Error::NotSingle`] for more than one).
#[derive(Debug, Clone, Copy)]
pub struct Single;
/// Returns how many documents match, as [`Query::count`](super::Query::count).
#[derive(Debug, Clone, Copy)]
pub struct Count;
/// Returns whether any document matches, as [`Query::exists`](super::Query::exists).
#[derive(Debug, Clone, Copy)]
pub struct Exists;
/// Returns the page the query's `skip` and `take` select and the total number of
/// matches, in one statement, as [`Query::to_page`](super::Query::to_page).
#[derive(Debug, Clone, Copy)]
pub struct ToPage;

impl sealed::Sealed for ToList {}
impl sealed::Sealed for First {}
impl sealed::Sealed for Single {}
impl sealed::Sealed for Count {}
impl sealed::Sealed for Exists {}
impl sealed::Sealed for ToPage {}

fn documents<D: PgDocument>(rows: &[Row]) -> Result<Vec<D>> {
    rows.iter().map(decode::<D>).collect()
}

impl<D: PgDocument> Returns<D> for ToList {
    type Output = Vec<D>;
    fn prepare(_: &mut QuerySpec<D>) -> bool {
        false
    }
    fn decode(rows: &[Row]) -> Result<Vec<D>> {
        documents(rows)
    }
}

impl<D: PgDocument> Returns<D> for First {
    type Output = Option<D>;
    fn prepare(spec: &mut QuerySpec<D>) -> bool {
        spec.at_most(1);
        false
    }
    fn decode(rows: &[Row]) -> Result<Option<D>> {
        Ok(documents(rows)?.into_iter().next())
    }
}

impl<D: PgDocument> Returns<D> for Single {
    type Output = Option<D>;
    fn prepare(spec: &mut QuerySpec<D>) -> bool {
        spec.at_most(2);
        false
    }
    fn decode(rows: &[Row]) -> Result<Option<D>> {
        let mut found = documents(rows)?;
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err(Error::NotSingle {
                document_type: D::DOCUMENT_TYPE,
            }),
        }
    }
}

impl<D: PgDocument> Returns<D> for Exists {
    type Output = bool;
    fn prepare(spec: &mut QuerySpec<D>) -> bool {
        spec.at_most(1);
        false
    }
    fn decode(rows: &[Row]) -> Result<bool> {
        Ok(!rows.is_empty())
    }
}

impl<D: PgDocument> Returns<D> for ToPage {
    type Output = Page<D>;
    fn prepare(spec: &mut QuerySpec<D>) -> bool {
        spec.with_total = true;
        false
    }
    fn decode(rows: &[Row]) -> Result<Page<D>> {
        decode_page(rows)
    }
}

impl<D: PgDocument> Returns<D> for Count {
    type Output = i64;
    fn prepare(_: &mut QuerySpec<D>) -> bool {
        true
    }
    fn decode(rows: &[Row]) -> Result<i64> {
        match rows.first() {
            Some(row) => row.try_get(0).map_err(reading::<D>),
            None => Err(Error::CorruptData {
                owner: D::DOCUMENT_TYPE.to_owned(),
                id: None,
                detail: "a count returned no row".to_owned(),
            }),
        }
    }
}

/// What a run of `Q` returns.
pub type CompiledOutput<Q> =
    <<Q as CompiledQuery>::Returns as Returns<<Q as CompiledQuery>::Document>>::Output;

/// Runs `query` on `source`'s connection, scoped to its store's tenant.
pub(crate) async fn run_compiled<S: QuerySource, Q: CompiledQuery>(
    source: &mut S,
    query: &Q,
) -> Result<CompiledOutput<Q>> {
    let mut spec = query.build(QuerySpec::new());
    let (store, conn) = source.source();
    spec.scope_to(store)?;
    let kind = if Q::Returns::prepare(&mut spec) {
        Statement::Count
    } else {
        Statement::Select
    };
    let (text, sql) = compiled_sql::<Q>(store, &spec, kind)?;
    let rows = fetch::<Q::Document>(store, conn, text.as_ref(), &sql.refs()).await?;
    Q::Returns::decode(&rows)
}

/// The text of `spec`'s statement (cached, or rendered and cached) and its parameters.
fn compiled_sql<Q: CompiledQuery>(
    store: &DocumentStore,
    spec: &QuerySpec<Q::Document>,
    kind: Statement,
) -> Result<(std::sync::Arc<str>, Sql)> {
    let (collected, key) = spec.collect(kind);
    let collected = collected.checked()?;
    let key = key.into_bytes();
    let cache = store.compiled_sql();
    if let Some(text) = cache.get(TypeId::of::<Q>(), &key) {
        return Ok((text, collected));
    }
    let rendered = spec.render(kind).checked()?;
    tracing::debug!(
        query = std::any::type_name::<Q>(),
        "compiled query: statement rendered"
    );
    let text = cache.insert(TypeId::of::<Q>(), key, &rendered.text);
    Ok((text, rendered))
}

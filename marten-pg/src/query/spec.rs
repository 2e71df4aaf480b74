//! [`QuerySpec`]: the definition of a typed query without a session (filters, order,
//! skip, take) and its builder methods. Its statements are built in `statement`. Uses
//! the typed filters and orders of `marten_core::query`.

use marten_core::query::{Base, Filter, HasFields, Order};
use marten_core::tenant::require_tenant;
use marten_core::Result;

use super::params::SqlParams;
use crate::documents::PgDocument;
use crate::store::DocumentStore;
use crate::tenant_key::TenantKey;

/// The definition of a query on documents of type `D`, without a session: filters,
/// order, skip and take. [`Query`](super::Query) runs one on a session;
/// [`QueryBatch`](super::QueryBatch) runs several in one round trip.
#[must_use]
pub struct QuerySpec<D> {
    pub(super) filters: Vec<Filter<D>>,
    pub(super) orders: Vec<Order<D>>,
    pub(super) skip: Option<usize>,
    pub(super) take: Option<usize>,
    /// Each row also carries the total number of matches, and a page past the last
    /// match is one row with a NULL document (see [`Query::to_page`](super::Query::to_page)).
    pub(super) with_total: bool,
    /// The tenant of the session the query runs on (set when it is run).
    pub(super) tenant: Option<TenantKey>,
    /// What each row returns instead of the document (a `jsonb` expression over `d`
    /// selecting some fields), for a selection.
    pub(super) shape: Option<String>,
    /// Whether the document type has a GIN index (`#[document(gin)]`): equalities then
    /// also test containment, which the index serves.
    pub(super) gin: bool,
}

impl<D> Default for QuerySpec<D> {
    fn default() -> Self {
        QuerySpec {
            filters: Vec::new(),
            orders: Vec::new(),
            skip: None,
            take: None,
            with_total: false,
            tenant: None,
            shape: None,
            gin: false,
        }
    }
}

impl<D: PgDocument + HasFields> QuerySpec<D> {
    /// An empty query (every document).
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps documents matching the filter built from `D`'s field paths. Several calls
    /// combine with AND.
    pub fn filter(mut self, f: impl FnOnce(D::Fields<D>) -> Filter<D>) -> Self {
        self.filters.push(f(D::fields_at(Base::root())));
        self
    }

    /// Keeps documents matching a filter built beforehand.
    pub fn where_filter(mut self, filter: Filter<D>) -> Self {
        self.filters.push(filter);
        self
    }

    /// A raw SQL condition, parameterized with `$1..` (numbered within the fragment): a
    /// tuple of typed values (any `ToSql`: `(since, vec![1i64, 2])`), `()`, or a
    /// `Vec<RawParam>` (typed values made with [`param`](super::param), untyped ones whose
    /// placeholders need a cast, e.g. `$1::bigint`).
    /// The document is `d.data` (`jsonb`), its id `d.id`. On a conjoined type the tenant's
    /// match comes first and binds `$1` of the statement; the fragment's placeholders are
    /// renumbered after it.
    pub fn where_sql(mut self, sql: impl Into<String>, params: impl SqlParams) -> Self {
        self.filters.push(Filter::raw(sql, params.into_params()));
        self
    }

    /// Sorts by a field (`|f| f.name.asc()`); several calls sort by each in turn. Ties are
    /// broken by id.
    pub fn order_by(mut self, f: impl FnOnce(D::Fields<D>) -> Order<D>) -> Self {
        self.orders.push(f(D::fields_at(Base::root())));
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

    /// The SQL this query runs (for `EXPLAIN` and logs). A query whose raw fragment is
    /// invalid fails when run, with [`Error::InvalidQuery`](marten_core::Error::InvalidQuery).
    pub fn to_sql(&self) -> String {
        self.select(true).text
    }

    /// Scopes the query to the tenant of the store handle it runs on: a conjoined type
    /// needs one ([`Error::TenantRequired`](marten_core::Error::TenantRequired) otherwise).
    /// Also notes whether `D` has a GIN index, for the equalities to use it.
    pub(super) fn scope_to(&mut self, store: &DocumentStore) -> Result<()> {
        let tenant = require_tenant(D::TENANCY, store.tenant(), D::DOCUMENT_TYPE)?;
        self.tenant = TenantKey::of(tenant);
        self.gin = D::GIN_INDEX;
        Ok(())
    }
}

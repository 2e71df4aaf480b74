//! [`QuerySpec`]: the definition of a typed query without a session (filters, order,
//! skip, take) and its builder methods. Its statements are built in `statement`. Uses
//! the typed filters and orders of `marten_core::query`.

use marten_core::query::{
    Base, Filter, FullTextSearch, HasFields, Order, DEFAULT_FULL_TEXT_CONFIG,
};
use marten_core::tenant::require_tenant;
use marten_core::{Result, SoftDeleted};

use super::deleted::Deleted;
use super::params::SqlParams;
use super::search::search_filter;
use crate::documents::PgDocument;
use crate::store::DocumentStore;
use crate::tables::documents::SearchKind;
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
    /// Why the query cannot run, found while it was built (a `select_into` whose fields
    /// share a key): its statement carries it, checked before anything is sent.
    pub(super) invalid: Option<String>,
    /// Which rows of a soft-deleted type match (the live ones unless asked).
    pub(super) deleted: Deleted,
    /// Whether the document type has a GIN index (`#[document(gin)]`): equalities then
    /// also test containment, which the index serves.
    pub(super) gin: bool,
    /// The full-text searches (their kind and text), for `order_by_rank`.
    pub(super) searches: Vec<(SearchKind, String)>,
    /// `order_by_rank`: the text search configuration to rank the matches in.
    pub(super) rank: Option<&'static str>,
}

impl<D> QuerySpec<D> {
    /// Reads at most `n` rows (what `first`, `single` and `exists` need), within the
    /// query's own `take`: `take(1).single()` reads one row, `take(0).first()` none.
    pub(super) fn at_most(&mut self, n: usize) {
        self.take = Some(self.take.map_or(n, |t| t.min(n)));
    }
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
            invalid: None,
            deleted: Deleted::Exclude,
            gin: false,
            searches: Vec::new(),
            rank: None,
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

    /// Keeps documents whose text (every string value, nested ones included) holds every
    /// word of `text`, stemmed in the configuration of the type's full-text index
    /// (`#[document(full_text)]`): `"running"` finds "run". PostgreSQL's
    /// `plainto_tsquery`; the index serves it. Combines with the other filters with AND.
    pub fn search(self, text: impl Into<String>) -> Self
    where
        D: FullTextSearch,
    {
        self.searched(SearchKind::Plain, text.into())
    }

    /// Like [`search`](Self::search), the words next to each other in this order
    /// (PostgreSQL's `phraseto_tsquery`).
    pub fn phrase_search(self, text: impl Into<String>) -> Self
    where
        D: FullTextSearch,
    {
        self.searched(SearchKind::Phrase, text.into())
    }

    /// Like [`search`](Self::search), with search-engine syntax: `"a quoted phrase"`,
    /// `or`, `-excluded` (PostgreSQL's `websearch_to_tsquery`; any text is valid).
    pub fn web_search(self, text: impl Into<String>) -> Self
    where
        D: FullTextSearch,
    {
        self.searched(SearchKind::Web, text.into())
    }

    /// Sorts the most relevant matches of the query's searches first (PostgreSQL's
    /// `ts_rank` of the document against every search), before the sorts of `order_by`
    /// (ties broken by them, then by id). Without a search, sorts nothing.
    pub fn order_by_rank(mut self) -> Self
    where
        D: FullTextSearch,
    {
        self.rank = Some(D::FULL_TEXT.unwrap_or(DEFAULT_FULL_TEXT_CONFIG));
        self
    }

    /// Adds a search: its filter, and its text for `order_by_rank`.
    fn searched(mut self, kind: SearchKind, text: String) -> Self
    where
        D: FullTextSearch,
    {
        self.searches.push((kind, text.clone()));
        self.where_filter(search_filter(kind, text))
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

    /// Matches the documents marked deleted too (a soft-deleted type only; without it a
    /// query skips them).
    pub fn include_deleted(mut self) -> Self
    where
        D: SoftDeleted,
    {
        self.deleted = Deleted::Include;
        self
    }

    /// Matches the documents marked deleted only (a soft-deleted type only).
    pub fn only_deleted(mut self) -> Self
    where
        D: SoftDeleted,
    {
        self.deleted = Deleted::Only;
        self
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

//! The statements of a [`QuerySpec`]: its WHERE clause (every filter rendered, joined
//! with AND), its sort keys (the id breaking ties), its LIMIT / OFFSET, and the SELECT
//! (plain, or with the total count of matches) and count statements built from them.
//! Parameters are numbered in that order: the tenant's (a conjoined type's rows are
//! matched on their tenant first), the filters', the search texts of the full-text rank
//! (`order_by_rank`), then LIMIT's, then OFFSET's.
//! Uses `render` and the spec's fields.

use marten_core::query::HasFields;

use super::render::{self, Sql};
use super::search;
use super::spec::QuerySpec;
use crate::documents::{conjoined, PgDocument};
use crate::tables::tenant_match::tenant_match;
use crate::tenant_key::TenantKey;

/// The tenant a statement matches rows on: `None` for a single-tenant type, `Some` of
/// the session's tenant for a conjoined one (`Some(None)` only when rendering the text
/// without a session).
type TenantMatch = Option<Option<TenantKey>>;

/// The rows a statement matches before its filters: the tenant's (a conjoined type) and
/// the live, every, or the marked rows of a soft-deleted type (its condition, if any).
pub(super) struct Scoped {
    pub(super) tenant: TenantMatch,
    pub(super) deleted: Option<String>,
}

impl Scoped {
    /// Rows matched on `tenant` only (a type that is not soft-deleted).
    #[cfg(test)]
    pub(super) fn tenant(tenant: TenantMatch) -> Self {
        Scoped {
            tenant,
            deleted: None,
        }
    }
}

/// A skip or take as the `bigint` PostgreSQL takes; beyond `i64::MAX` it means the same.
pub(super) fn row_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sort key: its expression and direction.
type SortKey = (String, &'static str);

impl<D: PgDocument + HasFields> QuerySpec<D> {
    /// The query's SQL: rows of `data, id` (or `data, total, id` with the total); a query
    /// with an invalid raw fragment carries why (see [`Sql::check`]).
    pub(super) fn select(&self, paged: bool) -> Sql {
        self.select_from(D::TABLE_NAME, self.scoped(), paged)
    }

    /// The statement counting the matches.
    pub(super) fn count_sql(&self) -> Sql {
        self.count_from(D::TABLE_NAME, self.scoped())
    }

    /// The statement computing one aggregate (a `jsonb` expression over the rows `d`) of
    /// the matches; skip, take and order do not apply.
    pub(super) fn aggregate_sql(&self, expr: &str) -> Sql {
        self.aggregate_from(D::TABLE_NAME, self.scoped(), expr)
    }

    /// The rows of `D` the spec matches: the spec's tenant's, for a conjoined type, and
    /// those its [`Deleted`](super::deleted::Deleted) choice keeps, for a soft-deleted one.
    pub(super) fn scoped(&self) -> Scoped {
        Scoped {
            tenant: conjoined::<D>().then(|| self.tenant.clone()),
            deleted: self.deleted.clause(D::SOFT_DELETE),
        }
    }
}

impl<D: 'static> QuerySpec<D> {
    /// [`select`](Self::select) on the documents of `table`.
    pub(super) fn select_from(&self, table: &str, rows: Scoped, paged: bool) -> Sql {
        let mut sql = Sql::default();
        sql.invalid.clone_from(&self.invalid);
        let wh = self.where_clause(&mut sql, rows);
        let keys = self.sort_keys(&mut sql);
        let limits = if paged {
            self.limits(&mut sql)
        } else {
            String::new()
        };
        let data = self.shape.as_deref().unwrap_or("d.data");
        sql.text = if self.with_total {
            select_with_total(table, data, &wh, &keys, &limits)
        } else {
            select_plain(table, data, &wh, &keys, &limits)
        };
        sql
    }

    /// [`count_sql`](Self::count_sql) on the documents of `table`.
    pub(super) fn count_from(&self, table: &str, rows: Scoped) -> Sql {
        let mut sql = Sql::default();
        let wh = self.where_clause(&mut sql, rows);
        sql.text = format!("SELECT count(*) FROM {table} d WHERE {wh}");
        sql
    }

    /// [`aggregate_sql`](Self::aggregate_sql) on the documents of `table`.
    pub(super) fn aggregate_from(&self, table: &str, rows: Scoped, expr: &str) -> Sql {
        let mut sql = Sql::default();
        let wh = self.where_clause(&mut sql, rows);
        sql.text = format!("SELECT {expr} FROM {table} d WHERE {wh}");
        sql
    }

    /// The tenant's match (for a conjoined type), every filter rendered over `d.data`
    /// and the soft-deleted rows' condition, joined with AND (`TRUE` without any). Each
    /// filter is in parentheses of its own: whatever a filter holds (a raw fragment the
    /// scanner misread), it cannot join an `OR` to the tenant's match or the soft-delete
    /// condition.
    fn where_clause(&self, sql: &mut Sql, rows: Scoped) -> String {
        let mut parts = Vec::with_capacity(self.filters.len() + 2);
        if let Some(tenant) = rows.tenant {
            let p = sql.param(Box::new(tenant));
            parts.push(tenant_match(&p, !self.filters.is_empty()));
        }
        parts.extend(
            self.filters
                .iter()
                .map(|f| format!("({})", render::render(f.node(), self.gin, sql))),
        );
        parts.extend(rows.deleted);
        if parts.is_empty() {
            "TRUE".to_owned()
        } else {
            parts.join(" AND ")
        }
    }

    /// The sort keys in order (the full-text rank first, with `order_by_rank`), the id
    /// last to break ties. Descending puts missing values last, ascending first.
    fn sort_keys(&self, sql: &mut Sql) -> Vec<SortKey> {
        let rank = self
            .rank
            .and_then(|config| search::rank_key(config, &self.searches, sql));
        let mut keys: Vec<SortKey> = rank.map(|r| (r, "DESC")).into_iter().collect();
        keys.extend(self.orders.iter().map(|o| {
            let e = render::typed_expr("d.data", true, &o.path, o.kind);
            let dir = if o.descending {
                "DESC NULLS LAST"
            } else {
                "ASC NULLS FIRST"
            };
            (e, dir)
        }));
        keys.push(("d.id".to_owned(), "ASC"));
        keys
    }

    /// ` LIMIT $n` and ` OFFSET $m` for the take and skip that are set, as parameters.
    fn limits(&self, sql: &mut Sql) -> String {
        let mut limits = String::new();
        if let Some(n) = self.take {
            let p = sql.param(Box::new(row_count(n)));
            limits.push_str(&format!(" LIMIT {p}"));
        }
        if let Some(n) = self.skip {
            let p = sql.param(Box::new(row_count(n)));
            limits.push_str(&format!(" OFFSET {p}"));
        }
        limits
    }
}

/// `data, id` of the matching rows of `table`, sorted and limited (`data`: the document,
/// or the expression of a selection).
fn select_plain(table: &str, data: &str, wh: &str, keys: &[SortKey], limits: &str) -> String {
    let order: Vec<String> = keys.iter().map(|(e, dir)| format!("{e} {dir}")).collect();
    format!(
        "SELECT {data}, d.id FROM {table} d WHERE {wh} ORDER BY {}{limits}",
        order.join(", ")
    )
}

/// `data, total, id`: the count and the page in one statement that always returns a row,
/// so a page past the last match still reports the total (with a NULL document). The
/// page's sort keys are selected (k0, k1, ..) to order the joined rows the same way.
fn select_with_total(table: &str, data: &str, wh: &str, keys: &[SortKey], limits: &str) -> String {
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
    let inner_order: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, dir))| format!("k{i} {dir}"))
        .collect();
    format!(
        "SELECT p.data, c.total, p.id FROM (SELECT count(*) AS total FROM {table} d WHERE {wh}) c \
         LEFT JOIN LATERAL (SELECT {data} AS data, d.id AS id, {} FROM {table} d WHERE {wh} ORDER BY {}{limits}) p ON true \
         ORDER BY {}",
        inner.join(", "),
        inner_order.join(", "),
        outer.join(", ")
    )
}

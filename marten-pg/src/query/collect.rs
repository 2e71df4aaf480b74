//! The parameters of a [`QuerySpec`]'s statement without its text, and the key of the
//! statement's shape, for compiled queries: a pass that mirrors `statement` (the tenant's
//! match, every filter through `render`'s collecting pass, the soft-deleted rows'
//! condition, the full-text rank's search texts, the sort keys, LIMIT, OFFSET) and binds
//! the same values in the same order. Two specs of one document type with the same key
//! render the same text. Uses `statement`, `render` and the spec's fields.

use marten_core::query::HasFields;

use super::render::{self, ShapeKey, Sql};
use super::spec::QuerySpec;
use super::statement::{row_count, Scoped};
use crate::documents::PgDocument;

/// Which statement of a spec a compiled query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Statement {
    /// The matches, sorted and paged ([`QuerySpec::select`]).
    Select,
    /// Their count ([`QuerySpec::count_sql`]).
    Count,
}

impl<D: PgDocument + HasFields> QuerySpec<D> {
    /// The statement `kind`, rendered.
    pub(super) fn render(&self, kind: Statement) -> Sql {
        self.render_from(D::TABLE_NAME, self.scoped(), kind)
    }

    /// The parameters [`render`](Self::render) binds for `kind`, in its order, without
    /// the text (the statement marked invalid where a value makes it so), and the key of
    /// its shape.
    pub(super) fn collect(&self, kind: Statement) -> (Sql, ShapeKey) {
        self.collect_from(self.scoped(), kind)
    }
}

impl<D: 'static> QuerySpec<D> {
    /// [`render`](QuerySpec::render) of `kind` on `rows`: the select or count statement.
    pub(super) fn render_from(&self, table: &str, rows: Scoped, kind: Statement) -> Sql {
        match kind {
            Statement::Select => self.select_from(table, rows, true),
            Statement::Count => self.count_from(table, rows),
        }
    }

    /// [`collect`](QuerySpec::collect) on `rows`.
    pub(super) fn collect_from(&self, rows: Scoped, kind: Statement) -> (Sql, ShapeKey) {
        let mut sql = Sql::default();
        let mut key = ShapeKey::default();
        key.tag(kind as u8);
        self.collect_where(&mut sql, &mut key, rows);
        if kind == Statement::Select {
            self.collect_sort_keys(&mut sql, &mut key);
            self.collect_limits(&mut sql, &mut key);
            key.tag(u8::from(self.with_total));
            match &self.shape {
                Some(shape) => {
                    key.tag(1);
                    key.text(shape);
                }
                None => key.tag(0),
            }
        }
        (sql, key)
    }

    /// Mirrors `where_clause`: the tenant, the filters, the soft-deleted rows' condition.
    fn collect_where(&self, sql: &mut Sql, key: &mut ShapeKey, rows: Scoped) {
        match rows.tenant {
            Some(tenant) => {
                key.tag(1);
                sql.params.push(Box::new(tenant));
            }
            None => key.tag(0),
        }
        key.number(self.filters.len());
        for f in &self.filters {
            render::collect(f.node(), self.gin, sql, key);
        }
        key.text(rows.deleted.as_deref().unwrap_or(""));
    }

    /// Mirrors `sort_keys`: the search texts of the rank, then the sorts.
    fn collect_sort_keys(&self, sql: &mut Sql, key: &mut ShapeKey) {
        match self.rank {
            Some(config) if !self.searches.is_empty() => {
                key.tag(1);
                key.text(config);
                key.number(self.searches.len());
                for (kind, text) in &self.searches {
                    key.tag(*kind as u8);
                    sql.params.push(Box::new(text.clone()));
                }
            }
            _ => key.tag(0),
        }
        key.number(self.orders.len());
        for o in &self.orders {
            key.path(&o.path);
            key.kind(o.kind);
            key.tag(u8::from(o.descending));
        }
    }

    /// Mirrors `limits`: LIMIT's parameter, then OFFSET's, each if set.
    fn collect_limits(&self, sql: &mut Sql, key: &mut ShapeKey) {
        for n in [self.take, self.skip] {
            match n {
                Some(n) => {
                    key.tag(1);
                    sql.params.push(Box::new(row_count(n)));
                }
                None => key.tag(0),
            }
        }
    }
}

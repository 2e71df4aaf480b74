//! [`Scope`]: how a document table's statements scope its rows (to a tenant, to the
//! live rows of a soft-deleted type) as the SQL fragments each statement splices in, and
//! the soft-delete columns' names. Pure.

use marten_core::Tenancy;

use super::TENANT_COLUMN;

/// The column marking a soft-deleted row.
pub const DELETED_COLUMN: &str = "mt_deleted";
/// The column holding when a soft-deleted row was marked.
pub const DELETED_AT_COLUMN: &str = "mt_deleted_at";

/// How a document table's statements scope its rows: to a tenant, and (a soft-deleted
/// type) to the rows not marked deleted.
///
/// A single-tenant table's statements do not name a tenant; a conjoined table's bind it
/// as a parameter, always the one right after the statement's row parameters (before a
/// row count), and match it in every `WHERE`, conflict target and join. A soft-deleted
/// table's reads and updates skip marked rows, its deletes mark them, and its upserts
/// un-mark the row they write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    conjoined: bool,
    soft_delete: bool,
}

impl Scope {
    /// The scope of a type with `tenancy` whose deletes remove rows.
    pub const fn of(tenancy: Tenancy) -> Self {
        Scope {
            conjoined: matches!(tenancy, Tenancy::Conjoined),
            soft_delete: false,
        }
    }

    /// The same scope, its deletes marking rows when `soft_delete` is set.
    pub const fn soft_deleted(self, soft_delete: bool) -> Self {
        Scope {
            soft_delete,
            ..self
        }
    }

    /// Whether rows carry their tenant.
    pub fn conjoined(self) -> bool {
        self.conjoined
    }

    /// Whether deletes mark rows rather than remove them.
    pub fn soft_delete(self) -> bool {
        self.soft_delete
    }

    /// ` AND NOT {alias}mt_deleted` for a soft-deleted table (its live rows), or nothing.
    pub fn live(self, alias: &str) -> String {
        if self.soft_delete {
            format!(" AND NOT {alias}{DELETED_COLUMN}")
        } else {
            String::new()
        }
    }

    /// `, mt_deleted = false, mt_deleted_at = NULL` in the `SET` list of an upsert of a
    /// soft-deleted table (writing a row revives it), or nothing.
    pub(super) fn revive(self) -> String {
        if self.soft_delete {
            format!(", {DELETED_COLUMN} = false, {DELETED_AT_COLUMN} = NULL")
        } else {
            String::new()
        }
    }

    /// ` AND {alias}tenant_id = $n`, or nothing.
    pub(super) fn filter(self, alias: &str, n: usize) -> String {
        if self.conjoined {
            format!(" AND {alias}{TENANT_COLUMN} = ${n}")
        } else {
            String::new()
        }
    }

    /// `tenant_id, ` at the head of a column list, or nothing.
    pub(super) fn column(self) -> &'static str {
        if self.conjoined {
            "tenant_id, "
        } else {
            ""
        }
    }

    /// `$n::text, ` at the head of a values list, or nothing.
    pub(super) fn value(self, n: usize) -> String {
        if self.conjoined {
            format!("${n}::text, ")
        } else {
            String::new()
        }
    }

    /// The conflict target of an upsert: the primary key.
    pub(super) fn key(self) -> &'static str {
        if self.conjoined {
            "(tenant_id, id)"
        } else {
            "(id)"
        }
    }

    /// `d.tenant_id = i.tenant_id AND `, joining a write's input to the table, or nothing.
    pub(super) fn join(self) -> &'static str {
        if self.conjoined {
            "d.tenant_id = i.tenant_id AND "
        } else {
            ""
        }
    }
}

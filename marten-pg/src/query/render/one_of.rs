//! Renders `is_one_of`: the field `= ANY($n)` with the values as one array parameter,
//! typed like the field's expression (`text[]`, `numeric[]`, `boolean[]`, `jsonb[]`, or the
//! column's type). On a column (the primary key for the id field, the duplicated column of
//! an indexed field) the test is index-friendly and still two-valued. With a `None` among
//! the values, an `Option` field's NULL column, or its key absent from the `jsonb`, is
//! `None` too. Uses `expr`, `nul` and [`Sql`].

use marten_core::query::{Path, ValueKind};
use tokio_postgres::types::ToSql;

use super::expr::{json_as_text, json_expr, json_or_null, typed_expr, ID_COLUMN};
use super::nul::refuse_nul;
use super::sql::Sql;

/// `path = ANY(values)` below `base` (`root`: `base` is the document itself).
pub(super) fn one_of(
    base: &str,
    root: bool,
    sql: &mut Sql,
    path: &Path,
    kind: ValueKind,
    values: &[serde_json::Value],
) -> String {
    for v in values {
        refuse_nul(sql, v);
    }
    let p = sql.param(one_of_param(root, path, kind, values));
    if let (true, Some((column, sql_type))) = (root, path.column) {
        return on_column(&p, path, column, sql_type, kind, values);
    }
    let left = match kind {
        // An `Option` missing from the JSON is `None`, as in Rust and on its column.
        ValueKind::Json if one_of_matches_null(kind, values) => json_or_null(base, root, path),
        ValueKind::Json => json_expr(base, path),
        _ => typed_expr(base, root, path, kind),
    };
    let array = match kind {
        ValueKind::Json => format!("{p}::jsonb[]"),
        ValueKind::Text => format!("{p}::text[]"),
        ValueKind::Number => format!("{p}::text[]::numeric[]"),
        ValueKind::Bool => format!("{p}::boolean[]"),
    };
    format!("coalesce({left} = ANY({array}), false)")
}

/// The one array parameter of `path = ANY(values)`: the values as text on a column
/// (cast to the column's type) or for text and numbers, as `jsonb` for JSON, as
/// booleans for booleans.
pub(super) fn one_of_param(
    root: bool,
    path: &Path,
    kind: ValueKind,
    values: &[serde_json::Value],
) -> Box<dyn ToSql + Sync + Send> {
    match (root && path.column.is_some(), kind) {
        (false, ValueKind::Json) => Box::new(values.to_vec()),
        (false, ValueKind::Bool) => {
            let bools: Vec<bool> = values
                .iter()
                .filter_map(serde_json::Value::as_bool)
                .collect();
            Box::new(bools)
        }
        _ => Box::new(texts(values)),
    }
}

/// Whether `is_one_of` on this `Option` field (compared as JSON) has a `None` among the
/// values, so it also matches the field's NULL column, or a key absent from the `jsonb`
/// (see [`json_or_null`]): this changes its SQL.
pub(super) fn one_of_matches_null(kind: ValueKind, values: &[serde_json::Value]) -> bool {
    kind == ValueKind::Json && values.iter().any(serde_json::Value::is_null)
}

/// On a column: `(col IS NOT NULL AND col = ANY($n::text[]::type[]))`, which an index (or
/// the primary key) serves; an `Option` column's `None` is a NULL column, matched with
/// `IS NULL`. The id column is compared in its own collation (equality is the same in
/// any deterministic collation), so its primary key serves a text id too.
fn on_column(
    p: &str,
    path: &Path,
    column: &str,
    sql_type: &str,
    kind: ValueKind,
    values: &[serde_json::Value],
) -> String {
    let left = if column == ID_COLUMN {
        format!("d.{ID_COLUMN}")
    } else {
        typed_expr("d.data", true, path, kind)
    };
    let test = format!("({left} IS NOT NULL AND {left} = ANY({p}::text[]::{sql_type}[]))");
    if one_of_matches_null(kind, values) {
        format!("({left} IS NULL OR {test})")
    } else {
        test
    }
}

/// The values as the text their casts read, without JSON `null`s (a NaN float, or an
/// `Option`'s `None`, which is matched apart): no element of the array is NULL, so the
/// test is true or false, never NULL.
fn texts(values: &[serde_json::Value]) -> Vec<String> {
    values.iter().filter_map(json_as_text).collect()
}

//! Renders `is_one_of`: the field `= ANY($n)` with the values as one array parameter,
//! typed like the field's expression (`text[]`, `numeric[]`, `boolean[]`, `jsonb[]`, or the
//! column's type). On a column (the primary key for the id field, the duplicated column of
//! an indexed field) the test is index-friendly and still two-valued. Uses `expr`, `nul`
//! and [`Sql`].

use marten_core::query::{Path, ValueKind};

use super::expr::{json_as_text, json_expr, typed_expr, ID_COLUMN};
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
    if let (true, Some((column, sql_type))) = (root, path.column) {
        return on_column(sql, path, column, sql_type, kind, values);
    }
    let (left, array) = match kind {
        ValueKind::Json => (
            json_expr(base, path),
            format!("{}::jsonb[]", sql.param(Box::new(values.to_vec()))),
        ),
        ValueKind::Text => (
            typed_expr(base, root, path, kind),
            format!("{}::text[]", sql.param(Box::new(texts(values)))),
        ),
        ValueKind::Number => (
            typed_expr(base, root, path, kind),
            format!("{}::text[]::numeric[]", sql.param(Box::new(texts(values)))),
        ),
        ValueKind::Bool => {
            let bools: Vec<bool> = values
                .iter()
                .filter_map(serde_json::Value::as_bool)
                .collect();
            (
                typed_expr(base, root, path, kind),
                format!("{}::boolean[]", sql.param(Box::new(bools))),
            )
        }
    };
    format!("coalesce({left} = ANY({array}), false)")
}

/// On a column: `(col IS NOT NULL AND col = ANY($n::text[]::type[]))`, which an index (or
/// the primary key) serves; an `Option` column's `None` is a NULL column, matched with
/// `IS NULL`. The id column is compared in its own collation (equality is the same in
/// any deterministic collation), so its primary key serves a text id too.
fn on_column(
    sql: &mut Sql,
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
    let p = sql.param(Box::new(texts(values)));
    let test = format!("({left} IS NOT NULL AND {left} = ANY({p}::text[]::{sql_type}[]))");
    if kind == ValueKind::Json && values.iter().any(serde_json::Value::is_null) {
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

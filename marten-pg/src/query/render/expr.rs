//! SQL expressions for a field path: the `jsonb` value (`#>`), its text (`#>>`), the
//! typed value a comparison or sort uses (or the field's duplicated column), the
//! comparison operators, and a JSON value as the text a cast reads. Pure; uses nothing
//! else of `render`.

use marten_core::query::{CompareOp, Path, ValueKind};

/// The document's id column; the derive names it as the column of the id field's path.
pub(super) const ID_COLUMN: &str = "id";

/// A path as a text[] literal: `'{"a","b"}'`.
fn path_literal(path: &Path) -> String {
    let parts: Vec<String> = path
        .segments
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("'{{{}}}'", parts.join(",").replace('\'', "''"))
}

/// The `jsonb` value at `path` below `base` (NULL when missing).
pub(super) fn json_expr(base: &str, path: &Path) -> String {
    format!("({base} #> {})", path_literal(path))
}

/// The `jsonb` value at `path` below `base` as serde reads it into an `Option` field: a
/// key absent from its parent object (`skip_serializing_if`, or a document stored before
/// the field existed) is JSON `null`, its `None`. Still NULL (no value, as the field's
/// getter finds none in Rust) when the parent itself is missing or not an object (an
/// `Option` parent's `None`). `root`: `base` is the document, always an object.
pub(super) fn json_or_null(base: &str, root: bool, path: &Path) -> String {
    let j = json_expr(base, path);
    let parent = match path.segments.split_last() {
        Some((_, [])) if root => return format!("coalesce({j}, 'null'::jsonb)"),
        Some((_, [])) | None => base.to_owned(),
        Some((_, segments)) => json_expr(
            base,
            &Path {
                segments: segments.to_vec(),
                column: None,
            },
        ),
    };
    format!("coalesce({j}, CASE WHEN jsonb_typeof({parent}) = 'object' THEN 'null'::jsonb END)")
}

/// The value at `path` below `base` as text (NULL when missing).
pub(crate) fn text_expr(base: &str, path: &Path) -> String {
    format!("({base} #>> {})", path_literal(path))
}

/// The expression an equality or inequality (`op`: `=`, `<>`) of `kind` uses: the id
/// column as it is (see below), else [`typed_expr`].
///
/// A text id column has the database's default collation (its primary key is ordered by
/// it), so `d.id COLLATE "C"` is an expression the primary key cannot serve: an
/// equality would scan the table. Equality is the same in every deterministic collation
/// (PostgreSQL's default collation always is one), so an equality on the id compares the
/// column in its own collation and the primary key serves it. An order (`<`, `>=`, a
/// sort) keeps `COLLATE "C"`: the column's collation may order text otherwise than Rust
/// does (`en_US`: `"a" < "B"`), and results are Rust's order.
pub(super) fn equality_expr(
    base: &str,
    root: bool,
    path: &Path,
    kind: ValueKind,
    op: CompareOp,
) -> String {
    let on_id = root && path.column.is_some_and(|(column, _)| column == ID_COLUMN);
    if on_id && matches!(op, CompareOp::Eq | CompareOp::Ne) {
        format!("d.{ID_COLUMN}")
    } else {
        typed_expr(base, root, path, kind)
    }
}

/// The expression a comparison or sort of `kind` uses. A value of another JSON type than
/// `kind` expects (a string where a number should be) is NULL: it matches no comparison
/// and sorts with the missing values, instead of failing the query's cast. Text compares
/// in byte order (`COLLATE "C"`, Rust's `str` order), on a duplicated column too, whatever
/// the column's own collation (the duplicated columns are `COLLATE "C"` themselves, so
/// their indexes serve it; the id column is not: see [`equality_expr`]).
pub(crate) fn typed_expr(base: &str, root: bool, path: &Path, kind: ValueKind) -> String {
    if let (true, Some((column, sql_type))) = (root, path.column) {
        return if sql_type == "text" {
            format!("d.{column} COLLATE \"C\"")
        } else {
            format!("d.{column}")
        };
    }
    let guarded = |json_type: &str, cast: &str| {
        format!(
            "(CASE WHEN jsonb_typeof({}) = '{json_type}' THEN {}{cast} END)",
            json_expr(base, path),
            text_expr(base, path)
        )
    };
    match kind {
        ValueKind::Json => json_expr(base, path),
        ValueKind::Text => format!("{} COLLATE \"C\"", guarded("string", "")),
        ValueKind::Number => guarded("number", "::numeric"),
        ValueKind::Bool => guarded("boolean", "::boolean"),
    }
}

/// The `jsonpath` test of a number comparison, `'strict $."a"."b" < $v'`, as a SQL literal:
/// the field at `path` compared with the variable `v` (see
/// [`super::node::path_match`]). `strict`: a missing field, or a value of another JSON type
/// (a string, an array of numbers), is an error the caller's `silent` turns into no match,
/// as the typed expression's guard does.
pub(super) fn json_path_test(path: &Path, op: CompareOp) -> String {
    let mut text = String::from("strict $");
    for s in &path.segments {
        text.push_str(".\"");
        for c in s.chars() {
            match c {
                '"' => text.push_str("\\\""),
                '\\' => text.push_str("\\\\"),
                c if (c as u32) < 0x20 => text.push_str(&format!("\\u{:04x}", c as u32)),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    let op = match op {
        CompareOp::Eq => "==",
        other => op_sql(other),
    };
    format!("'{} {op} $v'", text.replace('\'', "''"))
}

/// The SQL of a comparison operator.
pub(super) fn op_sql(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
    }
}

/// A value as the text a typed cast reads; `None` (SQL NULL, no match) for JSON `null`,
/// which is how serde writes a NaN or infinite float.
pub(super) fn json_as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

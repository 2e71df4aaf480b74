//! Renders each kind of filter [`Node`] to a SQL condition, adding its values to the
//! statement's parameters in the order they appear. Uses `expr`, `nul`, `raw` and
//! [`Sql`].

use marten_core::query::{CompareOp, Node, Path, TextOp, ValueKind};
use tokio_postgres::types::ToSql;

use super::expr::{
    equality_expr, json_as_text, json_expr, json_or_null, json_path_test, op_sql, text_expr,
};
use super::nul::{nul_reason, refuse_nul};
use super::one_of::one_of;
use super::raw::render_raw;
use super::sql::Sql;

/// Where a node's field paths are rendered.
#[derive(Clone, Copy)]
struct Scope<'a> {
    /// The `jsonb` the paths start from: `d.data` at the root, an element alias inside
    /// `any`.
    base: &'a str,
    /// Whether `base` is the document itself (so a field's duplicated column may stand
    /// for it).
    root: bool,
    /// How many `any` enclose the node (names the element aliases `e0`, `e1`, ..).
    depth: usize,
    /// Whether the document has a GIN index (`#[document(gin)]`), so an equality at the
    /// root also tests containment, which the index serves.
    gin: bool,
}

/// Renders `node` with field paths below `d.data`, the document; `gin`: the document has
/// a GIN index (equalities also test containment, see [`containment`]).
pub(crate) fn render(node: &Node, gin: bool, sql: &mut Sql) -> String {
    let scope = Scope {
        base: "d.data",
        root: true,
        depth: 0,
        gin,
    };
    render_in(scope, node, sql)
}

fn render_in(scope: Scope<'_>, node: &Node, sql: &mut Sql) -> String {
    match node {
        Node::Compare {
            path,
            op,
            kind,
            value,
        } => compare(scope, sql, path, *op, *kind, value),
        Node::OneOf { path, kind, values } => {
            one_of(scope.base, scope.root, sql, path, *kind, values)
        }
        Node::Text { path, op, value } => text_test(scope, sql, path, *op, value),
        Node::IsNull { path, negated } => is_null(scope, path, *negated),
        Node::Contains { path, value } => contains(scope, sql, path, value),
        Node::IsEmpty { path } => {
            let j = json_expr(scope.base, path);
            format!("coalesce(jsonb_array_length(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} END), 0) = 0")
        }
        Node::Any { path, inner } => any(scope, sql, path, inner),
        Node::And(nodes) if nodes.is_empty() => "TRUE".to_owned(),
        Node::Or(nodes) if nodes.is_empty() => "FALSE".to_owned(),
        Node::And(nodes) => joined(scope, sql, nodes, " AND "),
        Node::Or(nodes) => joined(scope, sql, nodes, " OR "),
        Node::Not(inner) => format!("NOT {}", render_in(scope, inner, sql)),
        Node::Raw {
            sql: fragment,
            params,
        } => render_raw(sql, fragment, params),
        Node::Invalid { reason } => {
            sql.invalid.get_or_insert_with(|| reason.clone());
            "FALSE".to_owned()
        }
        _ => "FALSE".to_owned(),
    }
}

/// A collection contains an element equal to the value `[element]`: its containment
/// (`@>`, which an index can serve) is that test for a string, number, boolean or `null`
/// element, but for an array or object element it only says that some element holds the
/// element's parts (`[[1, 2]]` contains `[[1]]` and `[[]]`), so an element equal to it is
/// also looked for (the same parameter's element, `$n -> 0`). A missing or non-array
/// field contains nothing. For a document with a GIN index, a field at the root also
/// tests `d.data @> {"field": [element]}`, which the field's containment implies (so the
/// answer is the same, also under `NOT`) and the index serves.
fn contains(scope: Scope<'_>, sql: &mut Sql, path: &Path, value: &serde_json::Value) -> String {
    refuse_nul(sql, value);
    let j = json_expr(scope.base, path);
    let indexed =
        (scope.gin && scope.root).then(|| sql.param(Box::new(nested_in(path, value.clone()))));
    let p = sql.param(Box::new(value.clone()));
    let contained = match indexed {
        Some(doc) => format!(
            "({} @> {doc}::jsonb AND coalesce({j} @> {p}::jsonb, false))",
            scope.base
        ),
        None => format!("coalesce({j} @> {p}::jsonb, false)"),
    };
    if containment_is_equality(value) {
        return contained;
    }
    let alias = format!("c{}", scope.depth);
    format!(
        "({contained} AND EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} END) AS {alias}(v) WHERE {alias}.v = {p}::jsonb -> 0))"
    )
}

/// Whether containment of `value` (`[element]`) in an array is an element equal to
/// `element`: a string, number, boolean or `null` element, not an array or an object.
pub(super) fn containment_is_equality(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Array(items) => items.iter().all(|e| !(e.is_array() || e.is_object())),
        _ => false,
    }
}

/// `path op value`, with its containment test first when there is one.
fn compare(
    scope: Scope<'_>,
    sql: &mut Sql,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> String {
    refuse_nul(sql, value);
    let contained = containment(scope, sql, path, op, value);
    let test = compare_value(scope, sql, path, op, kind, value);
    match contained {
        Some(c) => format!("({c} AND {test})"),
        None => test,
    }
}

/// For a document with a GIN index (`jsonb_path_ops`), an equality of a field at the
/// root without a duplicated column with a string, number or boolean is also written as
/// `d.data @> {"field": value}`: the equality implies it, so the result is the same
/// (also under `NOT`), and the index serves it. Other values (null, objects, arrays) are
/// not: containment is not equality for them.
fn containment(
    scope: Scope<'_>,
    sql: &mut Sql,
    path: &Path,
    op: CompareOp,
    value: &serde_json::Value,
) -> Option<String> {
    let doc = containment_doc(scope.gin && scope.root, path, op, value)?;
    let p = sql.param(Box::new(doc));
    Some(format!("{} @> {p}::jsonb", scope.base))
}

/// The document `{"field": value}` an equality also tests containment of (see
/// [`containment`]; `gin_root`: the document has a GIN index and the field is at its
/// root), if it does.
pub(super) fn containment_doc(
    gin_root: bool,
    path: &Path,
    op: CompareOp,
    value: &serde_json::Value,
) -> Option<serde_json::Value> {
    let scalar = value.is_string() || value.is_number() || value.is_boolean();
    if !(gin_root && op == CompareOp::Eq && path.column.is_none() && scalar) {
        return None;
    }
    Some(nested_in(path, value.clone()))
}

/// `value` under the keys of `path`: `{"a": {"b": value}}` for the path `a.b`.
pub(super) fn nested_in(path: &Path, value: serde_json::Value) -> serde_json::Value {
    let mut doc = value;
    for key in path.segments.iter().rev() {
        let mut object = serde_json::Map::with_capacity(1);
        object.insert((*key).to_owned(), doc);
        doc = serde_json::Value::Object(object);
    }
    doc
}

/// `path op value`: on the duplicated column at the root when the field has one (where a
/// NULL column is "no match"), else on the typed `jsonb` value under `coalesce`.
fn compare_value(
    scope: Scope<'_>,
    sql: &mut Sql,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> String {
    if path_match(scope.root, path, op, kind, value) {
        let p = sql.param(compared_param(scope.root, path, op, kind, value));
        return format!(
            "coalesce(jsonb_path_match({}, {}, {p}::jsonb, true), false)",
            scope.base,
            json_path_test(path, op)
        );
    }
    let left = if absent_is_null(scope.root, path, op, kind, value) {
        json_or_null(scope.base, scope.root, path)
    } else {
        equality_expr(scope.base, scope.root, path, kind, op)
    };
    if let Some(test) = null_column_test(scope.root, path, op, kind, value) {
        return format!("({left} {test})");
    }
    let nullable = option_column(scope.root, path, kind);
    let right = compared_value(scope, sql, path, op, kind, value);
    if nullable && op == CompareOp::Ne {
        format!("({left} IS NULL OR coalesce({left} <> {right}, false))")
    } else if scope.root && path.column.is_some() {
        // Index-friendly and still two-valued: a NULL column is "no match".
        format!("({left} IS NOT NULL AND {left} {} {right})", op_sql(op))
    } else {
        format!("coalesce({left} {} {right}, false)", op_sql(op))
    }
}

/// Whether `path op value` is tested by `jsonb_path_match` on the `jsonb` value: a number
/// field without its duplicated column compared (not `<>`) with a JSON number. The
/// server then compares the stored number where it lies, instead of taking out its text
/// to check its type and again to cast it (about half the cost per row of a scan). Same
/// meaning: a missing field or one of another JSON type matches nothing. Not for `<>`
/// (`jsonpath` finds JSON `null` unequal to a number, the typed expression does not), nor
/// for values that are not JSON numbers (a `null`, or a number serialized as a string).
pub(super) fn path_match(
    root: bool,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> bool {
    kind == ValueKind::Number
        && op != CompareOp::Ne
        && value.is_number()
        && !(root && path.column.is_some())
}

/// Whether `path op value` reads a key absent from the `jsonb` as JSON `null` (see
/// [`json_or_null`]): a field compared as JSON (an `Option`) without its column, with
/// `<>`, or with `=` to `None`, so that an `Option` missing from the JSON is `None` as
/// in Rust (and as its NULL column is). Other equalities find no `null`, so they keep
/// the plain value (and their containment test).
fn absent_is_null(
    root: bool,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> bool {
    kind == ValueKind::Json
        && !(root && path.column.is_some())
        && (op == CompareOp::Ne || (op == CompareOp::Eq && value.is_null()))
}

/// Whether the field is an indexed `Option` field at the root: `None` is a NULL column,
/// equal only to `None`.
fn option_column(root: bool, path: &Path, kind: ValueKind) -> bool {
    root && path.column.is_some() && kind == ValueKind::Json
}

/// The test of an indexed `Option` field's column compared (`=`, `<>`) with `None`
/// (`IS NULL`, `IS NOT NULL`), which binds no parameter; `None` for other comparisons.
pub(super) fn null_column_test(
    root: bool,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> Option<&'static str> {
    match (option_column(root, path, kind), op, value.is_null()) {
        (true, CompareOp::Eq, true) => Some("IS NULL"),
        (true, CompareOp::Ne, true) => Some("IS NOT NULL"),
        _ => None,
    }
}

/// The placeholder a comparison's field is compared with, cast like the field's expression.
fn compared_value(
    scope: Scope<'_>,
    sql: &mut Sql,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> String {
    let p = sql.param(compared_param(scope.root, path, op, kind, value));
    match (scope.root, path.column, kind) {
        (true, Some((_, sql_type)), _) => format!("{p}::text::{sql_type}"),
        (_, _, ValueKind::Json) => format!("{p}::jsonb"),
        (_, _, ValueKind::Text) => format!("{p}::text"),
        (_, _, ValueKind::Number) => format!("{p}::text::numeric"),
        (_, _, ValueKind::Bool) => format!("{p}::boolean"),
    }
}

/// The parameter a comparison's field is compared with (`root`: the field is at the
/// document's root, where its duplicated column stands for it): for a
/// [`path_match`] test, the `jsonpath` variables `{"v": value}`.
pub(super) fn compared_param(
    root: bool,
    path: &Path,
    op: CompareOp,
    kind: ValueKind,
    value: &serde_json::Value,
) -> Box<dyn ToSql + Sync + Send> {
    if path_match(root, path, op, kind, value) {
        return Box::new(serde_json::json!({ "v": value }));
    }
    match (root, path.column, kind) {
        (true, Some(_), _) | (_, _, ValueKind::Text | ValueKind::Number) => {
            Box::new(json_as_text(value))
        }
        (_, _, ValueKind::Json) => Box::new(value.clone()),
        (_, _, ValueKind::Bool) => Box::new(value.as_bool().unwrap_or(false)),
    }
}

/// A string test on the field's text.
fn text_test(scope: Scope<'_>, sql: &mut Sql, path: &Path, op: TextOp, value: &str) -> String {
    if value.contains('\0') {
        sql.invalid.get_or_insert_with(nul_reason);
    }
    let t = text_expr(scope.base, path);
    let p = sql.param(Box::new(value.to_owned()));
    let test = match op {
        TextOp::StartsWith => format!("starts_with({t}, {p}::text)"),
        TextOp::EndsWith => format!("right({t}, length({p}::text)) = {p}::text"),
        TextOp::Contains => format!("strpos({t}, {p}::text) > 0"),
        TextOp::EqIgnoreCase => {
            format!("lower({t} COLLATE \"C\") = lower({p}::text COLLATE \"C\")")
        }
    };
    format!("coalesce({test}, false)")
}

/// The field is missing or JSON `null` (`negated`: present and not null).
fn is_null(scope: Scope<'_>, path: &Path, negated: bool) -> String {
    let j = json_expr(scope.base, path);
    let test = format!("({j} IS NULL OR jsonb_typeof({j}) = 'null')");
    if negated {
        format!("NOT {test}")
    } else {
        test
    }
}

/// Some element of the array at `path` matches `inner`, rendered below the element's
/// alias (`e<depth>.x`); a missing or non-array field has no elements.
fn any(scope: Scope<'_>, sql: &mut Sql, path: &Path, inner: &Node) -> String {
    let j = json_expr(scope.base, path);
    let alias = format!("e{}", scope.depth);
    let element = format!("{alias}.x");
    let inner_scope = Scope {
        base: &element,
        root: false,
        depth: scope.depth + 1,
        gin: false,
    };
    let inner_sql = render_in(inner_scope, inner, sql);
    format!(
        "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} ELSE '[]'::jsonb END) AS {alias}(x) WHERE {inner_sql})"
    )
}

/// The nodes joined by `AND` or `OR`, in parentheses.
fn joined(scope: Scope<'_>, sql: &mut Sql, nodes: &[Node], separator: &str) -> String {
    let parts: Vec<String> = nodes.iter().map(|n| render_in(scope, n, sql)).collect();
    format!("({})", parts.join(separator))
}

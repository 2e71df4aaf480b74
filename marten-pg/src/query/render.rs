//! Renders a filter's syntax tree to parameterized SQL over `jsonb` (or over a
//! duplicated column when the field has one). Every leaf is wrapped in
//! `coalesce(.., false)` so SQL's three-valued logic agrees with the Rust predicate:
//! a missing field is simply "no match", also under `NOT`.

use marten_core::query::{CompareOp, Node, Path, RawParam, TextOp, ValueKind};
use tokio_postgres::types::ToSql;

/// SQL text and its parameters, numbered from `$1`.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    /// Adds a parameter; returns its placeholder.
    pub(crate) fn param(&mut self, value: Box<dyn ToSql + Sync + Send>) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// The parameters as tokio-postgres takes them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A path as a text[] literal: `'{"a","b"}'`.
fn path_literal(path: &Path) -> String {
    let parts: Vec<String> = path
        .segments
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("'{{{}}}'", parts.join(",").replace('\'', "''"))
}

fn json_expr(base: &str, path: &Path) -> String {
    format!("({base} #> {})", path_literal(path))
}

fn text_expr(base: &str, path: &Path) -> String {
    format!("({base} #>> {})", path_literal(path))
}

/// The expression a comparison or sort of `kind` uses.
pub(crate) fn typed_expr(base: &str, root: bool, path: &Path, kind: ValueKind) -> String {
    if let (true, Some((column, _))) = (root, path.column) {
        return format!("d.{column}");
    }
    match kind {
        ValueKind::Json => json_expr(base, path),
        ValueKind::Text => format!("{} COLLATE \"C\"", text_expr(base, path)),
        ValueKind::Number => format!("{}::numeric", text_expr(base, path)),
        ValueKind::Bool => format!("{}::boolean", text_expr(base, path)),
    }
}

fn op_sql(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
    }
}

fn json_as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders `node` with field paths below `base` (`d.data` at the root, an element alias
/// inside `any`).
pub(crate) fn render(node: &Node, base: &str, root: bool, sql: &mut Sql, depth: usize) -> String {
    match node {
        Node::Compare {
            path,
            op,
            kind,
            value,
        } => {
            let left = typed_expr(base, root, path, *kind);
            let right = match (root, path.column, kind) {
                (true, Some((_, sql_type)), _) => {
                    format!(
                        "{}::text::{sql_type}",
                        sql.param(Box::new(json_as_text(value)))
                    )
                }
                (_, _, ValueKind::Json) => format!("{}::jsonb", sql.param(Box::new(value.clone()))),
                (_, _, ValueKind::Text) => {
                    format!("{}::text", sql.param(Box::new(json_as_text(value))))
                }
                (_, _, ValueKind::Number) => format!(
                    "{}::text::numeric",
                    sql.param(Box::new(json_as_text(value)))
                ),
                (_, _, ValueKind::Bool) => format!(
                    "{}::boolean",
                    sql.param(Box::new(value.as_bool().unwrap_or(false)))
                ),
            };
            if root && path.column.is_some() {
                // Index-friendly and still two-valued: a NULL column is "no match".
                format!("({left} IS NOT NULL AND {left} {} {right})", op_sql(*op))
            } else {
                format!("coalesce({left} {} {right}, false)", op_sql(*op))
            }
        }
        Node::Text { path, op, value } => {
            let t = text_expr(base, path);
            let p = sql.param(Box::new(value.clone()));
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
        Node::IsNull { path, negated } => {
            let j = json_expr(base, path);
            let test = format!("({j} IS NULL OR jsonb_typeof({j}) = 'null')");
            if *negated {
                format!("NOT {test}")
            } else {
                test
            }
        }
        Node::Contains { path, value } => {
            let p = sql.param(Box::new(value.clone()));
            format!("coalesce({} @> {p}::jsonb, false)", json_expr(base, path))
        }
        Node::IsEmpty { path } => {
            let j = json_expr(base, path);
            format!("coalesce(jsonb_array_length(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} END), 0) = 0")
        }
        Node::Any { path, inner } => {
            let j = json_expr(base, path);
            let alias = format!("e{depth}");
            let inner_sql = render(inner, &format!("{alias}.x"), false, sql, depth + 1);
            format!(
                "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} ELSE '[]'::jsonb END) AS {alias}(x) WHERE {inner_sql})"
            )
        }
        Node::And(nodes) if nodes.is_empty() => "TRUE".to_owned(),
        Node::Or(nodes) if nodes.is_empty() => "FALSE".to_owned(),
        Node::And(nodes) => {
            let parts: Vec<String> = nodes
                .iter()
                .map(|n| render(n, base, root, sql, depth))
                .collect();
            format!("({})", parts.join(" AND "))
        }
        Node::Or(nodes) => {
            let parts: Vec<String> = nodes
                .iter()
                .map(|n| render(n, base, root, sql, depth))
                .collect();
            format!("({})", parts.join(" OR "))
        }
        Node::Not(inner) => format!("NOT {}", render(inner, base, root, sql, depth)),
        Node::Raw {
            sql: fragment,
            params,
        } => {
            let offset = sql.params.len();
            for p in params {
                let boxed: Box<dyn ToSql + Sync + Send> = match p {
                    RawParam::Text(s) => Box::new(s.clone()),
                    RawParam::Int(i) => Box::new(*i),
                    RawParam::Float(f) => Box::new(*f),
                    RawParam::Bool(b) => Box::new(*b),
                    RawParam::Json(v) => Box::new(v.clone()),
                    RawParam::Uuid(u) => Box::new(*u),
                    _ => Box::new(Option::<String>::None),
                };
                sql.params.push(boxed);
            }
            format!("({})", renumber(fragment, offset))
        }
        _ => "FALSE".to_owned(),
    }
}

/// Shifts `$n` placeholders of a raw fragment by `offset`, outside quoted text.
pub(crate) fn renumber(fragment: &str, offset: usize) -> String {
    let mut out = String::with_capacity(fragment.len() + 8);
    let mut chars = fragment.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_quote = !in_quote;
            out.push(c);
        } else if c == '$' && !in_quote && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                n.push(d);
                chars.next();
            }
            let k: usize = n.parse().unwrap_or(0);
            out.push('$');
            out.push_str(&(k + offset).to_string());
        } else {
            out.push(c);
        }
    }
    out
}

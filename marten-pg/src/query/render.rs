//! Renders a filter's syntax tree to parameterized SQL over `jsonb` (or over a
//! duplicated column when the field has one). Every leaf is wrapped in
//! `coalesce(.., false)` so SQL's three-valued logic agrees with the Rust predicate:
//! a missing field is simply "no match", also under `NOT`.

use marten_core::query::{CompareOp, Node, Path, RawParam, TextOp, ValueKind};
use marten_core::{Error, Result};
use tokio_postgres::types::ToSql;

/// SQL text and its parameters, numbered from `$1`.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<Box<dyn ToSql + Sync + Send>>,
    /// Why the query cannot run (a raw fragment whose placeholders do not match its
    /// parameters); checked before anything is sent.
    pub(crate) invalid: Option<String>,
}

impl Sql {
    /// Fails with [`Error::InvalidQuery`] when a raw fragment was invalid.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.invalid {
            Some(reason) => Err(Error::InvalidQuery(reason.clone())),
            None => Ok(()),
        }
    }

    /// [`check`](Self::check), passing the query on.
    pub(crate) fn checked(self) -> Result<Self> {
        self.check().map(|()| self)
    }

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

/// The expression a comparison or sort of `kind` uses. A value of another JSON type than
/// `kind` expects (a string where a number should be) is NULL: it matches no comparison
/// and sorts with the missing values, instead of failing the query's cast. Text compares
/// in byte order (`COLLATE "C"`, Rust's `str` order), on a duplicated column too, whatever
/// the column's own collation.
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

/// A value as the text a typed cast reads; `None` (SQL NULL, no match) for JSON `null`,
/// which is how serde writes a NaN or infinite float.
fn json_as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
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
            refuse_nul(sql, value);
            let left = typed_expr(base, root, path, *kind);
            // An indexed `Option` field: `None` is a NULL column, equal only to `None`.
            let option_column = root && path.column.is_some() && *kind == ValueKind::Json;
            match (option_column, op, value.is_null()) {
                (true, CompareOp::Eq, true) => return format!("({left} IS NULL)"),
                (true, CompareOp::Ne, true) => return format!("({left} IS NOT NULL)"),
                _ => {}
            }
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
            if option_column && *op == CompareOp::Ne {
                format!("({left} IS NULL OR coalesce({left} <> {right}, false))")
            } else if root && path.column.is_some() {
                // Index-friendly and still two-valued: a NULL column is "no match".
                format!("({left} IS NOT NULL AND {left} {} {right})", op_sql(*op))
            } else {
                format!("coalesce({left} {} {right}, false)", op_sql(*op))
            }
        }
        Node::Text { path, op, value } => {
            if value.contains('\0') {
                sql.invalid.get_or_insert_with(nul_reason);
            }
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
            refuse_nul(sql, value);
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
            let fragment = match renumber(fragment, offset, params.len()) {
                Ok(f) => f,
                Err(reason) => {
                    sql.invalid.get_or_insert(reason);
                    String::from("FALSE")
                }
            };
            for p in params {
                match p {
                    RawParam::Text(s) if s.contains('\0') => {
                        sql.invalid.get_or_insert_with(nul_reason);
                    }
                    RawParam::Json(v) => refuse_nul(sql, v),
                    _ => {}
                }
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
            format!("({fragment})")
        }
        _ => "FALSE".to_owned(),
    }
}

/// Why a query with a NUL character in a value is refused.
fn nul_reason() -> String {
    "a query value contains a NUL character (\\u0000), which PostgreSQL text and jsonb cannot hold"
        .to_owned()
}

/// Marks the query invalid when a JSON value holds a NUL character (in a string or a key).
fn refuse_nul(sql: &mut Sql, value: &serde_json::Value) {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
            }
            _ => false,
        }
    }
    if has_nul(value) {
        sql.invalid.get_or_insert_with(nul_reason);
    }
}

/// Whether `b` can continue an identifier (PostgreSQL allows `$` and any non-ASCII byte).
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Whether `b` can start an identifier (and so a dollar-quote tag).
fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The end (exclusive) of a quoted string or identifier opening at `start`: `quote`
/// doubled inside is the quote itself; in an escape string (`E'..'`) a backslash escapes
/// the next byte.
fn quoted_end(b: &[u8], start: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            c if c == quote => {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of a block comment opening at `start`; they nest.
fn comment_end(b: &[u8], start: usize) -> Option<usize> {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// At a `$` that starts no placeholder: the end of the dollar-quoted string it opens
/// (`$$..$$`, `$tag$..$tag$`), `Ok(None)` when it opens none.
fn dollar_quote_end(s: &str, start: usize) -> Result<Option<usize>, String> {
    let b = s.as_bytes();
    let mut i = start + 1;
    if i < b.len() && ident_start(b[i]) {
        i += 1;
        while i < b.len() && ident_byte(b[i]) && b[i] != b'$' {
            i += 1;
        }
    }
    if b.get(i) != Some(&b'$') {
        return Ok(None);
    }
    let tag = &s[start..=i];
    match s[i + 1..].find(tag) {
        Some(at) => Ok(Some(i + 1 + at + tag.len())),
        None => Err(format!(
            "unterminated dollar-quoted string {tag} in raw SQL"
        )),
    }
}

/// Shifts the `$n` placeholders of a raw fragment by `offset`, checking that they are
/// exactly `$1..=$count` (each parameter used, none beyond). `$` inside string literals,
/// escape strings, dollar-quoted strings, quoted identifiers, comments and identifiers
/// (`a$1`) is left alone.
pub(crate) fn renumber(fragment: &str, offset: usize, count: usize) -> Result<String, String> {
    let b = fragment.as_bytes();
    let mut out = String::with_capacity(fragment.len() + 8);
    let mut used = vec![false; count];
    let (mut i, mut copied) = (0, 0);
    let unterminated = |what: &str| format!("unterminated {what} in raw SQL");
    while i < b.len() {
        let prev_ident = i > 0 && ident_byte(b[i - 1]);
        match b[i] {
            b'\'' => {
                // `E'..'` (not the end of an identifier such as `name'..'`).
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && !(i > 1 && ident_byte(b[i - 2]));
                i = quoted_end(b, i, b'\'', escapes).ok_or_else(|| unterminated("string"))?;
            }
            b'"' => {
                i = quoted_end(b, i, b'"', false)
                    .ok_or_else(|| unterminated("quoted identifier"))?;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = fragment[i..].find('\n').map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = comment_end(b, i).ok_or_else(|| unterminated("comment"))?;
            }
            b'$' if prev_ident => i += 1,
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let digits_end = (i + 1..b.len())
                    .find(|&j| !b[j].is_ascii_digit())
                    .unwrap_or(b.len());
                let digits = &fragment[i + 1..digits_end];
                let n: usize = digits
                    .parse()
                    .map_err(|_| format!("placeholder ${digits} is out of range"))?;
                if n == 0 || n > count {
                    return Err(format!(
                        "placeholder ${n} has no parameter: {count} given, numbered from $1"
                    ));
                }
                used[n - 1] = true;
                out.push_str(&fragment[copied..i]);
                out.push('$');
                out.push_str(&(n + offset).to_string());
                copied = digits_end;
                i = digits_end;
            }
            b'$' => i = dollar_quote_end(fragment, i)?.unwrap_or(i + 1),
            _ => i += 1,
        }
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(format!(
            "parameter ${} is not used by the raw SQL",
            unused + 1
        ));
    }
    out.push_str(&fragment[copied..]);
    Ok(out)
}

#[cfg(test)]
mod tests;

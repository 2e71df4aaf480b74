//! Renders a raw SQL fragment: its `$n` placeholders shifted past the parameters already
//! in the statement, and its [`RawParam`]s added as typed parameters. A fragment whose
//! placeholders do not match its parameters, or a parameter with a NUL character, makes
//! the statement invalid. Uses `placeholders`, `nul` and [`Sql`].

use marten_core::query::RawParam;
use tokio_postgres::types::ToSql;

use super::backend_value::PgValue;
use super::nul::{nul_reason, refuse_nul};
use super::placeholders::renumber;
use super::sql::Sql;

/// `(fragment)` with its placeholders renumbered, its parameters added; `(FALSE)` (and
/// the statement invalid) when the placeholders do not match the parameters or its
/// parentheses do not balance.
pub(super) fn render_raw(sql: &mut Sql, fragment: &str, params: &[RawParam]) -> String {
    let offset = sql.params.len();
    let fragment = match renumber(fragment, offset, params.len()) {
        Ok(f) => f,
        Err(reason) => {
            sql.invalid.get_or_insert(reason);
            String::from("FALSE")
        }
    };
    for p in params {
        refuse_raw_nul(sql, p);
        let value = raw_value(sql, p);
        sql.params.push(value);
    }
    if fragment.contains("--") {
        // The line break ends a trailing `--` comment before the closing parenthesis.
        format!("({fragment}\n)")
    } else {
        format!("({fragment})")
    }
}

/// Marks the statement invalid when a text or `jsonb` parameter holds a NUL character.
pub(super) fn refuse_raw_nul(sql: &mut Sql, param: &RawParam) {
    match param {
        RawParam::Text(s) if s.contains('\0') => {
            sql.invalid.get_or_insert_with(nul_reason);
        }
        RawParam::Json(v) => refuse_nul(sql, v),
        _ => {}
    }
}

/// A raw parameter as the value tokio-postgres sends; a typed value (`ToSql`) as itself
/// (marking the statement invalid when it is text with a NUL character, or another
/// backend's value).
pub(super) fn raw_value(sql: &mut Sql, param: &RawParam) -> Box<dyn ToSql + Sync + Send> {
    match param {
        RawParam::Backend(b) => match PgValue::of(b) {
            Some((value, has_nul)) => {
                if has_nul {
                    sql.invalid.get_or_insert_with(nul_reason);
                }
                value
            }
            None => {
                sql.invalid.get_or_insert_with(|| {
                    format!("a raw SQL parameter {b:?} is not a PostgreSQL value")
                });
                Box::new(Option::<String>::None)
            }
        },
        RawParam::Text(s) => Box::new(s.clone()),
        RawParam::Int(i) => Box::new(*i),
        RawParam::Float(f) => Box::new(*f),
        RawParam::Bool(b) => Box::new(*b),
        RawParam::Json(v) => Box::new(v.clone()),
        RawParam::Uuid(u) => Box::new(*u),
        _ => Box::new(Option::<String>::None),
    }
}

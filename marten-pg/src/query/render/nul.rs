//! Refusing query values PostgreSQL `text` and `jsonb` cannot hold (a NUL character):
//! such a query is marked invalid and never sent. Uses [`Sql`].

use super::sql::Sql;

/// Why a query with a NUL character in a value is refused.
pub(super) fn nul_reason() -> String {
    "a query value contains a NUL character (\\u0000), which PostgreSQL text and jsonb cannot hold"
        .to_owned()
}

/// Marks the query invalid when a JSON value holds a NUL character (in a string or a key).
pub(super) fn refuse_nul(sql: &mut Sql, value: &serde_json::Value) {
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

//! Checks of input before it is sent: text PostgreSQL cannot store (NUL characters in
//! `text` and `jsonb`), keys too long for an index, and the key words PostgreSQL
//! reserves. Every check is cheap on the normal path (a byte scan); the work of naming
//! the offending field is done only when a check fails.

use marten_core::{Error, Result};

/// Why text with a NUL character is refused.
pub(crate) const NUL_REASON: &str =
    "contains a NUL character (\\u0000), which PostgreSQL text and jsonb cannot store";

/// The longest tag type or tag value, in bytes: both are part of index keys together.
pub(crate) const MAX_TAG_BYTES: usize = 1024;

/// Whether serialized JSON holds the escape `\u0000` (serde_json writes a NUL that way).
/// A scan of the bytes, no parse: an escaped backslash followed by `u0000` (the text
/// `\u0000` itself) is not a NUL.
pub(crate) fn json_has_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &json[i..]) {
        let escape = i + at + 1;
        if json[escape..].starts_with(b"u0000") {
            return true;
        }
        // Skip the escaped character (a backslash, quote or the `u` of another escape).
        i = escape + 1;
        if i >= json.len() {
            return false;
        }
    }
    false
}

/// Where in serialized JSON the first NUL is, as a path (`title`, `tags[2]`,
/// `meta["k"]`); a key holding one is named with ` (key)`. Parses the JSON: only for
/// error reports.
pub(crate) fn nul_path(json: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| find_nul(&v, ""))
        .unwrap_or_else(|| "(the JSON)".to_owned())
}

fn find_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
            "(the value)".to_owned()
        } else {
            path.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let inner = join(path, key);
            if key.contains('\0') {
                Some(format!("{inner} (key)"))
            } else {
                find_nul(item, &inner)
            }
        }),
        _ => None,
    }
}

/// `path.key` for a plain key, `path["key"]` (escaped) for any other.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (plain, path.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{key:?}]"),
    }
}

/// Fails with [`Error::InvalidInput`] when `json` holds a NUL, naming `owner`, `id` and
/// the path of the field (prefixed with `prefix`, e.g. `header `).
pub(crate) fn check_json(
    json: &[u8],
    owner: impl FnOnce() -> (String, Option<String>),
) -> Result<()> {
    check_json_field(json, "", owner)
}

/// [`check_json`] with the field named `prefix` + path.
pub(crate) fn check_json_field(
    json: &[u8],
    prefix: &str,
    owner: impl FnOnce() -> (String, Option<String>),
) -> Result<()> {
    if !json_has_nul(json) {
        return Ok(());
    }
    let (owner, id) = owner();
    Err(Error::InvalidInput {
        owner,
        id,
        field: format!("{prefix}{}", nul_path(json)),
        reason: NUL_REASON,
    })
}

/// Fails with [`Error::InvalidInput`] when `text` holds a NUL.
pub(crate) fn check_text(
    text: &str,
    field: impl FnOnce() -> String,
    owner: impl FnOnce() -> (String, Option<String>),
) -> Result<()> {
    if !text.contains('\0') {
        return Ok(());
    }
    let (owner, id) = owner();
    Err(Error::InvalidInput {
        owner,
        id,
        field: field(),
        reason: NUL_REASON,
    })
}

/// Checks a tag's type and value: not empty, no NUL, at most [`MAX_TAG_BYTES`] each.
pub(crate) fn check_tag(tag_type: &str, value: &str) -> Result<()> {
    let fail = |field: &str, reason: &'static str| Error::InvalidInput {
        owner: format!("tag {tag_type:?}"),
        id: None,
        field: field.to_owned(),
        reason,
    };
    for (field, text) in [("type", tag_type), ("value", value)] {
        if text.is_empty() {
            return Err(fail(field, "must not be empty"));
        }
        if text.contains('\0') {
            return Err(fail(field, NUL_REASON));
        }
        if text.len() > MAX_TAG_BYTES {
            return Err(fail(
                field,
                "is longer than 1024 bytes (PostgreSQL cannot index it)",
            ));
        }
    }
    Ok(())
}

/// PostgreSQL's reserved key words (both kinds: those no name may be, and those only a
/// function or type may be), lower-case, sorted: an unquoted schema name cannot be one.
const RESERVED_WORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// Whether `word` (lower-case) is a key word PostgreSQL reserves, so that it cannot name
/// a schema without quotes.
pub(crate) fn is_reserved_word(word: &str) -> bool {
    RESERVED_WORDS.binary_search(&word).is_ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_reserved_words_are_sorted_so_a_binary_search_finds_each() {
        assert!(RESERVED_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(RESERVED_WORDS.iter().all(|w| is_reserved_word(w)));
        assert!(!is_reserved_word("events"));
    }

    use super::*;

    fn json(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("serialize")
    }

    #[test]
    fn finds_a_nul_anywhere_and_only_a_nul() {
        assert!(!json_has_nul(b"{}"));
        assert!(!json_has_nul(&json(&serde_json::json!({"a": "\\u0000"}))));
        assert!(!json_has_nul(&json(&serde_json::json!({"a": "x\\"}))));
        assert!(!json_has_nul(&json(
            &serde_json::json!({"a": "\u{1}\"\\\n"})
        )));
        assert!(json_has_nul(&json(&serde_json::json!({"a": "x\0"}))));
        assert!(json_has_nul(&json(&serde_json::json!({"a": "\\\0"}))));
        assert!(json_has_nul(&json(&serde_json::json!({"k\0": 1}))));
        assert!(json_has_nul(&json(&serde_json::json!(["\0"]))));
        assert!(!json_has_nul(b"\\"));
        assert!(!json_has_nul(b"\"\\u000"));
    }

    #[test]
    fn names_the_field() {
        let v = serde_json::json!({"title": "ok", "tags": ["a", "b\0"]});
        assert_eq!(nul_path(&json(&v)), "tags[1]");
        let v = serde_json::json!({"meta": {"we ird": {"k\0": 1}}});
        assert_eq!(nul_path(&json(&v)), r#"meta["we ird"]["k\0"] (key)"#);
        assert_eq!(nul_path(&json(&serde_json::json!("\0"))), "(the value)");
    }

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("t", "v").is_ok());
        assert!(check_tag("t", "").is_err());
        assert!(check_tag("", "v").is_err());
        assert!(check_tag("t", "a\0").is_err());
        assert!(check_tag("t", &"x".repeat(MAX_TAG_BYTES + 1)).is_err());
        assert!(check_tag("t", &"x".repeat(MAX_TAG_BYTES)).is_ok());
    }
}

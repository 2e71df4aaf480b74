//! The SQL expression of a selection of fields (what a query returns instead of the
//! documents): one field's `jsonb` value (`null` when missing), a `jsonb` array of the
//! fields (read as a tuple), or a `jsonb` object keyed by each field's JSON key (read as
//! a struct). Uses `expr`.

use marten_core::query::Path;

use super::expr::json_expr;

/// How the selected values are put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One field's value.
    Single,
    /// An array of the values (a tuple).
    Array,
    /// An object keyed by each field's JSON key (a struct).
    Object,
}

/// Why `paths` cannot be selected as an object ([`Shape::Object`]): two of them end in
/// the same JSON key, and the object would keep only the last one's value under it.
pub(crate) fn shared_key(document_type: &str, paths: &[Path]) -> Option<String> {
    let key = |p: &Path| p.segments.last().copied().unwrap_or_default();
    let dotted = |p: &Path| p.segments.join(".");
    paths.iter().enumerate().find_map(|(i, a)| {
        let b = paths[i + 1..].iter().find(|b| key(b) == key(a))?;
        Some(format!(
            "select_into on {document_type}: the fields `{}` and `{}` both have the key \
             `{}` in the selected object (a struct is keyed by each field's last key); \
             select them with `select`, which reads a tuple",
            dotted(a),
            dotted(b),
            key(a)
        ))
    })
}

/// The `jsonb` expression selecting `paths` of the document `d` in `shape`.
pub(crate) fn shape_expr(paths: &[Path], shape: Shape) -> String {
    let values = paths.iter().map(|p| json_expr("d.data", p));
    match shape {
        Shape::Single => match values.into_iter().next() {
            Some(v) => format!("coalesce({v}, 'null'::jsonb)"),
            None => "'null'::jsonb".to_owned(),
        },
        Shape::Array => {
            let values: Vec<String> = values.collect();
            format!("jsonb_build_array({})", values.join(", "))
        }
        Shape::Object => {
            let pairs: Vec<String> = paths
                .iter()
                .zip(values)
                .map(|(p, v)| {
                    let key = p.segments.last().copied().unwrap_or_default();
                    format!("'{}', {v}", key.replace('\'', "''"))
                })
                .collect();
            format!("jsonb_build_object({})", pairs.join(", "))
        }
    }
}

//! Renders an aggregate over a field as one `jsonb` value (`null` without any value):
//! `sum`, `avg` (as `float8`), `min` / `max` (`bool_and` / `bool_or` for booleans, which
//! PostgreSQL's `min` / `max` lack) and `count(DISTINCT ..)`, on the field's typed
//! expression (or its column), so a value of another JSON type is no value. Uses `expr`.

use marten_core::query::{AggregationOp, Path, ValueKind};

use super::expr::typed_expr;

/// The aggregate `op` of the field at `path` over the rows of `d`, as `jsonb`.
pub(crate) fn aggregate_expr(op: AggregationOp, path: &Path, kind: ValueKind) -> String {
    let e = typed_expr("d.data", true, path, kind);
    let value = match (op, kind) {
        (AggregationOp::Sum, _) => format!("sum({e})"),
        (AggregationOp::Avg, _) => format!("avg({e})::float8"),
        (AggregationOp::Min, ValueKind::Bool) => format!("bool_and({e})"),
        (AggregationOp::Max, ValueKind::Bool) => format!("bool_or({e})"),
        (AggregationOp::Min, _) => format!("min({e})"),
        (AggregationOp::Max, _) => format!("max({e})"),
        // JSON `null` (an `Option`'s `None`) is no value, as a NULL column is.
        (AggregationOp::CountDistinct, ValueKind::Json) => {
            format!("count(DISTINCT NULLIF({e}, 'null'::jsonb))")
        }
        (AggregationOp::CountDistinct, _) => format!("count(DISTINCT {e})"),
        _ => "NULL".to_owned(),
    };
    format!("coalesce(to_jsonb({value}), 'null'::jsonb)")
}

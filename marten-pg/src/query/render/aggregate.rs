//! Renders an aggregate over a field as one `jsonb` value (`null` without any value):
//! `sum`, `avg` (as `float8`), `min` / `max` (`bool_and` / `bool_or` for booleans, and on
//! the text of a `uuid` column, which PostgreSQL's `min` / `max` lack) and
//! `count(DISTINCT ..)`, on the field's typed expression (or its column), so a value of
//! another JSON type is no value. Uses `expr`.

use marten_core::query::{AggregationOp, Path, ValueKind};

use super::expr::typed_expr;

/// The aggregate `op` of the field at `path` over the rows of `d`, as `jsonb`.
pub(crate) fn aggregate_expr(op: AggregationOp, path: &Path, kind: ValueKind) -> String {
    let e = typed_expr("d.data", true, path, kind);
    let value = match (op, kind, path.column) {
        (AggregationOp::Sum, _, _) => format!("sum({e})"),
        (AggregationOp::Avg, _, _) => format!("avg({e})::float8"),
        (AggregationOp::Min, ValueKind::Bool, _) => format!("bool_and({e})"),
        (AggregationOp::Max, ValueKind::Bool, _) => format!("bool_or({e})"),
        // A `uuid` column (a duplicated `Uuid` field, the id) has no `min` / `max`; its
        // canonical text (fixed width, lower-case hex) sorts in byte order as the uuid's
        // bytes do, which is `Uuid`'s order, and reads back as a `Uuid`.
        (AggregationOp::Min, _, Some((column, "uuid"))) => {
            format!("min(d.{column}::text COLLATE \"C\")")
        }
        (AggregationOp::Max, _, Some((column, "uuid"))) => {
            format!("max(d.{column}::text COLLATE \"C\")")
        }
        (AggregationOp::Min, _, _) => format!("min({e})"),
        (AggregationOp::Max, _, _) => format!("max({e})"),
        // JSON `null` (an `Option`'s `None`) is no value, as a NULL column is; the column
        // (an indexed `Option` field) is typed, NULL for `None`.
        (AggregationOp::CountDistinct, ValueKind::Json, None) => {
            format!("count(DISTINCT NULLIF({e}, 'null'::jsonb))")
        }
        (AggregationOp::CountDistinct, _, _) => format!("count(DISTINCT {e})"),
        _ => "NULL".to_owned(),
    };
    format!("coalesce(to_jsonb({value}), 'null'::jsonb)")
}

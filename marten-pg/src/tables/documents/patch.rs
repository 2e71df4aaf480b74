//! The SQL of patches and deletes by filter on a document table: the new `data` of a
//! patch as a chain of `jsonb` operations (`jsonb_set`, `||`, array filters), one
//! `UPDATE` that also moves the version of the table's mode and the last-modified time,
//! and the `DELETE` of a filter. The text depends on the patch's operations and filter
//! (never on its values, which are bound as parameters); indexed columns are generated
//! from `data` and follow by themselves. Pure.

use marten_core::patch::PatchOp;

use super::VERSION_COLUMN;
use super::{Scope, DELETED_AT_COLUMN, DELETED_COLUMN, REVISION_COLUMN, TENANT_COLUMN};
use crate::tables::functions::REJECTED_FLAG;

/// How a write moves a table's version: by its concurrency mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionBump {
    /// No version column.
    None,
    /// A new random `uuid` in `mt_version`.
    Uuid,
    /// `mt_revision` plus one.
    Revision,
}

impl VersionBump {
    /// `, column = next` in a `SET` list, or nothing.
    fn set(self) -> String {
        match self {
            VersionBump::None => String::new(),
            VersionBump::Uuid => format!(", {VERSION_COLUMN} = gen_random_uuid()"),
            VersionBump::Revision => {
                format!(", {REVISION_COLUMN} = d.{REVISION_COLUMN} + 1")
            }
        }
    }

    /// The version column and its SQL type (`None`: the mode has none).
    fn column(self) -> Option<(&'static str, &'static str)> {
        match self {
            VersionBump::None => None,
            VersionBump::Uuid => Some((VERSION_COLUMN, "uuid")),
            VersionBump::Revision => Some((REVISION_COLUMN, "bigint")),
        }
    }
}

/// A path as a `text[]` literal: `'{"a","b"}'`.
fn path_literal(segments: &[&str]) -> String {
    let parts: Vec<String> = segments
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("'{{{}}}'", parts.join(",").replace('\'', "''"))
}

/// The document `x` after `op`, its value (if it has one) being parameter `$n`.
fn op_expr(op: &PatchOp, x: &str, n: usize) -> String {
    let p = path_literal(&op.path().segments);
    let at = format!("({x} #> {p})");
    let is_array = format!("jsonb_typeof({at}) = 'array'");
    let append = || {
        format!(
            "jsonb_set({x}, {p}, (CASE WHEN {is_array} THEN {at} ELSE '[]'::jsonb END) \
             || jsonb_build_array(${n}::jsonb), true)"
        )
    };
    match op {
        PatchOp::Set { .. } => format!("jsonb_set({x}, {p}, ${n}::jsonb, true)"),
        PatchOp::Unset { .. } => format!("jsonb_set({x}, {p}, 'null'::jsonb, true)"),
        PatchOp::Increment { .. } => format!(
            "jsonb_set({x}, {p}, to_jsonb(coalesce(CASE WHEN jsonb_typeof({at}) = 'number' \
             THEN {at}::numeric END, 0) + (${n}::jsonb)::numeric), true)"
        ),
        PatchOp::Append {
            if_missing: false, ..
        } => append(),
        PatchOp::Append {
            if_missing: true, ..
        } => format!(
            "CASE WHEN (CASE WHEN {is_array} THEN EXISTS (SELECT 1 FROM jsonb_array_elements({at}) \
             AS e(v) WHERE e.v = ${n}::jsonb) ELSE false END) THEN {x} ELSE {} END",
            append()
        ),
        PatchOp::Remove { .. } => format!(
            "CASE WHEN {is_array} THEN jsonb_set({x}, {p}, (SELECT coalesce(jsonb_agg(e.v ORDER BY e.i), \
             '[]'::jsonb) FROM jsonb_array_elements({at}) WITH ORDINALITY AS e(v, i) \
             WHERE e.v <> ${n}::jsonb), false) ELSE {x} END"
        ),
        // A future operation this version does not know leaves the document as it is.
        _ => x.to_owned(),
    }
}

/// The patched `data` of row `d`: each operation applied to the previous one's result
/// (a chain of lateral subqueries, so the text grows linearly with the operations). The
/// operations' values are parameters `$first..`, in operation order, skipping those
/// without a value ([`PatchOp::value`]).
pub fn patched_data(ops: &[PatchOp], first: usize) -> String {
    let mut n = first;
    let mut steps = String::new();
    for (i, op) in ops.iter().enumerate() {
        let expr = op_expr(op, &format!("p{i}.x"), n);
        if op.value().is_some() {
            n += 1;
        }
        steps.push_str(&format!(
            " CROSS JOIN LATERAL (SELECT {expr} AS x) p{}",
            i + 1
        ));
    }
    format!(
        "(SELECT p{}.x FROM (SELECT d.data AS x) p0{steps})",
        ops.len()
    )
}

/// The condition of a patch by id: `d.tenant_id = $1 AND d.id = $2` for a conjoined
/// table (the tenant first), `d.id = $1` otherwise, and `AND NOT d.mt_deleted` for a
/// soft-deleted one (a marked row is not patched); and how many parameters it takes.
pub fn by_id(scope: Scope) -> (String, usize) {
    let live = scope.live("d.");
    if scope.conjoined() {
        (format!("d.{TENANT_COLUMN} = $1 AND d.id = $2{live}"), 2)
    } else {
        (format!("d.id = $1{live}"), 1)
    }
}

/// A patch of the rows of `table` that `condition` matches: `data` becomes `data_sql`,
/// the version moves by `bump`, the last-modified time is now. Returns one row: the ids
/// and new versions written. With `expected` (the parameter of the version the row must
/// still have), a row that exists with another version is not written and sets the
/// batch's rejected flag; a missing row is no rejection.
pub fn update(
    table: &str,
    bump: VersionBump,
    data_sql: &str,
    condition: &str,
    expected: Option<usize>,
) -> String {
    let version = bump
        .column()
        .map_or_else(|| "NULL::int".to_owned(), |(c, _)| format!("d.{c}"));
    let (check, flag) = match (expected, bump.column()) {
        (Some(n), Some((column, ty))) => (
            format!(" AND d.{column} = ${n}::{ty}"),
            format!(
                ", CASE WHEN count(*) = 0 AND EXISTS (SELECT 1 FROM {table} d WHERE {condition}) \
                 THEN set_config('{REJECTED_FLAG}', 't', true) END"
            ),
        ),
        _ => (String::new(), String::new()),
    };
    format!(
        "WITH written AS (UPDATE {table} AS d SET data = {data_sql}{}, mt_last_modified = now() \
         WHERE {condition}{check} RETURNING d.id, {version} AS v) \
         SELECT array_agg(written.id), array_agg(written.v){flag} FROM written",
        bump.set()
    )
}

/// Deletes the rows of `table` that `condition` matches, returning their ids.
pub fn delete_where(table: &str, condition: &str) -> String {
    format!("DELETE FROM {table} AS d WHERE {condition} RETURNING d.id")
}

/// Marks the rows of a soft-deleted `table` that `condition` matches deleted (`deleted`,
/// now) or live again (`!deleted`, the time cleared), returning their ids; nothing else
/// of a row moves. The condition should match only rows not yet in that state.
pub fn mark_deleted_where(table: &str, condition: &str, deleted: bool) -> String {
    let at = if deleted { "now()" } else { "NULL" };
    format!(
        "UPDATE {table} AS d SET {DELETED_COLUMN} = {deleted}, {DELETED_AT_COLUMN} = {at} \
         WHERE {condition} RETURNING d.id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use marten_core::query::Path;

    fn path(segments: Vec<&'static str>) -> Path {
        Path {
            segments,
            column: None,
        }
    }

    #[test]
    fn operations_chain_and_number_their_values_in_order() {
        let ops = [
            PatchOp::Unset {
                path: path(vec!["note"]),
            },
            PatchOp::Set {
                path: path(vec!["a", "b'c"]),
                value: serde_json::json!(1),
            },
            PatchOp::Increment {
                path: path(vec!["n"]),
                by: serde_json::json!(2),
            },
        ];
        let data = patched_data(&ops, 3);
        assert!(data.starts_with("(SELECT p3.x FROM (SELECT d.data AS x) p0 CROSS JOIN LATERAL"));
        assert!(data.contains("jsonb_set(p0.x, '{\"note\"}', 'null'::jsonb, true)"));
        assert!(data.contains("jsonb_set(p1.x, '{\"a\",\"b''c\"}', $3::jsonb, true)"));
        assert!(data.contains("$4::jsonb)::numeric"));
        assert!(!data.contains("$5"));
    }

    #[test]
    fn a_checked_patch_asserts_the_version_and_flags_a_stale_row() {
        let sql = update("mt_doc_o", VersionBump::Revision, "x", "d.id = $1", Some(2));
        assert!(sql.contains("mt_revision = d.mt_revision + 1"));
        assert!(sql.contains("AND d.mt_revision = $2::bigint"));
        assert!(sql.contains("set_config('marten.rejected'"));
        let unchecked = update("mt_doc_o", VersionBump::Uuid, "x", "d.id = $1", None);
        assert!(unchecked.contains("mt_version = gen_random_uuid()"));
        assert!(!unchecked.contains("set_config"));
    }
}

//! The SQL of patches and deletes by filter on a document table: the new `data` of a
//! patch as a chain of `jsonb` operations (`jsonb_set`, `||`, array filters), one
//! `UPDATE` that also moves the version of the table's mode and the last-modified time,
//! and the `DELETE` of a filter. The text depends on the patch's operations and filter
//! (never on its values, which are bound as parameters); indexed columns are generated
//! from `data` and follow by themselves. Pure.
//!
//! An increment whose field's type is known is checked: a sum out of the type's range
//! (`u8` at 255 plus 1, an `f64` beyond `f64::MAX`), which no longer deserializes, makes
//! the patched document SQL NULL, and the statement then either raises the batch
//! guard's error (SQLSTATE `MT409`: a statement that is the whole save) or writes a JSON
//! `null` document, sets the batch's rejected flag and answers `true` in its last
//! column (a statement of a transaction the batch guard ends, which rolls it back).

use marten_core::patch::PatchOp;

use super::VERSION_COLUMN;
use super::{Scope, DELETED_AT_COLUMN, DELETED_COLUMN, REVISION_COLUMN, TENANT_COLUMN};
use crate::tables::functions::{GUARD_FUNCTION, REJECTED_FLAG};

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

/// The range an increment's sum must lie within: the least and greatest values of the
/// field's type, as SQL `numeric` literals (`("0", "255")` for a `u8`).
pub type NumberRange = (&'static str, &'static str);

/// The document `x` after `op`, its value (if it has one) being parameter `$n`; SQL NULL
/// when `op` is an increment whose sum falls out of `range`.
fn op_expr(op: &PatchOp, x: &str, n: usize, range: Option<NumberRange>) -> String {
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
        PatchOp::Increment { .. } => {
            let sum = format!(
                "coalesce(CASE WHEN jsonb_typeof({at}) = 'number' THEN {at}::numeric END, 0) \
                 + (${n}::jsonb)::numeric"
            );
            match range {
                None => format!("jsonb_set({x}, {p}, to_jsonb({sum}), true)"),
                Some((min, max)) => format!(
                    "(SELECT CASE WHEN s.v BETWEEN {min} AND {max} \
                     THEN jsonb_set({x}, {p}, to_jsonb(s.v), true) END FROM (SELECT {sum} AS v) s)"
                ),
            }
        }
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
///
/// `ranges[i]`, when there is one, is the range of the type of the field operation `i`
/// increments. With any, a sum out of its range (after which the document would no
/// longer load) stops the patch of that row: with `raise`, the statement raises the
/// batch guard's error (SQLSTATE `MT409`), writing nothing; without, the row's `data`
/// is JSON `null` and the batch's rejected flag is set, for the batch guard to roll the
/// batch back (see [`update`]'s `overflow_column`).
pub fn patched_data(
    ops: &[PatchOp],
    first: usize,
    ranges: &[Option<NumberRange>],
    raise: bool,
) -> String {
    let mut n = first;
    let mut steps = String::new();
    for (i, op) in ops.iter().enumerate() {
        let range = ranges.get(i).copied().flatten();
        let expr = op_expr(op, &format!("p{i}.x"), n, range);
        if op.value().is_some() {
            n += 1;
        }
        steps.push_str(&format!(
            " CROSS JOIN LATERAL (SELECT {expr} AS x) p{}",
            i + 1
        ));
    }
    let data = format!(
        "(SELECT p{}.x FROM (SELECT d.data AS x) p0{steps})",
        ops.len()
    );
    if ranges.iter().all(Option::is_none) {
        return data;
    }
    // The flag is set before the guard runs (a `CASE` evaluates in order); the guard
    // then raises, or the `null` document marks the row for `update`'s last column.
    let set_flag = format!("set_config('{REJECTED_FLAG}', 't', true) = 't'");
    let out_of_range = if raise {
        format!(
            "(CASE WHEN {set_flag} THEN (CASE WHEN {GUARD_FUNCTION}() IS NULL THEN 'null'::jsonb END) END)"
        )
    } else {
        format!("(CASE WHEN {set_flag} THEN 'null'::jsonb END)")
    };
    format!("coalesce({data}, {out_of_range})")
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
/// batch's rejected flag (the third column); a missing row is no rejection. Whether the
/// row exists is read under a share lock (`FOR SHARE`), which sees the latest committed
/// row: a row deleted (or soft-deleted) by a transaction that committed while the patch
/// waited for it is missing, not one of another version. With
/// `overflow_column`, a fourth column (the third a NULL without `expected`) says whether
/// a row was written with a JSON `null` document: an increment out of its field's range
/// (see [`patched_data`], which then set the rejected flag).
pub fn update(
    table: &str,
    bump: VersionBump,
    data_sql: &str,
    condition: &str,
    expected: Option<usize>,
    overflow_column: bool,
) -> String {
    let version = bump
        .column()
        .map_or_else(|| "NULL::int".to_owned(), |(c, _)| format!("d.{c}"));
    let (check, flag) = match (expected, bump.column()) {
        (Some(n), Some((column, ty))) => (
            format!(" AND d.{column} = ${n}::{ty}"),
            format!(
                ", CASE WHEN count(*) = 0 AND EXISTS (SELECT 1 FROM {table} d WHERE {condition} \
                 FOR SHARE) THEN set_config('{REJECTED_FLAG}', 't', true) END"
            ),
        ),
        _ => (String::new(), String::new()),
    };
    let (nulled, overflow) = if overflow_column {
        let flag = if flag.is_empty() { ", NULL::text" } else { "" };
        (
            ", jsonb_typeof(d.data) = 'null' AS o",
            format!("{flag}, coalesce(bool_or(written.o), false)"),
        )
    } else {
        ("", String::new())
    };
    format!(
        "WITH written AS (UPDATE {table} AS d SET data = {data_sql}{}, mt_last_modified = now() \
         WHERE {condition}{check} RETURNING d.id, {version} AS v{nulled}) \
         SELECT array_agg(written.id), array_agg(written.v){flag}{overflow} FROM written",
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
                kind: marten_core::patch::NumberKind::I64,
            },
        ];
        let data = patched_data(&ops, 3, &[], false);
        assert!(data.starts_with("(SELECT p3.x FROM (SELECT d.data AS x) p0 CROSS JOIN LATERAL"));
        assert!(data.contains("jsonb_set(p0.x, '{\"note\"}', 'null'::jsonb, true)"));
        assert!(data.contains("jsonb_set(p1.x, '{\"a\",\"b''c\"}', $3::jsonb, true)"));
        assert!(data.contains("$4::jsonb)::numeric"));
        assert!(!data.contains("$5"));
    }

    #[test]
    fn a_checked_increment_stops_the_row_out_of_its_range() {
        let ops = [
            PatchOp::Increment {
                path: path(vec!["n"]),
                by: serde_json::json!(1),
                kind: marten_core::patch::NumberKind::U8,
            },
            PatchOp::Unset {
                path: path(vec!["note"]),
            },
        ];
        let unchecked = patched_data(&ops, 1, &[], false);
        assert!(!unchecked.contains("BETWEEN") && !unchecked.starts_with("coalesce("));
        let raised = patched_data(&ops, 1, &[Some(("0", "255"))], true);
        assert!(raised.contains("CASE WHEN s.v BETWEEN 0 AND 255 THEN jsonb_set(p0.x"));
        assert!(raised.starts_with("coalesce((SELECT p2.x"));
        assert!(raised.contains("set_config('marten.rejected', 't', true) = 't'"));
        assert!(raised.contains("mt_assert_no_rejections() IS NULL"));
        let flagged = patched_data(&ops, 1, &[Some(("0", "255"))], false);
        assert!(
            flagged.contains("set_config('marten.rejected', 't', true) = 't' THEN 'null'::jsonb")
        );
        assert!(!flagged.contains("mt_assert_no_rejections"));
        let sql = update("mt_doc_m", VersionBump::None, "x", "d.id = $1", None, true);
        assert!(sql.contains("RETURNING d.id, NULL::int AS v, jsonb_typeof(d.data) = 'null' AS o)"));
        assert!(sql.ends_with(
            "array_agg(written.v), NULL::text, coalesce(bool_or(written.o), false) FROM written"
        ));
        let checked = update(
            "mt_doc_m",
            VersionBump::Uuid,
            "x",
            "d.id = $1",
            Some(2),
            true,
        );
        assert!(
            checked.contains("THEN set_config('marten.rejected', 't', true) END, coalesce(bool_or")
        );
    }

    #[test]
    fn a_checked_patch_asserts_the_version_and_flags_a_stale_row() {
        let sql = update(
            "mt_doc_o",
            VersionBump::Revision,
            "x",
            "d.id = $1",
            Some(2),
            false,
        );
        assert!(sql.contains("mt_revision = d.mt_revision + 1"));
        assert!(sql.contains("AND d.mt_revision = $2::bigint"));
        assert!(sql.contains("set_config('marten.rejected'"));
        let unchecked = update("mt_doc_o", VersionBump::Uuid, "x", "d.id = $1", None, false);
        assert!(unchecked.contains("mt_version = gen_random_uuid()"));
        assert!(!unchecked.contains("set_config"));
    }
}

//! Comparing the tables marten expects ([`TableDef`]) with what a schema holds
//! ([`Live`]): one [`Change`] per difference, with the statements that fix it and what
//! kind of fix they are (which schema modes may apply them).

use marten_core::SchemaDifference;

use super::live::Live;
use super::names::truncated;
use super::types::Types;
use crate::tables::def::{drop_index, IndexDef, TableDef};
use crate::tables::functions;

/// What fixing a difference takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fix {
    /// Creating an object that is missing (a table, index, function, sequence).
    Create,
    /// Changing an existing table: adding a column, replacing an index.
    Alter,
    /// A person: a column of another type holds data marten cannot convert.
    Manual,
}

/// One difference and the statements that fix it (none for [`Fix::Manual`]).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) difference: SchemaDifference,
    pub(crate) fix: Fix,
    pub(crate) statements: Vec<String>,
}

/// What a schema must hold: its functions and its tables, in creation order.
pub(crate) struct Expected<'a> {
    pub(crate) schema: &'a str,
    pub(crate) tables: &'a [TableDef],
    /// Whether the schema itself and marten's functions are expected (a store's whole
    /// schema); false when checking some tables only.
    pub(crate) with_functions: bool,
    /// The canonical names of the tables' column types, compared with the live ones.
    pub(crate) types: &'a Types,
}

/// The differences between `expected` and `live`; index statements use
/// `CONCURRENTLY` when `concurrently` is set.
pub(crate) fn diff(expected: &Expected<'_>, live: &Live, concurrently: bool) -> Vec<Change> {
    let schema = expected.schema;
    let mut out = Vec::new();
    if expected.with_functions {
        if !live.schema_exists {
            out.push(Change {
                difference: SchemaDifference::MissingSchema {
                    schema: schema.to_owned(),
                },
                fix: Fix::Create,
                statements: vec![format!("CREATE SCHEMA IF NOT EXISTS {schema}")],
            });
        }
        if !live.functions.contains(functions::GUARD_FUNCTION) {
            out.push(Change {
                difference: SchemaDifference::MissingFunction {
                    function: format!("{schema}.{}()", functions::GUARD_FUNCTION),
                },
                fix: Fix::Create,
                statements: vec![functions::create_guard(schema)],
            });
        }
    }
    for table in expected.tables {
        diff_table(schema, table, live, expected.types, concurrently, &mut out);
    }
    out
}

fn diff_table(
    schema: &str,
    def: &TableDef,
    live: &Live,
    types: &Types,
    concurrently: bool,
    out: &mut Vec<Change>,
) {
    let name = truncated(&def.name);
    let qualified = format!("{schema}.{name}");
    for sequence in &def.sequences {
        if !live.sequences.contains(truncated(sequence)) {
            out.push(Change {
                difference: SchemaDifference::MissingSequence {
                    sequence: format!("{schema}.{sequence}"),
                },
                fix: Fix::Create,
                statements: vec![TableDef::create_sequence(schema, sequence)],
            });
        }
    }
    let Some(columns) = live.table(name) else {
        let mut statements = vec![def.create(schema)];
        statements.extend(
            def.indexes
                .iter()
                .map(|ix| ix.create(schema, &def.name, false)),
        );
        statements.extend(def.after.iter().cloned());
        out.push(Change {
            difference: SchemaDifference::MissingTable { table: qualified },
            fix: Fix::Create,
            statements,
        });
        return;
    };
    for column in &def.columns {
        let found = columns.iter().find(|(c, _)| c == truncated(&column.name));
        let expected = types.canonical(&column.sql_type);
        match found {
            None => out.push(Change {
                difference: SchemaDifference::MissingColumn {
                    table: qualified.clone(),
                    column: column.name.clone(),
                    expected: expected.to_owned(),
                },
                fix: Fix::Alter,
                statements: vec![def.add_column(schema, column)],
            }),
            Some((_, sql_type)) if sql_type != expected => out.push(Change {
                difference: SchemaDifference::ColumnType {
                    table: qualified.clone(),
                    column: column.name.clone(),
                    expected: expected.to_owned(),
                    found: sql_type.clone(),
                },
                fix: Fix::Manual,
                statements: Vec::new(),
            }),
            Some(_) => {}
        }
    }
    for index in &def.indexes {
        out.extend(diff_index(schema, def, index, live, concurrently));
    }
}

/// An index key as PostgreSQL prints it back: a column named past 63 bytes is cut like
/// every other identifier (the column itself was created under the cut name), its
/// operator class, if any, follows.
fn live_key(key: &str) -> String {
    let (column, rest) = key.split_once(' ').unwrap_or((key, ""));
    if column.contains('(') {
        return key.to_owned();
    }
    match rest {
        "" => truncated(column).to_owned(),
        rest => format!("{} {rest}", truncated(column)),
    }
}

/// The difference of one index, if any: missing, replacing the other kind's index of
/// the same field, or of another shape under its own name.
fn diff_index(
    schema: &str,
    def: &TableDef,
    index: &IndexDef,
    live: &Live,
    concurrently: bool,
) -> Option<Change> {
    let table = truncated(&def.name);
    let name = truncated(&index.name);
    let create = index.create(schema, &def.name, concurrently);
    let (table_q, index_q) = (format!("{schema}.{table}"), format!("{schema}.{name}"));
    if let Some(found) = live.index(table, name) {
        let same = found.valid
            && found.unique == index.unique
            && found.method == index.method
            && found.keys.len() == index.keys.len()
            && found
                .keys
                .iter()
                .zip(&index.keys)
                .all(|(f, k)| *f == live_key(k))
            && found.predicate == index.predicate;
        if same {
            return None;
        }
        return Some(Change {
            difference: SchemaDifference::IndexChanged {
                table: table_q,
                index: index_q.clone(),
                expected: index.shape(),
                found_index: index_q,
                found: found.shape(),
            },
            fix: Fix::Alter,
            statements: vec![drop_index(schema, name, concurrently), create],
        });
    }
    let replaced = index
        .replaces
        .iter()
        .map(|r| truncated(r))
        .find_map(|r| live.index(table, r).map(|found| (r, found)));
    Some(match replaced {
        Some((old, found)) => Change {
            difference: SchemaDifference::IndexChanged {
                table: table_q,
                index: index_q,
                expected: index.shape(),
                found_index: format!("{schema}.{old}"),
                found: found.shape(),
            },
            fix: Fix::Alter,
            statements: vec![create, drop_index(schema, old, concurrently)],
        },
        None => Change {
            difference: SchemaDifference::MissingIndex {
                table: table_q,
                index: index_q,
                expected: index.shape(),
            },
            fix: Fix::Create,
            statements: vec![create],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::live::LiveIndex;
    use crate::tables::def::ColumnDef;

    fn table() -> TableDef {
        let mut t = TableDef::new(
            "t",
            vec![
                ColumnDef::new("id", "uuid", "PRIMARY KEY"),
                ColumnDef::new("n", "bigint", ""),
            ],
        );
        let mut ix = IndexDef::btree("t_uidx_n", true, &["n"]);
        ix.replaces.push("t_idx_n".into());
        t.indexes.push(ix);
        t
    }

    fn live_with(columns: &[(&str, &str)], indexes: &[(&str, bool)]) -> Live {
        let mut live = Live {
            schema_exists: true,
            ..Live::default()
        };
        live.functions.insert(functions::GUARD_FUNCTION.to_owned());
        live.columns.insert(
            "t".into(),
            columns
                .iter()
                .map(|(c, u)| ((*c).into(), (*u).into()))
                .collect(),
        );
        let ixs = live.indexes.entry("t".into()).or_default();
        for (name, unique) in indexes {
            let index = LiveIndex {
                unique: *unique,
                method: "btree".into(),
                keys: vec!["n".into()],
                valid: true,
                predicate: None,
            };
            ixs.insert((*name).into(), index);
        }
        live
    }

    fn run(live: &Live, concurrently: bool) -> Vec<Change> {
        let tables = [table()];
        let types = Types::default();
        let expected = Expected {
            schema: "s",
            tables: &tables,
            with_functions: true,
            types: &types,
        };
        diff(&expected, live, concurrently)
    }

    #[test]
    fn an_identical_schema_has_no_differences() {
        let live = live_with(&[("id", "uuid"), ("n", "bigint")], &[("t_uidx_n", true)]);
        assert!(run(&live, false).is_empty());
    }

    #[test]
    fn a_missing_column_and_a_changed_kind_are_found_and_fixed() {
        let live = live_with(&[("id", "uuid")], &[("t_idx_n", false)]);
        let changes = run(&live, true);
        assert_eq!(changes.len(), 2, "{changes:#?}");
        assert_eq!(changes[0].fix, Fix::Alter);
        assert_eq!(
            changes[0].statements,
            ["ALTER TABLE s.t ADD COLUMN IF NOT EXISTS n bigint"]
        );
        assert_eq!(
            changes[1].difference,
            SchemaDifference::IndexChanged {
                table: "s.t".into(),
                index: "s.t_uidx_n".into(),
                expected: "UNIQUE btree (n)".into(),
                found_index: "s.t_idx_n".into(),
                found: "btree (n)".into(),
            }
        );
        assert_eq!(
            changes[1].statements,
            [
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_uidx_n ON s.t (n)",
                "DROP INDEX CONCURRENTLY IF EXISTS s.t_idx_n"
            ]
        );
    }

    #[test]
    fn a_wrong_type_needs_a_person_and_a_missing_table_is_created_whole() {
        let live = live_with(&[("id", "text"), ("n", "bigint")], &[("t_uidx_n", true)]);
        let changes = run(&live, false);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].fix, Fix::Manual);
        assert!(changes[0].statements.is_empty());
        let changes = run(&Live::default(), false);
        let kinds: Vec<String> = changes.iter().map(|c| c.difference.object()).collect();
        assert_eq!(kinds, ["s", "s.mt_assert_no_rejections()", "s.t"]);
        assert_eq!(changes[2].statements.len(), 2);
    }
}

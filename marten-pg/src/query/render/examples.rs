//! The SQL of each kind of node and expression, written out: field-path expressions,
//! typed comparisons on `jsonb` and on duplicated columns, string tests, null and
//! emptiness tests, `any` with its element aliases, combinations, raw fragments, and the
//! refusal of NUL characters.

use marten_core::query::{CompareOp, Node, Path, RawParam, TextOp, ValueKind};
use serde_json::json;

use super::expr::{json_as_text, json_expr, op_sql, text_expr, typed_expr};
use super::{render, Sql};

pub(super) fn path(segments: &[&'static str]) -> Path {
    Path {
        segments: segments.to_vec(),
        column: None,
    }
}

pub(super) fn with_column(
    segments: &[&'static str],
    column: &'static str,
    sql_type: &'static str,
) -> Path {
    Path {
        segments: segments.to_vec(),
        column: Some((column, sql_type)),
    }
}

/// Renders at the root; the SQL and the number of parameters.
pub(super) fn at_root(node: &Node) -> (String, usize) {
    let mut sql = Sql::default();
    let text = render(node, false, &mut sql);
    assert!(sql.invalid.is_none(), "{:?}", sql.invalid);
    (text, sql.params.len())
}

fn compare(path: Path, op: CompareOp, kind: ValueKind, value: serde_json::Value) -> Node {
    Node::Compare {
        path,
        op,
        kind,
        value,
    }
}

#[test]
fn paths_render_as_escaped_text_array_literals() {
    assert_eq!(
        json_expr("d.data", &path(&["a", "b"])),
        "(d.data #> '{\"a\",\"b\"}')"
    );
    assert_eq!(text_expr("e0.x", &path(&["a"])), "(e0.x #>> '{\"a\"}')");
    // A quote of the key is backslash-escaped in the array, a single quote doubled in SQL.
    assert_eq!(
        json_expr("d.data", &path(&["it's", "x\"y", "b\\s"])),
        "(d.data #> '{\"it''s\",\"x\\\"y\",\"b\\\\s\"}')"
    );
}

#[test]
fn typed_expressions_guard_the_json_type() {
    let p = path(&["n"]);
    let j = "(d.data #> '{\"n\"}')";
    let t = "(d.data #>> '{\"n\"}')";
    assert_eq!(typed_expr("d.data", true, &p, ValueKind::Json), j);
    assert_eq!(
        typed_expr("d.data", true, &p, ValueKind::Text),
        format!("(CASE WHEN jsonb_typeof({j}) = 'string' THEN {t} END) COLLATE \"C\"")
    );
    assert_eq!(
        typed_expr("d.data", true, &p, ValueKind::Number),
        format!("(CASE WHEN jsonb_typeof({j}) = 'number' THEN {t}::numeric END)")
    );
    assert_eq!(
        typed_expr("d.data", true, &p, ValueKind::Bool),
        format!("(CASE WHEN jsonb_typeof({j}) = 'boolean' THEN {t}::boolean END)")
    );
}

#[test]
fn a_duplicated_column_stands_for_the_field_only_at_the_root() {
    let text = with_column(&["name"], "mt_f_name", "text");
    let number = with_column(&["n"], "mt_f_n", "bigint");
    assert_eq!(
        typed_expr("d.data", true, &text, ValueKind::Text),
        "d.mt_f_name COLLATE \"C\""
    );
    assert_eq!(
        typed_expr("d.data", true, &number, ValueKind::Number),
        "d.mt_f_n"
    );
    assert_eq!(
        typed_expr("e0.x", false, &number, ValueKind::Number),
        "(CASE WHEN jsonb_typeof((e0.x #> '{\"n\"}')) = 'number' THEN (e0.x #>> '{\"n\"}')::numeric END)"
    );
}

#[test]
fn operators_and_values_as_sql() {
    let ops = [
        (CompareOp::Eq, "="),
        (CompareOp::Ne, "<>"),
        (CompareOp::Gt, ">"),
        (CompareOp::Ge, ">="),
        (CompareOp::Lt, "<"),
        (CompareOp::Le, "<="),
    ];
    for (op, sql) in ops {
        assert_eq!(op_sql(op), sql);
    }
    assert_eq!(json_as_text(&json!("a'b")).as_deref(), Some("a'b"));
    assert_eq!(json_as_text(&json!(12.5)).as_deref(), Some("12.5"));
    assert_eq!(json_as_text(&json!(true)).as_deref(), Some("true"));
    assert_eq!(json_as_text(&json!(null)), None);
}

#[test]
fn comparisons_cast_the_parameter_like_the_field() {
    let p = || path(&["v"]);
    let j = "(d.data #> '{\"v\"}')";
    let cases = [
        (
            ValueKind::Json,
            json!({"a": 1}),
            format!("coalesce({j} = $1::jsonb, false)"),
        ),
        (
            ValueKind::Text,
            json!("x"),
            format!(
                "coalesce({} = $1::text, false)",
                typed_expr("d.data", true, &p(), ValueKind::Text)
            ),
        ),
        (
            ValueKind::Number,
            json!(3),
            "coalesce(jsonb_path_match(d.data, 'strict $.\"v\" == $v', $1::jsonb, true), false)"
                .to_owned(),
        ),
        (
            ValueKind::Bool,
            json!(true),
            format!(
                "coalesce({} = $1::boolean, false)",
                typed_expr("d.data", true, &p(), ValueKind::Bool)
            ),
        ),
    ];
    for (kind, value, expected) in cases {
        assert_eq!(
            at_root(&compare(p(), CompareOp::Eq, kind, value)),
            (expected, 1)
        );
    }
}

#[test]
fn an_option_absent_from_the_json_is_none_for_ne_and_eq_none() {
    let j = "(d.data #> '{\"o\"}')";
    let or_null = format!("coalesce({j}, 'null'::jsonb)");
    let json = |p: Path, op, value| at_root(&compare(p, op, ValueKind::Json, value));
    assert_eq!(
        json(path(&["o"]), CompareOp::Eq, json!(null)),
        (format!("coalesce({or_null} = $1::jsonb, false)"), 1)
    );
    assert_eq!(
        json(path(&["o"]), CompareOp::Ne, json!("a")),
        (format!("coalesce({or_null} <> $1::jsonb, false)"), 1)
    );
    assert_eq!(
        json(path(&["o"]), CompareOp::Ne, json!(null)),
        (format!("coalesce({or_null} <> $1::jsonb, false)"), 1)
    );
    // An equality with a value finds no `null`: the plain value.
    assert_eq!(
        json(path(&["o"]), CompareOp::Eq, json!("a")),
        (format!("coalesce({j} = $1::jsonb, false)"), 1)
    );
    // Below a parent, only when the parent is an object (an `Option` parent's `None` has
    // no fields, in Rust too).
    assert_eq!(
        json(path(&["p", "o"]), CompareOp::Eq, json!(null)).0,
        "coalesce(coalesce((d.data #> '{\"p\",\"o\"}'), CASE WHEN jsonb_typeof((d.data #> '{\"p\"}')) = 'object' THEN 'null'::jsonb END) = $1::jsonb, false)"
    );
    // An element's field, below its alias.
    let any = Node::Any {
        path: path(&["l"]),
        inner: Box::new(compare(
            path(&["o"]),
            CompareOp::Ne,
            ValueKind::Json,
            json!(1),
        )),
    };
    let text = at_root(&any).0;
    assert!(
        text.contains("coalesce(coalesce((e0.x #> '{\"o\"}'), CASE WHEN jsonb_typeof(e0.x) = 'object' THEN 'null'::jsonb END) <> $1::jsonb, false)"),
        "{text}"
    );
    // Typed fields keep their semantics: missing is no match.
    let t = typed_expr("d.data", true, &path(&["s"]), ValueKind::Text);
    assert_eq!(
        at_root(&compare(
            path(&["s"]),
            CompareOp::Ne,
            ValueKind::Text,
            json!("a")
        ))
        .0,
        format!("coalesce({t} <> $1::text, false)")
    );
    // On the column: a NULL column is `None`.
    let col = || with_column(&["o"], "mt_f_o", "text");
    assert_eq!(
        json(col(), CompareOp::Eq, json!(null)),
        ("(d.mt_f_o COLLATE \"C\" IS NULL)".to_owned(), 0)
    );
    assert_eq!(
        json(col(), CompareOp::Ne, json!("a")).0,
        "(d.mt_f_o COLLATE \"C\" IS NULL OR coalesce(d.mt_f_o COLLATE \"C\" <> $1::text::text, false))"
    );
}

#[test]
fn a_comparison_on_a_column_is_two_valued_and_index_friendly() {
    let node = compare(
        with_column(&["n"], "mt_f_n", "bigint"),
        CompareOp::Ge,
        ValueKind::Number,
        json!(5),
    );
    assert_eq!(
        at_root(&node),
        (
            "(d.mt_f_n IS NOT NULL AND d.mt_f_n >= $1::text::bigint)".to_owned(),
            1
        )
    );
}

#[test]
fn string_tests_render_on_the_fields_text() {
    let t = "(d.data #>> '{\"s\"}')";
    let cases = [
        (TextOp::StartsWith, format!("starts_with({t}, $1::text)")),
        (
            TextOp::EndsWith,
            format!("right({t}, length($1::text)) = $1::text"),
        ),
        (TextOp::Contains, format!("strpos({t}, $1::text) > 0")),
        (
            TextOp::EqIgnoreCase,
            format!("lower({t} COLLATE \"C\") = lower($1::text COLLATE \"C\")"),
        ),
    ];
    for (op, test) in cases {
        let node = Node::Text {
            path: path(&["s"]),
            op,
            value: "ab".into(),
        };
        assert_eq!(at_root(&node), (format!("coalesce({test}, false)"), 1));
    }
}

#[test]
fn null_contains_and_empty_tests() {
    let j = "(d.data #> '{\"o\"}')";
    let is_null = |negated| Node::IsNull {
        path: path(&["o"]),
        negated,
    };
    let test = format!("({j} IS NULL OR jsonb_typeof({j}) = 'null')");
    assert_eq!(at_root(&is_null(false)), (test.clone(), 0));
    assert_eq!(at_root(&is_null(true)), (format!("NOT {test}"), 0));
    let contains = Node::Contains {
        path: path(&["o"]),
        value: json!(["a"]),
    };
    assert_eq!(
        at_root(&contains),
        (format!("coalesce({j} @> $1::jsonb, false)"), 1)
    );
    let empty = Node::IsEmpty { path: path(&["o"]) };
    assert_eq!(
        at_root(&empty),
        (
            format!("coalesce(jsonb_array_length(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} END), 0) = 0"),
            0
        )
    );
}

#[test]
fn nested_any_names_one_alias_per_level_and_drops_columns() {
    let inner = compare(
        with_column(&["q"], "mt_f_q", "bigint"),
        CompareOp::Gt,
        ValueKind::Number,
        json!(1),
    );
    let node = Node::Any {
        path: path(&["a"]),
        inner: Box::new(Node::Any {
            path: path(&["b"]),
            inner: Box::new(inner),
        }),
    };
    let elements = |j: &str, alias: &str| {
        format!("jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} ELSE '[]'::jsonb END) AS {alias}(x)")
    };
    let q = "jsonb_path_match(e1.x, 'strict $.\"q\" > $v', $1::jsonb, true)";
    assert_eq!(
        at_root(&node),
        (
            format!(
                "EXISTS (SELECT 1 FROM {} WHERE EXISTS (SELECT 1 FROM {} WHERE coalesce({q}, false)))",
                elements("(d.data #> '{\"a\"}')", "e0"),
                elements("(e0.x #> '{\"b\"}')", "e1"),
            ),
            1
        )
    );
}

#[test]
fn combinations_parenthesize_and_empty_ones_are_constants() {
    let leaf = || Node::IsEmpty { path: path(&["l"]) };
    let l = at_root(&leaf()).0;
    assert_eq!(at_root(&Node::And(Vec::new())).0, "TRUE");
    assert_eq!(at_root(&Node::Or(Vec::new())).0, "FALSE");
    assert_eq!(
        at_root(&Node::And(vec![leaf(), leaf()])).0,
        format!("({l} AND {l})")
    );
    assert_eq!(
        at_root(&Node::Or(vec![leaf(), Node::Not(Box::new(leaf()))])).0,
        format!("({l} OR NOT {l})")
    );
}

#[test]
fn raw_fragments_continue_the_numbering_and_bind_their_parameters() {
    let node = Node::And(vec![
        Node::Text {
            path: path(&["s"]),
            op: TextOp::Contains,
            value: "x".into(),
        },
        Node::Raw {
            sql: "d.id = $2 AND $1::bool".into(),
            params: vec![RawParam::Bool(true), RawParam::Int(4)],
        },
    ]);
    let mut sql = Sql::default();
    let text = render(&node, false, &mut sql);
    assert!(text.ends_with(" AND (d.id = $3 AND $2::bool))"), "{text}");
    assert_eq!(format!("{:?}", sql.params), r#"["x", true, 4]"#);
}

#[test]
fn parameters_are_numbered_from_one_in_the_order_added() {
    let mut sql = Sql::default();
    assert_eq!(sql.param(Box::new(1i64)), "$1");
    assert_eq!(sql.param(Box::new("a".to_owned())), "$2");
    assert_eq!(sql.refs().len(), 2);
    assert!(sql.check().is_ok());
    sql.invalid = Some("why".into());
    match sql.checked() {
        Err(marten_core::Error::InvalidQuery(reason)) => assert_eq!(reason, "why"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("an invalid query passed its check"),
    }
}

#[test]
fn a_nul_character_anywhere_in_a_value_makes_the_query_invalid() {
    let nodes = [
        Node::Text {
            path: path(&["s"]),
            op: TextOp::StartsWith,
            value: "a\0".into(),
        },
        compare(
            path(&["s"]),
            CompareOp::Eq,
            ValueKind::Json,
            json!({"k\0": 1}),
        ),
        compare(path(&["s"]), CompareOp::Eq, ValueKind::Text, json!("\0")),
        Node::Contains {
            path: path(&["s"]),
            value: json!([["a\0"]]),
        },
        Node::Raw {
            sql: "$1".into(),
            params: vec![RawParam::Text("\0".into())],
        },
        Node::Raw {
            sql: "$1".into(),
            params: vec![RawParam::Json(json!({"a": "\0"}))],
        },
    ];
    for node in nodes {
        let mut sql = Sql::default();
        let _ = render(&node, false, &mut sql);
        let reason = sql.invalid.unwrap_or_default();
        assert!(reason.contains("NUL character"), "{node:?}: {reason}");
    }
    let mut sql = Sql::default();
    let _ = render(
        &compare(
            path(&["s"]),
            CompareOp::Eq,
            ValueKind::Json,
            json!({"k": "ok"}),
        ),
        false,
        &mut sql,
    );
    assert!(sql.invalid.is_none());
}

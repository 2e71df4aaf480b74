//! The SQL of the richer query features, written out: `is_one_of` (one array
//! parameter, on `jsonb`, on a column, on the id), typed raw parameters, aggregates and
//! selections of fields; `contains` of composite elements, refused nodes and the id.

use marten_core::query::{Node, Path, RawParam, ValueKind};
use serde_json::json;

use super::examples::{at_root, path, with_column};
use super::expr::typed_expr;
use super::{render, Sql};

#[test]
fn is_one_of_binds_one_array_typed_like_the_field() {
    let one_of = |path: Path, kind: ValueKind, values: Vec<serde_json::Value>| {
        at_root(&Node::OneOf { path, kind, values })
    };
    let n = typed_expr("d.data", true, &path(&["n"]), ValueKind::Number);
    assert_eq!(
        one_of(path(&["n"]), ValueKind::Number, vec![json!(1), json!(2)]),
        (
            format!("coalesce({n} = ANY($1::text[]::numeric[]), false)"),
            1
        )
    );
    let s = typed_expr("d.data", true, &path(&["s"]), ValueKind::Text);
    assert_eq!(
        one_of(path(&["s"]), ValueKind::Text, vec![json!("a")]).0,
        format!("coalesce({s} = ANY($1::text[]), false)")
    );
    assert_eq!(
        one_of(path(&["o"]), ValueKind::Json, vec![json!(1)]).0,
        "coalesce((d.data #> '{\"o\"}') = ANY($1::jsonb[]), false)"
    );
    // With `None` among the values, an `Option` absent from the JSON is `None` too (below
    // a present parent object only, as the field's getter has a value only then).
    assert_eq!(
        one_of(path(&["o"]), ValueKind::Json, vec![json!(null)]).0,
        "coalesce(coalesce((d.data #> '{\"o\"}'), 'null'::jsonb) = ANY($1::jsonb[]), false)"
    );
    assert_eq!(
        one_of(path(&["a", "o"]), ValueKind::Json, vec![json!(1), json!(null)]).0,
        "coalesce(coalesce((d.data #> '{\"a\",\"o\"}'), CASE WHEN jsonb_typeof((d.data #> '{\"a\"}')) = 'object' THEN 'null'::jsonb END) = ANY($1::jsonb[]), false)"
    );
    // The id field is the primary key, in its own collation.
    assert_eq!(
        one_of(
            with_column(&["id"], "id", "text"),
            ValueKind::Text,
            vec![json!("x")]
        )
        .0,
        "(d.id IS NOT NULL AND d.id = ANY($1::text[]::text[]))"
    );
    assert_eq!(
        one_of(with_column(&["name"], "mt_f_name", "text"), ValueKind::Text, vec![]).0,
        "(d.mt_f_name COLLATE \"C\" IS NOT NULL AND d.mt_f_name COLLATE \"C\" = ANY($1::text[]::text[]))"
    );
    // An `Option` column: `None` is a NULL column.
    assert_eq!(
        one_of(
            with_column(&["w"], "mt_f_w", "bigint"),
            ValueKind::Json,
            vec![json!(null), json!(3)]
        )
        .0,
        "(d.mt_f_w IS NULL OR (d.mt_f_w IS NOT NULL AND d.mt_f_w = ANY($1::text[]::bigint[])))"
    );
    let mut sql = Sql::default();
    let nul = Node::OneOf {
        path: path(&["s"]),
        kind: ValueKind::Text,
        values: vec![json!("a\u{0}")],
    };
    render(&nul, false, &mut sql);
    assert!(sql.check().is_err());
}

#[test]
fn a_typed_raw_parameter_is_sent_as_itself_and_text_with_nul_is_refused() {
    use super::PgValue;
    let node = Node::Raw {
        sql: "d.id = ANY($1) AND $2 > now()".into(),
        params: vec![
            RawParam::Backend(PgValue::param(vec![1i64, 2])),
            RawParam::Backend(PgValue::param(time::OffsetDateTime::UNIX_EPOCH)),
        ],
    };
    let mut sql = Sql::default();
    sql.param(Box::new("tenant"));
    let text = render(&node, false, &mut sql);
    assert_eq!(text, "(d.id = ANY($2) AND $3 > now())");
    assert_eq!(sql.params.len(), 3);
    assert!(sql.check().is_ok());
    let nul = Node::Raw {
        sql: "$1".into(),
        params: vec![RawParam::Backend(PgValue::param("a\u{0}".to_owned()))],
    };
    let mut sql = Sql::default();
    render(&nul, false, &mut sql);
    assert!(sql.check().is_err());
    let foreign = Node::Raw {
        sql: "$1".into(),
        params: vec![RawParam::Backend(marten_core::query::BackendParam::new(
            1u8, "u8",
        ))],
    };
    let mut sql = Sql::default();
    render(&foreign, false, &mut sql);
    assert!(sql.check().is_err());
}

#[test]
fn aggregates_are_one_jsonb_value_on_the_typed_expression() {
    use marten_core::query::AggregationOp as Op;
    let n = typed_expr("d.data", true, &path(&["n"]), ValueKind::Number);
    let agg = |op, p: Path, kind| super::aggregate_expr(op, &p, kind);
    assert_eq!(
        agg(Op::Sum, path(&["n"]), ValueKind::Number),
        format!("coalesce(to_jsonb(sum({n})), 'null'::jsonb)")
    );
    assert_eq!(
        agg(Op::Avg, path(&["n"]), ValueKind::Number),
        format!("coalesce(to_jsonb(avg({n})::float8), 'null'::jsonb)")
    );
    assert!(agg(Op::Min, path(&["b"]), ValueKind::Bool).contains("bool_and("));
    assert!(agg(Op::Max, path(&["b"]), ValueKind::Bool).contains("bool_or("));
    assert_eq!(
        agg(
            Op::Max,
            with_column(&["id"], "id", "bigint"),
            ValueKind::Number
        ),
        "coalesce(to_jsonb(max(d.id)), 'null'::jsonb)"
    );
    assert_eq!(
        agg(Op::CountDistinct, path(&["o"]), ValueKind::Json),
        "coalesce(to_jsonb(count(DISTINCT NULLIF((d.data #> '{\"o\"}'), 'null'::jsonb))), 'null'::jsonb)"
    );
    // An indexed `Option` field: its typed column, NULL for `None`.
    assert_eq!(
        agg(
            Op::CountDistinct,
            with_column(&["o"], "mt_f_o", "integer"),
            ValueKind::Json
        ),
        "coalesce(to_jsonb(count(DISTINCT d.mt_f_o)), 'null'::jsonb)"
    );
    // `uuid` has no `min` / `max`: its canonical text, in byte order (a uuid's order).
    assert_eq!(
        agg(Op::Min, with_column(&["id"], "id", "uuid"), ValueKind::Text),
        "coalesce(to_jsonb(min(d.id::text COLLATE \"C\")), 'null'::jsonb)"
    );
    assert_eq!(
        agg(
            Op::Max,
            with_column(&["u"], "mt_f_u", "uuid"),
            ValueKind::Text
        ),
        "coalesce(to_jsonb(max(d.mt_f_u::text COLLATE \"C\")), 'null'::jsonb)"
    );
    assert_eq!(
        agg(
            Op::CountDistinct,
            with_column(&["u"], "mt_f_u", "uuid"),
            ValueKind::Text
        ),
        "coalesce(to_jsonb(count(DISTINCT d.mt_f_u)), 'null'::jsonb)"
    );
}

#[test]
fn a_selection_is_a_value_an_array_or_an_object_of_the_fields() {
    use super::{shape_expr, Shape};
    let paths = [path(&["name"]), path(&["a", "it's"])];
    assert_eq!(
        shape_expr(&paths[..1], Shape::Single),
        "coalesce((d.data #> '{\"name\"}'), 'null'::jsonb)"
    );
    assert_eq!(
        shape_expr(&paths, Shape::Array),
        "jsonb_build_array((d.data #> '{\"name\"}'), (d.data #> '{\"a\",\"it''s\"}'))"
    );
    assert_eq!(
        shape_expr(&paths, Shape::Object),
        "jsonb_build_object('name', (d.data #> '{\"name\"}'), 'it''s', (d.data #> '{\"a\",\"it''s\"}'))"
    );
}

#[test]
fn equalities_of_a_document_with_a_gin_index_also_test_containment() {
    use marten_core::query::CompareOp;
    let eq = |path: Path, kind: ValueKind, op: CompareOp, value: serde_json::Value, gin: bool| {
        let mut sql = Sql::default();
        let node = Node::Compare {
            path,
            op,
            kind,
            value,
        };
        let text = render(&node, gin, &mut sql);
        (text, sql.params.len())
    };
    let city = typed_expr("d.data", true, &path(&["address", "city"]), ValueKind::Text);
    // The containment document nests the path; the equality stays, with its own parameter.
    assert_eq!(
        eq(
            path(&["address", "city"]),
            ValueKind::Text,
            CompareOp::Eq,
            json!("Oslo"),
            true
        ),
        (
            format!("(d.data @> $1::jsonb AND coalesce({city} = $2::text, false))"),
            2
        )
    );
    // Not without the index, not for other operators, nulls, objects, or a column.
    let plain = |path: Path, kind, op, value| eq(path, kind, op, value, true).0;
    for (text, why) in [
        (
            eq(
                path(&["n"]),
                ValueKind::Number,
                CompareOp::Eq,
                json!(1),
                false,
            )
            .0,
            "no index",
        ),
        (
            plain(path(&["n"]), ValueKind::Number, CompareOp::Gt, json!(1)),
            "not an equality",
        ),
        (
            plain(path(&["o"]), ValueKind::Json, CompareOp::Eq, json!(null)),
            "null",
        ),
        (
            plain(
                path(&["o"]),
                ValueKind::Json,
                CompareOp::Eq,
                json!({"a": 1}),
            ),
            "an object",
        ),
        (
            plain(
                with_column(&["r"], "mt_f_r", "text"),
                ValueKind::Text,
                CompareOp::Eq,
                json!("x"),
            ),
            "a column",
        ),
    ] {
        assert!(!text.contains("@>"), "{why}: {text}");
    }
}

#[test]
fn contains_of_an_array_or_object_element_also_tests_an_equal_element() {
    let contains = |value: serde_json::Value| {
        at_root(&Node::Contains {
            path: path(&["g"]),
            value,
        })
    };
    let j = "(d.data #> '{\"g\"}')";
    // Scalars (and `null`): containment is element equality.
    for scalar in [json!(["a"]), json!([1]), json!([true]), json!([null])] {
        assert_eq!(
            contains(scalar),
            (format!("coalesce({j} @> $1::jsonb, false)"), 1)
        );
    }
    // Arrays and objects: containment, then an element equal to the parameter's element.
    for composite in [json!([[1]]), json!([[]]), json!([{"name": "a"}])] {
        assert_eq!(
            contains(composite),
            (
                format!(
                    "(coalesce({j} @> $1::jsonb, false) AND EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} END) AS c0(v) WHERE c0.v = $1::jsonb -> 0))"
                ),
                1
            )
        );
    }
}

#[test]
fn an_invalid_node_refuses_the_query_with_its_reason() {
    let mut sql = Sql::default();
    let node = Node::And(vec![Node::Invalid {
        reason: "the value compared with `score` is NaN".into(),
    }]);
    assert_eq!(render(&node, false, &mut sql), "(FALSE)");
    assert!(sql.params.is_empty());
    assert_eq!(
        sql.invalid.as_deref(),
        Some("the value compared with `score` is NaN")
    );
}

#[test]
fn an_equality_on_the_id_is_on_the_column_in_its_own_collation() {
    use marten_core::query::CompareOp;
    let id = || with_column(&["id"], "id", "text");
    let compare = |op: CompareOp| {
        at_root(&Node::Compare {
            path: id(),
            op,
            kind: ValueKind::Text,
            value: json!("k1"),
        })
        .0
    };
    assert_eq!(
        compare(CompareOp::Eq),
        "(d.id IS NOT NULL AND d.id = $1::text::text)"
    );
    assert_eq!(
        compare(CompareOp::Ne),
        "(d.id IS NOT NULL AND d.id <> $1::text::text)"
    );
    // An order keeps Rust's byte order.
    assert_eq!(
        compare(CompareOp::Gt),
        "(d.id COLLATE \"C\" IS NOT NULL AND d.id COLLATE \"C\" > $1::text::text)"
    );
    // A duplicated text column is byte-ordered itself.
    assert_eq!(
        at_root(&Node::Compare {
            path: with_column(&["name"], "mt_f_name", "text"),
            op: CompareOp::Eq,
            kind: ValueKind::Text,
            value: json!("a"),
        })
        .0,
        "(d.mt_f_name COLLATE \"C\" IS NOT NULL AND d.mt_f_name COLLATE \"C\" = $1::text::text)"
    );
}

//! Field paths, the nodes each operator builds and the Rust predicate it pairs with, on
//! hand-written field paths (what `#[derive(Document)]` generates).

use super::*;

struct Line {
    sku: String,
    qty: i32,
}

struct LineFields<R> {
    sku: Field<R, String>,
    qty: Field<R, i32>,
}

impl HasFields for Line {
    type Fields<R: 'static> = LineFields<R>;
    fn fields_at<R: 'static>(base: Base<R, Self>) -> LineFields<R> {
        LineFields {
            sku: base.field("sku", None, |l: &Line| &l.sku),
            qty: base.field("qty", None, |l: &Line| &l.qty),
        }
    }
}

struct Address {
    city: String,
}

struct Doc {
    name: String,
    rating: i32,
    note: Option<String>,
    tags: Vec<String>,
    lines: Vec<Line>,
    home: Address,
    work: Option<Address>,
}

fn doc() -> Doc {
    Doc {
        name: "Ada Lovelace".into(),
        rating: 5,
        note: None,
        tags: vec!["math".into(), "poetry".into()],
        lines: vec![
            Line {
                sku: "A-1".into(),
                qty: 2,
            },
            Line {
                sku: "B-2".into(),
                qty: 7,
            },
        ],
        home: Address {
            city: "London".into(),
        },
        work: None,
    }
}

fn root() -> Base<Doc, Doc> {
    Base::root()
}

fn name() -> Field<Doc, String> {
    root().field("name", Some(("mt_f_name", "text")), |d: &Doc| &d.name)
}

fn rating() -> Field<Doc, i32> {
    root().field("rating", None, |d: &Doc| &d.rating)
}

fn note() -> Field<Doc, Option<String>> {
    root().field("note", None, |d: &Doc| &d.note)
}

fn tags() -> Field<Doc, Vec<String>> {
    root().field("tags", None, |d: &Doc| &d.tags)
}

fn lines() -> Field<Doc, Vec<Line>> {
    root().field("lines", None, |d: &Doc| &d.lines)
}

#[test]
fn a_root_field_keeps_its_column_and_a_nested_one_drops_it() {
    assert_eq!(
        name().path(),
        &Path {
            segments: vec!["name"],
            column: Some(("mt_f_name", "text")),
        }
    );
    let city = root().nested("home", |d: &Doc| &d.home).field(
        "city",
        Some(("mt_f_city", "text")),
        |a: &Address| &a.city,
    );
    assert_eq!(
        city.path(),
        &Path {
            segments: vec!["home", "city"],
            column: None,
        }
    );
    assert!(city.eq("London").matches(&doc()));
    assert!(!city.eq("Paris").matches(&doc()));
}

#[test]
fn a_field_behind_a_missing_option_matches_nothing() {
    let city =
        root()
            .nested_option("work", |d: &Doc| &d.work)
            .field("city", None, |a: &Address| &a.city);
    assert_eq!(city.path().segments, vec!["work", "city"]);
    let mut d = doc();
    assert!(!city.eq("London").matches(&d));
    assert!(!city.ne("London").matches(&d));
    d.work = Some(Address {
        city: "Paris".into(),
    });
    assert!(city.eq("Paris").matches(&d));
    assert!(city.ne("London").matches(&d));
}

#[test]
fn comparisons_build_their_node_and_agree_in_rust() {
    let d = doc();
    let cases: [(Filter<Doc>, CompareOp, bool); 6] = [
        (rating().eq(5), CompareOp::Eq, true),
        (rating().ne(5), CompareOp::Ne, false),
        (rating().gt(4), CompareOp::Gt, true),
        (rating().ge(6), CompareOp::Ge, false),
        (rating().lt(5), CompareOp::Lt, false),
        (rating().le(5), CompareOp::Le, true),
    ];
    for (filter, expected_op, expected_match) in cases {
        match filter.node() {
            Node::Compare {
                path,
                op,
                kind,
                value,
            } => {
                assert_eq!(path.segments, vec!["rating"]);
                assert_eq!(*op, expected_op);
                assert_eq!(*kind, ValueKind::Number);
                assert!(*value == 4 || *value == 5 || *value == 6, "{value}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(filter.matches(&d), expected_match, "{expected_op:?}");
    }
}

#[test]
fn each_type_compares_with_its_kind() {
    let kind = |f: Filter<Doc>| match f.node() {
        Node::Compare { kind, .. } => *kind,
        other => panic!("{other:?}"),
    };
    assert_eq!(kind(name().eq("x")), ValueKind::Text);
    assert_eq!(kind(rating().eq(1)), ValueKind::Number);
    assert_eq!(kind(note().eq(None)), ValueKind::Json);
    assert_eq!(kind(tags().eq(Vec::<String>::new())), ValueKind::Json);
    assert_eq!(<bool as Comparable>::KIND, ValueKind::Bool);
    assert_eq!(<uuid::Uuid as Comparable>::KIND, ValueKind::Text);
    assert_eq!(<f64 as Comparable>::KIND, ValueKind::Number);
}

#[test]
fn string_tests_build_text_nodes_and_agree_in_rust() {
    let d = doc();
    let text = |f: &Filter<Doc>| match f.node() {
        Node::Text { op, value, .. } => (*op, value.clone()),
        other => panic!("{other:?}"),
    };
    let starts = name().starts_with("Ada");
    assert_eq!(text(&starts), (TextOp::StartsWith, "Ada".to_owned()));
    assert!(starts.matches(&d));
    assert!(!name().starts_with("Love").matches(&d));
    let ends = name().ends_with("lace");
    assert_eq!(text(&ends), (TextOp::EndsWith, "lace".to_owned()));
    assert!(ends.matches(&d));
    assert!(!name().ends_with("Ada").matches(&d));
    let contains = name().contains("Love");
    assert_eq!(text(&contains), (TextOp::Contains, "Love".to_owned()));
    assert!(contains.matches(&d));
    assert!(!name().contains("love").matches(&d));
    let same = name().eq_ignore_case("ADA LOVELACE");
    assert_eq!(
        text(&same),
        (TextOp::EqIgnoreCase, "ADA LOVELACE".to_owned())
    );
    assert!(same.matches(&d));
    assert!(!name().eq_ignore_case("ADA").matches(&d));
}

#[test]
fn a_collection_contains_an_element_as_a_one_element_array() {
    let f = tags().contains("math");
    match f.node() {
        Node::Contains { path, value } => {
            assert_eq!(path.segments, vec!["tags"]);
            assert_eq!(*value, serde_json::json!(["math"]));
        }
        other => panic!("{other:?}"),
    }
    assert!(f.matches(&doc()));
    assert!(!tags().contains("mat").matches(&doc()));
}

#[test]
fn option_and_emptiness_tests() {
    let mut d = doc();
    assert!(note().is_none().matches(&d));
    assert!(!note().is_some().matches(&d));
    assert!(matches!(
        note().is_some().node(),
        Node::IsNull { negated: true, .. }
    ));
    assert!(matches!(
        note().is_none().node(),
        Node::IsNull { negated: false, .. }
    ));
    d.note = Some("n".into());
    assert!(!note().is_none().matches(&d));
    assert!(note().is_some().matches(&d));

    assert!(!tags().is_empty().matches(&d));
    assert!(matches!(tags().is_empty().node(), Node::IsEmpty { .. }));
    d.tags.clear();
    assert!(tags().is_empty().matches(&d));
}

#[test]
fn any_renders_the_element_filter_relative_to_the_element() {
    let f = lines().any(|l: LineFields<Line>| l.sku.eq("B-2").and(l.qty.gt(5)));
    match f.node() {
        Node::Any { path, inner } => {
            assert_eq!(path.segments, vec!["lines"]);
            match inner.as_ref() {
                Node::And(parts) => match &parts[0] {
                    Node::Compare { path, .. } => assert_eq!(path.segments, vec!["sku"]),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(f.matches(&doc()));
    // The two conditions must hold on the same element.
    assert!(!lines()
        .any(|l: LineFields<Line>| l.sku.eq("A-1").and(l.qty.gt(5)))
        .matches(&doc()));
}

#[test]
fn combinators_combine_nodes_and_predicates() {
    let d = doc();
    let (yes, no) = (|| rating().eq(5), || rating().eq(1));
    assert!(yes().and(yes()).matches(&d));
    assert!(!yes().and(no()).matches(&d));
    assert!(yes().or(no()).matches(&d));
    assert!(!no().or(no()).matches(&d));
    assert!(no().not().matches(&d));
    assert!(!yes().not().matches(&d));
    assert!(Filter::<Doc>::all().matches(&d));
    assert!(matches!(yes().and(no()).node(), Node::And(v) if v.len() == 2));
    assert!(matches!(yes().or(no()).node(), Node::Or(v) if v.len() == 2));
    assert!(matches!(yes().not().node(), Node::Not(_)));
    assert!(matches!(Filter::<Doc>::all().node(), Node::And(v) if v.is_empty()));
}

#[test]
fn a_raw_filter_keeps_its_sql_and_counts_as_true_in_rust() {
    let f = Filter::<Doc>::raw("d.id = $1::bigint", vec![RawParam::Int(3)]);
    match f.node() {
        Node::Raw { sql, params } => {
            assert_eq!(sql, "d.id = $1::bigint");
            assert_eq!(params, &vec![RawParam::Int(3)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(f.matches(&doc()));
}

#[test]
fn orders_carry_path_kind_and_direction() {
    let asc = name().asc();
    assert_eq!(asc.path, *name().path());
    assert_eq!(asc.kind, ValueKind::Text);
    assert!(!asc.descending);
    let desc = rating().desc();
    assert_eq!(desc.path.segments, vec!["rating"]);
    assert_eq!(desc.kind, ValueKind::Number);
    assert!(desc.descending);
}

#[test]
fn is_one_of_builds_one_node_with_every_value_and_agrees_in_rust() {
    let f = rating().is_one_of([1, 5, 7]);
    match f.node() {
        Node::OneOf { path, kind, values } => {
            assert_eq!(path.segments, vec!["rating"]);
            assert_eq!(*kind, ValueKind::Number);
            assert_eq!(
                *values,
                vec![
                    serde_json::json!(1),
                    serde_json::json!(5),
                    serde_json::json!(7)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(f.matches(&doc()));
    assert!(!rating().is_one_of([1, 2]).matches(&doc()));
    assert!(!rating().is_one_of(Vec::<i32>::new()).matches(&doc()));
    assert!(name().is_one_of(["x", "Ada Lovelace"]).matches(&doc()));
    assert!(note()
        .is_one_of([None, Some("n".to_owned())])
        .matches(&doc()));
}

#[test]
fn aggregations_carry_their_op_and_path_and_compute_in_rust() {
    let mut other = doc();
    other.rating = 2;
    other.name = "Ada".into();
    other.note = Some("n".into());
    let docs = [doc(), other];
    let sum = rating().sum();
    assert_eq!((sum.op, sum.kind), (AggregationOp::Sum, ValueKind::Number));
    assert_eq!(sum.path.segments, vec!["rating"]);
    assert_eq!(sum.compute(&docs).ok(), Some(Some(7i64)));
    assert_eq!(sum.compute(&[]).ok(), Some(None));
    assert_eq!(rating().avg().compute(&docs).ok(), Some(Some(3.5)));
    assert_eq!(rating().avg().compute(&[]).ok(), Some(None));
    let min = name().min();
    assert_eq!((min.op, min.kind), (AggregationOp::Min, ValueKind::Text));
    assert_eq!(min.compute(&docs).ok().flatten().as_deref(), Some("Ada"));
    assert_eq!(
        name().max().compute(&docs).ok().flatten().as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(rating().max().compute(&[]).ok(), Some(None));
    assert_eq!(
        note().count_distinct().compute(&docs).ok(),
        Some(1),
        "None is no value"
    );
    assert_eq!(name().count_distinct().compute(&docs).ok(), Some(2));
    assert_eq!(
        root()
            .field("n", None, |_: &Doc| &None::<i32>)
            .sum()
            .compute(&docs)
            .ok(),
        Some(None)
    );
}

#[test]
fn a_sum_out_of_range_is_an_error_naming_the_document_and_field() {
    let docs = [doc(), doc()];
    let big = root().field("big", None, |_: &Doc| &i64::MAX);
    match big.sum().compute(&docs) {
        Err(crate::Error::CorruptData { owner, detail, .. }) => {
            assert_eq!(owner, std::any::type_name::<Doc>());
            assert!(
                detail.contains("`big`") && detail.contains("18446744073709551614"),
                "{detail}"
            );
        }
        other => panic!("expected CorruptData, got {other:?}"),
    }
    // One such value fits; so do values that add up in range on the whole.
    assert_eq!(big.sum().compute(&docs[..1]).ok(), Some(Some(i64::MAX)));
    let least = root().field("least", None, |_: &Doc| &u64::MAX);
    assert!(least.sum().compute(&docs).is_err());
    assert_eq!(least.max().compute(&docs).ok(), Some(Some(u64::MAX)));
    assert_eq!(least.avg().compute(&docs).ok(), Some(Some(u64::MAX as f64)));
}

#[test]
fn an_f32_value_is_written_as_a_document_holds_it() {
    assert_eq!(
        bounds::to_json(&123.45f32),
        serde_json::json!(123.45),
        "the shortest form, not the widened f64"
    );
    assert_eq!(bounds::to_json(&vec![0.1f32]), serde_json::json!([0.1]));
    assert_eq!(bounds::to_json(&u64::MAX), serde_json::json!(u64::MAX));
}

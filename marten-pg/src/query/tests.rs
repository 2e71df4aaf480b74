//! The statements of a query spec, without a database: how filters combine in the WHERE
//! clause and share one numbering of placeholders, how sort keys and paging render, the
//! form with the total count, and the count statement.

use marten_core::query::{Base, Field, Filter, RawParam};

use super::spec::QuerySpec;
use super::statement::{row_count, Scoped};

struct Doc {
    name: String,
    rating: i32,
}

fn name() -> Field<Doc, String> {
    Base::root().field("name", Some(("mt_f_name", "text")), |d: &Doc| &d.name)
}

fn rating() -> Field<Doc, i32> {
    Base::root().field("rating", None, |d: &Doc| &d.rating)
}

const RATING: &str = "(CASE WHEN jsonb_typeof((d.data #> '{\"rating\"}')) = 'number' THEN (d.data #>> '{\"rating\"}')::numeric END)";

fn spec(filters: Vec<Filter<Doc>>) -> QuerySpec<Doc> {
    QuerySpec {
        filters,
        ..QuerySpec::default()
    }
}

#[test]
fn no_filter_selects_every_document_by_id() {
    let sql = spec(Vec::new()).select_from("mt_doc_doc", Scoped::tenant(None), true);
    assert_eq!(
        sql.text,
        "SELECT d.data, d.id FROM mt_doc_doc d WHERE TRUE ORDER BY d.id ASC"
    );
    assert!(sql.params.is_empty());
    assert!(sql.check().is_ok());
}

#[test]
fn filters_join_with_and_and_number_their_parameters_in_order() {
    let q = QuerySpec {
        take: Some(10),
        skip: Some(20),
        ..spec(vec![
            name().eq("Ada"),
            Filter::raw(
                "d.id = $2::bigint OR $1::int > 0",
                vec![RawParam::Int(1), RawParam::Int(2)],
            ),
            rating().gt(3),
        ])
    };
    let sql = q.select_from("mt_doc_doc", Scoped::tenant(None), true);
    assert_eq!(
        sql.text,
        format!(
            "SELECT d.data, d.id FROM mt_doc_doc d WHERE \
             ((d.mt_f_name COLLATE \"C\" IS NOT NULL AND d.mt_f_name COLLATE \"C\" = $1::text::text)) \
             AND ((d.id = $3::bigint OR $2::int > 0)) \
             AND (coalesce(jsonb_path_match(d.data, 'strict $.\"rating\" > $v', $4::jsonb, true), false)) \
             ORDER BY d.id ASC LIMIT $5 OFFSET $6"
        )
    );
    assert_eq!(sql.params.len(), 6);
}

#[test]
fn nested_combinations_share_one_numbering() {
    let f = name()
        .eq("a")
        .or(Filter::raw("$1 = $1", vec![RawParam::Text("x".into())]))
        .and(rating().lt(9).not());
    let sql = spec(vec![f, rating().ge(1)]).count_from("t", Scoped::tenant(None));
    assert_eq!(
        sql.text,
        format!(
            "SELECT count(*) FROM t d WHERE \
             ((((d.mt_f_name COLLATE \"C\" IS NOT NULL AND d.mt_f_name COLLATE \"C\" = $1::text::text) \
             OR ($2 = $2)) AND NOT coalesce(jsonb_path_match(d.data, 'strict $.\"rating\" < $v', $3::jsonb, true), false))) \
             AND (coalesce(jsonb_path_match(d.data, 'strict $.\"rating\" >= $v', $4::jsonb, true), false))"
        )
    );
    assert_eq!(sql.params.len(), 4);
}

#[test]
fn sort_keys_render_in_order_with_missing_values_at_the_ends() {
    let q = QuerySpec {
        orders: vec![rating().desc(), name().asc()],
        ..spec(Vec::new())
    };
    let sql = q.select_from("t", Scoped::tenant(None), true);
    assert_eq!(
        sql.text,
        format!(
            "SELECT d.data, d.id FROM t d WHERE TRUE ORDER BY {RATING} DESC NULLS LAST, \
             d.mt_f_name COLLATE \"C\" ASC NULLS FIRST, d.id ASC"
        )
    );
}

#[test]
fn paging_adds_only_what_is_set_after_the_filters_parameters() {
    let take_only = QuerySpec {
        take: Some(3),
        ..spec(vec![rating().eq(1)])
    };
    let text = take_only.select_from("t", Scoped::tenant(None), true).text;
    assert!(text.ends_with("ORDER BY d.id ASC LIMIT $2"), "{text}");
    let skip_only = QuerySpec {
        skip: Some(3),
        ..spec(vec![rating().eq(1)])
    };
    let text = skip_only.select_from("t", Scoped::tenant(None), true).text;
    assert!(text.ends_with("ORDER BY d.id ASC OFFSET $2"), "{text}");
    // Unpaged, neither is rendered nor bound.
    let both = QuerySpec {
        take: Some(3),
        skip: Some(4),
        ..spec(Vec::new())
    };
    let sql = both.select_from("t", Scoped::tenant(None), false);
    assert!(sql.text.ends_with("ORDER BY d.id ASC"), "{}", sql.text);
    assert!(sql.params.is_empty());
}

#[test]
fn skip_and_take_beyond_bigint_saturate() {
    assert_eq!(row_count(0), 0);
    assert_eq!(row_count(25), 25);
    assert_eq!(row_count(usize::MAX), i64::MAX);
}

#[test]
fn the_total_form_counts_and_pages_in_one_statement() {
    let q = QuerySpec {
        orders: vec![rating().desc()],
        take: Some(10),
        skip: Some(0),
        with_total: true,
        ..spec(vec![rating().gt(2)])
    };
    let sql = q.select_from("t", Scoped::tenant(None), true);
    let wh =
        "(coalesce(jsonb_path_match(d.data, 'strict $.\"rating\" > $v', $1::jsonb, true), false))";
    assert_eq!(
        sql.text,
        format!(
            "SELECT p.data, c.total, p.id FROM (SELECT count(*) AS total FROM t d WHERE {wh}) c \
             LEFT JOIN LATERAL (SELECT d.data AS data, d.id AS id, {RATING} AS k0, d.id AS k1 \
             FROM t d WHERE {wh} ORDER BY k0 DESC NULLS LAST, k1 ASC LIMIT $2 OFFSET $3) p ON true \
             ORDER BY p.k0 DESC NULLS LAST, p.k1 ASC"
        )
    );
    assert_eq!(sql.params.len(), 3);
}

#[test]
fn an_invalid_raw_fragment_fails_the_check_of_every_statement() {
    let q = spec(vec![Filter::raw("d.id = $2", vec![RawParam::Int(1)])]);
    let select = q.select_from("t", Scoped::tenant(None), true);
    assert!(select.text.contains("WHERE ((FALSE))"), "{}", select.text);
    assert!(select.check().is_err());
    assert!(q.count_from("t", Scoped::tenant(None)).checked().is_err());
}

#[test]
fn a_selection_replaces_the_document_in_both_select_forms() {
    let q = QuerySpec {
        shape: Some("jsonb_build_array(x)".into()),
        take: Some(5),
        ..spec(vec![rating().gt(1)])
    };
    let text = q.select_from("t", Scoped::tenant(None), true).text;
    assert!(
        text.starts_with("SELECT jsonb_build_array(x), d.id FROM t d WHERE"),
        "{text}"
    );
    let paged = QuerySpec {
        with_total: true,
        ..q
    };
    let text = paged.select_from("t", Scoped::tenant(None), true).text;
    assert!(
        text.contains("(SELECT jsonb_build_array(x) AS data, d.id AS id"),
        "{text}"
    );
}

#[test]
fn an_aggregate_has_the_tenant_first_and_no_paging() {
    let q = QuerySpec {
        take: Some(5),
        orders: vec![rating().desc()],
        ..spec(vec![rating().gt(1)])
    };
    let sql = q.aggregate_from("t", Scoped::tenant(Some(None)), "sum(1)");
    assert_eq!(
        sql.text,
        format!("SELECT sum(1) FROM t d WHERE d.tenant_id = $1 AND CASE WHEN d.tenant_id = $1 THEN true ELSE false END AND (coalesce(jsonb_path_match(d.data, 'strict $.\"rating\" > $v', $2::jsonb, true), false))")
    );
    assert_eq!(sql.params.len(), 2);
    // Without filters the tenant's match is the whole condition.
    let sql = spec(vec![]).aggregate_from("t", Scoped::tenant(Some(None)), "sum(1)");
    assert_eq!(sql.text, "SELECT sum(1) FROM t d WHERE d.tenant_id = $1");
}

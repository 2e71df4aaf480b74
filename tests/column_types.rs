//! Indexed columns typed by `ColumnType` (issue #13): an `Option`, a type alias, a path
//! and a user type can be indexed; each column has its field type's SQL type; queries on
//! them use the column and agree with Rust's own filter, `None` included.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::query::{Comparable, Filter, Orderable, ValueKind};
use marten::ColumnType;
use serde::{Deserialize, Serialize};

type Points = i64;

/// A user type: serde writes it as its inner string.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, PartialOrd)]
#[serde(transparent)]
struct Sku(String);

impl ColumnType for Sku {
    const SQL_TYPE: &'static str = "text";
}

impl Comparable for Sku {
    const KIND: ValueKind = ValueKind::Text;
}

impl Orderable for Sku {}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Parcel {
    id: Uuid,
    #[document(index)]
    weight_grams: Option<i64>,
    #[document(index)]
    points: Points,
    #[document(unique)]
    label: std::string::String,
    #[document(index)]
    sku: Sku,
    #[document(index)]
    ratio: Option<f32>,
    #[document(unique)]
    code: Option<String>,
    #[document(index)]
    small: u8,
}

fn parcel(n: u8) -> Parcel {
    Parcel {
        id: Uuid::now_v7(),
        weight_grams: (!n.is_multiple_of(3)).then_some(i64::from(n) * 100),
        points: i64::from(n) * 10 - 40,
        label: format!("label-{n}"),
        sku: Sku(format!("A-{}", n % 4)),
        ratio: n.is_multiple_of(2).then_some(f32::from(n) / 4.0),
        // Several `None`s under a unique index: NULLs are distinct.
        code: (n % 2 == 1).then(|| format!("c{n}")),
        small: n,
    }
}

#[tokio::test]
async fn columns_have_the_field_types_sql_type() {
    let (schema, b) = builder("column_types_ddl");
    let _store = ok(b.document::<Parcel>().build().await);
    let raw = schema.raw_client().await;
    let rows = raw
        .query(
            "SELECT column_name::text, data_type::text, is_generated::text \
             FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'mt_doc_parcel' AND column_name LIKE 'mt_f_%' \
             ORDER BY column_name",
            &[&schema.name()],
        )
        .await
        .expect("columns");
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want = [
        ("mt_f_code", "text"),
        ("mt_f_label", "text"),
        ("mt_f_points", "bigint"),
        ("mt_f_ratio", "double precision"),
        ("mt_f_sku", "text"),
        ("mt_f_small", "integer"),
        ("mt_f_weight_grams", "bigint"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned(), "ALWAYS".to_owned()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn queries_on_typed_columns_agree_with_rust() {
    let (_schema, b) = builder("column_types_query");
    let store = ok(b.document::<Parcel>().build().await);
    let docs: Vec<Parcel> = (1..=12).map(parcel).collect();
    let mut w = store.lightweight_session();
    for d in &docs {
        ok(w.store(d.clone()));
    }
    ok(w.save_changes().await);

    let f = Parcel::fields();
    let cases: Vec<(&str, Filter<Parcel>)> = vec![
        ("weight_grams", f.weight_grams.eq(Some(400))),
        ("weight_grams", f.weight_grams.eq(None)),
        ("weight_grams", f.weight_grams.ne(None)),
        ("weight_grams", f.weight_grams.ne(Some(400))),
        ("weight_grams", f.weight_grams.eq(None).not()),
        ("weight_grams", f.weight_grams.ne(Some(400)).not()),
        ("points", f.points.gt(0)),
        ("points", f.points.le(-20)),
        ("label", f.label.eq("label-7")),
        ("sku", f.sku.eq(Sku("A-2".into()))),
        ("sku", f.sku.ge(Sku("A-2".into()))),
        ("ratio", f.ratio.eq(Some(1.5))),
        ("ratio", f.ratio.eq(None)),
        ("code", f.code.eq(Some("c5".to_owned()))),
        ("small", f.small.lt(4)),
    ];
    let mut s = store.query_session();
    for (column, filter) in cases {
        let q = s.query::<Parcel>().where_filter(filter.clone());
        let sql = q.to_sql();
        assert!(sql.contains(&format!("d.mt_f_{column}")), "{sql}");
        let mut got: Vec<Uuid> = ok(q.to_list().await).iter().map(|d| d.id).collect();
        let mut want: Vec<Uuid> = docs
            .iter()
            .filter(|d| filter.matches(d))
            .map(|d| d.id)
            .collect();
        got.sort();
        want.sort();
        assert!(!want.is_empty(), "each case matches something: {filter:?}");
        assert_eq!(got, want, "{filter:?}: {sql}");
    }

    let by_sku: Vec<Sku> = ok(s
        .query::<Parcel>()
        .order_by(|f| f.sku.desc())
        .take(3)
        .to_list()
        .await)
    .into_iter()
    .map(|d| d.sku)
    .collect();
    assert_eq!(by_sku, vec![Sku("A-3".into()); 3]);
}

//! Richer typed queries against PostgreSQL: `is_one_of` (on the primary key, on an
//! indexed column with `EXPLAIN` on 20,000 rows, on `jsonb`), typed `where_sql`
//! parameters, aggregates and selecting into another shape; each on a conjoined type,
//! where two tenants with the same ids see only their own rows.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Invoice {
    id: i64,
    #[document(index)]
    customer: String,
    total: i64,
    rate: f64,
    note: Option<String>,
}

fn invoice(id: i64, customer: &str, total: i64) -> Invoice {
    Invoice {
        id,
        customer: customer.into(),
        total,
        rate: total as f64 / 4.0,
        note: (total % 2 == 0).then(|| format!("n{total}")),
    }
}

/// A store with `Invoice`, and the same ids 1..=4 under tenants "red" (totals 10, 20,
/// 30, 40 for customers a, b, a, c) and "blue" (totals 1000.. for customers x, y).
async fn seeded(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Invoice>().build().await);
    let mut red = ok(store.lightweight_session_for("red"));
    for (id, c) in [(1, "a"), (2, "b"), (3, "a"), (4, "c")] {
        ok(red.store(invoice(id, c, id * 10)));
    }
    ok(red.save_changes().await);
    let mut blue = ok(store.lightweight_session_for("blue"));
    for (id, c) in [(1, "x"), (2, "y"), (3, "x"), (4, "y")] {
        ok(blue.store(invoice(id, c, 1000 + id)));
    }
    ok(blue.save_changes().await);
    (schema, store)
}

fn ids(found: &[Invoice]) -> Vec<i64> {
    found.iter().map(|i| i.id).collect()
}

#[tokio::test]
async fn is_one_of_per_tenant_on_the_id_a_column_and_jsonb() {
    let (_schema, store) = seeded("agg_one_of").await;
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    let q = red
        .query::<Invoice>()
        .filter(|f| f.id.is_one_of([1, 3, 99]));
    let sql = q.to_sql();
    assert!(
        sql.contains("d.tenant_id = $1") && sql.contains("d.id = ANY($2::text[]::bigint[])"),
        "the tenant first, then the ids on the primary key: {sql}"
    );
    let found = ok(q.order_by(|f| f.id.asc()).to_list().await);
    assert_eq!(ids(&found), [1, 3]);
    assert!(found.iter().all(|i| i.total < 1000), "only red's rows");
    let found = ok(blue
        .query::<Invoice>()
        .filter(|f| f.id.is_one_of([1, 3, 99]))
        .order_by(|f| f.id.asc())
        .to_list()
        .await);
    assert_eq!(
        found.iter().map(|i| i.total).collect::<Vec<_>>(),
        [1001, 1003]
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .filter(|f| f.customer.is_one_of(["a", "c", "x"]))
            .count()
            .await),
        3
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .filter(|f| f.total.is_one_of([20, 40, 1002]))
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .filter(|f| f.note.is_one_of([None, Some("n20".to_owned())]))
            .count()
            .await),
        1,
        "odd totals have no note, and red's totals are all even"
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .filter(|f| f.id.is_one_of(Vec::<i64>::new()))
            .count()
            .await),
        0
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .filter(|f| f.customer.is_one_of(["a"]).not())
            .count()
            .await),
        2
    );
    let mut none = store.query_session();
    assert!(matches!(
        none.query::<Invoice>()
            .filter(|f| f.id.is_one_of([1]))
            .to_list()
            .await,
        Err(marten::Error::TenantRequired { .. })
    ));
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Customer {
    id: Uuid,
    #[document(index)]
    region: String,
}

#[tokio::test]
async fn is_one_of_on_an_indexed_field_and_on_the_id_uses_the_index() {
    let (schema, b) = builder("agg_one_of_explain");
    let store = ok(b.document::<Customer>().build().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "INSERT INTO mt_doc_customer (id, data) SELECT u, jsonb_build_object('id', u, 'region', 'r' || (i % 1000)) \
         FROM (SELECT gen_random_uuid() AS u, i FROM generate_series(1, 20000) AS i) s; ANALYZE mt_doc_customer",
    )
    .await
    .expect("seed 20,000 rows");
    let ids: Vec<Uuid> = raw
        .query("SELECT id FROM mt_doc_customer ORDER BY id LIMIT 3", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut s = store.query_session();
    let regions = ["r7", "r42", "r999"];
    let q = s
        .query::<Customer>()
        .filter(|f| f.region.is_one_of(regions));
    let sql = q.to_sql();
    assert_eq!(ok(q.count().await), 60);
    let plan = explain(&raw, &sql, &regions.map(String::from)).await;
    assert!(
        plan.contains("mt_doc_customer_idx_region"),
        "is_one_of on an indexed field uses its index: {plan}"
    );
    let q = s
        .query::<Customer>()
        .filter(|f| f.id.is_one_of(ids.clone()));
    let sql = q.to_sql();
    assert_eq!(ok(q.count().await), 3);
    let texts: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let plan = explain(&raw, &sql, &texts).await;
    assert!(
        plan.contains("mt_doc_customer_pkey"),
        "is_one_of on the id uses the primary key: {plan}"
    );
}

/// The plan of a statement whose one parameter is a `text[]`.
async fn explain(raw: &tokio_postgres::Client, sql: &str, values: &[String]) -> String {
    let rows = raw
        .query(&format!("EXPLAIN {sql}"), &[&values])
        .await
        .expect("explain");
    let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    lines.join("\n")
}

#[tokio::test]
async fn where_sql_takes_typed_parameters_after_the_tenant() {
    use marten::query::{param, RawParam};
    let (_schema, store) = seeded("agg_where_sql").await;
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let q = red
        .query::<Invoice>()
        .where_sql(
            "d.mt_last_modified > $1 AND d.id = ANY($2) AND (d.data ->> 'rate')::float8 >= $3",
            (hour_ago, vec![1i64, 2, 3], 5.0f64),
        )
        .order_by(|f| f.id.asc());
    let sql = q.to_sql();
    assert!(
        sql.contains("d.tenant_id = $1") && sql.contains("d.mt_last_modified > $2"),
        "the tenant binds $1, the fragment's parameters follow: {sql}"
    );
    assert_eq!(ids(&ok(q.to_list().await)), [2, 3]);
    let blue_found = ok(blue
        .query::<Invoice>()
        .where_sql("d.id = ANY($1)", (vec![1i64, 2, 3],))
        .to_list()
        .await);
    assert!(blue_found.iter().all(|i| i.total > 1000) && blue_found.len() == 3);
    // A fragment cannot widen the tenant's match.
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql("TRUE OR TRUE", ())
            .count()
            .await),
        4
    );
    // Mixed lists and the older enum still work.
    let mixed = vec![
        param(vec!["a".to_owned(), "c".to_owned()]),
        RawParam::Int(15),
    ];
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql(
                "d.data ->> 'customer' = ANY($1) AND d.id * 10 > $2::bigint",
                mixed
            )
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql("d.id > $1::bigint", vec![RawParam::Int(2)])
            .count()
            .await),
        2
    );
    // A value of the wrong type for its placeholder is a typed error, nothing is read.
    let wrong = red
        .query::<Invoice>()
        .where_sql("d.id = $1::bigint", ("one".to_owned(),))
        .to_list()
        .await;
    assert!(wrong.is_err(), "{wrong:?}");
    let nul = red
        .query::<Invoice>()
        .where_sql("d.data ->> 'customer' = $1", ("a\u{0}".to_owned(),))
        .to_list()
        .await;
    assert!(
        matches!(nul, Err(marten::Error::InvalidQuery(_))),
        "{nul:?}"
    );
}

#[tokio::test]
async fn aggregates_of_the_filtered_set_per_tenant() {
    use marten::QuerySpec;
    let (_schema, store) = seeded("agg_aggregates").await;
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    assert_eq!(ok(red.query::<Invoice>().sum(|f| f.total).await), Some(100));
    assert_eq!(
        ok(blue.query::<Invoice>().sum(|f| f.total).await),
        Some(4010)
    );
    let q = red.query::<Invoice>().filter(|f| f.customer.eq("a"));
    let sql = q.to_sql();
    assert!(sql.contains("d.tenant_id = $1"), "{sql}");
    assert_eq!(ok(q.sum(|f| f.total).await), Some(40));
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .filter(|f| f.customer.eq("a"))
            .avg(|f| f.total)
            .await),
        Some(20.0)
    );
    assert_eq!(ok(red.query::<Invoice>().sum(|f| f.rate).await), Some(25.0));
    assert_eq!(
        ok(red.query::<Invoice>().min(|f| f.customer).await).as_deref(),
        Some("a")
    );
    assert_eq!(
        ok(blue.query::<Invoice>().max(|f| f.customer).await).as_deref(),
        Some("y")
    );
    assert_eq!(ok(red.query::<Invoice>().max(|f| f.id).await), Some(4));
    assert_eq!(
        ok(red.query::<Invoice>().count_distinct(|f| f.customer).await),
        3
    );
    assert_eq!(
        ok(blue.query::<Invoice>().count_distinct(|f| f.note).await),
        2,
        "blue's odd totals have no note, and None is no value"
    );
    // The empty set: None, and zero distinct values.
    fn none(s: &mut QuerySession) -> marten::Query<'_, QuerySession, Invoice> {
        s.query::<Invoice>().filter(|f| f.total.gt(5000))
    }
    assert_eq!(ok(none(&mut red).sum(|f| f.total).await), None);
    assert_eq!(ok(none(&mut red).avg(|f| f.rate).await), None);
    assert_eq!(ok(none(&mut red).min(|f| f.customer).await), None);
    assert_eq!(ok(none(&mut red).count_distinct(|f| f.id).await), 0);
    // In a batch, with the other queries, per tenant.
    let mut batch = blue.batch();
    let sum = batch.aggregate(
        QuerySpec::<Invoice>::new().filter(|f| f.id.is_one_of([1, 2])),
        |f| f.total.sum(),
    );
    let max = batch.aggregate(QuerySpec::<Invoice>::new(), |f| f.rate.max());
    let results = ok(batch.execute().await);
    assert_eq!(ok(results.get(sum)), Some(2003));
    assert_eq!(ok(results.get(max)), Some(1004.0 / 4.0));
    let mut untenanted = store.query_session();
    assert!(matches!(
        untenanted.query::<Invoice>().sum(|f| f.total).await,
        Err(marten::Error::TenantRequired { .. })
    ));
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Big {
    id: i64,
    n: i64,
}

#[tokio::test]
async fn a_sum_beyond_its_type_is_a_typed_error() {
    let (_schema, b) = builder("agg_overflow");
    let store = ok(b.document::<Big>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Big { id: 1, n: i64::MAX }));
    ok(s.store(Big { id: 2, n: i64::MAX }));
    ok(s.save_changes().await);
    match s.query::<Big>().sum(|f| f.n).await {
        Err(marten::Error::CorruptData { owner, detail, .. }) => {
            assert_eq!(owner, "Big");
            assert!(detail.contains("aggregate"), "{detail}");
        }
        other => panic!("expected CorruptData, got {other:?}"),
    }
    assert_eq!(ok(s.query::<Big>().max(|f| f.n).await), Some(i64::MAX));
}

#[derive(Deserialize, Debug, PartialEq)]
struct Summary {
    customer: String,
    total: i64,
}

#[tokio::test]
async fn select_returns_chosen_fields_per_tenant() {
    let (schema, store) = seeded("agg_select").await;
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    let q = red
        .query::<Invoice>()
        .filter(|f| f.total.ge(20))
        .order_by(|f| f.total.desc())
        .take(2)
        .select(|f| (f.customer, f.total));
    let sql = q.to_sql();
    assert!(
        sql.starts_with("SELECT jsonb_build_array(") && sql.contains("d.tenant_id = $1"),
        "only the chosen fields, on the tenant's rows: {sql}"
    );
    let rows: Vec<(String, i64)> = ok(q.to_list().await);
    assert_eq!(rows, [("c".to_owned(), 40), ("a".to_owned(), 30)]);
    let names: Vec<String> = ok(blue
        .query::<Invoice>()
        .order_by(|f| f.id.asc())
        .select(|f| f.customer)
        .to_list()
        .await);
    assert_eq!(names, ["x", "y", "x", "y"]);
    let notes: Vec<(i64, Option<String>)> = ok(blue
        .query::<Invoice>()
        .filter(|f| f.id.is_one_of([1, 2]))
        .order_by(|f| f.id.asc())
        .select(|f| (f.id, f.note))
        .to_list()
        .await);
    assert_eq!(notes, [(1, None), (2, Some("n1002".to_owned()))]);
    let summary: Option<Summary> = ok(red
        .query::<Invoice>()
        .filter(|f| f.id.eq(2))
        .select_into::<Summary, _>(|f| (f.customer, f.total))
        .single()
        .await);
    assert_eq!(
        summary,
        Some(Summary {
            customer: "b".into(),
            total: 20
        })
    );
    let first = ok(red
        .query::<Invoice>()
        .order_by(|f| f.customer.desc())
        .select(|f| f.id)
        .first()
        .await);
    assert_eq!(first, Some(4));

    // Only the chosen fields are read: a row whose other field no longer fits the type
    // still selects, and a chosen field that does not fit names the document.
    let raw = schema.raw_client().await;
    raw.execute(
        "UPDATE mt_doc_invoice SET data = jsonb_set(data, '{total}', '\"oops\"') \
         WHERE tenant_id = 'red' AND id = 4",
        &[],
    )
    .await
    .expect("corrupt one total");
    assert!(red.query::<Invoice>().to_list().await.is_err());
    let customers: Vec<String> = ok(red
        .query::<Invoice>()
        .order_by(|f| f.id.asc())
        .select(|f| f.customer)
        .to_list()
        .await);
    assert_eq!(customers, ["a", "b", "a", "c"]);
    match red
        .query::<Invoice>()
        .select(|f| (f.id, f.total))
        .to_list()
        .await
    {
        Err(marten::Error::Deserialize {
            document_type, id, ..
        }) => assert_eq!((document_type, id.as_str()), ("Invoice", "4")),
        other => panic!("expected Deserialize, got {other:?}"),
    }
    let mut untenanted = store.query_session();
    assert!(matches!(
        untenanted
            .query::<Invoice>()
            .select(|f| f.id)
            .to_list()
            .await,
        Err(marten::Error::TenantRequired { .. })
    ));
}

#[derive(marten::DocumentId, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Sku(String);

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Product {
    id: Sku,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tag {
    id: String,
    rank: i32,
}

#[tokio::test]
async fn text_and_newtype_ids_compare_on_the_id_column_in_byte_order() {
    let (_schema, b) = builder("agg_text_ids");
    let store = ok(b.document::<Product>().document::<Tag>().build().await);
    let mut w = store.lightweight_session();
    for (id, rank) in [("b", 1), ("B", 2), ("a", 3), ("é", 4)] {
        ok(w.store(Tag {
            id: id.into(),
            rank,
        }));
    }
    ok(w.save_changes().await);
    for tenant in ["red", "blue"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for id in ["p1", "p2", "p3"] {
            ok(s.store(Product {
                id: Sku(id.into()),
                name: format!("{tenant}-{id}"),
            }));
        }
        ok(s.save_changes().await);
    }
    let mut s = store.query_session();
    let ids = |tags: Vec<Tag>| tags.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok(s
            .query::<Tag>()
            .order_by(|f| f.id.asc())
            .to_list()
            .await)),
        ["B", "a", "b", "é"],
        "byte order, as Rust's str"
    );
    assert_eq!(
        ids(ok(s
            .query::<Tag>()
            .filter(|f| f.id.gt("a"))
            .order_by(|f| f.id.asc())
            .to_list()
            .await)),
        ["b", "é"]
    );
    assert_eq!(
        ok(s.query::<Tag>()
            .filter(|f| f.id.is_one_of(["a", "é", "z"]))
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(s.query::<Tag>().filter(|f| f.id.eq("B")).count().await),
        1
    );
    assert_eq!(
        ok(s.query::<Tag>().max(|f| f.id).await).as_deref(),
        Some("é")
    );
    let mut red = ok(store.query_session_for("red"));
    let found = ok(red
        .query::<Product>()
        .filter(|f| f.id.is_one_of([Sku("p1".into()), Sku("p3".into())]))
        .order_by(|f| f.name.asc())
        .select(|f| f.name)
        .to_list()
        .await);
    assert_eq!(found, ["red-p1", "red-p3"]);
}

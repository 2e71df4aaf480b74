//! `is_one_of` against PostgreSQL: one array parameter, on the primary key (uuid, bigint,
//! text and newtype ids, in byte order), on an indexed column (with `EXPLAIN` on 20,000
//! rows: the index and the primary key serve it) and on `jsonb`; on a conjoined type,
//! two tenants with the same ids see only their own rows.

mod common;

use common::invoices::{ids, seeded, Invoice};
use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

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

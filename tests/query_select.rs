//! Selecting some fields instead of whole documents against PostgreSQL: tuples, one
//! field, a `Deserialize` struct built with `jsonb_build_object`; only the chosen fields
//! are read; per tenant of a conjoined type.

mod common;

use common::invoices::{seeded, Invoice};
use common::ok;
use serde::Deserialize;

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

#[derive(marten::Queryable, serde::Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Address {
    city: String,
}

#[derive(marten::Document, serde::Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Shipment {
    id: i64,
    #[query(nested)]
    billing: Address,
    #[query(nested)]
    shipping: Address,
}

#[derive(Deserialize, Debug, PartialEq)]
struct City {
    city: String,
}

/// `select_into` keys the object by each field's last JSON key: two fields with the same
/// key would leave one value under it, silently. The query is refused when run, naming
/// both fields; `select` reads them as a tuple.
#[tokio::test]
async fn select_into_refuses_two_fields_with_one_key() {
    let (_schema, b) = common::builder("select_shared_key");
    let store = ok(b.document::<Shipment>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Shipment {
        id: 1,
        billing: Address {
            city: "Oslo".into(),
        },
        shipping: Address {
            city: "Lima".into(),
        },
    }));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    let refused = q
        .query::<Shipment>()
        .select_into::<City, _>(|f| (f.billing.city, f.shipping.city))
        .to_list()
        .await;
    match refused {
        Err(marten::Error::InvalidQuery(reason)) => assert!(
            reason.contains("billing.city") && reason.contains("shipping.city"),
            "{reason}"
        ),
        other => panic!("two values under one key: {other:?}"),
    }
    let both: Vec<(String, String)> = ok(q
        .query::<Shipment>()
        .select(|f| (f.billing.city, f.shipping.city))
        .to_list()
        .await);
    assert_eq!(both, [("Oslo".to_owned(), "Lima".to_owned())]);
    let one: Vec<City> = ok(q
        .query::<Shipment>()
        .select_into::<City, _>(|f| f.shipping.city)
        .to_list()
        .await);
    assert_eq!(
        one,
        [City {
            city: "Lima".into()
        }]
    );
}

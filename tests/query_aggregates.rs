//! Aggregates of the filtered set against PostgreSQL: `sum`, `avg`, `min`, `max`,
//! `count_distinct`, typed and `None` for an empty set, in batches, per tenant of a
//! conjoined type; a sum beyond its type is a typed error. (The property test in
//! `queries.rs` checks them against the same computation in Rust.)

mod common;

use common::invoices::{seeded, Invoice};
use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

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

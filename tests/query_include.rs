//! Queries that also load the documents their matches refer to, in one statement and one
//! round trip; per tenant for conjoined types.

mod common;

use std::collections::BTreeSet;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Customer {
    id: Uuid,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Order {
    id: Uuid,
    customer_id: Uuid,
    total: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Account {
    id: i64,
    owner: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Payment {
    id: i64,
    account: i64,
    cents: i64,
}

#[tokio::test]
async fn the_matches_and_the_documents_they_refer_to_come_in_one_round_trip() {
    let (schema, b) = builder("query_include");
    let proxy = marten_testing::CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(b
        .connection_string(schema.url_via(&proxy))
        .document::<Customer>()
        .document::<Order>()
        .build()
        .await);
    let customers: Vec<Customer> = (0..5)
        .map(|i| Customer {
            id: Uuid::now_v7(),
            name: format!("c{i}"),
        })
        .collect();
    let missing = Uuid::now_v7();
    let mut s = store.lightweight_session();
    for c in &customers {
        ok(s.store(c.clone()));
    }
    let mut orders = Vec::new();
    for i in 0..20i64 {
        let customer_id = if i == 19 {
            missing
        } else {
            customers[(i % 5) as usize].id
        };
        orders.push(Order {
            id: Uuid::now_v7(),
            customer_id,
            total: i,
        });
    }
    for o in &orders {
        ok(s.store(o.clone()));
    }
    ok(s.save_changes().await);

    let mut q = store.query_session();
    for round in 0..2 {
        let before = proxy.round_trips();
        let found = ok(q
            .query::<Order>()
            .filter(|f| f.total.ge(12))
            .order_by(|f| f.total.desc())
            .take(6)
            .include::<Customer>(|f| f.customer_id)
            .to_list()
            .await);
        if round == 1 {
            // The first round prepared the statement.
            assert_eq!(proxy.round_trips() - before, 1, "one round trip");
        }
        let totals: Vec<i64> = found.documents.iter().map(|o| o.total).collect();
        assert_eq!(
            totals,
            [19, 18, 17, 16, 15, 14],
            "the query's order and limit"
        );
        // Exactly the customers the matches refer to; the missing one is left out.
        let want: BTreeSet<Uuid> = found
            .documents
            .iter()
            .map(|o| o.customer_id)
            .filter(|id| *id != missing)
            .collect();
        let got: BTreeSet<Uuid> = found.included.keys().copied().collect();
        assert_eq!(got, want);
        for (id, c) in &found.included {
            assert_eq!(customers.iter().find(|x| x.id == *id), Some(c));
        }
    }
    // No match: nothing included.
    let none = ok(q
        .query::<Order>()
        .filter(|f| f.total.gt(100))
        .include::<Customer>(|f| f.customer_id)
        .to_list()
        .await);
    assert!(none.documents.is_empty() && none.included.is_empty());
}

#[tokio::test]
async fn included_documents_are_the_sessions_tenants() {
    let (_schema, b) = builder("query_include_tenants");
    let store = ok(b.document::<Account>().document::<Payment>().build().await);
    for tenant in ["red", "blue"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for id in 1..=3 {
            ok(s.store(Account {
                id,
                owner: format!("{tenant}-{id}"),
            }));
            ok(s.store(Payment {
                id,
                account: id,
                cents: id * 100,
            }));
        }
        ok(s.save_changes().await);
    }
    for tenant in ["red", "blue"] {
        let mut s = ok(store.query_session_for(tenant));
        let found = ok(s
            .query::<Payment>()
            .filter(|f| f.cents.ge(200))
            .include::<Account>(|f| f.account)
            .to_list()
            .await);
        assert_eq!(found.documents.len(), 2);
        let owners: BTreeSet<String> = found.included.values().map(|a| a.owner.clone()).collect();
        assert_eq!(
            owners,
            [format!("{tenant}-2"), format!("{tenant}-3")]
                .into_iter()
                .collect()
        );
    }
    let mut nobody = store.query_session();
    let err = nobody
        .query::<Payment>()
        .include::<Account>(|f| f.account)
        .to_list()
        .await
        .expect_err("no tenant");
    assert!(
        matches!(err, marten::Error::TenantRequired { .. }),
        "{err:?}"
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
struct Supplier {
    id: Uuid,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Part {
    id: Uuid,
    supplier: Uuid,
}

#[tokio::test]
async fn soft_deleted_documents_are_not_included() {
    let (_schema, b) = builder("query_include_soft");
    let store = ok(b.document::<Supplier>().document::<Part>().build().await);
    let suppliers: Vec<Supplier> = (0..3)
        .map(|i| Supplier {
            id: Uuid::now_v7(),
            name: format!("s{i}"),
        })
        .collect();
    let mut s = store.lightweight_session();
    for sup in &suppliers {
        ok(s.store(sup.clone()));
        ok(s.store(Part {
            id: Uuid::now_v7(),
            supplier: sup.id,
        }));
    }
    ok(s.save_changes().await);
    ok(s.delete::<Supplier>(&suppliers[1].id));
    ok(s.save_changes().await);
    let found = ok(store
        .query_session()
        .query::<Part>()
        .include::<Supplier>(|f| f.supplier)
        .to_list()
        .await);
    assert_eq!(found.documents.len(), 3, "every part matches");
    let names: BTreeSet<String> = found.included.values().map(|x| x.name.clone()).collect();
    assert_eq!(
        names,
        ["s0".to_owned(), "s2".to_owned()].into_iter().collect(),
        "the marked supplier is left out"
    );
}

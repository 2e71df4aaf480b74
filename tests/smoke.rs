mod common;
use common::*;
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct CoffeeShop {
    id: Uuid,
    name: String,
    employees: Vec<Uuid>,
}

#[tokio::test]
async fn smoke() {
    let (_schema, b) = builder("smoke");
    let store = ok(b.document::<CoffeeShop>().build().await);
    let mut s = store.lightweight_session();
    let id = ok(s.store(CoffeeShop {
        id: Uuid::nil(),
        name: "A".into(),
        employees: vec![],
    }));
    assert!(!id.is_nil());
    ok(s.save_changes().await);
    let loaded: Option<CoffeeShop> = ok(s.load(&id).await);
    assert_eq!(loaded.unwrap().name, "A");
    for i in 0..3 {
        ok(s.store(CoffeeShop {
            id: Uuid::now_v7(),
            name: format!("b{i}"),
            employees: vec![],
        }));
    }
    ok(s.store(CoffeeShop {
        id,
        name: "A2".into(),
        employees: vec![],
    }));
    ok(s.save_changes().await);
    let mut other = store.lightweight_session();
    let mut doc: CoffeeShop = ok(other.load(&id).await).unwrap();
    doc.name = "other".into();
    ok(other.store(doc.clone()));
    ok(other.save_changes().await);
    // s still holds the version from its own save: stale now
    ok(s.store(CoffeeShop {
        id,
        name: "stale".into(),
        employees: vec![],
    }));
    let err = s.save_changes().await.unwrap_err();
    println!("{err}");
    assert_eq!(err.rejections().len(), 1);
}

//! Optimistic (uuid version) concurrency: ported from Marten's
//! `update_with_stale_version_standard` and `store_with_the_right_version`, plus racing
//! sessions on real connections.

mod common;

use std::sync::Arc;

use common::{builder, ok};
use marten::prelude::*;
use marten::RejectionKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct CoffeeShop {
    id: Uuid,
    name: String,
    employees: Vec<Uuid>,
}

fn shop(name: &str) -> CoffeeShop {
    CoffeeShop {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        employees: vec![],
    }
}

#[tokio::test]
async fn every_write_stores_a_new_version() {
    let (_schema, b) = builder("opt_new_version");
    let store = ok(b.document::<CoffeeShop>().build().await);
    let mut s = store.lightweight_session();
    let doc = shop("A");
    let id = ok(s.store(doc.clone()));
    ok(s.save_changes().await);
    let v1 = ok(s.metadata::<CoffeeShop>(&id).await)
        .expect("stored")
        .version;
    assert_eq!(s.version_of::<CoffeeShop>(&id), Some(v1));
    ok(s.store(CoffeeShop {
        name: "B".into(),
        ..doc
    }));
    ok(s.save_changes().await);
    let v2 = ok(s.metadata::<CoffeeShop>(&id).await)
        .expect("stored")
        .version;
    assert_ne!(v1, v2);
    assert!(!v2.is_nil());
    assert_eq!(s.version_of::<CoffeeShop>(&id), Some(v2));
}

#[tokio::test]
async fn update_with_stale_version_standard() {
    let (schema, b) = builder("opt_stale");
    let store = ok(b.document::<CoffeeShop>().build().await);
    let doc = shop("Original");
    let mut setup = store.lightweight_session();
    ok(setup.store(doc.clone()));
    ok(setup.save_changes().await);

    let mut session1 = store.lightweight_session();
    let mut session2 = store.lightweight_session();
    let mut one: CoffeeShop = ok(session1.load(&doc.id).await).expect("loaded");
    let mut two: CoffeeShop = ok(session2.load(&doc.id).await).expect("loaded");
    one.name = "Mine".into();
    two.name = "Yours".into();
    ok(session1.store(one));
    ok(session1.save_changes().await);
    ok(session2.store(two));
    let err = session2
        .save_changes()
        .await
        .expect_err("stale write must fail");
    let rejections = err.rejections();
    assert_eq!(rejections.len(), 1, "{err}");
    assert_eq!(rejections[0].document_type, "CoffeeShop");
    assert_eq!(rejections[0].id, marten::IdKey::Uuid(doc.id));
    let stored = ok(store.query_session().metadata::<CoffeeShop>(&doc.id).await).expect("stored");
    match &rejections[0].kind {
        RejectionKind::VersionMismatch { expected, actual } => {
            assert_ne!(expected, &stored.version.to_string());
            assert_eq!(actual.as_deref(), Some(stored.version.to_string().as_str()));
        }
        other => panic!("wrong rejection {other:?}"),
    }
    assert!(err.to_string().contains("CoffeeShop"), "{err}");
    let name: String = schema
        .raw_client()
        .await
        .query_one(
            "SELECT data->>'name' FROM mt_doc_coffeeshop WHERE id = $1",
            &[&doc.id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(name, "Mine");
}

#[tokio::test]
async fn store_with_the_right_version() {
    let (_schema, b) = builder("opt_right_version");
    let store = ok(b.document::<CoffeeShop>().build().await);
    let doc = shop("Original");
    let mut setup = store.lightweight_session();
    ok(setup.store(doc.clone()));
    ok(setup.save_changes().await);
    let version = ok(setup.metadata::<CoffeeShop>(&doc.id).await)
        .expect("stored")
        .version;

    // A fresh session that never loaded the document states the version it expects.
    let mut s = store.lightweight_session();
    ok(s.store_with_version(
        CoffeeShop {
            name: "Updated".into(),
            ..doc.clone()
        },
        version,
    ));
    ok(s.save_changes().await);
    let loaded: CoffeeShop = ok(store.query_session().load(&doc.id).await).expect("loaded");
    assert_eq!(loaded.name, "Updated");

    // The same old version is stale now.
    let mut s = store.lightweight_session();
    ok(s.store_with_version(
        CoffeeShop {
            name: "Again".into(),
            ..doc.clone()
        },
        version,
    ));
    let err = s.save_changes().await.expect_err("old version is stale");
    assert_eq!(err.rejections().len(), 1);
}

#[tokio::test]
async fn racing_sessions_at_the_same_version_have_exactly_one_winner() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 120;
    let (schema, b) = builder("opt_race");
    let store = ok(b
        .pool_size(RACERS + 2)
        .document::<CoffeeShop>()
        .build()
        .await);
    let doc = shop("race");
    let mut setup = store.lightweight_session();
    ok(setup.store(doc.clone()));
    ok(setup.save_changes().await);

    let mut winners_total = 0;
    for round in 0..ROUNDS {
        let version = ok(store.query_session().metadata::<CoffeeShop>(&doc.id).await)
            .expect("stored")
            .version;
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for racer in 0..RACERS {
            let store = store.clone();
            let barrier = barrier.clone();
            let doc = doc.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = store.lightweight_session();
                // Warm the connection so the race is about the write, not connecting.
                let _ = s.metadata::<CoffeeShop>(&doc.id).await?;
                s.store_with_version(
                    CoffeeShop {
                        name: format!("r{round}-{racer}"),
                        ..doc
                    },
                    version,
                )?;
                barrier.wait().await;
                s.save_changes().await.map(|()| racer)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(racer) => winners.push(racer),
                Err(marten::Error::Rejected(r)) => assert_eq!(r.len(), 1),
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let name: String = schema
            .raw_client()
            .await
            .query_one(
                "SELECT data->>'name' FROM mt_doc_coffeeshop WHERE id = $1",
                &[&doc.id],
            )
            .await
            .expect("row")
            .get(0);
        assert_eq!(
            name,
            format!("r{round}-{}", winners[0]),
            "the winner's write is stored"
        );
        winners_total += 1;
    }
    assert_eq!(winners_total, ROUNDS);
}

#[tokio::test]
async fn checks_can_be_disabled_per_session() {
    let (_schema, b) = builder("opt_disabled");
    let store = ok(b.document::<CoffeeShop>().build().await);
    let doc = shop("A");
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);
    let mut stale = store.lightweight_session();
    let _: Option<CoffeeShop> = ok(stale.load(&doc.id).await);
    let mut other = store.lightweight_session();
    let _: Option<CoffeeShop> = ok(other.load(&doc.id).await);
    ok(other.store(CoffeeShop {
        name: "B".into(),
        ..doc.clone()
    }));
    ok(other.save_changes().await);

    stale.set_concurrency_checks(false);
    ok(stale.store(CoffeeShop {
        name: "C".into(),
        ..doc.clone()
    }));
    ok(stale.save_changes().await);

    let mut unchecked =
        store.session_with::<marten::Lightweight>(SessionOptions::without_concurrency_checks());
    ok(unchecked.store_with_version(
        CoffeeShop {
            name: "D".into(),
            ..doc.clone()
        },
        Uuid::new_v4(),
    ));
    ok(unchecked.save_changes().await);
    let loaded: CoffeeShop = ok(store.query_session().load(&doc.id).await).expect("loaded");
    assert_eq!(loaded.name, "D");
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Ticket {
    id: i64,
    title: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Label {
    id: String,
    color: String,
}

/// A document saved alone goes as one lean statement; integer and string ids take the
/// same path as uuids: the version is checked, a stale one is rejected and names the id.
#[tokio::test]
async fn lone_saves_check_versions_for_every_id_type() {
    let (_schema, b) = builder("opt_id_types");
    let store = ok(b.document::<Ticket>().document::<Label>().build().await);
    let mut a = store.lightweight_session();
    ok(a.store(Ticket {
        id: 7,
        title: "first".into(),
    }));
    ok(a.save_changes().await);
    ok(a.store(Label {
        id: "urgent".into(),
        color: "red".into(),
    }));
    ok(a.save_changes().await);
    let ticket_v1 = a.version_of::<Ticket>(&7).expect("version learned");
    let label_v1 = a
        .version_of::<Label>(&"urgent".to_string())
        .expect("version learned");

    // Another session moves both documents on.
    let mut b = store.lightweight_session();
    ok(b.store(Ticket {
        id: 7,
        title: "second".into(),
    }));
    ok(b.save_changes().await);
    ok(b.store(Label {
        id: "urgent".into(),
        color: "amber".into(),
    }));
    ok(b.save_changes().await);

    // The first session still holds the old versions: each lone save is rejected.
    ok(a.store(Ticket {
        id: 7,
        title: "stale".into(),
    }));
    let err = a.save_changes().await.expect_err("stale ticket");
    let r = err.rejections();
    assert_eq!((r.len(), r[0].document_type), (1, "Ticket"));
    assert!(
        matches!(&r[0].kind, RejectionKind::VersionMismatch { expected, .. } if *expected == ticket_v1.to_string()),
        "{err}"
    );
    ok(a.store(Label {
        id: "urgent".into(),
        color: "grey".into(),
    }));
    let err = a.save_changes().await.expect_err("stale label");
    assert_eq!(err.rejections()[0].id.to_string(), "\"urgent\"");
    assert!(
        matches!(&err.rejections()[0].kind, RejectionKind::VersionMismatch { expected, .. } if *expected == label_v1.to_string()),
        "{err}"
    );
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<Ticket>(&7).await).expect("ticket").title,
        "second"
    );
    assert_eq!(
        ok(q.load::<Label>(&"urgent".to_string()).await)
            .expect("label")
            .color,
        "amber"
    );
}

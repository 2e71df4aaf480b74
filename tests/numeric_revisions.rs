//! Numeric revisions: 1 on insert, +1 per write, stale checks, `update_revision` and
//! `try_update_revision`; ported from Marten's numeric revisioning scenarios.

mod common;

use std::sync::Arc;

use common::{builder, ok};
use marten::prelude::*;
use marten::RejectionKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Invoice {
    id: String,
    amount: i64,
}

fn invoice(id: &str, amount: i64) -> Invoice {
    Invoice {
        id: id.to_owned(),
        amount,
    }
}

async fn revision(store: &DocumentStore, id: &str) -> i64 {
    ok(store
        .query_session()
        .metadata::<Invoice>(&id.to_owned())
        .await)
    .expect("stored")
    .version
}

#[tokio::test]
async fn revision_is_one_on_insert_and_grows_by_one_per_write() {
    let (_schema, b) = builder("num_grow");
    let store = ok(b.document::<Invoice>().build().await);
    let mut s = store.lightweight_session();
    ok(s.insert(invoice("inv-1", 10)));
    ok(s.save_changes().await);
    assert_eq!(revision(&store, "inv-1").await, 1);
    assert_eq!(s.version_of::<Invoice>(&"inv-1".to_owned()), Some(1));
    for expected in 2..=5 {
        ok(s.store(invoice("inv-1", expected * 10)));
        ok(s.save_changes().await);
        assert_eq!(revision(&store, "inv-1").await, expected);
    }
    // An unrelated session with no known revision still bumps by exactly one.
    let mut other = store.lightweight_session();
    ok(other.store(invoice("inv-1", 99)));
    ok(other.save_changes().await);
    assert_eq!(revision(&store, "inv-1").await, 6);
}

#[tokio::test]
async fn update_with_stale_revision_standard() {
    let (_schema, b) = builder("num_stale");
    let store = ok(b.document::<Invoice>().build().await);
    let mut setup = store.lightweight_session();
    ok(setup.store(invoice("a", 1)));
    ok(setup.save_changes().await);
    let mut s1 = store.lightweight_session();
    let mut s2 = store.lightweight_session();
    let _: Option<Invoice> = ok(s1.load(&"a".to_owned()).await);
    let _: Option<Invoice> = ok(s2.load(&"a".to_owned()).await);
    ok(s1.store(invoice("a", 2)));
    ok(s1.save_changes().await);
    ok(s2.store(invoice("a", 3)));
    let err = s2.save_changes().await.expect_err("stale");
    assert_eq!(
        err.rejections()[0].kind,
        RejectionKind::VersionMismatch {
            expected: "1".into(),
            actual: Some("2".into())
        }
    );
    assert_eq!(revision(&store, "a").await, 2);
}

#[tokio::test]
async fn store_with_the_right_revision() {
    let (_schema, b) = builder("num_right");
    let store = ok(b.document::<Invoice>().build().await);
    let mut setup = store.lightweight_session();
    ok(setup.store(invoice("a", 1)));
    ok(setup.store(invoice("b", 1)));
    ok(setup.save_changes().await);
    let mut s = store.lightweight_session();
    ok(s.store_with_version(invoice("a", 2), 1));
    ok(s.save_changes().await);
    assert_eq!(revision(&store, "a").await, 2);
    ok(s.store_with_version(invoice("b", 2), 7));
    let err = s.save_changes().await.expect_err("wrong revision");
    assert_eq!(err.rejections().len(), 1);
    assert_eq!(revision(&store, "b").await, 1);
}

#[tokio::test]
async fn update_revision_fails_when_stored_revision_is_not_lower() {
    let (_schema, b) = builder("num_update_rev");
    let store = ok(b.document::<Invoice>().build().await);
    let mut s = store.lightweight_session();
    ok(s.update_revision(invoice("a", 1), 5));
    ok(s.save_changes().await);
    assert_eq!(revision(&store, "a").await, 5);
    ok(s.update_revision(invoice("a", 2), 7));
    ok(s.save_changes().await);
    assert_eq!(revision(&store, "a").await, 7);

    for stale in [7, 3] {
        ok(s.update_revision(invoice("a", 100), stale));
        let err = s.save_changes().await.expect_err("not newer");
        assert_eq!(
            err.rejections()[0].kind,
            RejectionKind::RevisionNotNewer {
                requested: stale,
                actual: 7
            }
        );
    }
    // try_update_revision: no error, nothing written.
    ok(s.try_update_revision(invoice("a", 100), 6));
    ok(s.save_changes().await);
    let loaded: Invoice = ok(store.query_session().load(&"a".to_owned()).await).expect("loaded");
    assert_eq!((loaded.amount, revision(&store, "a").await), (2, 7));
    // ...and a newer one is written.
    ok(s.try_update_revision(invoice("a", 8), 8));
    ok(s.save_changes().await);
    assert_eq!(revision(&store, "a").await, 8);
}

#[tokio::test]
async fn racing_sessions_at_the_same_revision_have_exactly_one_winner() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 100;
    let (_schema, b) = builder("num_race");
    let store = ok(b.pool_size(RACERS + 2).document::<Invoice>().build().await);
    let mut setup = store.lightweight_session();
    ok(setup.store(invoice("race", 0)));
    ok(setup.save_changes().await);
    for round in 0..ROUNDS {
        let rev = revision(&store, "race").await;
        assert_eq!(rev, round as i64 + 1, "exactly one write per round");
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let _ = s.metadata::<Invoice>(&"race".to_owned()).await?;
                    s.store_with_version(invoice("race", racer as i64), rev)?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => wins += 1,
                Err(marten::Error::Rejected(_)) => {}
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

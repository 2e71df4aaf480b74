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

/// A soft-deleted numeric type: a skipped revision write must not bring a deleted
/// document back into a session.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
#[concurrency(numeric)]
struct SoftInvoice {
    id: String,
    amount: i64,
}

/// `try_update_revision` below the stored revision writes nothing, and an identity
/// session then holds nothing of the document it queued: the next load reads the stored
/// document (also when the skipped write was one statement of several, and also when the
/// stored document is soft-deleted). A written one is held, at the revision it wrote.
#[tokio::test]
async fn a_skipped_try_update_revision_leaves_no_unwritten_document_in_an_identity_session() {
    let (_schema, b) = builder("num_try_identity");
    let store = ok(b
        .document::<Invoice>()
        .document::<SoftInvoice>()
        .build()
        .await);
    let a = "a".to_owned();
    let mut setup = store.lightweight_session();
    ok(setup.update_revision(invoice("a", 100), 5));
    ok(setup.save_changes().await);

    // Alone: the save's one statement.
    let mut s = store.identity_session();
    ok(s.try_update_revision(invoice("a", 1), 3));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<Invoice>(&a).await), Some(invoice("a", 100)));
    assert_eq!(revision(&store, "a").await, 5);

    // One statement of several (a transaction).
    let mut s = store.identity_session();
    ok(s.try_update_revision(invoice("a", 2), 4));
    ok(s.store(invoice("b", 1)));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<Invoice>(&a).await), Some(invoice("a", 100)));
    assert_eq!(revision(&store, "a").await, 5);

    // Written: held, at the revision written, which the next write asserts.
    let mut s = store.identity_session();
    ok(s.try_update_revision(invoice("a", 7), 7));
    ok(s.save_changes().await);
    assert_eq!(s.version_of::<Invoice>(&a), Some(7));
    assert_eq!(ok(s.load::<Invoice>(&a).await), Some(invoice("a", 7)));
    let mut other = store.lightweight_session();
    ok(other.store(invoice("a", 8)));
    ok(other.save_changes().await);
    ok(s.store(invoice("a", 9)));
    let err = s.save_changes().await.expect_err("a moved past revision 7");
    assert_eq!(
        err.rejections()[0].kind,
        RejectionKind::VersionMismatch {
            expected: "7".into(),
            actual: Some("8".into())
        }
    );

    // Soft-deleted at revision 5: a skipped write does not bring it back.
    ok(setup.update_revision(
        SoftInvoice {
            id: a.clone(),
            amount: 1,
        },
        5,
    ));
    ok(setup.save_changes().await);
    ok(setup.delete::<SoftInvoice>(&a));
    ok(setup.save_changes().await);
    let mut s = store.identity_session();
    ok(s.try_update_revision(
        SoftInvoice {
            id: a.clone(),
            amount: 2,
        },
        3,
    ));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<SoftInvoice>(&a).await), None);
}

/// In a dirty-tracked session a skipped `try_update_revision` leaves no tracked copy:
/// a change made after it starts from the stored document (loaded anew, asserting its
/// revision), never from the unwritten one, so no update is lost. A written one stays
/// tracked at the revision it wrote: a later change asserts that revision.
#[tokio::test]
async fn a_skipped_try_update_revision_loses_no_update_in_a_dirty_tracked_session() {
    let (_schema, b) = builder("num_try_dirty");
    let store = ok(b.document::<Invoice>().build().await);
    let a = "a".to_owned();
    let mut setup = store.lightweight_session();
    ok(setup.update_revision(invoice("a", 100), 5));
    ok(setup.save_changes().await);
    let mut q = store.query_session();

    for with_another_statement in [false, true] {
        let mut d = store.dirty_tracked_session();
        ok(d.try_update_revision(invoice("a", 1), 3));
        if with_another_statement {
            ok(d.store(invoice("b", 1)));
        }
        ok(d.save_changes().await);
        let before: Invoice = ok(q.load(&a).await).expect("stored");
        let before_revision = revision(&store, "a").await;
        // The recipe of a change: the tracked document if the session holds one, else
        // the stored one.
        let doc = ok(d.load::<Invoice>(&a).await).expect("stored");
        doc.amount += 1;
        ok(d.save_changes().await);
        let stored: Option<Invoice> = ok(q.load(&a).await);
        assert_eq!(
            stored.map(|i| i.amount),
            Some(before.amount + 1),
            "no update lost (with_another_statement: {with_another_statement})"
        );
        assert_eq!(revision(&store, "a").await, before_revision + 1);
        // Loaded anew, the document is tracked at its stored revision.
        assert_eq!(d.version_of::<Invoice>(&a), Some(before_revision + 1));
    }

    // The skipped write's copy is not handed out.
    let mut d = store.dirty_tracked_session();
    ok(d.try_update_revision(invoice("a", 1), 3));
    ok(d.save_changes().await);
    assert_eq!(
        d.get_mut::<Invoice>(&a),
        None,
        "the unwritten copy is forgotten"
    );

    // Written (alone): tracked at the revision written.
    let mut d = store.dirty_tracked_session();
    ok(d.try_update_revision(invoice("a", 50), 20));
    ok(d.save_changes().await);
    assert_eq!(d.version_of::<Invoice>(&a), Some(20));
    let mut other = store.lightweight_session();
    ok(other.store(invoice("a", 60)));
    ok(other.save_changes().await);
    if let Some(doc) = d.get_mut::<Invoice>(&a) {
        doc.amount += 1;
    }
    let err = d
        .save_changes()
        .await
        .expect_err("a moved past revision 20");
    assert_eq!(err.rejections().len(), 1);
    let stored: Option<Invoice> = ok(q.load(&a).await);
    assert_eq!(stored.map(|i| i.amount), Some(60), "no update lost");
}

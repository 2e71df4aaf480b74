//! Session kinds: query, lightweight, identity map, dirty tracking; metadata.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten_testing::CountingProxy;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct User {
    id: Uuid,
    name: String,
    roles: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tag {
    id: String,
    uses: i32,
}

fn user(name: &str) -> User {
    User {
        id: Uuid::now_v7(),
        name: name.into(),
        roles: vec!["reader".into()],
    }
}

#[tokio::test]
async fn identity_session_loads_an_id_once() {
    let (schema, b) = builder("sess_identity");
    let proxy = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(b
        .connection_string(schema.url_via(&proxy))
        .document::<User>()
        .build()
        .await);
    let u = user("ann");
    let mut w = store.lightweight_session();
    ok(w.store(u.clone()));
    ok(w.save_changes().await);

    let mut s = store.identity_session();
    let first: User = ok(s.load(&u.id).await).expect("loaded");
    let before = proxy.round_trips();
    let second: User = ok(s.load(&u.id).await).expect("loaded");
    assert_eq!(proxy.round_trips(), before, "second load made no query");
    assert_eq!(first, second);

    // Even after someone else changed it, the session keeps the state it saw.
    ok(w.store(User {
        name: "changed".into(),
        ..u.clone()
    }));
    ok(w.save_changes().await);
    let third: User = ok(s.load(&u.id).await).expect("loaded");
    assert_eq!(third.name, "ann");

    // Stored documents enter the identity map too; load_many queries only the others.
    let v = user("bob");
    ok(s.store(v.clone()));
    let back: User = ok(s.load(&v.id).await).expect("from the map");
    assert_eq!(back, v);
    let many: Vec<User> = ok(s.load_many(&[u.id, v.id]).await);
    assert_eq!(many.len(), 2);

    // A lightweight session queries every time.
    let mut l = store.lightweight_session();
    let _: Option<User> = ok(l.load(&u.id).await);
    let before = proxy.round_trips();
    let fresh: User = ok(l.load(&u.id).await).expect("loaded");
    assert_eq!(proxy.round_trips() - before, 1);
    assert_eq!(fresh.name, "changed");
}

#[tokio::test]
async fn dirty_tracked_session_saves_changed_documents_only() {
    let (schema, b) = builder("sess_dirty");
    let store = ok(b.document::<User>().document::<Tag>().build().await);
    let (a, c) = (user("a"), user("c"));
    let mut w = store.lightweight_session();
    ok(w.store(a.clone()));
    ok(w.store(c.clone()));
    ok(w.store(Tag {
        id: "t".into(),
        uses: 0,
    }));
    ok(w.save_changes().await);
    let raw = schema.raw_client().await;
    let modified = |id: Uuid| {
        let raw = &raw;
        async move {
            raw.query_one(
                "SELECT mt_last_modified, mt_version FROM mt_doc_user WHERE id = $1",
                &[&id],
            )
            .await
            .map(|r| (r.get::<_, time::OffsetDateTime>(0), r.get::<_, Uuid>(1)))
            .expect("row")
        }
    };
    let c_before = modified(c.id).await;

    let mut s = store.dirty_tracked_session();
    let loaded = ok(s.load::<User>(&a.id).await).expect("loaded");
    loaded.name = "renamed".into();
    let _ = ok(s.load::<User>(&c.id).await).expect("loaded");
    if let Some(tag) = ok(s.load::<Tag>(&"t".to_owned()).await) {
        tag.uses += 1;
    }
    assert_eq!(s.pending_changes(), 0, "nothing queued explicitly");
    ok(s.save_changes().await);

    let a_now: User = ok(store.query_session().load(&a.id).await).expect("a");
    assert_eq!(a_now.name, "renamed");
    let tag: Tag = ok(store.query_session().load(&"t".to_owned()).await).expect("t");
    assert_eq!(tag.uses, 1);
    assert_eq!(
        modified(c.id).await,
        c_before,
        "unchanged document not written"
    );

    // A second save with no further change writes nothing.
    let a_before = modified(a.id).await;
    ok(s.save_changes().await);
    assert_eq!(modified(a.id).await, a_before);

    // Dirty writes are checked against the version loaded.
    ok(w.store(User {
        name: "elsewhere".into(),
        ..c.clone()
    }));
    ok(w.save_changes().await);
    if let Some(doc) = s.get_mut::<User>(&c.id) {
        doc.roles.push("admin".into());
    }
    let err = s.save_changes().await.expect_err("c moved underneath");
    assert_eq!(err.rejections().len(), 1);
}

#[tokio::test]
async fn query_session_and_metadata() {
    let (_schema, b) = builder("sess_query");
    let store = ok(b.document::<User>().document::<Tag>().build().await);
    let u = user("q");
    let mut w = store.lightweight_session();
    ok(w.store(u.clone()));
    ok(w.store(Tag {
        id: "x".into(),
        uses: 3,
    }));
    ok(w.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<User>(&u.id).await), Some(u.clone()));
    assert_eq!(ok(q.load::<User>(&Uuid::now_v7()).await), None);
    let meta = ok(q.metadata::<User>(&u.id).await).expect("meta");
    assert!(!meta.version.is_nil());
    assert!(
        !meta.deleted && meta.deleted_at.is_none(),
        "not a soft-deleted type"
    );
    let age = time::OffsetDateTime::now_utc() - meta.last_modified;
    assert!(
        age.whole_seconds().abs() < 60,
        "last modified is recent: {age}"
    );
    let tag_meta = ok(q.metadata::<Tag>(&"x".to_owned()).await).expect("meta");
    assert_eq!(tag_meta.version, marten::concurrency::NoVersion);
    assert!(ok(q.metadata::<Tag>(&"nope".to_owned()).await).is_none());
    ok(w.delete::<User>(&u.id));
    ok(w.save_changes().await);
    assert_eq!(ok(q.load::<User>(&u.id).await), None);
}

/// What an inline projection wrote in a session's own save replaces what the session
/// held of that document: the identity map and dirty tracking read the projected state
/// after the save, not the copy loaded before it.
#[tokio::test]
async fn a_document_an_inline_projection_wrote_is_read_anew_by_the_session() {
    use common::tally::{Added, Tally};
    let (_schema, b) = builder("sessions_projected");
    let store = ok(b.projection::<Tally>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [Added { n: 1 }]));
    ok(s.save_changes().await);

    let mut identity = store.identity_session();
    let before: Option<Tally> = ok(identity.load(&id).await);
    assert_eq!(before.map(|t| t.total), Some(1));
    ok(identity.events().append(id, [Added { n: 2 }]));
    ok(identity.save_changes().await);
    let after: Option<Tally> = ok(identity.load(&id).await);
    assert_eq!(
        after.map(|t| (t.total, t.version)),
        Some((3, 2)),
        "identity map"
    );

    let mut tracked = store.dirty_tracked_session();
    let loaded = ok(tracked.load::<Tally>(&id).await).map(|t| t.total);
    assert_eq!(loaded, Some(3));
    ok(tracked.events().append(id, [Added { n: 4 }]));
    ok(tracked.save_changes().await);
    let reloaded = ok(tracked.load::<Tally>(&id).await).map(|t| (t.total, t.version));
    assert_eq!(reloaded, Some((7, 3)), "dirty tracking");
    // Saving again writes nothing stale over the projection's document.
    ok(tracked.save_changes().await);
    let stored: Option<Tally> = ok(store.query_session().load(&id).await);
    assert_eq!(stored.map(|t| t.total), Some(7));
}

/// A save that does not commit (rejected, discarded or cancelled) leaves the session
/// holding nothing it wrote: an identity or dirty-tracked session's next load reads what
/// the database holds, not the document of the failed write, and a dirty-tracked session
/// does not take that document for saved.
#[tokio::test]
async fn a_save_that_does_not_commit_leaves_no_written_document_in_the_session() {
    let (_schema, b) = builder("sess_failed_save");
    let store = ok(b.document::<Tag>().build().await);
    let committed = Tag {
        id: "t".into(),
        uses: 1,
    };
    let mut w = store.lightweight_session();
    ok(w.store(committed.clone()));
    ok(w.save_changes().await);
    let never = Tag {
        id: "t".into(),
        uses: 99,
    };

    // Rejected: an insert of an existing id.
    let mut s = store.identity_session();
    ok(s.insert(never.clone()));
    assert!(matches!(s.save_changes().await, Err(Error::Rejected(_))));
    assert_eq!(
        ok(s.load::<Tag>(&"t".to_owned()).await),
        Some(committed.clone())
    );

    let mut d = store.dirty_tracked_session();
    ok(d.insert(never.clone()));
    assert!(matches!(d.save_changes().await, Err(Error::Rejected(_))));
    let held = ok(d.load::<Tag>(&"t".to_owned()).await).expect("stored");
    assert_eq!(*held, committed);
    // What is loaded now is tracked as loaded: a change to it is written.
    held.uses = 2;
    ok(d.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<Tag>(&"t".to_owned()).await).map(|t| t.uses),
        Some(2)
    );

    // Discarded.
    let mut d = store.dirty_tracked_session();
    ok(d.store(never.clone()));
    d.discard_changes();
    assert_eq!(
        ok(d.load::<Tag>(&"t".to_owned()).await).map(|t| t.uses),
        Some(2)
    );

    // Cancelled before it was sent: nothing written, nothing held.
    let mut d = store.dirty_tracked_session();
    ok(d.store(never.clone()));
    {
        let saving = d.save_changes();
        futures_util::pin_mut!(saving);
        let polled = futures_util::poll!(saving.as_mut());
        assert!(polled.is_pending(), "the save needs the database");
    }
    assert_eq!(
        ok(d.load::<Tag>(&"t".to_owned()).await).map(|t| t.uses),
        Some(2)
    );
    assert_eq!(
        ok(q.load::<Tag>(&"t".to_owned()).await).map(|t| t.uses),
        Some(2)
    );
}

/// A delete that commits forgets a copy of the document the session loaded after the
/// delete was queued: a change to that copy cannot write the deleted document back.
#[tokio::test]
async fn a_committed_delete_forgets_a_copy_loaded_after_it_was_queued() {
    let (_schema, b) = builder("sess_delete_then_load");
    let store = ok(b.document::<Tag>().build().await);
    let mut w = store.lightweight_session();
    ok(w.store(Tag {
        id: "gone".into(),
        uses: 1,
    }));
    ok(w.save_changes().await);

    let mut d = store.dirty_tracked_session();
    ok(d.delete::<Tag>(&"gone".to_owned()));
    let loaded = ok(d.load::<Tag>(&"gone".to_owned()).await).expect("not deleted yet");
    assert_eq!(loaded.uses, 1);
    ok(d.save_changes().await);
    assert_eq!(ok(d.load::<Tag>(&"gone".to_owned()).await), None);
    // Nothing tracked is left to write back.
    ok(d.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Tag>(&"gone".to_owned()).await), None);
}

/// A numeric document holding a map: a `HashMap` built anew serializes the same content
/// in another key order.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Ledger {
    id: String,
    totals: std::collections::HashMap<String, i64>,
}

/// Dirty tracking compares what a document holds, not the order its map's keys happen to
/// be serialized in: a tracked document whose map was rebuilt with the same content is
/// not written (its revision does not move) and, when another session wrote it in
/// between, its save is not rejected; a real change is written.
#[tokio::test]
async fn a_map_rebuilt_with_the_same_content_is_not_a_change() {
    let (_schema, b) = builder("sess_dirty_map");
    let store = ok(b.document::<Ledger>().build().await);
    let id = "l".to_owned();
    // Many keys: two maps with different seeds order them alike with negligible odds.
    let totals: std::collections::HashMap<String, i64> =
        (0..64).map(|i| (format!("account-{i}"), i * 10)).collect();
    let mut w = store.lightweight_session();
    ok(w.store(Ledger {
        id: id.clone(),
        totals,
    }));
    ok(w.save_changes().await);
    let revision = |store: DocumentStore| {
        let id = id.clone();
        async move {
            ok(store.query_session().metadata::<Ledger>(&id).await)
                .expect("stored")
                .version
        }
    };
    let rebuilt = |doc: &mut Ledger| {
        doc.totals = doc.totals.iter().map(|(k, v)| (k.clone(), *v)).collect();
    };

    let mut d = store.dirty_tracked_session();
    let _ = ok(d.load::<Ledger>(&id).await).expect("stored");
    for _ in 0..5 {
        if let Some(doc) = d.get_mut::<Ledger>(&id) {
            rebuilt(doc);
        }
        ok(d.save_changes().await);
        assert_eq!(revision(store.clone()).await, 1, "nothing changed");
    }

    // A real change is written.
    if let Some(doc) = d.get_mut::<Ledger>(&id) {
        doc.totals.insert("new".into(), 1);
    }
    ok(d.save_changes().await);
    assert_eq!(revision(store.clone()).await, 2);

    // Another session writes; rebuilding the map is still no change, so no conflict.
    let mut other: Ledger = ok(w.load(&id).await).expect("stored");
    other.totals.insert("other".into(), 2);
    ok(w.store(other.clone()));
    ok(w.save_changes().await);
    for _ in 0..5 {
        if let Some(doc) = d.get_mut::<Ledger>(&id) {
            rebuilt(doc);
        }
        ok(d.save_changes().await);
    }
    assert_eq!(revision(store.clone()).await, 3);
    let stored: Option<Ledger> = ok(store.query_session().load(&id).await);
    assert_eq!(stored, Some(other));
}

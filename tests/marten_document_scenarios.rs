//! Document-store scenarios ported from Marten's own test suite (JasperFx/marten,
//! `src/DocumentDbTests`, its `Bugs/` folder included): the behaviour each Marten test
//! checks, mapped onto marten-rs's API. Each test names its source. Sessions storing,
//! deleting and re-storing one id, dirty tracking across saves and failed saves, versions
//! after a rejected save, operation order with deletes by filter, unique fields freed by
//! a delete in the same save, numeric revisions under races, jumps and bulk inserts.

mod common;

use std::sync::Arc;

use common::{builder, ok};
use marten::prelude::*;
use marten::{DirtyTracking, IdKey, RejectionKind, Session, Tracking};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct CoffeeShop {
    id: Uuid,
    name: String,
    employees: Vec<Uuid>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Employee {
    id: Uuid,
    name: String,
}

/// Marten's `FooModel` (no concurrency).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Foo {
    id: Uuid,
    label: String,
}

/// Marten's `BarModel`: refers to a `Foo` by `rel`.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Bar {
    id: Uuid,
    rel: Uuid,
}

/// Marten's `IntDoc`: an integer id next to the uuid ones.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct IntDoc {
    id: i64,
}

/// Marten's `User` of the ordering bugs.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Person {
    id: Uuid,
    #[document(index)]
    last_name: String,
}

/// Marten's `RevisionedDoc`.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Revisioned {
    id: Uuid,
    name: String,
}

/// Marten's `RecordA` / `RecordB` of PR 2277: a unique duplicated field.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct RecordA {
    id: Uuid,
    #[document(unique)]
    unique_key: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct RecordB {
    id: Uuid,
    #[document(unique)]
    unique_key: String,
}

/// A soft-deleted type with a unique field.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
struct SoftRecord {
    id: Uuid,
    #[document(unique)]
    unique_key: String,
}

/// A soft-deleted type with numeric revisions.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
#[concurrency(numeric)]
struct SoftRevisioned {
    id: String,
    name: String,
}

/// Marten's `TestObject` of bug 2169: a string id, an optimistic version and a
/// duplicated integer field.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct TestObject {
    id: String,
    #[document(index)]
    some_int_data: i32,
}

async fn store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .pool_size(20)
        .document::<CoffeeShop>()
        .document::<Employee>()
        .document::<Foo>()
        .document::<Bar>()
        .document::<IntDoc>()
        .document::<Person>()
        .document::<Revisioned>()
        .document::<RecordA>()
        .document::<RecordB>()
        .document::<SoftRecord>()
        .document::<SoftRevisioned>()
        .document::<TestObject>()
        .build()
        .await);
    (schema, store)
}

fn shop(name: &str) -> CoffeeShop {
    CoffeeShop {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        employees: vec![],
    }
}

fn revisioned(id: Uuid, name: &str) -> Revisioned {
    Revisioned {
        id,
        name: name.to_owned(),
    }
}

async fn rows(schema: &marten_testing::TestSchema, table: &str) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

async fn load_shop(store: &DocumentStore, id: Uuid) -> Option<CoffeeShop> {
    ok(store.query_session().load::<CoffeeShop>(&id).await)
}

async fn shop_version(store: &DocumentStore, id: Uuid) -> Uuid {
    ok(store.query_session().metadata::<CoffeeShop>(&id).await)
        .expect("stored")
        .version
}

async fn revision_of(store: &DocumentStore, id: Uuid) -> i64 {
    ok(store.query_session().metadata::<Revisioned>(&id).await)
        .expect("stored")
        .version
}

async fn saved_shop(store: &DocumentStore, doc: &CoffeeShop) {
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);
}

/// The rejections of a save that had to be rejected.
#[track_caller]
fn rejected(r: marten::Result<()>) -> Vec<marten::Rejection> {
    match r {
        Err(Error::Rejected(r)) => r,
        other => panic!("expected a rejected save, got {other:?}"),
    }
}

/// `optimistic_concurrency.cs`: `can_store_same_document_multiple_times_with_optimistic_concurrency`;
/// `identity_map_mechanics.cs`: `finding_documents_in_map_but_not_yet_persisted_2` and
/// `given_record_with_same_id_already_added_then_map_should_be_updated`. A document
/// stored twice in one session (new, then known) saves once, with the last state, and the
/// identity map answers with that last state before the save.
#[tokio::test]
async fn a_document_stored_twice_in_one_session_saves_its_last_state() {
    let (schema, store) = store("mds_store_twice").await;

    // A new optimistic document stored twice: no version known, no conflict.
    let doc = shop("Starbucks");
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);
    assert_eq!(load_shop(&store, doc.id).await, Some(doc.clone()));
    assert_eq!(
        s.version_of::<CoffeeShop>(&doc.id),
        Some(shop_version(&store, doc.id).await),
        "the session knows the version its save wrote"
    );

    // An identity session stores a new record, then a changed copy of it.
    let fresh = shop("first");
    let mut i = store.identity_session();
    ok(i.store(fresh.clone()));
    let changed = CoffeeShop {
        name: "second".into(),
        ..fresh.clone()
    };
    ok(i.store(changed.clone()));
    assert_eq!(
        ok(i.load::<CoffeeShop>(&fresh.id).await),
        Some(changed.clone()),
        "the identity map holds the last stored state"
    );
    ok(i.save_changes().await);
    assert_eq!(load_shop(&store, fresh.id).await, Some(changed));

    // A loaded document stored twice: the first write asserts the loaded version, the
    // second follows it in the same transaction.
    let mut l = store.lightweight_session();
    let mut loaded: CoffeeShop = ok(l.load(&doc.id).await).expect("stored");
    loaded.name = "one".into();
    ok(l.store(loaded.clone()));
    loaded.name = "two".into();
    ok(l.store(loaded.clone()));
    ok(l.save_changes().await);
    assert_eq!(load_shop(&store, doc.id).await.expect("stored").name, "two");
    assert_eq!(rows(&schema, "mt_doc_coffeeshop").await, 2);
}

/// `optimistic_concurrency.cs`: `can_do_multiple_updates_in_a_row_standard`;
/// `dirty_tracked_sessions.cs`: `store_and_update_a_document_in_same_session` and
/// `store_reload_and_update_a_document_in_same_dirty_tracked_session`. A dirty-tracked
/// session saves one document again and again: each save learns the version it wrote,
/// so the next one passes its check, and a write from elsewhere is still caught.
#[tokio::test]
async fn a_dirty_tracked_session_saves_one_document_several_times_in_a_row() {
    let (_schema, store) = store("mds_dirty_in_a_row").await;
    let doc = shop("Starbucks");
    let mut s = store.dirty_tracked_session();
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);

    for name in ["Mozart's", "Cafe Medici", "Dominican Joe's"] {
        s.get_mut::<CoffeeShop>(&doc.id).expect("tracked").name = name.into();
        ok(s.save_changes().await);
        assert_eq!(load_shop(&store, doc.id).await.expect("stored").name, name);
        assert_eq!(
            s.version_of::<CoffeeShop>(&doc.id),
            Some(shop_version(&store, doc.id).await)
        );
    }

    // A reload in the same session hands out the tracked document (no stale copy).
    let reloaded = ok(s.load::<CoffeeShop>(&doc.id).await).expect("tracked");
    assert_eq!(reloaded.name, "Dominican Joe's");
    reloaded.name = "Jens".into();
    ok(s.save_changes().await);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "Jens"
    );

    // Someone else writes: the next dirty save is stale.
    let mut other = store.lightweight_session();
    ok(other.store(CoffeeShop {
        name: "elsewhere".into(),
        ..doc.clone()
    }));
    ok(other.save_changes().await);
    s.get_mut::<CoffeeShop>(&doc.id).expect("tracked").name = "late".into();
    let r = rejected(s.save_changes().await);
    assert_eq!(r.len(), 1);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "elsewhere"
    );
}

/// `optimistic_concurrency.cs`: `overwrite_with_stale_version_standard`. A dirty-tracked
/// session opened without concurrency checks overwrites a copy another session changed
/// since it loaded it.
#[tokio::test]
async fn a_dirty_tracked_session_without_checks_overwrites_a_stale_copy() {
    let (_schema, store) = store("mds_dirty_overwrite").await;
    let doc = shop("Starbucks");
    saved_shop(&store, &doc).await;

    let mut unchecked =
        store.session_with::<DirtyTracking>(SessionOptions::without_concurrency_checks());
    let mut checked = store.dirty_tracked_session();
    ok(unchecked.load::<CoffeeShop>(&doc.id).await)
        .expect("stored")
        .name = "Mozart's".into();
    ok(checked.load::<CoffeeShop>(&doc.id).await)
        .expect("stored")
        .name = "Dominican Joe's".into();

    ok(checked.save_changes().await);
    ok(unchecked.save_changes().await);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "Mozart's"
    );
}

/// `optimistic_concurrency.cs`: `update_multiple_docs_at_a_time_sad_path`. Two tracked
/// documents changed elsewhere since they were loaded: the save names both, writes
/// nothing, and the session's own changes stay pending (still dirty): saved again with
/// the checks off, they are written.
#[tokio::test]
async fn stale_dirty_documents_are_all_rejected_and_stay_dirty_after_the_failed_save() {
    let (_schema, store) = store("mds_dirty_sad_path").await;
    let (doc1, doc2) = (shop("one"), shop("two"));
    let mut setup = store.lightweight_session();
    ok(setup.store(doc1.clone()));
    ok(setup.store(doc2.clone()));
    ok(setup.save_changes().await);

    let mut s = store.dirty_tracked_session();
    ok(s.load::<CoffeeShop>(&doc1.id).await)
        .expect("stored")
        .name = "Mozart's".into();
    ok(s.load::<CoffeeShop>(&doc2.id).await)
        .expect("stored")
        .name = "Dominican Joe's".into();

    let mut other = store.dirty_tracked_session();
    ok(other.load::<CoffeeShop>(&doc1.id).await)
        .expect("stored")
        .name = "Genuine Joe's".into();
    ok(other.load::<CoffeeShop>(&doc2.id).await)
        .expect("stored")
        .name = "Cafe Medici".into();
    ok(other.save_changes().await);

    let r = rejected(s.save_changes().await);
    let mut ids: Vec<IdKey> = r.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut expected = vec![IdKey::Uuid(doc1.id), IdKey::Uuid(doc2.id)];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(r
        .iter()
        .all(|r| matches!(r.kind, RejectionKind::VersionMismatch { .. })));
    assert_eq!(
        load_shop(&store, doc1.id).await.expect("stored").name,
        "Genuine Joe's"
    );
    assert_eq!(
        load_shop(&store, doc2.id).await.expect("stored").name,
        "Cafe Medici"
    );

    // The failed save did not take the changes as saved.
    s.set_concurrency_checks(false);
    ok(s.save_changes().await);
    assert_eq!(
        load_shop(&store, doc1.id).await.expect("stored").name,
        "Mozart's"
    );
    assert_eq!(
        load_shop(&store, doc2.id).await.expect("stored").name,
        "Dominican Joe's"
    );
}

/// `optimistic_concurrency.cs`: `update_multiple_docs_at_a_time_sad_path`, what follows
/// it: the rejected save was rolled back, so the session must not learn the versions its
/// writes would have stored. The document that was not stale still saves against the
/// version the session loaded; the stale one stays stale until reloaded.
#[tokio::test]
async fn a_rejected_save_teaches_the_session_no_version_it_did_not_commit() {
    let (_schema, store) = store("mds_rejected_versions").await;
    let (a, b) = (shop("a"), shop("b"));
    let mut setup = store.lightweight_session();
    ok(setup.store(a.clone()));
    ok(setup.store(b.clone()));
    ok(setup.save_changes().await);

    let mut s = store.identity_session();
    let _: Option<CoffeeShop> = ok(s.load(&a.id).await);
    let _: Option<CoffeeShop> = ok(s.load(&b.id).await);
    let known_a = s.version_of::<CoffeeShop>(&a.id).expect("loaded");

    let mut other = store.lightweight_session();
    ok(other.store(CoffeeShop {
        name: "b elsewhere".into(),
        ..b.clone()
    }));
    ok(other.save_changes().await);

    ok(s.store(CoffeeShop {
        name: "a mine".into(),
        ..a.clone()
    }));
    ok(s.store(CoffeeShop {
        name: "b mine".into(),
        ..b.clone()
    }));
    let r = rejected(s.save_changes().await);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].id, IdKey::Uuid(b.id));
    assert_eq!(s.version_of::<CoffeeShop>(&a.id), Some(known_a));
    assert_eq!(shop_version(&store, a.id).await, known_a, "nothing written");

    // `a` alone saves against the version loaded.
    ok(s.store(CoffeeShop {
        name: "a mine".into(),
        ..a.clone()
    }));
    ok(s.save_changes().await);
    assert_eq!(load_shop(&store, a.id).await.expect("a").name, "a mine");

    // `b` is still stale.
    ok(s.store(CoffeeShop {
        name: "b mine".into(),
        ..b.clone()
    }));
    assert_eq!(rejected(s.save_changes().await).len(), 1);
    assert_eq!(
        load_shop(&store, b.id).await.expect("b").name,
        "b elsewhere"
    );
    // Reloaded (through a fresh session, as the identity map keeps its copy), it saves.
    let mut fresh = store.lightweight_session();
    let _: Option<CoffeeShop> = ok(fresh.load(&b.id).await);
    ok(fresh.store(CoffeeShop {
        name: "b mine".into(),
        ..b.clone()
    }));
    ok(fresh.save_changes().await);
    assert_eq!(load_shop(&store, b.id).await.expect("b").name, "b mine");
}

/// `optimistic_concurrency.cs`:
/// `Bug_669_can_store_and_update_same_document_with_optimistic_concurrency_and_dirty_tracking`.
/// A dirty-tracked session stores a document and then changes it in place before the
/// save: the save writes the last state, without a conflict with itself; also for a
/// document the session loaded first (its version known).
///
/// Failed before the fix: for the loaded document the save queued the explicit upsert
/// asserting the loaded version and then, from dirty tracking, a second upsert asserting
/// the same version again, which the first had already moved within the transaction
/// (`DocState::flush_dirty` ignored the versions already asserted), and the save was
/// rejected as "expected version V, found V".
#[tokio::test]
async fn a_dirty_tracked_store_then_an_in_place_change_saves_the_last_state() {
    let (_schema, store) = store("mds_dirty_store_change").await;

    // A new document.
    let doc = shop("Starbucks");
    let mut s = store.dirty_tracked_session();
    ok(s.store(doc.clone()));
    s.get_mut::<CoffeeShop>(&doc.id).expect("tracked").name = "New Name".into();
    ok(s.save_changes().await);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "New Name"
    );

    // A loaded document, stored explicitly and then changed again in place.
    let mut s = store.dirty_tracked_session();
    let loaded = ok(s.load::<CoffeeShop>(&doc.id).await)
        .expect("stored")
        .clone();
    ok(s.store(CoffeeShop {
        name: "explicit".into(),
        ..loaded
    }));
    s.get_mut::<CoffeeShop>(&doc.id).expect("tracked").name = "in place".into();
    ok(s.save_changes().await);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "in place"
    );
    assert_eq!(
        s.version_of::<CoffeeShop>(&doc.id),
        Some(shop_version(&store, doc.id).await)
    );
}

/// `optimistic_concurrency.cs`: `can_update_and_delete_related_documents`;
/// `dirty_tracked_sessions.cs`: `store_reload_update_and_delete_by_id_in_same_dirty_tracked_session`
/// and `store_reload_delete_reload_and_update_document_in_same_dirty_tracked_session`.
/// A delete of a tracked, changed document wins over its change; a document deleted and
/// then loaded (and changed) again in the same session is written back.
#[tokio::test]
async fn dirty_tracked_deletes_win_over_changes_and_a_reload_after_a_delete_writes_it_back() {
    let (_schema, store) = store("mds_dirty_delete").await;
    let emp = Employee {
        id: Uuid::now_v7(),
        name: "Ann".into(),
    };
    let mut doc = shop("Starbucks");
    doc.employees.push(emp.id);
    let mut setup = store.lightweight_session();
    ok(setup.store(emp.clone()));
    ok(setup.store(doc.clone()));
    ok(setup.save_changes().await);

    // Change one tracked document, delete the other.
    let mut s = store.dirty_tracked_session();
    ok(s.load::<Employee>(&emp.id).await).expect("stored").name = "renamed".into();
    ok(s.load::<CoffeeShop>(&doc.id).await)
        .expect("stored")
        .employees
        .retain(|e| *e != emp.id);
    ok(s.delete::<Employee>(&emp.id));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Employee>(&emp.id).await), None);
    assert!(load_shop(&store, doc.id)
        .await
        .expect("stored")
        .employees
        .is_empty());

    // Reload, change, delete by id: deleted.
    let mut s = store.dirty_tracked_session();
    ok(s.load::<CoffeeShop>(&doc.id).await)
        .expect("stored")
        .name = "Jens".into();
    ok(s.delete::<CoffeeShop>(&doc.id));
    ok(s.save_changes().await);
    assert_eq!(load_shop(&store, doc.id).await, None);

    // Store, reload, change, delete, reload, change: the last change is written.
    let user = shop("James");
    let mut s = store.dirty_tracked_session();
    ok(s.store(user.clone()));
    ok(s.save_changes().await);
    ok(s.load::<CoffeeShop>(&user.id).await)
        .expect("tracked")
        .name = "Jens".into();
    ok(s.delete::<CoffeeShop>(&user.id));
    let again = ok(s.load::<CoffeeShop>(&user.id).await).expect("not deleted until saved");
    assert_eq!(again.name, "James", "the delete dropped the tracked copy");
    again.name = "Jens".into();
    ok(s.save_changes().await);
    assert_eq!(
        load_shop(&store, user.id).await.expect("stored").name,
        "Jens"
    );
}

/// `Bugs/Bug_393_issue_with_identity_map.cs`: `load_non_existing_with_a_store_should_return_new_added_document`
/// (identity map and dirty tracking). A load that found nothing must not be remembered:
/// a document stored afterwards under that id is what the next load returns.
#[tokio::test]
async fn a_load_that_found_nothing_then_a_store_returns_the_stored_document() {
    let (_schema, store) = store("mds_bug_393").await;
    let id = Uuid::now_v7();
    let mut i = store.identity_session();
    assert_eq!(ok(i.load::<CoffeeShop>(&id).await), None);
    let doc = CoffeeShop {
        id,
        ..shop("route")
    };
    ok(i.store(doc.clone()));
    assert_eq!(ok(i.load::<CoffeeShop>(&id).await), Some(doc.clone()));
    let many = ok(i.load_many::<CoffeeShop>(&[id]).await);
    assert_eq!(many, std::slice::from_ref(&doc));

    let id = Uuid::now_v7();
    let mut d = store.dirty_tracked_session();
    assert!(ok(d.load::<CoffeeShop>(&id).await).is_none());
    let doc = CoffeeShop {
        id,
        ..shop("route")
    };
    ok(d.store(doc.clone()));
    let tracked = ok(d.load::<CoffeeShop>(&id).await).expect("the stored document");
    assert_eq!(*tracked, doc);
    tracked.name = "changed".into();
    ok(d.save_changes().await);
    assert_eq!(load_shop(&store, id).await.expect("stored").name, "changed");
}

/// Stores and deletes, in one session of kind `K`, a `Foo` and a `Bar` sharing an id
/// and an `IntDoc`; returns the ids.
async fn store_then_delete<K: Tracking>(s: &mut Session<K>, int_id: i64) -> Uuid {
    let id = Uuid::now_v7();
    ok(s.store(Foo {
        id,
        label: "foo".into(),
    }));
    ok(s.store(Bar { id, rel: id }));
    ok(s.store(IntDoc { id: int_id }));
    ok(s.delete::<Foo>(&id));
    ok(s.delete::<Bar>(&id));
    ok(s.delete::<IntDoc>(&int_id));
    ok(s.save_changes().await);
    id
}

/// `Bugs/Bug_654_document_session_delete_Tests.cs`: `upsert_then_delete_should_delete`;
/// `Bugs/Bug_2660_deletes_in_complex_order.cs` (every test: one type, two types with the
/// same id, a delete by filter of the related type, mixed id types, in lightweight,
/// identity and dirty-tracked sessions); `Deleting/delete_a_single_document.cs`:
/// `persist_and_delete_by_id_documents_with_the_same_id`.
#[tokio::test]
async fn store_then_delete_in_one_session_leaves_nothing() {
    let (schema, store) = store("mds_store_delete").await;

    let mut i = store.identity_session();
    let issue = Uuid::now_v7();
    ok(i.store(Foo {
        id: issue,
        label: "issue".into(),
    }));
    ok(i.delete::<Foo>(&issue));
    ok(i.save_changes().await);
    assert_eq!(ok(i.load::<Foo>(&issue).await), None);

    let mut l = store.lightweight_session();
    let a = store_then_delete(&mut l, 5).await;
    let mut i = store.identity_session();
    let b = store_then_delete(&mut i, 6).await;
    assert_eq!(ok(i.load::<Foo>(&b).await), None);
    let mut d = store.dirty_tracked_session();
    let c = store_then_delete(&mut d, 7).await;
    assert!(ok(d.load::<Bar>(&c).await).is_none());
    let mut q = store.query_session();
    for id in [a, b, c] {
        assert_eq!(ok(q.load::<Foo>(&id).await), None);
        assert_eq!(ok(q.load::<Bar>(&id).await), None);
    }
    for table in ["mt_doc_foo", "mt_doc_bar", "mt_doc_intdoc"] {
        assert_eq!(rows(&schema, table).await, 0, "{table}");
    }

    // A delete by id and a delete by filter of the documents referring to it.
    let mut i = store.identity_session();
    let id = Uuid::now_v7();
    ok(i.store(Foo {
        id,
        label: "foo".into(),
    }));
    ok(i.store(Bar {
        id: Uuid::now_v7(),
        rel: id,
    }));
    ok(i.delete::<Foo>(&id));
    ok(i.delete_where::<Bar>(Bar::fields().rel.eq(id)));
    ok(i.save_changes().await);
    assert_eq!(ok(q.load::<Foo>(&id).await), None);
    assert_eq!(rows(&schema, "mt_doc_bar").await, 0);

    // Two types with the same id, saved in two saves, deleted in one.
    let mut l = store.lightweight_session();
    let id = Uuid::now_v7();
    ok(l.store(Foo {
        id,
        label: "user".into(),
    }));
    ok(l.save_changes().await);
    ok(l.store(Bar { id, rel: id }));
    ok(l.save_changes().await);
    let mut l = store.lightweight_session();
    ok(l.delete::<Foo>(&id));
    ok(l.delete::<Bar>(&id));
    ok(l.save_changes().await);
    assert_eq!(ok(q.load::<Foo>(&id).await), None);
    assert_eq!(ok(q.load::<Bar>(&id).await), None);
}

/// `Bugs/Bug_635_operations_order_in_same_session.cs`: `deletewhere_and_store`;
/// `UnitOfWork_Operation_Ordering_Tests.cs`: `upsert_followed_by_delete_should_order_correctly`;
/// `updating_by_batch.cs`: `can_delete_and_make_updates_with_more_than_one_batch_GH_987`;
/// `delete_many_documents_by_query.cs`: `in_a_mix_with_other_commands`. A delete by
/// filter runs where it was queued: documents stored after it (and matching it) stay,
/// documents stored before it are deleted.
#[tokio::test]
async fn a_delete_by_filter_runs_in_queue_order_with_the_stores_around_it() {
    let (_schema, store) = store("mds_delete_where_order").await;
    let person = |last: &str| Person {
        id: Uuid::now_v7(),
        last_name: last.to_owned(),
    };
    let mut s = store.lightweight_session();
    for i in 0..256 {
        ok(s.store(person(if i % 2 == 0 { "batch-id1" } else { "batch-id2" })));
    }
    ok(s.save_changes().await);

    let mut replace = store.lightweight_session();
    ok(replace.delete_where::<Person>(Person::fields().last_name.eq("batch-id1")));
    let new: Vec<Person> = (0..2).map(|_| person("batch-id1")).collect();
    for p in &new {
        ok(replace.store(p.clone()));
    }
    ok(replace.save_changes().await);
    let mut q = store.query_session();
    let left = ok(q
        .query::<Person>()
        .filter(|f| f.last_name.eq("batch-id1"))
        .to_list()
        .await);
    let mut left_ids: Vec<Uuid> = left.iter().map(|p| p.id).collect();
    left_ids.sort();
    let mut new_ids: Vec<Uuid> = new.iter().map(|p| p.id).collect();
    new_ids.sort();
    assert_eq!(left_ids, new_ids);
    assert_eq!(
        ok(q.query::<Person>()
            .filter(|f| f.last_name.eq("batch-id2"))
            .count()
            .await),
        128
    );

    // A store followed by a delete by filter matching it: deleted.
    let mut s = store.identity_session();
    let doomed = person("doomed");
    ok(s.store(doomed.clone()));
    ok(s.delete_where::<Person>(Person::fields().id.eq(doomed.id)));
    ok(s.save_changes().await);
    assert_eq!(ok(q.load::<Person>(&doomed.id).await), None);
    assert_eq!(ok(s.load::<Person>(&doomed.id).await), None);

    // Delete everything, then store 100 (several statements' worth), with other
    // documents in the same save.
    let mut s = store.lightweight_session();
    ok(s.delete_where::<Person>(Person::fields().last_name.ne("")));
    ok(s.store(shop("bystander")));
    for i in 0..100 {
        ok(s.store(person(&format!("p{i}"))));
    }
    ok(s.save_changes().await);
    assert_eq!(ok(q.query::<Person>().count().await), 100);
    assert_eq!(ok(q.query::<CoffeeShop>().count().await), 1);
}

/// `Bugs/Bug_PR_2277_upsert_deleted_with_unique_key.cs`: `can_upsert_deleted_record_with_unique_key`.
/// Documents bulk inserted with a unique field are deleted and new documents with the
/// same unique values stored in the same save: the deletes run first, so the values are
/// free. A soft-deleted type keeps its marked row, which keeps the value taken (unique
/// across marked rows, as the README says), until it is hard deleted.
#[tokio::test]
async fn a_unique_value_freed_by_a_delete_can_be_stored_again_in_the_same_save() {
    let (schema, store) = store("mds_unique_delete").await;
    let a = RecordA {
        id: Uuid::now_v7(),
        unique_key: "test123".into(),
    };
    let b = RecordB {
        id: Uuid::now_v7(),
        unique_key: "test123".into(),
    };
    ok(store
        .bulk_insert(vec![a.clone()], BulkMode::InsertOnly)
        .await);
    ok(store
        .bulk_insert(vec![b.clone()], BulkMode::InsertOnly)
        .await);

    let mut s = store.lightweight_session();
    ok(s.delete::<RecordA>(&a.id));
    ok(s.delete::<RecordB>(&b.id));
    let a2 = RecordA {
        id: Uuid::now_v7(),
        unique_key: "test123".into(),
    };
    let b2 = RecordB {
        id: Uuid::now_v7(),
        unique_key: "test123".into(),
    };
    ok(s.store(a2.clone()));
    ok(s.store(b2.clone()));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ok(q.query::<RecordA>().to_list().await), [a2]);
    assert_eq!(ok(q.query::<RecordB>().to_list().await), [b2]);

    // Soft-deleted: the marked row still holds the value.
    let soft = SoftRecord {
        id: Uuid::now_v7(),
        unique_key: "test123".into(),
    };
    ok(store
        .bulk_insert(vec![soft.clone()], BulkMode::InsertOnly)
        .await);
    let soft2 = SoftRecord {
        id: Uuid::now_v7(),
        unique_key: "test123".into(),
    };
    let mut s = store.lightweight_session();
    ok(s.delete::<SoftRecord>(&soft.id));
    ok(s.store(soft2.clone()));
    match s.save_changes().await {
        Err(Error::UniqueViolation {
            document_type,
            field,
            ..
        }) => assert_eq!(
            (document_type, field.as_str()),
            ("SoftRecord", "unique_key")
        ),
        other => panic!("the marked row keeps its unique value: {other:?}"),
    }
    assert_eq!(
        ok(q.query::<SoftRecord>().to_list().await),
        std::slice::from_ref(&soft),
        "nothing of the failed save was written"
    );
    let mut s = store.lightweight_session();
    ok(s.hard_delete::<SoftRecord>(&soft.id));
    ok(s.store(soft2.clone()));
    ok(s.save_changes().await);
    assert_eq!(ok(q.query::<SoftRecord>().to_list().await), [soft2]);
    assert_eq!(rows(&schema, "mt_doc_softrecord").await, 1);
}

/// `Concurrency/numeric_revisioning.cs`: `concurrent_update_revision_does_not_silently_lose_writes`.
/// Many sessions load a document at revision 1 and race `update_revision(doc, 2)`:
/// exactly one save succeeds, every other one is rejected (none silently skipped), and
/// the stored document is the winner's at revision 2.
#[tokio::test]
async fn racing_update_revisions_to_the_same_revision_have_exactly_one_winner() {
    const RACERS: usize = 16;
    const ROUNDS: usize = 20;
    let (_schema, store) = store("mds_update_revision_race").await;
    for round in 0..ROUNDS {
        let id = Uuid::now_v7();
        let mut seed = store.lightweight_session();
        ok(seed.store(revisioned(id, "Initial")));
        ok(seed.save_changes().await);
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let mut loaded: Revisioned = s.load(&id).await?.expect("seeded");
                    assert_eq!(s.version_of::<Revisioned>(&id), Some(1));
                    loaded.name = format!("session {racer}");
                    s.update_revision(loaded, 2)?;
                    barrier.wait().await;
                    s.save_changes().await.map(|()| racer)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(racer) => winners.push(racer),
                Err(Error::Rejected(r)) => {
                    assert_eq!(r.len(), 1);
                    assert_eq!(
                        r[0].kind,
                        RejectionKind::RevisionNotNewer {
                            requested: 2,
                            actual: 2
                        }
                    );
                }
                Err(other) => panic!("round {round}: unexpected error {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert_eq!(revision_of(&store, id).await, 2);
        let stored: Revisioned = ok(store.query_session().load(&id).await).expect("stored");
        assert_eq!(stored.name, format!("session {}", winners[0]));
    }
}

/// `Concurrency/numeric_revisioning.cs`: `update_just_overwrites_and_increments_version`,
/// `overwrite_increments_version`, `update_revision_and_jumping_multiples` and
/// `optimistic_concurrency_failure_with_update_revision`. After `update_revision` jumps
/// the revision, a plain `update` (and a store by a session without checks) counts on
/// from there, and an `update_revision` below it is rejected.
#[tokio::test]
async fn writes_after_an_update_revision_count_on_from_the_jumped_revision() {
    let (_schema, store) = store("mds_revision_jump").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    for name in ["Tim", "Bill", "Dru"] {
        ok(s.store(revisioned(id, name)));
        ok(s.save_changes().await);
    }
    assert_eq!(revision_of(&store, id).await, 3);

    ok(s.update_revision(revisioned(id, "Wrong"), 4));
    ok(s.save_changes().await);
    assert_eq!(s.version_of::<Revisioned>(&id), Some(4));
    ok(s.update(revisioned(id, "Last")));
    ok(s.save_changes().await);
    let stored: Revisioned = ok(s.load(&id).await).expect("stored");
    assert_eq!(stored.name, "Last");
    assert_eq!(revision_of(&store, id).await, 5);

    let mut unchecked =
        store.session_with::<marten::Lightweight>(SessionOptions::without_concurrency_checks());
    ok(unchecked.store(revisioned(id, "Overwritten")));
    ok(unchecked.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 6);

    ok(s.update_revision(revisioned(id, "Tron"), 10));
    ok(s.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 10);
    let stored: Revisioned = ok(s.load(&id).await).expect("stored");
    assert_eq!(stored.name, "Tron");

    ok(s.update_revision(revisioned(id, "Stale"), 2));
    let r = rejected(s.save_changes().await);
    assert_eq!(
        r[0].kind,
        RejectionKind::RevisionNotNewer {
            requested: 2,
            actual: 10
        }
    );
    assert_eq!(revision_of(&store, id).await, 10);
}

/// `Concurrency/numeric_revisioning.cs`:
/// `load_and_update_revisioned_document_by_revision_from_identity_map_session`,
/// `load_and_update_revisioned_document_by_revision_from_dirty_session` and
/// `load_and_update_revisioned_document_from_dirty_session`. A document loaded in an
/// identity or dirty-tracked session is written with `update_revision` at the next
/// revision; afterwards the session keeps writing it with its checks passing.
#[tokio::test]
async fn update_revision_of_a_document_loaded_in_an_identity_or_dirty_tracked_session() {
    let (_schema, store) = store("mds_revision_sessions").await;
    let id = Uuid::now_v7();
    let mut seed = store.lightweight_session();
    ok(seed.store(revisioned(id, "seed")));
    ok(seed.save_changes().await);

    let mut i = store.identity_session();
    let mut doc: Revisioned = ok(i.load(&id).await).expect("stored");
    doc.name = "Different".into();
    ok(i.update_revision(doc.clone(), 2));
    ok(i.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 2);
    assert_eq!(ok(i.load::<Revisioned>(&id).await), Some(doc));
    ok(i.update(revisioned(id, "identity update")));
    ok(i.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 3);

    let mut d = store.dirty_tracked_session();
    let tracked = ok(d.load::<Revisioned>(&id).await).expect("stored");
    tracked.name = "dirty".into();
    let copy = tracked.clone();
    ok(d.update_revision(copy, 4));
    ok(d.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 4);
    // The tracked document changes again in place: saved at the next revision.
    d.get_mut::<Revisioned>(&id).expect("tracked").name = "dirty again".into();
    ok(d.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 5);
    // ...and an explicit update of it too.
    let copy = d.get_mut::<Revisioned>(&id).expect("tracked").clone();
    ok(d.update(Revisioned {
        name: "updated".into(),
        ..copy
    }));
    ok(d.save_changes().await);
    assert_eq!(revision_of(&store, id).await, 6);
    let stored: Revisioned = ok(store.query_session().load(&id).await).expect("stored");
    assert_eq!(stored.name, "updated");
}

/// `Concurrency/numeric_revisioning.cs`: `bulk_inserts`;
/// `Bugs/Bug_621_bulk_insert_with_optimistic_concurrency.cs`. Bulk inserted numeric
/// documents start at revision 1 and a bulk overwrite counts on from the stored revision
/// (also a jumped one); a session holding the revision from before the overwrite is
/// stale, and `update_revision` to a revision the overwrite reached is not newer.
#[tokio::test]
async fn bulk_inserts_and_session_writes_share_numeric_revisions() {
    let (_schema, store) = store("mds_revision_bulk").await;
    let docs: Vec<Revisioned> = ["Tim", "Molly", "JD"]
        .iter()
        .map(|n| revisioned(Uuid::now_v7(), n))
        .collect();
    assert_eq!(
        ok(store.bulk_insert(docs.clone(), BulkMode::InsertOnly).await),
        3
    );
    for d in &docs {
        assert_eq!(revision_of(&store, d.id).await, 1);
    }

    let mut s = store.lightweight_session();
    let _: Option<Revisioned> = ok(s.load(&docs[0].id).await);
    ok(s.update_revision(revisioned(docs[1].id, "jumped"), 10));
    ok(s.save_changes().await);

    let over: Vec<Revisioned> = docs[..2].iter().map(|d| revisioned(d.id, "bulk")).collect();
    assert_eq!(
        ok(store.bulk_insert(over.clone(), BulkMode::Overwrite).await),
        2
    );
    assert_eq!(revision_of(&store, docs[0].id).await, 2);
    assert_eq!(revision_of(&store, docs[1].id).await, 11);

    ok(s.store(revisioned(docs[0].id, "stale")));
    let r = rejected(s.save_changes().await);
    assert_eq!(
        r[0].kind,
        RejectionKind::VersionMismatch {
            expected: "1".into(),
            actual: Some("2".into())
        }
    );
    ok(s.update_revision(revisioned(docs[1].id, "same"), 11));
    let r = rejected(s.save_changes().await);
    assert_eq!(
        r[0].kind,
        RejectionKind::RevisionNotNewer {
            requested: 11,
            actual: 11
        }
    );
    ok(s.try_update_revision(revisioned(docs[1].id, "skipped"), 11));
    ok(s.save_changes().await);
    // Ignoring duplicates leaves the stored revisions alone.
    let ignored: Vec<Revisioned> = docs.iter().map(|d| revisioned(d.id, "ignored")).collect();
    assert_eq!(
        ok(store.bulk_insert(ignored, BulkMode::IgnoreDuplicates).await),
        0
    );
    let mut q = store.query_session();
    for (d, rev) in docs.iter().zip([2, 11, 1]) {
        assert_eq!(revision_of(&store, d.id).await, rev);
        let stored: Revisioned = ok(q.load(&d.id).await).expect("stored");
        assert_ne!(stored.name, "ignored");
        assert_ne!(stored.name, "skipped");
    }
}

/// `Bugs/optimistic_concurrency_with_update_method.cs`: `can_update_with_optimistic_concurrency`,
/// `update_with_stale_version_throws_exception` and `update_with_stale_version_and_disabled_checks`;
/// `Bugs/Bug_2169_concurrency_error.cs`: `there_should_be_no_error`. `update` of a loaded
/// optimistic document asserts the loaded version; a session without checks updates
/// anyway; a document loaded in one session and stored by a fresh one is no conflict.
#[tokio::test]
async fn update_of_a_loaded_optimistic_document_asserts_its_version() {
    let (_schema, store) = store("mds_update_method").await;
    let doc = shop("Starbucks");
    let mut s1 = store.lightweight_session();
    ok(s1.insert(doc.clone()));
    ok(s1.save_changes().await);

    let mut s2 = store.lightweight_session();
    let mut loaded: CoffeeShop = ok(s2.load(&doc.id).await).expect("stored");
    loaded.name = "Mozart's".into();
    ok(s2.update(loaded.clone()));
    ok(s2.save_changes().await);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "Mozart's"
    );

    // Stale: someone wrote after this session loaded it.
    let mut s3 = store.lightweight_session();
    let mut stale: CoffeeShop = ok(s3.load(&doc.id).await).expect("stored");
    let known = s3.version_of::<CoffeeShop>(&doc.id).expect("loaded");
    ok(s2.store(CoffeeShop {
        name: "moved".into(),
        ..loaded
    }));
    ok(s2.save_changes().await);
    stale.name = "late".into();
    ok(s3.update(stale.clone()));
    let r = rejected(s3.save_changes().await);
    let now = shop_version(&store, doc.id).await;
    assert_eq!(r[0].id, IdKey::Uuid(doc.id));
    assert_eq!(
        r[0].kind,
        RejectionKind::VersionMismatch {
            expected: known.to_string(),
            actual: Some(now.to_string())
        }
    );
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "moved"
    );

    // Without checks the same update goes through.
    let mut unchecked =
        store.session_with::<marten::Lightweight>(SessionOptions::without_concurrency_checks());
    let _: Option<CoffeeShop> = ok(unchecked.load(&doc.id).await);
    ok(s2.store(CoffeeShop {
        name: "moved again".into(),
        ..doc.clone()
    }));
    ok(s2.save_changes().await);
    ok(unchecked.update(stale));
    ok(unchecked.save_changes().await);
    assert_eq!(
        load_shop(&store, doc.id).await.expect("stored").name,
        "late"
    );

    // Bug 2169: loaded in one session, stored by another that never loaded it.
    let obj = TestObject {
        id: Uuid::now_v7().to_string(),
        some_int_data: 0,
    };
    let mut s = store.lightweight_session();
    ok(s.store(obj.clone()));
    ok(s.save_changes().await);
    let rehydrated: TestObject =
        ok(store.lightweight_session().load(&obj.id).await).expect("stored");
    let mut s = store.lightweight_session();
    ok(s.store(rehydrated));
    ok(s.save_changes().await);
    assert_eq!(
        ok(store
            .query_session()
            .query::<TestObject>()
            .filter(|f| f.some_int_data.eq(0))
            .count()
            .await),
        1
    );
}

/// `Deleting/soft_deletes.cs`: `soft_delete_a_document_row_state`, `un_delete_a_document_by_where_row_state`
/// and `query_is_soft_deleted_docs`, on a numeric document; with
/// `Concurrency/numeric_revisioning.cs`: `update_revision_and_jumping_multiples`. A soft
/// delete keeps the revision; `update_revision` of the marked document writes and revives
/// it at the requested revision, `try_update_revision` below the stored one leaves it
/// marked; an identity session sees the delete and the undo.
#[tokio::test]
async fn soft_deleted_numeric_documents_and_update_revision() {
    let (_schema, store) = store("mds_soft_revision").await;
    let id = "doc-1".to_owned();
    let doc = |name: &str| SoftRevisioned {
        id: id.clone(),
        name: name.to_owned(),
    };
    let meta = |store: DocumentStore, id: String| async move {
        ok(store.query_session().metadata::<SoftRevisioned>(&id).await).expect("row")
    };

    let mut s = store.identity_session();
    ok(s.store(doc("first")));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<SoftRevisioned>(&id).await), Some(doc("first")));
    ok(s.delete::<SoftRevisioned>(&id));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<SoftRevisioned>(&id).await), None);
    let m = meta(store.clone(), id.clone()).await;
    assert!(m.deleted && m.deleted_at.is_some());
    assert_eq!(m.version, 1);
    assert_eq!(
        ok(s.query::<SoftRevisioned>().only_deleted().to_list().await),
        [doc("first")]
    );

    ok(s.undo_delete_where::<SoftRevisioned>(SoftRevisioned::fields().name.eq("first")));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<SoftRevisioned>(&id).await), Some(doc("first")));
    assert_eq!(meta(store.clone(), id.clone()).await.version, 1);

    // update_revision of a marked document revives it at the requested revision.
    ok(s.delete::<SoftRevisioned>(&id));
    ok(s.save_changes().await);
    ok(s.update_revision(doc("revived"), 5));
    ok(s.save_changes().await);
    let m = meta(store.clone(), id.clone()).await;
    assert!(!m.deleted && m.deleted_at.is_none());
    assert_eq!(m.version, 5);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<SoftRevisioned>(&id).await),
        Some(doc("revived"))
    );

    // A try below the stored revision does nothing, also to a marked row.
    ok(s.delete::<SoftRevisioned>(&id));
    ok(s.save_changes().await);
    ok(s.try_update_revision(doc("skipped"), 5));
    ok(s.save_changes().await);
    let m = meta(store.clone(), id.clone()).await;
    assert!(m.deleted);
    assert_eq!(m.version, 5);
    assert_eq!(ok(q.load::<SoftRevisioned>(&id).await), None);
    ok(s.try_update_revision(doc("newer"), 6));
    ok(s.save_changes().await);
    assert_eq!(ok(q.load::<SoftRevisioned>(&id).await), Some(doc("newer")));
    assert_eq!(meta(store.clone(), id.clone()).await.version, 6);
}

/// `Writing/document_inserts.cs`: `insert_sad_path`, in a dirty-tracked session, and
/// `identity_map_mechanics.cs`: `then_a_document_can_be_added_with_then_specified_id`.
/// An insert of an existing id is rejected and writes nothing, also when the session
/// tracks the document with a change of its own: the tracked change is not lost with
/// the rejected insert's queue, and saves once the insert is gone.
#[tokio::test]
async fn a_rejected_insert_in_a_dirty_tracked_session_writes_nothing_and_keeps_the_tracked_change()
{
    let (_schema, store) = store("mds_insert_sad_path").await;
    let (existing, other) = (shop("existing"), shop("other"));
    saved_shop(&store, &existing).await;
    saved_shop(&store, &other).await;

    let mut d = store.dirty_tracked_session();
    ok(d.load::<CoffeeShop>(&other.id).await)
        .expect("stored")
        .name = "changed".into();
    ok(d.insert(CoffeeShop {
        name: "duplicate".into(),
        ..existing.clone()
    }));
    let r = rejected(d.save_changes().await);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, RejectionKind::AlreadyExists);
    assert_eq!(
        load_shop(&store, existing.id).await.expect("stored").name,
        "existing"
    );
    assert_eq!(
        load_shop(&store, other.id).await.expect("stored").name,
        "other",
        "nothing of the rejected save was written"
    );

    // The queue is empty now; the tracked change is still pending.
    ok(d.save_changes().await);
    assert_eq!(
        load_shop(&store, other.id).await.expect("stored").name,
        "changed"
    );
}

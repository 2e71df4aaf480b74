//! Document scenarios ported from the JasperFx.Events compliance suites (JasperFx/jasperfx,
//! `src/JasperFx.Events.ComplianceTests/Suites/`): `DocumentSessionCompliance`,
//! `DocumentLoadAndStoreCompliance`, `DocumentDeleteCompliance`, `DocumentQueryCompliance`,
//! `NumericRevisionCompliance` and `DeclaredNumericRevisionCompliance`. Each test carries
//! the behaviour a suite pins (the unit of work, upserts, loads by every id kind, deletes
//! by id and by filter, the minimum query set, the strictly-greater revision rule) over to
//! marten-rs's API against a real PostgreSQL, on a schema of its own.
//!
//! JasperFx reads a numeric revision off the document (`Version`, 0 meaning "auto"); in
//! marten-rs the revision is metadata, so "auto" is `store` and an explicit revision is
//! `update_revision(doc, n)` (README, "Writes"); a refused write is `Error::Rejected`.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::{DocumentMetadata, PgDocument, QuerySpec, RejectionKind, Result};
use serde::{Deserialize, Serialize};

/// The suites' plain document: a uuid id, no concurrency checks.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Widget {
    id: Uuid,
    name: String,
    color: String,
    weight: i64,
}

/// The suites' document with a string id.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Gadget {
    id: String,
    kind: String,
    weight: i64,
}

/// A strong-typed id over a uuid.
#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CouponCode(Uuid);

/// The suites' document with a strong-typed id.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Coupon {
    id: CouponCode,
    description: String,
    percent_off: i32,
}

/// The revision suites' document: numeric revisions.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct LedgerEntry {
    id: Uuid,
    customer: String,
    amount: i64,
}

async fn store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Widget>()
        .document::<Gadget>()
        .document::<Coupon>()
        .document::<LedgerEntry>()
        .build()
        .await);
    (schema, store)
}

fn widget(name: &str, color: &str, weight: i64) -> Widget {
    Widget {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        color: color.to_owned(),
        weight,
    }
}

fn gadget(id: &str, kind: &str, weight: i64) -> Gadget {
    Gadget {
        id: id.to_owned(),
        kind: kind.to_owned(),
        weight,
    }
}

/// Stores `docs` in a session of their own and saves.
async fn persist<D: PgDocument>(store: &DocumentStore, docs: impl IntoIterator<Item = D>) {
    let mut s = store.lightweight_session();
    for d in docs {
        ok(s.store(d));
    }
    ok(s.save_changes().await);
}

async fn load_widget(store: &DocumentStore, id: Uuid) -> Option<Widget> {
    ok(store.query_session().load::<Widget>(&id).await)
}

async fn load_gadget(store: &DocumentStore, id: &str) -> Option<Gadget> {
    ok(store.query_session().load::<Gadget>(&id.to_owned()).await)
}

async fn widget_count(store: &DocumentStore) -> i64 {
    ok(store.query_session().query::<Widget>().count().await)
}

async fn all_widgets(store: &DocumentStore) -> Vec<Widget> {
    ok(store.query_session().query::<Widget>().to_list().await)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The five widgets the query suite seeds.
async fn the_widgets(store: &DocumentStore) {
    persist(
        store,
        [
            widget("alpha", "red", 1),
            widget("bravo", "red", 2),
            widget("charlie", "blue", 3),
            widget("delta", "blue", 4),
            widget("echo", "green", 5),
        ],
    )
    .await;
}

// ---- DocumentSessionCompliance ----

/// A document stored and saved by a lightweight session loads back, every field intact,
/// in a query session; the lightweight session reads it too.
#[tokio::test]
async fn a_lightweight_session_round_trips_a_document_and_reads_as_well_as_writes() {
    let (_schema, store) = store("jfx_round_trip").await;
    let doc = widget("Sprocket", "red", 4);
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);

    assert_eq!(load_widget(&store, doc.id).await, Some(doc.clone()));
    let mut fresh = store.lightweight_session();
    assert_eq!(ok(fresh.load::<Widget>(&doc.id).await), Some(doc));
}

/// A queued store is invisible to other sessions until `save_changes` commits it.
#[tokio::test]
async fn changes_are_invisible_until_save_changes() {
    let (_schema, store) = store("jfx_invisible").await;
    let doc = widget("Uncommitted", "red", 1);
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    assert_eq!(load_widget(&store, doc.id).await, None);
    assert_eq!(widget_count(&store).await, 0);

    ok(s.save_changes().await);
    assert_eq!(load_widget(&store, doc.id).await, Some(doc));
}

/// A session dropped without `save_changes` writes nothing, in any session kind.
#[tokio::test]
async fn dropping_a_session_without_saving_discards_its_work() {
    let (_schema, store) = store("jfx_abandon").await;
    let (a, b, c) = (
        widget("Never saved", "red", 1),
        widget("Never saved either", "red", 2),
        widget("Nor this", "red", 3),
    );
    {
        let mut s = store.lightweight_session();
        ok(s.store(a.clone()));
        let mut i = store.identity_session();
        ok(i.store(b.clone()));
        let mut d = store.dirty_tracked_session();
        ok(d.store(c.clone()));
    }
    for id in [a.id, b.id, c.id] {
        assert_eq!(load_widget(&store, id).await, None);
    }
    assert_eq!(widget_count(&store).await, 0);
}

/// `save_changes` with nothing queued succeeds, twice in a row, and writes nothing.
#[tokio::test]
async fn save_changes_with_no_pending_work_is_a_no_op() {
    let (_schema, store) = store("jfx_empty_save").await;
    let mut s = store.lightweight_session();
    ok(s.save_changes().await);
    ok(s.save_changes().await);
    let mut d = store.dirty_tracked_session();
    ok(d.save_changes().await);
    ok(d.save_changes().await);
    assert_eq!(widget_count(&store).await, 0);
}

/// A second save of one session sends only what was queued since the first: the last
/// write of an id wins, and an insert of the first batch is not sent again (it would be
/// rejected as `AlreadyExists` if it were).
#[tokio::test]
async fn saving_twice_does_not_replay_the_first_batch() {
    let (_schema, store) = store("jfx_no_replay").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(Widget {
        id,
        ..widget("First", "red", 1)
    }));
    ok(s.save_changes().await);
    ok(s.store(Widget {
        id,
        ..widget("Second", "red", 2)
    }));
    ok(s.save_changes().await);
    let loaded = load_widget(&store, id).await.expect("stored");
    assert_eq!((loaded.name.as_str(), loaded.weight), ("Second", 2));

    let first = gadget("inserted-once", "lever", 1);
    ok(s.insert(first.clone()));
    ok(s.save_changes().await);
    ok(s.store(gadget("second-batch", "spanner", 2)));
    ok(s.save_changes().await);
    assert_eq!(load_gadget(&store, "inserted-once").await, Some(first));
    assert!(load_gadget(&store, "second-batch").await.is_some());
    assert_eq!(widget_count(&store).await, 1);
}

/// Two open sessions are separate units of work: saving one commits only its own writes.
#[tokio::test]
async fn sessions_are_independent_units_of_work() {
    let (_schema, store) = store("jfx_independent").await;
    let (one_doc, two_doc) = (widget("One", "red", 1), widget("Two", "blue", 2));
    let mut one = store.lightweight_session();
    let mut two = store.lightweight_session();
    ok(one.store(one_doc.clone()));
    ok(two.store(two_doc.clone()));

    ok(one.save_changes().await);
    assert_eq!(load_widget(&store, one_doc.id).await, Some(one_doc.clone()));
    assert_eq!(load_widget(&store, two_doc.id).await, None);

    ok(two.save_changes().await);
    assert_eq!(load_widget(&store, two_doc.id).await, Some(two_doc));
    assert_eq!(widget_count(&store).await, 2);
}

/// One query session loads documents of several registered types.
#[tokio::test]
async fn a_query_session_reads_every_document_type() {
    let (_schema, store) = store("jfx_every_type").await;
    let w = widget("Widget", "red", 1);
    let g = gadget("gadget-1", "lever", 1);
    persist(&store, [w.clone()]).await;
    persist(&store, [g.clone()]).await;

    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Widget>(&w.id).await), Some(w));
    assert_eq!(ok(q.load::<Gadget>(&g.id).await), Some(g));
}

// ---- DocumentLoadAndStoreCompliance ----

/// Documents round-trip by uuid, string and strong-typed ids, and a missing id of each
/// kind loads as `None`.
#[tokio::test]
async fn store_and_load_by_every_id_kind_and_miss_each() {
    let (_schema, store) = store("jfx_id_kinds").await;
    let w = widget("Cog", "blue", 11);
    let g = gadget("gadget-42", "ratchet", 3);
    let c = Coupon {
        id: CouponCode(Uuid::now_v7()),
        description: "Launch week".into(),
        percent_off: 20,
    };
    persist(&store, [w.clone()]).await;
    persist(&store, [g.clone()]).await;
    persist(&store, [c.clone()]).await;

    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Widget>(&w.id).await), Some(w));
    assert_eq!(ok(q.load::<Gadget>(&"gadget-42".to_owned()).await), Some(g));
    let loaded = ok(q.load::<Coupon>(&c.id).await).expect("stored");
    assert_eq!(loaded.id, c.id);
    assert_eq!(loaded.description, "Launch week");

    assert_eq!(ok(q.load::<Widget>(&Uuid::now_v7()).await), None);
    assert_eq!(ok(q.load::<Gadget>(&"nothing-here".to_owned()).await), None);
    assert_eq!(
        ok(q.load::<Coupon>(&CouponCode(Uuid::now_v7())).await),
        None
    );
}

/// `load_many` returns each stored document asked for exactly once: a missing id is left
/// out and a repeated id yields its document once, for uuid and string ids, in a query
/// session and a lightweight session.
#[tokio::test]
async fn load_many_returns_each_existing_document_once() {
    let (_schema, store) = store("jfx_load_many").await;
    let (a, b) = (widget("A", "red", 1), widget("B", "red", 2));
    persist(
        &store,
        [a.clone(), b.clone(), widget("Not asked for", "red", 3)],
    )
    .await;
    persist(
        &store,
        [
            gadget("many-1", "ratchet", 1),
            gadget("many-2", "spanner", 1),
            gadget("many-3", "not asked for", 1),
        ],
    )
    .await;

    let ids = [b.id, Uuid::now_v7(), a.id, b.id];
    let gadget_ids: Vec<String> = ["many-2", "nothing-here", "many-1", "many-2"]
        .map(String::from)
        .to_vec();

    let mut q = store.query_session();
    let names = sorted(
        ok(q.load_many::<Widget>(&ids).await)
            .into_iter()
            .map(|w| w.name)
            .collect(),
    );
    assert_eq!(names, ["A", "B"]);
    let gids = sorted(
        ok(q.load_many::<Gadget>(&gadget_ids).await)
            .into_iter()
            .map(|g| g.id)
            .collect(),
    );
    assert_eq!(gids, ["many-1", "many-2"]);

    let mut l = store.lightweight_session();
    let names = sorted(
        ok(l.load_many::<Widget>(&ids).await)
            .into_iter()
            .map(|w| w.name)
            .collect(),
    );
    assert_eq!(names, ["A", "B"]);
}

/// An identity-map session's `load_many` also yields a repeated id's document once, also
/// when that document is already in its identity map (loaded or stored earlier), as the
/// other session kinds do.
#[tokio::test]
async fn identity_session_load_many_yields_a_repeated_cached_id_once() {
    let (_schema, store) = store("jfx_load_many_identity").await;
    let (a, b) = (widget("A", "red", 1), widget("B", "red", 2));
    persist(&store, [a.clone(), b.clone()]).await;
    let asked = [b.id, Uuid::now_v7(), a.id, b.id];

    // The dirty-tracked session, b already tracked: each document once.
    let mut d = store.dirty_tracked_session();
    let _ = ok(d.load::<Widget>(&b.id).await);
    let names = sorted(
        ok(d.load_many::<Widget>(&asked).await)
            .into_iter()
            .map(|w| w.name.clone())
            .collect(),
    );
    assert_eq!(names, ["A", "B"]);

    // The identity session, nothing cached yet: each document once.
    let mut i = store.identity_session();
    let names = sorted(
        ok(i.load_many::<Widget>(&asked).await)
            .into_iter()
            .map(|w| w.name)
            .collect(),
    );
    assert_eq!(names, ["A", "B"]);

    // The identity session, b in its identity map: still each document once.
    let mut i = store.identity_session();
    let _: Option<Widget> = ok(i.load(&b.id).await);
    let names = sorted(
        ok(i.load_many::<Widget>(&asked).await)
            .into_iter()
            .map(|w| w.name)
            .collect(),
    );
    assert_eq!(
        names,
        ["A", "B"],
        "b is in the identity map and asked twice"
    );
}

/// `load_many` with no ids returns an empty list for uuid and string ids.
#[tokio::test]
async fn load_many_with_no_ids_returns_an_empty_list() {
    let (_schema, store) = store("jfx_load_many_empty").await;
    persist(&store, [widget("present", "red", 1)]).await;
    let mut q = store.query_session();
    assert!(ok(q.load_many::<Widget>(&[]).await).is_empty());
    assert!(ok(q.load_many::<Gadget>(&[]).await).is_empty());
    let mut i = store.identity_session();
    assert!(ok(i.load_many::<Widget>(&[]).await).is_empty());
}

/// `load_many` of 2,500 ids (past a per-statement parameter ceiling some stores have)
/// returns all 2,500 documents saved by one session.
#[tokio::test]
async fn load_many_is_not_bounded_by_a_parameter_ceiling() {
    let (_schema, store) = store("jfx_load_many_big").await;
    let docs: Vec<Widget> = (0..2_500)
        .map(|i| widget(&format!("W{i}"), "grey", i))
        .collect();
    persist(&store, docs.clone()).await;

    let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
    let loaded = ok(store.query_session().load_many::<Widget>(&ids).await);
    assert_eq!(loaded.len(), docs.len());
    assert_eq!(
        sorted(loaded.iter().map(|d| d.id).collect()),
        sorted(ids.clone())
    );
    let mut l = store.lightweight_session();
    assert_eq!(ok(l.load_many::<Widget>(&ids).await).len(), 2_500);
}

/// Several documents queued in one session are all written by one save.
#[tokio::test]
async fn several_documents_are_stored_by_one_save() {
    let (_schema, store) = store("jfx_store_many").await;
    persist(
        &store,
        [
            widget("A", "red", 1),
            widget("B", "red", 2),
            widget("C", "red", 3),
        ],
    )
    .await;
    let names = sorted(
        all_widgets(&store)
            .await
            .into_iter()
            .map(|w| w.name)
            .collect(),
    );
    assert_eq!(names, ["A", "B", "C"]);
}

/// `store` is an upsert: storing an existing id replaces the document (one row remains),
/// across saves and within one session, where the last write wins.
#[tokio::test]
async fn storing_an_existing_id_overwrites_it() {
    let (_schema, store) = store("jfx_upsert").await;
    let id = Uuid::now_v7();
    persist(
        &store,
        [Widget {
            id,
            ..widget("Original", "red", 1)
        }],
    )
    .await;
    persist(
        &store,
        [Widget {
            id,
            ..widget("Replacement", "red", 2)
        }],
    )
    .await;
    let loaded = load_widget(&store, id).await.expect("stored");
    assert_eq!((loaded.name.as_str(), loaded.weight), ("Replacement", 2));
    assert_eq!(widget_count(&store).await, 1);

    let other = Uuid::now_v7();
    persist(
        &store,
        [
            Widget {
                id: other,
                ..widget("First", "red", 1)
            },
            Widget {
                id: other,
                ..widget("Last", "red", 1)
            },
        ],
    )
    .await;
    assert_eq!(
        load_widget(&store, other).await.expect("stored").name,
        "Last"
    );
    assert_eq!(widget_count(&store).await, 2);
}

// ---- DocumentDeleteCompliance ----

/// Deletes by uuid id and by string id remove the documents once saved.
#[tokio::test]
async fn delete_by_uuid_and_by_string_id() {
    let (_schema, store) = store("jfx_delete_ids").await;
    let w = widget("Doomed", "red", 1);
    let keep = widget("Kept", "red", 1);
    persist(&store, [w.clone(), keep.clone()]).await;
    persist(&store, [gadget("gadget-doomed", "lever", 1)]).await;

    let mut s = store.lightweight_session();
    ok(s.delete::<Widget>(&w.id));
    ok(s.delete::<Gadget>(&"gadget-doomed".to_owned()));
    ok(s.save_changes().await);
    assert_eq!(load_widget(&store, w.id).await, None);
    assert_eq!(load_gadget(&store, "gadget-doomed").await, None);
    assert_eq!(load_widget(&store, keep.id).await, Some(keep));
}

/// Deleting ids that were never stored succeeds and changes nothing.
#[tokio::test]
async fn deleting_a_missing_id_is_a_no_op() {
    let (_schema, store) = store("jfx_delete_missing").await;
    let keep = widget("Kept", "red", 1);
    persist(&store, [keep.clone()]).await;
    let mut s = store.lightweight_session();
    ok(s.delete::<Widget>(&Uuid::now_v7()));
    ok(s.delete::<Gadget>(&"never-existed".to_owned()));
    ok(s.save_changes().await);
    assert_eq!(all_widgets(&store).await, [keep]);
}

/// A queued delete by id leaves the document visible to others until the save.
#[tokio::test]
async fn delete_is_not_applied_until_save_changes() {
    let (_schema, store) = store("jfx_delete_pending").await;
    let w = widget("Still here", "red", 1);
    persist(&store, [w.clone()]).await;
    let mut s = store.lightweight_session();
    ok(s.delete::<Widget>(&w.id));
    assert_eq!(load_widget(&store, w.id).await, Some(w.clone()));
    ok(s.save_changes().await);
    assert_eq!(load_widget(&store, w.id).await, None);
}

/// `delete_where` removes exactly the matching documents, ones no session loaded included.
#[tokio::test]
async fn delete_where_removes_only_the_matching_documents() {
    let (_schema, store) = store("jfx_delete_where").await;
    persist(
        &store,
        [
            widget("keep", "blue", 1),
            widget("drop", "red", 2),
            widget("drop", "red", 3),
        ],
    )
    .await;
    let mut s = store.lightweight_session();
    ok(s.delete_where::<Widget>(Widget::fields().color.eq("red")));
    ok(s.save_changes().await);
    let left = all_widgets(&store).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].color, "blue");

    persist(
        &store,
        [widget("heavy", "grey", 100), widget("light", "grey", 1)],
    )
    .await;
    let mut fresh = store.lightweight_session();
    ok(fresh.delete_where::<Widget>(Widget::fields().weight.gt(50)));
    ok(fresh.save_changes().await);
    let names = sorted(
        all_widgets(&store)
            .await
            .into_iter()
            .map(|w| w.name)
            .collect(),
    );
    assert_eq!(names, ["keep", "light"]);
}

/// A queued `delete_where` deletes nothing until the save.
#[tokio::test]
async fn delete_where_is_not_applied_until_save_changes() {
    let (_schema, store) = store("jfx_delete_where_pending").await;
    persist(&store, [widget("doomed", "red", 1)]).await;
    let mut s = store.lightweight_session();
    ok(s.delete_where::<Widget>(Widget::fields().color.eq("red")));
    assert_eq!(widget_count(&store).await, 1);
    ok(s.save_changes().await);
    assert_eq!(widget_count(&store).await, 0);
}

/// A `delete_where` that matches nothing succeeds and deletes nothing.
#[tokio::test]
async fn delete_where_matching_nothing_is_a_no_op() {
    let (_schema, store) = store("jfx_delete_where_none").await;
    let safe = widget("safe", "green", 1);
    persist(&store, [safe.clone()]).await;
    let mut s = store.lightweight_session();
    ok(s.delete_where::<Widget>(Widget::fields().color.eq("chartreuse")));
    ok(s.save_changes().await);
    assert_eq!(all_widgets(&store).await, [safe]);
}

/// A `delete_where` on one type leaves another type's matching-looking documents alone.
#[tokio::test]
async fn delete_where_only_touches_the_named_type() {
    let (_schema, store) = store("jfx_delete_where_type").await;
    let w = widget("widget", "red", 100);
    let g = gadget("gadget-1", "lever", 100);
    persist(&store, [w.clone()]).await;
    persist(&store, [g.clone()]).await;
    let mut s = store.lightweight_session();
    ok(s.delete_where::<Widget>(Widget::fields().weight.eq(100)));
    ok(s.save_changes().await);
    assert_eq!(load_widget(&store, w.id).await, None);
    assert_eq!(load_gadget(&store, "gadget-1").await, Some(g));
}

// ---- DocumentQueryCompliance ----

/// A query lists every committed document, and an empty list for a type with none.
#[tokio::test]
async fn query_returns_every_committed_document_or_none() {
    let (_schema, store) = store("jfx_query_all").await;
    assert!(all_widgets(&store).await.is_empty());
    the_widgets(&store).await;
    assert_eq!(all_widgets(&store).await.len(), 5);
    assert!(ok(store.query_session().query::<Gadget>().to_list().await).is_empty());
}

/// `filter` with an equality, and with `is_one_of` over a list held in a local.
#[tokio::test]
async fn filters_by_equality_and_by_a_captured_list() {
    let (_schema, store) = store("jfx_query_where").await;
    the_widgets(&store).await;
    let mut q = store.query_session();
    let red = ok(q
        .query::<Widget>()
        .filter(|f| f.color.eq("red"))
        .to_list()
        .await);
    assert_eq!(
        sorted(red.into_iter().map(|w| w.name).collect()),
        ["alpha", "bravo"]
    );

    let wanted = vec!["alpha".to_owned(), "echo".to_owned()];
    let matches = ok(q
        .query::<Widget>()
        .filter(|f| f.name.is_one_of(wanted.clone()))
        .to_list()
        .await);
    assert_eq!(
        sorted(matches.into_iter().map(|w| w.name).collect()),
        ["alpha", "echo"]
    );
}

/// `select` of one field returns that field of each match.
#[tokio::test]
async fn select_projects_to_a_scalar() {
    let (_schema, store) = store("jfx_query_select").await;
    the_widgets(&store).await;
    let names: Vec<String> = ok(store
        .query_session()
        .query::<Widget>()
        .filter(|f| f.color.eq("blue"))
        .select(|f| f.name)
        .to_list()
        .await);
    assert_eq!(sorted(names), ["charlie", "delta"]);
}

/// `order_by` sorts ascending and descending, and a second `order_by` breaks ties in
/// either direction.
#[tokio::test]
async fn order_by_and_tie_breaks() {
    let (_schema, store) = store("jfx_query_order").await;
    the_widgets(&store).await;
    let mut q = store.query_session();
    let up: Vec<i64> = ok(q
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .select(|f| f.weight)
        .to_list()
        .await);
    assert_eq!(up, [1, 2, 3, 4, 5]);
    let down: Vec<i64> = ok(q
        .query::<Widget>()
        .order_by(|f| f.weight.desc())
        .select(|f| f.weight)
        .to_list()
        .await);
    assert_eq!(down, [5, 4, 3, 2, 1]);

    let tie_desc: Vec<String> = ok(q
        .query::<Widget>()
        .order_by(|f| f.color.asc())
        .order_by(|f| f.weight.desc())
        .select(|f| f.name)
        .to_list()
        .await);
    assert_eq!(tie_desc, ["delta", "charlie", "echo", "bravo", "alpha"]);
    let tie_asc: Vec<String> = ok(q
        .query::<Widget>()
        .order_by(|f| f.color.asc())
        .order_by(|f| f.weight.asc())
        .select(|f| f.name)
        .to_list()
        .await);
    assert_eq!(tie_asc, ["charlie", "delta", "echo", "alpha", "bravo"]);
}

/// `take` and `skip` page an ordered result set.
#[tokio::test]
async fn take_and_skip_page_a_result_set() {
    let (_schema, store) = store("jfx_query_paging").await;
    the_widgets(&store).await;
    let mut q = store.query_session();
    let first: Vec<i64> = ok(q
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .take(2)
        .select(|f| f.weight)
        .to_list()
        .await);
    assert_eq!(first, [1, 2]);
    let second: Vec<i64> = ok(q
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .skip(2)
        .take(2)
        .select(|f| f.weight)
        .to_list()
        .await);
    assert_eq!(second, [3, 4]);
}

/// `first` finds a match or `None`, with a filter, and follows the query's order.
#[tokio::test]
async fn first_hits_misses_and_respects_the_order() {
    let (_schema, store) = store("jfx_query_first").await;
    the_widgets(&store).await;
    let mut q = store.query_session();
    let hit = ok(q
        .query::<Widget>()
        .filter(|f| f.name.eq("charlie"))
        .first()
        .await)
    .expect("charlie");
    assert_eq!(hit.weight, 3);
    let miss = ok(q
        .query::<Widget>()
        .filter(|f| f.name.eq("zulu"))
        .first()
        .await);
    assert_eq!(miss, None);

    let lightest = ok(q
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .first()
        .await)
    .expect("some");
    assert_eq!(lightest.name, "alpha");
    let heaviest = ok(q
        .query::<Widget>()
        .order_by(|f| f.weight.desc())
        .first()
        .await)
    .expect("some");
    assert_eq!(heaviest.name, "echo");
}

/// `count` and `exists` with and without a filter, and on an empty type.
#[tokio::test]
async fn count_and_exists_with_and_without_a_filter() {
    let (_schema, store) = store("jfx_query_count").await;
    the_widgets(&store).await;
    let mut q = store.query_session();
    assert_eq!(ok(q.query::<Widget>().count().await), 5);
    assert_eq!(
        ok(q.query::<Widget>()
            .filter(|f| f.color.eq("red"))
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(q.query::<Widget>().filter(|f| f.weight.gt(3)).count().await),
        2
    );
    assert_eq!(
        ok(q.query::<Widget>()
            .filter(|f| f.color.eq("chartreuse"))
            .count()
            .await),
        0
    );

    assert!(ok(q.query::<Widget>().exists().await));
    assert!(ok(q
        .query::<Widget>()
        .filter(|f| f.color.eq("green"))
        .exists()
        .await));
    assert!(!ok(q
        .query::<Widget>()
        .filter(|f| f.color.eq("chartreuse"))
        .exists()
        .await));
    assert!(!ok(q.query::<Gadget>().exists().await));
}

/// A query held in a local gains filters conditionally before it runs once.
#[tokio::test]
async fn a_query_composes_across_statements() {
    let (_schema, store) = store("jfx_query_compose").await;
    the_widgets(&store).await;
    let color: Option<&str> = Some("red");
    let min_weight: Option<i64> = Some(2);
    let no_filter: Option<&str> = None;

    let mut s = store.query_session();
    let mut query = s.query::<Widget>();
    if let Some(c) = color {
        query = query.filter(|f| f.color.eq(c));
    }
    if let Some(w) = min_weight {
        query = query.filter(|f| f.weight.ge(w));
    }
    if let Some(n) = no_filter {
        query = query.filter(|f| f.name.eq(n));
    }
    let results = ok(query.order_by(|f| f.weight.desc()).take(10).to_list().await);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].name, "bravo");
}

/// A shared helper narrows a query: one taking and returning a `QuerySpec` (run in a
/// batch), one returning a `Filter` added to a live query.
#[tokio::test]
async fn a_query_can_be_narrowed_by_a_shared_helper() {
    fn heavier_than(spec: QuerySpec<Widget>, weight: i64) -> QuerySpec<Widget> {
        spec.filter(|f| f.weight.gt(weight))
    }
    fn heavier_filter(weight: i64) -> marten::query::Filter<Widget> {
        Widget::fields().weight.gt(weight)
    }

    let (_schema, store) = store("jfx_query_helper").await;
    the_widgets(&store).await;
    let mut s = store.query_session();
    let mut batch = s.batch();
    let heavy = batch.list(heavier_than(QuerySpec::new(), 3));
    let results = ok(batch.execute().await);
    let names = sorted(ok(results.get(heavy)).into_iter().map(|w| w.name).collect());
    assert_eq!(names, ["delta", "echo"]);

    let via_filter = ok(s
        .query::<Widget>()
        .where_filter(heavier_filter(3))
        .to_list()
        .await);
    assert_eq!(
        sorted(via_filter.into_iter().map(|w| w.name).collect()),
        ["delta", "echo"]
    );
}

/// A query does not see another session's queued, unsaved store.
#[tokio::test]
async fn query_does_not_see_uncommitted_writes_from_another_session() {
    let (_schema, store) = store("jfx_query_uncommitted").await;
    the_widgets(&store).await;
    let mut writer = store.lightweight_session();
    ok(writer.store(widget("foxtrot", "red", 6)));
    let names: Vec<String> = ok(store
        .query_session()
        .query::<Widget>()
        .select(|f| f.name)
        .to_list()
        .await);
    assert!(!names.contains(&"foxtrot".to_owned()));
    assert_eq!(names.len(), 5);
}

// ---- NumericRevisionCompliance / DeclaredNumericRevisionCompliance ----

fn entry(id: Uuid, customer: &str) -> LedgerEntry {
    LedgerEntry {
        id,
        customer: customer.to_owned(),
        amount: 100,
    }
}

/// Writes `customer` in a session of its own: revision 0 is "auto" (`store`), any other
/// is an explicit revision (`update_revision`).
async fn store_at(store: &DocumentStore, id: Uuid, customer: &str, revision: i64) -> Result<()> {
    let mut s = store.lightweight_session();
    if revision == 0 {
        s.store(entry(id, customer))?;
    } else {
        s.update_revision(entry(id, customer), revision)?;
    }
    s.save_changes().await
}

/// The stored revision and customer, read afresh.
async fn stored(store: &DocumentStore, id: Uuid) -> (i64, String) {
    let mut q = store.query_session();
    let meta: DocumentMetadata<i64> = ok(q.metadata::<LedgerEntry>(&id).await).expect("stored");
    let doc = ok(q.load::<LedgerEntry>(&id).await).expect("stored");
    (meta.version, doc.customer)
}

/// Asserts the write was refused as not newer than `actual`.
#[track_caller]
fn refused(r: Result<()>, requested: i64, actual: i64) {
    match r {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.len(), 1);
            assert_eq!(
                r[0].kind,
                RejectionKind::RevisionNotNewer { requested, actual }
            );
        }
        other => panic!("expected a refused revision, got {other:?}"),
    }
}

/// A new document written with no explicit revision lands at revision 1; auto writes
/// then count 2, 3 and keep the last data.
#[tokio::test]
async fn auto_revisions_start_at_one_and_increment() {
    let (_schema, store) = store("jfx_rev_auto").await;
    let id = Uuid::now_v7();
    ok(store_at(&store, id, "Acme", 0).await);
    assert_eq!(stored(&store, id).await, (1, "Acme".into()));
    ok(store_at(&store, id, "Acme, renamed", 0).await);
    ok(store_at(&store, id, "Acme, renamed twice", 0).await);
    assert_eq!(stored(&store, id).await, (3, "Acme, renamed twice".into()));
}

/// A new document written at an explicit revision lands at exactly it, and it is a real
/// stored revision: the same revision again is refused, and auto counts on from it.
#[tokio::test]
async fn an_explicit_revision_on_insert_becomes_the_stored_revision() {
    let (_schema, store) = store("jfx_rev_insert").await;
    let id = Uuid::now_v7();
    ok(store_at(&store, id, "Acme, imported at seven", 7).await);
    assert_eq!(
        stored(&store, id).await,
        (7, "Acme, imported at seven".into())
    );

    refused(store_at(&store, id, "Acme, stale", 7).await, 7, 7);
    assert_eq!(
        stored(&store, id).await,
        (7, "Acme, imported at seven".into())
    );

    ok(store_at(&store, id, "Acme, moved on", 0).await);
    assert_eq!(stored(&store, id).await, (8, "Acme, moved on".into()));
}

/// An explicit revision above the stored one is accepted and lands at exactly the
/// revision named (2 after 1, 10 after 3: a jump), not one past it.
#[tokio::test]
async fn an_explicit_greater_revision_is_accepted_and_may_jump() {
    let (_schema, store) = store("jfx_rev_greater").await;
    let id = Uuid::now_v7();
    ok(store_at(&store, id, "Acme", 0).await);
    ok(store_at(&store, id, "Acme, revised", 2).await);
    assert_eq!(stored(&store, id).await, (2, "Acme, revised".into()));

    let other = Uuid::now_v7();
    for name in ["Acme", "Acme, second", "Acme, third"] {
        ok(store_at(&store, other, name, 0).await);
    }
    assert_eq!(stored(&store, other).await.0, 3);
    ok(store_at(&store, other, "Acme, imported", 10).await);
    assert_eq!(stored(&store, other).await, (10, "Acme, imported".into()));
}

/// An explicit revision equal to the stored one is refused (strictly greater is the
/// rule) and nothing of it is written. Unlike JasperFx, where the document carries its
/// revision, a marten-rs session that loaded revision 1 and `store`s the document asserts
/// revision 1 (equality, README "Concurrency modes") and lands at 2.
#[tokio::test]
async fn an_explicit_revision_equal_to_the_stored_one_is_refused() {
    let (_schema, store) = store("jfx_rev_equal").await;
    let id = Uuid::now_v7();
    ok(store_at(&store, id, "Acme", 0).await);
    assert_eq!(stored(&store, id).await.0, 1);

    refused(store_at(&store, id, "Acme, stale", 1).await, 1, 1);
    assert_eq!(stored(&store, id).await, (1, "Acme".into()));

    // The same "equal" revision named by a loading session is the read-modify-write.
    let mut s = store.lightweight_session();
    let mut doc: LedgerEntry = ok(s.load(&id).await).expect("stored");
    assert_eq!(s.version_of::<LedgerEntry>(&id), Some(1));
    doc.customer = "Acme, loaded and stored".into();
    ok(s.store(doc));
    ok(s.save_changes().await);
    assert_eq!(
        stored(&store, id).await,
        (2, "Acme, loaded and stored".into())
    );
}

/// An explicit revision below the stored one is refused and writes nothing.
#[tokio::test]
async fn an_explicit_revision_below_the_stored_one_is_refused() {
    let (_schema, store) = store("jfx_rev_below").await;
    let id = Uuid::now_v7();
    for name in ["Acme", "Acme, second", "Acme, third"] {
        ok(store_at(&store, id, name, 0).await);
    }
    refused(store_at(&store, id, "Acme, way behind", 2).await, 2, 3);
    assert_eq!(stored(&store, id).await, (3, "Acme, third".into()));
}

/// An auto write succeeds whatever the stored revision (after a jump to 10) and counts
/// on from what is stored: 11.
#[tokio::test]
async fn an_auto_revision_wins_even_when_the_stored_revision_is_far_ahead() {
    let (_schema, store) = store("jfx_rev_auto_wins").await;
    let id = Uuid::now_v7();
    ok(store_at(&store, id, "Acme", 0).await);
    ok(store_at(&store, id, "Acme, imported", 10).await);
    ok(store_at(&store, id, "Acme, after the jump", 0).await);
    assert_eq!(
        stored(&store, id).await,
        (11, "Acme, after the jump".into())
    );
}

//! Patching documents in place and deleting by filter: every operation (nested paths
//! too), patches by filter, each concurrency mode (the version moves; a stale known
//! version rejects the whole save), identity-map and dirty-tracking invalidation,
//! conjoined tenants with the same ids, a missing id, and a property test applying random
//! operations both in PostgreSQL and to a Rust model.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::RejectionKind;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Address {
    city: String,
    zip: i32,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Customer {
    name: String,
    #[query(nested)]
    address: Address,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Line {
    sku: String,
    qty: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Order {
    id: Uuid,
    #[document(index)]
    status: String,
    count: i64,
    total: f64,
    lines: Vec<Line>,
    tags: Vec<String>,
    note: Option<String>,
    #[query(nested)]
    customer: Customer,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Counter {
    id: String,
    n: i64,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Plain {
    id: i64,
    n: i32,
    label: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(numeric)]
struct Ticket {
    id: i64,
    state: String,
    hits: i64,
}

async fn store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Order>()
        .document::<Counter>()
        .document::<Plain>()
        .document::<Ticket>()
        .build()
        .await);
    (schema, store)
}

fn order(status: &str, count: i64) -> Order {
    Order {
        id: Uuid::now_v7(),
        status: status.to_owned(),
        count,
        total: 1.5,
        lines: vec![Line {
            sku: "A".into(),
            qty: 1,
        }],
        tags: vec!["x".into(), "y".into(), "x".into()],
        note: Some("fragile".into()),
        customer: Customer {
            name: "Ann".into(),
            address: Address {
                city: "Oslo".into(),
                zip: 150,
            },
        },
    }
}

async fn saved(store: &DocumentStore, doc: Order) -> Order {
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);
    doc
}

async fn load_order(store: &DocumentStore, id: &Uuid) -> Option<Order> {
    ok(store.query_session().load::<Order>(id).await)
}

#[track_caller]
fn version_mismatch(r: marten::Result<()>, id: marten::IdKey) {
    match r {
        Err(Error::Rejected(rejections)) => {
            assert_eq!(rejections.len(), 1, "{rejections:?}");
            assert_eq!(rejections[0].id, id);
            assert!(
                matches!(rejections[0].kind, RejectionKind::VersionMismatch { .. }),
                "{rejections:?}"
            );
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn every_operation_changes_the_stored_document() {
    let (_schema, store) = store("patch_ops").await;
    let mut expected = saved(&store, order("new", 2)).await;
    let mut s = store.lightweight_session();
    ok(s.patch::<Order>(&expected.id)
        .set(|f| f.status, "paid")
        .increment(|f| f.count, 3)
        .increment(|f| f.total, 0.25)
        .append(
            |f| f.lines,
            Line {
                sku: "B".into(),
                qty: 2,
            },
        )
        .append_if_missing(|f| f.tags, "y")
        .append_if_missing(|f| f.tags, "z")
        .remove(|f| f.tags, "x")
        .unset(|f| f.note)
        .set(|f| f.customer.address.city, "Bergen")
        .increment(|f| f.customer.address.zip, -50)
        .queue());
    assert_eq!(s.pending_changes(), 1);
    ok(s.save_changes().await);
    expected.status = "paid".into();
    expected.count = 5;
    expected.total = 1.75;
    expected.lines.push(Line {
        sku: "B".into(),
        qty: 2,
    });
    expected.tags = vec!["y".into(), "z".into()];
    expected.note = None;
    expected.customer.address.city = "Bergen".into();
    expected.customer.address.zip = 100;
    assert_eq!(
        load_order(&store, &expected.id).await,
        Some(expected.clone())
    );
    // The indexed column follows the document.
    let mut q = store.query_session();
    let found = ok(q
        .query::<Order>()
        .filter(|f| f.status.eq("paid"))
        .to_list()
        .await);
    assert_eq!(found, [expected]);
}

/// A patch refused before it was queued (a NUL character) asserts nothing: the next
/// write of the document in that session still asserts the version the session saw, so
/// another session's change in between is not overwritten.
#[tokio::test]
async fn a_refused_patch_leaves_the_next_write_checked() {
    let (_schema, store) = store("patch_refused_checks").await;
    let doc = saved(&store, order("new", 0)).await;
    let mut s = store.lightweight_session();
    let mut mine = ok(s.load::<Order>(&doc.id).await).expect("stored");
    let refused = s.patch::<Order>(&doc.id).set(|f| f.status, "a\0b").queue();
    assert!(
        matches!(refused, Err(Error::InvalidInput { .. })),
        "{refused:?}"
    );
    // An empty save in between changes nothing either.
    ok(s.save_changes().await);
    let mut other = store.lightweight_session();
    let mut theirs = ok(other.load::<Order>(&doc.id).await).expect("stored");
    theirs.status = "theirs".into();
    ok(other.store(theirs.clone()));
    ok(other.save_changes().await);
    mine.status = "mine".into();
    ok(s.store(mine));
    version_mismatch(s.save_changes().await, doc.id.key());
    assert_eq!(load_order(&store, &doc.id).await, Some(theirs));
}

#[tokio::test]
async fn values_are_parameters_and_nul_characters_are_refused() {
    let (_schema, store) = store("patch_values").await;
    let doc = saved(&store, order("new", 0)).await;
    let hostile = "it's'); DROP TABLE mt_doc_order; -- $1 \"q\"";
    let mut s = store.lightweight_session();
    ok(s.patch::<Order>(&doc.id).set(|f| f.status, hostile).queue());
    ok(s.save_changes().await);
    let loaded = load_order(&store, &doc.id).await.expect("stored");
    assert_eq!(loaded.status, hostile);
    let refused = s.patch::<Order>(&doc.id).set(|f| f.status, "a\0b").queue();
    assert!(
        matches!(refused, Err(Error::InvalidInput { .. })),
        "{refused:?}"
    );
    assert_eq!(s.pending_changes(), 0);
    // A raw filter whose placeholders do not match its parameters queues nothing either.
    let bad = marten::query::Filter::raw(
        "d.data ->> 'status' = $2",
        vec![marten::query::RawParam::Text("x".into())],
    );
    let refused = s.delete_where::<Order>(bad);
    assert!(
        matches!(refused, Err(Error::InvalidQuery(_))),
        "{refused:?}"
    );
    assert_eq!(s.pending_changes(), 0);
    // A raw filter is bound like the typed ones.
    let raw = marten::query::Filter::raw(
        "d.data ->> 'status' = $1",
        vec![marten::query::RawParam::Text(hostile.into())],
    );
    ok(s.patch_where::<Order>(raw)
        .set(|f| f.status, "cleaned")
        .queue());
    ok(s.save_changes().await);
    assert_eq!(
        load_order(&store, &doc.id).await.expect("stored").status,
        "cleaned"
    );
}

#[tokio::test]
async fn operations_run_in_queue_order_within_the_save() {
    let (_schema, store) = store("patch_order").await;
    let doc = order("new", 1);
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.patch::<Order>(&doc.id).increment(|f| f.count, 10).queue());
    ok(s.store(Plain {
        id: 1,
        n: 1,
        label: "p".into(),
    }));
    ok(s.patch::<Plain>(&1).increment(|f| f.n, 1).queue());
    ok(s.patch::<Plain>(&1).set(|f| f.label, "q").queue());
    ok(s.save_changes().await);
    let loaded = load_order(&store, &doc.id).await.expect("stored");
    assert_eq!(loaded.count, 11);
    let plain = ok(store.query_session().load::<Plain>(&1).await);
    assert_eq!(
        plain,
        Some(Plain {
            id: 1,
            n: 2,
            label: "q".into()
        })
    );
}

#[tokio::test]
async fn a_missing_id_is_a_no_op() {
    let (_schema, store) = store("patch_missing").await;
    let mut s = store.lightweight_session();
    let id = Uuid::now_v7();
    ok(s.patch::<Order>(&id).set(|f| f.status, "x").queue());
    ok(s.patch::<Counter>(&"nope".to_owned())
        .increment(|f| f.n, 1)
        .queue());
    ok(s.save_changes().await);
    assert_eq!(load_order(&store, &id).await, None);
    // Known version of a document deleted since: still no rejection.
    let doc = saved(&store, order("a", 0)).await;
    let mut s = store.lightweight_session();
    assert!(ok(s.load::<Order>(&doc.id).await).is_some());
    let mut other = store.lightweight_session();
    ok(other.delete::<Order>(&doc.id));
    ok(other.save_changes().await);
    ok(s.patch::<Order>(&doc.id).set(|f| f.status, "b").queue());
    ok(s.save_changes().await);
    assert_eq!(load_order(&store, &doc.id).await, None);
}

#[tokio::test]
async fn optimistic_patches_move_the_version_and_assert_a_known_one() {
    let (_schema, store) = store("patch_optimistic").await;
    let doc = saved(&store, order("new", 0)).await;
    let mut q = store.query_session();
    let before = ok(q.metadata::<Order>(&doc.id).await).expect("metadata");
    let mut s = store.lightweight_session();
    ok(s.patch::<Order>(&doc.id).increment(|f| f.count, 1).queue());
    ok(s.save_changes().await);
    let after = ok(q.metadata::<Order>(&doc.id).await).expect("metadata");
    assert_ne!(after.version, before.version);
    assert!(after.last_modified >= before.last_modified);
    assert_eq!(s.version_of::<Order>(&doc.id), Some(after.version));

    // A session that loaded the document asserts the version it saw, and a patch it
    // saved records the new one (a second patch passes).
    let mut a = store.lightweight_session();
    assert!(ok(a.load::<Order>(&doc.id).await).is_some());
    ok(a.patch::<Order>(&doc.id).increment(|f| f.count, 1).queue());
    ok(a.save_changes().await);
    ok(a.patch::<Order>(&doc.id).increment(|f| f.count, 1).queue());
    ok(a.save_changes().await);

    // Another writer moves the version: the stale patch is rejected and nothing of the
    // save is written.
    let mut b = store.lightweight_session();
    ok(b.patch::<Order>(&doc.id).set(|f| f.status, "by b").queue());
    ok(b.save_changes().await);
    let bystander = order("bystander", 0);
    ok(a.store(bystander.clone()));
    ok(a.patch::<Order>(&doc.id).set(|f| f.status, "by a").queue());
    version_mismatch(a.save_changes().await, doc.id.key());
    assert_eq!(load_order(&store, &bystander.id).await, None);
    let stored = load_order(&store, &doc.id).await.expect("stored");
    assert_eq!((stored.status.as_str(), stored.count), ("by b", 3));
    // Alone in its save (no transaction around it), the stale patch is rejected too.
    ok(a.patch::<Order>(&doc.id).set(|f| f.status, "by a").queue());
    version_mismatch(a.save_changes().await, doc.id.key());
    assert_eq!(
        load_order(&store, &doc.id).await.expect("stored").status,
        "by b"
    );

    // With the checks off, the same patch goes through.
    a.set_concurrency_checks(false);
    ok(a.patch::<Order>(&doc.id).set(|f| f.status, "by a").queue());
    ok(a.save_changes().await);
    assert_eq!(
        load_order(&store, &doc.id).await.expect("stored").status,
        "by a"
    );
}

#[tokio::test]
async fn numeric_patches_bump_the_revision_and_assert_a_known_one() {
    let (_schema, store) = store("patch_numeric").await;
    let id = "c1".to_owned();
    let mut s = store.lightweight_session();
    ok(s.store(Counter {
        id: id.clone(),
        n: 0,
        tags: vec![],
    }));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.metadata::<Counter>(&id).await).expect("meta").version,
        1
    );
    ok(s.patch::<Counter>(&id).increment(|f| f.n, 5).queue());
    ok(s.save_changes().await);
    ok(s.patch::<Counter>(&id).append(|f| f.tags, "t").queue());
    ok(s.save_changes().await);
    assert_eq!(
        ok(q.metadata::<Counter>(&id).await).expect("meta").version,
        3
    );
    assert_eq!(s.version_of::<Counter>(&id), Some(3));

    let mut stale = store.lightweight_session();
    assert!(ok(stale.load::<Counter>(&id).await).is_some());
    ok(s.patch::<Counter>(&id).increment(|f| f.n, 1).queue());
    ok(s.save_changes().await);
    ok(stale.patch::<Counter>(&id).increment(|f| f.n, 100).queue());
    ok(stale.store(Counter {
        id: "bystander".into(),
        n: 0,
        tags: vec![],
    }));
    version_mismatch(stale.save_changes().await, id.key());
    let c = ok(q.load::<Counter>(&id).await).expect("stored");
    assert_eq!((c.n, c.tags), (6, vec!["t".to_owned()]));
    assert_eq!(ok(q.load::<Counter>(&"bystander".to_owned()).await), None);
    assert_eq!(
        ok(q.metadata::<Counter>(&id).await).expect("meta").version,
        4
    );
}

#[tokio::test]
async fn off_mode_patches_move_the_last_modified_time() {
    let (_schema, store) = store("patch_off").await;
    let mut s = store.lightweight_session();
    ok(s.store(Plain {
        id: 7,
        n: 1,
        label: "a".into(),
    }));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    let before = ok(q.metadata::<Plain>(&7).await).expect("meta");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    ok(s.patch::<Plain>(&7).increment(|f| f.n, 2).queue());
    ok(s.save_changes().await);
    let after = ok(q.metadata::<Plain>(&7).await).expect("meta");
    assert!(after.last_modified > before.last_modified);
    assert_eq!(ok(q.load::<Plain>(&7).await).expect("stored").n, 3);
}

#[tokio::test]
async fn patch_where_and_delete_where_touch_exactly_the_matches() {
    let (_schema, store) = store("patch_where").await;
    let mut docs = Vec::new();
    for i in 0..6 {
        docs.push(saved(&store, order(if i % 2 == 0 { "even" } else { "odd" }, i)).await);
    }
    let mut q = store.query_session();
    let before = ok(q.metadata::<Order>(&docs[1].id).await).expect("meta");
    let untouched = ok(q.metadata::<Order>(&docs[0].id).await).expect("meta");
    let mut s = store.lightweight_session();
    ok(s.patch_where::<Order>(Order::fields().status.eq("odd"))
        .increment(|f| f.count, 100)
        .append(|f| f.tags, "odd-patched")
        .queue());
    ok(s.save_changes().await);
    for d in &docs {
        let loaded = load_order(&store, &d.id).await.expect("stored");
        if d.status == "odd" {
            assert_eq!(loaded.count, d.count + 100);
            assert_eq!(loaded.tags.last().map(String::as_str), Some("odd-patched"));
        } else {
            assert_eq!(&loaded, d);
        }
    }
    let after = ok(q.metadata::<Order>(&docs[1].id).await).expect("meta");
    assert_ne!(after.version, before.version);
    let same = ok(q.metadata::<Order>(&docs[0].id).await).expect("meta");
    assert_eq!(same.version, untouched.version);

    ok(s.delete_where::<Order>(Order::fields().count.ge(100)));
    assert_eq!(s.pending_changes(), 1);
    ok(s.save_changes().await);
    let left = ok(q.query::<Order>().count().await);
    assert_eq!(left, 3);
    for d in &docs {
        let exists = load_order(&store, &d.id).await.is_some();
        assert_eq!(exists, d.status == "even", "{}", d.count);
    }
}

#[tokio::test]
async fn identity_and_dirty_tracked_sessions_drop_their_copy() {
    let (_schema, store) = store("patch_identity").await;
    let doc = saved(&store, order("new", 0)).await;
    let mut s = store.identity_session();
    assert_eq!(ok(s.load::<Order>(&doc.id).await).expect("stored").count, 0);
    ok(s.patch::<Order>(&doc.id).increment(|f| f.count, 4).queue());
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<Order>(&doc.id).await).expect("stored").count, 4);

    let mut d = store.dirty_tracked_session();
    ok(d.load::<Order>(&doc.id).await).expect("stored").note = Some("changed".into());
    ok(d.patch::<Order>(&doc.id).increment(|f| f.count, 1).queue());
    // The tracked copy is gone: the save sends the patch only, no stale upsert.
    ok(d.save_changes().await);
    let loaded = ok(d.load::<Order>(&doc.id).await).expect("stored").clone();
    assert_eq!((loaded.count, loaded.note.as_deref()), (5, Some("fragile")));

    // patch_where and delete_where drop every cached copy of the type.
    let mut s = store.identity_session();
    assert!(ok(s.load::<Order>(&doc.id).await).is_some());
    ok(s.patch_where::<Order>(Order::fields().status.eq("new"))
        .set(|f| f.status, "seen")
        .queue());
    ok(s.save_changes().await);
    assert_eq!(
        ok(s.load::<Order>(&doc.id).await).expect("stored").status,
        "seen"
    );
    ok(s.delete_where::<Order>(Order::fields().status.eq("seen")));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<Order>(&doc.id).await), None);
}

#[tokio::test]
async fn tenants_with_the_same_ids_do_not_touch_each_other() {
    let (_schema, store) = store("patch_tenants").await;
    for t in ["a", "b"] {
        let mut s = ok(store.lightweight_session_for(t));
        for id in 1..=3 {
            ok(s.store(Ticket {
                id,
                state: format!("open-{t}"),
                hits: 0,
            }));
        }
        ok(s.save_changes().await);
    }
    let mut a = ok(store.lightweight_session_for("a"));
    ok(a.patch::<Ticket>(&1).increment(|f| f.hits, 1).queue());
    ok(a.patch_where::<Ticket>(Ticket::fields().id.ge(2))
        .set(|f| f.state, "closed")
        .queue());
    ok(a.save_changes().await);
    // A filter that would match the other tenant's rows cannot widen the tenant's match.
    ok(a.delete_where::<Ticket>(
        Ticket::fields()
            .state
            .eq("open-b")
            .or(Ticket::fields().id.eq(3)),
    ));
    ok(a.save_changes().await);

    let mut qa = ok(store.query_session_for("a"));
    let mut qb = ok(store.query_session_for("b"));
    let t1 = ok(qa.load::<Ticket>(&1).await).expect("a/1");
    assert_eq!((t1.hits, t1.state.as_str()), (1, "open-a"));
    assert_eq!(
        ok(qa.load::<Ticket>(&2).await).expect("a/2").state,
        "closed"
    );
    assert_eq!(ok(qa.load::<Ticket>(&3).await), None);
    for id in 1..=3 {
        let t = ok(qb.load::<Ticket>(&id).await).expect("b untouched");
        assert_eq!((t.hits, t.state.as_str()), (0, "open-b"));
        assert_eq!(
            ok(qb.metadata::<Ticket>(&id).await).expect("meta").version,
            1
        );
    }
    assert_eq!(
        ok(qa.metadata::<Ticket>(&1).await).expect("meta").version,
        2
    );

    // Without a tenant nothing is queued.
    let mut none = store.lightweight_session();
    let r = none.patch::<Ticket>(&1).increment(|f| f.hits, 1).queue();
    assert!(matches!(r, Err(Error::TenantRequired { .. })), "{r:?}");
    let r = none
        .patch_where::<Ticket>(Ticket::fields().hits.ge(0))
        .set(|f| f.state, "x")
        .queue();
    assert!(matches!(r, Err(Error::TenantRequired { .. })), "{r:?}");
    let r = none.delete_where::<Ticket>(Ticket::fields().hits.ge(0));
    assert!(matches!(r, Err(Error::TenantRequired { .. })), "{r:?}");
    assert_eq!(none.pending_changes(), 0);
}

/// One random patch operation on a [`Counter`]-like model: `Order` fields.
#[derive(Debug, Clone)]
enum Op {
    SetStatus(String),
    Inc(i64),
    IncZip(i32),
    Append(String),
    AppendIfMissing(String),
    Remove(String),
    SetNote(Option<String>),
    Unset,
    SetCity(String),
}

fn op() -> impl Strategy<Value = Op> {
    let word = prop::sample::select(vec!["a", "b", "c", "it's", "\"q\""]).prop_map(String::from);
    prop_oneof![
        word.clone().prop_map(Op::SetStatus),
        (-1000i64..1000).prop_map(Op::Inc),
        (-50i32..50).prop_map(Op::IncZip),
        word.clone().prop_map(Op::Append),
        word.clone().prop_map(Op::AppendIfMissing),
        word.clone().prop_map(Op::Remove),
        prop::option::of(word.clone()).prop_map(Op::SetNote),
        Just(Op::Unset),
        word.prop_map(Op::SetCity),
    ]
}

/// The operation applied to the Rust model.
fn apply(o: &Op, d: &mut Order) {
    match o {
        Op::SetStatus(s) => d.status = s.clone(),
        Op::Inc(n) => d.count += n,
        Op::IncZip(n) => d.customer.address.zip += n,
        Op::Append(s) => d.tags.push(s.clone()),
        Op::AppendIfMissing(s) => {
            if !d.tags.contains(s) {
                d.tags.push(s.clone());
            }
        }
        Op::Remove(s) => d.tags.retain(|t| t != s),
        Op::SetNote(n) => d.note = n.clone(),
        Op::Unset => d.note = None,
        Op::SetCity(c) => d.customer.address.city = c.clone(),
    }
}

/// The operation added to a patch.
fn add<'s>(
    p: marten::session::Patching<'s, marten::Postgres, marten::Lightweight, Order>,
    o: &Op,
) -> marten::session::Patching<'s, marten::Postgres, marten::Lightweight, Order> {
    match o.clone() {
        Op::SetStatus(s) => p.set(|f| f.status, s),
        Op::Inc(n) => p.increment(|f| f.count, n),
        Op::IncZip(n) => p.increment(|f| f.customer.address.zip, n),
        Op::Append(s) => p.append(|f| f.tags, s),
        Op::AppendIfMissing(s) => p.append_if_missing(|f| f.tags, s),
        Op::Remove(s) => p.remove(|f| f.tags, s),
        Op::SetNote(n) => p.set(|f| f.note, n),
        Op::Unset => p.unset(|f| f.note),
        Op::SetCity(c) => p.set(|f| f.customer.address.city, c),
    }
}

#[test]
fn random_patches_agree_with_a_rust_model() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (_schema, store) = rt.block_on(store("patch_prop"));
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(patches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..4))| {
        rt.block_on(async {
            let mut model = saved(&store, order("new", 0)).await;
            let mut s = store.lightweight_session();
            for ops in &patches {
                let mut p = s.patch::<Order>(&model.id);
                for o in ops {
                    p = add(p, o);
                    apply(o, &mut model);
                }
                ok(p.queue());
            }
            ok(s.save_changes().await);
            let loaded = load_order(&store, &model.id).await;
            assert_eq!(loaded.as_ref(), Some(&model), "{patches:?}");
        });
    });
}

#[tokio::test]
async fn a_known_version_is_asserted_once_per_save() {
    let (_schema, store) = store("patch_once").await;
    let doc = saved(&store, order("new", 0)).await;
    let mut s = store.lightweight_session();
    let mut loaded = ok(s.load::<Order>(&doc.id).await).expect("stored");
    // A store, then two patches of the loaded document: the store asserts the loaded
    // version, the patches follow it in the same transaction.
    loaded.note = Some("stored".into());
    ok(s.store(loaded.clone()));
    ok(s.patch::<Order>(&doc.id).increment(|f| f.count, 1).queue());
    ok(s.patch::<Order>(&doc.id).increment(|f| f.count, 1).queue());
    ok(s.save_changes().await);
    // Patches, then a store of the loaded copy, in one save.
    ok(s.patch::<Order>(&doc.id)
        .set(|f| f.status, "patched")
        .queue());
    loaded.count = 10;
    ok(s.store(loaded));
    ok(s.save_changes().await);
    let stored = load_order(&store, &doc.id).await.expect("stored");
    assert_eq!((stored.count, stored.status.as_str()), (10, "new"));
    let version = ok(store.query_session().metadata::<Order>(&doc.id).await).expect("meta");
    assert_eq!(s.version_of::<Order>(&doc.id), Some(version.version));
}

/// A random filter on `Order`: its database form and, through `Filter::matches`, the
/// same test in Rust.
fn filter() -> impl Strategy<Value = (u8, i64)> {
    (0u8..4, -5i64..5)
}

fn order_filter((kind, k): (u8, i64)) -> marten::query::Filter<Order> {
    let f = Order::fields();
    match kind {
        0 => f.count.ge(k),
        1 => f.status.eq(if k % 2 == 0 { "a" } else { "b" }),
        2 => f.tags.contains("a").or(f.count.lt(k)),
        _ => f.note.is_none().and(f.customer.address.zip.gt(k as i32)),
    }
}

#[test]
fn random_patches_and_deletes_by_filter_agree_with_a_rust_model() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (_schema, store) = rt.block_on(store("patch_where_prop"));
    let config = ProptestConfig {
        cases: 16,
        ..ProptestConfig::default()
    };
    let seed = prop::collection::vec(
        (prop::sample::select(vec!["a", "b"]), -5i64..5, -5i32..5),
        1..6,
    );
    proptest!(config, |(
        docs in seed,
        patch_filter in filter(),
        ops in prop::collection::vec(op(), 1..5),
        delete_filter in filter(),
    )| {
        rt.block_on(async {
            let mut s = store.lightweight_session();
            ok(s.delete_where::<Order>(marten::query::Filter::all()));
            let mut model: Vec<Order> = Vec::new();
            for (status, count, zip) in &docs {
                let mut d = order(status, *count);
                d.customer.address.zip = *zip;
                d.note = (*zip > 0).then(|| "n".to_owned());
                ok(s.store(d.clone()));
                model.push(d);
            }
            ok(s.save_changes().await);
            let pf = order_filter(patch_filter);
            let mut p = s.patch_where::<Order>(pf.clone());
            for o in &ops {
                p = add(p, o);
            }
            ok(p.queue());
            let df = order_filter(delete_filter);
            ok(s.delete_where::<Order>(df.clone()));
            ok(s.save_changes().await);
            for d in model.iter_mut().filter(|d| pf.matches(d)) {
                for o in &ops {
                    apply(o, d);
                }
            }
            model.retain(|d| !df.matches(d));
            model.sort_by_key(|d| d.id);
            let mut q = store.query_session();
            let mut stored = ok(q.query::<Order>().to_list().await);
            stored.sort_by_key(|d| d.id);
            assert_eq!(stored, model, "{docs:?} {patch_filter:?} {ops:?} {delete_filter:?}");
        });
    });
}

/// A document with `f32` fields: a patch writes them as a stored document holds them.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Gauge {
    id: i64,
    price: f32,
    weights: Vec<f32>,
}

/// An `f32` set, removed or appended by a patch is the value a stored `f32` is (`19.99`),
/// not its `f64` widening (`19.989999771118164`): queries for it find the patched
/// document, and removing or appending-if-missing it sees the stored element.
#[tokio::test]
async fn f32_patch_values_match_what_queries_and_stored_documents_hold() {
    let (_schema, b) = builder("patch_f32");
    let store = ok(b.document::<Gauge>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Gauge {
        id: 1,
        price: 1.0,
        weights: vec![0.1, 0.2],
    }));
    ok(s.save_changes().await);
    ok(s.patch::<Gauge>(&1)
        .set(|f| f.price, 19.99f32)
        .remove(|f| f.weights, 0.1f32)
        .append_if_missing(|f| f.weights, 0.2f32)
        .queue());
    ok(s.save_changes().await);
    let found = ok(store
        .query_session()
        .query::<Gauge>()
        .filter(|f| f.price.eq(19.99f32))
        .count()
        .await);
    assert_eq!(found, 1, "the patched price is found by the query for it");
    let back = ok(store.query_session().load::<Gauge>(&1).await).expect("gauge");
    assert_eq!(back.price, 19.99f32);
    assert_eq!(back.weights, vec![0.2f32]);
}

/// A patch cannot change the document's id: the row's id column would no longer be the
/// document's (a load by the old id would return a document with the new one).
#[tokio::test]
async fn a_patch_of_the_id_is_refused_before_anything_is_queued() {
    let (_schema, store) = store("patch_id").await;
    let doc = saved(&store, order("new", 1)).await;
    let mut s = store.lightweight_session();
    let err = s
        .patch::<Order>(&doc.id)
        .set(|f| f.count, 2)
        .set(|f| f.id, Uuid::now_v7())
        .queue()
        .expect_err("the id");
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "id"),
        "{err:?}"
    );
    let err = s
        .patch_where::<Order>(Order::fields().status.eq("new"))
        .set(|f| f.id, Uuid::now_v7())
        .queue()
        .expect_err("the id, by filter");
    assert!(matches!(&err, Error::InvalidInput { .. }), "{err:?}");
    ok(s.save_changes().await);
    assert_eq!(load_order(&store, &doc.id).await, Some(doc));
}

/// A checked patch waiting for a row that another transaction deletes finds it missing
/// once that commits: a patch of a missing document is no rejection, so the save
/// succeeds and writes nothing, as a patch of a document deleted before does. A row whose
/// version another transaction moved meanwhile is still a rejection.
#[tokio::test]
async fn a_checked_patch_of_a_row_deleted_while_it_waited_is_no_rejection() {
    let (schema, store) = store("patch_delete_race").await;
    for (change, rejected) in [
        ("DELETE FROM mt_doc_order WHERE id = $1", false),
        (
            "UPDATE mt_doc_order SET mt_version = gen_random_uuid() WHERE id = $1",
            true,
        ),
    ] {
        let doc = saved(&store, order("new", 0)).await;
        let mut s = store.lightweight_session();
        let _ = ok(s.load::<Order>(&doc.id).await).expect("stored");
        ok(s.patch::<Order>(&doc.id)
            .set(|f| f.status, "patched")
            .queue());
        let raw = schema.raw_client().await;
        raw.batch_execute("BEGIN").await.expect("begin");
        raw.execute(change, &[&doc.id]).await.expect("change");
        // The patch waits for the row until the change commits.
        let saving = tokio::spawn(async move { s.save_changes().await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        raw.batch_execute("COMMIT").await.expect("commit");
        let saved = saving.await.expect("the save's task");
        if rejected {
            version_mismatch(saved, doc.id.key());
            assert_eq!(
                load_order(&store, &doc.id).await.map(|o| o.status),
                Some("new".into())
            );
        } else {
            assert!(
                saved.is_ok(),
                "a patch of a row deleted meanwhile: {saved:?}"
            );
            assert_eq!(load_order(&store, &doc.id).await, None);
        }
    }
}

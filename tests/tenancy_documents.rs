//! Conjoined tenancy of documents: two tenants holding the same ids never see, update or
//! delete each other's documents through any API; a session without a tenant cannot
//! touch a conjoined type; single-tenant types stay shared; racing sessions of different
//! tenants on the same ids do not conflict; a property test interleaves random operations
//! of several tenants and checks each tenant's view against its own model.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{builder, ok};
use marten::prelude::*;
use marten::query::RawParam;
use marten::{QuerySpec, RejectionKind};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(optimistic)]
struct Account {
    id: Uuid,
    #[document(unique)]
    email: String,
    balance: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(numeric)]
struct Counter {
    id: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Note {
    id: i64,
    #[document(index)]
    text: String,
}

/// Reference data: one set of rows for every tenant.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Country {
    id: String,
    name: String,
}

async fn store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Account>()
        .document::<Counter>()
        .document::<Note>()
        .document::<Country>()
        .events_tenancy(marten::Tenancy::Conjoined)
        .build()
        .await);
    (schema, store)
}

fn account(id: Uuid, email: &str, balance: i64) -> Account {
    Account {
        id,
        email: email.to_owned(),
        balance,
    }
}

#[track_caller]
fn tenant_required<T: std::fmt::Debug>(r: marten::Result<T>, owner: &str) {
    match r {
        Err(Error::TenantRequired { owner: o }) => assert_eq!(o, owner),
        other => panic!("expected TenantRequired for {owner}, got {other:?}"),
    }
}

#[tokio::test]
async fn two_tenants_with_the_same_ids_see_only_their_own_documents() {
    let (_schema, store) = store("tenancy_docs_isolated").await;
    let id = Uuid::new_v4();
    let mut a = ok(store.lightweight_session_for("red"));
    let mut b = ok(store.lightweight_session_for("blue"));
    ok(a.store(account(id, "same@x", 10)));
    ok(a.store(Note {
        id: 1,
        text: "red one".into(),
    }));
    ok(a.save_changes().await);
    ok(b.store(account(id, "same@x", 20)));
    ok(b.store(Note {
        id: 1,
        text: "blue one".into(),
    }));
    ok(b.save_changes().await);

    // load, load_many, metadata
    assert_eq!(
        ok(a.load::<Account>(&id).await).map(|x| x.balance),
        Some(10)
    );
    assert_eq!(
        ok(b.load::<Account>(&id).await).map(|x| x.balance),
        Some(20)
    );
    let many = ok(b.load_many::<Note>(&[1, 2]).await);
    assert_eq!(
        many,
        vec![Note {
            id: 1,
            text: "blue one".into()
        }]
    );
    let (ma, mb) = (
        ok(a.metadata::<Account>(&id).await).expect("red's metadata"),
        ok(b.metadata::<Account>(&id).await).expect("blue's metadata"),
    );
    assert_ne!(
        ma.version, mb.version,
        "each tenant's row has its own version"
    );

    // A tenant without the document sees none.
    let mut green = ok(store.query_session_for("green"));
    assert_eq!(ok(green.load::<Account>(&id).await), None);
    assert!(ok(green.load_many::<Note>(&[1]).await).is_empty());
    assert!(ok(green.metadata::<Account>(&id).await).is_none());
    assert!(ok(green.query::<Note>().to_list().await).is_empty());

    // Typed queries, where_sql, count, paging, streaming and batches.
    let texts = |v: Vec<Note>| v.into_iter().map(|n| n.text).collect::<Vec<_>>();
    assert_eq!(texts(ok(a.query::<Note>().to_list().await)), ["red one"]);
    assert_eq!(
        texts(ok(b.query::<Note>().filter(|f| f.id.eq(1)).to_list().await)),
        ["blue one"]
    );
    let raw = ok(a
        .query::<Note>()
        .where_sql("d.id = $1::bigint", vec![RawParam::Int(1)])
        .to_list()
        .await);
    assert_eq!(texts(raw), ["red one"]);
    // A raw fragment naming another tenant still sees only the session's rows.
    let sneaky = ok(a
        .query::<Note>()
        .where_sql("d.tenant_id = $1", vec![RawParam::Text("blue".into())])
        .to_list()
        .await);
    assert!(sneaky.is_empty(), "{sneaky:?}");
    assert_eq!(ok(b.query::<Account>().count().await), 1);
    let page = ok(b.query::<Note>().to_page(0, 10).await);
    assert_eq!(
        (page.total, texts(page.items)),
        (1, vec!["blue one".into()])
    );
    let mut qa = ok(store.query_session_for("red"));
    let mut batch = qa.batch();
    let listed = batch.list(QuerySpec::<Note>::new());
    let counted = batch.count(QuerySpec::<Account>::new());
    let results = ok(batch.execute().await);
    assert_eq!(texts(ok(results.get(listed))), ["red one"]);
    assert_eq!(ok(results.get(counted)), 1);
    use futures_util::StreamExt;
    let streamed: Vec<Note> = ok(b.query::<Note>().stream().await)
        .map(|r| ok(r))
        .collect()
        .await;
    assert_eq!(texts(streamed), ["blue one"]);
}

#[tokio::test]
async fn writes_never_reach_another_tenants_rows() {
    let (_schema, store) = store("tenancy_docs_writes").await;
    let id = Uuid::new_v4();
    let mut red = ok(store.lightweight_session_for("red"));
    ok(red.insert(account(id, "r@x", 1)));
    ok(red.insert(Note {
        id: 7,
        text: "red".into(),
    }));
    ok(red.save_changes().await);

    // An update in another tenant finds no document: rejected, nothing written.
    let mut blue = ok(store.lightweight_session_for("blue"));
    ok(blue.update(account(id, "b@x", 99)));
    match blue.save_changes().await {
        Err(Error::Rejected(r)) => assert!(matches!(r[0].kind, RejectionKind::NotFound), "{r:?}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // An insert of the same id in another tenant is not a conflict.
    let mut blue = ok(store.lightweight_session_for("blue"));
    ok(blue.insert(account(id, "b@x", 2)));
    ok(blue.save_changes().await);
    // A delete in one tenant leaves the other's row.
    let mut blue = ok(store.lightweight_session_for("blue"));
    ok(blue.delete::<Account>(&id));
    ok(blue.delete::<Note>(&7));
    ok(blue.save_changes().await);
    assert_eq!(
        ok(red.load::<Account>(&id).await).map(|a| a.balance),
        Some(1)
    );
    assert_eq!(
        ok(red.load::<Note>(&7).await).map(|n| n.text),
        Some("red".into())
    );
    assert_eq!(ok(blue.load::<Account>(&id).await), None);

    // An upsert with a version read in another tenant is rejected (the versions differ).
    let red_version = ok(red.metadata::<Account>(&id).await)
        .expect("stored")
        .version;
    let mut blue = ok(store.lightweight_session_for("blue"));
    ok(blue.insert(account(id, "b@x", 3)));
    ok(blue.save_changes().await);
    let mut blue = ok(store.lightweight_session_for("blue"));
    ok(blue.store_with_version(account(id, "b@x", 4), red_version));
    assert!(matches!(blue.save_changes().await, Err(Error::Rejected(_))));
    assert_eq!(
        ok(red.load::<Account>(&id).await).map(|a| a.balance),
        Some(1)
    );

    // Numeric revisions count per tenant.
    for (tenant, writes) in [("red", 3), ("blue", 1)] {
        for n in 0..writes {
            let mut s = ok(store.lightweight_session_for(tenant));
            ok(s.store(Counter { id: "c".into(), n }));
            ok(s.save_changes().await);
        }
    }
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    assert_eq!(
        ok(red.metadata::<Counter>(&"c".into()).await).map(|m| m.version),
        Some(3)
    );
    assert_eq!(
        ok(blue.metadata::<Counter>(&"c".into()).await).map(|m| m.version),
        Some(1)
    );
}

#[tokio::test]
async fn unique_fields_are_unique_per_tenant() {
    let (_schema, store) = store("tenancy_docs_unique").await;
    for tenant in ["red", "blue"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.store(account(Uuid::new_v4(), "shared@x", 0)));
        ok(s.save_changes().await);
    }
    let mut red = ok(store.lightweight_session_for("red"));
    ok(red.store(account(Uuid::new_v4(), "shared@x", 0)));
    match red.save_changes().await {
        Err(Error::UniqueViolation { document_type, .. }) => assert_eq!(document_type, "Account"),
        other => panic!("expected a unique violation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_without_a_tenant_cannot_touch_a_conjoined_type() {
    let (_schema, store) = store("tenancy_docs_required").await;
    let id = Uuid::new_v4();
    let mut s = store.lightweight_session();
    tenant_required(s.store(account(id, "x@x", 1)), "Account");
    tenant_required(
        s.insert(Note {
            id: 1,
            text: "n".into(),
        }),
        "Note",
    );
    tenant_required(s.delete::<Note>(&1), "Note");
    tenant_required(s.load::<Account>(&id).await, "Account");
    tenant_required(s.load_many::<Note>(&[1]).await, "Note");
    tenant_required(s.metadata::<Account>(&id).await, "Account");
    tenant_required(s.query::<Note>().to_list().await, "Note");
    tenant_required(s.query::<Note>().count().await, "Note");
    tenant_required(s.query::<Note>().stream().await.map(|_| ()), "Note");
    let mut q = store.query_session();
    let mut batch = q.batch();
    let _ = batch.list(QuerySpec::<Country>::new());
    let _ = batch.count(QuerySpec::<Note>::new());
    tenant_required(batch.execute().await.map(|_| ()), "Note");
    // Nothing was queued, so nothing is written; reference data still works.
    ok(s.store(Country {
        id: "nl".into(),
        name: "Netherlands".into(),
    }));
    ok(s.save_changes().await);
    let mut red = ok(store.lightweight_session_for("red"));
    assert!(ok(red.query::<Note>().to_list().await).is_empty());
    assert_eq!(ok(red.load::<Account>(&id).await), None);
    // A single-tenant type is shared by every tenant.
    assert_eq!(
        ok(red.load::<Country>(&"nl".into()).await).map(|c| c.name),
        Some("Netherlands".into())
    );
}

#[tokio::test]
async fn tenant_ids_are_bound_never_formatted() {
    let (_schema, store) = store("tenancy_docs_bound").await;
    let hostile = "x'); DROP TABLE mt_doc_note; --";
    let mut s = ok(store.lightweight_session_for(hostile));
    ok(s.store(Note {
        id: 1,
        text: "kept".into(),
    }));
    ok(s.save_changes().await);
    assert_eq!(
        ok(s.load::<Note>(&1).await).map(|n| n.text),
        Some("kept".into())
    );
    let mut other = ok(store.lightweight_session_for("other"));
    ok(other.store(Note {
        id: 1,
        text: "other".into(),
    }));
    ok(other.save_changes().await);
    assert_eq!(ok(s.query::<Note>().count().await), 1);
    // Its events too: appended, read back with its tenant, invisible to the other.
    let stream = Uuid::now_v7();
    ok(s.events().append(stream, [Marked { v: 7 }]));
    ok(s.save_changes().await);
    let read = ok(s.events().fetch_stream(stream).await);
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].tenant.as_ref().map(TenantId::as_str), Some(hostile));
    assert!(ok(other.events().fetch_stream(stream).await).is_empty());
    match store.lightweight_session_for("") {
        Err(Error::InvalidTenant { reason, .. }) => assert_eq!(reason, "is empty"),
        other => panic!("expected InvalidTenant, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        store.lightweight_session_for("*DEFAULT*"),
        Err(Error::InvalidTenant { .. })
    ));
}

#[tokio::test]
async fn identity_and_dirty_tracked_sessions_stay_in_their_tenant() {
    let (_schema, store) = store("tenancy_docs_tracked").await;
    for (tenant, text) in [("red", "r"), ("blue", "b")] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.store(Note {
            id: 5,
            text: text.into(),
        }));
        ok(s.save_changes().await);
    }
    let mut red = ok(store.dirty_tracked_session_for("red"));
    if let Some(n) = ok(red.load::<Note>(&5).await) {
        n.text = "r2".into();
    }
    ok(red.save_changes().await);
    let mut blue = ok(store.identity_session_for("blue"));
    assert_eq!(
        ok(blue.load::<Note>(&5).await).map(|n| n.text),
        Some("b".into())
    );
    let mut red = ok(store.query_session_for("red"));
    assert_eq!(
        ok(red.load::<Note>(&5).await).map(|n| n.text),
        Some("r2".into())
    );
}

/// Sessions of different tenants race on the same ids with inserts (which reject an
/// existing id): every tenant's insert commits. Sessions of one tenant racing the same
/// way: exactly one commits per round, so the check the tenants pass is real.
#[tokio::test]
async fn racing_tenants_on_the_same_ids_do_not_conflict() {
    let (_schema, store) = store("tenancy_docs_race").await;
    const TENANTS: usize = 6;
    const ROUNDS: usize = 15;
    for round in 0..ROUNDS {
        let id = Uuid::new_v4();
        let barrier = Arc::new(Barrier::new(TENANTS * 2));
        let mut tasks = Vec::new();
        for t in 0..TENANTS {
            for copy in 0..2 {
                let (store, barrier) = (store.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = ok(store.lightweight_session_for(format!("t{t}")));
                    ok(s.insert(account(id, &format!("{round}-{copy}@x"), copy)));
                    barrier.wait().await;
                    (t, s.save_changes().await.is_ok())
                }));
            }
        }
        let mut won = [0usize; TENANTS];
        for task in tasks {
            let (t, committed) = task.await.expect("task");
            won[t] += usize::from(committed);
        }
        assert_eq!(
            won, [1; TENANTS],
            "round {round}: one insert per tenant commits"
        );
        for t in 0..TENANTS {
            let mut q = ok(store.query_session_for(format!("t{t}")));
            assert!(ok(q.load::<Account>(&id).await).is_some());
        }
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Marked {
    v: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Store {
        tenant: usize,
        id: i64,
        text: u8,
    },
    Delete {
        tenant: usize,
        id: i64,
    },
    /// A patch of one document by id (`patch(id).set`): nothing when it is missing.
    Patch {
        tenant: usize,
        id: i64,
        text: u8,
    },
    /// A typed filtered delete (`delete_where(text == text)`).
    DeleteWhere {
        tenant: usize,
        text: u8,
    },
    /// A patch by a raw SQL filter (`patch_where(Filter::raw)`): `from` becomes `to`.
    PatchWhereRaw {
        tenant: usize,
        from: u8,
        to: u8,
    },
    Append {
        tenant: usize,
        stream: usize,
        v: u8,
    },
}

impl Op {
    fn tenant(&self) -> usize {
        match self {
            Op::Store { tenant, .. }
            | Op::Delete { tenant, .. }
            | Op::Patch { tenant, .. }
            | Op::DeleteWhere { tenant, .. }
            | Op::PatchWhereRaw { tenant, .. }
            | Op::Append { tenant, .. } => *tenant,
        }
    }
}

/// Streams per case (the same ids in every tenant).
const STREAMS: usize = 3;
/// Tenants per case.
const TENANTS_PER_CASE: usize = 3;
/// Texts of notes: few, so the filtered operations match documents.
const TEXTS: u8 = 4;

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS_PER_CASE;
    prop_oneof![
        (t.clone(), 0..STREAMS, any::<u8>()).prop_map(|(tenant, stream, v)| Op::Append {
            tenant,
            stream,
            v
        }),
        (t.clone(), 0..6i64, 0..TEXTS).prop_map(|(tenant, id, text)| Op::Store {
            tenant,
            id,
            text
        }),
        (t.clone(), 0..6i64).prop_map(|(tenant, id)| Op::Delete { tenant, id }),
        (t.clone(), 0..6i64, 0..TEXTS).prop_map(|(tenant, id, text)| Op::Patch {
            tenant,
            id,
            text
        }),
        (t.clone(), 0..TEXTS).prop_map(|(tenant, text)| Op::DeleteWhere { tenant, text }),
        (t, 0..TEXTS, 0..TEXTS).prop_map(|(tenant, from, to)| Op::PatchWhereRaw {
            tenant,
            from,
            to
        }),
    ]
}

/// One tenant's model: its notes by id and the events of each stream.
#[derive(Debug, Clone, Default)]
struct Model {
    notes: BTreeMap<i64, String>,
    events: Vec<Vec<u8>>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Store { id, text, .. } => {
                self.notes.insert(*id, text.to_string());
            }
            Op::Delete { id, .. } => {
                self.notes.remove(id);
            }
            Op::Patch { id, text, .. } => {
                if let Some(note) = self.notes.get_mut(id) {
                    *note = text.to_string();
                }
            }
            Op::DeleteWhere { text, .. } => self.notes.retain(|_, t| *t != text.to_string()),
            Op::PatchWhereRaw { from, to, .. } => {
                for note in self.notes.values_mut().filter(|t| **t == from.to_string()) {
                    *note = to.to_string();
                }
            }
            Op::Append { stream, v, .. } => self.events[*stream].push(*v),
        }
    }
}

/// Runs `op` in a session of `tenant`, as its own save.
async fn run_op(store: &DocumentStore, tenant: &str, stream: Uuid, op: &Op) {
    let mut s = ok(store.lightweight_session_for(tenant));
    match op {
        Op::Store { id, text, .. } => {
            ok(s.store(Note {
                id: *id,
                text: text.to_string(),
            }));
        }
        Op::Delete { id, .. } => ok(s.delete::<Note>(id)),
        Op::Patch { id, text, .. } => ok(s
            .patch::<Note>(id)
            .set(|f| f.text, text.to_string())
            .queue()),
        Op::DeleteWhere { text, .. } => {
            ok(s.delete_where::<Note>(Note::fields().text.eq(text.to_string())))
        }
        Op::PatchWhereRaw { from, to, .. } => {
            let raw = marten::query::Filter::raw(
                "d.data ->> 'text' = $1",
                vec![RawParam::Text(from.to_string())],
            );
            ok(s.patch_where::<Note>(raw)
                .set(|f| f.text, to.to_string())
                .queue())
        }
        Op::Append { v, .. } => ok(s.events().append(stream, [Marked { v: *v }])),
    }
    ok(s.save_changes().await);
}

/// What one tenant sees: its documents listed in id order, their count, a load of each
/// id, the count of each text by `where_sql`, and the events of each stream.
type TenantView = (
    Vec<(i64, String)>,
    i64,
    Vec<Option<String>>,
    Vec<i64>,
    Vec<Vec<u8>>,
);

#[test]
fn random_operations_of_several_tenants_match_each_tenants_model() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_schema, store) = rt.block_on(store("tenancy_docs_prop"));
    let config = ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let case = std::cell::Cell::new(0usize);
    proptest!(config, |(ops in prop::collection::vec(op(), 1..40))| {
        // Each case has tenants of its own, so cases start empty.
        let n = case.get();
        case.set(n + 1);
        let tenant = |t: usize| format!("case{n}-t{t}");
        let stream = |s: usize| Uuid::from_u128(((n as u128) << 8) | s as u128);
        let mut models = vec![Model { events: vec![Vec::new(); STREAMS], ..Model::default() }; TENANTS_PER_CASE];
        let seen: Vec<TenantView> = rt.block_on(async {
            // Ops go in chunks of 6: within a chunk each tenant's ops run in order, one
            // save each, while the tenants run at the same time on their own connections.
            for chunk in ops.chunks(6) {
                let runs = (0..TENANTS_PER_CASE).map(|t| {
                    let (tenant, store) = (tenant(t), &store);
                    let mine: Vec<&Op> = chunk.iter().filter(|op| op.tenant() == t).collect();
                    async move {
                        for op in mine {
                            let st = match op {
                                Op::Append { stream: st, .. } => *st,
                                _ => 0,
                            };
                            run_op(store, &tenant, stream(st), op).await;
                        }
                    }
                });
                futures_util::future::join_all(runs).await;
                for op in chunk {
                    models[op.tenant()].apply(op);
                }
            }
            let mut seen = Vec::new();
            for t in 0..TENANTS_PER_CASE {
                let mut q = ok(store.query_session_for(tenant(t)));
                let listed = ok(q.query::<Note>().order_by(|f| f.id.asc()).to_list().await);
                let count = ok(q.query::<Note>().count().await);
                let mut loaded = Vec::new();
                for id in 0..6 {
                    loaded.push(ok(q.load::<Note>(&id).await).map(|n| n.text));
                }
                let mut by_text = Vec::new();
                for text in 0..TEXTS {
                    let found = q
                        .query::<Note>()
                        .where_sql("d.data ->> 'text' = $1", (text.to_string(),))
                        .count()
                        .await;
                    by_text.push(ok(found));
                }
                let mut s = ok(store.lightweight_session_for(tenant(t)));
                let mut streams = Vec::new();
                for st in 0..STREAMS {
                    let read = ok(s.events().fetch_stream(stream(st)).await);
                    streams.push(
                        read.iter()
                            .map(|e| e.data_as::<Marked>().map(|m| m.v))
                            .collect::<Option<Vec<u8>>>()
                            .expect("Marked events"),
                    );
                }
                seen.push((listed.into_iter().map(|n| (n.id, n.text)).collect(), count, loaded, by_text, streams));
            }
            seen
        });
        for (t, (listed, count, loaded, by_text, streams)) in seen.into_iter().enumerate() {
            let model = &models[t];
            prop_assert_eq!(&streams, &model.events, "tenant {} streams", t);
            let want: Vec<(i64, String)> = model.notes.iter().map(|(k, v)| (*k, v.clone())).collect();
            prop_assert_eq!(&listed, &want, "tenant {} listed", t);
            prop_assert_eq!(count, want.len() as i64);
            let want_loaded: Vec<Option<String>> = (0..6).map(|id| model.notes.get(&id).cloned()).collect();
            prop_assert_eq!(loaded, want_loaded, "tenant {} loads", t);
            let want_by_text: Vec<i64> = (0..TEXTS)
                .map(|text| model.notes.values().filter(|v| **v == text.to_string()).count() as i64)
                .collect();
            prop_assert_eq!(by_text, want_by_text, "tenant {} where_sql", t);
        }
    });
    assert!(case.get() >= 32, "every case ran");
}

/// A conjoined query's filter tests the tenant before the document's fields: a scan that
/// filters (few tenants, a table analyzed, so the planner reads it whole) evaluates the
/// fields' conditions on the tenant's rows only. PostgreSQL would put `tenant_id = $1`
/// last by itself.
#[tokio::test]
async fn a_filtering_scan_tests_the_tenant_first() {
    let (schema, store) = store("tenancy_docs_filter_order").await;
    for t in 0..4 {
        let mut s = ok(store.lightweight_session_for(format!("t{t}")));
        for i in 0..50 {
            ok(s.store(account(Uuid::now_v7(), &format!("{i}@x"), i)));
        }
        ok(s.save_changes().await);
    }
    let mut q = ok(store.query_session_for("t1"));
    let sql = q.query::<Account>().filter(|f| f.balance.lt(20)).to_sql();
    drop(q);
    let raw = schema.raw_client().await;
    raw.batch_execute(&format!(
        "ANALYZE mt_doc_account; SET plan_cache_mode = force_generic_plan; \
         SET enable_bitmapscan = off; SET enable_indexscan = off; PREPARE q AS {sql}"
    ))
    .await
    .expect("prepare");
    let plan: Vec<String> = raw
        .query("EXPLAIN (ANALYZE) EXECUTE q('t1', '{\"v\": 20}')", &[])
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let filter = plan
        .iter()
        .find(|l| l.trim_start().starts_with("Filter:"))
        .unwrap_or_else(|| panic!("a filter: {plan:#?}"));
    assert!(
        filter
            .trim_start()
            .starts_with("Filter: (CASE WHEN (tenant_id = $1)"),
        "{plan:#?}"
    );
}

#[tokio::test]
async fn a_conjoined_table_leads_its_keys_with_the_tenant_and_passes_the_schema_check() {
    let (schema, store) = store("tenancy_docs_schema").await;
    ok(store.assert_schema().await);
    let script = store.schema_sql();
    assert!(script.contains("PRIMARY KEY (tenant_id, id)"), "{script}");
    assert!(
        script.contains("mt_doc_account_uidx_email ON")
            && script.contains("(tenant_id, mt_f_email)"),
        "{script}"
    );
    let (client, conn) = ok(tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Configuration(e.to_string())));
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'mt_doc_note' AND i.indisprimary",
            &[&schema.name()],
        )
        .await
        .expect("primary key");
    let def: String = row.get(0);
    assert!(def.ends_with("(tenant_id, id)"), "{def}");
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    amount: i64,
}

/// An inline aggregate whose documents are conjoined: written under the session's
/// tenant.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
#[document(tenancy = "conjoined")]
struct Wallet {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Wallet {
    fn apply(&mut self, e: &Deposited) {
        self.total += e.amount;
    }
}

#[tokio::test]
async fn inline_projections_write_under_the_sessions_tenant() {
    let (_schema, b) = builder("tenancy_docs_inline");
    let store = ok(b
        .events_tenancy(marten::Tenancy::Conjoined)
        .projection::<Wallet>(Lifecycle::Inline)
        .build()
        .await);
    let (red_stream, blue_stream) = (Uuid::new_v4(), Uuid::new_v4());
    for (tenant, stream, amount) in [("red", red_stream, 5), ("blue", blue_stream, 7)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().start_stream(stream, [Deposited { amount }]));
        ok(s.save_changes().await);
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().append(stream, [Deposited { amount }]));
        ok(s.save_changes().await);
    }
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    assert_eq!(
        ok(red.load::<Wallet>(&red_stream).await).map(|w| w.total),
        Some(10)
    );
    assert_eq!(
        ok(blue.load::<Wallet>(&blue_stream).await).map(|w| w.total),
        Some(14)
    );
    assert!(ok(red.load::<Wallet>(&blue_stream).await).is_none());
    assert!(ok(blue.load::<Wallet>(&red_stream).await).is_none());
    // A session without a tenant cannot append to conjoined events (nor so project into
    // a conjoined aggregate).
    let mut s = store.lightweight_session();
    tenant_required(
        s.events().append(red_stream, [Deposited { amount: 1 }]),
        "events",
    );
    assert_eq!(
        ok(red.load::<Wallet>(&red_stream).await).map(|w| w.total),
        Some(10)
    );
}

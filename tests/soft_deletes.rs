//! Soft deletes (`#[document(soft_delete)]`): deletes by id and by filter mark rows,
//! every read (loads, typed queries, pages, streams, batches, aggregates, selections)
//! skips them unless a query includes them or asks for them only, metadata tells them
//! deleted (and when), undo,
//! hard deletes, a store reviving a marked document, insert / update / patch of a marked
//! one, each concurrency mode's version left alone, two tenants with the same ids, the
//! schema patch adding the columns to an existing table, the partial indexes under
//! `EXPLAIN`, and a property test against a Rust model.

mod common;

use std::collections::BTreeMap;

use common::{builder, ok};
use futures_util::TryStreamExt;
use marten::prelude::*;
use marten::{QuerySpec, RejectionKind};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
#[concurrency(optimistic)]
struct Note {
    id: Uuid,
    #[document(index)]
    tag: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
#[concurrency(numeric)]
struct Counter {
    id: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete, tenancy = "conjoined")]
struct Ticket {
    id: i64,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
struct Item {
    id: i64,
    n: i64,
}

async fn store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Note>()
        .document::<Counter>()
        .document::<Ticket>()
        .document::<Item>()
        .build()
        .await);
    (schema, store)
}

fn note(tag: &str, n: i64) -> Note {
    Note {
        id: Uuid::now_v7(),
        tag: tag.to_owned(),
        n,
    }
}

async fn save_notes(store: &DocumentStore, notes: &[Note]) {
    let mut s = store.lightweight_session();
    for n in notes {
        ok(s.store(n.clone()));
    }
    ok(s.save_changes().await);
}

/// `mt_deleted`, whether `mt_deleted_at` is set, and the version of a note's row.
async fn note_row(raw: &tokio_postgres::Client, id: Uuid) -> Option<(bool, bool, Uuid)> {
    let row = raw
        .query_opt(
            "SELECT mt_deleted, mt_deleted_at IS NOT NULL, mt_version FROM mt_doc_note WHERE id = $1",
            &[&id],
        )
        .await
        .expect("note row")?;
    Some((row.get(0), row.get(1), row.get(2)))
}

fn ns(notes: &[Note]) -> Vec<i64> {
    let mut out: Vec<i64> = notes.iter().map(|n| n.n).collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn a_delete_marks_the_row_and_every_read_skips_it() {
    let (schema, store) = store("soft_reads").await;
    let raw = schema.raw_client().await;
    let notes = [note("a", 1), note("a", 2), note("b", 3)];
    save_notes(&store, &notes).await;
    let before = note_row(&raw, notes[1].id).await.expect("stored");

    let mut s = store.lightweight_session();
    ok(s.delete::<Note>(&notes[1].id));
    ok(s.save_changes().await);

    // The row is there, marked, its version untouched.
    let after = note_row(&raw, notes[1].id).await.expect("still stored");
    assert_eq!(after, (true, true, before.2));

    let mut q = store.query_session();
    assert!(ok(q.load::<Note>(&notes[1].id).await).is_none());
    let ids: Vec<Uuid> = notes.iter().map(|n| n.id).collect();
    assert_eq!(ns(&ok(q.load_many::<Note>(&ids).await)), [1, 3]);
    // Metadata reads the marked row: deleted, and when.
    let marked = ok(q.metadata::<Note>(&notes[1].id).await).expect("marked row's metadata");
    assert!(marked.deleted);
    assert!(marked
        .deleted_at
        .is_some_and(|at| at >= marked.last_modified));
    let live = ok(q.metadata::<Note>(&notes[0].id).await).expect("live row's metadata");
    assert!(!live.deleted);
    assert_eq!(live.deleted_at, None);

    assert_eq!(ns(&ok(q.query::<Note>().to_list().await)), [1, 3]);
    assert_eq!(ok(q.query::<Note>().count().await), 2);
    assert_eq!(
        ok(q.query::<Note>().filter(|f| f.tag.eq("a")).count().await),
        1
    );
    assert!(!ok(q.query::<Note>().filter(|f| f.n.eq(2)).exists().await));
    let page = ok(q.query::<Note>().to_page(0, 10).await);
    assert_eq!((ns(&page.items), page.total), (vec![1, 3], 2));
    let streamed: Vec<Note> = ok(ok(q.query::<Note>().stream().await).try_collect().await);
    assert_eq!(ns(&streamed), [1, 3]);
    assert_eq!(ok(q.query::<Note>().sum(|f| f.n).await), Some(4));
    let mut tags: Vec<String> = ok(q.query::<Note>().select(|f| f.tag).to_list().await);
    tags.sort();
    assert_eq!(tags, ["a", "b"]);

    // Including the marked rows, or only them.
    assert_eq!(
        ns(&ok(q.query::<Note>().include_deleted().to_list().await)),
        [1, 2, 3]
    );
    assert_eq!(
        ok(q.query::<Note>().include_deleted().sum(|f| f.n).await),
        Some(6)
    );
    let only = ok(q.query::<Note>().only_deleted().to_list().await);
    assert_eq!(only, [notes[1].clone()]);
    let only_a = q.query::<Note>().only_deleted().filter(|f| f.tag.eq("b"));
    assert_eq!(ok(only_a.count().await), 0);

    // A batch: each query keeps its own choice.
    let mut batch = q.batch();
    let live = batch.count(QuerySpec::<Note>::new());
    let all = batch.count(QuerySpec::<Note>::new().include_deleted());
    let gone = batch.list(QuerySpec::<Note>::new().only_deleted());
    let results = ok(batch.execute().await);
    assert_eq!(ok(results.get(live)), 2);
    assert_eq!(ok(results.get(all)), 3);
    assert_eq!(ok(results.get(gone)), [notes[1].clone()]);

    // A second delete of a marked row keeps its first time.
    let first_at: time::OffsetDateTime = raw
        .query_one(
            "SELECT mt_deleted_at FROM mt_doc_note WHERE id = $1",
            &[&notes[1].id],
        )
        .await
        .expect("deleted at")
        .get(0);
    let mut s = store.lightweight_session();
    ok(s.delete::<Note>(&notes[1].id));
    ok(s.delete_where::<Note>(Note::fields().tag.eq("a")));
    ok(s.save_changes().await);
    let again: time::OffsetDateTime = raw
        .query_one(
            "SELECT mt_deleted_at FROM mt_doc_note WHERE id = $1",
            &[&notes[1].id],
        )
        .await
        .expect("deleted at")
        .get(0);
    assert_eq!(first_at, again);
}

#[tokio::test]
async fn delete_where_undo_and_hard_deletes() {
    let (schema, store) = store("soft_where").await;
    let raw = schema.raw_client().await;
    let notes = [note("a", 1), note("a", 2), note("b", 3), note("b", 4)];
    save_notes(&store, &notes).await;

    let mut s = store.lightweight_session();
    ok(s.delete_where::<Note>(Note::fields().n.ge(2)));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ns(&ok(q.query::<Note>().to_list().await)), [1]);
    assert_eq!(
        ns(&ok(q.query::<Note>().only_deleted().to_list().await)),
        [2, 3, 4]
    );

    // Undo: only the marked rows the filter matches come back, with their data.
    let mut s = store.lightweight_session();
    ok(s.undo_delete_where::<Note>(Note::fields().tag.eq("b")));
    ok(s.save_changes().await);
    assert_eq!(ns(&ok(q.query::<Note>().to_list().await)), [1, 3, 4]);
    assert_eq!(
        ok(q.load::<Note>(&notes[2].id).await).as_ref(),
        Some(&notes[2])
    );
    assert_eq!(
        note_row(&raw, notes[2].id).await.map(|r| (r.0, r.1)),
        Some((false, false))
    );

    // A hard delete by id removes a marked row and a live one.
    let mut s = store.lightweight_session();
    ok(s.hard_delete::<Note>(&notes[1].id));
    ok(s.hard_delete::<Note>(&notes[0].id));
    ok(s.save_changes().await);
    assert!(note_row(&raw, notes[1].id).await.is_none());
    assert!(note_row(&raw, notes[0].id).await.is_none());

    // A hard delete by filter removes marked and live rows alike.
    let mut s = store.lightweight_session();
    ok(s.delete::<Note>(&notes[2].id));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    ok(s.hard_delete_where::<Note>(Note::fields().tag.eq("b")));
    ok(s.save_changes().await);
    assert_eq!(ok(q.query::<Note>().include_deleted().count().await), 0);

    // A numeric document's revision does not move with a soft delete or an undo.
    let mut s = store.lightweight_session();
    ok(s.store(Counter {
        id: "c".into(),
        n: 1,
    }));
    ok(s.save_changes().await);
    ok(s.delete::<Counter>(&"c".to_owned()));
    ok(s.save_changes().await);
    let marked = ok(q.metadata::<Counter>(&"c".to_owned()).await).expect("marked");
    assert!(marked.deleted && marked.deleted_at.is_some());
    assert_eq!(marked.version, 1);
    ok(s.undo_delete_where::<Counter>(Counter::fields().n.eq(1)));
    ok(s.save_changes().await);
    let revision: i64 = raw
        .query_one("SELECT mt_revision FROM mt_doc_counter WHERE id = 'c'", &[])
        .await
        .expect("revision")
        .get(0);
    assert_eq!(revision, 1);
    let meta = ok(q.metadata::<Counter>(&"c".to_owned()).await).expect("live again");
    assert_eq!(meta.version, 1);
    assert!(!meta.deleted);
    assert_eq!(meta.deleted_at, None);
}

#[tokio::test]
async fn store_revives_insert_is_rejected_update_finds_nothing_patch_skips() {
    let (schema, store) = store("soft_writes").await;
    let raw = schema.raw_client().await;
    let doc = note("a", 1);
    save_notes(&store, std::slice::from_ref(&doc)).await;
    let mut s = store.lightweight_session();
    ok(s.delete::<Note>(&doc.id));
    ok(s.save_changes().await);

    // Insert: the row exists.
    ok(s.insert(doc.clone()));
    match s.save_changes().await {
        Err(Error::Rejected(r)) => assert_eq!(r[0].kind, RejectionKind::AlreadyExists),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // Update: the document is deleted.
    ok(s.update(doc.clone()));
    match s.save_changes().await {
        Err(Error::Rejected(r)) => assert_eq!(r[0].kind, RejectionKind::NotFound),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A patch by id or by filter leaves a marked row alone.
    ok(s.patch::<Note>(&doc.id).set(|f| f.n, 99).queue());
    ok(s.patch_where::<Note>(Note::fields().tag.eq("a"))
        .set(|f| f.n, 98)
        .queue());
    ok(s.save_changes().await);
    let data: serde_json::Value = raw
        .query_one("SELECT data FROM mt_doc_note WHERE id = $1", &[&doc.id])
        .await
        .expect("data")
        .get(0);
    assert_eq!(data["n"], 1);

    // Store: the row is written and live again.
    let revived = Note {
        n: 5,
        ..doc.clone()
    };
    ok(s.store(revived.clone()));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Note>(&doc.id).await), Some(revived.clone()));
    assert_eq!(
        note_row(&raw, doc.id).await.map(|r| (r.0, r.1)),
        Some((false, false))
    );

    // Several stores in one statement revive each (the array form of the upsert).
    let others = [note("x", 1), note("x", 2)];
    save_notes(&store, &others).await;
    ok(s.delete_where::<Note>(Note::fields().tag.eq("x")));
    ok(s.save_changes().await);
    save_notes(&store, &others).await;
    assert_eq!(
        ok(q.query::<Note>().filter(|f| f.tag.eq("x")).count().await),
        2
    );

    // Bulk overwrite revives too; insert-only refuses the marked id.
    ok(s.delete::<Note>(&doc.id));
    ok(s.save_changes().await);
    let refused = store
        .bulk_insert(vec![revived.clone()], BulkMode::InsertOnly)
        .await;
    assert!(matches!(refused, Err(Error::Rejected(_))), "{refused:?}");
    ok(store
        .bulk_insert(vec![revived.clone()], BulkMode::Overwrite)
        .await);
    assert_eq!(ok(q.load::<Note>(&doc.id).await), Some(revived));
}

#[tokio::test]
async fn two_tenants_with_the_same_ids_do_not_touch_each_other() {
    let (_schema, store) = store("soft_tenants").await;
    let mut acme = ok(store.lightweight_session_for("acme"));
    let mut globex = ok(store.lightweight_session_for("globex"));
    for s in [&mut acme, &mut globex] {
        ok(s.store(Ticket { id: 1, n: 1 }));
        ok(s.store(Ticket { id: 2, n: 2 }));
        ok(s.save_changes().await);
    }
    ok(acme.delete::<Ticket>(&1));
    ok(acme.save_changes().await);
    assert!(ok(acme.load::<Ticket>(&1).await).is_none());
    assert!(ok(globex.load::<Ticket>(&1).await).is_some());
    assert_eq!(ok(acme.query::<Ticket>().only_deleted().count().await), 1);
    assert_eq!(ok(globex.query::<Ticket>().only_deleted().count().await), 0);

    // globex marks both; acme's undo brings back acme's only.
    ok(globex.delete_where::<Ticket>(Ticket::fields().n.ge(1)));
    ok(globex.save_changes().await);
    ok(acme.undo_delete_where::<Ticket>(Ticket::fields().n.ge(1)));
    ok(acme.save_changes().await);
    assert_eq!(ok(acme.query::<Ticket>().count().await), 2);
    assert_eq!(ok(globex.query::<Ticket>().count().await), 0);
    assert_eq!(
        ok(globex.query::<Ticket>().include_deleted().count().await),
        2
    );

    // acme's hard deletes leave globex's rows.
    ok(acme.hard_delete::<Ticket>(&1));
    ok(acme.hard_delete_where::<Ticket>(Ticket::fields().n.eq(2)));
    ok(acme.save_changes().await);
    assert_eq!(
        ok(acme.query::<Ticket>().include_deleted().count().await),
        0
    );
    assert_eq!(
        ok(globex.query::<Ticket>().include_deleted().count().await),
        2
    );

    // globex reviving id 1 by a store does not create acme's.
    ok(globex.store(Ticket { id: 1, n: 10 }));
    ok(globex.save_changes().await);
    assert_eq!(
        ok(globex.load::<Ticket>(&1).await),
        Some(Ticket { id: 1, n: 10 })
    );
    assert!(ok(acme.load::<Ticket>(&1).await).is_none());

    let mut untenanted = store.lightweight_session();
    assert!(matches!(
        untenanted.undo_delete_where::<Ticket>(Ticket::fields().n.eq(1)),
        Err(Error::TenantRequired { .. })
    ));
    assert!(matches!(
        untenanted.hard_delete::<Ticket>(&1),
        Err(Error::TenantRequired { .. })
    ));
}

/// The same table, before it was soft-deleted.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "mt_doc_memo")]
struct MemoBefore {
    id: i64,
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "mt_doc_memo", soft_delete)]
struct Memo {
    id: i64,
    text: String,
}

#[tokio::test]
async fn the_schema_patch_adds_the_columns_and_indexes_to_an_existing_table() {
    let (schema, b) = builder("soft_schema");
    let before = ok(b.document::<MemoBefore>().build().await);
    let mut s = before.lightweight_session();
    ok(s.store(MemoBefore {
        id: 1,
        text: "kept".into(),
    }));
    ok(s.save_changes().await);

    let after = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .auto_create(AutoCreate::None)
        .apply_schema_at_build(false)
        .document::<Memo>();
    let after = ok(after.build().await);
    let patch = ok(after.schema_patch(marten::PatchOptions::new()).await);
    let sql = patch.to_sql();
    assert!(
        sql.contains("ADD COLUMN IF NOT EXISTS mt_deleted boolean NOT NULL DEFAULT false"),
        "{sql}"
    );
    assert!(
        sql.contains("ADD COLUMN IF NOT EXISTS mt_deleted_at timestamptz"),
        "{sql}"
    );
    assert!(sql.contains("(id) WHERE NOT mt_deleted"), "{sql}");
    assert!(sql.contains("(mt_deleted_at) WHERE mt_deleted"), "{sql}");
    ok(after.apply_schema_patch(&patch).await);
    ok(after.assert_schema().await);

    // The existing row is live; a delete now marks it.
    let mut s = after.lightweight_session();
    assert_eq!(
        ok(s.load::<Memo>(&1).await).map(|m| m.text),
        Some("kept".to_owned())
    );
    ok(s.delete::<Memo>(&1));
    ok(s.save_changes().await);
    assert!(ok(s.load::<Memo>(&1).await).is_none());
    assert_eq!(ok(s.query::<Memo>().only_deleted().count().await), 1);
}

async fn explain(raw: &tokio_postgres::Client, sql: &str) -> String {
    let rows = raw
        .query(&format!("EXPLAIN {sql}"), &[])
        .await
        .expect("explain");
    let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    lines.join("\n")
}

#[tokio::test]
async fn the_partial_indexes_serve_live_and_deleted_reads() {
    let (schema, store) = store("soft_explain").await;
    let raw = schema.raw_client().await;
    // 20,000 rows, all but 50 marked deleted.
    raw.batch_execute(
        "INSERT INTO mt_doc_item (id, data, mt_deleted, mt_deleted_at) \
         SELECT i, jsonb_build_object('id', i, 'n', i), i > 50, CASE WHEN i > 50 THEN now() END \
         FROM generate_series(1, 20000) AS i; ANALYZE mt_doc_item",
    )
    .await
    .expect("seed");
    let mut q = store.query_session();
    assert_eq!(ok(q.query::<Item>().count().await), 50);
    let live = q.query::<Item>().take(10);
    let sql = live.to_sql().replace("$1", "10");
    let plan = explain(&raw, &sql).await;
    assert!(
        plan.contains("mt_doc_item_live"),
        "live rows by their index: {plan}"
    );
    let plan = explain(
        &raw,
        &q.query::<Item>()
            .filter(|f| f.id.eq(7))
            .to_sql()
            .replace("$1", "7"),
    )
    .await;
    assert!(
        plan.contains("Index"),
        "a live row by id uses an index: {plan}"
    );

    // Now only 50 marked: the deleted rows by theirs.
    raw.batch_execute(
        "UPDATE mt_doc_item SET mt_deleted = NOT mt_deleted, \
         mt_deleted_at = CASE WHEN mt_deleted THEN NULL ELSE now() END; ANALYZE mt_doc_item",
    )
    .await
    .expect("flip");
    let only = q.query::<Item>().only_deleted();
    let plan = explain(&raw, &only.to_sql()).await;
    assert!(
        plan.contains("mt_doc_item_deleted"),
        "marked rows by their index: {plan}"
    );
    assert_eq!(ok(q.query::<Item>().only_deleted().count().await), 50);
}

#[derive(Debug, Clone)]
enum Op {
    Store(i64, i64),
    Delete(i64),
    HardDelete(i64),
    DeleteWhere(i64),
    UndoWhere(i64),
    HardDeleteWhere(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8i64, 0..10i64).prop_map(|(id, n)| Op::Store(id, n)),
        (0..8i64).prop_map(Op::Delete),
        (0..8i64).prop_map(Op::HardDelete),
        (0..10i64).prop_map(Op::DeleteWhere),
        (0..10i64).prop_map(Op::UndoWhere),
        (0..10i64).prop_map(Op::HardDeleteWhere),
    ]
}

/// Id -> (n, deleted).
type Model = BTreeMap<i64, (i64, bool)>;

fn apply(model: &mut Model, op: &Op) {
    match *op {
        Op::Store(id, n) => {
            model.insert(id, (n, false));
        }
        Op::Delete(id) => {
            if let Some(row) = model.get_mut(&id) {
                row.1 = true;
            }
        }
        Op::HardDelete(id) => {
            model.remove(&id);
        }
        Op::DeleteWhere(k) => model
            .values_mut()
            .filter(|r| r.0 >= k)
            .for_each(|r| r.1 = true),
        Op::UndoWhere(k) => model
            .values_mut()
            .filter(|r| r.0 >= k)
            .for_each(|r| r.1 = false),
        Op::HardDeleteWhere(k) => model.retain(|_, r| r.0 < k),
    }
}

fn queue(s: &mut LightweightSession, op: &Op) {
    match *op {
        Op::Store(id, n) => ok(s.store(Item { id, n }).map(|_| ())),
        Op::Delete(id) => ok(s.delete::<Item>(&id)),
        Op::HardDelete(id) => ok(s.hard_delete::<Item>(&id)),
        Op::DeleteWhere(k) => ok(s.delete_where::<Item>(Item::fields().n.ge(k))),
        Op::UndoWhere(k) => ok(s.undo_delete_where::<Item>(Item::fields().n.ge(k))),
        Op::HardDeleteWhere(k) => ok(s.hard_delete_where::<Item>(Item::fields().n.ge(k))),
    }
}

fn items(docs: Vec<Item>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = docs.into_iter().map(|d| (d.id, d.n)).collect();
    out.sort_unstable();
    out
}

#[test]
fn random_deletes_agree_with_a_rust_model() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (_schema, store) = rt.block_on(store("soft_prop"));
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(saves in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..5))| {
        rt.block_on(async {
            let mut s = store.lightweight_session();
            ok(s.hard_delete_where::<Item>(Item::fields().n.ge(0)));
            ok(s.save_changes().await);
            let mut model = Model::new();
            for ops in &saves {
                for o in ops {
                    queue(&mut s, o);
                    apply(&mut model, o);
                }
                ok(s.save_changes().await);
            }
            let want = |deleted: Option<bool>| -> Vec<(i64, i64)> {
                model
                    .iter()
                    .filter(|(_, r)| deleted.is_none_or(|d| r.1 == d))
                    .map(|(id, r)| (*id, r.0))
                    .collect()
            };
            let mut q = store.query_session();
            let live = items(ok(q.query::<Item>().to_list().await));
            let all = items(ok(q.query::<Item>().include_deleted().to_list().await));
            let gone = items(ok(q.query::<Item>().only_deleted().to_list().await));
            assert_eq!(live, want(Some(false)), "{saves:?}");
            assert_eq!(all, want(None), "{saves:?}");
            assert_eq!(gone, want(Some(true)), "{saves:?}");
            let ids: Vec<i64> = (0..8).collect();
            let loaded = items(ok(q.load_many::<Item>(&ids).await));
            assert_eq!(loaded, want(Some(false)), "{saves:?}");
        });
    });
}

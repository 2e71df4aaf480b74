//! Bulk inserts with binary `COPY` (`store.bulk_insert`): each mode in each concurrency
//! mode (rows, versions and revisions, sessions working on the rows afterwards), all or
//! nothing over several batches, duplicates, unique fields, conjoined tenancy, invalid
//! input, timeouts and cancellation at every await (all or nothing, a clean pool).

mod common;

use std::fmt::Debug;
use std::time::Duration;

use common::{builder, named_builder, ok};
use marten::concurrency::VersionOf;
use marten::prelude::*;
use marten::{BulkOptions, PgDocument, RejectionKind};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OffDoc {
    id: Uuid,
    tag: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct OptDoc {
    id: Uuid,
    tag: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct NumDoc {
    id: String,
    tag: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Member {
    id: i64,
    #[document(unique)]
    email: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(numeric)]
struct Ledger {
    id: Uuid,
    #[document(index)]
    n: i64,
}

/// A document type the mode scenarios run on.
trait Sample: PgDocument + Clone + PartialEq + Debug {
    /// Whether sessions check its versions.
    const VERSIONED: bool;
    fn sample(i: i64, tag: &str) -> Self;
    fn tag(&self) -> &str;
    fn retag(&mut self, tag: &str);
    /// Checks the version of a row just inserted.
    fn assert_new(v: &VersionOf<Self>);
    /// Checks the version of a row overwritten (`before` -> `after`).
    fn assert_overwritten(before: &VersionOf<Self>, after: &VersionOf<Self>);
}

macro_rules! sample {
    ($t:ident, $versioned:expr, |$i:ident| $id:expr) => {
        impl Sample for $t {
            const VERSIONED: bool = $versioned;
            fn sample($i: i64, tag: &str) -> Self {
                $t {
                    id: $id,
                    tag: tag.to_owned(),
                    n: $i,
                }
            }
            fn tag(&self) -> &str {
                &self.tag
            }
            fn retag(&mut self, tag: &str) {
                self.tag = tag.to_owned();
            }
            fn assert_new(v: &VersionOf<Self>) {
                assert_new_version(v);
            }
            fn assert_overwritten(before: &VersionOf<Self>, after: &VersionOf<Self>) {
                assert_overwritten_version(before, after);
            }
        }
    };
}

sample!(OffDoc, false, |i| Uuid::from_u128(i as u128 + 1));
sample!(OptDoc, true, |i| Uuid::from_u128(i as u128 + 1));
sample!(NumDoc, true, |i| format!("doc-{i}"));

/// The versions of the three modes, checked alike.
trait Version: Debug + PartialEq {
    fn is_new(&self) -> bool;
    fn follows(&self, before: &Self) -> bool;
}

impl Version for marten::concurrency::NoVersion {
    fn is_new(&self) -> bool {
        true
    }
    fn follows(&self, _: &Self) -> bool {
        true
    }
}

impl Version for Uuid {
    fn is_new(&self) -> bool {
        !self.is_nil()
    }
    fn follows(&self, before: &Self) -> bool {
        self != before && !self.is_nil()
    }
}

impl Version for i64 {
    fn is_new(&self) -> bool {
        *self == 1
    }
    fn follows(&self, before: &Self) -> bool {
        *self == before + 1
    }
}

fn assert_new_version<V: Version>(v: &V) {
    assert!(v.is_new(), "a new row's version is {v:?}");
}

fn assert_overwritten_version<V: Version>(before: &V, after: &V) {
    assert!(
        after.follows(before),
        "overwritten: {before:?} -> {after:?}"
    );
}

fn id_of<D: Sample>(i: i64) -> D::Id {
    D::sample(i, "").id().clone()
}

async fn stored<D: Sample>(store: &DocumentStore, i: i64) -> (D, VersionOf<D>) {
    let mut q = store.query_session();
    let id = id_of::<D>(i);
    let doc: D = ok(q.load(&id).await).unwrap_or_else(|| panic!("document {i} is stored"));
    let meta = ok(q.metadata::<D>(&id).await).expect("metadata");
    (doc, meta.version)
}

async fn count(schema: &marten_testing::TestSchema, table: &str) -> i64 {
    let raw = schema.raw_client().await;
    raw.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// Insert-only, ignore-duplicates and overwrite on one type, then sessions on its rows.
async fn modes_on<D: Sample>(label: &str)
where
    VersionOf<D>: Version + Clone,
{
    let (schema, b) = builder(label);
    let store = ok(b.document::<D>().build().await);
    let table = D::TABLE_NAME;

    // Insert-only, in 4 batches of up to 3.
    let docs: Vec<D> = (0..10).map(|i| D::sample(i, "first")).collect();
    let n = ok(store
        .bulk_insert_with(docs, BulkOptions::new(BulkMode::InsertOnly).batch_size(3))
        .await);
    assert_eq!(n, 10);
    assert_eq!(count(&schema, table).await, 10);
    let mut versions = Vec::new();
    for i in 0..10 {
        let (doc, v) = stored::<D>(&store, i).await;
        assert_eq!(doc, D::sample(i, "first"));
        D::assert_new(&v);
        versions.push(v);
    }

    // Ignore duplicates: 5..10 exist and stay as they are, 10..15 are new.
    let docs: Vec<D> = (5..15).map(|i| D::sample(i, "ignored")).collect();
    let n = ok(store
        .bulk_insert_with(
            docs,
            BulkOptions::new(BulkMode::IgnoreDuplicates).batch_size(4),
        )
        .await);
    assert_eq!(n, 5, "only the new ids are written");
    for i in 5..15 {
        let (doc, v) = stored::<D>(&store, i).await;
        if i < 10 {
            assert_eq!(doc.tag(), "first");
            assert_eq!(v, versions[i as usize]);
        } else {
            assert_eq!(doc.tag(), "ignored");
            D::assert_new(&v);
            versions.push(v);
        }
    }

    // Overwrite: 0..15 exist and are overwritten, 15..20 are new.
    let docs: Vec<D> = (0..20).map(|i| D::sample(i, "over")).collect();
    let n = ok(store
        .bulk_insert_with(docs, BulkOptions::new(BulkMode::Overwrite).batch_size(7))
        .await);
    assert_eq!(n, 20);
    assert_eq!(count(&schema, table).await, 20);
    for i in 0..20 {
        let (doc, v) = stored::<D>(&store, i).await;
        assert_eq!(doc, D::sample(i, "over"));
        if i < 15 {
            D::assert_overwritten(&versions[i as usize], &v);
        } else {
            D::assert_new(&v);
        }
    }

    // Sessions work on the rows: a load and a save pass the version check; a session
    // holding a stale version is rejected (for versioned modes).
    let id = id_of::<D>(3);
    let mut first = store.lightweight_session();
    let mut second = store.lightweight_session();
    let mut a: D = ok(first.load(&id).await).expect("loaded");
    let mut b: D = ok(second.load(&id).await).expect("loaded");
    a.retag("session");
    ok(first.store(a));
    ok(first.save_changes().await);
    b.retag("stale");
    ok(second.store(b));
    let stale = second.save_changes().await;
    if D::VERSIONED {
        match stale {
            Err(Error::Rejected(r)) => {
                assert_eq!(r.len(), 1);
                assert!(matches!(r[0].kind, RejectionKind::VersionMismatch { .. }));
            }
            other => panic!("a stale save after a bulk insert: {other:?}"),
        }
        assert_eq!(stored::<D>(&store, 3).await.0.tag(), "session");
    } else {
        ok(stale);
        assert_eq!(stored::<D>(&store, 3).await.0.tag(), "stale");
    }
}

#[tokio::test]
async fn every_mode_without_concurrency() {
    modes_on::<OffDoc>("bulk_modes_off").await;
}

#[tokio::test]
async fn every_mode_with_optimistic_versions() {
    modes_on::<OptDoc>("bulk_modes_opt").await;
}

#[tokio::test]
async fn every_mode_with_numeric_revisions() {
    modes_on::<NumDoc>("bulk_modes_num").await;
}

#[tokio::test]
async fn insert_only_refuses_an_id_given_twice_before_sending_anything() {
    let (schema, b) = builder("bulk_twice");
    let store = ok(b.document::<OptDoc>().build().await);
    let docs = vec![
        OptDoc::sample(1, "a"),
        OptDoc::sample(2, "a"),
        OptDoc::sample(1, "b"),
    ];
    match store.bulk_insert(docs, BulkMode::InsertOnly).await {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].document_type, "OptDoc");
            assert_eq!(r[0].id, marten::IdKey::Uuid(id_of::<OptDoc>(1)));
            assert_eq!(r[0].kind, RejectionKind::AlreadyExists);
        }
        other => panic!("an id given twice: {other:?}"),
    }
    assert_eq!(count(&schema, "mt_doc_optdoc").await, 0);
}

#[tokio::test]
async fn insert_only_of_a_stored_id_writes_nothing_of_any_batch() {
    let (schema, b) = builder("bulk_taken");
    // One connection: the failed batch's (closed, its answers out of step) is replaced
    // to name the stored id.
    let store = ok(b.pool_size(1).document::<NumDoc>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(NumDoc::sample(7, "before")));
    ok(s.save_changes().await);
    // Its connection goes back to the pool.
    drop(s);
    // Batches of 3: the stored id is in the third batch; the first two were copied.
    let docs: Vec<NumDoc> = (0..12).map(|i| NumDoc::sample(i, "bulk")).collect();
    match store
        .bulk_insert_with(docs, BulkOptions::new(BulkMode::InsertOnly).batch_size(3))
        .await
    {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].document_type, "NumDoc");
            assert_eq!(r[0].id, marten::IdKey::String("doc-7".into()));
            assert_eq!(r[0].kind, RejectionKind::AlreadyExists);
        }
        other => panic!("a stored id: {other:?}"),
    }
    assert_eq!(count(&schema, "mt_doc_numdoc").await, 1);
    let (doc, revision) = stored::<NumDoc>(&store, 7).await;
    assert_eq!((doc.tag.as_str(), revision), ("before", 1));
    // The same documents but the stored one go in.
    let docs: Vec<NumDoc> = (0..12)
        .filter(|i| *i != 7)
        .map(|i| NumDoc::sample(i, "bulk"))
        .collect();
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::InsertOnly).await), 11);
    assert_eq!(count(&schema, "mt_doc_numdoc").await, 12);
}

#[tokio::test]
async fn ids_given_twice_keep_the_first_when_ignoring_and_the_last_when_overwriting() {
    let (_schema, b) = builder("bulk_twice_modes");
    let store = ok(b.document::<NumDoc>().build().await);
    let docs = vec![NumDoc::sample(1, "first"), NumDoc::sample(1, "second")];
    assert_eq!(
        ok(store
            .bulk_insert(docs.clone(), BulkMode::IgnoreDuplicates)
            .await),
        1
    );
    assert_eq!(stored::<NumDoc>(&store, 1).await.0.tag, "first");
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::Overwrite).await), 1);
    let (doc, revision) = stored::<NumDoc>(&store, 1).await;
    assert_eq!((doc.tag.as_str(), revision), ("second", 2));
}

#[tokio::test]
async fn a_unique_field_taken_is_a_typed_error_and_nothing_is_written() {
    let (schema, b) = builder("bulk_unique");
    let store = ok(b.document::<Member>().build().await);
    let member = |id: i64, email: &str| Member {
        id,
        email: email.to_owned(),
    };
    for mode in [
        BulkMode::InsertOnly,
        BulkMode::IgnoreDuplicates,
        BulkMode::Overwrite,
    ] {
        let docs = vec![member(1, "a@x"), member(2, "b@x"), member(3, "a@x")];
        match store.bulk_insert(docs, mode).await {
            Err(Error::UniqueViolation {
                document_type,
                field,
                ..
            }) => {
                assert_eq!((document_type, field.as_str()), ("Member", "email"));
            }
            other => panic!("{mode:?}: a unique field taken twice: {other:?}"),
        }
        assert_eq!(count(&schema, "mt_doc_member").await, 0, "{mode:?}");
    }
}

#[tokio::test]
async fn a_conjoined_type_is_written_for_the_stores_tenant_only() {
    let (schema, b) = builder("bulk_tenant");
    let store = ok(b.document::<Ledger>().build().await);
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let ledgers = |base: i64| -> Vec<Ledger> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Ledger {
                id: *id,
                n: base + i as i64,
            })
            .collect()
    };
    // Without a tenant: refused before anything is sent.
    match store.bulk_insert(ledgers(0), BulkMode::InsertOnly).await {
        Err(Error::TenantRequired { owner }) => assert_eq!(owner, "Ledger"),
        other => panic!("a conjoined type without a tenant: {other:?}"),
    }
    assert_eq!(count(&schema, "mt_doc_ledger").await, 0);

    let acme = ok(store.for_tenant("acme"));
    let globex = ok(store.for_tenant("globex"));
    assert_eq!(
        ok(acme.bulk_insert(ledgers(0), BulkMode::InsertOnly).await),
        5
    );
    // The same ids for another tenant are other rows.
    assert_eq!(
        ok(globex.bulk_insert(ledgers(100), BulkMode::InsertOnly).await),
        5
    );
    assert_eq!(
        ok(globex.bulk_insert(ledgers(200), BulkMode::Overwrite).await),
        5
    );
    assert_eq!(
        ok(acme
            .bulk_insert(ledgers(300), BulkMode::IgnoreDuplicates)
            .await),
        0
    );
    let mut a = ok(store.lightweight_session_for("acme"));
    let mut g = ok(store.lightweight_session_for("globex"));
    for (i, id) in ids.iter().enumerate() {
        let mine: Ledger = ok(a.load(id).await).expect("acme's");
        let theirs: Ledger = ok(g.load(id).await).expect("globex's");
        assert_eq!((mine.n, theirs.n), (i as i64, 200 + i as i64));
        assert_eq!(ok(a.metadata::<Ledger>(id).await).expect("meta").version, 1);
        assert_eq!(ok(g.metadata::<Ledger>(id).await).expect("meta").version, 2);
    }
    let raw = schema.raw_client().await;
    let tenants: Vec<String> = raw
        .query(
            "SELECT DISTINCT tenant_id FROM mt_doc_ledger ORDER BY tenant_id",
            &[],
        )
        .await
        .expect("tenants")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, ["acme", "globex"]);
    // An indexed query of a tenant finds its rows (generated columns were filled).
    let found = ok(a.query::<Ledger>().filter(|f| f.n.ge(3)).to_list().await);
    assert_eq!(found.len(), 2);
    // Insert-only of an id the tenant has stored is rejected, naming it.
    match acme.bulk_insert(ledgers(0), BulkMode::InsertOnly).await {
        Err(Error::Rejected(r)) => assert_eq!(r.len(), 5),
        other => panic!("acme's ids again: {other:?}"),
    }
}

#[tokio::test]
async fn invalid_documents_and_options_are_refused_before_anything_is_sent() {
    let (schema, b) = builder("bulk_invalid");
    // One connection: the one whose copy was aborted serves the next bulk insert.
    let store = ok(b
        .pool_size(1)
        .document::<OptDoc>()
        .document::<NumDoc>()
        .build()
        .await);
    // The bad document is in the third batch: two were copied, then all rolled back.
    for mode in [BulkMode::InsertOnly, BulkMode::Overwrite] {
        let mut docs: Vec<OptDoc> = (0..6).map(|i| OptDoc::sample(i, "fine")).collect();
        docs[4].tag = "nul \0 here".into();
        let options = BulkOptions::new(mode).batch_size(2);
        match store.bulk_insert_with(docs, options).await {
            Err(Error::InvalidInput {
                owner, id, field, ..
            }) => {
                assert_eq!(owner, "OptDoc");
                assert_eq!(id, Some(id_of::<OptDoc>(4).to_string()));
                assert_eq!(field, "tag");
            }
            other => panic!("{mode:?}: a NUL in a document: {other:?}"),
        }
        assert_eq!(count(&schema, "mt_doc_optdoc").await, 0, "{mode:?}");
    }
    let mut empty_id = NumDoc::sample(1, "x");
    empty_id.id = String::new();
    assert!(matches!(
        store
            .bulk_insert(vec![NumDoc::sample(2, "x"), empty_id], BulkMode::Overwrite)
            .await,
        Err(Error::InvalidId { .. })
    ));
    assert!(matches!(
        store
            .bulk_insert_with(
                vec![OptDoc::sample(1, "x")],
                BulkOptions::new(BulkMode::InsertOnly).batch_size(0)
            )
            .await,
        Err(Error::Configuration(_))
    ));
    assert_eq!(count(&schema, "mt_doc_optdoc").await, 0);
    assert_eq!(count(&schema, "mt_doc_numdoc").await, 0);
    let docs: Vec<OptDoc> = (0..6).map(|i| OptDoc::sample(i, "fine")).collect();
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::InsertOnly).await), 6);
    // No documents: nothing to do.
    assert_eq!(
        ok(store
            .bulk_insert(Vec::<OptDoc>::new(), BulkMode::Overwrite)
            .await),
        0
    );
}

#[tokio::test]
async fn nil_uuid_ids_get_new_ones() {
    let (schema, b) = builder("bulk_nil_ids");
    let store = ok(b.document::<OptDoc>().build().await);
    let docs: Vec<OptDoc> = (0..3)
        .map(|i| OptDoc {
            id: Uuid::nil(),
            tag: "nil".into(),
            n: i,
        })
        .collect();
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::InsertOnly).await), 3);
    let raw = schema.raw_client().await;
    let row = raw
        .query_one(
            "SELECT count(DISTINCT id), count(*) FILTER (WHERE id = (data ->> 'id')::uuid) \
             FROM mt_doc_optdoc WHERE id <> '00000000-0000-0000-0000-000000000000'",
            &[],
        )
        .await
        .expect("ids");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 3));
}

#[tokio::test]
async fn one_connection_runs_bulk_inserts_of_several_types_in_turn() {
    // One pooled connection: the staging table of each transaction is a new one, and
    // the statements prepared on the previous one still work.
    let (schema, b) = builder("bulk_one_conn");
    let store = ok(b
        .pool_size(1)
        .document::<OptDoc>()
        .document::<NumDoc>()
        .build()
        .await);
    for round in 0..3 {
        let opt: Vec<OptDoc> = (0..5).map(|i| OptDoc::sample(i, "r")).collect();
        let num: Vec<NumDoc> = (0..5).map(|i| NumDoc::sample(i, "r")).collect();
        assert_eq!(ok(store.bulk_insert(opt, BulkMode::Overwrite).await), 5);
        assert_eq!(
            ok(store.bulk_insert(num, BulkMode::IgnoreDuplicates).await),
            if round == 0 { 5 } else { 0 }
        );
    }
    assert_eq!(stored::<NumDoc>(&store, 4).await.1, 1);
    assert_eq!(count(&schema, "mt_doc_optdoc").await, 5);
}

#[tokio::test]
async fn a_bulk_insert_waiting_past_the_request_timeout_fails_typed_and_writes_nothing() {
    let (schema, b) = named_builder("bulk_timeout");
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(500)))
        .document::<OffDoc>()
        .build()
        .await);
    // Another transaction holds id 3 uncommitted: the COPY waits on it.
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "BEGIN; INSERT INTO mt_doc_offdoc (id, data) \
         VALUES ('00000000-0000-0000-0000-000000000004', '{}')",
    )
    .await
    .expect("holder");
    let docs: Vec<OffDoc> = (0..10).map(|i| OffDoc::sample(i, "t")).collect();
    match store.bulk_insert(docs, BulkMode::InsertOnly).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("a bulk insert stuck on a lock: {other:?}"),
    }
    raw.batch_execute("ROLLBACK").await.expect("rollback");
    assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
    assert_eq!(count(&schema, "mt_doc_offdoc").await, 0);
    // The pool's next user works.
    let docs: Vec<OffDoc> = (0..10).map(|i| OffDoc::sample(i, "t")).collect();
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::InsertOnly).await), 10);
}

#[tokio::test]
async fn cancelled_at_every_await_a_bulk_insert_writes_nothing_and_leaves_the_pool_clean() {
    let (schema, b) = named_builder("bulk_cancel");
    let store = ok(b
        .pool_size(2)
        .document::<NumDoc>()
        .document::<OptDoc>()
        .build()
        .await);
    let raw = schema.raw_client().await;
    let app = schema.name().to_owned();
    for mode in [BulkMode::InsertOnly, BulkMode::Overwrite] {
        let committed_before_drop = std::cell::Cell::new(0);
        let make = |_k: usize| -> Operation<marten::Result<u64>> {
            let store = store.clone();
            Box::pin(async move {
                let docs: Vec<NumDoc> = (0..40).map(|i| NumDoc::sample(i, "c")).collect();
                store
                    .bulk_insert_with(docs, BulkOptions::new(mode).batch_size(10))
                    .await
            })
        };
        let run = cancel_at_every_await(500, make, |k| {
            let (raw, store, app, committed) = (&raw, &store, &app, &committed_before_drop);
            async move {
                assert_clean(raw, app, Duration::from_secs(10)).await;
                let n: i64 = raw
                    .query_one("SELECT count(*) FROM mt_doc_numdoc", &[])
                    .await
                    .expect("count")
                    .get(0);
                // All or nothing: dropped once its COMMIT was sent, the bulk insert may
                // have committed (like any save dropped then); otherwise nothing is there.
                assert!(
                    n == 0 || n == 40,
                    "{mode:?}: {n} rows after cancellation {k}"
                );
                if n == 40 {
                    committed.set(committed.get() + 1);
                    raw.batch_execute("DELETE FROM mt_doc_numdoc")
                        .await
                        .expect("reset");
                }
                // The pool's next user commits.
                let one = vec![OptDoc::sample(k as i64, "after")];
                ok(store.bulk_insert(one, BulkMode::Overwrite).await);
            }
        })
        .await;
        assert!(run.cancelled > 3, "{mode:?}: {} awaits", run.cancelled);
        // Only drops while waiting for the COMMIT's answer can find the rows there.
        let committed = committed_before_drop.get();
        assert!(
            committed < run.cancelled,
            "{mode:?}: committed before {committed} drops"
        );
        assert_eq!(ok(run.output), 40);
        assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
        raw.batch_execute("DELETE FROM mt_doc_numdoc")
            .await
            .expect("reset");
    }
}

#[tokio::test]
async fn bulk_inserts_work_with_unnamed_statements_behind_a_transaction_pooler() {
    // `Pooler::Transaction`: nothing prepared by name, the COPY parsed on each use.
    let (schema, b) = builder("bulk_pooler");
    let store = ok(b
        .pool_size(1)
        .pooler(marten::Pooler::Transaction)
        .direct_url(schema.url())
        .document::<NumDoc>()
        .build()
        .await);
    for mode in [
        BulkMode::InsertOnly,
        BulkMode::IgnoreDuplicates,
        BulkMode::Overwrite,
    ] {
        let docs: Vec<NumDoc> = (0..7).map(|i| NumDoc::sample(i, "p")).collect();
        let n = ok(store
            .bulk_insert_with(docs, BulkOptions::new(mode).batch_size(3))
            .await);
        let expected = if mode == BulkMode::IgnoreDuplicates {
            0
        } else {
            7
        };
        assert_eq!(n, expected, "{mode:?}");
    }
    assert_eq!(count(&schema, "mt_doc_numdoc").await, 7);
    assert_eq!(stored::<NumDoc>(&store, 6).await.1, 2);
    match store
        .bulk_insert(vec![NumDoc::sample(2, "again")], BulkMode::InsertOnly)
        .await
    {
        Err(Error::Rejected(r)) => assert_eq!(r[0].id, marten::IdKey::String("doc-2".into())),
        other => panic!("a stored id behind the pooler: {other:?}"),
    }
}

#[tokio::test]
async fn a_type_not_registered_gets_its_table_on_first_bulk_insert() {
    let (schema, b) = builder("bulk_unregistered");
    let store = ok(b.build().await);
    let docs: Vec<OffDoc> = (0..4).map(|i| OffDoc::sample(i, "late")).collect();
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::Overwrite).await), 4);
    assert_eq!(
        count(&schema, &format!("{}.mt_doc_offdoc", schema.name())).await,
        4
    );
    assert_eq!(stored::<OffDoc>(&store, 3).await.0.tag, "late");
}

/// A document whose `i64` id the store generates (HiLo) when it is zero.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Numbered {
    id: i64,
    n: i64,
}

/// The rows of `mt_doc_numbered`: how many, how many distinct ids, the least id, and how
/// many whose document carries its row's id.
async fn numbered_rows(schema: &marten_testing::TestSchema) -> (i64, i64, i64, i64) {
    let raw = schema.raw_client().await;
    let row = raw
        .query_one(
            "SELECT count(*), count(DISTINCT id), coalesce(min(id), 0), \
             count(*) FILTER (WHERE id = (data ->> 'id')::bigint) FROM mt_doc_numbered",
            &[],
        )
        .await
        .expect("rows");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// A zero `i64` id gets the next id of the store's HiLo allocator, as `store_new` gives
/// it (Marten's `BulkInsert` assigns HiLo ids), in every mode and over several batches:
/// 1000 documents with id 0 are 1000 rows with distinct ids above 0, each document
/// carrying its id. A document with an id keeps it. (Once, every zero id stayed 0: one
/// row written, or `Rejected` in insert-only.)
#[tokio::test]
async fn zero_integer_ids_get_hilo_ids_in_every_mode() {
    let (schema, b) = builder("bulk_hilo_ids");
    let store = ok(b.hilo_block_size(300).document::<Numbered>().build().await);
    let mut total = 0;
    for mode in [
        BulkMode::InsertOnly,
        BulkMode::IgnoreDuplicates,
        BulkMode::Overwrite,
    ] {
        let docs: Vec<Numbered> = (0..1000).map(|n| Numbered { id: 0, n }).collect();
        let options = BulkOptions::new(mode).batch_size(400);
        assert_eq!(
            ok(store.bulk_insert_with(docs, options).await),
            1000,
            "{mode:?}"
        );
        total += 1000;
        let (rows, distinct, least, carried) = numbered_rows(&schema).await;
        assert_eq!((rows, distinct, carried), (total, total, total), "{mode:?}");
        assert!(
            least > 0,
            "{mode:?}: an id that is not a generated one: {least}"
        );
    }
    // Given ids are kept; zero ones are generated next to them.
    let docs = vec![Numbered { id: 0, n: 1 }, Numbered { id: -7, n: 2 }];
    assert_eq!(ok(store.bulk_insert(docs, BulkMode::InsertOnly).await), 2);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Numbered>(&-7).await).map(|d| d.n), Some(2));
    // The allocator goes on above every id it handed out.
    let raw = schema.raw_client().await;
    let highest: i64 = raw
        .query_one("SELECT max(id) FROM mt_doc_numbered", &[])
        .await
        .expect("max")
        .get(0);
    assert!(ok(store.next_id::<Numbered>().await) > highest);
}

/// How many of this test's connections (named after its schema) wait for a lock.
async fn lock_waiters(raw: &tokio_postgres::Client, app: &str) -> i64 {
    raw.query_one(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = $1 AND wait_event_type = 'Lock'",
        &[&app],
    )
    .await
    .expect("waiters")
    .get(0)
}

/// Two bulk inserts of the same ids, one in ascending and one in descending order, both
/// held up by a transaction on the middle row until each waits for a lock, then let go:
/// rows are written in id order, so one waits for the other instead of deadlocking, in
/// every mode. (Once rows were written in the order given: the two locked from opposite
/// ends, met in the middle, and one failed with `Conflict { Deadlock }`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_inserts_of_the_same_ids_in_opposite_orders_do_not_deadlock() {
    let (schema, b) = named_builder("bulk_id_order");
    let store = ok(b.document::<Numbered>().build().await);
    let raw = schema.raw_client().await;
    // Another connection watches: within the held transaction `pg_stat_activity` would
    // not change.
    let watch = schema.raw_client().await;
    let up: Vec<Numbered> = (1..=200).map(|n| Numbered { id: n, n }).collect();
    let down: Vec<Numbered> = up.iter().rev().cloned().collect();
    for round in 0..2 {
        for mode in [
            BulkMode::Overwrite,
            BulkMode::IgnoreDuplicates,
            BulkMode::InsertOnly,
        ] {
            raw.batch_execute("DELETE FROM mt_doc_numbered")
                .await
                .expect("empty");
            // Overwrite meets stored rows (a row lock held on id 100); the others new
            // ones (id 100 inserted and not committed).
            if mode == BulkMode::Overwrite {
                ok(store.bulk_insert(up.clone(), BulkMode::InsertOnly).await);
                raw.batch_execute("BEGIN; SELECT 1 FROM mt_doc_numbered WHERE id = 100 FOR UPDATE")
                    .await
                    .expect("hold a row");
            } else {
                raw.batch_execute(
                    "BEGIN; INSERT INTO mt_doc_numbered (id, data) VALUES (100, '{\"id\": 100, \"n\": 0}')",
                )
                .await
                .expect("hold an id");
            }
            let (a, b) = (store.clone(), store.clone());
            let (ups, downs) = (up.clone(), down.clone());
            let first = tokio::spawn(async move { a.bulk_insert(ups, mode).await });
            let second = tokio::spawn(async move { b.bulk_insert(downs, mode).await });
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while lock_waiters(&watch, schema.name()).await < 2 {
                if std::time::Instant::now() >= deadline {
                    let rows = watch
                        .query(
                            "SELECT application_name, state, coalesce(wait_event_type, ''), query \
                             FROM pg_stat_activity WHERE datname = current_database()",
                            &[],
                        )
                        .await
                        .expect("activity");
                    let seen: Vec<(String, String, String, String)> = rows
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                        .collect();
                    panic!("round {round}, {mode:?}: both bulk inserts wait for a lock: {seen:#?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let end = if mode == BulkMode::Overwrite {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            raw.batch_execute(end).await.expect("let go");
            let results = [
                first.await.expect("first task"),
                second.await.expect("second task"),
            ];
            for result in &results {
                match (mode, result) {
                    (_, Ok(_)) => {}
                    // Both insert the same new ids: the one that waited finds them taken.
                    (BulkMode::InsertOnly, Err(Error::Rejected(_))) => {}
                    (_, Err(e)) => panic!("round {round}, {mode:?}: {e} ({e:?})"),
                }
            }
            let written: u64 = results.iter().map(|r| *r.as_ref().unwrap_or(&0)).sum();
            let expected = if mode == BulkMode::Overwrite {
                400
            } else {
                200
            };
            assert_eq!(written, expected, "round {round}, {mode:?}");
            assert_eq!(count(&schema, "mt_doc_numbered").await, 200);
        }
    }
}

//! Multi-tenancy scenarios ported from Marten's tests (JasperFx/marten: MultiTenancyTests,
//! DocumentDbTests/MultiTenancy, tenancy bugs of DocumentDbTests, LinqTests, CoreTests and
//! EventSourcingTests): the behaviour is carried over, asserted against PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::{QuerySpec, RejectionKind, Tenancy};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Note {
    id: i64,
    text: String,
    total: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(optimistic)]
struct Account {
    id: Uuid,
    #[document(unique)]
    email: String,
    balance: i64,
}

/// Reference data: single-tenant, shared by every tenant.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Country {
    id: String,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Payment {
    id: i64,
    note: i64,
    country: String,
    cents: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete, tenancy = "conjoined")]
struct Item {
    id: i64,
    number: i64,
    name: String,
}

#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    amount: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct Purse {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Purse {
    fn apply(&mut self, e: &Deposited) {
        self.total += e.amount;
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct Vault {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Vault {
    fn apply(&mut self, e: &Deposited) {
        self.total += e.amount;
    }
}

async fn doc_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Note>()
        .document::<Account>()
        .document::<Country>()
        .document::<Payment>()
        .document::<Item>()
        .build()
        .await);
    (schema, store)
}

fn note(id: i64, text: &str, total: i64) -> Note {
    Note {
        id,
        text: text.into(),
        total,
    }
}

fn account(id: Uuid, email: &str, balance: i64) -> Account {
    Account {
        id,
        email: email.into(),
        balance,
    }
}

fn texts(v: &[Note]) -> Vec<String> {
    v.iter().map(|n| n.text.clone()).collect()
}

/// Marten's tenant ids are case sensitive by default (`TenantIdStyle.CaseSensitive`) and
/// keep hyphens and other characters as given (CoreTests `Bug_4924_hyphenated_tenant_id_
/// sequence_name`, DocumentDbTests `conjoined_multi_tenancy.will_not_cross_the_streams`):
/// "Red", "red" and "RED" are three tenants, each with its own document of the same id.
#[tokio::test]
async fn tenant_ids_differing_by_case_or_with_unusual_characters_are_distinct_tenants() {
    let (schema, store) = doc_store("mts_tenant_case").await;
    let long = "t".repeat(128);
    let tenants = [
        "Red",
        "red",
        "RED",
        "tenant-a",
        "a b",
        " a b",
        "x@y",
        "Mandant-ü",
        "o'brien",
        long.as_str(),
    ];
    for (i, t) in tenants.iter().enumerate() {
        let mut s = ok(store.lightweight_session_for(*t));
        ok(s.store(note(1, t, i as i64)));
        ok(s.save_changes().await);
    }
    for (i, t) in tenants.iter().enumerate() {
        let mut q = ok(store.query_session_for(*t));
        let mine = ok(q.load::<Note>(&1).await).expect("the tenant's own");
        assert_eq!((mine.text.as_str(), mine.total), (*t, i as i64));
        assert_eq!(ok(q.query::<Note>().count().await), 1, "{t}");
        assert_eq!(ok(q.query::<Note>().sum(|f| f.total).await), Some(i as i64));
    }
    // A tenant that differs only by case from stored ones has nothing.
    let mut q = ok(store.query_session_for("rED"));
    assert_eq!(ok(q.load::<Note>(&1).await), None);
    // A delete in "red" leaves "Red" and "RED".
    let mut s = ok(store.lightweight_session_for("red"));
    ok(s.delete::<Note>(&1));
    ok(s.save_changes().await);
    for (t, present) in [("Red", true), ("red", false), ("RED", true)] {
        let mut q = ok(store.query_session_for(t));
        assert_eq!(ok(q.load::<Note>(&1).await).is_some(), present, "{t}");
    }
    let raw = schema.raw_client().await;
    let n: i64 = raw
        .query_one("SELECT count(DISTINCT tenant_id) FROM mt_doc_note", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, tenants.len() as i64 - 1);
    // One byte over the limit is refused.
    let too_long = "t".repeat(129);
    assert!(matches!(
        store.lightweight_session_for(too_long.as_str()),
        Err(Error::InvalidTenant { .. })
    ));
}

/// DocumentDbTests `conjoined_multi_tenancy.cannot_load_by_many_id_across_tenants_async`,
/// `query_with_batch` and `can_add_same_primary_key_to_multiple_tenant`: two tenants with
/// overlapping ids; every read of each (load_many, `is_one_of` on the id, counts, page
/// totals, select, sum/min/max, batches) sees its own rows only.
#[tokio::test]
async fn overlapping_ids_are_read_per_tenant_by_every_query_shape() {
    let (_schema, store) = doc_store("mts_overlap").await;
    let mut a = ok(store.lightweight_session_for("a"));
    for id in 1..=6 {
        ok(a.store(note(id, &format!("a{id}"), id * 10)));
    }
    ok(a.save_changes().await);
    let mut b = ok(store.lightweight_session_for("b"));
    for id in 4..=9 {
        ok(b.store(note(id, &format!("b{id}"), id * 100)));
    }
    ok(b.save_changes().await);

    let all: Vec<i64> = (1..=10).collect();
    let mut qa = ok(store.query_session_for("a"));
    let mut qb = ok(store.query_session_for("b"));
    let mut la = texts(&ok(qa.load_many::<Note>(&all).await));
    la.sort();
    assert_eq!(la, ["a1", "a2", "a3", "a4", "a5", "a6"]);
    let mut lb = texts(&ok(qb.load_many::<Note>(&all).await));
    lb.sort();
    assert_eq!(lb, ["b4", "b5", "b6", "b7", "b8", "b9"]);

    let probe = [3, 4, 5, 10];
    let found = ok(qa
        .query::<Note>()
        .filter(|f| f.id.is_one_of(probe))
        .order_by(|f| f.id.asc())
        .to_list()
        .await);
    assert_eq!(texts(&found), ["a3", "a4", "a5"]);
    let found = ok(qb
        .query::<Note>()
        .filter(|f| f.id.is_one_of(probe))
        .order_by(|f| f.id.asc())
        .to_list()
        .await);
    assert_eq!(texts(&found), ["b4", "b5"]);
    assert_eq!(
        ok(qa
            .query::<Note>()
            .filter(|f| f.id.is_one_of(probe))
            .count()
            .await),
        3
    );
    assert_eq!(
        ok(qb.query::<Note>().filter(|f| f.id.ge(5)).count().await),
        5
    );

    let page = ok(qa
        .query::<Note>()
        .order_by(|f| f.id.asc())
        .to_page(1, 4)
        .await);
    assert_eq!(
        (page.total, texts(&page.items)),
        (6, vec!["a5".into(), "a6".into()])
    );
    let page = ok(qb
        .query::<Note>()
        .filter(|f| f.id.is_one_of([1, 2, 4, 9]))
        .order_by(|f| f.id.desc())
        .to_page(0, 1)
        .await);
    assert_eq!((page.total, texts(&page.items)), (2, vec!["b9".into()]));

    let sel: Vec<(i64, i64)> = ok(qb
        .query::<Note>()
        .filter(|f| f.id.le(5))
        .order_by(|f| f.id.asc())
        .select(|f| (f.id, f.total))
        .to_list()
        .await);
    assert_eq!(sel, [(4, 400), (5, 500)]);

    assert_eq!(ok(qa.query::<Note>().sum(|f| f.total).await), Some(210));
    assert_eq!(ok(qb.query::<Note>().sum(|f| f.total).await), Some(3900));
    assert_eq!(ok(qa.query::<Note>().min(|f| f.total).await), Some(10));
    assert_eq!(ok(qb.query::<Note>().min(|f| f.total).await), Some(400));
    assert_eq!(ok(qa.query::<Note>().max(|f| f.id).await), Some(6));
    assert_eq!(ok(qb.query::<Note>().max(|f| f.id).await), Some(9));
    let mut qc = ok(store.query_session_for("c"));
    assert_eq!(ok(qc.query::<Note>().max(|f| f.id).await), None);
    assert_eq!(ok(qc.query::<Note>().count().await), 0);

    for (q, want_list, want_count, want_sum) in [
        (&mut qa, vec!["a4", "a5", "a6"], 6, Some(150)),
        (&mut qb, vec!["b4", "b5", "b6"], 6, Some(1500)),
    ] {
        let mut batch = q.batch();
        let listed = batch.list(
            QuerySpec::<Note>::new()
                .filter(|f| f.id.is_one_of([4, 5, 6]))
                .order_by(|f| f.id.asc()),
        );
        let counted = batch.count(QuerySpec::<Note>::new());
        let summed = batch.aggregate(
            QuerySpec::<Note>::new().filter(|f| f.id.is_one_of([4, 5, 6])),
            |f| f.total.sum(),
        );
        let results = ok(batch.execute().await);
        assert_eq!(texts(&ok(results.get(listed))), want_list);
        assert_eq!(ok(results.get(counted)), want_count);
        assert_eq!(ok(results.get(summed)), want_sum);
    }
}

/// CoreTests `Bug_2602_include_with_conjoined_tenancy`, LinqTests
/// `Bug_3065_include_query_with_conjoined_tenancy` and `Bug_2618_Include_with_AnyTenant`:
/// a tenant's query including a conjoined related document gets its own tenant's, and one
/// including a single-tenant related document gets the shared one.
#[tokio::test]
async fn includes_of_conjoined_and_global_related_documents_from_a_tenant() {
    let (_schema, store) = doc_store("mts_include").await;
    let mut g = store.lightweight_session();
    ok(g.store(Country {
        id: "nl".into(),
        name: "Netherlands".into(),
    }));
    ok(g.save_changes().await);
    for (tenant, notes) in [("a", vec![1, 2]), ("b", vec![2, 3])] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for id in &notes {
            ok(s.store(note(*id, &format!("{tenant}{id}"), 0)));
        }
        // Payments 1..=3 refer to notes 1..=3: each tenant lacks one of them.
        for id in 1..=3 {
            ok(s.store(Payment {
                id,
                note: id,
                country: "nl".into(),
                cents: id * 100,
            }));
        }
        ok(s.save_changes().await);
    }
    for (tenant, want) in [("a", ["a1", "a2"]), ("b", ["b2", "b3"])] {
        let mut q = ok(store.query_session_for(tenant));
        let found = ok(q
            .query::<Payment>()
            .include::<Note>(|f| f.note)
            .to_list()
            .await);
        assert_eq!(found.documents.len(), 3, "{tenant}");
        let got: BTreeSet<String> = found.included.values().map(|n| n.text.clone()).collect();
        assert_eq!(
            got,
            want.iter().map(|s| s.to_string()).collect(),
            "{tenant}"
        );
        let found = ok(q
            .query::<Payment>()
            .filter(|f| f.cents.ge(200))
            .include::<Country>(|f| f.country)
            .to_list()
            .await);
        assert_eq!(found.documents.len(), 2, "{tenant}");
        let names: Vec<String> = found.included.values().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["Netherlands"], "{tenant}");
    }
}

/// DocumentDbTests `mixed_single_and_conjoined_tenancy.load_single_tenanted_document_from_
/// tenanted_session`, `conjoined_multi_tenancy.can_query_on_multi_tenanted_and_non_
/// tenanted_documents` and `store_document_marked_with_single_tenant_attribute`: a
/// single-tenant type written from a tenant's session, beside a conjoined one in the same
/// unit of work, is the one row every tenant and the untenanted session see.
#[tokio::test]
async fn a_global_type_beside_a_conjoined_one_is_shared_by_every_tenant() {
    let (_schema, store) = doc_store("mts_mixed").await;
    let mut red = ok(store.lightweight_session_for("red"));
    ok(red.store(Country {
        id: "de".into(),
        name: "Germany".into(),
    }));
    ok(red.store(note(1, "red", 1)));
    ok(red.save_changes().await);

    let mut blue = ok(store.lightweight_session_for("blue"));
    assert_eq!(ok(blue.load::<Note>(&1).await), None);
    assert_eq!(
        ok(blue.load::<Country>(&"de".into()).await).map(|c| c.name),
        Some("Germany".into())
    );
    assert_eq!(ok(blue.query::<Country>().count().await), 1);
    // blue rewrites the shared row: red and the untenanted session see blue's write.
    ok(blue.store(Country {
        id: "de".into(),
        name: "Deutschland".into(),
    }));
    ok(blue.store(note(1, "blue", 2)));
    ok(blue.save_changes().await);
    let mut nobody = store.query_session();
    assert_eq!(
        ok(nobody.load::<Country>(&"de".into()).await).map(|c| c.name),
        Some("Deutschland".into())
    );
    let mut qr = ok(store.query_session_for("red"));
    assert_eq!(
        ok(qr
            .query::<Country>()
            .filter(|f| f.name.eq("Deutschland"))
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(qr.load::<Note>(&1).await).map(|n| n.text),
        Some("red".into())
    );
    let raw_rows: i64 = ok(nobody.query::<Country>().count().await);
    assert_eq!(raw_rows, 1, "one shared row, not one per tenant");
    // red's delete of the shared row removes it for everyone; the notes stay.
    ok(red.delete::<Country>(&"de".into()));
    ok(red.save_changes().await);
    let mut qb = ok(store.query_session_for("blue"));
    assert_eq!(ok(qb.load::<Country>(&"de".into()).await), None);
    assert_eq!(
        ok(qb.load::<Note>(&1).await).map(|n| n.text),
        Some("blue".into())
    );
}

/// DocumentDbTests `Bug_4801_identity_map_cross_tenant_load.optimistic_concurrency_version_
/// tracking_is_tenant_scoped` and `conjoined_multi_tenancy.composite_key_correctly_used_for_
/// upsert_concurrency_check`: the version a tracked session of tenant A holds for an id is
/// A's, however often tenant B writes the same id, and a real concurrent write in A is
/// still caught.
#[tokio::test]
async fn the_tracked_version_of_a_tenants_document_is_its_own() {
    let (_schema, store) = doc_store("mts_versions").await;
    let id = Uuid::new_v4();
    for (t, bal) in [("A", 1), ("B", 100)] {
        let mut s = ok(store.lightweight_session_for(t));
        ok(s.store(account(id, "same@x", bal)));
        ok(s.save_changes().await);
    }
    let mut a = ok(store.dirty_tracked_session_for("A"));
    if let Some(acc) = ok(a.load::<Account>(&id).await) {
        acc.balance = 2;
    }
    let mut ia = ok(store.identity_session_for("A"));
    let loaded = ok(ia.load::<Account>(&id).await).expect("A's");
    assert_eq!(loaded.balance, 1);
    // B writes its document of the same id twice.
    for bal in [101, 102] {
        let mut s = ok(store.lightweight_session_for("B"));
        ok(s.store(account(id, "same@x", bal)));
        ok(s.save_changes().await);
    }
    ok(a.save_changes().await);
    let mut qa = ok(store.query_session_for("A"));
    let mut qb = ok(store.query_session_for("B"));
    assert_eq!(
        ok(qa.load::<Account>(&id).await).map(|x| x.balance),
        Some(2)
    );
    assert_eq!(
        ok(qb.load::<Account>(&id).await).map(|x| x.balance),
        Some(102)
    );
    // The identity session of A read A's version before the dirty-tracked save: its
    // store is now stale and rejected.
    ok(ia.store(account(id, "same@x", 3)));
    match ia.save_changes().await {
        Err(Error::Rejected(r)) => assert!(
            matches!(r[0].kind, RejectionKind::VersionMismatch { .. }),
            "{r:?}"
        ),
        other => panic!("expected a concurrency rejection, got {other:?}"),
    }
    assert_eq!(
        ok(qa.load::<Account>(&id).await).map(|x| x.balance),
        Some(2)
    );
    assert_eq!(
        ok(qb.load::<Account>(&id).await).map(|x| x.balance),
        Some(102)
    );
}

/// DocumentDbTests `UniqueIndexMultiTenantTests` and `conjoined_multi_tenancy.bulk_insert_
/// respects_tenancy`: bulk inserts of the same unique values for several tenants succeed;
/// a duplicate within one tenant is refused, by store, by bulk insert and by an update
/// taking another document's value, while the other tenants keep theirs.
#[tokio::test]
async fn unique_values_are_unique_per_tenant_under_bulk_insert_and_update() {
    let (_schema, store) = doc_store("mts_unique").await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let accounts = |base: i64| -> Vec<Account> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| account(*id, &format!("u{i}@x"), base + i as i64))
            .collect()
    };
    for (t, base) in [("a", 0), ("b", 10)] {
        let ts = ok(store.for_tenant(t));
        assert_eq!(
            ok(ts.bulk_insert(accounts(base), BulkMode::InsertOnly).await),
            3
        );
    }
    // A new id with a taken value in tenant a: refused by bulk insert and by store.
    let a_store = ok(store.for_tenant("a"));
    let dup = vec![account(Uuid::new_v4(), "u0@x", 9)];
    assert!(a_store
        .bulk_insert(dup.clone(), BulkMode::InsertOnly)
        .await
        .is_err());
    let mut a = ok(store.lightweight_session_for("a"));
    ok(a.store(dup[0].clone()));
    match a.save_changes().await {
        Err(Error::UniqueViolation { document_type, .. }) => assert_eq!(document_type, "Account"),
        other => panic!("expected a unique violation, got {other:?}"),
    }
    // The same in a third tenant is fine.
    let mut c = ok(store.lightweight_session_for("c"));
    ok(c.store(dup[0].clone()));
    ok(c.save_changes().await);
    // b moves u1's address to u0's: refused in b, while a is untouched.
    let mut b = ok(store.lightweight_session_for("b"));
    let mut taken = ok(b.load::<Account>(&ids[1]).await).expect("b's u1");
    taken.email = "u0@x".into();
    ok(b.store(taken));
    assert!(matches!(
        b.save_changes().await,
        Err(Error::UniqueViolation { .. })
    ));
    // After b frees u0 (deleting its document), b may take it.
    let mut b = ok(store.lightweight_session_for("b"));
    ok(b.delete::<Account>(&ids[0]));
    ok(b.save_changes().await);
    let mut b = ok(store.lightweight_session_for("b"));
    let mut moved = ok(b.load::<Account>(&ids[1]).await).expect("b's u1");
    moved.email = "u0@x".into();
    ok(b.store(moved));
    ok(b.save_changes().await);
    let mut qa = ok(store.query_session_for("a"));
    let emails: Vec<String> = ok(qa
        .query::<Account>()
        .order_by(|f| f.balance.asc())
        .select(|f| f.email)
        .to_list()
        .await);
    assert_eq!(emails, ["u0@x", "u1@x", "u2@x"]);
    let mut qb = ok(store.query_session_for("b"));
    let emails: Vec<(String, i64)> = ok(qb
        .query::<Account>()
        .order_by(|f| f.balance.asc())
        .select(|f| (f.email, f.balance))
        .to_list()
        .await);
    assert_eq!(emails, [("u0@x".into(), 11), ("u2@x".into(), 12)]);
}

/// PatchingTests `multi_tenancy.patching_respects_tenancy_too_2` with tenants that differ
/// only by case: a patch by id and a patch by filter in "Green" change Green's documents
/// only, never "green"'s of the same ids.
#[tokio::test]
async fn patches_in_a_tenant_leave_a_tenant_differing_by_case_alone() {
    let (_schema, store) = doc_store("mts_patch_case").await;
    for t in ["Green", "green"] {
        let mut s = ok(store.lightweight_session_for(t));
        for id in 1..=3 {
            ok(s.store(note(id, t, id)));
        }
        ok(s.save_changes().await);
    }
    let mut g = ok(store.lightweight_session_for("Green"));
    ok(g.patch::<Note>(&1).increment(|f| f.total, 10).queue());
    ok(g.patch_where::<Note>(Note::fields().id.ge(2))
        .set(|f| f.text, "patched")
        .queue());
    ok(g.save_changes().await);
    let mut upper = ok(store.query_session_for("Green"));
    let mut lower = ok(store.query_session_for("green"));
    let u = ok(upper
        .query::<Note>()
        .order_by(|f| f.id.asc())
        .to_list()
        .await);
    assert_eq!(
        u,
        [
            note(1, "Green", 11),
            note(2, "patched", 2),
            note(3, "patched", 3)
        ]
    );
    let l = ok(lower
        .query::<Note>()
        .order_by(|f| f.id.asc())
        .to_list()
        .await);
    assert_eq!(
        l,
        [
            note(1, "green", 1),
            note(2, "green", 2),
            note(3, "green", 3)
        ]
    );
}

fn wait_options() -> DaemonOptions {
    DaemonOptions {
        retries: 0,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

async fn deposit(store: &DocumentStore, tenant: &str, stream: Uuid, amounts: &[i64]) {
    let mut s = ok(store.lightweight_session_for(tenant));
    let events: Vec<Deposited> = amounts.iter().map(|&amount| Deposited { amount }).collect();
    ok(s.events().append(stream, events));
    ok(s.save_changes().await);
}

/// EventSourcingTests `multi_tenancy_and_event_capture.try_to_append_across_tenants_with_
/// tenancy_style_conjoined` and `Projections/MultiTenants/ConjoinedTenancyProjectionsTests`
/// with tenants that differ by case: "Green" and "green" append to the same stream id
/// without conflict; the inline projection writes each under the event's tenant;
/// aggregate_stream, fetch_for_writing and event queries are per tenant; archiving in one
/// leaves the other's stream.
#[tokio::test]
async fn conjoined_streams_of_tenants_differing_by_case_stay_apart() {
    let (_schema, b) = builder("mts_events_case");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Purse>(Lifecycle::Inline)
        .build()
        .await);
    let stream = Uuid::now_v7();
    deposit(&store, "Green", stream, &[1, 2]).await;
    deposit(&store, "green", stream, &[10, 20, 30]).await;
    for (t, total, version) in [("Green", 3, 2), ("green", 60, 3)] {
        let mut s = ok(store.lightweight_session_for(t));
        let purse = ok(s.load::<Purse>(&stream).await).expect("inline purse");
        assert_eq!((purse.total, purse.version), (total, version), "{t}");
        let agg = ok(s.events().aggregate_stream::<Purse>(stream).await).expect("agg");
        assert_eq!((agg.total, agg.version), (total, version), "{t}");
        assert_eq!(
            ok(s.events().query::<Deposited>().count().await),
            version,
            "{t}"
        );
        let read = ok(s.events().fetch_stream(stream).await);
        assert!(
            read.iter()
                .all(|e| e.tenant.as_ref().map(TenantId::as_str) == Some(t)),
            "{t}"
        );
    }
    // fetch_for_writing in "Green" sees Green's version and appends after it.
    let mut s = ok(store.lightweight_session_for("Green"));
    let mut w = ok(s.events().fetch_for_writing::<Purse>(stream).await);
    assert_eq!(w.version(), 2);
    ok(w.append([Deposited { amount: 4 }]));
    ok(s.save_changes().await);
    let mut q = ok(store.query_session_for("Green"));
    assert_eq!(ok(q.load::<Purse>(&stream).await).map(|p| p.total), Some(7));
    let mut q = ok(store.query_session_for("green"));
    assert_eq!(
        ok(q.load::<Purse>(&stream).await).map(|p| p.total),
        Some(60)
    );
    // Archiving "green"'s stream leaves "Green"'s open.
    let mut s = ok(store.lightweight_session_for("green"));
    ok(s.events().archive_stream(stream));
    ok(s.save_changes().await);
    deposit(&store, "Green", stream, &[100]).await;
    let mut s = ok(store.lightweight_session_for("green"));
    ok(s.events().append(stream, [Deposited { amount: 1 }]));
    let err = s
        .save_changes()
        .await
        .expect_err("green's stream is archived");
    match err {
        Error::Rejected(r) => assert_eq!(r[0].kind, RejectionKind::StreamArchived),
        other => panic!("expected StreamArchived, got {other:?}"),
    }
    let mut q = ok(store.lightweight_session_for("Green"));
    assert_eq!(
        ok(q.load::<Purse>(&stream).await).map(|p| p.total),
        Some(107)
    );
    assert_eq!(ok(q.events().fetch_stream(stream).await).len(), 4);
    let mut q = ok(store.lightweight_session_for("green"));
    assert!(ok(q.events().fetch_stream(stream).await).is_empty());
}

/// DaemonTests `Bugs/Bug_2073_tenancy_problems` and CoreTests `Bug_4924_hyphenated_tenant_
/// id_sequence_name`, with tenant ids that differ by case or carry the daemon's own
/// separators ("x@y", "v:2"): the async daemon projects each tenant's stream of the same
/// id into that tenant's document, with one progression row per tenant.
#[tokio::test]
async fn the_daemon_keeps_tenants_with_unusual_ids_apart() {
    let (schema, b) = builder("mts_daemon_ids");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Vault>(Lifecycle::Async)
        .build()
        .await);
    let stream = Uuid::now_v7();
    let tenants = [
        ("Red", 1),
        ("red", 20),
        ("x@y", 300),
        ("v:2", 4000),
        ("tenant-a", 50000),
    ];
    for (t, amount) in tenants {
        deposit(&store, t, stream, &[amount, amount]).await;
    }
    let daemon = Daemon::start(&store, wait_options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    for (t, amount) in tenants {
        loop {
            let mut q = ok(store.query_session_for(t));
            let got = ok(q.load::<Vault>(&stream).await).map(|v| (v.total, v.version));
            if got == Some((2 * amount, 2)) {
                break;
            }
            assert!(Instant::now() < deadline, "{t}: {got:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // More events in one tenant move that tenant's document only.
    deposit(&store, "red", stream, &[5]).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut q = ok(store.query_session_for("red"));
        if ok(q.load::<Vault>(&stream).await).map(|v| v.total) == Some(45) {
            break;
        }
        assert!(Instant::now() < deadline, "red caught up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (t, amount) in tenants.iter().filter(|(t, _)| *t != "red") {
        let mut q = ok(store.query_session_for(*t));
        assert_eq!(
            ok(q.load::<Vault>(&stream).await).map(|v| v.total),
            Some(2 * amount),
            "{t}"
        );
    }
    ok(daemon.stop().await);
    let raw = schema.raw_client().await;
    let rows = raw
        .query(
            "SELECT tenant_id FROM mt_event_progression WHERE tenant_id IS NOT NULL \
             ORDER BY tenant_id COLLATE \"C\"",
            &[],
        )
        .await
        .expect("progression rows");
    let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut want: Vec<String> = tenants.iter().map(|(t, _)| t.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

fn item(id: i64, number: i64, name: &str) -> Item {
    Item {
        id,
        number,
        name: name.into(),
    }
}

/// LinqTests `Bug_854_multiple_or_expressions_softdelete_tenancy_filters_appended_
/// incorrectly`: a query with several OR'ed conditions on a soft-deleted conjoined type
/// keeps both the tenant's match and the not-deleted match around the whole OR, in a list,
/// a count, a page total and an aggregate.
#[tokio::test]
async fn or_conditions_keep_the_tenant_and_soft_delete_filters() {
    let (_schema, store) = doc_store("mts_or_soft").await;
    for t in ["a", "b"] {
        let mut s = ok(store.lightweight_session_for(t));
        for (id, number) in [(1, 1), (2, 2), (3, 1), (4, 3)] {
            ok(s.store(item(id, number, &format!("{t}{id}"))));
        }
        ok(s.save_changes().await);
    }
    // a deletes item 3 (number 1); b deletes item 2 (number 2).
    let mut a = ok(store.lightweight_session_for("a"));
    ok(a.delete::<Item>(&3));
    ok(a.save_changes().await);
    let mut b = ok(store.lightweight_session_for("b"));
    ok(b.delete::<Item>(&2));
    ok(b.save_changes().await);
    let or = || Item::fields().number.eq(1).or(Item::fields().number.eq(2));
    for (t, want) in [("a", vec!["a1", "a2"]), ("b", vec!["b1", "b3"])] {
        let mut q = ok(store.query_session_for(t));
        let found: Vec<String> = ok(q
            .query::<Item>()
            .filter(|_| or())
            .order_by(|f| f.id.asc())
            .select(|f| f.name)
            .to_list()
            .await);
        assert_eq!(found, want, "{t}");
        assert_eq!(
            ok(q.query::<Item>().filter(|_| or()).count().await),
            2,
            "{t}"
        );
        let page = ok(q
            .query::<Item>()
            .filter(|_| or())
            .order_by(|f| f.id.asc())
            .to_page(0, 1)
            .await);
        assert_eq!(page.total, 2, "{t}");
        let sum = ok(q.query::<Item>().filter(|_| or()).sum(|f| f.id).await);
        assert_eq!(sum, Some(if t == "a" { 3 } else { 4 }), "{t}");
        let deleted = ok(q
            .query::<Item>()
            .filter(|_| or())
            .include_deleted()
            .count()
            .await);
        assert_eq!(deleted, 3, "{t}");
    }
}

/// DocumentDbTests `Bug_4801_identity_map_cross_tenant_load.delete_via_for_tenant_ejects_
/// only_that_tenants_cache` and `load_across_tenants_via_for_tenant_identity_only` (with a
/// session per tenant, as marten-rs has no `ForTenant` view): identity sessions of two
/// tenants hold their own document of one id; a delete in one ejects only its own.
#[tokio::test]
async fn identity_sessions_of_two_tenants_hold_and_eject_their_own_documents() {
    let (_schema, store) = doc_store("mts_identity").await;
    for t in ["A", "B"] {
        let mut s = ok(store.lightweight_session_for(t));
        ok(s.store(note(7, &format!("tenant-{t}"), 0)));
        ok(s.save_changes().await);
    }
    let mut ia = ok(store.identity_session_for("A"));
    let mut ib = ok(store.identity_session_for("B"));
    assert_eq!(
        ok(ia.load::<Note>(&7).await).map(|n| n.text),
        Some("tenant-A".into())
    );
    assert_eq!(
        ok(ib.load::<Note>(&7).await).map(|n| n.text),
        Some("tenant-B".into())
    );
    // A stores a pending replacement: B's map and B's row are untouched.
    ok(ia.store(note(7, "tenant-A2", 1)));
    assert_eq!(
        ok(ia.load::<Note>(&7).await).map(|n| n.text),
        Some("tenant-A2".into())
    );
    assert_eq!(
        ok(ib.load::<Note>(&7).await).map(|n| n.text),
        Some("tenant-B".into())
    );
    ok(ia.save_changes().await);
    ok(ia.delete::<Note>(&7));
    ok(ia.save_changes().await);
    assert_eq!(ok(ia.load::<Note>(&7).await), None);
    assert_eq!(
        ok(ib.load::<Note>(&7).await).map(|n| n.text),
        Some("tenant-B".into())
    );
    let mut fresh_b = ok(store.query_session_for("B"));
    assert_eq!(
        ok(fresh_b.load::<Note>(&7).await).map(|n| n.text),
        Some("tenant-B".into())
    );
    let mut fresh_a = ok(store.query_session_for("A"));
    assert_eq!(ok(fresh_a.load::<Note>(&7).await), None);
    // A pending store in B is not visible to a fresh A session after B saves either.
    ok(ib.store(note(8, "only-B", 0)));
    ok(ib.save_changes().await);
    assert_eq!(ok(fresh_a.load_many::<Note>(&[7, 8]).await), vec![]);
    assert_eq!(ok(fresh_b.load_many::<Note>(&[8]).await).len(), 1);
}

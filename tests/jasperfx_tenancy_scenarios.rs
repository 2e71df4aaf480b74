//! Conjoined tenancy scenarios ported from the JasperFx.Events compliance suites
//! (JasperFx/jasperfx: `ConjoinedEventTenancyCompliance` and
//! `DocumentConjoinedTenancyCompliance`). Every scenario reuses one id in two tenants and
//! checks both directions: what a tenant sees, and what it must not. Asserted against
//! PostgreSQL, each test on a schema of its own.

mod common;

use std::collections::BTreeSet;

use common::{builder, ok};
use marten::prelude::*;
use marten::{RejectionKind, Tenancy};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

const ACME: &str = "acme";
const GLOBEX: &str = "globex";
const INITECH: &str = "initech";

// ---------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------

/// A conjoined document with a uuid id; `color` names the tenant that wrote it.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Widget {
    id: Uuid,
    name: String,
    color: String,
    weight: i64,
}

/// A conjoined document with a text id.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Gadget {
    id: String,
    kind: String,
    weight: i64,
}

/// A conjoined document under optimistic concurrency.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(optimistic)]
struct Shipment {
    id: Uuid,
    supplier: String,
    status: String,
}

/// A conjoined document under numeric revisions.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(numeric)]
struct LedgerEntry {
    id: Uuid,
    customer: String,
    amount: i64,
}

async fn doc_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Widget>()
        .document::<Gadget>()
        .document::<Shipment>()
        .document::<LedgerEntry>()
        .build()
        .await);
    (schema, store)
}

fn widget(id: Uuid, name: &str, color: &str, weight: i64) -> Widget {
    Widget {
        id,
        name: name.into(),
        color: color.into(),
        weight,
    }
}

fn gadget(id: &str, kind: &str, weight: i64) -> Gadget {
    Gadget {
        id: id.into(),
        kind: kind.into(),
        weight,
    }
}

/// Stores `docs` in `tenant`'s scope, one save.
async fn persist<D>(store: &DocumentStore, tenant: &str, docs: impl IntoIterator<Item = D>)
where
    D: marten::PgDocument,
{
    let mut s = ok(store.lightweight_session_for(tenant));
    for d in docs {
        ok(s.store(d));
    }
    ok(s.save_changes().await);
}

/// One widget id written by acme and by globex (each with its own name in `color`), plus
/// a second widget in acme only: acme holds 2 rows, globex 1 (the heaviest).
async fn arrange_shared_widget(store: &DocumentStore) -> Uuid {
    let shared = Uuid::new_v4();
    persist(
        store,
        ACME,
        [
            widget(shared, "Shared", ACME, 1),
            widget(Uuid::new_v4(), "OnlyA", ACME, 2),
        ],
    )
    .await;
    persist(store, GLOBEX, [widget(shared, "Shared", GLOBEX, 10)]).await;
    shared
}

fn colors(ws: &[Widget]) -> BTreeSet<String> {
    ws.iter().map(|w| w.color.clone()).collect()
}

/// Lists, counts, existence checks, filters, selections, ordering with skip/take and
/// `first` with no filter of their own all stay inside the session's tenant, whichever
/// tenant asks (2 rows for acme, 1 for globex).
#[tokio::test]
async fn every_read_shape_without_a_filter_is_scoped_to_the_session_tenant() {
    let (_schema, store) = doc_store("jxt_doc_read_shapes").await;
    arrange_shared_widget(&store).await;

    let mut a = ok(store.query_session_for(ACME));
    let all = ok(a.query::<Widget>().to_list().await);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(colors(&all), BTreeSet::from([ACME.to_owned()]));
    assert_eq!(ok(a.query::<Widget>().count().await), 2);
    assert!(ok(a.query::<Widget>().exists().await));
    assert_eq!(
        ok(a.query::<Widget>()
            .filter(|f| f.weight.gt(0))
            .to_list()
            .await)
        .len(),
        2
    );
    let selected: BTreeSet<String> = ok(a.query::<Widget>().select(|f| f.color).to_list().await)
        .into_iter()
        .collect();
    assert_eq!(selected, BTreeSet::from([ACME.to_owned()]));
    assert_eq!(ok(a.query::<Widget>().count_distinct(|f| f.color).await), 1);
    let ordered = ok(a
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .take(10)
        .to_list()
        .await);
    assert_eq!(
        ordered.iter().map(|w| w.weight).collect::<Vec<_>>(),
        [1, 2],
        "{ordered:?}"
    );
    let skipped = ok(a
        .query::<Widget>()
        .order_by(|f| f.weight.desc())
        .skip(1)
        .to_list()
        .await);
    assert_eq!(
        skipped
            .iter()
            .map(|w| (w.color.as_str(), w.weight))
            .collect::<Vec<_>>(),
        [(ACME, 1)]
    );
    let first = ok(a
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .first()
        .await)
    .expect("acme's lightest widget");
    assert_eq!((first.color.as_str(), first.weight), (ACME, 1));

    let mut b = ok(store.query_session_for(GLOBEX));
    let all = ok(b.query::<Widget>().to_list().await);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].color, GLOBEX);
    assert_eq!(ok(b.query::<Widget>().count().await), 1);
    assert!(ok(b.query::<Widget>().exists().await));
    let selected: BTreeSet<String> = ok(b.query::<Widget>().select(|f| f.color).to_list().await)
        .into_iter()
        .collect();
    assert_eq!(selected, BTreeSet::from([GLOBEX.to_owned()]));
    let first = ok(b
        .query::<Widget>()
        .order_by(|f| f.weight.asc())
        .first()
        .await)
    .expect("globex's widget");
    assert_eq!(first.weight, 10);
}

/// A tenant that stored nothing reads nothing through any shape, even with two other
/// tenants holding rows (the existence check included).
#[tokio::test]
async fn a_tenant_holding_nothing_reads_nothing_through_every_shape() {
    let (_schema, store) = doc_store("jxt_doc_empty_tenant").await;
    arrange_shared_widget(&store).await;

    let mut c = ok(store.query_session_for(INITECH));
    assert!(ok(c.query::<Widget>().to_list().await).is_empty());
    assert_eq!(ok(c.query::<Widget>().count().await), 0);
    assert!(!ok(c.query::<Widget>().exists().await));
    assert!(ok(c
        .query::<Widget>()
        .filter(|f| f.weight.gt(0))
        .to_list()
        .await)
    .is_empty());
    assert_eq!(
        ok(c.query::<Widget>()
            .order_by(|f| f.weight.asc())
            .first()
            .await),
        None
    );
}

/// Loading an id both tenants hold returns the session tenant's document, for a uuid id
/// and a text id, from sessions of both tenants opened side by side.
#[tokio::test]
async fn load_of_a_shared_id_returns_the_session_tenants_document() {
    let (_schema, store) = doc_store("jxt_doc_load_shared").await;
    let shared = arrange_shared_widget(&store).await;
    let key = "shared-gadget".to_owned();
    persist(&store, ACME, [gadget(&key, ACME, 1)]).await;
    persist(&store, GLOBEX, [gadget(&key, GLOBEX, 10)]).await;

    // Identity sessions too: a map keyed on the id alone would hand one tenant the
    // other's instance.
    let mut a = ok(store.identity_session_for(ACME));
    let mut b = ok(store.identity_session_for(GLOBEX));
    for _ in 0..2 {
        assert_eq!(
            ok(a.load::<Widget>(&shared).await).map(|w| w.color),
            Some(ACME.to_owned())
        );
        assert_eq!(
            ok(a.load::<Gadget>(&key).await).map(|g| g.kind),
            Some(ACME.to_owned())
        );
        assert_eq!(
            ok(b.load::<Widget>(&shared).await).map(|w| w.color),
            Some(GLOBEX.to_owned())
        );
        assert_eq!(
            ok(b.load::<Gadget>(&key).await).map(|g| g.kind),
            Some(GLOBEX.to_owned())
        );
    }
    let mut qa = ok(store.query_session_for(ACME));
    let mut qb = ok(store.query_session_for(GLOBEX));
    assert_eq!(
        ok(qa.load::<Widget>(&shared).await).map(|w| w.weight),
        Some(1)
    );
    assert_eq!(
        ok(qb.load::<Widget>(&shared).await).map(|w| w.weight),
        Some(10)
    );
}

/// A tenant that never stored an id loads nothing for it, not another tenant's document.
#[tokio::test]
async fn load_of_another_tenants_id_returns_none() {
    let (_schema, store) = doc_store("jxt_doc_load_other").await;
    let shared = arrange_shared_widget(&store).await;
    let mut c = ok(store.query_session_for(INITECH));
    assert_eq!(ok(c.load::<Widget>(&shared).await), None);
    assert!(ok(c.load_many::<Widget>(&[shared]).await).is_empty());
}

/// The same id written by two tenants is two documents: the second write does not
/// overwrite the first.
#[tokio::test]
async fn the_same_document_id_lives_independently_in_two_tenants() {
    let (_schema, store) = doc_store("jxt_doc_same_id").await;
    let shared = Uuid::new_v4();
    persist(&store, ACME, [widget(shared, "A", ACME, 1)]).await;
    persist(&store, GLOBEX, [widget(shared, "B", GLOBEX, 10)]).await;

    let mut a = ok(store.query_session_for(ACME));
    let mine = ok(a.load::<Widget>(&shared).await).expect("acme's widget");
    assert_eq!((mine.name.as_str(), mine.weight), ("A", 1));
    assert_eq!(ok(a.query::<Widget>().count().await), 1);

    let mut b = ok(store.query_session_for(GLOBEX));
    let theirs = ok(b.load::<Widget>(&shared).await).expect("globex's widget");
    assert_eq!((theirs.name.as_str(), theirs.weight), ("B", 10));
    assert_eq!(ok(b.query::<Widget>().count().await), 1);
}

/// A later store of the shared id in one tenant updates that tenant's row only: no third
/// row, and the other tenant's document keeps its values.
#[tokio::test]
async fn updating_in_one_tenant_leaves_the_other_tenants_document_alone() {
    let (_schema, store) = doc_store("jxt_doc_update").await;
    let shared = arrange_shared_widget(&store).await;
    persist(&store, ACME, [widget(shared, "Revised", ACME, 99)]).await;

    let mut a = ok(store.query_session_for(ACME));
    let mine = ok(a.load::<Widget>(&shared).await).expect("acme's widget");
    assert_eq!((mine.name.as_str(), mine.weight), ("Revised", 99));
    assert_eq!(ok(a.query::<Widget>().count().await), 2);

    let mut b = ok(store.query_session_for(GLOBEX));
    let theirs = ok(b.load::<Widget>(&shared).await).expect("globex's widget");
    assert_eq!(
        (theirs.name.as_str(), theirs.color.as_str(), theirs.weight),
        ("Shared", GLOBEX, 10)
    );
    assert_eq!(ok(b.query::<Widget>().count().await), 1);
}

/// Deleting by id, deleting a loaded document (by the id it carries) and deleting by a
/// filter that matches in both tenants each remove the session tenant's rows only.
#[tokio::test]
async fn deletes_are_scoped_to_the_session_tenant_for_a_shared_id() {
    let (_schema, store) = doc_store("jxt_doc_deletes").await;
    let shared = arrange_shared_widget(&store).await;

    let mut a = ok(store.lightweight_session_for(ACME));
    ok(a.delete::<Widget>(&shared));
    ok(a.save_changes().await);
    let mut qa = ok(store.query_session_for(ACME));
    let mut qb = ok(store.query_session_for(GLOBEX));
    assert_eq!(ok(qa.load::<Widget>(&shared).await), None);
    assert_eq!(
        ok(qb.load::<Widget>(&shared).await).map(|w| w.color),
        Some(GLOBEX.to_owned())
    );

    // A document loaded in globex's scope, deleted through the id it carries.
    let key = "shared-gadget".to_owned();
    persist(&store, ACME, [gadget(&key, ACME, 1)]).await;
    persist(&store, GLOBEX, [gadget(&key, GLOBEX, 10)]).await;
    let mut b = ok(store.lightweight_session_for(GLOBEX));
    let theirs = ok(b.load::<Gadget>(&key).await).expect("globex's gadget");
    ok(b.delete::<Gadget>(&theirs.id));
    ok(b.save_changes().await);
    assert_eq!(ok(qb.load::<Gadget>(&key).await), None);
    assert_eq!(
        ok(qa.load::<Gadget>(&key).await).map(|g| g.kind),
        Some(ACME.to_owned())
    );

    // A filter matching every widget of every tenant.
    let mut b = ok(store.lightweight_session_for(GLOBEX));
    ok(b.delete_where(Widget::fields().weight.gt(0)));
    ok(b.save_changes().await);
    assert_eq!(ok(qb.query::<Widget>().count().await), 0);
    let left = ok(qa.query::<Widget>().to_list().await);
    assert_eq!(
        left.iter()
            .map(|w| (w.name.as_str(), w.color.as_str()))
            .collect::<Vec<_>>(),
        [("OnlyA", ACME)]
    );
}

/// Optimistic concurrency is checked per (tenant, id): globex's write succeeds while
/// acme's row of the same id is at another version, and a really stale write in acme is
/// still refused (with the version acme's row holds).
#[tokio::test]
async fn optimistic_concurrency_is_scoped_to_the_tenant_for_a_shared_id() {
    let (_schema, store) = doc_store("jxt_doc_optimistic").await;
    let shared = Uuid::new_v4();
    let shipment = |supplier: &str, status: &str| Shipment {
        id: shared,
        supplier: supplier.into(),
        status: status.into(),
    };
    persist(&store, ACME, [shipment(ACME, "new")]).await;
    persist(&store, GLOBEX, [shipment(GLOBEX, "new")]).await;

    // Move acme's version on; keep the version acme held before.
    let mut a = ok(store.lightweight_session_for(ACME));
    let mut mine = ok(a.load::<Shipment>(&shared).await).expect("acme's shipment");
    let stale_version = a
        .version_of::<Shipment>(&shared)
        .expect("loaded: version known");
    mine.status = "advanced".into();
    ok(a.store(mine.clone()));
    ok(a.save_changes().await);
    let mut qa = ok(store.query_session_for(ACME));
    let current = ok(qa.metadata::<Shipment>(&shared).await)
        .expect("acme's metadata")
        .version;
    assert_ne!(current, stale_version, "acme's version moved");

    // Globex's load-and-store is in conflict with nothing.
    let mut b = ok(store.lightweight_session_for(GLOBEX));
    let mut theirs = ok(b.load::<Shipment>(&shared).await).expect("globex's shipment");
    theirs.status = "shipped".into();
    ok(b.store(theirs));
    ok(b.save_changes().await);
    let mut qb = ok(store.query_session_for(GLOBEX));
    assert_eq!(
        ok(qb.load::<Shipment>(&shared).await).map(|s| s.status),
        Some("shipped".into())
    );

    // Acme's write at the version it held before its own update is stale.
    let mut stale = ok(store.lightweight_session_for(ACME));
    mine.status = "stale".into();
    ok(stale.store_with_version(mine, stale_version));
    match stale.save_changes().await {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(
                matches!(&r[0].kind, RejectionKind::VersionMismatch { actual: Some(a), .. }
                    if *a == current.to_string()),
                "{r:?}"
            );
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(
        ok(qa.load::<Shipment>(&shared).await).map(|s| s.status),
        Some("advanced".into())
    );
    assert_eq!(
        ok(qb.load::<Shipment>(&shared).await).map(|s| s.status),
        Some("shipped".into())
    );
}

/// Numeric revisions count per (tenant, id): acme's row at revision 3 does not make
/// globex's first write of the same id revision 4.
#[tokio::test]
async fn numeric_revisions_are_counted_per_tenant_for_a_shared_id() {
    let (_schema, store) = doc_store("jxt_doc_numeric").await;
    let shared = Uuid::new_v4();
    let entry = |customer: &str, amount: i64| LedgerEntry {
        id: shared,
        customer: customer.into(),
        amount,
    };
    persist(&store, ACME, [entry(ACME, 1)]).await;
    for _ in 0..2 {
        let mut a = ok(store.lightweight_session_for(ACME));
        let mine = ok(a.load::<LedgerEntry>(&shared).await).expect("acme's entry");
        ok(a.store(mine));
        ok(a.save_changes().await);
    }
    persist(&store, GLOBEX, [entry(GLOBEX, 100)]).await;

    let mut b = ok(store.query_session_for(GLOBEX));
    assert_eq!(
        ok(b.load::<LedgerEntry>(&shared).await).map(|e| e.amount),
        Some(100)
    );
    assert_eq!(
        ok(b.metadata::<LedgerEntry>(&shared).await).map(|m| m.version),
        Some(1)
    );
    let mut a = ok(store.query_session_for(ACME));
    assert_eq!(
        ok(a.load::<LedgerEntry>(&shared).await).map(|e| e.amount),
        Some(1)
    );
    assert_eq!(
        ok(a.metadata::<LedgerEntry>(&shared).await).map(|m| m.version),
        Some(3)
    );

    // The guard reads the tenant's own revision: 1 is stale for acme though globex's
    // row of the id is at 1, and current for globex though acme's is at 3.
    let mut stale = ok(store.lightweight_session_for(ACME));
    ok(stale.store_with_version(entry(ACME, 2), 1));
    match stale.save_changes().await {
        Err(Error::Rejected(r)) => assert!(
            matches!(&r[0].kind,
                RejectionKind::VersionMismatch { actual: Some(v), .. } if v == "3"),
            "{r:?}"
        ),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    let mut current = ok(store.lightweight_session_for(GLOBEX));
    ok(current.store_with_version(entry(GLOBEX, 200), 1));
    ok(current.save_changes().await);
    assert_eq!(
        ok(b.load::<LedgerEntry>(&shared).await).map(|e| e.amount),
        Some(200)
    );
    assert_eq!(
        ok(b.metadata::<LedgerEntry>(&shared).await).map(|m| m.version),
        Some(2)
    );
    assert_eq!(
        ok(a.metadata::<LedgerEntry>(&shared).await).map(|m| m.version),
        Some(3)
    );
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ConsignmentBooked {
    destination: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ConsignmentScanned {
    location: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ConsignmentDelivered {}

/// A live aggregate of a consignment stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Consignment {
    id: Uuid,
    version: i64,
    destination: String,
    scans: i64,
    delivered: bool,
}

#[marten::apply]
impl Consignment {
    fn create(e: &ConsignmentBooked) -> Self {
        Consignment {
            id: Uuid::nil(),
            version: 0,
            destination: e.destination.clone(),
            scans: 0,
            delivered: false,
        }
    }
    fn apply(&mut self, _e: &ConsignmentScanned) {
        self.scans += 1;
    }
    fn apply(&mut self, _e: &ConsignmentDelivered) {
        self.delivered = true;
    }
}

async fn event_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<ConsignmentBooked>()
        .event::<ConsignmentScanned>()
        .event::<ConsignmentDelivered>()
        .projection::<Consignment>(Lifecycle::Live)
        .build()
        .await);
    (schema, store)
}

fn booked(to: &str) -> PendingEvent {
    ConsignmentBooked {
        destination: to.into(),
    }
    .into()
}

fn scanned(at: &str) -> PendingEvent {
    ConsignmentScanned {
        location: at.into(),
    }
    .into()
}

/// Starts `stream` in `tenant`'s scope with `events`.
async fn start(store: &DocumentStore, tenant: &str, stream: Uuid, events: Vec<PendingEvent>) {
    let mut s = ok(store.lightweight_session_for(tenant));
    ok(s.events().start_stream_of("consignment", stream, events));
    ok(s.save_changes().await);
}

async fn fetch(store: &DocumentStore, tenant: &str, stream: Uuid) -> Vec<EventEnvelope> {
    let mut s = ok(store.lightweight_session_for(tenant));
    ok(s.events().fetch_stream(stream).await)
}

async fn version(store: &DocumentStore, tenant: &str, stream: Uuid) -> Option<i64> {
    let mut s = ok(store.lightweight_session_for(tenant));
    ok(s.events().fetch_stream_state(stream).await).map(|st| st.version)
}

/// Events one tenant appended are invisible to another reading the same stream id.
#[tokio::test]
async fn events_appended_for_one_tenant_are_not_visible_to_another() {
    let (_schema, store) = event_store("jxt_ev_invisible").await;
    let stream = Uuid::now_v7();
    start(
        &store,
        ACME,
        stream,
        vec![booked("Boston"), scanned("Depot")],
    )
    .await;
    assert!(fetch(&store, GLOBEX, stream).await.is_empty());
    assert_eq!(fetch(&store, ACME, stream).await.len(), 2);
}

/// A tenant reads its own events back, in order and of their types.
#[tokio::test]
async fn a_tenant_sees_its_own_events() {
    let (_schema, store) = event_store("jxt_ev_own").await;
    let stream = Uuid::now_v7();
    start(
        &store,
        ACME,
        stream,
        vec![booked("Boston"), scanned("Depot")],
    )
    .await;
    let events = fetch(&store, ACME, stream).await;
    assert_eq!(events.len(), 2);
    assert!(events[0].is::<ConsignmentBooked>(), "{events:?}");
    assert!(events[1].is::<ConsignmentScanned>(), "{events:?}");
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
}

/// One stream id started by two tenants is two streams, each with its own events.
#[tokio::test]
async fn the_same_stream_id_lives_independently_in_two_tenants() {
    let (_schema, store) = event_store("jxt_ev_same_id").await;
    let stream = Uuid::now_v7();
    start(
        &store,
        ACME,
        stream,
        vec![booked("Boston"), scanned("Depot")],
    )
    .await;
    start(&store, GLOBEX, stream, vec![booked("Lisbon")]).await;

    let a = fetch(&store, ACME, stream).await;
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[0].data_as::<ConsignmentBooked>()
            .map(|e| e.destination.as_str()),
        Some("Boston")
    );
    let b = fetch(&store, GLOBEX, stream).await;
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].data_as::<ConsignmentBooked>()
            .map(|e| e.destination.as_str()),
        Some("Lisbon")
    );
}

/// The state of a stream id is the tenant's own: each tenant reads its own version.
#[tokio::test]
async fn stream_state_is_scoped_to_the_tenant() {
    let (_schema, store) = event_store("jxt_ev_state").await;
    let stream = Uuid::now_v7();
    start(
        &store,
        ACME,
        stream,
        vec![booked("Boston"), scanned("Depot"), scanned("Hub")],
    )
    .await;
    start(&store, GLOBEX, stream, vec![booked("Lisbon")]).await;
    assert_eq!(version(&store, ACME, stream).await, Some(3));
    assert_eq!(version(&store, GLOBEX, stream).await, Some(1));
}

/// A tenant without the stream gets no state for it, though another tenant has it.
#[tokio::test]
async fn stream_state_is_none_for_a_tenant_that_has_no_such_stream() {
    let (_schema, store) = event_store("jxt_ev_state_none").await;
    let stream = Uuid::now_v7();
    start(&store, ACME, stream, vec![booked("Boston")]).await;
    assert_eq!(version(&store, ACME, stream).await, Some(1));
    assert_eq!(version(&store, GLOBEX, stream).await, None);
}

/// Every event read back carries the tenant that appended it.
#[tokio::test]
async fn every_event_is_stamped_with_its_tenant() {
    let (_schema, store) = event_store("jxt_ev_stamped").await;
    let stream = Uuid::now_v7();
    start(
        &store,
        ACME,
        stream,
        vec![booked("Boston"), scanned("Depot")],
    )
    .await;
    start(&store, GLOBEX, stream, vec![booked("Lisbon")]).await;
    for tenant in [ACME, GLOBEX] {
        let events = fetch(&store, tenant, stream).await;
        assert!(!events.is_empty());
        for e in &events {
            assert_eq!(
                e.tenant.as_ref().map(TenantId::as_str),
                Some(tenant),
                "{e:?}"
            );
        }
    }
}

/// A live fold of a stream id folds the session tenant's events only.
#[tokio::test]
async fn live_aggregation_is_scoped_to_the_tenant() {
    let (_schema, store) = event_store("jxt_ev_live").await;
    let stream = Uuid::now_v7();
    start(
        &store,
        ACME,
        stream,
        vec![
            booked("Boston"),
            scanned("Depot"),
            scanned("Hub"),
            ConsignmentDelivered {}.into(),
        ],
    )
    .await;
    start(&store, GLOBEX, stream, vec![booked("Lisbon")]).await;

    let mut a = ok(store.lightweight_session_for(ACME));
    let mine = ok(a.events().aggregate_stream::<Consignment>(stream).await).expect("acme's");
    assert_eq!(
        (
            mine.destination.as_str(),
            mine.scans,
            mine.delivered,
            mine.version
        ),
        ("Boston", 2, true, 4)
    );
    let mut b = ok(store.lightweight_session_for(GLOBEX));
    let theirs = ok(b.events().aggregate_stream::<Consignment>(stream).await).expect("globex's");
    assert_eq!(
        (
            theirs.destination.as_str(),
            theirs.scans,
            theirs.delivered,
            theirs.version
        ),
        ("Lisbon", 0, false, 1)
    );
    let mut c = ok(store.lightweight_session_for(INITECH));
    assert_eq!(
        ok(c.events().aggregate_stream::<Consignment>(stream).await),
        None
    );
}

/// Appending to a tenant's stream moves that tenant's version only, never the version
/// of another tenant's stream of the same id.
#[tokio::test]
async fn appending_to_one_tenant_does_not_move_another_tenants_version() {
    let (_schema, store) = event_store("jxt_ev_append").await;
    let stream = Uuid::now_v7();
    start(&store, ACME, stream, vec![booked("Boston")]).await;
    start(&store, GLOBEX, stream, vec![booked("Lisbon")]).await;

    let mut a = ok(store.lightweight_session_for(ACME));
    ok(a.events()
        .append(stream, [scanned("Depot"), scanned("Hub")]));
    ok(a.save_changes().await);

    assert_eq!(version(&store, ACME, stream).await, Some(3));
    assert_eq!(version(&store, GLOBEX, stream).await, Some(1));
    assert_eq!(fetch(&store, GLOBEX, stream).await.len(), 1);
}

//! Async projections of conjoined events, per tenant (scenarios carried over from
//! Marten's and JasperFx.Events' multi-tenancy compliance suites):
//!
//! - a multi-stream projection and an event projection whose events, in two tenants, go
//!   to the same document id keep a document per tenant holding only its own events;
//!   `rebuild_tenant` of one tenant rebuilds its documents as its events make them and
//!   leaves the other tenant's document and progression rows as they were;
//! - a per-tenant rebuild drops that tenant's stray documents (of the projected type,
//!   made by no event) and keeps the other tenant's, the same id included;
//! - a `TenantedStore` with two tenants on one connection string: conjoined documents
//!   stay apart, single-tenant documents are shared, `start_daemons` projects both
//!   tenants, and `TenantedStore::rebuild` of one tenant leaves the other's rows alone;
//! - an event projection writing a single-tenant type, each of whose documents one
//!   tenant's event writes, runs per tenant once it says so
//!   (`shared_documents_per_tenant`); inline, it needs not say so.
//!
//! The other tenant's rows are read behind marten's back, every column
//! (`mt_last_modified`, `owner_epoch`) included, so a rebuild that had deleted and
//! replayed them shows even once the daemon has caught up again.

mod common;

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::daemon::{rebuild_tenant, Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::session::DocumentBackend;
use marten::testing::TestSchema;
use marten::{DocumentStoreBuilder, EventProjection, Postgres, ProjectedOps, Tenancy};
use serde::{Deserialize, Serialize};

/// How long any wait of these tests may take before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// A task, on its own stream, pinned to a board.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Pinned {
    board: Uuid,
    title: String,
}

/// The multi-stream projection: a board with the titles pinned to it, in event order.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(numeric)]
struct Board {
    id: Uuid,
    titles: Vec<String>,
}

#[marten::apply]
impl Board {
    fn identities(e: &Pinned) -> Vec<Uuid> {
        vec![e.board]
    }
    fn create(e: &Pinned) -> Self {
        Board {
            id: Uuid::nil(),
            titles: vec![e.title.clone()],
        }
    }
    fn apply(&mut self, e: &Pinned) {
        self.titles.push(e.title.clone());
    }
}

/// An event the event projection turns into a document of the id it names.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Stamped {
    stamp: Uuid,
    text: String,
}

/// The event projection's document: the text of the last `Stamped` event naming its id,
/// and the tenant of that event's envelope.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Stamp {
    id: Uuid,
    text: String,
    tenant: Option<String>,
}

/// The event projection writing a `Stamp` per `Stamped` event.
struct Stamps;

impl EventProjection for Stamps {
    fn name(&self) -> &'static str {
        "Stamps"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(s) = event.data_as::<Stamped>() {
            ops.store(Stamp {
                id: s.stamp,
                text: s.text.clone(),
                tenant: event.tenant.as_ref().map(ToString::to_string),
            });
        }
        Ok(())
    }
}

/// An amount paid into an account's stream.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    amount: i64,
}

/// The aggregate projection: an account's total, per tenant.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct Account {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Account {
    fn apply(&mut self, e: &Deposited) {
        self.total += e.amount;
    }
}

/// A conjoined document stored by hand (kept apart per tenant).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Note {
    id: Uuid,
    text: String,
}

/// A single-tenant document (reference data every tenant of a database shares).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Country {
    id: String,
    name: String,
}

/// Daemon options for tests: stop on a poison event, poll every 20 ms.
fn options() -> DaemonOptions {
    DaemonOptions {
        poison: PoisonPolicy::Stop,
        retries: 0,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

/// A store of conjoined events on a schema of its own, with what `register` adds.
async fn store_with(
    label: &str,
    register: impl FnOnce(DocumentStoreBuilder) -> DocumentStoreBuilder,
) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(register(b.pool_size(4).events_tenancy(Tenancy::Conjoined))
        .build()
        .await);
    (schema, store)
}

/// Appends `event` to `stream` as `tenant`, in a save of its own.
async fn append<E: marten::Event>(store: &DocumentStore, tenant: &str, stream: Uuid, event: E) {
    let mut s = ok(store.lightweight_session_for(tenant));
    ok(s.events().append(stream, [event]));
    ok(s.save_changes().await);
}

/// A `Pinned` event.
fn pinned(board: Uuid, title: &str) -> Pinned {
    Pinned {
        board,
        title: title.into(),
    }
}

/// A `Stamped` event.
fn stamped(stamp: Uuid, text: &str) -> Stamped {
    Stamped {
        stamp,
        text: text.into(),
    }
}

/// The board a tenant's `titles` make.
fn board(id: Uuid, titles: &[&str]) -> Board {
    Board {
        id,
        titles: titles.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// The stamp a tenant's `Stamped { stamp: id, text }` makes.
fn stamp(id: Uuid, text: &str, tenant: &str) -> Stamp {
    Stamp {
        id,
        text: text.into(),
        tenant: Some(tenant.into()),
    }
}

/// Loads `tenant`'s document `id` of type `D`.
async fn load<D: Document>(store: &DocumentStore, tenant: &str, id: &D::Id) -> Option<D>
where
    Postgres: DocumentBackend<D>,
{
    let mut s = ok(store.lightweight_session_for(tenant));
    ok(s.load::<D>(id).await)
}

/// Polls `read` every 20 ms until it returns `expected`; fails after [`WAIT`] with the
/// last value read.
async fn wait_for_value<T, F, Fut>(what: &str, expected: &T, mut read: F)
where
    T: PartialEq + Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let got = read().await;
        if &got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?} after {WAIT:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every row of `table` whose `tenant_id` is `tenant`, each column included, as JSON
/// text in a stable order (the raw rows a rebuild of another tenant must not touch).
async fn raw_rows(raw: &tokio_postgres::Client, table: &str, tenant: &str) -> Vec<String> {
    // The table names are this file's constants, never input.
    let sql =
        format!("SELECT row_to_json(t)::text AS r FROM {table} t WHERE tenant_id = $1 ORDER BY r");
    match raw.query(&sql, &[&tenant]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => panic!("reading {table} of {tenant}: {e}"),
    }
}

/// The raw rows of `tenant` in the document `tables` and in the progression table.
async fn tenant_rows(
    raw: &tokio_postgres::Client,
    tables: &[&str],
    tenant: &str,
) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for table in tables.iter().chain(&["mt_event_progression"]) {
        out.push(((*table).to_owned(), raw_rows(raw, table, tenant).await));
    }
    out
}

/// Runs `sql` behind marten's back (to corrupt or delete a projected document).
async fn execute(raw: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = raw.batch_execute(sql).await {
        panic!("{sql}: {e}");
    }
}

#[tokio::test]
async fn async_conjoined_multi_stream_projection_rebuilds_one_tenant_alone() {
    let (schema, store) = store_with("tproj_multi", |b| {
        b.multi_stream_projection::<Board>(Lifecycle::Async)
    })
    .await;
    // The same stream ids and the same board id in both tenants.
    let (task_a, task_b, id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    append(&store, "red", task_a, pinned(id, "red 1")).await;
    append(&store, "blue", task_a, pinned(id, "blue 1")).await;
    append(&store, "red", task_b, pinned(id, "red 2")).await;
    append(&store, "red", task_a, pinned(id, "red 3")).await;
    let red = board(id, &["red 1", "red 2", "red 3"]);
    let blue = board(id, &["blue 1"]);

    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(load::<Board>(&store, "red", &id).await, Some(red.clone()));
    assert_eq!(load::<Board>(&store, "blue", &id).await, Some(blue.clone()));

    // Break red's document behind marten's back: only a replay puts it right.
    let raw = schema.raw_client().await;
    execute(
        &raw,
        "UPDATE mt_doc_board SET data = jsonb_set(data, '{titles}', '[\"broken\"]') \
         WHERE tenant_id = 'red'",
    )
    .await;
    assert_eq!(
        load::<Board>(&store, "red", &id).await,
        Some(board(id, &["broken"]))
    );
    let blue_before = tenant_rows(&raw, &["mt_doc_board"], "blue").await;
    let red_progress = raw_rows(&raw, "mt_event_progression", "red").await;

    ok(rebuild_tenant(&store, "Board", "red").await);
    wait_for_value("red's rebuilt board", &Some(red), || {
        load::<Board>(&store, "red", &id)
    })
    .await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_ne!(
        raw_rows(&raw, "mt_event_progression", "red").await,
        red_progress,
        "red's slot was reset and replayed"
    );
    assert_eq!(
        tenant_rows(&raw, &["mt_doc_board"], "blue").await,
        blue_before,
        "blue's rows are untouched by red's rebuild"
    );
    assert_eq!(load::<Board>(&store, "blue", &id).await, Some(blue));
    ok(daemon.stop().await);
}

#[tokio::test]
async fn async_conjoined_event_projection_rebuilds_one_tenant_alone() {
    let (schema, store) = store_with("tproj_event", |b| {
        b.event_projection(Stamps, Lifecycle::Async)
    })
    .await;
    // The same stream id and the same document ids in both tenants.
    let (stream, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    append(&store, "red", stream, stamped(a, "red a1")).await;
    append(&store, "blue", stream, stamped(a, "blue a")).await;
    append(&store, "red", stream, stamped(b, "red b")).await;
    append(&store, "red", stream, stamped(a, "red a2")).await;
    append(&store, "blue", stream, stamped(b, "blue b")).await;

    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    let expect = |tenant: &str| match tenant {
        "red" => [stamp(a, "red a2", "red"), stamp(b, "red b", "red")],
        _ => [stamp(a, "blue a", "blue"), stamp(b, "blue b", "blue")],
    };
    let both = |tenant: &'static str| {
        let store = store.clone();
        async move {
            [
                load::<Stamp>(&store, tenant, &a).await,
                load::<Stamp>(&store, tenant, &b).await,
            ]
        }
    };
    for tenant in ["red", "blue"] {
        assert_eq!(both(tenant).await, expect(tenant).map(Some), "{tenant}");
    }

    // Break one of red's documents and delete the other: only a replay puts them back.
    let raw = schema.raw_client().await;
    execute(
        &raw,
        &format!(
            "UPDATE mt_doc_stamp SET data = jsonb_set(data, '{{text}}', '\"broken\"') \
             WHERE tenant_id = 'red' AND id = '{a}'; \
             DELETE FROM mt_doc_stamp WHERE tenant_id = 'red' AND id = '{b}'"
        ),
    )
    .await;
    assert_eq!(both("red").await, [Some(stamp(a, "broken", "red")), None]);
    let blue_before = tenant_rows(&raw, &["mt_doc_stamp"], "blue").await;

    ok(rebuild_tenant(&store, "Stamps", "red").await);
    wait_for_value("red's rebuilt stamps", &expect("red").map(Some), || {
        both("red")
    })
    .await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(
        tenant_rows(&raw, &["mt_doc_stamp"], "blue").await,
        blue_before,
        "blue's rows are untouched by red's rebuild"
    );
    assert_eq!(both("blue").await, expect("blue").map(Some));
    ok(daemon.stop().await);
}

#[tokio::test]
async fn a_tenant_rebuild_drops_its_stray_documents_and_keeps_the_other_tenants() {
    let (schema, store) = store_with("tproj_stray", |b| {
        b.multi_stream_projection::<Board>(Lifecycle::Async)
            .projection::<Account>(Lifecycle::Async)
    })
    .await;
    let (task, id, account) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for tenant in ["red", "blue"] {
        append(&store, tenant, task, pinned(id, tenant)).await;
        append(&store, tenant, account, Deposited { amount: 5 }).await;
    }
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);

    // Documents of the projected types that no event makes, with the same id in both
    // tenants, stored while the daemon is caught up.
    let stray = Uuid::now_v7();
    for tenant in ["red", "blue"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.store(board(stray, &["stray"])));
        ok(s.store(Account {
            id: stray,
            version: 1,
            total: 99,
        }));
        ok(s.save_changes().await);
    }
    let raw = schema.raw_client().await;
    let tables = ["mt_doc_board", "mt_doc_account"];
    let blue_before = tenant_rows(&raw, &tables, "blue").await;

    ok(rebuild_tenant(&store, "Board", "red").await);
    ok(rebuild_tenant(&store, "Account", "red").await);
    wait_for_value("red's rebuilt board", &Some(board(id, &["red"])), || {
        load::<Board>(&store, "red", &id)
    })
    .await;
    wait_for_value("red's rebuilt account", &Some(5), || async {
        load::<Account>(&store, "red", &account)
            .await
            .map(|a| a.total)
    })
    .await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(
        load::<Board>(&store, "red", &stray).await,
        None,
        "red's stray board is dropped"
    );
    assert_eq!(
        load::<Account>(&store, "red", &stray).await,
        None,
        "red's stray account is dropped"
    );

    assert_eq!(
        tenant_rows(&raw, &tables, "blue").await,
        blue_before,
        "blue's rows, its stray documents included, are untouched by red's rebuild"
    );
    assert_eq!(
        load::<Board>(&store, "blue", &stray).await,
        Some(board(stray, &["stray"]))
    );
    assert_eq!(
        load::<Account>(&store, "blue", &stray)
            .await
            .map(|a| a.total),
        Some(99)
    );
    ok(daemon.stop().await);
}

/// A `TenantedStore` whose tenants "acme" and "globex" share `schema`'s database and
/// schema, with conjoined events and async `Account` and `Board` projections.
async fn shared_database(schema: &TestSchema) -> TenantedStore {
    let name = schema.name().to_owned();
    ok(TenantedStore::builder(move |url| {
        DocumentStore::builder()
            .connection_string(url)
            .schema(&name)
            .pool_size(4)
            .events_tenancy(Tenancy::Conjoined)
            .document::<Note>()
            .document::<Country>()
            .projection::<Account>(Lifecycle::Async)
            .multi_stream_projection::<Board>(Lifecycle::Async)
    })
    .tenant("acme", schema.url())
    .tenant("globex", schema.url())
    .build()
    .await)
}

/// Appends `event` to `stream` as `tenant` of a tenanted store.
async fn append_to<E: marten::Event>(store: &TenantedStore, tenant: &str, stream: Uuid, event: E) {
    let mut s = ok(store.lightweight_session_for(tenant).await);
    ok(s.events().append(stream, [event]));
    ok(s.save_changes().await);
}

/// Loads `tenant`'s document `id` of type `D` from a tenanted store.
async fn load_from<D: Document>(store: &TenantedStore, tenant: &str, id: &D::Id) -> Option<D>
where
    Postgres: DocumentBackend<D>,
{
    let mut s = ok(store.lightweight_session_for(tenant).await);
    ok(s.load::<D>(id).await)
}

#[tokio::test]
async fn two_tenants_on_one_database_keep_conjoined_documents_apart_and_share_the_rest() {
    let schema = TestSchema::new("tproj_shared_url");
    let store = shared_database(&schema).await;

    // Conjoined: the same id, a document per tenant.
    let note = Uuid::now_v7();
    for tenant in ["acme", "globex"] {
        let mut s = ok(store.lightweight_session_for(tenant).await);
        ok(s.store(Note {
            id: note,
            text: tenant.into(),
        }));
        ok(s.save_changes().await);
    }
    for tenant in ["acme", "globex"] {
        let mut q = ok(store.query_session_for(tenant).await);
        let all = ok(q.query::<Note>().to_list().await);
        let mine = Note {
            id: note,
            text: tenant.into(),
        };
        assert_eq!(all, [mine], "{tenant} sees its own note only");
    }
    // Single-tenant: one document both tenants read and write.
    let mut s = ok(store.lightweight_session_for("acme").await);
    ok(s.store(Country {
        id: "nl".into(),
        name: "Nederland".into(),
    }));
    ok(s.save_changes().await);
    let mut s = ok(store.lightweight_session_for("globex").await);
    let mut nl = ok(s.load::<Country>(&"nl".to_owned()).await).expect("shared by globex");
    nl.name = "Netherlands".into();
    ok(s.store(nl.clone()));
    ok(s.save_changes().await);
    assert_eq!(
        load_from::<Country>(&store, "acme", &"nl".to_owned()).await,
        Some(nl)
    );

    // Async projections: both tenants' streams, one daemon for the shared database.
    let (account, task, id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (tenant, amount) in [("acme", 1), ("globex", 10)] {
        append_to(&store, tenant, account, Deposited { amount }).await;
        append_to(&store, tenant, account, Deposited { amount }).await;
        append_to(&store, tenant, task, pinned(id, tenant)).await;
    }
    let daemons = ok(store.start_daemons(options()).await);
    let served: Vec<Vec<String>> = daemons
        .tenants()
        .map(|ts| ts.iter().map(ToString::to_string).collect())
        .collect();
    assert_eq!(
        served,
        [["acme", "globex"]],
        "one daemon for the one database"
    );
    ok(daemons.wait_for_non_stale(WAIT).await);
    for (tenant, total) in [("acme", 2), ("globex", 20)] {
        let projected = load_from::<Account>(&store, tenant, &account).await;
        assert_eq!(projected.map(|a| a.total), Some(total), "{tenant}");
        assert_eq!(
            load_from::<Board>(&store, tenant, &id).await,
            Some(board(id, &[tenant])),
            "{tenant}"
        );
    }
    let raw = schema.raw_client().await;
    let slots: Vec<(String, String)> = match raw
        .query(
            "SELECT name, tenant_id FROM mt_event_progression ORDER BY name",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e) => panic!("progression: {e}"),
    };
    let slot = |n: &str, t: &str| (n.to_owned(), t.to_owned());
    assert_eq!(
        slots,
        [
            slot("Account@acme", "acme"),
            slot("Account@globex", "globex"),
            slot("Board@acme", "acme"),
            slot("Board@globex", "globex"),
        ]
    );
    ok(daemons.stop().await);
    store.close();
}

/// `TenantedStore::rebuild` of one of two tenants sharing a database ("rebuilds one
/// tenant's projection alone", README "A database per tenant"): the other tenant's
/// documents and progression rows are left as they were. Checked first with no daemon
/// running (nothing can repair what the rebuild did), then after the replay.
#[tokio::test]
async fn a_tenanted_rebuild_on_a_shared_database_leaves_the_other_tenant_alone() {
    let schema = TestSchema::new("tproj_shared_rebuild");
    let store = shared_database(&schema).await;
    let account = Uuid::now_v7();
    for (tenant, amount) in [("acme", 1), ("globex", 10)] {
        append_to(&store, tenant, account, Deposited { amount }).await;
    }
    let daemons = ok(store.start_daemons(options()).await);
    ok(daemons.wait_for_non_stale(WAIT).await);
    ok(daemons.stop().await);
    let raw = schema.raw_client().await;
    execute(
        &raw,
        "UPDATE mt_doc_account SET data = jsonb_set(data, '{total}', '-1') \
         WHERE tenant_id = 'acme'",
    )
    .await;
    let globex_before = tenant_rows(&raw, &["mt_doc_account"], "globex").await;

    ok(store.rebuild("acme", "Account").await);
    assert_eq!(
        tenant_rows(&raw, &["mt_doc_account"], "globex").await,
        globex_before,
        "globex's rows right after acme's rebuild"
    );

    let daemons = ok(store.start_daemons(options()).await);
    wait_for_value("acme's rebuilt account", &Some(1), || async {
        load_from::<Account>(&store, "acme", &account)
            .await
            .map(|a| a.total)
    })
    .await;
    ok(daemons.wait_for_non_stale(WAIT).await);
    // New daemons claimed every slot (its owner and epoch moved): compare the documents
    // and the slots' positions.
    assert_eq!(
        raw_rows(&raw, "mt_doc_account", "globex").await,
        globex_before[0].1,
        "globex's documents after acme's replay"
    );
    assert_eq!(
        positions(&raw, "globex").await,
        positions_in(&globex_before[1].1),
        "globex's positions after acme's replay"
    );
    ok(daemons.stop().await);
    store.close();
}

/// `(name, last_tx, last_seq)` of `tenant`'s progression rows, by name.
async fn positions(raw: &tokio_postgres::Client, tenant: &str) -> Vec<(String, String, i64)> {
    positions_in(&raw_rows(raw, "mt_event_progression", tenant).await)
}

/// `(name, last_tx, last_seq)` of progression rows read by [`raw_rows`], by name.
fn positions_in(rows: &[String]) -> Vec<(String, String, i64)> {
    let mut out: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = match serde_json::from_str(r) {
                Ok(v) => v,
                Err(e) => panic!("progression row {r}: {e}"),
            };
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["last_tx"].as_str().unwrap_or_default().to_owned(),
                v["last_seq"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    out.sort();
    out
}

/// A single-tenant document every tenant shares: one per `Stamped` event, keyed by the
/// event's id (so no two tenants' events write one).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Entry {
    id: Uuid,
    text: String,
    tenant: Option<String>,
}

/// An event projection writing an `Entry` per `Stamped` event, owning the type; `shared`:
/// what it says of its shared documents.
struct Journal {
    shared: bool,
}

impl EventProjection for Journal {
    fn name(&self) -> &'static str {
        "Journal"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(s) = event.data_as::<Stamped>() {
            ops.store(Entry {
                id: event.id,
                text: s.text.clone(),
                tenant: event.tenant.as_ref().map(ToString::to_string),
            });
        }
        Ok(())
    }

    fn owned_documents(&self, owned: &mut marten::OwnedDocuments) {
        owned.document::<Entry>();
    }

    fn shared_documents_per_tenant(&self) -> bool {
        self.shared
    }
}

/// Every `Entry`, as (text, tenant), in order.
async fn entries(store: &DocumentStore) -> Vec<(String, Option<String>)> {
    let mut q = ok(store.query_session_for("red"));
    let mut all: Vec<(String, Option<String>)> = ok(q.query::<Entry>().to_list().await)
        .into_iter()
        .map(|e| (e.text, e.tenant))
        .collect();
    all.sort();
    all
}

/// The entries two tenants' `Stamped` events make.
fn expected_entries() -> Vec<(String, Option<String>)> {
    let mut all: Vec<(String, Option<String>)> =
        [("blue 1", "blue"), ("red 1", "red"), ("red 2", "red")]
            .iter()
            .map(|(t, tenant)| ((*t).to_owned(), Some((*tenant).to_owned())))
            .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_projection_saying_its_shared_documents_are_per_tenant_runs_per_tenant() {
    let (_schema, store) = store_with("tproj_shared_per_tenant", |b| {
        b.document::<Entry>()
            .event_projection(Journal { shared: true }, Lifecycle::Async)
    })
    .await;
    let stream = Uuid::now_v7();
    for (tenant, text) in [("red", "red 1"), ("blue", "blue 1"), ("red", "red 2")] {
        append(&store, tenant, stream, stamped(Uuid::now_v7(), text)).await;
    }
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(entries(&store).await, expected_entries());

    // Inline, each append's transaction writes them: nothing to say.
    let (_schema, store) = store_with("tproj_shared_inline", |b| {
        b.document::<Entry>()
            .event_projection(Journal { shared: false }, Lifecycle::Inline)
    })
    .await;
    for (tenant, text) in [("red", "red 1"), ("blue", "blue 1"), ("red", "red 2")] {
        append(&store, tenant, stream, stamped(Uuid::now_v7(), text)).await;
    }
    assert_eq!(entries(&store).await, expected_entries());
}

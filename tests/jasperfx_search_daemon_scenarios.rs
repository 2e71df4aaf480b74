//! Scenarios ported from four JasperFx.Events compliance suites (JasperFx/jasperfx,
//! `src/JasperFx.Events.ComplianceTests/Suites/`): `DocumentSearchCompliance` (onto
//! full-text search: marten-rs has no vector or hybrid search, so the ranked search with
//! `order_by_rank` stands in for "nearest first"), `ProjectionCoordinatorCompliance`
//! (onto `Daemon::start` / `stop` and a second store's own daemon: marten-rs has no
//! dependency-injection container or coordinator object), `RebuildConcurrencyCapCompliance`
//! (nothing maps: marten-rs has no rebuild concurrency cap) and
//! `DocumentStoreDiagnosticsCompliance` (onto the read-only documents page of
//! `marten-console`). The behaviour is ported, not the code; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{builder, ok};
use marten::compiled::ToList;
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::QuerySpec;
use marten_console::{Console, QueryField};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any wait on a daemon or the console may take.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// DocumentSearchCompliance (full-text search)
// ---------------------------------------------------------------------------------------

/// A searchable, soft-deleted document: the store's implicit predicate (marked rows) must
/// apply to a search exactly as it does to any query.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(full_text, soft_delete)]
struct Memory {
    id: Uuid,
    body: String,
    scope: String,
}

/// The corpus, by relevance to "fox" (ts_rank grows with the word's occurrences):
/// alpha (3) > bravo (2) > charlie (1); delta does not hold the word at all. Bravo is the
/// only one outside the "wanted" scope.
struct Corpus {
    alpha: Uuid,
    bravo: Uuid,
    charlie: Uuid,
    delta: Uuid,
}

async fn memory_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Memory>().build().await);
    (schema, store)
}

async fn memories(store: &DocumentStore) -> Corpus {
    let corpus = Corpus {
        alpha: Uuid::new_v4(),
        bravo: Uuid::new_v4(),
        charlie: Uuid::new_v4(),
        delta: Uuid::new_v4(),
    };
    let mut s = store.lightweight_session();
    for (id, body, scope) in [
        (corpus.alpha, "fox fox fox in the snow", "wanted"),
        (corpus.bravo, "a fox and a fox at dusk", "other"),
        (corpus.charlie, "one fox near the weather notes", "wanted"),
        (corpus.delta, "unrelated weather notes", "wanted"),
    ] {
        ok(s.store(Memory {
            id,
            body: body.into(),
            scope: scope.into(),
        }));
    }
    ok(s.save_changes().await);
    corpus
}

fn ids_of(found: &[Memory]) -> Vec<Uuid> {
    found.iter().map(|m| m.id).collect()
}

/// A ranked search filtered to the "wanted" scope, its `take` applied after the filter.
struct WantedFoxes {
    take: usize,
}

impl CompiledQuery for WantedFoxes {
    type Document = Memory;
    type Returns = ToList;

    fn build(&self, q: QuerySpec<Memory>) -> QuerySpec<Memory> {
        q.search("fox")
            .filter(|f| f.scope.eq("wanted"))
            .order_by_rank()
            .take(self.take)
    }
}

/// A filter narrows the matches before `take`: the top-k of the filtered set comes back
/// (the least relevant match included), not the filtered remains of the unfiltered top-k.
#[tokio::test]
async fn a_filter_narrows_a_ranked_search_before_take() {
    let (_schema, store) = memory_store("jx_search_filter").await;
    let c = memories(&store).await;
    let mut s = store.query_session();
    // The setup's ranking: most relevant first, `take` keeping only the top.
    let ranked = ok(s
        .query::<Memory>()
        .search("fox")
        .order_by_rank()
        .to_list()
        .await);
    assert_eq!(ids_of(&ranked), [c.alpha, c.bravo, c.charlie]);
    let top = ok(s
        .query::<Memory>()
        .search("fox")
        .order_by_rank()
        .take(1)
        .to_list()
        .await);
    assert_eq!(ids_of(&top), [c.alpha]);
    // Bravo is second overall and filtered out; charlie, the least relevant, still comes
    // back as the second of the filtered set.
    let wanted = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("wanted"))
        .order_by_rank()
        .take(2)
        .to_list()
        .await);
    assert_eq!(ids_of(&wanted), [c.alpha, c.charlie]);
    // A filter excluding the most relevant match still returns the best of the rest.
    let other = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("other"))
        .order_by_rank()
        .take(1)
        .to_list()
        .await);
    assert_eq!(ids_of(&other), [c.bravo]);
    // The page's total is the filtered set's.
    let page = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("wanted"))
        .order_by_rank()
        .to_page(0, 1)
        .await);
    assert_eq!((page.total, ids_of(&page.items)), (2, vec![c.alpha]));
}

/// A filter that matches nothing gives no hits, never the unfiltered top matches.
#[tokio::test]
async fn a_filter_matching_nothing_returns_no_hits() {
    let (_schema, store) = memory_store("jx_search_nothing").await;
    memories(&store).await;
    let mut s = store.query_session();
    let hits = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("nothing-has-this"))
        .order_by_rank()
        .take(3)
        .to_list()
        .await);
    assert!(hits.is_empty(), "{hits:?}");
    let count = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("nothing-has-this"))
        .count()
        .await);
    assert_eq!(count, 0);
    let page = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("nothing-has-this"))
        .to_page(0, 3)
        .await);
    assert_eq!((page.total, page.items.len()), (0, 0));
}

/// A search over a type with no documents yet answers empty, without an error.
#[tokio::test]
async fn a_search_over_an_empty_document_type_returns_nothing() {
    let (_schema, store) = memory_store("jx_search_empty").await;
    let mut s = store.query_session();
    assert!(ok(s
        .query::<Memory>()
        .search("fox")
        .order_by_rank()
        .take(5)
        .to_list()
        .await)
    .is_empty());
    assert_eq!(
        ok(s.query::<Memory>().web_search("fox or snow").count().await),
        0
    );
    assert!(!ok(s
        .query::<Memory>()
        .phrase_search("fox in")
        .exists()
        .await));
}

/// A search applies the store's soft-delete predicate as every query does: a marked
/// document is not a hit unless the query asks for marked ones.
#[tokio::test]
async fn soft_deleted_documents_are_left_out_of_a_search() {
    let (_schema, store) = memory_store("jx_search_soft").await;
    let c = memories(&store).await;
    let mut w = store.lightweight_session();
    ok(w.delete::<Memory>(&c.alpha));
    ok(w.save_changes().await);
    let mut s = store.query_session();
    let live = ok(s
        .query::<Memory>()
        .search("fox")
        .order_by_rank()
        .to_list()
        .await);
    assert_eq!(ids_of(&live), [c.bravo, c.charlie]);
    assert_eq!(ok(s.query::<Memory>().search("snow").count().await), 0);
    let all = ok(s
        .query::<Memory>()
        .search("fox")
        .include_deleted()
        .order_by_rank()
        .to_list()
        .await);
    assert_eq!(ids_of(&all), [c.alpha, c.bravo, c.charlie]);
    let marked = ok(s
        .query::<Memory>()
        .search("fox")
        .only_deleted()
        .to_list()
        .await);
    assert_eq!(ids_of(&marked), [c.alpha]);
    // The compiled form applies it too.
    let compiled = ok(s.query_compiled(&WantedFoxes { take: 3 }).await);
    assert_eq!(ids_of(&compiled), [c.charlie]);
    // Other documents are untouched by the mark.
    let mut weather = ids_of(&ok(s.query::<Memory>().search("weather").to_list().await));
    weather.sort_unstable();
    let mut expected = vec![c.charlie, c.delta];
    expected.sort_unstable();
    assert_eq!(weather, expected);
}

/// The other forms of one ranked, filtered search (compiled, batched) return the direct
/// form's documents in the same order.
#[tokio::test]
async fn compiled_and_batched_forms_of_a_ranked_search_match_the_direct_form() {
    let (_schema, store) = memory_store("jx_search_forms").await;
    let c = memories(&store).await;
    let mut s = store.query_session();
    let direct = ok(s
        .query::<Memory>()
        .search("fox")
        .filter(|f| f.scope.eq("wanted"))
        .order_by_rank()
        .take(3)
        .to_list()
        .await);
    assert_eq!(ids_of(&direct), [c.alpha, c.charlie]);
    let compiled = ok(s.query_compiled(&WantedFoxes { take: 3 }).await);
    assert_eq!(ids_of(&compiled), ids_of(&direct));
    let again = ok(s.query_compiled(&WantedFoxes { take: 1 }).await);
    assert_eq!(ids_of(&again), [c.alpha]);
    let mut batch = s.batch();
    let listed = batch.list(WantedFoxes { take: 3 }.build(QuerySpec::new()));
    let counted = batch.count(QuerySpec::<Memory>::new().search("fox"));
    let results = ok(batch.execute().await);
    assert_eq!(ids_of(&ok(results.get(listed))), ids_of(&direct));
    assert_eq!(ok(results.get(counted)), 3);
}

// ---------------------------------------------------------------------------------------
// ProjectionCoordinatorCompliance (the daemon a program starts, stops and starts again)
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct WingOpened {
    name: String,
}

/// A plain async snapshot; `opened` counts the events folded, so a replay from the start
/// would show.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct WingRoster {
    id: Uuid,
    version: i64,
    name: String,
    opened: i64,
}

#[marten::apply]
impl WingRoster {
    fn apply(&mut self, e: &WingOpened) {
        self.name = e.name.clone();
        self.opened += 1;
    }
}

fn daemon_options(node: &str) -> DaemonOptions {
    DaemonOptions {
        poll_interval: Duration::from_millis(20),
        node: node.to_owned(),
        ..DaemonOptions::default()
    }
}

async fn wing_store_on(schema: &marten_testing::TestSchema) -> DocumentStore {
    ok(common::builder_on(schema)
        .projection::<WingRoster>(Lifecycle::Async)
        .build()
        .await)
}

async fn open_wing(store: &DocumentStore, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [WingOpened {
            name: name.to_owned(),
        }],
    ));
    ok(s.save_changes().await);
    id
}

async fn roster(store: &DocumentStore, id: Uuid) -> Option<WingRoster> {
    ok(store.query_session().load::<WingRoster>(&id).await)
}

/// The lag the store's health reports for its one async projection.
async fn lag(store: &DocumentStore) -> i64 {
    let health = store.health().await;
    assert!(health.failures.is_empty(), "{health:#?}");
    assert_eq!(health.projections.len(), 1, "{health:#?}");
    health.projections[0].lag
}

/// A daemon stopped and started again projects what was appended meanwhile, going on from
/// its recorded position (nothing folded twice), with the pause visible as lag.
#[tokio::test]
async fn a_daemon_stopped_and_started_again_goes_on_projecting() {
    let schema = marten_testing::TestSchema::new("jx_coord_resume");
    let store = wing_store_on(&schema).await;
    let first = Daemon::start(&store, daemon_options("node-a"));
    let before = open_wing(&store, "Before Pause").await;
    // Proves the first daemon ran, so a later timeout indicts the restart.
    ok(first.wait_for_non_stale(WAIT).await);
    assert_eq!(roster(&store, before).await.map(|r| r.opened), Some(1));
    ok(first.stop().await);

    let after = open_wing(&store, "After Resume").await;
    assert!(lag(&store).await > 0, "nothing projects while stopped");
    assert_eq!(roster(&store, after).await, None);

    let second = Daemon::start(&store, daemon_options("node-a"));
    ok(second.wait_for_non_stale(WAIT).await);
    let resumed = roster(&store, after).await.expect("projected after resume");
    assert_eq!((resumed.name.as_str(), resumed.opened), ("After Resume", 1));
    let original = roster(&store, before).await.expect("still there");
    assert_eq!(
        (original.name.as_str(), original.opened, original.version),
        ("Before Pause", 1, 1),
        "the restart went on from its position, not from the start"
    );
    assert_eq!(lag(&store).await, 0);
    let status = ok(store.projection_status().await);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].owner.as_deref(), Some("node-a"));
    ok(second.stop().await);
}

/// A second ("ancillary") store in the same database runs a daemon of its own: same
/// projection name, yet the two neither contend for one lock nor project each other's
/// events, and stopping one leaves the other projecting.
#[tokio::test]
async fn a_second_store_runs_its_own_daemon_apart_from_the_first() {
    let main_schema = marten_testing::TestSchema::new("jx_coord_main");
    let side_schema = marten_testing::TestSchema::new("jx_coord_side");
    let main = wing_store_on(&main_schema).await;
    let side = wing_store_on(&side_schema).await;
    let main_daemon = Daemon::start(&main, daemon_options("main-node"));
    let side_daemon = Daemon::start(&side, daemon_options("side-node"));
    let east = open_wing(&main, "East Wing").await;
    let west = open_wing(&side, "West Wing").await;
    // Both catch up at once: neither waits on the other's projection lock.
    let (m, s) = tokio::join!(
        main_daemon.wait_for_non_stale(WAIT),
        side_daemon.wait_for_non_stale(WAIT)
    );
    ok(m);
    ok(s);
    assert_eq!(
        roster(&main, east).await.map(|r| r.name),
        Some("East Wing".into())
    );
    assert_eq!(
        roster(&side, west).await.map(|r| r.name),
        Some("West Wing".into())
    );
    assert_eq!(roster(&main, west).await, None);
    assert_eq!(roster(&side, east).await, None);
    let owners = |st: Vec<marten::ProjectionStatus>| -> Vec<Option<String>> {
        st.into_iter().map(|p| p.owner).collect()
    };
    assert_eq!(
        owners(ok(main.projection_status().await)),
        [Some("main-node".to_owned())]
    );
    assert_eq!(
        owners(ok(side.projection_status().await)),
        [Some("side-node".to_owned())]
    );

    ok(side_daemon.stop().await);
    let north = open_wing(&main, "North Wing").await;
    let south = open_wing(&side, "South Wing").await;
    ok(main_daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(
        roster(&main, north).await.map(|r| r.name),
        Some("North Wing".into())
    );
    assert_eq!(
        roster(&side, south).await,
        None,
        "its own daemon is stopped"
    );
    assert!(lag(&side).await > 0);
    assert_eq!(lag(&main).await, 0);
    ok(main_daemon.stop().await);
}

// ---------------------------------------------------------------------------------------
// DocumentStoreDiagnosticsCompliance (the console's documents page)
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(soft_delete)]
struct Ticket {
    id: Uuid,
    title: String,
    priority: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Gadget {
    id: String,
    kind: String,
}

/// A GET answered by the console within [`WAIT`]: status and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, work)
        .await
        .expect("the console answers in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The ids of the document rows of a documents page.
fn row_ids(body: &str) -> Vec<String> {
    body.split("<tr><td>")
        .skip(1)
        .filter_map(|r| r.split("</td>").next())
        .map(str::to_owned)
        .collect()
}

/// Serves a console over tickets and gadgets on a loopback port.
async fn console_for(store: &DocumentStore) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let console = Console::builder(store)
        .document::<Ticket>(|f| vec![QueryField::ordered(f.id), QueryField::text(f.title)])
        .document::<Gadget>(|f| vec![QueryField::text(f.id)])
        .build();
    let bound = match console.bind(([127, 0, 0, 1], 0).into()).await {
        Ok(b) => b,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match bound.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local addr: {e}"),
    };
    let task = tokio::spawn(async move {
        let _ = bound.serve().await;
    });
    (addr, task)
}

/// The console lists the registered types and, by default, shows a soft-deleted type's
/// live documents only, as the application's own queries see them.
#[tokio::test]
async fn the_console_lists_types_and_leaves_soft_deleted_documents_out() {
    let (_schema, b) = builder("jx_diag_soft");
    let store = ok(b.document::<Ticket>().document::<Gadget>().build().await);
    let live = Uuid::new_v4();
    let deleted = Uuid::new_v4();
    let mut s = store.lightweight_session();
    for (id, title, priority) in [(live, "live", 1), (deleted, "deleted", 2)] {
        ok(s.store(Ticket {
            id,
            title: title.into(),
            priority,
        }));
    }
    ok(s.save_changes().await);
    ok(s.delete::<Ticket>(&deleted));
    ok(s.save_changes().await);
    let (addr, task) = console_for(&store).await;

    let (status, index) = http_get(addr, "/documents").await;
    assert_eq!(status, 200, "{index}");
    assert!(
        index.contains(">Ticket</a>") && index.contains(">Gadget</a>"),
        "{index}"
    );
    let (status, tickets) = http_get(addr, "/documents/Ticket").await;
    assert_eq!(status, 200, "{tickets}");
    assert_eq!(row_ids(&tickets), [live.to_string()], "{tickets}");
    // A filter through the query box still honours the soft delete.
    let (_, titled) = http_get(addr, "/documents/Ticket?field=title&op=eq&value=deleted").await;
    assert!(row_ids(&titled).is_empty(), "{titled}");
    assert!(titled.contains("No document matches."), "{titled}");
    task.abort();
}

/// The console's id lookup converts the text to the stored identity: an upper-case uuid
/// finds its document, a string id matches exactly, and a missing id finds nothing.
#[tokio::test]
async fn the_console_finds_a_document_by_its_id_in_any_case() {
    let (_schema, b) = builder("jx_diag_ids");
    let store = ok(b.document::<Ticket>().document::<Gadget>().build().await);
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut s = store.lightweight_session();
    for (i, id) in ids.iter().enumerate() {
        ok(s.store(Ticket {
            id: *id,
            title: format!("t{i}"),
            priority: i as i64,
        }));
    }
    for (id, kind) in [("gadget-1", "a"), ("gadget-2", "b")] {
        ok(s.store(Gadget {
            id: id.into(),
            kind: kind.into(),
        }));
    }
    ok(s.save_changes().await);
    let (addr, task) = console_for(&store).await;

    let upper = ids[1].to_string().to_uppercase();
    let (status, found) = http_get(
        addr,
        &format!("/documents/Ticket?field=id&op=eq&value={upper}"),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(row_ids(&found), [ids[1].to_string()], "{found}");
    let (_, gadget) = http_get(addr, "/documents/Gadget?field=id&op=eq&value=gadget-2").await;
    assert_eq!(row_ids(&gadget), ["gadget-2"], "{gadget}");
    let missing = Uuid::new_v4();
    let (status, none) = http_get(
        addr,
        &format!("/documents/Ticket?field=id&op=eq&value={missing}"),
    )
    .await;
    assert_eq!(status, 200, "{none}");
    assert!(row_ids(&none).is_empty(), "{none}");
    task.abort();
}

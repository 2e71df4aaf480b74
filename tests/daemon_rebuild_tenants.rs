//! Rebuilds of a projection of conjoined events and the tenants' runners:
//!
//! - one tenant's rebuild of a projection that writes documents shared by every tenant
//!   (an event projection owning a type that is not conjoined) is refused with a
//!   configuration error naming the projection, the tenant and the type, and changes
//!   nothing: every tenant's documents and progression rows are as they were (a rebuild
//!   that deleted every tenant's documents and replayed one tenant's lost the others');
//!   one tenant's rebuild of a conjoined projection still rebuilds that tenant alone;
//! - a rebuild of every tenant and a tenant whose first events and first batch come
//!   while it runs: the tenant's documents survive. The race is made deterministic with
//!   locks, no sleeps: raw transactions hold the new tenant's append and an existing
//!   tenant's progression row, so the rebuild stops in its reset after it has read the
//!   tenants; the new tenant's runner then commits its first batch (or, with the
//!   rebuild's lock, waits for the rebuild). Before the rebuild took the projection's
//!   lock, that batch committed between the read of the tenants and the delete: the
//!   delete took its document while its slot kept its position, and the daemon reported
//!   caught up without it;
//! - one tenant's rebuild clears that tenant's dead letters of the projection and keeps
//!   every other tenant's: the replay applies the tenant's event that no longer fails
//!   (the projection was fixed), and the other tenant's dead letter stays as it was.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{builder, builder_on, ok};
use marten::daemon::{rebuild, rebuild_tenant, Daemon, DaemonOptions};
use marten::prelude::*;
use marten::{DocumentStoreBuilder, EventProjection, OwnedDocuments, ProjectedOps, Tenancy};
use serde::{Deserialize, Serialize};

/// How long any wait of these tests may take before it fails.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    amount: i64,
}

/// An event whose apply fails while [`BOUNCES_FAIL`] is set (a projection bug, fixed
/// later).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Bounced {
    amount: i64,
}

/// Whether [`Bounced`] events fail to apply (only one test appends them).
static BOUNCES_FAIL: AtomicBool = AtomicBool::new(true);

/// A conjoined aggregate: each tenant's wallets are its own.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
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
    fn apply_bounced(&mut self, e: &Bounced) -> Result<(), String> {
        if BOUNCES_FAIL.load(Ordering::SeqCst) {
            return Err("bounced".into());
        }
        self.total += e.amount;
        Ok(())
    }
}

/// A single-tenant document (shared by every tenant) an event projection writes, one
/// per event.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Sighting {
    id: Uuid,
    tenant: String,
    amount: i64,
}

/// Owns its `Sighting`s: a rebuild deletes them before it replays.
struct Sightings;

impl EventProjection for Sightings {
    fn name(&self) -> &'static str {
        "Sightings"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(d) = event.data_as::<Deposited>() {
            ops.store(Sighting {
                id: event.id,
                tenant: event
                    .tenant
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                amount: d.amount,
            });
        }
        Ok(())
    }

    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<Sighting>();
    }

    // One Sighting per event (keyed by the event's id): no two tenants write one.
    fn shared_documents_per_tenant(&self) -> bool {
        true
    }
}

fn options() -> DaemonOptions {
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

/// Starts two streams of `tenant` in one save: a transaction of its own (one stream's
/// start would go alone, as one statement without `BEGIN`).
async fn start_two(store: &DocumentStore, tenant: &str, streams: [(Uuid, &[i64]); 2]) {
    let mut s = ok(store.lightweight_session_for(tenant));
    for (stream, amounts) in streams {
        let events: Vec<Deposited> = amounts.iter().map(|&amount| Deposited { amount }).collect();
        ok(s.events().append(stream, events));
    }
    ok(s.save_changes().await);
}

async fn wallet(store: &DocumentStore, tenant: &str, stream: Uuid) -> Option<i64> {
    let mut q = ok(store.query_session_for(tenant));
    ok(q.load::<Wallet>(&stream).await).map(|w| w.total)
}

/// Polls `done` every 20 ms until it holds; fails after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every row of `table` (each column, as JSON text), in a stable order: rows a refused
/// or another tenant's rebuild must leave as they were (`mt_last_modified`,
/// `owner_epoch` included). `tenant`: only its rows.
async fn rows(raw: &tokio_postgres::Client, table: &str, tenant: Option<&str>) -> Vec<String> {
    // The table names are this file's constants, never input.
    let all = format!("SELECT row_to_json(t)::text AS r FROM {table} t ORDER BY r");
    let of_tenant =
        format!("SELECT row_to_json(t)::text AS r FROM {table} t WHERE tenant_id = $1 ORDER BY r");
    let read = match tenant {
        Some(t) => raw.query(&of_tenant, &[&t]).await,
        None => raw.query(&all, &[]).await,
    };
    match read {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => panic!("reading {table}: {e}"),
    }
}

/// A store of conjoined events with the conjoined `Wallet` aggregate and, if `shared`,
/// the `Sightings` event projection of a single-tenant type, both async.
async fn store(label: &str, shared: bool) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    (schema, registered(b, shared).await)
}

/// `b` with the registrations of [`store`], built.
async fn registered(b: DocumentStoreBuilder, shared: bool) -> DocumentStore {
    let mut b = b
        .events_tenancy(Tenancy::Conjoined)
        .event::<Deposited>()
        .projection::<Wallet>(Lifecycle::Async);
    if shared {
        b = b
            .document::<Sighting>()
            .event_projection(Sightings, Lifecycle::Async);
    }
    ok(b.build().await)
}

#[tokio::test]
async fn a_tenants_rebuild_of_shared_documents_is_refused_and_changes_nothing() {
    let (schema, store) = store("rebuild_tenants_shared", true).await;
    let (red, blue) = (Uuid::now_v7(), Uuid::now_v7());
    deposit(&store, "red", red, &[1, 2]).await;
    deposit(&store, "blue", blue, &[10]).await;
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    let raw = schema.raw_client().await;
    let sightings = rows(&raw, "mt_doc_sighting", None).await;
    assert_eq!(sightings.len(), 3, "{sightings:?}");
    let progression = rows(&raw, "mt_event_progression", None).await;
    let wallets = rows(&raw, "mt_doc_wallet", None).await;

    match rebuild_tenant(&store, "Sightings", "red").await {
        Err(Error::Configuration(m)) => {
            for named in ["Sightings", "red", "Sighting", "whole"] {
                assert!(m.contains(named), "{named} in {m}");
            }
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    // Nothing was reset or deleted: every tenant's documents and slots as they were.
    assert_eq!(rows(&raw, "mt_doc_sighting", None).await, sightings);
    assert_eq!(rows(&raw, "mt_event_progression", None).await, progression);
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(rows(&raw, "mt_doc_sighting", None).await, sightings);
    assert_eq!(rows(&raw, "mt_event_progression", None).await, progression);
    assert_eq!(rows(&raw, "mt_doc_wallet", None).await, wallets);

    // A conjoined projection's rebuild of one tenant still works, and touches only it.
    let blue_wallets = rows(&raw, "mt_doc_wallet", Some("blue")).await;
    let blue_slots = rows(&raw, "mt_event_progression", Some("blue")).await;
    let epoch = "SELECT owner_epoch FROM mt_event_progression WHERE name = 'Wallet@red'";
    let red_epoch: i64 = raw.query_one(epoch, &[]).await.expect("red's slot").get(0);
    ok(rebuild_tenant(&store, "Wallet", "red").await);
    let reset: i64 = raw.query_one(epoch, &[]).await.expect("red's slot").get(0);
    assert!(reset > red_epoch, "red's slot was reset");
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(wallet(&store, "red", red).await, Some(3));
    assert_eq!(wallet(&store, "blue", blue).await, Some(10));
    assert_eq!(
        rows(&raw, "mt_doc_wallet", Some("blue")).await,
        blue_wallets
    );
    assert_eq!(
        rows(&raw, "mt_event_progression", Some("blue")).await,
        blue_slots
    );
    assert_eq!(rows(&raw, "mt_doc_sighting", None).await, sightings);
    ok(daemon.stop().await);
}

/// The backends `pid` blocks (waiting for a lock it holds): their pids, statements and
/// whether their transaction has an id.
async fn blocked_by(raw: &tokio_postgres::Client, pid: i32) -> Vec<(i32, String, bool)> {
    let sql = "SELECT pid, coalesce(query, ''), backend_xid IS NOT NULL FROM pg_stat_activity \
               WHERE $1 = ANY(pg_blocking_pids(pid))";
    match raw.query(sql, &[&pid]).await {
        Ok(rows) => rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        Err(e) => panic!("reading the blocked backends: {e}"),
    }
}

/// Waits (at most [`WAIT`]) until a backend whose statement holds `statement` is blocked
/// by `pid` (`with_xid`: in a transaction that has an id), and returns its pid.
async fn blocked_in(
    raw: &tokio_postgres::Client,
    pid: i32,
    (statement, with_xid): (&str, bool),
) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let blocked = blocked_by(raw, pid).await;
        let found = blocked
            .iter()
            .find(|(_, q, xid)| q.contains(statement) && (*xid || !with_xid));
        if let Some((found, _, _)) = found {
            return *found;
        }
        assert!(
            Instant::now() < deadline,
            "no statement with {statement} waits for {pid}: {blocked:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw connection to the test's schema and its backend's pid.
async fn raw_with_pid(schema: &marten_testing::TestSchema) -> (tokio_postgres::Client, i32) {
    let raw = schema.raw_client().await;
    let pid = match raw.query_one("SELECT pg_backend_pid()", &[]).await {
        Ok(row) => row.get(0),
        Err(e) => panic!("reading the backend's pid: {e}"),
    };
    (raw, pid)
}

/// Runs `sql` on a raw connection.
async fn execute(raw: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = raw.batch_execute(sql).await {
        panic!("{sql}: {e}");
    }
}

/// The order of the race (the daemon reads events gap-safe: only those of transactions
/// older than every open one that has written, so the new tenant's append must take its
/// transaction id before the rebuild and the row's holder take theirs):
///
/// 1. `streams` locks the streams table (no transaction id): teal's append (on a
///    connection that has prepared its statements before, so no prepare waits) takes
///    its transaction id at `BEGIN`, then waits to write its stream;
/// 2. `row` locks red's progression row; the rebuild reads the tenants (red alone: teal's
///    stream is not committed) and waits in red's reset;
/// 3. `streams` lets go: teal's append commits, teal's runner reads it and commits its
///    first batch (before the fix) or waits for the rebuild (with it);
/// 4. `row` lets go: the rebuild resets red and deletes the documents.
#[tokio::test]
async fn a_tenant_first_projected_during_a_full_rebuild_keeps_its_documents() {
    let (schema, store) = store("rebuild_tenants_race", false).await;
    let (red, teal, teal2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    deposit(&store, "red", red, &[1]).await;
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(wallet(&store, "red", red).await, Some(1));
    let raw = schema.raw_client().await;

    // A store of one connection, whose statements of a stream's start are prepared by
    // a start of red's first.
    let writer = registered(builder_on(&schema).pool_size(1), false).await;
    start_two(
        &writer,
        "red",
        [(Uuid::now_v7(), &[0, 0]), (Uuid::now_v7(), &[0])],
    )
    .await;
    ok(daemon.wait_for_non_stale(WAIT).await);

    let (streams, streams_pid) = raw_with_pid(&schema).await;
    execute(&streams, "BEGIN; LOCK TABLE mt_streams IN SHARE MODE").await;
    let appending = {
        let writer = writer.clone();
        tokio::spawn(
            async move { start_two(&writer, "teal", [(teal, &[5, 6]), (teal2, &[7])]).await },
        )
    };
    blocked_in(&raw, streams_pid, ("mt_streams", true)).await;

    let (row, row_pid) = raw_with_pid(&schema).await;
    execute(
        &row,
        "BEGIN; SELECT 1 FROM mt_event_progression WHERE name = 'Wallet@red' FOR UPDATE",
    )
    .await;
    let rebuilding = {
        let store = store.clone();
        tokio::spawn(async move { rebuild(&store, "Wallet").await })
    };
    let rebuild_pid = blocked_in(&raw, row_pid, ("last_tx = '0'", false)).await;

    execute(&streams, "ROLLBACK").await;
    match tokio::time::timeout(WAIT, appending).await {
        Ok(Ok(())) => {}
        other => panic!("teal's append did not end: {other:?}"),
    }
    wait_until(
        "teal's first batch committed or waits for the rebuild",
        || {
            let (raw, store) = (&raw, &store);
            async move {
                wallet(store, "teal", teal).await.is_some()
                    || !blocked_by(raw, rebuild_pid).await.is_empty()
            }
        },
    )
    .await;

    execute(&row, "ROLLBACK").await;
    match tokio::time::timeout(WAIT, rebuilding).await {
        Ok(Ok(rebuilt)) => ok(rebuilt),
        other => panic!("the rebuild did not end: {other:?}"),
    }
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(
        wallet(&store, "teal", teal).await,
        Some(11),
        "teal's wallet"
    );
    assert_eq!(
        wallet(&store, "teal", teal2).await,
        Some(7),
        "teal's second wallet"
    );
    assert_eq!(wallet(&store, "red", red).await, Some(1), "red's wallet");
    ok(daemon.stop().await);
}

/// The dead letters of `tenant`'s slots: projection, stream and type.
async fn tenant_dead_letters(
    raw: &tokio_postgres::Client,
    tenant: &str,
) -> Vec<(String, String, String)> {
    let sql = "SELECT projection, stream_id, event_type FROM mt_dead_letters \
               WHERE tenant_id = $1 ORDER BY id";
    match raw.query(sql, &[&tenant]).await {
        Ok(rows) => rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        Err(e) => panic!("reading {tenant}'s dead letters: {e}"),
    }
}

/// Red and blue each dead-letter a `Bounced` event; once the projection is fixed, red's
/// rebuild clears red's dead letter in the transaction of its reset and the replay
/// applies the event; blue's dead letter (and wallet) stay as they were.
#[tokio::test]
async fn a_tenants_rebuild_clears_its_dead_letters_and_keeps_the_others() {
    let (schema, store) = store("rebuild_tenants_dead_letters", false).await;
    let (red, blue) = (Uuid::now_v7(), Uuid::now_v7());
    for (tenant, stream) in [("red", red), ("blue", blue)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().append(
            stream,
            [
                PendingEvent::new(Deposited { amount: 1 }),
                PendingEvent::new(Bounced { amount: 100 }),
                PendingEvent::new(Deposited { amount: 2 }),
            ],
        ));
        ok(s.save_changes().await);
    }
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(wallet(&store, "red", red).await, Some(3));
    assert_eq!(wallet(&store, "blue", blue).await, Some(3));
    let raw = schema.raw_client().await;
    let letter = |stream: Uuid| {
        (
            "Wallet".to_owned(),
            stream.to_string(),
            "bounced".to_owned(),
        )
    };
    assert_eq!(tenant_dead_letters(&raw, "red").await, [letter(red)]);
    assert_eq!(tenant_dead_letters(&raw, "blue").await, [letter(blue)]);
    let blue_letters = rows(&raw, "mt_dead_letters", Some("blue")).await;

    BOUNCES_FAIL.store(false, Ordering::SeqCst);
    ok(rebuild_tenant(&store, "Wallet", "red").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert!(
        tenant_dead_letters(&raw, "red").await.is_empty(),
        "red's rebuild cleared red's dead letters"
    );
    assert_eq!(
        wallet(&store, "red", red).await,
        Some(103),
        "the replay applied the fixed event"
    );
    assert_eq!(
        rows(&raw, "mt_dead_letters", Some("blue")).await,
        blue_letters,
        "blue's dead letter is kept as it was"
    );
    assert_eq!(
        wallet(&store, "blue", blue).await,
        Some(3),
        "blue not rebuilt"
    );
    match tokio::time::timeout(WAIT, daemon.stop()).await {
        Ok(stopped) => ok(stopped),
        Err(_) => panic!("the daemon did not stop within {WAIT:?}"),
    }
}
